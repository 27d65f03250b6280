"""`freyvae evaluate`: one model's numbers on one split (nats per image, bits/dim)."""

from __future__ import annotations

from typing import Annotated

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    CheckpointOpt,
    DataOpt,
    Device,
    DeviceOpt,
    JsonOpt,
    Precision,
    PretrainedOpt,
    QuietOpt,
    Split,
    command,
    load,
    model_file,
)


@command
def evaluate(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
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
    realism: Annotated[bool, typer.Option("--realism", help="Also test whether new faces pass for real: a small "
                       "classifier's accuracy telling prior samples from the test faces (0.5: it cannot), a "
                       "control on training faces, and how close samples lie to training faces "
                       "(docs/models.md, Realism).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Negative ELBO, importance-weighted NLL, KL per dimension, active units (nats per image); --realism."""
    from freyvae_cli import evaluate as ev
    from freyvae_cli import latent
    from freyvae_cli.prior import of_checkpoint

    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data)
    x, _ = latent.split_images(ckpt, faces, split.value)
    if realism:
        from freyvae_cli import realism as rl

        rl.check(ckpt)
    iw_bf16 = ev.iw_precision(precision.value, model.likelihood, next(model.parameters()).device,
                              model.autoregressive)
    with ui.task_progress(f"importance sampling (K={iw_samples})", total=iw_samples * len(x)) as advance:
        result = ev.evaluate(model, x, iw_samples, elbo_samples, seed, advance, iw_bf16, of_checkpoint(ckpt))
    result["split"] = split.value
    if realism:
        with ui.task_progress("realism: classifier folds", total=2 * rl.FOLDS) as advance:
            result["realism"] = rl.of_model(model, ckpt, faces, seed, advance)
    if not quiet:
        ui.evaluation_table(result, iw_bf16)
    if json_out:
        ui.emit_json(result)
