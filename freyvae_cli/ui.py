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


def asker(json_out: bool):
    """A yes/no question to the person at the terminal, or None where nobody can answer (a script,
    a pipe, --quiet, --json)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()) or _state["quiet"] or json_out:
        return None
    import typer

    return lambda question: typer.confirm(question, err=True)


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


def evaluation_table(r: dict, iw_bf16: bool) -> None:
    """evaluate's figures as a table on stderr, each with what it means (nats per image)."""
    from rich.table import Table

    t = Table(title=f"{r['split']} split, {r['n_images']} images, {r['likelihood']} likelihood",
              caption="nats per image: summed over 560 pixels, averaged over images")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("meaning")
    t.add_row("neg_elbo", f"{r['neg_elbo']:.2f}", "negative ELBO = reconstruction + KL")
    t.add_row("  reconstruction", f"{r['reconstruction']:.2f}", "-E_q log p(x|z)")
    t.add_row("  kl", f"{r['kl']:.2f}", f"KL(q(z|x) || p(z)), p(z) {r.get('prior', 'N(0, I)')}")
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
    if r.get("realism"):
        q = r["realism"]
        t.add_section()
        t.add_row("realism", f"{q['accuracy']:.3f} ± {q['accuracy_sd']:.3f}",
                  f"a classifier tells {q['faces']} prior samples from the test faces (0.5: cannot)")
        t.add_row("  control", f"{q['control_accuracy']:.3f} ± {q['control_accuracy_sd']:.3f}",
                  "the same test, training faces against test faces")
        t.add_row("  nearest, samples", f"{q['samples_nearest_train_rms']:.1f}",
                  "median RMS grey levels from a sample to its nearest training face")
        t.add_row("  nearest, test", f"{q['held_out_nearest_train_rms']:.1f}", "the same from a test face")
    console().print(t)
    if r.get("realism", {}).get("copies_training_faces"):
        warning("the samples lie far closer to training faces than test faces do: the model copies its training faces")


def comparison_table(rows: list[dict], settings: list[str], metric: str | None) -> None:
    """compare's rows as a table on stderr: the settings that differ, then the figures."""
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
    console().print(t)


class SweepProgress:
    """A sweep's progress: in a terminal one live line (trials finished, pruned and failed, the best
    so far, the epoch of this worker's trial); elsewhere a plain line each time the count changes."""

    def __init__(self, n_trials: int) -> None:
        self.con, self.n, self.live, self.last = console(), n_trials, None, ""
        self.counts, self.best_value, self.trial = {}, None, ""
        if not _state["quiet"] and self.con.is_terminal:
            from rich.live import Live

            self.live = Live("", console=self.con, transient=False, refresh_per_second=4)
            self.live.start()

    def line(self) -> str:
        c = self.counts
        best = f"{self.best_value:.2f} nats per image" if self.best_value is not None else "-"
        return (f"trials {c.get('complete', 0) + c.get('pruned', 0)}/{self.n} finished ({c.get('pruned', 0)} pruned, "
                f"{c.get('failed', 0)} failed, {c.get('running', 0)} running); best validation -ELBO {best}"
                f"{self.trial}")

    def show(self) -> None:
        if _state["quiet"]:
            return
        if self.live is not None:
            self.live.update(self.line())
        elif self.line() != self.last:
            self.con.print(self.line())
            self.last = self.line()

    def update(self, counts: dict, best: float | None) -> None:
        self.counts, self.best_value = counts, best
        self.trial = ""
        self.show()

    def warn(self, message: str) -> None:
        if self.live is not None:
            self.live.console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
        else:
            warning(message)

    def epoch(self, number: int, epoch: int, epochs: int) -> None:
        self.trial = f"; trial {number}: epoch {epoch}/{epochs}"
        if self.live is not None:
            self.show()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def sweep_table(study: str, rows: list[dict]) -> None:
    """A study's trials, best first: objective (validation -ELBO) and test -ELBO in nats per image."""
    if _state["quiet"]:
        return
    from rich.table import Table

    table = Table(title=f"study {study}: best validation -ELBO first (nats per image)", title_justify="left")
    for name in ("trial", "state", "val -ELBO", "test -ELBO", "parameters", "minutes", "run"):
        table.add_column(name, justify="right" if name in ("trial", "val -ELBO", "test -ELBO", "minutes") else "left")
    for r in rows:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        table.add_row(str(r["number"]), r["state"], f"{r['value']:.2f}" if r["value"] is not None else "-",
                      f"{r['test_loss']:.2f}" if r.get("test_loss") is not None else "-", params,
                      f"{r['minutes']:.1f}" if r["minutes"] is not None else "-", r["run"] or "-")
    console().print(table)
