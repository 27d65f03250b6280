"""What `freyvae sweep` costs and what many workers gain, on the real data.

    python benchmarks/bench_sweep.py --data ../shared/data/frey_rawface.mat

1. Overhead per trial: K trials of a study (fixed settings: every trial the same run) against the
   same K runs through train.train, in this process, interleaved, `--rounds` times. What the sweep
   adds is Optuna's storage (a journal file), its sampler, a report and a pruning check per epoch,
   and the trial's folder.
2. Workers: a study of `--trials` one-thread trials (beta searched) run by one worker process, then
   by two on the same journal file; the wall time of each, start-up included.
Figures in seconds; the seed model, `--epochs` epochs a trial, literature split.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def overhead(data: str, epochs: int, k: int, rounds: int, tmp: Path) -> None:
    import optuna

    from freyvae_cli import checkpoint, config
    from freyvae_cli import sweep as sw
    from freyvae_cli.cli.sweep import _faces, _train_options
    from freyvae_cli.train import train
    from freyvae_cli.ui import SweepProgress, set_quiet

    set_quiet(True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    convert, defaults = _train_options()
    fixed = [f"epochs={epochs}", f"data={data}"]
    params = [sw.parse_param(p, convert) for p in fixed]
    faces, source, digest = _faces(Path(data))

    class Quiet:
        def start(self, *a): ...
        def step(self, *a): ...
        def epoch(self, record): ...

    def plain(r: int) -> float:
        t0 = time.perf_counter()
        for i in range(k):
            options = {**defaults, "epochs": epochs, "data": data, "split": "literature", "out": tmp / f"plain-{r}-{i}"}
            cfg, _ = config.resolve(options, {"epochs", "data", "split", "out"}, checkpoint.load)
            train(cfg, faces, digest, Quiet(), None, source)
        return time.perf_counter() - t0

    def swept(r: int) -> float:
        t0 = time.perf_counter()
        store, _ = sw.open_storage(None, tmp / f"study-{r}", sw.HEARTBEAT)
        study = sw.open_study(f"study-{r}", store, params, None, 0)
        sw.Worker(study, k, params, tmp / f"study-{r}", defaults, faces, source, digest, False, SweepProgress(k)).run()
        return time.perf_counter() - t0

    plains, sweeps = [], []
    for r in range(rounds):
        plains.append(plain(r))
        sweeps.append(swept(r))
        print(f"round {r + 1}: {k} runs through train.train {plains[-1]:.2f} s, as a study's trials {sweeps[-1]:.2f} s",
              file=sys.stderr, flush=True)
    ratios = [s / p - 1 for s, p in zip(sweeps, plains, strict=True)]
    print(f"overhead per trial: {100 * statistics.mean(ratios):+.2f} % (rounds: "
          f"{', '.join(f'{100 * x:+.2f}' for x in ratios)} %); a trial {statistics.mean(plains) / k:.2f} s "
          f"({epochs} epochs)", file=sys.stderr)


def bookkeeping(epochs: int, trials: int, tmp: Path) -> None:
    """What a trial costs the sweep without its training: a study on the journal file whose trials
    make the same calls as a real one (suggest, the user attributes, a report and a pruning check
    per epoch), timed per trial."""
    import optuna

    from freyvae_cli import sweep as sw

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store, _ = sw.open_storage(None, tmp / "bookkeeping", sw.HEARTBEAT)
    study = sw.open_study("bookkeeping", store, [sw.Param("beta", "float", low=0.25, high=4.0, log=True)],
                          "median", 5)

    def objective(trial) -> float:
        trial.suggest_float("beta", 0.25, 4.0, log=True)
        for name in ("run", "worker", "test_loss", "val_reconstruction", "val_kl", "best_epoch"):
            trial.set_user_attr(name, 1.0)
        for epoch in range(1, epochs + 1):
            trial.report(350.0 + trial.number % 3 - epoch * 0.01, epoch)
            trial.should_prune()
        return 350.0

    t0 = time.perf_counter()
    for _ in range(trials):
        sw.counts(study)
        study.optimize(objective, n_trials=1)
    per = (time.perf_counter() - t0) / trials
    print(f"the sweep's own work per trial ({epochs} epochs, journal file, {trials} trials): {1000 * per:.1f} ms",
          file=sys.stderr)


def workers(data: str, epochs: int, trials: int, tmp: Path) -> None:
    def run(n_workers: int) -> float:
        out = tmp / f"workers-{n_workers}"
        args = [sys.executable, "-m", "freyvae_cli", "sweep", "w", "--trials", str(trials), "--out", str(out),
                "-p", f"data={data}", "-p", f"epochs={epochs}", "-p", "beta=0.25:4:log", "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        procs = [subprocess.Popen(args, env=env) for _ in range(n_workers)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a worker failed")
        return time.perf_counter() - t0

    one = run(1)
    two = run(2)
    print(f"a study of {trials} one-thread trials: one worker {one:.1f} s, two workers {two:.1f} s: "
          f"{one / two:.2f}x", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FREYVAE_DATA", "data/frey_rawface.mat"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=3, help="trials per round of the overhead figure")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=8, help="trials of the workers' study")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"no data file {args.data}: pass --data or set FREYVAE_DATA")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        bookkeeping(args.epochs, 30, tmp)
        if not args.skip_overhead:
            overhead(args.data, args.epochs, args.k, args.rounds, tmp)
        workers(args.data, args.epochs, args.trials, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
