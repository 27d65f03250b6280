"""Training: determinism, resume bit for bit, interruption by real signals, guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from freyvae_cli import train as train_module
from freyvae_cli.cli import app
from tests.conftest import last_json

SMALL = ["--latent-dim", "3", "--batch-size", "8", "--quiet"]


def _train(runner, data, out, *extra):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), *SMALL, *extra])
    return r


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_images(runner, small_mat, tmp_path):
    for name in ("a", "b", "c"):
        seed = "1" if name == "c" else "0"
        assert _train(runner, small_mat, tmp_path / name, "--epochs", "2", "--seed", seed).exit_code == 0
        r = runner.invoke(app, ["reconstruct", "-c", str(tmp_path / name / "vae_final_model.pth"),
                                "--data", str(small_mat), "-o", str(tmp_path / f"{name}.png")])
        assert r.exit_code == 0
    a, b, c = (_weights(tmp_path / n / "vae_final_model.pth") for n in "abc")
    assert _same(a, b) and not _same(a, c)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()

    def losses(name: str) -> list[dict]:  # history.json without the wall time
        history = json.loads((tmp_path / name / "history.json").read_text())
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert [r["epoch"] for r in losses("a")] == [1, 2] and losses("a") == losses("b") != losses("c")


def test_resume_gives_the_same_weights_bit_for_bit(runner, small_mat, tmp_path):
    """10 epochs, then a resume to 20, against 20 straight (with a KL warm-up spanning the cut)."""
    assert _train(runner, small_mat, tmp_path / "straight", "--epochs", "20", "--kl-warmup", "12").exit_code == 0
    assert _train(runner, small_mat, tmp_path / "half", "--epochs", "10", "--kl-warmup", "12").exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "half" / "vae_final_model.pth"), "--epochs", "20",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["epochs"] == 20
    assert _same(_weights(tmp_path / "straight" / "vae_final_model.pth"),
                 _weights(tmp_path / "half" / "vae_final_model.pth"))
    straight = torch.load(tmp_path / "straight" / "vae_final_model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "half" / "vae_final_model.pth", weights_only=True)
    assert [h["test_loss"] for h in straight["history"]] == [h["test_loss"] for h in resumed["history"]]
    assert straight["optimizer"]["state"][0]["step"] == resumed["optimizer"]["state"][0]["step"]


def test_ema_saves_the_average_scores_it_and_resumes_bit_for_bit(runner, small_mat, tmp_path):
    """--ema: the checkpoint's model is the weights' moving average, and the history scores it;
    the training weights ride along, so that a resume is still bit for bit."""
    ema = ("--ema", "0.9")
    assert _train(runner, small_mat, tmp_path / "straight", "--epochs", "4", *ema).exit_code == 0
    assert _train(runner, small_mat, tmp_path / "half", "--epochs", "2", *ema).exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "half" / "vae_final_model.pth"), "--epochs", "4"])
    assert r.exit_code == 0, r.output
    straight = torch.load(tmp_path / "straight" / "vae_final_model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "half" / "vae_final_model.pth", weights_only=True)
    assert _same(straight["model"], resumed["model"]) and _same(straight["training_model"], resumed["training_model"])
    assert not _same(straight["model"], straight["training_model"])
    assert [h["test_loss"] for h in straight["history"]] == [h["test_loss"] for h in resumed["history"]]
    plain = _train(runner, small_mat, tmp_path / "plain", "--epochs", "4")
    assert plain.exit_code == 0
    plain_ckpt = torch.load(tmp_path / "plain" / "vae_final_model.pth", weights_only=True)
    assert "training_model" not in plain_ckpt
    assert _same(plain_ckpt["model"], straight["training_model"])  # the average leaves the training alone
    r = runner.invoke(app, ["evaluate", "-c", str(tmp_path / "straight" / "vae_final_model.pth"),
                            "--data", str(small_mat), "--iw-samples", "0", "--elbo-samples", "1", "--json"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("option,value,saved", [("--latent-dim", "5", "3"), ("--batch-size", "4", "8"),
                                                 ("--likelihood", "logistic", "bernoulli")])
def test_resume_refuses_a_conflicting_setting(runner, small_mat, tmp_path, option, value, saved):
    assert _train(runner, small_mat, tmp_path / "run", "--epochs", "1").exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run" / "vae_final_model.pth"), "--epochs", "2",
                            option, value])
    assert r.exit_code == 2
    assert option in r.stderr and saved in r.stderr and value in r.stderr


def test_resume_refuses_other_data(runner, small_mat, tmp_path):
    from tests.conftest import make_faces, write_mat

    other = write_mat(tmp_path / "other.mat", make_faces(60, seed=5))
    assert _train(runner, small_mat, tmp_path / "run", "--epochs", "1").exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run" / "vae_final_model.pth"), "--epochs", "2",
                            "--data", str(other)])
    assert r.exit_code == 2 and "not the data" in r.stderr


def test_no_silent_overwrite(runner, small_mat, tmp_path):
    out = tmp_path / "run"
    assert _train(runner, small_mat, out, "--epochs", "1").exit_code == 0
    before = (out / "vae_final_model.pth").read_bytes()
    r = _train(runner, small_mat, out, "--epochs", "1", "--seed", "3")
    assert r.exit_code == 1 and "--force" in r.stderr and "--resume" in r.stderr
    assert (out / "vae_final_model.pth").read_bytes() == before
    assert _train(runner, small_mat, out, "--epochs", "1", "--seed", "3", "--force").exit_code == 0
    assert (out / "vae_final_model.pth").read_bytes() != before


def test_nan_loss_stops_with_the_epoch_and_batch_and_keeps_the_last_checkpoint(runner, small_mat, tmp_path,
                                                                               monkeypatch):
    real = train_module.neg_elbo
    calls = {"n": 0}

    def poisoned(model, x, generator=None):
        calls["n"] += 1
        rec, kl = real(model, x, generator)
        return (rec * float("nan"), kl) if calls["n"] == 2 * 7 + 3 else (rec, kl)  # 6 steps + 1 test pass per epoch

    monkeypatch.setattr(train_module, "neg_elbo", poisoned)
    out = tmp_path / "run"
    r = _train(runner, small_mat, out, "--epochs", "5", "--checkpoint-every", "1")
    assert r.exit_code == 1
    assert "epoch 3, batch 3" in r.stderr and "nan" in r.stderr
    assert sorted(p.name for p in out.glob("*.pth")) == ["checkpoint_epoch001.pth", "checkpoint_epoch002.pth"]
    assert torch.load(out / "checkpoint_epoch002.pth", weights_only=True)["epoch"] == 2


def test_signal_during_a_checkpoint_write_finishes_the_write(runner, small_mat, tmp_path, monkeypatch):
    """A real SIGTERM arrives half-way through writing a checkpoint's bytes."""
    from freyvae_cli import checkpoint

    real = checkpoint.atomic_write

    def slow_write(path, write):
        def halves(f):
            import io

            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGTERM)
            f.write(data[len(data) // 2:])
        return real(path, halves)

    monkeypatch.setattr(checkpoint, "atomic_write", slow_write)
    out = tmp_path / "run"
    r = _train(runner, small_mat, out, "--epochs", "5", "--checkpoint-every", "1")
    assert r.exit_code == 143, r.output
    assert "--resume" in r.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pth") == ["checkpoint_epoch001.pth",
                                                                           "interrupted.pth"]
    assert torch.load(out / "checkpoint_epoch001.pth", weights_only=True)["epoch"] == 1
    assert torch.load(out / "interrupted.pth", weights_only=True)["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def _popen_train(data, out, epochs, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "freyvae_cli", "train", "--data", str(data), "--out", str(out),
                             "--epochs", str(epochs), "--latent-dim", "3", "--batch-size", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_signal_saves_and_resume_matches_a_straight_run(sig, code, small_mat, tmp_path, runner):
    epochs = 4
    straight = _popen_train(small_mat, tmp_path / "straight", epochs, "--quiet")
    assert straight.wait(timeout=120) == 0
    proc = _popen_train(small_mat, tmp_path / "cut", epochs, "--checkpoint-every", "1")
    lines = []
    while True:  # wait for the first finished epoch, then interrupt during the second
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
        if line.startswith("epoch") and "1/" in line:
            break
    time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "freyvae train --resume" in err
    saved = torch.load(tmp_path / "cut" / "interrupted.pth", weights_only=True)
    assert saved["epoch"] < epochs
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut" / "interrupted.pth"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert _same(_weights(tmp_path / "straight" / "vae_final_model.pth"),
                 _weights(tmp_path / "cut" / "vae_final_model.pth"))


def test_signals_at_many_moments_never_leave_a_broken_file(small_mat, tmp_path):
    for i, delay in enumerate((0.0, 0.25, 0.6, 1.1)):
        out = tmp_path / f"run{i}"
        proc = _popen_train(small_mat, out, 50, "--checkpoint-every", "1")
        assert proc.stderr.readline().startswith("training")  # the loop has started
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode in (143, 0)
        for p in out.iterdir():
            assert not p.name.endswith(".tmp")
            if p.suffix == ".pth":
                torch.load(p, weights_only=True)


def test_resume_on_another_device_type_is_refused(runner, small_mat, tmp_path):
    from freyvae_cli import checkpoint

    assert _train(runner, small_mat, tmp_path / "run", "--epochs", "1").exit_code == 0
    ckpt = torch.load(tmp_path / "run" / "vae_final_model.pth", weights_only=True)
    assert ckpt["rng"]["device_type"] == "cpu"
    ckpt["rng"]["device_type"] = "cuda"
    checkpoint.save(tmp_path / "gpu.pth", {k: v for k, v in ckpt.items() if k != "format"})
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "gpu.pth"), "--epochs", "2", "--out",
                            str(tmp_path / "run2")])
    assert r.exit_code == 2 and "--device cuda" in r.stderr


def test_signal_inside_an_epoch_saves_the_position_and_resumes_bit_for_bit(runner, small_mat, tmp_path, monkeypatch):
    """A real SIGINT at a known step (epoch 3, batch 4 of 6): the checkpoint holds the position."""
    real = train_module.kl_weight

    def signalling(cfg, epoch, step, n_steps):
        if (epoch, step) == (3, 3):
            os.kill(os.getpid(), signal.SIGINT)
        return real(cfg, epoch, step, n_steps)

    assert _train(runner, small_mat, tmp_path / "straight", "--epochs", "5").exit_code == 0
    monkeypatch.setattr(train_module, "kl_weight", signalling)
    r = _train(runner, small_mat, tmp_path / "cut", "--epochs", "5")
    assert r.exit_code == 130, r.output
    saved = torch.load(tmp_path / "cut" / "interrupted.pth", weights_only=True)
    assert saved["epoch"] == 2 and saved["progress"]["step"] == 4 and len(saved["history"]) == 2
    monkeypatch.setattr(train_module, "kl_weight", real)
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut" / "interrupted.pth"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert _same(_weights(tmp_path / "straight" / "vae_final_model.pth"),
                 _weights(tmp_path / "cut" / "vae_final_model.pth"))
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [h["train_loss"] for h in straight] == [h["train_loss"] for h in resumed]
