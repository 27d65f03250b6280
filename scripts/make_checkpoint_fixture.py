"""Write tests/fixtures/checkpoint-v0.1.0/: a checkpoint as freyvae 0.1.0 writes it, and what the
commands said about it, so that tests/test_old_checkpoints.py proves later code keeps reading it.

Run once, with the code of the day the fixture is named after; it refuses to overwrite the fixture.
The checkpoint is a real `freyvae train` run (2 epochs on 40 generated faces, not Frey data); to
stay under 200 kB every float tensor (weights and Adam's moments) is then rounded to 15 levels
and the file, re-saved with checkpoint.save, is xz-compressed. Every key and setting stays as the
trainer wrote it.

    python scripts/make_checkpoint_fixture.py
"""

from __future__ import annotations

import json
import lzma
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoint-v0.1.0"


def faces(n: int = 40, seed: int = 7) -> np.ndarray:
    """Generated face-like images: a bright oval that drifts (the same recipe as tests/conftest.py)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:20]
    out = []
    for i in range(n):
        t = i / (n - 1)
        cy, cx = 12 + 4 * np.sin(3 * t), 10 + 3 * np.cos(5 * t)
        blob = np.exp(-(((yy - cy) / 8) ** 2 + ((xx - cx) / 6) ** 2))
        out.append(np.clip(30 + 180 * blob * (0.6 + 0.4 * t) + rng.normal(0, 6, (28, 20)), 0, 255))
    return np.array(out).astype(np.uint8)


def quantise(t: torch.Tensor) -> torch.Tensor:
    """15 evenly spaced levels between -max|t| and +max|t| (so the file compresses)."""
    if not t.is_floating_point() or t.numel() < 8 or t.abs().max() == 0:
        return t
    step = t.abs().max() / 7
    return (torch.round(t / step) * step).to(t.dtype)


def freyvae(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "freyvae_cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"freyvae {' '.join(args)} failed: {r.stderr}")
    return r


def main() -> None:
    from freyvae_cli import checkpoint

    if FIXTURE.exists():
        sys.exit(f"{FIXTURE} exists: the fixture is what an old version wrote; do not re-make it")
    FIXTURE.mkdir(parents=True)
    np.save(FIXTURE / "faces.npy", faces())
    with tempfile.TemporaryDirectory() as tmp:
        mat, run = Path(tmp) / "faces.mat", Path(tmp) / "run"
        scipy.io.savemat(mat, {"ff": faces().reshape(-1, 560).T})
        freyvae("train", "--data", str(mat), "--out", str(run), "--epochs", "2", "--batch-size", "16",
                "--latent-dim", "2", "--checkpoint-every", "0", "--quiet")
        ckpt = torch.load(run / "vae_final_model.pth", weights_only=True)
        ckpt.pop("format")
        ckpt["model"] = {k: quantise(v) for k, v in ckpt["model"].items()}
        for state in ckpt["optimizer"]["state"].values():
            state.update({k: quantise(v) for k, v in state.items()})
        pth = Path(tmp) / "vae.pth"
        checkpoint.save(pth, ckpt)
        (FIXTURE / "vae.pth.xz").write_bytes(lzma.compress(pth.read_bytes(), preset=9))
        common = ["-c", str(pth), "--data", str(mat), "--device", "cpu", "--quiet"]
        info = json.loads(freyvae("info", "-c", str(pth), "--json").stdout)
        info.pop("checkpoint")
        evaluation = json.loads(freyvae("evaluate", *common, "--iw-samples", "20", "--json").stdout)
        sample = Path(tmp) / "sample.png"
        freyvae("sample", "-c", str(pth), "--device", "cpu", "-n", "4", "--scale", "1", "-o", str(sample))
        from PIL import Image

        np.save(FIXTURE / "sample.npy", np.asarray(Image.open(sample)))
    expected = {"made_by": "freyvae 0.1.0 (scripts/make_checkpoint_fixture.py)", "info": info,
                "evaluate --iw-samples 20": evaluation}
    (FIXTURE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {FIXTURE}: " + ", ".join(f"{p.name} {p.stat().st_size} B" for p in sorted(FIXTURE.iterdir())))


if __name__ == "__main__":
    main()
