"""The `freyvae` Typer app, and what its commands share: option types, choices, error handling.

Heavy libraries (torch, scipy, matplotlib) are imported inside the commands that need them, so
`freyvae --help` starts at once.
"""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import __version__, ui
from freyvae_cli.config import LIKELIHOODS, LR_SCHEDULES, MODELS, PRECISIONS, SPLITS
from freyvae_cli.errors import FreyError, UsageError
from freyvae_cli.pretrained import NAMES as PRETRAINED

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


# The choices that config.py owns, as the Enums Typer lists in --help and checks.
Likelihood = Enum("Likelihood", [(name, name) for name in LIKELIHOODS], type=str)
Precision = Enum("Precision", [(name, name) for name in PRECISIONS], type=str)
ModelName = Enum("ModelName", [(name, name) for name in MODELS], type=str)


class Split(str, Enum):
    test = "test"
    train = "train"
    val = "val"


LrSchedule = Enum("LrSchedule", [(name, name) for name in LR_SCHEDULES], type=str)
Pretrained = Enum("Pretrained", [(name, name) for name in PRETRAINED], type=str)
SplitKind = Enum("SplitKind", [(name, name) for name in SPLITS], type=str)


class Crop(str, Enum):
    centre = "centre"
    none = "none"


# Options shared by several commands.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", show_default=False, help=f"Trained model to use. [default: {DEFAULT_CHECKPOINT}]")]
PretrainedOpt = Annotated[Optional[Pretrained], typer.Option(
    "--pretrained", show_default=False, help="Use a model shipped with freyvae instead of -c: seed (the seed's "
    "VAE) or pixelvae (PixelVAE); `freyvae info --pretrained NAME` shows how it was made.")]
DataOpt = Annotated[
    Optional[Path],
    typer.Option("--data", help="Frey Face .mat file. [default: $FREYVAE_DATA, else the file the "
                 "model was trained on, else data/frey_rawface.mat]", show_default=False),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto picks CUDA, then MPS, then CPU.")]
CropOpt = Annotated[Crop, typer.Option(
    "--crop", help="How an image becomes a 28x20 face: centre, the largest centred 20:28 box; none, the whole "
    "image squashed. Then greyscale and an area-averaging resize (docs/your-images.md).")]
ImagesArg = Annotated[list[Path], typer.Argument(
    help="Image files: PNG, JPEG, BMP, TIFF, WebP or GIF (its first frame).", show_default=False)]
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


def model_file(checkpoint: Path | None, pretrained: Enum | None) -> Path:
    """The checkpoint a command uses: -c, a pretrained model's packaged file (checked), or the default."""
    if checkpoint is not None and pretrained is not None:
        raise UsageError("give either -c/--checkpoint or --pretrained, not both")
    if pretrained is not None:
        from freyvae_cli import pretrained as shipped

        return shipped.path(pretrained.value)
    return checkpoint if checkpoint is not None else Path(DEFAULT_CHECKPOINT)


def load(checkpoint: Path, device: Device, data: Path | None = None, need_data: bool = True,
         summary_will_do: bool = False):
    """The model, its checkpoint and (if needed) the faces it was trained on. With summary_will_do,
    a checkpoint that stores its test faces' latent summary (a pretrained model) gives faces None
    where no data file was given or found, and the command works from the summary."""
    from freyvae_cli import checkpoint as ck
    from freyvae_cli.train import resolve_device

    dev = resolve_device(device.value)
    if not need_data:
        return (*ck.load_model(checkpoint, dev), None)
    return ck.load_with_data(checkpoint, dev, data, ui.warning, summary_will_do)


def done(json_out: bool, payload: dict, message: str) -> None:
    """The closing message on stderr, and with --json the payload on stdout."""
    ui.info(message)
    if json_out:
        ui.emit_json(payload)
