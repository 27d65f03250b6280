"""What the user sees on stderr: messages, errors and progress. stdout is left for --json.

In a terminal, progress redraws in place (Rich); in a pipe or CI it prints one plain line per
epoch; --quiet prints nothing but errors. Rich honours NO_COLOR.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from rich.console import Console

_state = {"quiet": False}


def console() -> Console:
    # Made on each call so that a redirected sys.stderr (tests, pipes) is always the one used.
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def info(message: str) -> None:
    if not _state["quiet"]:
        console().print(message)


def error(message: str) -> None:
    """One line: what is wrong and what to do."""
    from rich.markup import escape  # a message is text: "[tensorboard]" must print as it is

    console().print(f"[bold red]error:[/] {escape(message)}", markup=True, overflow="ignore", crop=False)


def warning(message: str) -> None:
    """One line that names something skipped; the command goes on."""
    from rich.markup import escape

    info(f"[yellow]warning:[/] {escape(message)}")


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fmt_epoch(r: dict, total: int) -> str:
    val = f"val {r['val_loss']:.2f}  " if r.get("val_loss") is not None else ""
    return (
        f"epoch {r['epoch']:>3}/{total}  "
        f"train {r['train_loss']:.2f} (rec {r['train_reconstruction']:.2f} + KL {r['train_kl']:.2f})  {val}"
        f"test {r['test_loss']:.2f} (rec {r['test_reconstruction']:.2f} + KL {r['test_kl']:.2f})  "
        f"nats/image  {r['seconds']:.2f}s"
    )


class TrainProgress:
    """Reporter for train.train: a live bar in a terminal, plain epoch lines elsewhere."""

    def __init__(self) -> None:
        self.con = console()
        self.progress = None
        self.total = 0

    def start(self, cfg, first_epoch: int, n_steps: int) -> None:
        self.total = cfg.epochs
        if _state["quiet"]:
            return
        self.con.print(
            f"training {cfg.epochs - first_epoch + 1} epochs from epoch {first_epoch}; "
            "losses are negative ELBO in nats per image (summed over 560 pixels, averaged over images)"
        )
        if self.con.is_terminal:  # a live bar; elsewhere (pipes, CI) plain lines per epoch
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                TextColumn("batch {task.fields[step]}/{task.fields[steps]}"),
                TextColumn("loss {task.fields[loss]}"), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.con, transient=False,
            )
            steps_total = (cfg.epochs - first_epoch + 1) * n_steps
            self.task = self.progress.add_task("train", total=steps_total, epoch=first_epoch,
                                               epochs=cfg.epochs, step=0, steps=n_steps, loss="-")
            self.progress.start()

    def step(self, epoch: int, step: int, n_steps: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, epoch=epoch, step=step, loss=f"{loss:.1f}")

    def epoch(self, record: dict) -> None:
        if _state["quiet"]:
            return
        if self.progress is not None:
            self.progress.console.print(_fmt_epoch(record, self.total))
        else:
            self.con.print(_fmt_epoch(record, self.total))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def task_progress(description: str, total: int):
    """Progress for long commands other than training; yields advance(n)."""
    if _state["quiet"] or not console().is_terminal:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console(), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.update(task, advance=n)
