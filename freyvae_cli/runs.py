"""A run folder: what `freyvae train` writes into it, the checks before it does, and what it says after.

A run folder holds checkpoints (FINAL_NAME, BEST_NAME with a validation split, INTERRUPTED_NAME,
checkpoint_epochNNN.pth), history.json and history.csv (one record per epoch) and loss_curve.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from freyvae_cli.atomic_files import check_writable
from freyvae_cli.config import RESUME_MUST_MATCH, TrainConfig
from freyvae_cli.errors import FreyError, UsageError

FINAL_NAME = "vae_final_model.pth"
BEST_NAME = "vae_best_model.pth"  # the best validation loss so far, where a validation split exists
INTERRUPTED_NAME = "interrupted.pth"


@dataclass
class TrainResult:
    history: list[dict]
    final_path: Path | None
    seconds: float
    interrupted: int = 0  # the signal number that stopped training, 0 if it finished
    saved: list[Path] = field(default_factory=list)
    best_path: Path | None = None
    stopped_early: bool = False


def best_epoch(history: list[dict]) -> dict | None:
    """The epoch of lowest validation loss (the first, on ties), or None without a validation split."""
    scored = [r for r in history if r.get("val_loss") is not None]
    return min(scored, key=lambda r: r["val_loss"]) if scored else None


def csv_text(rows: list[dict]) -> str:
    """Records as CSV, every key a column in order of first appearance, None and missing values
    empty: history.csv (one row per epoch, for pandas, spreadsheets, gnuplot) and `compare --csv`."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def check_out_folder(out: Path, resuming: bool, force: bool) -> None:
    """Refuse a file for a folder, an unwritable place, or a folder that already holds a run."""
    if out.exists() and not out.is_dir():
        raise FreyError(f"--out {out} is a file; give a folder")
    check_writable(out / FINAL_NAME)
    existing = sorted(p.name for p in out.glob("*.pth")) if out.is_dir() else []
    if existing and not resuming and not force:
        raise FreyError(
            f"{out} already holds a trained run ({', '.join(existing[:3])}); pass --resume {out / existing[-1]} "
            f"to continue it, --force to train over it, or --out for a new folder"
        )


def check_resume(ckpt: dict, path: Path, cfg: TrainConfig, explicit: set[str], data_hash: str) -> None:
    """Refuse to resume on other data, with a setting given on the command line that differs from the
    checkpoint's, or with nothing left to train."""
    saved = ckpt["config"]
    if ckpt.get("data_hash") != data_hash:
        raise UsageError(f"cannot resume {path}: {cfg.data} is not the data it was trained on "
                         "(pixel hash differs); pass the same --data")
    if saved.get("lr_schedule") == "cosine" and saved.get("epochs") != cfg.epochs:
        raise UsageError(f"cannot resume {path} with --epochs {cfg.epochs}: its cosine learning-rate schedule "
                         f"runs over {saved.get('epochs')} epochs; resume with --epochs {saved.get('epochs')} "
                         "or start a new run")
    for name in RESUME_MUST_MATCH:
        if name in explicit and saved.get(name) != getattr(cfg, name):
            raise UsageError(
                f"cannot resume {path}: it was trained with --{name.replace('_', '-')} "
                f"{saved.get(name)}, not {getattr(cfg, name)}; drop the option or start a new run"
            )
    if ckpt["epoch"] >= cfg.epochs and not ckpt.get("progress"):
        raise UsageError(f"{path} has already trained {ckpt['epoch']} epochs; "
                         f"pass --epochs above {ckpt['epoch']} (the total)")


def summary(result: TrainResult, cfg: TrainConfig) -> tuple[dict, str]:
    """What a run reports when training ends: the --json payload and the closing message (nats per
    image), or for an interrupted run where it is saved and how to resume it."""
    from freyvae_cli.likelihood import bits_per_dim

    if result.final_path is None:
        saved = result.saved[-1]
        return ({"interrupted": True, "checkpoint": str(saved), "epochs": len(result.history)},
                f"interrupted; the run is saved in {saved}. Resume it with: "
                f"freyvae train --resume {saved} --epochs {cfg.epochs}")
    out, last = Path(cfg.out), result.history[-1]
    payload = {
        "train_loss": last["train_loss"], "test_loss": last["test_loss"],
        "test_reconstruction": last["test_reconstruction"], "test_kl": last["test_kl"],
        "units": "nats per image", "epochs": last["epoch"], "seconds": round(result.seconds, 3),
        "checkpoint": str(result.final_path), "history": str(out / "history.json"),
        "loss_curve": str(out / "loss_curve.png"), "out": str(out), "stopped_early": result.stopped_early,
    }
    message = (f"done: test loss {last['test_loss']:.2f} nats per image after {last['epoch']} epochs "
               f"({result.seconds:.1f}s); model in {result.final_path}")
    best = best_epoch(result.history)
    if best is not None:  # the literature reports test figures at the best validation epoch
        payload |= {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
                    "best_test_loss": best["test_loss"], "best_checkpoint": str(result.best_path)}
        if cfg.likelihood != "bernoulli":
            payload |= {"best_val_bpd": bits_per_dim(best["val_loss"]),
                        "best_test_bpd": bits_per_dim(best["test_loss"])}
        stopped = f"stopped early at epoch {last['epoch']}; " if result.stopped_early else ""
        message += (f"\n{stopped}best validation loss {best['val_loss']:.2f} at epoch {best['epoch']}, "
                    f"test loss there {best['test_loss']:.2f} nats per image; model in {result.best_path}")
    return payload, message
