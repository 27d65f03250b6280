"""Many runs: history.csv, `freyvae compare` (table, JSON, CSV, plot, bad paths), TensorBoard."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from freyvae_cli.cli import app
from tests.conftest import last_json, write_mat

BASE = ["--epochs", "2", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Three real runs: beta 0.5 and 2 at latent size 3, beta 2 at latent size 5."""
    root = tmp_path_factory.mktemp("sweep")
    data = write_mat(root / "faces.mat")
    for name, extra in (("b0.5", ["--beta", "0.5", "--latent-dim", "3"]), ("b2", ["--beta", "2", "--latent-dim", "3"]),
                        ("b2-z5", ["--beta", "2", "--latent-dim", "5"])):
        r = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(root / "runs" / name), *BASE, *extra])
        assert r.exit_code == 0, r.output
    return root, data


def test_history_csv_has_the_columns_and_rows_of_history_json(sweep):
    root, _ = sweep
    history = json.loads((root / "runs" / "b2" / "history.json").read_text())
    with open(root / "runs" / "b2" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(history) == 2
    assert list(rows[0]) == list(history[0])
    for row, record in zip(rows, history, strict=True):
        assert all(float(row[k]) == pytest.approx(record[k], rel=1e-12) for k in record)


def test_compare_shows_exactly_the_differing_settings(runner, sweep, tmp_path):
    root, _ = sweep
    runs = sorted(str(p) for p in (root / "runs").iterdir())
    r = runner.invoke(app, ["compare", *runs, "--json", "--csv", str(tmp_path / "rows.csv")])
    assert r.exit_code == 0, r.output
    rows = last_json(r.stdout)
    assert [k for k in rows[0] if k in ("beta", "latent_dim", "lr", "likelihood", "seed", "epochs")] == \
        ["latent_dim", "beta", "epochs"]  # epochs is the trained count, not a setting
    assert {row["run"]: (row["latent_dim"], row["beta"]) for row in rows} == {
        runs[0]: (3, 0.5), runs[1]: (3, 2.0), runs[2]: (5, 2.0)}
    assert [row["best_test_loss"] for row in rows] == sorted(row["best_test_loss"] for row in rows)
    for row in rows:  # the same numbers as the run's own history
        history = torch.load(row["checkpoint"], weights_only=True)["history"]
        assert row["test_loss"] == history[-1]["test_loss"] and row["train_loss"] == history[-1]["train_loss"]
        assert row["best_test_loss"] == min(h["test_loss"] for h in history)
        assert row["active_units"] == history[-1]["test_active_units"]
        assert row["seconds"] == pytest.approx(sum(h["seconds"] for h in history), abs=0.05)
    with open(tmp_path / "rows.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [w["run"] for w in written] == [row["run"] for row in rows]
    assert [float(w["test_loss"]) for w in written] == [row["test_loss"] for row in rows]
    r = runner.invoke(app, ["compare", *runs], env={"COLUMNS": "250"})
    assert "beta" in r.stderr and "latent_dim" in r.stderr and " lr " not in r.stderr
    assert "nats per image" in r.stderr


def test_compare_sorts_plots_and_warns_about_what_it_cannot_read(runner, sweep, tmp_path):
    root, _ = sweep
    (tmp_path / "not-a-run").mkdir()
    writing = tmp_path / "still-writing"
    writing.mkdir()
    (writing / "history.json").write_text("[]")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes((root / "runs" / "b2" / "vae_final_model.pth").read_bytes()[:5000])
    plot = tmp_path / "curves.png"
    r = runner.invoke(app, ["compare", str(root / "runs" / "b2"), str(root / "runs" / "b0.5"),
                            str(tmp_path / "not-a-run"), str(writing), str(damaged), "--sort", "beta",
                            "--plot", str(plot), "--kl", "--json"])
    assert r.exit_code == 0, r.output
    assert [row["beta"] for row in last_json(r.stdout)] == [0.5, 2.0]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert "not a freyvae run" in r.stderr and "still being written" in r.stderr and "damaged.pth" in r.stderr
    from PIL import Image

    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 400
    r = runner.invoke(app, ["compare", str(tmp_path / "not-a-run"), str(damaged)])
    assert r.exit_code == 1 and "none of the given paths" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["compare", str(root / "runs" / "b2"), "--sort", "nonsense"])
    assert r.exit_code == 1 and "--sort nonsense" in r.stderr


def test_compare_does_not_rank_losses_of_different_likelihoods(runner, sweep, tmp_path):
    root, data = sweep
    for lik in ("categorical", "logistic"):
        r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / lik), "--likelihood", lik,
                                "--latent-dim", "3", *BASE])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compare", str(root / "runs" / "b2"), str(tmp_path / "categorical")])
    assert r.exit_code == 0 and "not comparable" in r.stderr
    r = runner.invoke(app, ["compare", str(tmp_path / "logistic"), str(tmp_path / "categorical"), "--json"])
    assert "bits/dim" in r.stderr
    rows = last_json(r.stdout)
    assert [row["best_test_bpd"] for row in rows] == sorted(row["best_test_bpd"] for row in rows)


def test_tensorboard_holds_every_epochs_scalars(runner, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_mat(tmp_path / "faces.mat")
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "3",
                            "--checkpoint-every", "2", "--latent-dim", "3", "--tensorboard", "--quiet"])
    assert r.exit_code == 0, r.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    scalars = events.Tags()["scalars"]
    for tag, key in (("loss/train", "train_loss"), ("loss/test", "test_loss"), ("kl/test", "test_kl"),
                     ("reconstruction/test", "test_reconstruction")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert {f"kl_per_dim/{d:02d}" for d in range(3)} <= set(scalars)
    assert [e.step for e in events.Images("reconstructions")] == [2]


def test_tensorboard_missing_is_one_line(tmp_path):
    """With the package hidden from Python, the flag stops at once with the install command."""
    data = write_mat(tmp_path / "faces.mat")
    code = ("import sys; sys.modules['tensorboard'] = None; sys.modules['torch.utils.tensorboard'] = None; "
            "from freyvae_cli.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, "train", "--data", str(data), "--out", str(tmp_path / "r"),
                           "--tensorboard"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and 'pip install "freyvae[tensorboard]"' in done.stderr
    assert not (tmp_path / "r").exists()
