"""`freyvae train` and `freyvae download`: declared here; config, runs, train and data do the work."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    Device,
    DeviceOpt,
    JsonOpt,
    Likelihood,
    LrSchedule,
    ModelName,
    Precision,
    QuietOpt,
    SplitKind,
    command,
    done,
)
from freyvae_cli.config import RANGES


def span(name: str) -> dict:
    """An option's min and max, from config's ranges (the ones a checkpoint is checked against)."""
    low, high = RANGES[name]
    return {"min": low, "max": high}


# train's options with long help, declared apart so that the command reads as a list.
TrainDataOpt = Annotated[Optional[Path], typer.Option(
    "--data", show_default=False, help="Frey Face .mat file, a folder of face images, or a .npy/.npz of uint8 faces "
    "(N, 28, 20). [default: $FREYVAE_DATA, else data/frey_rawface.mat]")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="With a folder for --data: leave out the files that are not readable images (named).")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", show_default=False, help="Folder for checkpoints, history.json and loss_curve.png. [default: runs]")]
ModelOpt = Annotated[ModelName, typer.Option(
    help="seed: the seed README's VAE. pixelvae: its encoder with a PixelCNN decoder head (defaults "
         "--latent-dim 64 --likelihood categorical --batch-size 64 --kl-warmup 10 --epochs 200 --lr 2e-3 "
         "--lr-schedule cosine).")]
LrScheduleOpt = Annotated[LrSchedule, typer.Option(help="constant, or cosine: from --lr down to 0 over --epochs.")]
DropoutOpt = Annotated[float, typer.Option(
    **span("dropout"), help="pixelvae: dropout rate in the PixelCNN's residual blocks, in training.")]
BlocksOpt = Annotated[int, typer.Option(**span("blocks"), help="pixelvae: residual blocks of the PixelCNN.")]
ChannelsOpt = Annotated[int, typer.Option(**span("channels"), help="pixelvae: channels of the PixelCNN.")]
EmaOpt = Annotated[float, typer.Option(**span("ema"), help="Score and save an exponential moving average of "
                   "the weights with this decay (Polyak averaging; 0: the weights themselves).")]
SplitOpt = Annotated[SplitKind, typer.Option(
    help="random: --test-fraction held out. literature: 1565 train / 200 validation / 200 test, "
         "shuffled as in the published Frey Face results (seeds 123, 321, 231).")]
SplitSeedOpt = Annotated[int, typer.Option(
    help="Seed of the split. [default: 0; 123 with --split literature]", show_default=False)]
PatienceOpt = Annotated[int, typer.Option(
    min=0, help="Stop after N epochs without a better validation loss (needs --split literature; 0: never).")]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="auto: bf16 autocast where the hardware has it natively (on CPUs for the encoder; "
         "the decoder stays fp32).")]
TensorBoardOpt = Annotated[bool, typer.Option(
    "--tensorboard", help="Also log to TensorBoard (needs pip install \"freyvae[tensorboard]\").")]
TensorBoardDirOpt = Annotated[Optional[Path], typer.Option(
    help="Where --tensorboard writes. [default: OUT/tensorboard]", show_default=False)]


@command
def train(
    ctx: typer.Context,
    data: TrainDataOpt = None,
    out: OutOpt = None,
    model: ModelOpt = ModelName.seed,
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs (with --resume too).")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    lr_schedule: LrScheduleOpt = LrSchedule.constant,
    latent_dim: Annotated[int, typer.Option(**span("latent_dim"))] = 20,
    likelihood: Annotated[Likelihood, typer.Option(help="Pixel model p(x|z).")] = Likelihood.bernoulli,
    beta: Annotated[float, typer.Option(min=0.0, help="Weight of the KL term in training.")] = 1.0,
    dropout: DropoutOpt = 0.0,
    blocks: BlocksOpt = 4,
    channels: ChannelsOpt = 32,
    ema: EmaOpt = 0.0,
    kl_warmup: Annotated[int, typer.Option(min=0, help="Epochs over which the KL weight rises from 0 to beta.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of the images held out for testing.")] = 0.2,
    split: SplitOpt = SplitKind.random,
    split_seed: SplitSeedOpt = 0,
    patience: PatienceOpt = 0,
    seed: Annotated[int, typer.Option(help="Seed of the weights, shuffling and noise.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a checkpoint every N epochs (0: never).")] = 10,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    tensorboard: TensorBoardOpt = False,
    tensorboard_dir: TensorBoardDirOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint.", show_default=False)] = None,
    skip_bad: SkipBadOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Train into an --out that already holds a model.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the VAE; writes checkpoints, history.json and loss_curve.png into --out."""
    from freyvae_cli import checkpoint, config, runs
    from freyvae_cli.train import train as run_training

    options = {name: v.value if isinstance(v, Enum) else v for name, v in ctx.params.items()}
    explicit = {p for p in ctx.params if ctx.get_parameter_source(p).name not in ("DEFAULT", "DEFAULT_MAP")}
    cfg, resumed = config.resolve(options, explicit, checkpoint.load)
    if tensorboard or tensorboard_dir is not None:
        from freyvae_cli.tensorboard_log import check_installed

        check_installed()
    runs.check_out_folder(Path(cfg.out), resuming=resumed is not None, force=force)
    faces, source, data_hash = _faces(cfg, resumed, resume, explicit, skip_bad, json_out)
    reporter = ui.TrainProgress()
    try:
        result = run_training(cfg, faces, data_hash, reporter, resumed, source)
    finally:
        reporter.close()
    payload, message = runs.summary(result, cfg)
    if result.final_path is None:
        ui.error(message)
        if json_out:
            ui.emit_json(payload)
        raise typer.Exit(128 + result.interrupted)
    done(json_out, payload, message)



def _faces(cfg, resumed: dict | None, resume: Path | None, explicit: set[str], skip_bad: bool, json_out: bool):
    """The run's faces, what they are and their pixel hash; a resumed run's data checked against its own."""
    from freyvae_cli import checkpoint, runs
    from freyvae_cli.data import sources

    faces, source = sources.load_or_download(Path(cfg.data), ui.asker(json_out) if resumed is None else None,
                                              ui.info, checkpoint.data_files(resumed), skip_bad, ui.warning)
    data_hash = sources.pixel_hash(faces)
    if resumed is not None:
        runs.check_resume(resumed, resume, cfg, explicit, data_hash)
    return faces, source, data_hash

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
    from freyvae_cli.atomic_files import check_writable
    from freyvae_cli.config import default_data_path
    from freyvae_cli.data import frey as fdata

    dest = check_writable(to or default_data_path())
    url = url or fdata.data_url()
    if dest.exists() and not force:
        faces = fdata.load_faces(dest)
        done(json_out, {"path": str(dest), "images": len(faces), "downloaded": False,
                         "pixel_hash": fdata.pixel_hash(faces)},
              f"{dest} is already there and valid ({len(faces)} faces); --force downloads it again")
        return
    with ui.task_progress(f"downloading {url}", total=1) as advance:
        faces = fdata.download(dest, url)
        advance()
    done(json_out, {"path": str(dest), "images": len(faces), "downloaded": True,
                     "pixel_hash": fdata.pixel_hash(faces)},
          f"saved {dest}: {len(faces)} faces of 28x20")
