"""The pretrained models shipped in freyvae_cli/pretrained/: named with --pretrained, usable without
the data file, checked against their SHA-256, and what their cards say is what `evaluate` measures.
The wheel test builds the package from this tree and installs it in a fresh venv."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent
from freyvae_cli import pretrained as shipped
from freyvae_cli.data.frey import load_faces
from tests.conftest import REAL_DATA, last_json, main_in_process, run_freyvae

NAMES = ("seed", "pixelvae")
NO_DATA = {"FREYVAE_DATA": ""}  # and the working folder has no data/ folder: no data file anywhere
real_data = pytest.mark.skipif(not REAL_DATA.is_file(), reason="needs ../shared/data/frey_rawface.mat")


def a_photo(folder: Path) -> Path:
    """An image of one's own: a bright oval on grey, larger than a face and in colour."""
    yy, xx = np.mgrid[0:112, 0:80]
    face = 60 + 150 * np.exp(-(((yy - 56) / 40) ** 2 + ((xx - 40) / 28) ** 2))
    path = folder / "me.png"
    Image.fromarray(np.stack([face, face * 0.9, face * 0.8], -1).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", NAMES)
def test_each_packaged_file_is_what_was_shipped_weights_and_summaries_only(name):
    path = shipped.path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == shipped.SHA256[name]
    c = ck.load(path)
    assert not {"optimizer", "rng", "progress", "training_model"} & set(c)  # weights only
    assert c["config"]["model"] == name and c["config"]["data"] == "data/frey_rawface.mat"
    n_test = len(c["split"]["test"])
    assert c["summary"]["mu"].shape == (n_test, c["config"]["latent_dim"])
    card = c["card"]
    assert card["command"].startswith("freyvae train") and card["data"]["pixel_sha256"] == c["data_hash"]
    assert "same weights" in card["reproduced"] or "within" in card["reproduced"]
    assert {"test_neg_elbo", "kl", "realism"} <= set(card["figures"])
    if name == "pixelvae":
        assert c["config"]["split"] == "literature" and card["epoch"] == c["epoch"]
        assert 3.5 < card["figures"]["bits_per_dim"] < 5
    assert sum(shipped.path(n).stat().st_size for n in NAMES) < 4e6  # the budget for the wheel


@pytest.mark.parametrize("command", ["reconstruct", "sample", "traverse", "interpolate", "manifold", "project",
                                     "evaluate", "explore", "info", "encode"])
def test_checkpoint_and_pretrained_together_is_one_line_and_exit_2(runner, command, tmp_path):
    from freyvae_cli.cli import app

    extra = [str(a_photo(tmp_path))] if command == "encode" else []
    result = runner.invoke(app, [command, *extra, "-c", str(tmp_path / "x.pth"), "--pretrained", "seed"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: give either -c/--checkpoint or --pretrained, not both"


@pytest.mark.parametrize("name", NAMES)
def test_without_the_data_file_what_can_work_does_and_the_rest_says_download(name, tmp_path, monkeypatch, capsys):
    """The console entry point in this process (the wheel test below runs the installed program)."""
    photo = a_photo(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FREYVAE_DATA", "")
    for args, out in [(["sample", "-n", "4"], "s.png"), (["traverse", "--pca", "--k", "2", "--steps", "3"], "t.png"),
                      (["traverse", "--steps", "3"], "d.png"), (["manifold", "--pca", "--grid", "3"], "m.png"),
                      (["project"], "p.png"), (["encode", str(photo)], "e.png")]:
        r = main_in_process([*args, "--pretrained", name, "-o", out, "--json"], capsys)
        assert r.returncode == 0, (args, r.stderr)
        assert Image.open(tmp_path / out).size[0] > 50 and last_json(r.stdout)["out"] == out
    for args in (["reconstruct"], ["interpolate"], ["evaluate", "--iw-samples", "0"], ["project", "--thumbnails"],
                 ["project", "--split", "train"]):
        r = main_in_process([*args, "--pretrained", name], capsys)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "freyvae download" in r.stderr, (args, r.stderr)


@real_data
@pytest.mark.parametrize("name", NAMES)
def test_the_stored_summary_is_what_the_test_faces_encode_to(name, tmp_path):
    model, c = ck.load_model(shipped.path(name))
    mu, logvar = latent.test_codes(model, c, load_faces(REAL_DATA))
    assert torch.allclose(mu, c["summary"]["mu"], atol=1e-5)
    assert torch.allclose(logvar, c["summary"]["logvar"], atol=1e-5)
    args = ["traverse", "--pretrained", name, "--pca", "--steps", "3", "-o", "t.png", "--json"]
    with_data = last_json(run_freyvae(*args, "--data", str(REAL_DATA), cwd=tmp_path).stdout)
    without = last_json(run_freyvae(*args, cwd=tmp_path, env=NO_DATA).stdout)
    assert np.allclose(with_data["explained_variance"], without["explained_variance"], atol=1e-5)


@real_data
@pytest.mark.parametrize("name", NAMES)
def test_each_cards_figures_are_what_evaluate_measures(name, tmp_path):
    card = ck.load(shipped.path(name))["card"]["figures"]
    realism = ["--realism"] if name == "pixelvae" else []  # the seed model's takes 40 s more; both are made alike
    r = run_freyvae("evaluate", "--pretrained", name, "--data", str(REAL_DATA), "--iw-samples", "0", *realism,
                    "--json", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    found = last_json(r.stdout)
    assert found["neg_elbo"] == pytest.approx(card["test_neg_elbo"], abs=0.01)
    assert found["kl"] == pytest.approx(card["kl"], abs=0.01) and found["active_units"] == card["active_units"]
    if "bits_per_dim" in card:
        assert found["bits_per_dim"]["neg_elbo"] == pytest.approx(card["bits_per_dim"], abs=1e-4)
    if realism:  # thread counts and other CPUs' arithmetic move it in the third decimal (docs/models.md, Realism);
        # with z ~ N(0, I) instead of the card's fitted prior it would be about 0.8
        assert found["realism"]["accuracy"] == pytest.approx(card["realism"]["accuracy"], abs=0.03)
        assert found["realism"]["samples_nearest_train_rms"] == pytest.approx(
            card["realism"]["samples_nearest_train_rms"], abs=0.3)


def test_info_shows_the_card_and_resuming_a_pretrained_model_is_refused(tmp_path):
    r = run_freyvae("info", "--pretrained", "pixelvae", "--json", cwd=tmp_path)
    assert r.returncode == 0 and "model card:" in r.stderr + r.stdout
    assert last_json(r.stdout.splitlines()[-1])["card"]["command"].startswith("freyvae train --model pixelvae")
    r = run_freyvae("train", "--resume", str(shipped.path("seed")), "--out", "again", cwd=tmp_path,
                    env={"FREYVAE_DATA": str(REAL_DATA)})
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def explore_without_data(python: Path | None, name: str, cwd: Path) -> dict:
    """Start `freyvae explore --pretrained NAME` with no data file; what its API answers."""
    cmd = [str(python or sys.executable), "-m", "freyvae_cli", "explore", "--pretrained", name, "--no-browser"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, **NO_DATA, "PYTHONUNBUFFERED": "1"})
    try:
        said = [proc.stderr.readline() for _ in range(2)]
        url = said[-1].split("http://")[1].split("/")[0]
        answers = {}
        for path in ("/api/info", "/api/decode.png?z=" + ",".join(["0.5"] * (20 if name == "seed" else 64)),
                     "/api/original.png?i=0", "/api/interpolate.png?a=0&b=3&steps=4", "/"):
            conn = http.client.HTTPConnection(url, timeout=60)
            conn.request("GET", path)
            response = conn.getresponse()
            answers[path.split("?")[0]] = (response.status, response.read())
        return {"said": said, **answers}
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0 and "Traceback" not in rest


def check_explorer(answers: dict, name: str) -> None:
    import json

    assert "no data file" in answers["said"][0]
    status, body = answers["/api/info"]
    info = json.loads(body)
    assert status == 200 and info["named"] == f"--pretrained {name}" and info["faces"] is False
    assert len(info["map"]["points"]) == info["n_test"] > 100
    assert answers["/api/decode.png"][0] == 200 and answers["/api/decode.png"][1][:4] == b"\x89PNG"
    assert answers["/api/interpolate.png"][0] == 200
    assert answers["/api/original.png"][0] == 404 and b"freyvae download" in answers["/api/original.png"][1]
    assert answers["/"][0] == 200


@pytest.mark.parametrize("name", NAMES)
def test_explore_serves_a_pretrained_model_without_the_data_file(name, tmp_path):
    check_explorer(explore_without_data(None, name, tmp_path), name)


def setuptools_major() -> int:
    """The major version of this environment's setuptools (0 where there is none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


def test_the_wheel_installed_in_a_fresh_venv_works_without_data_and_refuses_damage(tmp_path):
    """pip builds the wheel from this tree; a fresh venv holds it alone (its dependencies come from this
    environment's site-packages, added by a .pth file: that adds the folder, not its .pth files, so not
    this tree's editable install)."""
    root = Path(__file__).resolve().parents[1]
    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    tree = tmp_path / "tree"  # a copy of the tracked tree: the build writes nothing into the checkout
    def outputs(folder: str, names: list[str]) -> set[str]:  # what the build must not see: outputs, not sources
        top = {".venv", ".venv-ci", ".git", "runs", "data", "build", "dist"} if Path(folder) == root else set()
        return {n for n in names if n in top or n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")}

    shutil.copytree(root, tree, ignore=outputs)
    isolation = ["--no-build-isolation"] if setuptools_major() >= 77 else []  # else pip fetches setuptools
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                            "-w", str(wheels), str(tree)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("freyvae-*.whl")
    assert wheel.stat().st_size < 5e6
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)
    freyvae = venv / "bin" / "freyvae"
    where = subprocess.run([str(python), "-c", "import freyvae_cli; print(freyvae_cli.__file__)"], cwd=empty,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    env = {**os.environ, **NO_DATA}
    photo = a_photo(empty)
    for name in NAMES:
        for args in (["sample", "-n", "3", "-o", f"{name}-s.png"], ["traverse", "--pca", "--k", "2", "--steps", "3",
                     "-o", f"{name}-t.png"], ["encode", str(photo), "-o", f"{name}-e.png"]):
            r = subprocess.run([str(freyvae), *args, "--pretrained", name], cwd=empty, env=env, capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, (name, args, r.stderr)
        check_explorer(explore_without_data(python, name, empty), name)
    assert sorted(p.name for p in empty.iterdir()) == sorted(
        ["me.png"] + [f"{n}-{k}.png" for n in NAMES for k in "set"])  # nothing else written, no data file fetched

    installed = site / "freyvae_cli" / "pretrained"
    data = bytearray((installed / "seed.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (installed / "seed.pth").write_bytes(bytes(data))
    (installed / "pixelvae.pth").unlink()
    for name, says in (("seed", "is damaged"), ("pixelvae", "is missing")):
        r = subprocess.run([str(freyvae), "sample", "--pretrained", name], cwd=empty, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert says in r.stderr and "reinstall" in r.stderr, r.stderr


@pytest.mark.parametrize("damage, says", [
    (lambda c: c["summary"].update(mu=c["summary"]["mu"][:3]), "invalid summary of its test faces"),
    (lambda c: c["summary"]["logvar"].fill_(float("nan")), "invalid summary of its test faces"),
    (lambda c: c.update(card={"command": print.__name__, "figures": {1: 2}}), "invalid model card"),
])
def test_a_checkpoint_with_a_broken_card_or_summary_is_one_line(damage, says, tmp_path):
    c = ck.load(shipped.path("seed"))
    damage(c)
    ck.save(tmp_path / "bad.pth", c)
    r = run_freyvae("info", "-c", str(tmp_path / "bad.pth"), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
