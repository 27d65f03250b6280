"""Plain references that the fast paths are tested equal to (and timed against in benchmarks/)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from freyvae_cli.likelihood import LEVELS


@torch.no_grad()
def sequential_sample(model, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """PixelVAE's draw as freyvae 0.1.0 made it: one pass of the PixelCNN per pixel, in raster order,
    each over only the `reach` rows above the current one; pixel i takes the level where its CDF
    first reaches u_i. uint8 (B, 1, 28, 20)."""
    cond = model.condition(z)
    batch, _, height, width = cond[0].shape
    x = torch.zeros(batch, 1, height, width, device=z.device)
    u = u.to(z.device).expand(batch, 1, height, width)
    for row in range(height):
        top = max(0, row - model.reach)
        window = [c[:, :, top:row + 1] for c in cond]
        for col in range(width):
            h = model.features(x[:, :, top:row + 1], window)[:, :, -1, col]  # logits of this pixel only
            logits = model.level_logits(F.linear(h, model.to_logits.weight.flatten(1), model.to_logits.bias)).float()
            cdf = torch.softmax(logits, dim=1).cumsum(1)
            level = (cdf < u[:, :, row, col]).sum(1).clamp(max=LEVELS - 1)
            x[:, 0, row, col] = level / (LEVELS - 1)
    return (x * (LEVELS - 1)).round().to(torch.uint8)


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
