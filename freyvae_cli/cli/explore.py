"""`freyvae explore`: the latent space in the browser; explore_server.py serves it."""

from __future__ import annotations

from typing import Annotated

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    CheckpointOpt,
    DataOpt,
    Device,
    DeviceOpt,
    PretrainedOpt,
    QuietOpt,
    command,
    load,
    model_file,
)
from freyvae_cli.errors import FreyError, UsageError


@command
def explore(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
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
    path = model_file(checkpoint, pretrained)
    model, ckpt, faces = load(path, device, data, summary_will_do=True)
    named = f"--pretrained {pretrained.value}" if pretrained is not None else None
    explorer = Explorer.build(model, ckpt, faces, str(path), span, drawer_thread=False, named=named)
    if faces is None:
        ui.info("no data file: the map shows the test faces' stored latent means, without the faces "
                "themselves (run `freyvae download` for them)")
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
    ui.console().print(f"serving {path} at {server.url} (Ctrl-C stops)", highlight=False)
    if not no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.run()
    except KeyboardInterrupt:
        ui.info("stopped")
