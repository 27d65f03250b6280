"""The training loop: resident data, seeded generators, checkpoints, interruption and resume.

Everything that decides the result (weights, Adam state, the shuffling and noise generators, the
position inside an epoch) is in the checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from freyvae_cli import __version__, checkpoint
from freyvae_cli.config import RESUME_MUST_MATCH, TrainConfig
from freyvae_cli.data import literature_split, split_indices
from freyvae_cli.errors import FreyError, UsageError
from freyvae_cli.fast import native_bf16
from freyvae_cli.files import write_text
from freyvae_cli.heap import keep_freed_memory
from freyvae_cli.likelihood import neg_elbo
from freyvae_cli.model import VAE  # the base class of every model

FINAL_NAME = "vae_final_model.pth"
BEST_NAME = "vae_best_model.pth"  # the best validation loss so far, where a validation split exists
INTERRUPTED_NAME = "interrupted.pth"
EVAL_SEED_OFFSET = 2  # test-loss noise has its own generator so evaluating never shifts training


class Reporter(Protocol):
    def start(self, cfg: TrainConfig, first_epoch: int, n_steps: int) -> None: ...
    def step(self, epoch: int, step: int, n_steps: int, loss: float) -> None: ...
    def epoch(self, record: dict) -> None: ...


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


def make_split(cfg: TrainConfig, n: int) -> dict[str, np.ndarray]:
    """train/test (random) or train/val/test (literature) image indices."""
    if cfg.split == "literature":
        return literature_split(n, cfg.split_seed)
    train_idx, test_idx = split_indices(n, cfg.test_fraction, cfg.split_seed)
    return {"train": train_idx, "test": test_idx}


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FreyError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FreyError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware does bf16 natively (AVX512-BF16/AMX CPUs, recent GPUs)."""
    if precision != "auto":
        return precision == "bf16"
    return native_bf16(device)


def make_adam(model: VAE, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it (one kernel for all parameters)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def kl_weight(cfg: TrainConfig, epoch: int, step: int, n_steps: int) -> float:
    """beta, reached linearly over the first kl_warmup epochs (epochs count from 1)."""
    if cfg.kl_warmup <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (epoch - 1 + step / n_steps) / cfg.kl_warmup)


def learning_rate(cfg: TrainConfig, epoch: int, step: int, n_steps: int) -> float:
    """lr, or with the cosine schedule (Loshchilov & Hutter, 2017) lr * (1 + cos(pi t / epochs)) / 2
    at t epochs done: a function of the position alone, so a resumed run gets the same rates."""
    if cfg.lr_schedule != "cosine":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1 + step / n_steps) / cfg.epochs))


@torch.no_grad()
def evaluate_loss(model: VAE, x: torch.Tensor, seed: int, batch: int = 512) -> tuple[float, float]:
    """Mean reconstruction and KL terms (nats per image) with one seeded z draw per image."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(x.device).manual_seed(seed)
    rec = kl = 0.0
    for i in range(0, len(x), batch):
        r, k = neg_elbo(model, x[i:i + batch], gen)
        rec += r.sum().item()
        kl += k.sum().item()
    model.train(was_training)
    return rec / len(x), kl / len(x)


@torch.no_grad()
def test_active_units(model: VAE, x: torch.Tensor) -> int:
    """Active units of the posterior means of the test images (evaluate.active_units)."""
    from freyvae_cli.evaluate import active_units

    was_training = model.training
    model.eval()
    mu = torch.cat([model.encode(x[i:i + 512].float() / 255.0)[0] for i in range(0, len(x), 512)])
    model.train(was_training)
    return active_units(mu.cpu())


def history_csv(history: list[dict]) -> str:
    """history.json as CSV: one row per epoch, the same columns (for pandas, spreadsheets, gnuplot)."""
    columns = list(dict.fromkeys(k for r in history for k in r))
    lines = [",".join(columns)]
    lines += [",".join("" if r.get(c) is None else repr(r[c]) for c in columns) for r in history]
    return "\n".join(lines) + "\n"


def check_resume(saved: dict, cfg: TrainConfig, explicit: set[str], path: Path) -> None:
    """Refuse to resume when a setting given on the command line differs from the checkpoint's."""
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


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes the current step, saves and stops."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        old = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, self)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def train(
    cfg: TrainConfig,
    faces: np.ndarray,
    data_hash: str,
    reporter: Reporter,
    resume: dict | None = None,
) -> TrainResult:
    """Train (or continue) a VAE on uint8 faces (N, 28, 20); write checkpoints into cfg.out."""
    out = Path(cfg.out)
    keep_freed_memory()
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed)  # the initial weights

    if resume is not None:
        split = {name: idx.numpy() for name, idx in resume["split"].items()}
    else:
        split = make_split(cfg, len(faces))
    if max(idx.max() for idx in split.values()) >= len(faces):
        raise FreyError("the checkpoint's split does not fit this data file; pass the same --data")
    # The whole data set (1.1 MB) lives on the device as uint8; batches are indexed, never copied.
    images = torch.from_numpy(faces).unsqueeze(1).to(device)
    x_train, x_test = (images[torch.from_numpy(split[name]).to(device)] for name in ("train", "test"))
    x_val = images[torch.from_numpy(split["val"]).to(device)] if "val" in split else None

    # channels-last lets oneDNN/cuDNN pick their fastest convolution kernels (measured: benchmarks/)
    model = checkpoint.new_model(cfg).to(device, memory_format=torch.channels_last)
    optimizer = make_adam(model, cfg.lr)
    shuffle_gen = torch.Generator(device).manual_seed(cfg.seed)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    history: list[dict] = []
    epoch_done, progress = 0, None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        saved_type = resume["rng"].get("device_type", "cpu")
        if saved_type != device.type:  # generator states do not carry across device types
            raise UsageError(f"this run was trained on {saved_type}; resume it there with --device {saved_type}")
        shuffle_gen.set_state(resume["rng"]["shuffle"])
        noise_gen.set_state(resume["rng"]["noise"])
        history = list(resume["history"])
        epoch_done, progress = resume["epoch"], resume.get("progress")

    n_train = len(x_train)
    n_steps = math.ceil(n_train / cfg.batch_size)
    saved: list[Path] = []
    stop = _StopFlag()
    started = time.perf_counter()
    prior_seconds = sum(r["seconds"] for r in history)

    def state(epoch: int, progress: dict | None) -> dict:
        return {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "config": cfg.to_dict(),
            "split": {name: torch.from_numpy(idx) for name, idx in split.items()},
            "data_hash": data_hash,
            "history": history,
            "rng": {"shuffle": shuffle_gen.get_state(), "noise": noise_gen.get_state(),
                    "device_type": device.type},
            "progress": progress,
            "versions": {"freyvae": __version__, "torch": str(torch.__version__),
                         "numpy": str(np.__version__), "python": platform.python_version()},
        }

    def result(final: Path | None, stopped_early: bool = False) -> TrainResult:
        """Seconds count earlier sessions of a resumed run too; a finished run was not interrupted."""
        seconds = prior_seconds + time.perf_counter() - started
        best = out / BEST_NAME if x_val is not None and (out / BEST_NAME).exists() else None
        return TrainResult(history, final, seconds, 0 if final else stop.signum, saved, best, stopped_early)

    tb = None
    if cfg.tensorboard:
        from freyvae_cli.tensorboard_log import TensorBoardLog

        tb = TensorBoardLog(cfg.tensorboard, cfg)
    model.train()
    with stop.installed(), contextlib.ExitStack() as cleanup:
        if tb is not None:  # the TensorBoard log is closed however training ends
            cleanup.callback(tb.close, history)
        reporter.start(cfg, epoch_done + 1, n_steps)  # after the handlers: a signal from now on is caught
        for epoch in range(epoch_done + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            if progress is not None:  # resuming inside an epoch
                perm, first_step = progress["perm"].to(device), progress["step"]
                sums, seconds_before = list(progress["sums"]), progress["seconds"]
                progress = None
            else:
                perm = torch.randperm(n_train, generator=shuffle_gen, device=device)
                first_step, sums, seconds_before = 0, [0.0, 0.0], 0.0
            for step in range(first_step, n_steps):
                x = x_train[perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    rec, kl = neg_elbo(model, x, noise_gen)
                loss = (rec + kl_weight(cfg, epoch, step, n_steps) * kl).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.lr_schedule != "constant":
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(cfg, epoch, step, n_steps)
                value = loss.item()
                if not math.isfinite(value):
                    last = [p.name for p in saved] or ["none yet"]
                    raise FreyError(
                        f"training stopped: the loss became {value} at epoch {epoch}, batch {step + 1}; "
                        f"last good checkpoint kept ({last[-1]}); try a lower --lr"
                    )
                optimizer.step()
                sums[0] += rec.detach().sum().item()
                sums[1] += kl.detach().sum().item()
                seen = min((step + 1) * cfg.batch_size, n_train)
                reporter.step(epoch, step + 1, n_steps, (sums[0] + sums[1]) / seen)
                if stop.signum and step + 1 < n_steps:
                    prog = {"perm": perm.cpu(), "step": step + 1, "sums": sums,
                            "seconds": seconds_before + time.perf_counter() - t0}
                    saved.append(checkpoint.save(out / INTERRUPTED_NAME, state(epoch - 1, prog)))
                    return result(None)

            record = {
                "epoch": epoch,
                "train_loss": (sums[0] + sums[1]) / n_train,
                "train_reconstruction": sums[0] / n_train,
                "train_kl": sums[1] / n_train,
            }
            for name, xs in (("val", x_val), ("test", x_test)):
                if xs is not None:  # both with the same seeded noise, so epochs compare like for like
                    rec, kl = evaluate_loss(model, xs, cfg.seed + EVAL_SEED_OFFSET)
                    record |= {f"{name}_loss": rec + kl, f"{name}_reconstruction": rec, f"{name}_kl": kl}
            record["test_active_units"] = test_active_units(model, x_test)
            record["seconds"] = seconds_before + time.perf_counter() - t0
            history.append(record)
            write_text(out / "history.json", json.dumps(history, indent=1) + "\n")
            write_text(out / "history.csv", history_csv(history))
            reporter.epoch(record)
            if tb is not None:
                tb.epoch(record, model, x_test)
            best = best_epoch(history)
            if best is record:
                saved.append(checkpoint.save(out / BEST_NAME, state(epoch, None)))
            if cfg.checkpoint_every > 0 and epoch % cfg.checkpoint_every == 0:
                saved.append(checkpoint.save(out / f"checkpoint_epoch{epoch:03d}.pth", state(epoch, None)))
            if best is not None and cfg.patience > 0 and epoch - best["epoch"] >= cfg.patience:
                break  # early stopping: the best-validation model is already saved
            if stop.signum and epoch < cfg.epochs:
                saved.append(checkpoint.save(out / INTERRUPTED_NAME, state(epoch, None)))
                return result(None)

    final = checkpoint.save(out / FINAL_NAME, state(history[-1]["epoch"], None))
    saved.append(final)
    from freyvae_cli import figures

    saved.append(figures.save_loss_curve(history, out / "loss_curve.png"))
    return result(final, stopped_early=history[-1]["epoch"] < cfg.epochs)
