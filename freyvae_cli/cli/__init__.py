"""The `freyvae` command: the Typer app (common.py) and its commands, each in the module of its
name: train.py (train, download), pictures.py (reconstruct, sample, traverse, interpolate, manifold,
project), encode.py, evaluate.py, compare.py, info.py, explore.py. Each declares options and calls
the package; the maths, files and checks live there."""

from __future__ import annotations

import os
import sys

import typer

from freyvae_cli import ui
from freyvae_cli.cli import compare, encode, evaluate, explore, info, pictures, sweep, train  # noqa: F401  (registers the commands)
from freyvae_cli.cli.common import app

__all__ = ["app", "main"]

# `freyvae --help` lists the commands in the order a user meets them, not by module.
ORDER = ("train", "download", "reconstruct", "sample", "traverse", "interpolate", "manifold", "project",
         "encode", "evaluate", "explore", "compare", "sweep", "info")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name))


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
