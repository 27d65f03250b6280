"""Forward + backward time of each convolution of the model at batch 32, fp32 against bf16 autocast.

Why the trainer runs the encoder under bf16 autocast but the decoder in fp32 on CPUs: oneDNN's
bf16 kernels win for the convolutions and lose for some transposed convolutions.

    python benchmarks/bench_layers.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from freyvae_cli.vae import VAE

BATCH = 32


def model_layers() -> list[tuple[str, nn.Module, tuple, bool]]:
    """The model's convolutions with the shapes of their inputs at batch 32 (read by forward hooks),
    and whether that input needs a gradient (all but the images)."""
    model = VAE()
    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    shapes: dict[nn.Module, tuple] = {}

    def record(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        shapes[module] = tuple(inp[0].shape)

    hooks = [m.register_forward_hook(record) for m in convs + ups]
    with torch.no_grad():
        model(torch.rand(BATCH, 1, 28, 20))
    for h in hooks:
        h.remove()
    names = [f"conv{i + 1}" for i in range(len(convs))] + [f"up{i + 1}" for i in range(len(ups))]
    return [(name, m, shapes[m], i > 0) for i, (name, m) in enumerate(zip(names, convs + ups, strict=True))]


def forward_backward_ms(layer: nn.Module, shape: tuple, needs_grad: bool, bf16: bool, reps: int = 15) -> float:
    """Median over reps of the mean of 20 forward + backward passes, channels-last, in ms."""
    layer = layer.to(memory_format=torch.channels_last)
    x = torch.randn(shape).to(memory_format=torch.channels_last).requires_grad_(needs_grad)

    def once() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.backward(torch.ones_like(y))

    for _ in range(10):
        once()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(20):
            once()
        times.append((time.perf_counter() - t0) / 20 * 1e3)
    return statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, forward + backward, ms")
    print(f"{'layer':>6} {'fp32':>7} {'bf16':>7}")
    for name, layer, shape, needs_grad in model_layers():
        fp32 = forward_backward_ms(layer, shape, needs_grad, bf16=False)
        bf16 = forward_backward_ms(layer, shape, needs_grad, bf16=True)
        print(f"{name:>6} {fp32:7.2f} {bf16:7.2f}")


if __name__ == "__main__":
    main()
