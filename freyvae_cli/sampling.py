"""Drawing from PixelVAE fast, and exactly: fixed-point iteration over many pixels at once.

With the pixel noise u fixed, a draw is the image x in which every pixel is the inverse CDF of its
own law given the pixels before it: x_i = F_i^-1(u_i | x_<i, z). The sequential sampler fills that
in raster order, one pass of the PixelCNN per pixel (560). Here every pixel of a band of BAND rows
instead takes the value its CDF gives under the current image, all at once, until nothing changes
(Song et al., ICML 2021, "Accelerating feedforward computation via parallel nonlinear equation
solving"). The fixed point is unique and is the sequential draw; each pass makes at least one more
pixel final: if the first pixel that changed is i, every pixel up to i is final, and the rows
above it need no recomputing; a band in which nothing changed is final whole. A batch's images
converge after different numbers of passes, so each pass runs only on those still moving. A start
image close to the answer (the face drawn for the slider's last position) may need fewer passes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from freyvae_cli.likelihood import LEVELS

BAND = 8  # rows updated per pass: chosen by benchmarks/bench_sampling.py --bands (docs/performance.md)
CHUNK = 20  # faces drawn together: larger batches cost more per face here (docs/performance.md)


def inverse_cdf(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The level where each pixel's CDF first reaches u: h (..., C) the PixelCNN's last hidden
    layer, u (...) the noise; the arithmetic of the sequential sampler (tests/reference.py)."""
    logits = F.linear(h, weight, bias).float()
    cdf = torch.softmax(logits, dim=-1).cumsum(-1)  # non-decreasing: a sum of non-negative terms
    # how many levels have cdf < u: the reference's (cdf < u).sum(-1), by binary search
    return torch.searchsorted(cdf, u.unsqueeze(-1).contiguous()).squeeze(-1).clamp(max=LEVELS - 1)


def masked_kernels(model) -> list[torch.Tensor]:
    """The PixelCNN's masked kernels (image_in's first), made once per draw rather than once a pass."""
    return [m.weight * m.mask for m in (model.image_in, *model.blocks)]


def features(model, x: torch.Tensor, cond: list[torch.Tensor], kernels: list[torch.Tensor]) -> torch.Tensor:
    """PixelVAE.features in evaluation (no dropout), on the masked kernels given: the same sums."""
    a = F.conv2d(x, kernels[0], model.image_in.bias, padding=model.image_in.padding) + cond[0]
    for block, kernel, c in zip(model.blocks, kernels[1:], cond[1:], strict=True):
        a = a + F.conv2d(F.relu(a + c), kernel, block.bias, padding=block.padding)
    return F.relu(a)


def update(model, levels: torch.Tensor, cond: list[torch.Tensor], u: torch.Tensor, first_row: int,
           last_row: int, kernels: list[torch.Tensor]) -> torch.Tensor:
    """Every pixel of rows first_row..last_row-1 set to the inverse CDF of its law under the current
    images (levels, (b, H*W)): one pass of the PixelCNN over those rows and the rows they see;
    `kernels`: masked_kernels(model)."""
    height, width = cond[0].shape[2:]
    top = max(0, first_row - model.reach)
    x = (levels.view(-1, 1, height, width)[:, :, top:last_row] / (LEVELS - 1)).float()
    window = [c[:, :, top:last_row] for c in cond]
    h = features(model, x, window, kernels)[:, :, first_row - top:]
    weight, bias = model.to_logits.weight.flatten(1), model.to_logits.bias
    noise = u[:, first_row * width:last_row * width].view(-1, last_row - first_row, width)
    return inverse_cdf(h.permute(0, 2, 3, 1), weight, bias, noise).flatten(1)


@torch.no_grad()
def sample(model, z: torch.Tensor, u: torch.Tensor, start: torch.Tensor | None = None,
           stats: dict | None = None, band: int = BAND) -> torch.Tensor:
    """PixelVAE.sample's images (uint8, (B, 1, H, W)) for latents z (B, D) and noise u, by
    fixed-point iteration from `start` (uint8 images, one or B; default black). Each pass updates
    the `band` rows from the first non-final row of the images that have one there. `stats`, if
    given, gets the number of passes."""
    cond = model.condition(z)
    batch, _, height, width = cond[0].shape
    u = u.to(z.device).expand(batch, 1, height, width).reshape(batch, height * width)
    levels = torch.zeros(batch, height * width, dtype=torch.long, device=z.device)
    if start is not None:
        levels[:] = start.to(z.device).reshape(-1, height * width).long()
    kernels = masked_kernels(model)
    final = np.zeros(batch, dtype=np.int64)  # per image: the pixels before this are final
    passes = 0  # the bookkeeping is numpy's: at batch 1 a pass is a millisecond, torch ops cost microseconds each
    while (final < height * width).any():
        passes += 1
        first_row = int(final.min()) // width
        last_row = min(height, first_row + band)
        part = np.flatnonzero(final < last_row * width)  # the images with a non-final pixel here
        idx = slice(None) if len(part) == batch else torch.from_numpy(part).to(z.device)  # a slice copies nothing
        rows = slice(first_row * width, last_row * width)
        new = update(model, levels[idx], [c[idx] for c in cond], u[idx], first_row, last_row, kernels)
        old = levels[idx, rows]
        position = np.arange(rows.start, rows.stop)
        movable = position >= final[part, None]  # final pixels keep their value
        changed = (new != old).cpu().numpy() & movable
        levels[idx, rows] = torch.where(torch.from_numpy(movable).to(z.device), new, old)  # old may view levels
        first_change = np.where(changed, position, height * width).min(1)
        final[part] = np.where(changed.any(1), first_change + 1, np.maximum(final[part], rows.stop))
    if stats is not None:
        stats["passes"] = passes
    return levels.view(batch, 1, height, width).to(torch.uint8)
