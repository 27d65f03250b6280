"""PixelVAE's sampler, sequential (freyvae 0.1.0, tests/reference.py) against the fast one
(freyvae_cli/pixelvae/sampler.py: guess.guess confirmed by fixed-point passes) and the fixed-point iteration
alone, side by side in one run on a trained model, checking that all agree bit for bit.

    python benchmarks/bench_sampling.py -c ../shared/models/pixelvae-321.pth --json

Cases: one face at batch 1 (a new z each repetition, the samplers interleaved) and a batch of
--batch faces (the 20x20 manifold is 400); each also times the guess alone and counts the faces it
got right. --bands times other band heights of the confirming passes, --at-once other numbers of
images in a pass (the batch's faces, per face).
Milliseconds per call, median and range over the repetitions; --json prints one object on stdout."""

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

from freyvae_cli import checkpoint  # noqa: E402
from freyvae_cli.pixelvae import guess, sampler  # noqa: E402
from tests.reference import sequential_sample  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def one_face(model, u, reps: int) -> dict:
    """Each repetition a new z, drawn by the three, interleaved: the sequential sampler, the
    fixed-point iteration alone (from a black image, 8-row bands: the sampler before guess.py), and
    the sampler (guess.guess, confirmed by one pass)."""
    seq, plain, fast, guessing, passes, agree, right = [], [], [], [], [], True, 0
    black = torch.zeros(1, 1, 28, 20, dtype=torch.uint8)
    for r in range(reps):
        z = torch.randn(1, model.latent_dim, generator=torch.Generator().manual_seed(100 + r))
        t_seq, want = timed(lambda z=z: sequential_sample(model, z, u))
        t_plain, before = timed(lambda z=z: sampler.sample(model, z, u, start=black, band=sampler.BAND))
        stats = {}
        t_fast, got = timed(lambda z=z, stats=stats: sampler.sample(model, z, u, stats=stats))
        t_guess, guessed = timed(lambda z=z: guess.guess(model, model.condition(z), u, sampler.AT_ONCE))
        seq.append(t_seq)
        plain.append(t_plain)
        fast.append(t_fast)
        guessing.append(t_guess)
        passes.append(stats["passes"])
        agree &= torch.equal(want, got) and torch.equal(want, before)
        right += torch.equal(want, guessed)
    return {"sequential_ms": spread(seq), "fixed_point_alone_ms": spread(plain), "sampler_ms": spread(fast),
            "guess_ms": spread(guessing), "guessed_right": f"{right}/{reps}", "passes": passes, "agree": agree,
            "speedup": round(statistics.median(seq) / statistics.median(fast), 1)}


def a_batch(model, u, n: int) -> dict:
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    stats = {}
    t_fast, got = timed(lambda: sampler.sample(model, z, u, stats=stats))
    black = torch.zeros(1, 1, 28, 20, dtype=torch.uint8)
    t_plain, before = timed(lambda: sampler.sample(model, z, u, start=black, band=sampler.BAND))
    t_seq, want = timed(lambda: sequential_sample(model, z, u))
    t_guess, guessed = timed(lambda: guess.guess(model, model.condition(z), u, sampler.AT_ONCE))
    return {"n": n, "sequential_ms": round(t_seq, 1), "fixed_point_alone_ms": round(t_plain, 1),
            "sampler_ms": round(t_fast, 1), "guess_ms": round(t_guess, 1),
            "guessed_right": f"{int((guessed == want).flatten(1).all(1).sum())}/{n}", "passes": stats["passes"],
            "passes_per_face": round(stats["image_passes"] / n, 2),
            "agree": torch.equal(want, got) and torch.equal(want, before), "speedup": round(t_seq / t_fast, 1)}


def at_once(model, u, counts: list[int], n: int, reps: int) -> dict:
    """Milliseconds per face for a batch of n, with each number of images in a pass, interleaved."""
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    found, first = {k: [] for k in counts}, None
    for r in range(reps):
        for k in counts if r % 2 == 0 else counts[::-1]:
            t, got = timed(lambda k=k: sampler.sample(model, z, u, at_once=k))
            found[k].append(t / n)
            first = got if first is None else first
            assert torch.equal(got, first), k  # the same faces whatever the number in a pass
    return {k: spread(v) for k, v in found.items()}


def bands(model, u, heights: list[int], n: int, reps: int) -> dict:
    found = {}
    zs = [torch.randn(1, model.latent_dim, generator=torch.Generator().manual_seed(200 + r)) for r in range(reps)]
    big = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(7))
    for band in heights:
        one = [timed(lambda z=z, band=band: sampler.sample(model, z, u, band=band))[0] for z in zs]
        found[band] = {"one_face_ms": spread(one), f"batch_{n}_ms": round(timed(
            lambda band=band: sampler.sample(model, big, u, band=band))[0], 1)}
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
    result = {"checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "at_once": sampler.AT_ONCE,
              "one_face": one_face(model, u, args.reps)}
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
