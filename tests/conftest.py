"""Shared fixtures: small generated .mat files, a tiny trained model, a quickly trained PixelVAE, and the
real data's path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from freyvae_cli.cli import app

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "frey_rawface.mat"


def make_faces(n: int = 60, seed: int = 0) -> np.ndarray:
    """Face-like uint8 images (n, 28, 20): a bright oval whose position and brightness drift."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:20]
    faces = []
    for i in range(n):
        t = i / max(n - 1, 1)
        cy, cx = 12 + 4 * np.sin(3 * t), 10 + 3 * np.cos(5 * t)
        blob = np.exp(-(((yy - cy) / 8) ** 2 + ((xx - cx) / 6) ** 2))
        img = 30 + 180 * blob * (0.6 + 0.4 * t) + rng.normal(0, 6, (28, 20))
        faces.append(np.clip(img, 0, 255))
    return np.array(faces).astype(np.uint8)


def write_mat(path: Path, faces: np.ndarray | None = None, **extra) -> Path:
    faces = make_faces() if faces is None else faces
    scipy.io.savemat(path, {"ff": faces.reshape(len(faces), 560).T, **extra})
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def small_mat(tmp_path_factory) -> Path:
    return write_mat(tmp_path_factory.mktemp("data") / "small.mat")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, small_mat) -> Path:
    """A tiny model trained through the real CLI (3 epochs on 60 generated faces)."""
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(app, ["train", "--data", str(small_mat), "--out", str(out), "--epochs", "3",
                                      "--batch-size", "16", "--latent-dim", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "vae_final_model.pth"


@pytest.fixture(scope="session")
def quick_pixelvae(tmp_path_factory) -> tuple[Path, Path]:
    """A PixelVAE trained in seconds through the real CLI (4 epochs on 300 generated faces), and its
    data: a trained model that every clone has, for the checks pixelvae-321 also gets where present."""
    folder = tmp_path_factory.mktemp("quick-pixelvae")
    data = write_mat(folder / "faces.mat", make_faces(300))
    result = CliRunner().invoke(app, ["train", "--model", "pixelvae", "--data", str(data), "--out", str(folder / "run"),
                                      "--epochs", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "vae_final_model.pth", data


def run_freyvae(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """The real console program in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "freyvae_cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_in_pty(args: list[str], env: dict | None = None, cwd: Path | None = None,
               answers: dict[str, bytes] | None = None, timeout: float = 120) -> tuple[int, str]:
    """The console program in a real pseudo-terminal; `answers` maps a prompt's text to the keys typed."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "freyvae_cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env={**os.environ, "COLUMNS": "120", **(env or {})})
    os.close(slave)
    seen, pending = b"", dict(answers or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        seen += data
        for prompt, keys in list(pending.items()):
            if prompt.encode() in seen:
                os.write(master, keys)
                del pending[prompt]
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def main_in_process(args: list[str], capsys) -> subprocess.CompletedProcess:
    """The console entry point (freyvae_cli.cli.main) in this process: same code path, no start-up cost."""
    from freyvae_cli.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got: {stdout!r}"
    return json.loads(lines[0])
