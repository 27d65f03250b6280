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

BATCH = 32
LAYERS = [  # name, layer, input shape (the model's activations at batch 32), input needs a gradient
    ("conv1", nn.Conv2d(1, 32, 3, padding=1), (BATCH, 1, 28, 20), False),
    ("conv2", nn.Conv2d(32, 64, 3, padding=1), (BATCH, 32, 14, 10), True),
    ("conv3", nn.Conv2d(64, 128, 3, padding=1), (BATCH, 64, 7, 5), True),
    ("up1", nn.ConvTranspose2d(128, 64, 3, stride=2), (BATCH, 128, 3, 2), True),
    ("up2", nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), (BATCH, 64, 7, 5), True),
    ("up3", nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), (BATCH, 32, 14, 10), True),
]


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
    for name, layer, shape, needs_grad in LAYERS:
        fp32 = forward_backward_ms(layer, shape, needs_grad, bf16=False)
        bf16 = forward_backward_ms(layer, shape, needs_grad, bf16=True)
        print(f"{name:>6} {fp32:7.2f} {bf16:7.2f}")


if __name__ == "__main__":
    main()
