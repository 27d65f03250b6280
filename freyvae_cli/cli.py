"""The `freyvae` command: declares the subcommands and calls the package.

Heavy libraries (torch, scipy, matplotlib) are imported inside the commands that need them, so
`freyvae --help` starts at once.
"""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import __version__, ui
from freyvae_cli.errors import FreyError, UsageError

app = typer.Typer(
    name="freyvae",
    help="Train a convolutional VAE on the Frey Face data and explore what it learned.\n\n"
    "All losses are in nats per image: summed over the 560 pixels, averaged over images.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_CHECKPOINT = "runs/vae_final_model.pth"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Likelihood(str, Enum):
    bernoulli = "bernoulli"
    logistic = "logistic"
    categorical = "categorical"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Split(str, Enum):
    test = "test"
    train = "train"
    val = "val"


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class SplitKind(str, Enum):
    random = "random"
    literature = "literature"


class ModelName(str, Enum):
    seed = "seed"
    pixelvae = "pixelvae"


# Options shared by several commands.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="Trained model to use.")]
DataOpt = Annotated[
    Optional[Path],
    typer.Option("--data", help="Frey Face .mat file. [default: $FREYVAE_DATA, else the file the "
                 "model was trained on, else data/frey_rawface.mat]", show_default=False),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto picks CUDA, then MPS, then CPU.")]
ScaleOpt = Annotated[int, typer.Option("--scale", min=1, max=32, help="Upscale each face by this factor.")]


def command(fn):
    """Register a subcommand whose FreyErrors become one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ui.set_quiet(bool(kwargs.get("quiet")))
        try:
            return fn(*args, **kwargs)
        except FreyError as e:
            ui.error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(130) from None

    app.command(fn.__name__)(wrapper)
    return fn


def _version(value: bool) -> None:
    if value:
        typer.echo(f"freyvae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Train a convolutional VAE on the Frey Face data and explore what it learned."""


def _resolve_data(data: Path | None, ckpt: dict | None = None) -> Path:
    """--data, else $FREYVAE_DATA, else the file the model was trained on, else data/frey_rawface.mat."""
    from freyvae_cli.data import default_data_path

    if data is not None:
        return data
    trained_on = Path(ckpt["config"].get("data", "")) if ckpt is not None else None
    if not os.environ.get("FREYVAE_DATA") and trained_on is not None and trained_on.is_file():
        return trained_on
    return default_data_path()


def _load(checkpoint: Path, device: Device, data: Path | None = None, need_data: bool = True):
    """The model, its checkpoint and (if needed) the faces it was trained on."""
    from freyvae_cli import checkpoint as ck
    from freyvae_cli.data import load_faces, pixel_hash
    from freyvae_cli.train import resolve_device

    dev = resolve_device(device.value)
    model, ckpt = ck.load_model(checkpoint, dev)
    if not need_data:
        return model, ckpt, None
    path = _resolve_data(data, ckpt)
    faces = load_faces(path)
    split = ckpt["split"]
    if max(int(idx.max()) for idx in split.values()) >= len(faces):
        raise FreyError(f"{path} has {len(faces)} images, fewer than the data {checkpoint} was trained on; "
                        "pass the same --data")
    if ckpt.get("data_hash") and pixel_hash(faces) != ckpt["data_hash"]:
        ui.info(f"[yellow]warning:[/] {path} differs from the data {checkpoint} was trained on")
    return model, ckpt, faces


def _check_dims(dims, latent: int, option: str) -> None:
    for d in dims or ():
        if not 0 <= d < latent:
            raise UsageError(f"{option} {d} is outside the latent space; this model has dimensions 0..{latent - 1}")


def _check_out(path: Path, kind: str = "grid") -> Path:
    """Fail before any work if `path` cannot be written as a face grid, a plot or a GIF."""
    from freyvae_cli.figures import GRID_FORMATS, PLOT_FORMATS
    from freyvae_cli.files import check_writable

    return check_writable(path, {"grid": GRID_FORMATS, "plot": PLOT_FORMATS, "gif": ("gif",)}[kind])


def _done(json_out: bool, payload: dict, message: str) -> None:
    ui.info(message)
    if json_out:
        ui.emit_json(payload)


# ----------------------------------------------------------------------------------------------
@command
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option("--data", show_default=False,
                    help="Frey Face .mat file. [default: $FREYVAE_DATA, else data/frey_rawface.mat]")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False,
                   help="Folder for checkpoints, history.json and loss_curve.png. [default: runs]")] = None,
    model: Annotated[ModelName, typer.Option(
        help="seed: the seed README's VAE. pixelvae: its encoder with a PixelCNN decoder head (defaults "
             "--latent-dim 64 --likelihood categorical --batch-size 64 --kl-warmup 10 --epochs 200 --lr 2e-3 "
             "--lr-schedule cosine).")] = ModelName.seed,
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs (with --resume too).")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    lr_schedule: Annotated[LrSchedule, typer.Option(
        help="constant, or cosine: from --lr down to 0 over --epochs.")] = LrSchedule.constant,
    latent_dim: Annotated[int, typer.Option(min=1, max=512)] = 20,
    likelihood: Annotated[Likelihood, typer.Option(help="Pixel model p(x|z).")] = Likelihood.bernoulli,
    beta: Annotated[float, typer.Option(min=0.0, help="Weight of the KL term in training.")] = 1.0,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="pixelvae: dropout rate in the PixelCNN's "
                                           "residual blocks, in training.")] = 0.0,
    kl_warmup: Annotated[int, typer.Option(min=0, help="Epochs over which the KL weight rises from 0 to beta.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of the images held out for testing.")] = 0.2,
    split: Annotated[SplitKind, typer.Option(
        help="random: --test-fraction held out. literature: 1565 train / 200 validation / 200 test, "
             "shuffled as in the published Frey Face results (seeds 123, 321, 231).")] = SplitKind.random,
    split_seed: Annotated[int, typer.Option(help="Seed of the split. [default: 0; 123 with --split literature]",
                                            show_default=False)] = 0,
    patience: Annotated[int, typer.Option(min=0, help="Stop after N epochs without a better validation loss "
                                          "(needs --split literature; 0: never).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the weights, shuffling and noise.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a checkpoint every N epochs (0: never).")] = 10,
    device: DeviceOpt = Device.auto,
    precision: Annotated[Precision, typer.Option(
        help="auto: bf16 autocast where the hardware has it natively (on CPUs for the encoder; "
             "the decoder stays fp32).")] = Precision.auto,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to TensorBoard (needs "
                                              "pip install \"freyvae[tensorboard]\").")] = False,
    tensorboard_dir: Annotated[Optional[Path], typer.Option(help="Where --tensorboard writes. [default: "
                                                            "OUT/tensorboard]", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Train into an --out that already holds a model.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the VAE; writes checkpoints, history.json and loss_curve.png into --out."""
    from dataclasses import fields

    from freyvae_cli.config import LITERATURE_SEED, MODEL_DEFAULTS, TrainConfig

    if not lr > 0:
        raise UsageError(f"--lr must be above 0 (got {lr})")
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction must be between 0 and 1 (got {test_fraction})")
    explicit = {p for p in ctx.params if ctx.get_parameter_source(p).name not in ("DEFAULT", "DEFAULT_MAP")}
    if model is ModelName.pixelvae and "likelihood" in explicit and likelihood is not Likelihood.categorical:
        raise UsageError("--model pixelvae models each pixel as a 256-way categorical: drop --likelihood "
                         f"{likelihood.value} or use --model seed")
    resume_ckpt = None
    if resume is not None:  # a resumed run keeps its own settings but for those given here
        from freyvae_cli import checkpoint as ck

        resume_ckpt = ck.load(resume)
    cfg = TrainConfig.from_dict(resume_ckpt["config"]) if resume_ckpt else TrainConfig()
    if resume_ckpt is None:  # a model's own defaults, then the split's, unless given on the command line
        for name, value in MODEL_DEFAULTS.get(model.value, {}).items():
            if name not in explicit:
                ctx.params[name] = value
        if split is SplitKind.literature and "split_seed" not in explicit:
            ctx.params["split_seed"] = LITERATURE_SEED
    for f in fields(TrainConfig):
        value = ctx.params.get(f.name)
        if value is not None and (resume is None or f.name in explicit):
            setattr(cfg, f.name, value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path)
                    else value)
    if cfg.patience and cfg.split != "literature":
        raise UsageError("--patience needs a validation split; add --split literature")
    if resume_ckpt is None:
        cfg.data, cfg.out = str(data or _resolve_data(None)), str(out or "runs")
    else:
        cfg.out = str(out or resume.parent)
        if "epochs" not in explicit:
            cfg.epochs = max(cfg.epochs, resume_ckpt["epoch"])
    if tensorboard or tensorboard_dir is not None:
        from freyvae_cli.tensorboard_log import check_installed

        check_installed()
        cfg.tensorboard = str(tensorboard_dir or Path(cfg.out) / "tensorboard")
    elif resume_ckpt is None:
        cfg.tensorboard = ""
    _train(cfg, explicit, resume, resume_ckpt, force, json_out, quiet)


def _train(cfg, explicit: set[str], resume: Path | None, resume_ckpt: dict | None,
           force: bool, json_out: bool, quiet: bool) -> None:
    from freyvae_cli import data as fdata
    from freyvae_cli.files import check_writable
    from freyvae_cli.train import FINAL_NAME, check_resume

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FreyError(f"--out {out} is a file; give a folder")
    check_writable(out / FINAL_NAME)
    existing = sorted(p.name for p in out.glob("*.pth")) if out.is_dir() else []
    if existing and resume is None and not force:
        raise FreyError(
            f"{out} already holds a trained run ({', '.join(existing[:3])}); pass --resume {out / existing[-1]} "
            f"to continue it, --force to train over it, or --out for a new folder"
        )
    path = Path(cfg.data)
    if not path.exists() and resume is None:
        if sys.stdin.isatty() and sys.stderr.isatty() and not quiet and not json_out:
            if typer.confirm(f"{path} not found. Download it from {fdata.data_url()}?", err=True):
                fdata.download(path)
                ui.info(f"saved {path}")
    faces = fdata.load_faces(path)
    data_hash = fdata.pixel_hash(faces)
    if resume_ckpt is not None:
        if resume_ckpt.get("data_hash") != data_hash:
            raise UsageError(f"cannot resume {resume}: {path} is not the data it was trained on "
                             "(pixel hash differs); pass the same --data")
        check_resume(resume_ckpt["config"], cfg, explicit, resume)
        if resume_ckpt["epoch"] >= cfg.epochs and not resume_ckpt.get("progress"):
            raise UsageError(f"{resume} has already trained {resume_ckpt['epoch']} epochs; "
                             f"pass --epochs above {resume_ckpt['epoch']} (the total)")
    from freyvae_cli.train import train as run_training

    reporter = ui.TrainProgress()
    try:
        result = run_training(cfg, faces, data_hash, reporter, resume_ckpt)
    finally:
        reporter.close()
    if result.final_path is None:
        saved = result.saved[-1]
        ui.error(f"interrupted; the run is saved in {saved}. Resume it with: "
                 f"freyvae train --resume {saved} --epochs {cfg.epochs}")
        if json_out:
            ui.emit_json({"interrupted": True, "checkpoint": str(saved), "epochs": len(result.history)})
        raise typer.Exit(128 + result.interrupted)
    from freyvae_cli.train import best_epoch

    last = result.history[-1]
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
            from freyvae_cli.likelihood import bits_per_dim

            payload |= {"best_val_bpd": bits_per_dim(best["val_loss"]),
                        "best_test_bpd": bits_per_dim(best["test_loss"])}
        stopped = f"stopped early at epoch {last['epoch']}; " if result.stopped_early else ""
        message += (f"\n{stopped}best validation loss {best['val_loss']:.2f} at epoch {best['epoch']}, "
                    f"test loss there {best['test_loss']:.2f} nats per image; model in {result.best_path}")
    _done(json_out, payload, message)


@command
def download(
    to: Annotated[Optional[Path], typer.Option("--to", help="Where to save it. [default: $FREYVAE_DATA, "
                                               "else data/frey_rawface.mat]", show_default=False)] = None,
    url: Annotated[Optional[str], typer.Option(help="Download from another address (a mirror). "
                                               "[default: $FREYVAE_DATA_URL, else Sam Roweis' page]",
                                               show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a file that is already there.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download frey_rawface.mat from Sam Roweis' data page, check it, save it atomically."""
    from freyvae_cli import data as fdata
    from freyvae_cli.files import check_writable

    dest = check_writable(to or fdata.default_data_path())
    url = url or fdata.data_url()
    if dest.exists() and not force:
        faces = fdata.load_faces(dest)
        _done(json_out, {"path": str(dest), "images": len(faces), "downloaded": False,
                         "pixel_hash": fdata.pixel_hash(faces)},
              f"{dest} is already there and valid ({len(faces)} faces); --force downloads it again")
        return
    with ui.task_progress(f"downloading {url}", total=1) as advance:
        faces = fdata.download(dest, url)
        advance()
    _done(json_out, {"path": str(dest), "images": len(faces), "downloaded": True,
                     "pixel_hash": fdata.pixel_hash(faces)},
          f"saved {dest}: {len(faces)} faces of 28x20")


@command
def reconstruct(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("reconstructions.png"),
    n: Annotated[int, typer.Option("-n", min=1, max=500, help="Number of images.")] = 10,
    split: Annotated[Split, typer.Option(help="Which images to use.")] = Split.test,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Originals above, their reconstructions (through the posterior mean) below."""
    from freyvae_cli import explore, figures

    _check_out(out)
    model, ckpt, faces = _load(checkpoint, device, data)
    x, frames = explore.split_images(ckpt, faces, split.value)
    n_used = min(n, len(x))
    originals, recons = explore.reconstruct(model, x[:n_used])
    per_row = 10
    pairs = zip(figures.chunk(originals, per_row), figures.chunk(recons, per_row), strict=True)
    rows = [r for pair in pairs for r in pair]
    title = f"{split.value} faces (odd rows) and their reconstructions (even rows)" if n_used > per_row \
        else f"{split.value} faces (top) and their reconstructions (bottom)"
    if model.autoregressive:
        title += f"; {explore.what_is_drawn(model)}"
    figures.save_image(figures.face_grid(rows, scale=scale, title=title), out)
    _done(json_out, {"out": str(out), "n": n_used, "split": split.value, "frames": frames[:n_used].tolist()},
          f"wrote {out}: {n_used} {split.value} images (rows of originals above their reconstructions)")


@command
def sample(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("generated_samples.png"),
    n: Annotated[int, typer.Option("-n", min=1, max=10000, help="Number of faces.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the prior draws.")] = 0,
    cols: Annotated[int, typer.Option(min=1, help="Faces per row.")] = 10,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """New faces: decode z drawn from the prior N(0, I)."""
    from freyvae_cli import explore, figures

    _check_out(out)
    model, _, _ = _load(checkpoint, device, need_data=False)
    faces = explore.sample(model, n, seed)
    title = f"z ~ N(0, I); {explore.what_is_drawn(model)}" if model.autoregressive else None
    figures.save_image(figures.face_grid(figures.chunk(faces, cols), scale=scale, title=title), out)
    _done(json_out, {"out": str(out), "n": n, "seed": seed}, f"wrote {out}: {n} faces sampled from the prior")


@command
def traverse(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("latent_variations.png"),
    dim: Annotated[Optional[list[int]], typer.Option("--dim", show_default=False,
                   help="Dimension to vary (0-based, repeatable). [default: the six with most KL]")] = None,
    steps: Annotated[int, typer.Option(min=2, max=100)] = 10,
    span: Annotated[float, typer.Option("--range", help="Vary each dimension from -RANGE to +RANGE.")] = 3.0,
    face: Annotated[int, typer.Option(min=0, help="Index of the test face whose latent mean is the centre.")] = 0,
    from_prior: Annotated[bool, typer.Option("--from-prior", help="Centre on z = 0 instead of a face.")] = False,
    gif: Annotated[Optional[Path], typer.Option(help="Also write an animation sweeping each dimension.",
                                                show_default=False)] = None,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One row per latent dimension, varied around a test face's latent mean."""
    import torch

    from freyvae_cli import explore, figures
    from freyvae_cli.evaluate import INACTIVE_KL, mean_kl_order

    if span <= 0:
        raise UsageError(f"--range must be above 0 (got {span})")
    _check_out(out)
    if gif is not None:
        _check_out(gif, "gif")
    model, ckpt, faces = _load(checkpoint, device, data)
    latent = model.latent_dim
    _check_dims(dim, latent, "--dim")
    x, _ = explore.split_images(ckpt, faces, "test")
    if face >= len(x):
        raise UsageError(f"--face {face} is outside the test split; it has faces 0..{len(x) - 1}")
    kl = explore.kl_per_dim(model, x)
    active, inactive = mean_kl_order(kl)
    dims = list(dim) if dim else active[:6]
    if not dims:  # a young or collapsed model: show what little there is, and say so
        dims = (active + inactive)[:6]
        ui.info(f"note: every latent dimension is inactive (KL < {INACTIVE_KL} nats); the rows drawn, the "
                "highest-KL ones, carry almost no information")
    base = torch.zeros(latent) if from_prior else explore.encode(model, x[face:face + 1])[0][0]
    rows = explore.traverse(model, base, dims, steps, span)
    labels = [f"dim {d} · KL {kl[d]:.2f} nats" for d in dims]
    title = f"values {-span:g} .. +{span:g} around " + ("z = 0" if from_prior else f"test face {face}")
    if model.autoregressive:
        title += f"; {explore.what_is_drawn(model)}"
    figures.save_image(figures.face_grid(rows, scale=scale, labels=labels, title=title), out)
    if not dim and inactive and active:
        ui.info(f"inactive dimensions (KL < {INACTIVE_KL} nats, not drawn): {', '.join(map(str, sorted(inactive)))}")
    if gif is not None:
        sweep = list(range(steps)) + list(range(steps - 2, 0, -1))
        frames = [figures.face_grid([r[[i]] for r in rows], scale=scale, labels=labels) for i in sweep]
        figures.save_gif(frames, gif)
    _done(json_out, {"out": str(out), "gif": str(gif) if gif else None, "dims": dims,
                     "kl": [float(kl[d]) for d in dims], "inactive": sorted(inactive), "steps": steps,
                     "range": span}, f"wrote {out}: dimensions {', '.join(map(str, dims))}")


@command
def interpolate(
    from_: Annotated[int, typer.Option("--from", min=0, help="Index of the first test face.")] = 0,
    to: Annotated[int, typer.Option("--to", min=0, help="Index of the last test face.")] = 1,
    steps: Annotated[int, typer.Option(min=2, max=200)] = 10,
    slerp: Annotated[bool, typer.Option("--slerp", help="Spherical instead of linear interpolation.")] = False,
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("interpolation.png"),
    gif: Annotated[Optional[Path], typer.Option(help="Also write it as an animation.", show_default=False)] = None,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode the path between the latent means of two test faces (ends shown as originals)."""
    import numpy as np

    from freyvae_cli import explore, figures

    _check_out(out)
    if gif is not None:
        _check_out(gif, "gif")
    model, ckpt, faces = _load(checkpoint, device, data)
    x, frames = explore.split_images(ckpt, faces, "test")
    for name, i in (("--from", from_), ("--to", to)):
        if i >= len(x):
            raise UsageError(f"{name} {i} is outside the test split; it has faces 0..{len(x) - 1}")
    mu, _ = explore.encode(model, x[[from_, to]])
    path = explore.decode(model, explore.interpolate(mu[0], mu[1], steps, slerp))
    ends = x[[from_, to]].squeeze(1).numpy() / 255.0
    row = np.concatenate([ends[:1], path, ends[1:]])
    title = f"originals at both ends; {explore.what_is_drawn(model)}" if model.autoregressive else None
    figures.save_image(figures.face_grid([row], scale=scale, title=title), out)
    if gif is not None:
        order = list(range(steps)) + list(range(steps - 2, 0, -1))
        figures.save_gif([figures.face_grid([path[[i]]], scale=scale) for i in order], gif)
    _done(json_out, {"out": str(out), "gif": str(gif) if gif else None, "from": from_, "to": to,
                     "frames": [int(frames[from_]), int(frames[to])], "steps": steps,
                     "method": "slerp" if slerp else "linear"},
          f"wrote {out}: test face {from_} -> {to}, {steps} steps (originals at both ends)")


@command
def manifold(
    dims: Annotated[Optional[tuple[int, int]], typer.Option("--dims", show_default=False,
                    help="Two latent dimensions to span. [default: the two with most KL]")] = None,
    use_pca: Annotated[bool, typer.Option("--pca", help="Span the top two principal axes of the test means.")] = False,
    grid: Annotated[int, typer.Option(min=2, max=40)] = 20,
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("manifold.png"),
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The face manifold: decode a grid over two latent directions, spaced by Gaussian quantiles."""
    import torch

    from freyvae_cli import explore, figures
    from freyvae_cli.evaluate import INACTIVE_KL

    if dims is not None and use_pca:
        raise UsageError("give either --dims A B or --pca, not both")
    _check_out(out)
    model, ckpt, faces = _load(checkpoint, device, data)
    latent = model.latent_dim
    x, _ = explore.split_images(ckpt, faces, "test")
    mu, _ = explore.encode(model, x)
    centre = mu.mean(0)
    if use_pca:
        _, axes, _ = explore.pca(mu.numpy())
        directions = torch.tensor(axes, dtype=torch.float32)
        proj = (mu - centre) @ directions.T
        scales = (float(proj[:, 0].std()), float(proj[:, 1].std()))
        chosen: list = ["pc1", "pc2"]
    else:
        if dims is None:
            kl = explore.kl_per_dim(model, x)
            dims = tuple(int(d) for d in kl.argsort()[::-1][:2]) if latent >= 2 else None
            if dims is not None and kl[list(dims)].max() < INACTIVE_KL:
                ui.info(f"note: every latent dimension is inactive (KL < {INACTIVE_KL} nats); the two drawn, "
                        "the highest-KL ones, carry almost no information")
        if dims is None or latent < 2:
            raise UsageError("a manifold needs two latent dimensions; this model has one")
        _check_dims(dims, latent, "--dims")
        if dims[0] == dims[1]:
            raise UsageError("--dims needs two different dimensions")
        directions = torch.eye(latent)[list(dims)]
        centre[list(dims)] = 0.0  # the other dimensions stay at the test set's mean
        scales = (1.0, 1.0)
        chosen = list(dims)
    with ui.task_progress("decoding the manifold", total=grid) as advance:
        rows = explore.manifold(model, directions, grid, centre, scales, on_row=advance)
    over = "the top two principal axes" if use_pca else f"dimensions {chosen[0]} and {chosen[1]}"
    title = f"{over}; {explore.what_is_drawn(model)}" if model.autoregressive else None
    figures.save_image(figures.face_grid(rows, scale=scale, sep=1, title=title), out)
    _done(json_out, {"out": str(out), "grid": grid, "directions": chosen},
          f"wrote {out}: {grid}x{grid} faces over {over}")


@command
def project(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("latent_space_2d.png"),
    split: Annotated[Split, typer.Option(help="Which images to map.")] = Split.test,
    dims: Annotated[Optional[tuple[int, int]], typer.Option("--dims", show_default=False,
                    help="Plot two latent dimensions instead of the PCA projection.")] = None,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Draw small faces over the points.")] = False,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """2-D map of the latent means (PCA), coloured by frame index in the video."""
    from freyvae_cli import explore, figures

    _check_out(out, "plot")
    model, ckpt, faces = _load(checkpoint, device, data)
    _check_dims(dims, model.latent_dim, "--dims")
    x, frames = explore.split_images(ckpt, faces, split.value)
    mu = explore.encode(model, x)[0].numpy()
    if dims is None:
        points, _, share = explore.pca(mu)
        labels = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    else:
        points, labels, share = mu[:, list(dims)], (f"z[{dims[0]}]", f"z[{dims[1]}]"), []
    title = f"latent means of the {len(x)} {split.value} images"
    figures.save_latent_map(points, frames, out, labels, title,
                            thumbnails=x.squeeze(1).numpy() / 255.0 if thumbnails else None)
    _done(json_out, {"out": str(out), "split": split.value, "n": len(x),
                     "method": "dims" if dims else "pca", "explained_variance": [float(s) for s in share]},
          f"wrote {out}: {len(x)} {split.value} images")


@command
def evaluate(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    split: Annotated[Split, typer.Option(help="Which images to score.")] = Split.test,
    iw_samples: Annotated[int, typer.Option(min=0, help="K for the importance-weighted bound (0: skip).")] = 1000,
    elbo_samples: Annotated[int, typer.Option(min=1, help="z draws averaged for the ELBO.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the z draws.")] = 0,
    device: DeviceOpt = Device.auto,
    precision: Annotated[Precision, typer.Option(
        help="How the importance-weighted bound decodes: bf16 runs the decoder's hidden layers in bf16 "
             "(logits in fp32; ~25% faster where the CPU has native bf16); auto does so there for the "
             "Bernoulli and categorical likelihoods, where it moves iw_nll far less than its sampling "
             "spread; fp32 never. The ELBO, and GPUs, always decode in fp32.")] = Precision.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Negative ELBO, importance-weighted NLL, KL per dimension, active units (nats per image)."""
    from freyvae_cli import evaluate as ev
    from freyvae_cli import explore

    model, ckpt, faces = _load(checkpoint, device, data)
    x, _ = explore.split_images(ckpt, faces, split.value)
    iw_bf16 = ev.iw_precision(precision.value, model.likelihood, next(model.parameters()).device,
                              model.autoregressive)
    with ui.task_progress(f"importance sampling (K={iw_samples})", total=iw_samples * len(x)) as advance:
        result = ev.evaluate(model, x, iw_samples, elbo_samples, seed, advance, iw_bf16)
    result["split"] = split.value
    if not quiet:
        _print_evaluation(result, iw_bf16)
    if json_out:
        ui.emit_json(result)


def _print_evaluation(r: dict, iw_bf16: bool) -> None:
    from rich.table import Table

    t = Table(title=f"{r['split']} split, {r['n_images']} images, {r['likelihood']} likelihood",
              caption="nats per image: summed over 560 pixels, averaged over images")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("meaning")
    t.add_row("neg_elbo", f"{r['neg_elbo']:.2f}", "negative ELBO = reconstruction + KL")
    t.add_row("  reconstruction", f"{r['reconstruction']:.2f}", "-E_q log p(x|z)")
    t.add_row("  kl", f"{r['kl']:.2f}", "KL(q(z|x) || p(z))")
    if r["iw_nll"] is not None:
        how = " (hidden layers in bf16)" if iw_bf16 else ""
        t.add_row("iw_nll", f"{r['iw_nll']:.2f}", f"importance-weighted bound on -log p(x){how}")
    if r["bits_per_dim"]:
        b = r["bits_per_dim"]
        t.add_row("bits/dim (ELBO)", f"{b['neg_elbo']:.3f}", "neg_elbo / (560 ln 2)")
        if b["iw_nll"] is not None:
            t.add_row("bits/dim (IW)", f"{b['iw_nll']:.3f}", "iw_nll / (560 ln 2)")
    if r["bce_floor"] is not None:
        t.add_row("bce_floor", f"{r['bce_floor']:.2f}", "sum of pixel entropies: the best any Bernoulli decoder gets")
        t.add_row("excess", f"{r['excess']:.2f}", "neg_elbo - bce_floor")
    t.add_row("active_units", f"{r['active_units']} / {len(r['kl_per_dim'])}", "dims with Var_x E\\[z_d] > 0.01")
    ui.console().print(t)


@command
def explore(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: a free one).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind. Anything but 127.0.0.1 exposes the model "
                                      "to your network.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    span: Annotated[float, typer.Option("--range", help="Slider range: -RANGE to +RANGE.")] = 3.0,
    device: DeviceOpt = Device.auto,
    quiet: QuietOpt = False,
) -> None:
    """The latent space live in the browser: sliders, the latent map, interpolation (Ctrl-C stops)."""
    import signal

    from freyvae_cli.server import Explorer, ExploreServer

    if not 0 < span <= 10:
        raise UsageError(f"--range must be above 0 and at most 10 (got {span})")
    model, ckpt, faces = _load(checkpoint, device, data)
    explorer = Explorer.build(model, ckpt, faces, str(checkpoint), span)
    try:
        server = ExploreServer(host, port, explorer)
    except OSError as e:
        raise FreyError(f"cannot serve on {host}:{port} ({e.strerror or e}); pick another --port, "
                        "or --port 0 for a free one") from None
    if host != "127.0.0.1":
        ui.warning(f"serving on {host}, not 127.0.0.1: other machines that reach this address can use it")

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    ui.console().print(f"serving {checkpoint} at {server.url} (Ctrl-C stops)", highlight=False)
    if not no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        ui.info("stopped")
    finally:
        server.server_close()


@command
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders or .pth checkpoints (globs such as runs/* work).",
                                               show_default=False)],
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column (a --json key). [default: the "
                                                "comparable best test loss]", show_default=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also plot every run's test loss per epoch here.",
                                                 show_default=False)] = None,
    kl: Annotated[bool, typer.Option("--kl", help="With --plot: the KL curves in a second panel.")] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the rows as CSV here.",
                                                show_default=False)] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare runs: the settings that differ, epochs, time, losses, KL, active units."""
    from freyvae_cli import compare as cmp

    if plot is not None:
        _check_out(plot, "plot")
    if csv is not None:
        from freyvae_cli.files import check_writable

        check_writable(csv, ("csv",))
    rows, settings, metric, histories = cmp.compare(runs, ui.warning, sort)
    if not quiet:
        _print_comparison(rows, settings, metric)
    if csv is not None:
        from freyvae_cli.files import write_text

        write_text(csv, cmp.rows_csv(rows))
    if plot is not None:
        from freyvae_cli import figures

        def label(r: dict) -> str:
            return ", ".join(f"{k}={r[k]}" for k in settings) or r["run"]

        figures.save_compare_plot([(label(r), histories[r["run"]]) for r in rows], plot, kl)
        ui.info(f"wrote {plot}")
    if json_out:
        ui.emit_json(rows)


def _print_comparison(rows: list[dict], settings: list[str], metric: str | None) -> None:
    from rich.table import Table

    def num(v, fmt: str = ".2f") -> str:
        return "" if v is None else format(v, fmt)

    if metric is None:
        note = "likelihoods differ (Bernoulli with others): their losses are not comparable, so not ranked"
    elif metric == "best_test_bpd":
        note = "likelihoods differ: ranked by bits/dim"
    else:
        note = "ranked by best test loss" if rows[0]["best_by"] == "test" else "best = at the best validation epoch"
    columns = [("run", lambda r: r["run"])] + [(k, lambda r, k=k: str(r[k])) for k in settings] + [
        ("epochs", lambda r: str(r["epochs"])), ("seconds", lambda r: num(r["seconds"], ".1f")),
        ("train", lambda r: num(r["train_loss"])), ("test", lambda r: num(r["test_loss"])),
        ("best", lambda r: "" if r["best_loss"] is None else f"{num(r['best_loss'])} ({r['best_by']})"),
        ("best epoch", lambda r: str(r["best_epoch"] or "")), ("best test", lambda r: num(r["best_test_loss"])),
        ("KL", lambda r: num(r["kl"])),
        ("active", lambda r: "" if r["active_units"] is None else str(r["active_units"])),
    ]
    if any(r["best_test_bpd"] is not None for r in rows):
        columns.append(("best test bits/dim", lambda r: num(r["best_test_bpd"], ".3f")))
    t = Table(caption=f"losses in nats per image (summed over 560 pixels); bits/dim for the discrete "
                      f"likelihoods; {note}")
    for name, _ in columns:
        t.add_column(name, justify="left" if name == "run" or name in settings else "right")
    for r in rows:
        t.add_row(*[cell(r) for _, cell in columns])
    ui.console().print(t)


@command
def info(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What a checkpoint holds: config, epochs, split, final numbers, versions, data hash."""
    from freyvae_cli import checkpoint as ck
    from freyvae_cli.train import best_epoch

    c = ck.load(checkpoint)
    ck.build_model(c, checkpoint)
    last = c["history"][-1] if c["history"] else {}
    best = best_epoch(c["history"])
    payload = {
        "checkpoint": str(checkpoint), "epoch": c["epoch"], "config": c["config"],
        "split": {name: len(idx) for name, idx in c["split"].items()},
        "final": {k: v for k, v in last.items() if k != "epoch"}, "units": "nats per image",
        "best_val_epoch": best["epoch"] if best else None,
        "versions": c.get("versions", {}), "data_hash": c.get("data_hash"),
        "interrupted_mid_epoch": bool(c.get("progress")),
    }
    if not quiet:
        split = "/".join(str(n) for n in payload["split"].values())
        lines = [f"{checkpoint}: {c['epoch']} epochs, split {split} ({'/'.join(payload['split'])})"]
        lines += [f"  {k} = {v}" for k, v in c["config"].items()]
        if last:
            lines.append(f"  last epoch: train {last['train_loss']:.2f}, test {last['test_loss']:.2f} nats per image")
        if best:
            lines.append(f"  best validation loss {best['val_loss']:.2f} at epoch {best['epoch']} "
                         f"(test there {best['test_loss']:.2f} nats per image)")
        lines.append(f"  data sha256 {payload['data_hash']}")
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()))
        ui.console().print("\n".join(lines))
    if json_out:
        ui.emit_json(payload)


# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors become one line too (Typer would draw a box)."""
    # ClickException, from whichever click Typer uses (the click package, or its vendored copy)
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=argv or ["--help"], prog_name="freyvae", standalone_mode=False)
    except click_exception as e:
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        ui.error(f"{e.format_message()}{where}")
        sys.exit(getattr(e, "exit_code", 2))
    except typer.Abort:
        ui.error("aborted")
        sys.exit(1)
    except Exception as e:  # a bug: still one line, unless FREYVAE_DEBUG asks for the traceback
        if os.environ.get("FREYVAE_DEBUG"):
            raise
        ui.error(f"unexpected {type(e).__name__}: {e} (a bug in freyvae; FREYVAE_DEBUG=1 shows the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
