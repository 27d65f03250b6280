"""The published Frey Face table, reproduced: train PixelVAE on the literature's split seeds and
print each seed's test -ELBO and importance-weighted bound (bits/dim) at its best validation epoch,
beside the published rows and the seed model on the same protocol.

    python benchmarks/bench_literature.py --data ../shared/data/frey_rawface.mat --seeds 123 321 231
    python benchmarks/bench_literature.py --data ../shared/data/frey_rawface.mat --seeds 321 --realism \
        --iw-samples 0 --no-seed-model --train "--ema 0.999" --out runs/literature-ema

--realism adds `evaluate --realism` (docs/models.md, "Realism"): the classifier's accuracy telling
prior samples from the test faces, its control, and the samples' distance to the training faces.
--train passes more options to PixelVAE's `freyvae train`, for the variants the models guide compares.

Every run is the real console program (`freyvae train`, then `freyvae evaluate` on the
best-validation model), so `minutes` is the wall time a user waits, start-up and evaluation
included. --json prints one JSON list on stdout, an object per seed; the table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# FFJORD paper (Grathwohl et al., 2019), Table 3: test -ELBO in bits/dim on Frey Faces, with the
# protocol of Berg et al.'s Sylvester code (the split that --split literature reproduces).
PUBLISHED = [("VAE, no flow", 4.53, 0.02), ("IAF", 4.47, 0.05), ("Sylvester", 4.45, 0.04),
             ("Planar", 4.40, 0.06), ("FFJORD", 4.39, 0.01)]


def freyvae(*args: str) -> dict:
    """Run the console program; its last stdout line is the --json result."""
    exe = shutil.which("freyvae")
    if exe is None:
        raise SystemExit("freyvae is not on PATH: pip install . first")
    done = subprocess.run([exe, *args, "--json", "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"freyvae {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model_args: list[str], seed: int, data: str, out: Path, iw_samples: int, realism: bool = False) -> dict:
    """Train one model on one split seed, evaluate its best-validation checkpoint on the test split."""
    t0 = time.perf_counter()
    trained = freyvae("train", *model_args, "--split", "literature", "--split-seed", str(seed),
                      "--data", data, "--out", str(out), "--force", "--checkpoint-every", "0")
    ev = freyvae("evaluate", "-c", trained["best_checkpoint"], "--data", data, "--split", "test",
                 "--iw-samples", str(iw_samples), *(["--realism"] if realism else []))
    return {
        **({"realism": ev["realism"]} if realism else {}),
        "seed": seed,
        "test_neg_elbo_bpd": ev["bits_per_dim"]["neg_elbo"],
        "test_iw_bpd": ev["bits_per_dim"]["iw_nll"],
        "iw_samples": iw_samples,
        "test_kl_nats": ev["kl"],
        "active_units": ev["active_units"],
        "best_epoch": trained["best_epoch"],
        "epochs_run": trained["epochs"],
        "minutes": (time.perf_counter() - t0) / 60,
        "checkpoint": trained["best_checkpoint"],
    }


def mean_sd(values: list[float | None]) -> str:
    if None in values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FREYVAE_DATA", "data/frey_rawface.mat"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[123, 321, 231])
    ap.add_argument("--epochs", type=int, default=200,
                    help="PixelVAE epoch budget (early stopping may end it sooner)")
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--dropout", type=float, default=None, help="PixelVAE dropout [default: the model's]")
    ap.add_argument("--iw-samples", type=int, default=100, help="K of the importance-weighted bound (0: none)")
    ap.add_argument("--realism", action="store_true", help="also evaluate --realism on every run")
    ap.add_argument("--train", default="", help='more options for PixelVAE\'s train, as one string ("--ema 0.999")')
    ap.add_argument("--out", default="runs/literature")
    ap.add_argument("--no-seed-model", action="store_true", help="skip the seed model's rows")
    ap.add_argument("--json", action="store_true", help="one JSON list of the PixelVAE runs on stdout")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"no data file {args.data}: pass --data or set FREYVAE_DATA")

    pixelvae = ["--model", "pixelvae", "--epochs", str(args.epochs), "--patience", str(args.patience)]
    if args.dropout is not None:
        pixelvae += ["--dropout", str(args.dropout)]
    pixelvae += shlex.split(args.train)
    seed_model = ["--likelihood", "categorical", "--epochs", "30"]  # the seed's 30 epochs, a 256-way likelihood
    rows, seed_rows = [], []
    for s in args.seeds:
        rows.append(run(pixelvae, s, args.data, Path(args.out) / f"pixelvae-{s}", args.iw_samples, args.realism))
        r = rows[-1]
        iw = f"{r['test_iw_bpd']:.3f}" if r["test_iw_bpd"] is not None else "-"
        q = r.get("realism")
        realism = (f", realism {q['accuracy']:.3f} ± {q['accuracy_sd']:.3f} (control {q['control_accuracy']:.3f}), "
                   f"nearest training face {q['samples_nearest_train_rms']:.1f} against "
                   f"{q['held_out_nearest_train_rms']:.1f}") if q else ""
        print(f"pixelvae, split seed {s}: -ELBO {r['test_neg_elbo_bpd']:.3f}, IW {iw} bits/dim "
              f"(best epoch {r['best_epoch']} of {r['epochs_run']}, KL {r['test_kl_nats']:.1f} nats, "
              f"{r['active_units']} active units){realism} in {r['minutes']:.1f} min", file=sys.stderr, flush=True)
        if not args.no_seed_model:
            seed_rows.append(run(seed_model, s, args.data, Path(args.out) / f"seed-{s}", args.iw_samples,
                                 args.realism))

    lines = ["", "Frey Faces, test split of the literature protocol, bits/dim (lower is better)",
             f"{'model':<44} {'-ELBO':>14} {'IW bound':>14} {'minutes':>8}"]
    lines += [f"{name + ' (published)':<44} {f'{m:.2f} ± {sd:.2f}':>14} {'':>14} {'':>8}" for name, m, sd in PUBLISHED]
    for label, rs in ((f"freyvae seed model, {len(args.seeds)} seeds", seed_rows),
                      (f"freyvae pixelvae, {len(args.seeds)} seeds", rows)):
        if rs:
            lines.append(f"{label:<44} {mean_sd([r['test_neg_elbo_bpd'] for r in rs]):>14} "
                         f"{mean_sd([r['test_iw_bpd'] for r in rs]):>14} "
                         f"{statistics.mean(r['minutes'] for r in rs):>8.1f}")
    lines.append(f"(IW bound with K = {args.iw_samples}; figures at each run's best validation epoch; "
                 "minutes are wall time per run, evaluation included)")
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
