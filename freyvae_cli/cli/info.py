"""`freyvae info`: what a checkpoint holds."""

from __future__ import annotations

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    CheckpointOpt,
    JsonOpt,
    PretrainedOpt,
    QuietOpt,
    command,
    model_file,
)


@command
def info(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What a checkpoint holds: config, epochs, split, final numbers, versions, data hash."""
    from freyvae_cli import checkpoint as ck

    checkpoint = model_file(checkpoint, pretrained)
    c = ck.load(checkpoint)
    ck.build_model(c, checkpoint)
    payload, lines = ck.describe(c, checkpoint)
    if not quiet:
        ui.console().print("\n".join(lines))
    if json_out:
        ui.emit_json(payload)
