"""Start-up and short-command latency of the real console program (median of --reps runs each).

    python benchmarks/bench_cli.py --checkpoint runs/vae_final_model.pth --reps 5
    python benchmarks/bench_cli.py --checkpoint ../shared/models/pixelvae-321.pth \
        --data ../shared/data/frey_rawface.mat --reps 3      # + info, traverse and manifold --pca

`info` is the floor every command on a model pays: starting Python, importing torch, loading it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

COMMANDS = ["--help", "train --help", "reconstruct --help", "sample --help", "traverse --help",
            "project --help", "evaluate --help"]


def timed(args: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/vae_final_model.pth")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--data", help="also time info, traverse and manifold --pca (they read the test faces)")
    args = ap.parse_args()
    exe = shutil.which("freyvae")
    if exe is None:
        raise SystemExit("freyvae is not on PATH: pip install . first")
    ckpt = str(Path(args.checkpoint).resolve())
    runs = [(c, [exe, *c.split()]) for c in COMMANDS]
    runs.append(("sample -n 10", [exe, "sample", "-n", "10", "-c", ckpt, "-q"]))
    if args.data:
        data = ["-c", ckpt, "--data", str(Path(args.data).resolve()), "-q"]
        runs += [("info", [exe, "info", "-c", ckpt, "-q"]), ("traverse", [exe, "traverse", *data]),
                 ("manifold --pca", [exe, "manifold", "--pca", *data])]
    with tempfile.TemporaryDirectory() as cwd:
        print(f"{'command':<22} {'median s':>9} {'min s':>7}")
        for name, cmd in runs:
            times = [timed(cmd, cwd) for _ in range(args.reps)]
            print(f"{name:<22} {statistics.median(times):9.3f} {min(times):7.3f}")


if __name__ == "__main__":
    main()
