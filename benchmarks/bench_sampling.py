"""PixelVAE's sampler, sequential (freyvae 0.1.0, tests/reference.py) against fixed-point
(freyvae_cli/sampling.py), side by side in one run on a trained model, checking that they agree
bit for bit.

    python benchmarks/bench_sampling.py -c ../shared/models/pixelvae-321.pth --json

Cases: one face at batch 1 (a new z each repetition, the two samplers interleaved), a batch of
--batch faces (the 20x20 manifold is 400), and a slider walk of 30 small steps drawn cold and from
the face before (what `explore` does). --bands times other band heights of the fixed-point sampler,
--at-once other numbers of images in a pass (the batch's faces, per face).
Milliseconds per call, median and range over the repetitions; --json prints one object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/reference.py: the plain sequential sampler

from freyvae_cli import checkpoint, sampling  # noqa: E402
from tests.reference import sequential_sample  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def one_face(model, u, reps: int) -> dict:
    seq, fast, passes, agree = [], [], [], True
    for r in range(reps):
        z = torch.randn(1, model.latent_dim, generator=torch.Generator().manual_seed(100 + r))
        t_seq, want = timed(lambda z=z: sequential_sample(model, z, u))
        stats = {}
        t_fast, got = timed(lambda z=z, stats=stats: sampling.sample(model, z, u, stats=stats))
        seq.append(t_seq)
        fast.append(t_fast)
        passes.append(stats["passes"])
        agree &= torch.equal(want, got)
    return {"sequential_ms": spread(seq), "fixed_point_ms": spread(fast), "passes": passes, "agree": agree,
            "speedup": round(statistics.median(seq) / statistics.median(fast), 1)}


def a_batch(model, u, n: int) -> dict:
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    stats = {}
    t_fast, got = timed(lambda: sampling.sample(model, z, u, stats=stats))
    t_seq, want = timed(lambda: sequential_sample(model, z, u))
    return {"n": n, "sequential_ms": round(t_seq, 1), "fixed_point_ms": round(t_fast, 1), "passes": stats["passes"],
            "passes_per_face": round(stats["image_passes"] / n, 1), "agree": torch.equal(want, got),
            "speedup": round(t_seq / t_fast, 1)}


def at_once(model, u, counts: list[int], n: int, reps: int) -> dict:
    """Milliseconds per face for a batch of n, with each number of images in a pass, interleaved."""
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    found, first = {k: [] for k in counts}, None
    for r in range(reps):
        for k in counts if r % 2 == 0 else counts[::-1]:
            t, got = timed(lambda k=k: sampling.sample(model, z, u, at_once=k))
            found[k].append(t / n)
            first = got if first is None else first
            assert torch.equal(got, first), k  # the same faces whatever the number in a pass
    return {k: spread(v) for k, v in found.items()}


def slider_walk(model, u, steps: int = 30, step: float = 0.1) -> dict:
    """A drag along the highest-variance dimension: each face cold, and from the face before."""
    z = torch.zeros(steps, model.latent_dim)
    z[:, 0] = torch.arange(steps) * step - 1.5
    cold, warm, passes = [], [], []
    before = None
    for i in range(steps):
        zi, stats = z[i:i + 1], {}
        t, want = timed(lambda zi=zi: sampling.sample(model, zi, u))
        cold.append(t)
        t, got = timed(lambda zi=zi, start=before, stats=stats: sampling.sample(model, zi, u, start=start, stats=stats))
        warm.append(t)
        passes.append(stats["passes"])
        assert torch.equal(want, got)
        before = got
    return {"steps": steps, "step": step, "cold_ms": spread(cold), "warm_ms": spread(warm), "warm_passes": passes}


def bands(model, u, heights: list[int], n: int, reps: int) -> dict:
    found = {}
    zs = [torch.randn(1, model.latent_dim, generator=torch.Generator().manual_seed(200 + r)) for r in range(reps)]
    big = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    for band in heights:
        one = [timed(lambda z=z, band=band: sampling.sample(model, z, u, band=band))[0] for z in zs]
        found[band] = {"one_face_ms": spread(one), f"batch_{n}_ms": round(timed(
            lambda band=band: sampling.sample(model, big, u, band=band))[0], 1)}
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", default=str(ROOT.parent / "shared" / "models" / "pixelvae-321.pth"))
    ap.add_argument("--reps", type=int, default=5, help="faces timed at batch 1")
    ap.add_argument("--batch", type=int, default=400, help="faces in the batch case (0: skip it)")
    ap.add_argument("--bands", type=int, nargs="*", default=[], help="band heights to time as well")
    ap.add_argument("--at-once", type=int, nargs="*", default=[], help="images in a pass to time as well")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model, _ = checkpoint.load_model(args.checkpoint)
    if not model.autoregressive:
        raise SystemExit(f"{args.checkpoint} is not a PixelVAE: nothing to sample pixel by pixel")
    u = torch.rand(1, 1, 28, 20, generator=torch.Generator().manual_seed(0))
    result = {"checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "band": sampling.BAND,
              "at_once": sampling.AT_ONCE,
              "one_face": one_face(model, u, args.reps), "slider_walk": slider_walk(model, u)}
    if args.batch:
        result["batch"] = a_batch(model, u, args.batch)
    if args.at_once:
        result["ms_per_face_at_once"] = at_once(model, u, args.at_once, args.batch or 400, max(2, args.reps // 4))
    if args.bands:
        result["bands"] = bands(model, u, args.bands, args.batch or 64, args.reps)
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
