"""`freyvae explore`: the latent space in the browser; explore_server.py serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    DEFAULT_CHECKPOINT,
    CheckpointOpt,
    DataOpt,
    Device,
    DeviceOpt,
    QuietOpt,
    command,
    load,
)
from freyvae_cli.errors import FreyError, UsageError


@command
def explore(
    checkpoint: CheckpointOpt = Path(DEFAULT_CHECKPOINT),
    data: DataOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: a free one).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind. Anything but 127.0.0.1 exposes the model "
                                      "to your network.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    span: Annotated[float, typer.Option("--range", help="Slider range: -RANGE to +RANGE.")] = 3.0,
    device: DeviceOpt = Device.auto,
    quiet: QuietOpt = False,
) -> None:
    """The latent space live in the browser: sliders, the latent map, interpolation (Ctrl-C stops)."""
    import signal

    from freyvae_cli.explore_server import Explorer, ExploreServer

    if not 0 < span <= 10:
        raise UsageError(f"--range must be above 0 and at most 10 (got {span})")
    model, ckpt, faces = load(checkpoint, device, data)
    explorer = Explorer.build(model, ckpt, faces, str(checkpoint), span, drawer_thread=False)
    try:
        server = ExploreServer(host, port, explorer)
    except OSError as e:
        raise FreyError(f"cannot serve on {host}:{port} ({e.strerror or e}); pick another --port, "
                        "or --port 0 for a free one") from None
    if host != "127.0.0.1":
        ui.warning(f"serving on {host}, not 127.0.0.1: other machines that reach this address can use it")

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    ui.console().print(f"serving {checkpoint} at {server.url} (Ctrl-C stops)", highlight=False)
    if not no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.run()
    except KeyboardInterrupt:
        ui.info("stopped")
