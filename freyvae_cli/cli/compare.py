"""`freyvae compare`: many runs side by side, as a table, a CSV, a plot or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    JsonOpt,
    QuietOpt,
    command,
)


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
        from freyvae_cli.atomic_files import check_writable

        check_writable(csv, ("csv",))
    rows, settings, metric, histories = cmp.compare(runs, ui.warning, sort)
    if not quiet:
        ui.comparison_table(rows, settings, metric)
    if csv is not None:
        from freyvae_cli.atomic_files import write_text
        from freyvae_cli.runs import csv_text

        write_text(csv, csv_text(rows))
    if plot is not None:
        from freyvae_cli import figures

        def label(r: dict) -> str:
            return ", ".join(f"{k}={r[k]}" for k in settings) or r["run"]

        figures.save_compare_plot([(label(r), histories[r["run"]]) for r in rows], plot, kl)
        ui.info(f"wrote {plot}")
    if json_out:
        ui.emit_json(rows)
