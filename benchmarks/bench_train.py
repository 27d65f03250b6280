"""Training throughput: the plain tutorial loop against freyvae's trainer, same model, data and seed.

Runs both interleaved (plain, freyvae, plain, freyvae, ...) for --reps repetitions of --epochs
epochs each, every run in a fresh process (freyvae changes process-wide malloc settings), and
prints per-epoch medians (train pass + test pass), their ratio, both final test losses (nats per
image) and the FLOP rate of the training steps against the large-matrix-multiply rate of the same
cores, measured here in fp32 and bf16 (a practical peak; Zen 4's AVX-512 runs at 256 bits a cycle).

    python benchmarks/bench_train.py --data ../shared/data/frey_rawface.mat --epochs 30 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/reference.py: the plain variants

from freyvae_cli.config import TrainConfig  # noqa: E402
from freyvae_cli.data.frey import load_faces, pixel_hash, split_indices  # noqa: E402
from freyvae_cli.train import train  # noqa: E402
from freyvae_cli.vae import VAE  # noqa: E402
from tests.reference import relu_then_pool, transposed_conv_as  # noqa: E402


def flop_count(model: VAE) -> float:
    """Forward FLOPs per image (2 per multiply-add) of the convolutions and dense layers."""
    flops = 0
    hooks = []

    def count(module, inp, out):
        nonlocal flops
        if isinstance(module, torch.nn.Conv2d):
            flops += 2 * out[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.ConvTranspose2d):
            flops += 2 * inp[0][0].numel() * module.out_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            flops += 2 * module.in_features * module.out_features

    for m in model.modules():
        hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        model(torch.rand(1, 1, 28, 20))
    for h in hooks:
        h.remove()
    return flops


def plain_loop(faces: np.ndarray, epochs: int, seed: int) -> tuple[list[float], float]:
    """What a tutorial writes: DataLoader over a TensorDataset, NCHW float32, eager, default threads."""
    torch.manual_seed(seed)
    train_idx, test_idx = split_indices(len(faces))
    x = torch.from_numpy(faces).float().unsqueeze(1) / 255.0
    loader = DataLoader(TensorDataset(x[train_idx]), batch_size=32, shuffle=True)
    test_x = x[test_idx]
    model = VAE()
    model.encoder = relu_then_pool(model.encoder)  # the seed's order, as a tutorial writes it
    model.decoder = torch.nn.Sequential(*[  # and torch's own transposed convolutions
        transposed_conv_as(m, torch.nn.ConvTranspose2d) if isinstance(m, torch.nn.ConvTranspose2d) else m
        for m in model.decoder])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(batch):
        params, mu, logvar = model(batch)
        bce = F.binary_cross_entropy_with_logits(params, batch, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kld) / len(batch)

    times = []
    test_loss = float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for (batch,) in loader:
            opt.zero_grad()
            loss = loss_fn(batch)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            test_loss = loss_fn(test_x).item()
        times.append(time.perf_counter() - t0)
    return times, test_loss


class _Silent:
    def start(self, *a): ...
    def step(self, *a): ...
    def epoch(self, *a): ...


def freyvae_loop(faces: np.ndarray, epochs: int, seed: int, precision: str) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(out=out, epochs=epochs, seed=seed, checkpoint_every=0, precision=precision)
        result = train(cfg, faces, pixel_hash(faces), _Silent())
    return [r["seconds"] for r in result.history], result.history[-1]["test_loss"]


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """The best rate of an n x n x n matrix product on these cores: a practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def run_one(args: argparse.Namespace) -> None:
    """One variant in this (fresh) process; prints its per-epoch times and test loss as JSON."""
    faces = load_faces(args.data)
    if args.one == "plain":
        times, loss = plain_loop(faces, args.epochs, args.seed)
    else:
        times, loss = freyvae_loop(faces, args.epochs, args.seed, args.one)
    print(json.dumps({"times": times, "loss": loss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/frey_rawface.mat")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="plain,auto,fp32", help="plain, auto (freyvae default), fp32, bf16")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = ap.parse_args()
    if args.one:
        return run_one(args)
    faces = load_faces(args.data)
    n_train = len(split_indices(len(faces))[0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_train} training images, "
          f"{args.epochs} epochs x {args.reps} repetitions, interleaved, each run in a fresh process")
    per_epoch: dict[str, list[float]] = {}
    losses: dict[str, list[float]] = {}
    variants = args.variants.split(",")
    for rep in range(args.reps):
        for v in variants:
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--one", v, "--data", args.data, "--epochs", str(args.epochs),
                   "--seed", str(args.seed)]
            run = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            per_epoch.setdefault(v, []).append(statistics.median(run["times"]))
            losses.setdefault(v, []).append(run["loss"])
            print(f"  rep {rep + 1} {v:>6}: {per_epoch[v][-1]:.3f} s/epoch (median), test loss {run['loss']:.2f} "
                  f"nats/image, {time.perf_counter() - t0:.1f} s")
    flops = flop_count(VAE())
    peak32, peak16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"\nmodel: {flops / 1e6:.1f} MFLOP forward, ~{3 * flops / 1e6:.1f} MFLOP per image per training step; "
          f"2048^3 matrix product here: {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16")
    base = statistics.median(per_epoch.get("plain", [float("nan")]))
    print(f"{'variant':>8} {'s/epoch':>8} {'speed-up':>9} {'test loss':>10} {'GFLOP/s':>8} {'% fp32 mm':>10}")
    for v in variants:
        med = statistics.median(per_epoch[v])
        gflops = 3 * flops * n_train / med / 1e9
        print(f"{v:>8} {med:8.3f} {base / med:8.2f}x {statistics.median(losses[v]):10.2f} {gflops:8.1f} "
              f"{100 * gflops / peak32:9.1f}%")


if __name__ == "__main__":
    main()
