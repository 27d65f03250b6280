"""Speed tricks, kept apart from the models so that vae.py reads like its paper: transposed
convolutions by taps, the bf16 hardware check, and glibc malloc settings that keep freed buffers
in the process.

Nothing here changes a result beyond float rounding; tests/test_model.py checks the taps against
torch's own transposed convolution (tests/reference.py), tests/test_speedups.py the malloc setting.
"""

from __future__ import annotations

import ctypes
import sys

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


# Keep freed memory inside the process instead of handing it back to the kernel. A training step
# (and each batch of importance samples, each sampler pass) allocates and frees the same few large
# buffers over and over. With glibc's default settings many come back as fresh mmap'd or trimmed
# pages, so each step pays hundreds of page faults (about 300 per step of freyvae's trainer here,
# by getrusage; none with this setting). Raising the two thresholds keeps the pages warm.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD_MAX = 32 << 20  # the largest value glibc accepts on 64-bit systems


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed buffers up to 32 MiB; False where that does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
