"""`freyvae info`: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    DEFAULT_CHECKPOINT,
    CheckpointOpt,
    JsonOpt,
    QuietOpt,
    command,
)


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
