"""Checkpoints: the round trip, safe loading, and refusal of foreign or mismatched files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from freyvae_cli import checkpoint
from freyvae_cli.cli import app
from freyvae_cli.vae import VAE


def test_round_trip_gives_the_same_model(trained):
    ckpt = torch.load(trained, weights_only=True)  # opens without allowing any Python object
    for key in ("model", "optimizer", "epoch", "config", "split", "data_hash", "history", "rng", "versions"):
        assert key in ckpt
    model, _ = checkpoint.load_model(trained)
    fresh = VAE(4)
    fresh.load_state_dict(ckpt["model"])
    x = torch.rand(3, 1, 28, 20)
    with torch.no_grad():
        assert torch.equal(model.encode(x)[0], fresh.eval().to(memory_format=torch.channels_last).encode(x)[0])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(runner, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"format": checkpoint.FORMAT, "model": _Evil(str(marker))}))
    pickle.loads(evil.read_bytes())["model"].close()  # proof that plain pickle would run it
    assert marker.exists()
    marker.unlink()
    for cmd in ("sample", "info"):
        r = runner.invoke(app, [cmd, "-c", str(evil), "-o", str(tmp_path / "s.png")] if cmd == "sample"
                          else [cmd, "-c", str(evil)])
        assert r.exit_code == 1
        assert "refused" in r.stderr and str(evil) in r.stderr
    assert not marker.exists()
    # the same object saved with torch.save (a zip checkpoint) is refused too
    torch.save({"format": checkpoint.FORMAT, "x": _Evil(str(marker))}, tmp_path / "evil2.pth")
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(tmp_path / "evil2.pth")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "not a checkpoint", "plain tensor", "text", "other latent size",
                                  "other likelihood", "NaN weights", "foreign layer names", "directory"])
def test_unusable_checkpoints_are_named_and_explained(kind, trained, tmp_path, runner):
    path = tmp_path / "bad.pth"
    good = torch.load(trained, weights_only=True)
    if kind == "truncated":
        path.write_bytes(trained.read_bytes()[:5000])
    elif kind == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "plain tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "text":
        path.write_text("hello")
    elif kind == "other latent size":
        good["config"]["latent_dim"] = 7
        torch.save(good, path)
    elif kind == "other likelihood":
        good["config"]["likelihood"] = "categorical"
        torch.save(good, path)
    elif kind == "NaN weights":
        good["model"]["to_mu.bias"][0] = float("nan")
        torch.save(good, path)
    elif kind == "foreign layer names":
        good["model"] = {"fc.weight": torch.zeros(2, 2)}
        torch.save(good, path)
    else:
        path.mkdir()
    r = runner.invoke(app, ["sample", "-c", str(path), "-o", str(tmp_path / "out.png")])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert not (tmp_path / "out.png").exists()
    if kind == "other latent size":
        assert "latent size of 7" in lines[0]


def test_atomic_save_leaves_no_temporary(trained, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    target = tmp_path / "copy.pth"
    checkpoint.save(target, {k: v for k, v in ckpt.items() if k != "format"})
    assert os.listdir(tmp_path) == ["copy.pth"]
    assert checkpoint.load(target)["epoch"] == ckpt["epoch"]
