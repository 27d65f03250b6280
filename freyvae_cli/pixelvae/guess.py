"""A first guess at PixelVAE's draw, fast: the sequential sampler itself, but computing for each
pixel only its own outputs (Ramachandran et al., 2017, "Fast generation for convolutional
autoregressive models"), several rows at a time, in NumPy's float32.

The sequential sampler runs the PixelCNN over the rows above each pixel, 560 times; yet when pixel i
is drawn, each layer has one new output to compute, at i itself, from outputs it already has. Each
layer's outputs are kept here, and a pixel costs one small product per layer. A pixel needs of the
row above it only the pixels up to 3 columns to its right (the 7x7 layer's reach), so pixel (r, c)
can be drawn at step c + 4r: row r runs 4 columns behind row r - 1, 5 rows together, 128 steps
for 560 pixels (a wavefront).

Its sums are NumPy's, not torch's, so a pixel whose noise lies within a rounding of a step of its
CDF may take the next level: 5 faces in 2400 of the trained PixelVAE (docs/performance.md). sampler.Fixpoint takes
the guess as its start and checks every pixel with torch's own arithmetic, so the faces are the
sequential sampler's, bit for bit, whatever the guess.

The PixelCNN of model.py, written per pixel with s_k = a_k + c_{k+1} (a_k its residual stream,
c_k what z says to layer k, c_{K+1} = 0), A the 7x7 type-A convolution, B_k the 3x3 type-B ones:
    s_0 = A(x) + c_0 + c_1,   s_{k+1} = s_k + c_{k+2} - c_{k+1} + B_k(relu(s_k)),   logits = W relu(s_K) + b
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from freyvae_cli.likelihood import LEVELS


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _taps(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unmasked kernel positions of a masked convolution, as offsets (dy, dx) from the output
    pixel, and its weights there as one matrix (taps x in, out)."""
    ys, xs = np.nonzero(_numpy(layer.mask[0, 0]))
    k = layer.kernel_size[0] // 2
    weight = _numpy(layer.weight * layer.mask)[:, :, ys, xs]  # (out, in, taps)
    return ys - k, xs - k, weight.transpose(2, 1, 0).reshape(-1, layer.out_channels)


@lru_cache(maxsize=8)
def _schedule(height: int, width: int, offsets: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]):
    """The wavefront: the pixels in the order drawn (flat positions), and for each step, which of
    them it draws (a slice of that order) and, for each layer, where they are in its padded grid
    and where their taps are. A row may start once the row above is `lag` columns ahead of it, more
    than any tap reaches to the right in the rows above."""
    lag = 1 + max(max((dx // -dy for dy, dx in zip(*o, strict=True) if dy < 0), default=0) for o in offsets)
    sizes = [(height - min(dy)) * (width + 2 * max(-min(dx), max(dx))) for dy, dx in offsets]
    order, steps = [], []
    for t in range(width + lag * (height - 1)):
        rows = np.arange(height)
        rows = rows[(t - lag * rows >= 0) & (t - lag * rows < width)]
        cols = t - lag * rows
        grids = []
        for dy, dx in offsets:
            top, side = -min(dy), max(-min(dx), max(dx))
            grid_width = width + 2 * side
            at = (rows + top) * grid_width + cols + side
            grids.append((at, at[:, None] + np.array(dy) * grid_width + np.array(dx)))  # (n,), (n, taps)
        steps.append((slice(len(order), len(order) + len(rows)), grids))
        order += (rows * width + cols).tolist()
    return np.array(order), steps, sizes


def mixture_levels(params: np.ndarray) -> np.ndarray:
    """likelihood.level_log_probs in NumPy: the 256 levels' log-probabilities from (..., 3K) mixture parameters."""
    logit_pi, mean, log_scale = np.split(params[..., None, :], 3, axis=-1)  # (..., 1, K)
    inv_scale = np.exp(-np.clip(log_scale, -7.0, 7.0))
    centred = np.arange(LEVELS, dtype=np.float32)[:, None] / 127.5 - 1.0 - mean  # (..., 256, K)
    upper, lower = inv_scale * (centred + 1.0 / 255.0), inv_scale * (centred - 1.0 / 255.0)
    softplus_upper, softplus_lower = np.logaddexp(0, upper), np.logaddexp(0, lower)
    log_bin = lower + np.log(np.expm1(inv_scale * (2.0 / 255.0))) - softplus_upper - softplus_lower
    log_bin[..., 0, :] = upper[..., 0, :] - softplus_upper[..., 0, :]
    log_bin[..., -1, :] = -softplus_lower[..., -1, :]
    log_pi = logit_pi - np.logaddexp.reduce(logit_pi, axis=-1, keepdims=True)
    return np.logaddexp.reduce(log_pi + log_bin, axis=-1)


@torch.no_grad()
def guess(model, cond: list[torch.Tensor], u: torch.Tensor, at_once: int | None = None) -> torch.Tensor:
    """The sequential draw (uint8, (B, 1, H, W)) for conditions `cond` (PixelVAE.condition of B
    latents) and noise u (1 or B, 1, H, W), up to rounding: nearly always the very face. At most
    `at_once` faces (all by default) are drawn together: their layer outputs take about 1 MB a face."""
    if at_once is not None and len(cond[0]) > at_once:
        return torch.cat([guess(model, [c[i:i + at_once] for c in cond], u if len(u) == 1 else u[i:i + at_once])
                          for i in range(0, len(cond[0]), at_once)])
    layers = [model.image_in, *model.blocks]
    taps = [_taps(m) for m in layers]
    order, steps, sizes = _schedule(*model.image_shape, tuple((tuple(dy), tuple(dx)) for dy, dx, _ in taps))
    to_logits, logit_bias = _numpy(model.to_logits.weight.flatten(1)).T.copy(), _numpy(model.to_logits.bias)

    # (B, pixels, C), the pixels in the order drawn, so that each step's are a slice
    c = [_numpy(t).transpose(0, 2, 3, 1).reshape(len(t), -1, t.shape[1])[:, order] for t in cond] + [0.0]
    batch, pixels, _ = c[0].shape
    given = [c[0] + c[1] + _numpy(model.image_in.bias)]  # what each layer's s gets from z and the biases
    given += [c[k + 2] - c[k + 1] + _numpy(b.bias) for k, b in enumerate(model.blocks)]
    u = np.broadcast_to(_numpy(u).reshape(-1, pixels)[:, order, None], (batch, pixels, 1))
    # each layer's input on its padded grid: the image (levels / 255) for the first, relu(s_k) after
    grids = [np.zeros((batch, size, m.in_channels), np.float32) for size, m in zip(sizes, layers, strict=True)]
    levels = np.zeros((batch, pixels), np.int64)
    for drawn, where in steps:
        s = given[0][:, drawn] + grids[0][:, where[0][1]].reshape(batch, -1, len(taps[0][0])) @ taps[0][2]
        for k in range(1, len(layers)):
            here, reads = where[k]
            grids[k][:, here] = np.maximum(s, 0)
            s = s + given[k][:, drawn] + grids[k][:, reads].reshape(batch, len(here), -1) @ taps[k][2]
        logits = np.maximum(s, 0) @ to_logits
        logits += logit_bias
        if model.likelihood == "mixture":
            logits = mixture_levels(logits)
        cdf = np.exp(logits - logits.max(-1, keepdims=True)).cumsum(-1)
        level = (cdf < u[:, drawn] * cdf[..., -1:]).sum(-1)  # 256 only if rounding puts u past the last step
        levels[:, drawn] = level
        grids[0][:, where[0][0], 0] = level * (1 / (LEVELS - 1))
    out = np.empty_like(levels)
    out[:, order] = np.minimum(levels, LEVELS - 1)
    return torch.from_numpy(out.astype(np.uint8)).view(batch, 1, *model.image_shape)
