"""Many runs side by side: which settings differ, and what each run reached.

A run is a folder written by `freyvae train` or one of its checkpoints. Losses are nats per image;
runs of different likelihoods compare in bits/dim where all have it (logistic, categorical), and
are not ranked otherwise (a Bernoulli loss on grey pixels is not a likelihood of 8-bit data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from freyvae_cli import checkpoint
from freyvae_cli.errors import FreyError
from freyvae_cli.likelihood import bits_per_dim
from freyvae_cli.runs import BEST_NAME, FINAL_NAME, INTERRUPTED_NAME, best_epoch

# Settings that say where a run lives or how it was saved, not what it is.
NOT_SETTINGS = ("out", "checkpoint_every", "device", "tensorboard", "epochs")  # epochs: a column of its own
DISCRETE = ("logistic", "categorical", "mixture")


@dataclass
class SavedRun:
    name: str
    checkpoint: Path
    ckpt: dict


def resolve(path: Path) -> Path:
    """The checkpoint a path names: a .pth itself, or a run folder's best (kept by early
    stopping) or else final model. Raises FreyError saying why a path is not a finished run."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FreyError(f"{path}: no such file or folder")
    for name in (BEST_NAME, FINAL_NAME):
        if (path / name).is_file():
            return path / name
    if (path / "history.json").is_file() or (path / INTERRUPTED_NAME).is_file() or any(path.glob("*.pth")):
        raise FreyError(f"{path}: a run still being written or interrupted (no final model yet)")
    raise FreyError(f"{path}: not a freyvae run (no {FINAL_NAME})")


def expand_studies(paths: list[Path]) -> list[Path]:
    """Each folder of a `freyvae sweep` study (it holds trial-NNNN run folders) as its trials."""
    expanded = []
    for p in paths:
        trials = sorted(p.glob("trial-[0-9]*")) if p.is_dir() and not (p / "history.json").exists() else []
        expanded += [t for t in trials if t.is_dir()] or [p]
    return expanded


def load_runs(paths: list[Path], warn) -> list[SavedRun]:
    """The runs that can be read (a study's folder: its trials); each one that cannot gets one
    warning line naming it."""
    runs = []
    for p in expand_studies(paths):
        try:
            ck = resolve(p)
            runs.append(SavedRun(str(p), ck, checkpoint.load(ck)))
        except FreyError as e:
            warn(str(e))
    return runs


def differing_settings(runs: list[SavedRun]) -> list[str]:
    """The config keys whose values are not the same in every run, in the config's order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.ckpt["config"] if k not in keys and k not in NOT_SETTINGS]
    return [k for k in keys if len({repr(r.ckpt["config"].get(k)) for r in runs}) > 1]


def row(run: SavedRun, settings: list[str]) -> dict:
    """One run's line of the table: its differing settings, then what it reached."""
    cfg, history = run.ckpt["config"], run.ckpt["history"]
    last = history[-1] if history else {}
    best = best_epoch(history)
    if best is not None:
        chosen_by, best_loss, best_test = "val", best["val_loss"], best["test_loss"]
    elif history:
        best = min(history, key=lambda h: h["test_loss"])
        chosen_by, best_loss, best_test = "test", best["test_loss"], best["test_loss"]
    else:
        chosen_by = best_loss = best_test = None
    discrete = cfg.get("likelihood") in DISCRETE
    return {
        "run": run.name,
        **{k: cfg.get(k) for k in settings},
        "epochs": last.get("epoch", 0),
        "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
        "train_loss": last.get("train_loss"),
        "test_loss": last.get("test_loss"),
        "best_loss": best_loss,
        "best_by": chosen_by,
        "best_epoch": best["epoch"] if best else None,
        "best_test_loss": best_test,
        "kl": last.get("test_kl"),
        "active_units": last.get("test_active_units"),
        "test_bpd": bits_per_dim(last.get("test_loss")) if discrete else None,
        "best_test_bpd": bits_per_dim(best_test) if discrete else None,
        "checkpoint": str(run.checkpoint),
    }


def ranking_metric(rows: list[dict], likelihoods: set[str]) -> str | None:
    """The column that ranks these runs fairly: nats for one likelihood, bits/dim for several
    discrete ones, none when a Bernoulli run is mixed with others."""
    if len(likelihoods) <= 1:
        return "best_test_loss"
    if likelihoods <= set(DISCRETE):
        return "best_test_bpd"
    return None


def compare(paths: list[Path], warn, sort: str | None = None
            ) -> tuple[list[dict], list[str], str | None, dict[str, list[dict]]]:
    """Rows for every readable run, the settings that differ, the column that ranks them, and
    each run's per-epoch history (for the plot)."""
    runs = load_runs(paths, warn)
    if not runs:
        raise FreyError("none of the given paths is a finished freyvae run")
    settings = differing_settings(runs)
    rows = [row(r, settings) for r in runs]
    metric = ranking_metric(rows, {r.ckpt["config"].get("likelihood") for r in runs})
    key = sort or metric
    if key is not None:
        if key not in rows[0]:
            raise FreyError(f"--sort {key}: no such column; use one of {', '.join(rows[0])}")
        rows.sort(key=lambda r: (r[key] is None, r[key] if isinstance(r[key], (int, float)) else str(r[key])))
    return rows, settings, metric, {r.name: r.ckpt["history"] for r in runs}

