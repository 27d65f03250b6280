"""The training loop: resident data, seeded generators, checkpoints, interruption and resume.

Everything that decides the result (weights, Adam state, the shuffling and noise generators, the
position inside an epoch) is in the checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
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

from freyvae_cli import __version__, checkpoint, latent, prior
from freyvae_cli.atomic_files import write_text
from freyvae_cli.config import TrainConfig
from freyvae_cli.data.frey import literature_split, split_indices
from freyvae_cli.errors import FreyError, UsageError
from freyvae_cli.likelihood import neg_elbo
from freyvae_cli.runs import BEST_NAME, FINAL_NAME, INTERRUPTED_NAME, TrainResult, best_epoch, csv_text
from freyvae_cli.speedups import keep_freed_memory, native_bf16
from freyvae_cli.vae import VAE  # the base class of every model

EVAL_SEED_OFFSET = 2  # test-loss noise has its own generator so evaluating never shifts training


class Reporter(Protocol):
    def start(self, cfg: TrainConfig, first_epoch: int, n_steps: int) -> None: ...
    def step(self, epoch: int, step: int, n_steps: int, loss: float) -> None: ...
    def epoch(self, record: dict) -> bool | None: ...  # True: stop after this epoch (a sweep's pruner)


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


@dataclass
class Run:
    """One training run in memory: its settings, data, model, optimiser, generators and history.
    state() is what a checkpoint holds: everything that decides the result."""

    cfg: TrainConfig
    data_hash: str
    device: torch.device
    split: dict[str, np.ndarray]
    x_train: torch.Tensor
    x_val: torch.Tensor | None
    x_test: torch.Tensor
    model: VAE
    optimizer: torch.optim.Optimizer
    shuffle_gen: torch.Generator
    noise_gen: torch.Generator
    bf16: bool  # autocast the forward pass to bf16 (use_bf16)
    average: VAE | None = None  # cfg.ema > 0: the moving average of the weights, scored and saved as the model
    history: list[dict] = field(default_factory=list)
    epoch_done: int = 0
    progress: dict | None = None  # where a run interrupted inside an epoch goes on
    saved: list[Path] = field(default_factory=list)
    stop: _StopFlag = field(default_factory=_StopFlag)
    started: float = field(default_factory=time.perf_counter)
    prior_seconds: float = 0.0  # spent by earlier sessions of a resumed run
    source: dict | None = None  # what the data is (datasets.load_data): kind, path, images, file names

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def n_steps(self) -> int:
        return math.ceil(len(self.x_train) / self.cfg.batch_size)

    @property
    def scored(self) -> VAE:
        """The model that is scored and saved: the weights' moving average, or the weights."""
        return self.average if self.average is not None else self.model

    def state(self, epoch: int, progress: dict | None = None) -> dict:
        weights = {} if self.average is None else {"training_model": weights_of(self.model)}
        return {
            "model": weights_of(self.scored), **weights,
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "split": {name: torch.from_numpy(idx) for name, idx in self.split.items()},
            "data_hash": self.data_hash,
            "data_source": self.source,
            "history": self.history,
            "rng": {"shuffle": self.shuffle_gen.get_state(), "noise": self.noise_gen.get_state(),
                    "device_type": self.device.type},
            "progress": progress,
            **self.fitted_prior(),
            "versions": {"freyvae": __version__, "torch": str(torch.__version__),
                         "numpy": str(np.__version__), "python": platform.python_version()},
        }

    def fitted_prior(self) -> dict:
        """For PixelVAE, {"prior": the Gaussian fitted to the saved model's training faces} (prior.py)."""
        if self.cfg.model not in prior.FITTED_FOR:
            return {}
        return {"prior": prior.as_state(latent.fitted_prior(self.scored, self.x_train))}

    def update_average(self, epoch: int, step: int) -> None:
        """average <- d * average + (1 - d) * weights, d = min(ema, (1 + t) / (10 + t)) at step t, so that
        the first steps' weights do not linger (as TensorFlow's ExponentialMovingAverage does)."""
        if self.average is None:
            return
        t = (epoch - 1) * self.n_steps + step
        decay = min(self.cfg.ema, (1 + t) / (10 + t))
        with torch.no_grad():
            for mine, theirs in zip(self.average.parameters(), self.model.parameters(), strict=True):
                mine.lerp_(theirs, 1 - decay)

    def save(self, name: str, epoch: int, progress: dict | None = None) -> Path:
        path = checkpoint.save(self.out / name, self.state(epoch, progress))
        self.saved.append(path)
        return path

    def result(self, final: Path | None, stopped_early: bool = False) -> TrainResult:
        """Seconds count earlier sessions of a resumed run too; a finished run was not interrupted."""
        seconds = self.prior_seconds + time.perf_counter() - self.started
        best = self.out / BEST_NAME if self.x_val is not None and (self.out / BEST_NAME).exists() else None
        return TrainResult(self.history, final, seconds, 0 if final else self.stop.signum, self.saved, best,
                           stopped_early)


def weights_of(model: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def train(
    cfg: TrainConfig,
    faces: np.ndarray,
    data_hash: str,
    reporter: Reporter,
    resume: dict | None = None,
    source: dict | None = None,
) -> TrainResult:
    """Train (or continue) a VAE on uint8 faces (N, 28, 20); write checkpoints into cfg.out.
    `source` (datasets.load_data) is kept in the checkpoints, to say what the data was."""
    run = start(cfg, faces, data_hash, resume)
    run.source = source
    tb = None
    if cfg.tensorboard:
        from freyvae_cli.tensorboard_log import TensorBoardLog

        tb = TensorBoardLog(cfg.tensorboard, cfg)
    run.model.train()
    with run.stop.installed(), contextlib.ExitStack() as cleanup:
        if tb is not None:  # the TensorBoard log is closed however training ends
            cleanup.callback(tb.close, run.history)
        reporter.start(cfg, run.epoch_done + 1, run.n_steps)  # after the handlers: a signal from now on is caught
        for epoch in range(run.epoch_done + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            sums, seconds_before = train_epoch(run, epoch, reporter, t0)
            if sums is None:  # interrupted inside the epoch, and saved
                return run.result(None)
            record = score_epoch(run, epoch, sums)
            record["seconds"] = seconds_before + time.perf_counter() - t0
            stop = log_epoch(run, record, reporter, tb)
            best = save_epoch(run, epoch)
            if stop or (best is not None and cfg.patience > 0 and epoch - best["epoch"] >= cfg.patience):
                break  # the reporter's word, or early stopping: the best-validation model is already saved
            if run.stop.signum and epoch < cfg.epochs:
                run.save(INTERRUPTED_NAME, epoch)
                return run.result(None)
    final = run.save(FINAL_NAME, run.history[-1]["epoch"])
    from freyvae_cli import figures

    run.saved.append(figures.save_loss_curve(run.history, run.out / "loss_curve.png"))
    return run.result(final, stopped_early=run.history[-1]["epoch"] < cfg.epochs)


def start(cfg: TrainConfig, faces: np.ndarray, data_hash: str, resume: dict | None) -> Run:
    """The run's data on its device, a new model and optimiser (seeded), or a checkpoint's state."""
    keep_freed_memory()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the initial weights
    split = {name: idx.numpy() for name, idx in resume["split"].items()} if resume else make_split(cfg, len(faces))
    if max(idx.max() for idx in split.values()) >= len(faces):
        raise FreyError("the checkpoint's split does not fit this data file; pass the same --data")
    # The whole data set (1.1 MB) lives on the device as uint8; batches are indexed, never copied.
    images = torch.from_numpy(faces).unsqueeze(1).to(device)
    x = {name: images[torch.from_numpy(idx).to(device)] for name, idx in split.items()}
    # channels-last lets oneDNN/cuDNN pick their fastest convolution kernels (measured: benchmarks/)
    model = checkpoint.new_model(cfg).to(device, memory_format=torch.channels_last)
    run = Run(cfg, data_hash, device, split, x["train"], x.get("val"), x["test"], model, make_adam(model, cfg.lr),
              torch.Generator(device).manual_seed(cfg.seed), torch.Generator(device).manual_seed(cfg.seed + 1),
              use_bf16(cfg.precision, device))
    if cfg.ema > 0:
        run.average = copy.deepcopy(model).eval().requires_grad_(False)
    if resume is not None:
        restore(run, resume)
    return run


def restore(run: Run, resume: dict) -> None:
    """Weights (and their average), Adam's state, both generators, the history and the position
    inside an epoch."""
    if not isinstance(resume.get("optimizer"), dict) or not isinstance(resume.get("rng"), dict):
        raise FreyError("this checkpoint holds weights only (a pretrained model), not the optimizer's and "
                        "generators' state a run resumes from")
    if run.average is not None and not isinstance(resume.get("training_model"), dict):
        raise FreyError("this checkpoint holds only averaged weights (--ema), not the weights to go on training from")
    try:
        run.model.load_state_dict(resume["training_model"] if run.average is not None else resume["model"])
        if run.average is not None:
            run.average.load_state_dict(resume["model"])
    except (RuntimeError, TypeError) as e:
        raise FreyError(f"this checkpoint's weights do not fit its config ({str(e).splitlines()[0][:80]})") from None
    run.optimizer.load_state_dict(resume["optimizer"])
    saved_type = resume["rng"].get("device_type", "cpu")
    if saved_type != run.device.type:  # generator states do not carry across device types
        raise UsageError(f"this run was trained on {saved_type}; resume it there with --device {saved_type}")
    run.shuffle_gen.set_state(resume["rng"]["shuffle"])
    run.noise_gen.set_state(resume["rng"]["noise"])
    run.history = list(resume["history"])
    run.epoch_done, run.progress = resume["epoch"], resume.get("progress")
    run.prior_seconds = sum(r["seconds"] for r in run.history)


def train_epoch(run: Run, epoch: int, reporter: Reporter, t0: float) -> tuple[list[float] | None, float]:
    """One pass over the shuffled training images: the summed reconstruction and KL terms, and the
    seconds an interrupted session already spent on this epoch; (None, ...) if a signal stopped it
    (then the position is saved in INTERRUPTED_NAME)."""
    cfg, n_train = run.cfg, len(run.x_train)
    if run.progress is not None:  # resuming inside an epoch
        perm, first_step = run.progress["perm"].to(run.device), run.progress["step"]
        sums, seconds_before = list(run.progress["sums"]), run.progress["seconds"]
        run.progress = None
    else:
        perm = torch.randperm(n_train, generator=run.shuffle_gen, device=run.device)
        first_step, sums, seconds_before = 0, [0.0, 0.0], 0.0
    for step in range(first_step, run.n_steps):
        rec, kl = train_step(run, run.x_train[perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]], epoch, step)
        sums[0] += rec.detach().sum().item()
        sums[1] += kl.detach().sum().item()
        seen = min((step + 1) * cfg.batch_size, n_train)
        reporter.step(epoch, step + 1, run.n_steps, (sums[0] + sums[1]) / seen)
        if run.stop.signum and step + 1 < run.n_steps:
            progress = {"perm": perm.cpu(), "step": step + 1, "sums": sums,
                        "seconds": seconds_before + time.perf_counter() - t0}
            run.save(INTERRUPTED_NAME, epoch - 1, progress)
            return None, seconds_before
    return sums, seconds_before


def train_step(run: Run, x: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step on the batch's negative ELBO (KL weighted); its two terms per image."""
    cfg, optimizer = run.cfg, run.optimizer
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        rec, kl = neg_elbo(run.model, x, run.noise_gen)
    loss = (rec + kl_weight(cfg, epoch, step, run.n_steps) * kl).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.lr_schedule != "constant":
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, epoch, step, run.n_steps)
    value = loss.item()
    if not math.isfinite(value):
        last = [p.name for p in run.saved] or ["none yet"]
        raise FreyError(
            f"training stopped: the loss became {value} at epoch {epoch}, batch {step + 1}; "
            f"last good checkpoint kept ({last[-1]}); try a lower --lr"
        )
    optimizer.step()
    run.update_average(epoch, step)
    return rec, kl


def score_epoch(run: Run, epoch: int, sums: list[float]) -> dict:
    """The epoch's record: train terms as summed, validation and test terms with seeded noise."""
    n_train = len(run.x_train)
    record = {
        "epoch": epoch,
        "train_loss": (sums[0] + sums[1]) / n_train,
        "train_reconstruction": sums[0] / n_train,
        "train_kl": sums[1] / n_train,
    }
    for name, xs in (("val", run.x_val), ("test", run.x_test)):
        if xs is not None:  # both with the same seeded noise, so epochs compare like for like
            rec, kl = evaluate_loss(run.scored, xs, run.cfg.seed + EVAL_SEED_OFFSET)
            record |= {f"{name}_loss": rec + kl, f"{name}_reconstruction": rec, f"{name}_kl": kl}
    record["test_active_units"] = test_active_units(run.scored, run.x_test)
    return record


def log_epoch(run: Run, record: dict, reporter: Reporter, tb) -> bool:
    """The record into the history, history.json and history.csv, the reporter and TensorBoard;
    True where the reporter asks to stop."""
    run.history.append(record)
    write_text(run.out / "history.json", json.dumps(run.history, indent=1) + "\n")
    write_text(run.out / "history.csv", csv_text(run.history))
    stop = bool(reporter.epoch(record))
    if tb is not None:
        tb.epoch(record, run.scored, run.x_test)
    return stop


def save_epoch(run: Run, epoch: int) -> dict | None:
    """The best-validation checkpoint when this epoch is best, and the periodic one; the best epoch."""
    best = best_epoch(run.history)
    if best is run.history[-1]:
        run.save(BEST_NAME, epoch)
    if run.cfg.checkpoint_every > 0 and epoch % run.cfg.checkpoint_every == 0:
        run.save(f"checkpoint_epoch{epoch:03d}.pth", epoch)
    return best
