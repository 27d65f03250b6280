"""`freyvae sweep`: many training runs, chosen and stopped by Optuna, shared through its storage.

Every worker runs the same command against one study; nothing coordinates them but the study's
storage: by default a journal file in the study's folder (the processes of one machine), or a
PostgreSQL or MySQL database (many machines). A trial is an ordinary run folder,
OUT/STUDY/trial-0007/, trained in the worker's own process; its objective is the best validation
-ELBO in nats per image (never a test figure: the test loss there is kept beside it, for reporting).

A worker keeps the study at N finished (complete or pruned) trials: it starts a trial while the
finished and running ones are fewer than N, and otherwise waits for the running ones, which on a
database fail by the heartbeat when their worker dies (and on a journal file, when this machine no
longer has the worker's process), so that another worker runs a trial in their place.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from freyvae_cli.errors import FreyError, UsageError

if TYPE_CHECKING:
    import numpy as np

FIXED_SETTINGS = ("data", "split")  # one data set and one split for the whole study
NOT_SWEPT = ("resume", "out", "force", "json_out", "quiet", "tensorboard", "tensorboard_dir", "skip_bad")
HEARTBEAT = 10  # seconds between a worker's heartbeats on a database; its trial fails after 3 missed


class Interrupted(Exception):
    """Training was stopped by a signal; its checkpoint is saved (interrupted.pth)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class Param:
    """One --param: a fixed value, a choice, or a uniform (log-uniform) range of floats or integers."""

    name: str
    kind: str  # fixed, choice, float, int
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def suggest(self, trial):
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        return suggest(self.name, self.low, self.high, log=self.log)

    def spec(self) -> str:
        if self.kind in ("fixed", "choice"):
            return f"{self.name}={','.join(map(str, self.values))}"
        return f"{self.name}={self.low}:{self.high}{':log' if self.log else ''}"

    def largest(self):
        return max(self.values) if self.kind in ("fixed", "choice") else self.high


def parse_param(text: str, convert: Callable[[str, str], object]) -> Param:
    """NAME=VALUE, NAME=a,b,c, NAME=LO:HI or NAME=LO:HI:log; each value checked by the train
    option of that name (`convert(name, value)` raises UsageError for a value it refuses)."""
    name, eq, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not eq or not name or not value:
        raise UsageError(f"--param {text!r}: write NAME=VALUE, NAME=a,b,c or NAME=LO:HI[:log]")
    if name in NOT_SWEPT:
        raise UsageError(f"--param {name}: the sweep sets where and how a trial runs; it is not a setting to search")
    parts = value.split(":")
    if len(parts) in (2, 3) and (len(parts) == 2 or parts[2] == "log"):
        low, high = convert(name, parts[0]), convert(name, parts[1])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UsageError(f"--param {name}: a range LO:HI needs a number option")
        if not low < high or (len(parts) == 3 and low <= 0):
            raise UsageError(f"--param {text!r}: a range needs LO < HI (and LO > 0 for :log)")
        kind = "int" if isinstance(low, int) and isinstance(high, int) and "." not in value else "float"
        return Param(name, kind, low=low, high=high, log=len(parts) == 3)
    values = tuple(convert(name, v) for v in value.split(","))
    if name in FIXED_SETTINGS and len(values) > 1:
        raise UsageError(f"--param {name}: one {name} for the whole study, not a choice")
    return Param(name, "fixed" if len(values) == 1 else "choice", values)


def open_storage(url: str | None, folder: Path, heartbeat: int):
    """The study's storage, and what to call it: the journal file in the study's folder, or the
    database at `url` (with a heartbeat, so that a lost worker's trial fails)."""

    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "journal.log"
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    if url.split(":", 1)[0].split("+")[0] not in ("postgresql", "mysql", "sqlite"):
        raise UsageError(f"--storage {url}: give a postgresql:// or mysql:// URL (or none: a journal file)")
    try:
        storage = _rdb(url, heartbeat)
    except ImportError:
        raise FreyError(f"--storage {url.split('://')[0]}:// needs its database driver: pip install "
                        '"psycopg[binary]" (PostgreSQL; it comes with freyvae[sweep]) or pymysql (MySQL)') from None
    except Exception as e:  # sqlalchemy's OperationalError and kin: the server is not there
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise FreyError(f"cannot reach the study's storage {_hide_password(url)} ({reason})") from None
    return storage, _hide_password(url)


def _rdb(url: str, heartbeat: int, tries: int = 5):
    """Optuna's database storage. Workers that start together on a new database race to create its
    tables; the losers see a duplicate key, and find the tables made when they try again."""
    import warnings

    import optuna

    for attempt in range(tries):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental": a warning on every worker
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                                  engine_kwargs={"pool_pre_ping": True})
        except Exception as e:
            if attempt == tries - 1 or not any(w in str(e) for w in ("duplicate key", "already exists")):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        rest = rest.split(":", 1)[0] + ":***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def open_study(name: str, storage, params: list[Param], prune: str | None, warmup: int):
    """Create the study, or join it where it exists with the same parameters. Each worker's
    sampler has its own seed: same-seed workers would draw the same first trials (optuna #4714)."""
    import optuna

    # Optuna prunes from step n_warmup_steps on: epochs 1..warmup (the KL warm-up) are never pruned
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup + 1) if prune == "median" \
        else optuna.pruners.NopPruner()
    sampler = optuna.samplers.TPESampler(seed=int.from_bytes(os.urandom(4), "little"))
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    spec = sorted(p.spec() for p in params)
    known = study.user_attrs.get("params")
    if known is None:
        study.set_user_attr("params", spec)
    elif known != spec:
        raise UsageError(f"study {name} already searches {' '.join(known)}; give the same --param options, "
                         "or a new study name")
    return study


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {"complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL), "running": states.count(TrialState.RUNNING)}


def fail_lost_trials(study, on_database: bool) -> None:
    """Running trials whose worker is gone become failed: by the heartbeat on a database; on a
    journal file (one machine, no heartbeat), those of this machine whose process has ended."""
    import optuna
    from optuna.trial import TrialState

    if on_database:
        optuna.storages.fail_stale_trials(study)
        return
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Worker:
    """What every trial of this worker shares: the study, its settings, the faces, and how to train."""

    study: object
    n_trials: int
    params: list[Param]
    folder: Path  # OUT/STUDY
    defaults: dict  # every train option's default value
    faces: np.ndarray
    source: dict
    data_hash: str
    on_database: bool
    progress: object  # ui.SweepProgress
    poll: float = 1.0

    def run(self) -> None:
        """Trials until the study has n_trials finished ones (see the module's story)."""
        while True:
            c = counts(self.study)
            finished = c["complete"] + c["pruned"]
            self.progress.update(c, self.best())
            if finished >= self.n_trials:
                return
            if c["failed"] >= 2 * self.n_trials:
                raise FreyError(f"{c['failed']} trials of study {self.study.study_name} failed; see their "
                                "run folders, and fix the settings")
            if finished + c["running"] >= self.n_trials:  # the others' trials may fill it: wait
                fail_lost_trials(self.study, self.on_database)
                time.sleep(self.poll)
                continue
            self.study.optimize(self.objective, n_trials=1, catch=(FreyError,))

    def best(self) -> float | None:
        try:
            return self.study.best_value
        except ValueError:  # no complete trial yet
            return None

    def objective(self, trial) -> float:
        import optuna

        from freyvae_cli import checkpoint, config, runs
        from freyvae_cli.train import train

        values = {p.name: p.suggest(trial) for p in self.params}
        run_folder = self.folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_folder))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        options = {**self.defaults, **values, "out": run_folder, "split": "literature", "quiet": True}
        cfg, _ = config.resolve(options, set(values) | {"out", "split", "data"}, checkpoint.load)
        runs.check_out_folder(run_folder, resuming=False, force=False)
        self.progress.update(counts(self.study), self.best())  # this trial among the running ones
        reporter = TrialReporter(trial, self.progress)
        try:
            result = train(cfg, self.faces, self.data_hash, reporter, None, self.source)
        except FreyError as e:  # this trial's settings cannot train: say so, and go on with the next
            self.progress.warn(f"trial {trial.number} failed: {e}")
            raise
        if result.final_path is None and result.interrupted:
            _, message = runs.summary(result, cfg)
            raise Interrupted(result.interrupted, message)
        best = runs.best_epoch(result.history)
        trial.set_user_attr("test_loss", best["test_loss"])
        trial.set_user_attr("val_reconstruction", best["val_reconstruction"])
        trial.set_user_attr("val_kl", best["val_kl"])
        trial.set_user_attr("best_epoch", best["epoch"])
        if reporter.pruned:
            raise optuna.TrialPruned()
        return best["val_loss"]


class TrialReporter:
    """train's Reporter for a trial: each epoch's validation loss to Optuna, and the pruner's word."""

    def __init__(self, trial, progress) -> None:
        self.trial, self.progress, self.pruned = trial, progress, False

    def start(self, cfg, first_epoch: int, n_steps: int) -> None:
        self.epochs = cfg.epochs

    def step(self, epoch: int, step: int, n_steps: int, loss: float) -> None:
        pass

    def epoch(self, record: dict) -> bool:
        self.trial.report(record["val_loss"], record["epoch"])
        self.progress.epoch(self.trial.number, record["epoch"], self.epochs)
        self.pruned = self.trial.should_prune()
        return self.pruned  # training stops after this epoch, its models saved


def trial_rows(study) -> list[dict]:
    """Every trial, best first (then the unfinished), with its parameters, state, minutes and folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60 \
            if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
                     "minutes": minutes, "run": t.user_attrs.get("run"), "test_loss": t.user_attrs.get("test_loss"),
                     "val_reconstruction": t.user_attrs.get("val_reconstruction"),
                     "val_kl": t.user_attrs.get("val_kl")})
    rows.sort(key=lambda r: (r["value"] is None or math.isnan(r["value"]), r["value"] or 0.0, r["number"]))
    return rows


def importances(study) -> dict[str, float]:
    """Each searched parameter's share of the objective's variance (Optuna's fANOVA), where the
    finished trials allow it; {} otherwise."""
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
