"""Every command through the real CLI (CliRunner) on a small generated data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from freyvae_cli.cli import app
from tests.conftest import last_json, run_freyvae


def test_help_and_version_in_a_real_process():
    r = run_freyvae("--help")
    assert r.returncode == 0
    commands = ("train", "download", "reconstruct", "sample", "traverse", "interpolate", "manifold", "project",
                "encode", "evaluate", "explore", "compare", "sweep", "info")
    assert [c.name for c in app.registered_commands] == list(commands)  # all of them, in the order a user meets them
    listed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    assert [c for c in listed if c in commands] == list(commands)
    v = run_freyvae("--version")
    assert v.returncode == 0 and v.stdout.startswith("freyvae ")


def test_train_writes_everything_and_json(runner, small_mat, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(out), "--epochs", "2",
                            "--checkpoint-every", "1", "--latent-dim", "3", "--json"])
    assert r.exit_code == 0, r.output
    payload = last_json(r.stdout)  # stdout holds only the JSON object
    assert payload["epochs"] == 2 and payload["units"] == "nats per image"
    assert payload["test_loss"] == pytest.approx(payload["test_reconstruction"] + payload["test_kl"])
    for name in ("vae_final_model.pth", "checkpoint_epoch001.pth", "checkpoint_epoch002.pth",
                 "history.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert h["train_loss"] == pytest.approx(h["train_reconstruction"] + h["train_kl"])
        assert 0 < h["test_loss"] < 1000
    assert "nats per image" in r.stderr
    ckpt = torch.load(out / "vae_final_model.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["latent_dim"] == 3
    assert len(ckpt["split"]["train"]) == 48 and len(ckpt["split"]["test"]) == 12  # round(0.8 * 60)
    assert set(ckpt["optimizer"]) == {"state", "param_groups"}
    assert Image.open(out / "loss_curve.png").size[0] > 400


def test_defaults_train_into_runs_and_commands_write_seed_file_names(runner, small_mat, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FREYVAE_DATA", str(small_mat))
    assert runner.invoke(app, ["train", "--epochs", "1", "--quiet"]).exit_code == 0
    assert (tmp_path / "runs" / "vae_final_model.pth").is_file()
    for cmd, name in (("reconstruct", "reconstructions.png"), ("sample", "generated_samples.png"),
                      ("traverse", "latent_variations.png"), ("project", "latent_space_2d.png")):
        r = runner.invoke(app, [cmd, "--quiet"] + (["--dim", "0"] if cmd == "traverse" else []))
        assert r.exit_code == 0, (cmd, r.output)
        assert Image.open(tmp_path / name).size[0] > 50


def test_reconstruct_grid_shows_the_test_images_above(runner, trained, small_mat, tmp_path):
    out = tmp_path / "deep" / "folder" / "rec.png"  # folders are created
    r = runner.invoke(app, ["reconstruct", "-c", str(trained), "--data", str(small_mat), "-o", str(out),
                            "-n", "4", "--scale", "2", "--json"])
    assert r.exit_code == 0, r.output
    img = np.asarray(Image.open(out))
    sep, title_h = 2, 10 + 4 * 2  # the title line: font of max(10, 3 * scale) px plus margins
    assert img.shape == (title_h + 2 * 56 + 3 * sep, 4 * 40 + 5 * sep)
    assert (img[:title_h] < 128).any()  # the title is drawn
    img = img[title_h:]
    ckpt = torch.load(trained, weights_only=True)
    from freyvae_cli.data.frey import load_faces

    first = load_faces(small_mat)[int(ckpt["split"]["test"][0])]
    assert np.array_equal(img[sep:sep + 56:2, sep:sep + 40:2], first)  # top-left tile is the first test face
    assert last_json(r.stdout)["frames"][0] == int(ckpt["split"]["test"][0])


def test_sample_grid_layout_and_seed(runner, trained, tmp_path):
    paths = [tmp_path / f"s{i}.png" for i in range(3)]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        r = runner.invoke(app, ["sample", "-c", str(trained), "-n", "7", "--cols", "3", "--seed", str(seed),
                                "-o", str(path), "--scale", "1"])
        assert r.exit_code == 0, r.output
    assert Image.open(paths[0]).size == (3 * 20 + 4 * 2, 3 * 28 + 4 * 2)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_traverse_rows_labels_and_gif(runner, trained, small_mat, tmp_path):
    out, gif = tmp_path / "t.png", tmp_path / "t.gif"
    r = runner.invoke(app, ["traverse", "-c", str(trained), "--data", str(small_mat), "--dim", "0", "--dim", "3",
                            "--steps", "5", "--range", "2", "-o", str(out), "--gif", str(gif), "--json"])
    assert r.exit_code == 0, r.output
    payload = last_json(r.stdout)
    assert payload["dims"] == [0, 3] and len(payload["kl"]) == 2
    img = Image.open(out)
    assert img.size[1] > 2 * 28 * 4 and img.size[0] > 5 * 20 * 4  # two rows of five, plus label column
    anim = Image.open(gif)
    assert anim.n_frames == 2 * 5 - 2


def test_interpolate_and_manifold(runner, trained, small_mat, tmp_path):
    r = runner.invoke(app, ["interpolate", "-c", str(trained), "--data", str(small_mat), "--from", "0", "--to", "3",
                            "--steps", "6", "--slerp", "-o", str(tmp_path / "i.png"), "--scale", "1",
                            "--gif", str(tmp_path / "i.gif")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "i.png").size == (8 * 20 + 9 * 2, 28 + 2 * 2)
    assert Image.open(tmp_path / "i.gif").n_frames == 10
    for extra in (["--dims", "0", "1"], ["--pca"], []):
        r = runner.invoke(app, ["manifold", "-c", str(trained), "--data", str(small_mat), "--grid", "5",
                                "--scale", "1", "-o", str(tmp_path / "m.png"), *extra])
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / "m.png").size == (5 * 20 + 6, 5 * 28 + 6)


def test_project_variants(runner, trained, small_mat, tmp_path):
    for extra in ([], ["--split", "train", "--thumbnails"], ["--dims", "1", "2"]):
        out = tmp_path / "p.png"
        r = runner.invoke(app, ["project", "-c", str(trained), "--data", str(small_mat), "-o", str(out),
                                "--json", *extra])
        assert r.exit_code == 0, r.output
        payload = last_json(r.stdout)
        assert payload["n"] == (48 if "train" in extra else 12)
        assert Image.open(out).size[0] > 400
    r = runner.invoke(app, ["project", "-c", str(trained), "--data", str(small_mat), "-o", str(tmp_path / "p.svg")])
    assert r.exit_code == 0 and (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_info_json(runner, trained):
    r = runner.invoke(app, ["info", "-c", str(trained), "--json"])
    assert r.exit_code == 0, r.output
    info = last_json(r.stdout)
    assert info["epoch"] == 3 and info["config"]["latent_dim"] == 4
    assert info["split"] == {"train": 48, "test": 12}
    assert len(info["data_hash"]) == 64 and "torch" in info["versions"]


def test_quiet_prints_nothing_on_stderr(runner, trained, tmp_path):
    r = runner.invoke(app, ["sample", "-c", str(trained), "-o", str(tmp_path / "q.png"), "--quiet"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


def test_sample_npy_writes_the_faces_as_uint8(runner, trained, tmp_path):
    npy = tmp_path / "faces.npy"
    r = runner.invoke(app, ["sample", "-c", str(trained), "-n", "7", "--seed", "2", "-o", str(tmp_path / "s.png"),
                            "--npy", str(npy), "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["npy"] == str(npy)
    faces = np.load(npy, allow_pickle=False)
    assert faces.dtype == np.uint8 and faces.shape == (7, 28, 20)
    grid = np.asarray(Image.open(tmp_path / "s.png").convert("L"))
    tile = grid[2:2 + 28 * 4:4, 2:2 + 20 * 4:4]  # the first face of the grid, at scale 4 after a 2-pixel border
    assert np.array_equal(tile, faces[0])
    bad = runner.invoke(app, ["sample", "-c", str(trained), "--npy", str(tmp_path / "faces.csv")])
    assert bad.exit_code == 2 and "use one of .npy" in bad.output
    assert not (tmp_path / "faces.csv").exists()
