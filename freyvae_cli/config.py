"""Training settings: one plain dataclass, stored whole in every checkpoint, and how `freyvae train`
turns its options (and a resumed run's own settings) into one."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from freyvae_cli.errors import UsageError

LIKELIHOODS = ("bernoulli", "logistic", "categorical", "mixture")
PIXELVAE_LIKELIHOODS = ("categorical", "mixture")  # a PixelCNN draws each pixel from a law over the 256 levels
PRECISIONS = ("auto", "fp32", "bf16")
MODELS = ("seed", "pixelvae")
LR_SCHEDULES = ("constant", "cosine")
SPLITS = ("random", "literature")
# The ranges of train's options (cli/train.py declares them from here). A checkpoint's config is
# checked against them, and against the choices, before any model is built from it.
RANGES = {"latent_dim": (1, 512), "blocks": (1, 16), "channels": (4, 256), "dropout": (0.0, 0.9),
          "ema": (0.0, 0.99999), "epochs": (1, None), "batch_size": (1, None), "beta": (0.0, None),
          "kl_warmup": (0, None), "patience": (0, None), "checkpoint_every": (0, None)}
CHOICES = {"likelihood": LIKELIHOODS, "model": MODELS, "precision": PRECISIONS, "lr_schedule": LR_SCHEDULES,
           "split": SPLITS}
# What `--model pixelvae` changes unless the option is given: its latent size, likelihood (the
# literature's 256-way categorical), batch, KL warm-up and learning-rate schedule, as measured
# (docs/models.md, "Numbers").
MODEL_DEFAULTS = {"pixelvae": {"latent_dim": 64, "likelihood": "categorical", "batch_size": 64, "kl_warmup": 10,
                               "epochs": 200, "lr": 2e-3, "lr_schedule": "cosine"}}
LITERATURE_SEED = 123  # the first of the published split seeds 123, 321, 231

# Settings that must match when a run is resumed: they change the model, the data or the maths.
RESUME_MUST_MATCH = (
    "latent_dim", "likelihood", "batch_size", "lr", "lr_schedule", "beta", "dropout", "ema", "blocks", "channels",
    "kl_warmup", "test_fraction", "split_seed", "seed", "precision", "model", "split",
)


@dataclass
class TrainConfig:
    data: str = "data/frey_rawface.mat"
    out: str = "runs"
    model: str = "seed"  # seed: the seed README's VAE; pixelvae: its encoder, a PixelCNN decoder head
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant, or cosine: from lr down to 0 over the epochs
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    beta: float = 1.0
    dropout: float = 0.0  # pixelvae: dropout in the PixelCNN's residual blocks, in training
    blocks: int = 4  # pixelvae: residual blocks of the PixelCNN (each sees one row further up)
    channels: int = 32  # pixelvae: channels of the PixelCNN and of z's feature map
    ema: float = 0.0  # decay of an exponential moving average of the weights, which is scored and saved (0: none)
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to beta
    test_fraction: float = 0.2
    split: str = "random"  # random: test_fraction held out; literature: 1565/200/200, Berg et al.'s code
    split_seed: int = 0
    patience: int = 0  # with a validation split: stop after this many epochs without improvement (0: never)
    seed: int = 0
    checkpoint_every: int = 10
    device: str = "auto"
    tensorboard: str = ""  # a folder for TensorBoard event files; "" writes none
    precision: str = "auto"  # auto: bf16 autocast where the CPU/GPU does it natively, else fp32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def config_problem(d: dict) -> str | None:
    """What is wrong with a stored config (a checkpoint's), or None: a setting of the wrong type
    (True is no latent size), outside its range, or not one of its choices. Missing settings
    take their defaults, as in checkpoints written before they existed."""
    for f in fields(TrainConfig):
        if f.name not in d:
            continue
        value, kind = d[f.name], type(f.default)
        if not (type(value) is kind or (kind is float and type(value) is int)) or (
                kind is float and not math.isfinite(value)):
            return f"{f.name} {value!r:.40} (expected {'a number' if kind is float else kind.__name__})"
        low, high = RANGES.get(f.name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{f.name} {value!r} (allowed: {low}..{'' if high is None else high})"
        if f.name in CHOICES and value not in CHOICES[f.name]:
            return f"{f.name} {value!r:.40} (known: {', '.join(CHOICES[f.name])})"
    return None


def default_data_path() -> Path:
    """`FREYVAE_DATA` if set, else data/frey_rawface.mat (TrainConfig.data's default)."""
    return Path(os.environ.get("FREYVAE_DATA") or TrainConfig.data)


def resolve(options: dict, explicit: set[str], load: Callable[[Path], dict]) -> tuple[TrainConfig, dict | None]:
    """The settings of a run, and the checkpoint it resumes (None for a new run).

    options: every `train` option's value (plain str, int, float, bool or None; "resume" a path or
    None); explicit: the names given on the command line; load: opens the checkpoint to resume.
    A new run takes the defaults of its model, then of its split, then the options. A resumed run
    keeps its own settings but for those given explicitly, and trains at least to its own epochs.
    """
    check_options(options, explicit)
    resume = Path(options["resume"]) if options.get("resume") is not None else None
    resumed = load(resume) if resume is not None else None
    cfg = TrainConfig.from_dict(resumed["config"]) if resumed else TrainConfig()
    given = dict(options)
    if resumed is None:  # a model's own defaults, then the split's, unless given on the command line
        for name, value in MODEL_DEFAULTS.get(given["model"], {}).items():
            if name not in explicit:
                given[name] = value
        if given.get("split") == "literature" and "split_seed" not in explicit:
            given["split_seed"] = LITERATURE_SEED
    for f in fields(TrainConfig):
        value = given.get(f.name)
        if value is not None and (resumed is None or f.name in explicit):
            setattr(cfg, f.name, str(value) if isinstance(value, Path) else value)
    if cfg.patience and cfg.split != "literature":
        raise UsageError("--patience needs a validation split; add --split literature")
    _place(cfg, options, explicit, resume, resumed)
    return cfg, resumed


def check_options(options: dict, explicit: set[str]) -> None:
    """Option values that cannot work, whatever else is given."""
    if not options["lr"] > 0:
        raise UsageError(f"--lr must be above 0 (got {options['lr']})")
    if not 0 < options["test_fraction"] < 1:
        raise UsageError(f"--test-fraction must be between 0 and 1 (got {options['test_fraction']})")
    likelihood = options["likelihood"]
    if options["model"] == "pixelvae" and "likelihood" in explicit and likelihood not in PIXELVAE_LIKELIHOODS:
        raise UsageError("--model pixelvae models each pixel as a law over its 256 levels: use --likelihood "
                         f"categorical or mixture, not {options['likelihood']}, or use --model seed")


def _place(cfg: TrainConfig, options: dict, explicit: set[str], resume: Path | None, resumed: dict | None) -> None:
    """Where a run reads and writes: its data, its folder, its TensorBoard folder, and its epochs."""
    if resumed is None:
        cfg.data, cfg.out = str(options.get("data") or default_data_path()), str(options.get("out") or "runs")
    else:
        cfg.out = str(options.get("out") or resume.parent)
        if "epochs" not in explicit:
            cfg.epochs = max(cfg.epochs, resumed["epoch"])
    if options.get("tensorboard") or options.get("tensorboard_dir") is not None:
        cfg.tensorboard = str(options.get("tensorboard_dir") or Path(cfg.out) / "tensorboard")
    elif resumed is None:
        cfg.tensorboard = ""
