"""Checkpoints written by an earlier freyvae keep working: every command reads the one that
freyvae 0.1.0 wrote (tests/fixtures/checkpoint-v0.1.0, made by scripts/make_checkpoint_fixture.py)
and says what it said then."""

from __future__ import annotations

import http.client
import json
import lzma
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from freyvae_cli.cli import app
from tests.conftest import last_json

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint-v0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> tuple[Path, Path]:
    """The 0.1.0 checkpoint and the generated faces it was trained on, as files."""
    where = tmp_path_factory.mktemp("old")
    pth, mat = where / "vae.pth", where / "faces.mat"
    pth.write_bytes(lzma.decompress((FIXTURE / "vae.pth.xz").read_bytes()))
    scipy.io.savemat(mat, {"ff": np.load(FIXTURE / "faces.npy").reshape(-1, 560).T})
    return pth, mat


def test_the_fixture_is_small():
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) <= 210_000


def test_info_says_what_it_said(runner, old):
    pth, _ = old
    r = runner.invoke(app, ["info", "-c", str(pth), "--json"])
    assert r.exit_code == 0, r.output
    payload = last_json(r.stdout)
    assert payload.pop("checkpoint") == str(pth)
    # what the data was: added since (issue 20); a checkpoint of then names its .mat file in its config
    assert payload.pop("data") == {"kind": "mat", "path": EXPECTED["info"]["config"]["data"]}
    assert payload.pop("prior") == "N(0, I)"  # added since 0.1.0: checkpoints of then have no fitted prior
    assert payload == EXPECTED["info"]


def test_evaluate_gives_the_same_numbers(runner, old):
    pth, mat = old
    r = runner.invoke(app, ["evaluate", "-c", str(pth), "--data", str(mat), "--device", "cpu",
                            "--iw-samples", "20", "--precision", "fp32", "--json"])  # fp32: as made, anywhere
    assert r.exit_code == 0, r.output
    got, want = last_json(r.stdout), EXPECTED["evaluate --iw-samples 20"]
    assert got.pop("prior") == "N(0, I)"  # added since 0.1.0, where every prior was N(0, I)
    assert set(got) == set(want)
    for key in ("neg_elbo", "reconstruction", "kl", "iw_nll", "bce_floor", "excess"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-4), key
    assert got["active_units"] == want["active_units"] and got["n_images"] == want["n_images"]


def test_sample_draws_the_same_faces(runner, old, tmp_path):
    pth, _ = old
    out = tmp_path / "s.png"
    r = runner.invoke(app, ["sample", "-c", str(pth), "--device", "cpu", "-n", "4", "--scale", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    got, want = np.asarray(Image.open(out)).astype(int), np.load(FIXTURE / "sample.npy").astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


@pytest.mark.parametrize("args", [
    ["reconstruct", "-n", "4"],
    ["traverse", "--dim", "0", "--dim", "1", "--steps", "4", "--gif", "{tmp}/t.gif"],
    ["traverse", "--from-prior"],
    ["interpolate", "--from", "0", "--to", "3", "--slerp"],
    ["manifold", "--grid", "4"],
    ["manifold", "--pca", "--grid", "4"],
    ["project", "--thumbnails"],
    ["project", "--split", "train", "--dims", "0", "1"],
])
def test_every_figure_command_reads_it(runner, old, tmp_path, args):
    pth, mat = old
    out = tmp_path / "out.png"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = runner.invoke(app, [*args, "-c", str(pth), "--data", str(mat), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["out"] == str(out)
    assert Image.open(out).size[0] > 40


def test_compare_and_resume_read_it(runner, old, tmp_path):
    pth, mat = old
    r = runner.invoke(app, ["compare", str(pth), "--json"])
    assert r.exit_code == 0, r.output
    row = last_json(r.stdout)[0]
    assert row["epochs"] == 2 and row["test_loss"] == pytest.approx(EXPECTED["info"]["final"]["test_loss"])
    out = tmp_path / "resumed"
    r = runner.invoke(app, ["train", "--resume", str(pth), "--data", str(mat), "--out", str(out), "--epochs", "3",
                            "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["epochs"] == 3
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[1]["test_loss"] == EXPECTED["info"]["final"]["test_loss"]


def test_explore_serves_it(old, tmp_path):
    pth, mat = old
    proc = subprocess.Popen([sys.executable, "-m", "freyvae_cli", "explore", "-c", str(pth), "--data", str(mat),
                             "--no-browser"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=tmp_path)
    try:
        address = proc.stderr.readline().split("http://")[1].split("/")[0]
        conn = http.client.HTTPConnection(address, timeout=30)
        conn.request("GET", "/api/info")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["latent_dim"] == 2
        conn.request("GET", "/api/decode.png?z=0.5,-1")
        assert conn.getresponse().status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
