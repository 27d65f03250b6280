"""The commands that measure: evaluate (one model), compare (many runs), info (one checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    DEFAULT_CHECKPOINT,
    CheckpointOpt,
    DataOpt,
    Device,
    DeviceOpt,
    JsonOpt,
    Precision,
    QuietOpt,
    Split,
    command,
    load,
)


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

    model, ckpt, faces = load(checkpoint, device, data)
    x, _ = explore.split_images(ckpt, faces, split.value)
    iw_bf16 = ev.iw_precision(precision.value, model.likelihood, next(model.parameters()).device,
                              model.autoregressive)
    with ui.task_progress(f"importance sampling (K={iw_samples})", total=iw_samples * len(x)) as advance:
        result = ev.evaluate(model, x, iw_samples, elbo_samples, seed, advance, iw_bf16)
    result["split"] = split.value
    if not quiet:
        ui.evaluation_table(result, iw_bf16)
    if json_out:
        ui.emit_json(result)


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
        from freyvae_cli.figures import check_out

        check_out(plot, "plot")
    if csv is not None:
        from freyvae_cli.files import check_writable

        check_writable(csv, ("csv",))
    rows, settings, metric, histories = cmp.compare(runs, ui.warning, sort)
    if not quiet:
        ui.comparison_table(rows, settings, metric)
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


@command
def info(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What a checkpoint holds: config, epochs, split, final numbers, versions, data hash."""
    from freyvae_cli import checkpoint as ck

    c = ck.load(checkpoint)
    ck.build_model(c, checkpoint)
    payload, lines = ck.describe(c, checkpoint)
    if not quiet:
        ui.console().print("\n".join(lines))
    if json_out:
        ui.emit_json(payload)
