"""CPU speed plumbing, kept apart from the models: transposed convolutions by taps, the bf16
hardware check, and the plain-loop variants that the benchmarks and tests compare against.

Nothing here changes a result beyond float rounding; tests/test_model.py checks each against torch.
"""

from __future__ import annotations

import torch
from torch import nn


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bf16 natively (AVX512-BF16/AMX CPUs, recent GPUs)."""
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def transposed_conv_by_taps(x: torch.Tensor, layer: nn.ConvTranspose2d) -> torch.Tensor:
    """layer(x), computed as one matrix product over every kernel tap followed by shifted adds.
    Channels-last in and out."""
    batch, cin, h, w = x.shape
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    cout = layer.out_channels
    taps = x.permute(0, 2, 3, 1).reshape(-1, cin) @ layer.weight.permute(0, 2, 3, 1).reshape(cin, -1)
    taps = taps.view(batch, h, w, k, k, cout)
    out = layer.bias.expand(batch, (h - 1) * s + k, (w - 1) * s + k, cout).clone()  # the bias, then the taps
    for ky in range(k):
        for kx in range(k):
            out[:, ky:ky + (h - 1) * s + 1:s, kx:kx + (w - 1) * s + 1:s] += taps[:, :, :, ky, kx]
    return out[:, p:out.shape[1] - p, p:out.shape[2] - p].permute(0, 3, 1, 2)


class TapsConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d that, for inference on CPUs, computes by taps: oneDNN runs this model's
    first transposed convolution (3x2 input pixels) and a last one with one or two output channels
    at a few GFLOP/s, and importance sampling decodes millions of z. Training (gradients on) keeps
    oneDNN's kernels: taps with a hand-written backward were no faster in the trainer (docs/performance.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return transposed_conv_by_taps(x, self)
        return super().forward(x)


def relu_then_pool(encoder: nn.Sequential) -> nn.Sequential:
    """The seed's conv -> ReLU -> max-pool order over the same convolutions: what a tutorial writes,
    for the benchmark's plain loop and the test that this model's order computes the same."""
    convs = [m for m in encoder if isinstance(m, nn.Conv2d)]
    return nn.Sequential(*[layer for conv in convs for layer in (conv, nn.ReLU(), nn.MaxPool2d(2))], nn.Flatten())


def transposed_conv_as(layer: nn.ConvTranspose2d, cls: type[nn.ConvTranspose2d]) -> nn.ConvTranspose2d:
    """The same transposed convolution, parameters shared, computed by cls: torch's own (what a
    tutorial runs) or TapsConvTranspose2d. For the benchmark's plain loop and the tests. Built on
    the meta device, so that it draws no initial weights from (and does not shift) the global RNG."""
    other = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                padding=layer.padding, device="meta")
    other.weight, other.bias = layer.weight, layer.bias
    return other
