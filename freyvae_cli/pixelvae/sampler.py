"""Drawing from PixelVAE fast, and exactly: fixed-point iteration over many pixels at once.

With the pixel noise u fixed, a draw is the image x in which every pixel is the inverse CDF of its
own law given the pixels before it: x_i = F_i^-1(u_i | x_<i, z). The sequential sampler fills that
in raster order, one pass of the PixelCNN per pixel (560). Here every pixel of a band of BAND rows
instead takes the value its CDF gives under the current image, all at once, until nothing changes
(Song et al., ICML 2021, "Accelerating feedforward computation via parallel nonlinear equation
solving"). The fixed point is unique and is the sequential draw; each pass makes at least one more
pixel final: if the first pixel that changed is i, every pixel up to i is final, and the rows
above it need no recomputing; a band in which nothing changed is final whole.

Each image has its own band, starting at its own first non-final row, so a face that has gone
ahead never waits for, nor recomputes rows already final for, one that lags. A pass reads a window
of `reach` rows above the band (what the band's pixels see), and each layer computes only the rows
the layers after it read. An image leaves the pass once final, and the next one waiting takes its
place (Fixpoint), so passes stay full. A start image close to the answer needs fewer passes: on a
CPU each image starts from guess.guess, the sequential draw in NumPy's arithmetic, nearly always
the very face, and one pass over the whole image confirms it.

Exactly the same faces means the same arithmetic, and torch's rounds differently by batch size: a
3x3 convolution of one image runs as im2col, of several through oneDNN; the decoder's matrix
products, too. So z is decoded for the whole call at once, as the sequential sampler does, and each
convolution runs the algorithm the sequential sampler's call would (masked_layers), however many
images are left in a pass. tests/test_sampling.py checks the faces bit for bit against the
sequential sampler kept in tests/reference.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from freyvae_cli.likelihood import LEVELS
from freyvae_cli.pixelvae.guess import guess
from freyvae_cli.speedups import keep_freed_memory

BAND = 8  # rows updated per pass: chosen by benchmarks/bench_sampling.py --bands (docs/performance.md)
# A matrix product rounds a row by how many rows the matrix has: torch rounds the rows of a tall
# matrix in blocks of 4 alike, but a lone row, and the last 1-3, otherwise. The sequential sampler
# multiplies one row an image for each pixel (a batch's images together), a pass 160 rows an image.
# The two CDFs differed by at most 1.8e-5 over 134,400 pixels of the trained PixelVAE; a pixel
# whose product rounds apart and whose u lies within TIE of a step is drawn again with the
# sequential sampler's own product.
TIE = 1e-4
AT_ONCE = 60  # images in a pass (and in a guess) at most: more cost more per face here (bench_sampling.py --at-once)
CHUNK = 400  # faces per sample() call from the commands: their conditions (0.36 MB a face) are held together


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The level where each pixel's CDF first reaches u, from logits (..., 256) and u (...): the
    arithmetic of the sequential sampler (tests/reference.py); and, if `ties`, whether a step of
    the CDF lies within TIE of u, where the rounding of the logits could decide the level."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)  # non-decreasing: a sum of non-negative terms
    queries = torch.stack([u - TIE, u, u + TIE], -1) if ties else u.unsqueeze(-1).contiguous()
    count = torch.searchsorted(cdf, queries)  # how many levels have cdf < u: the reference's (cdf < u).sum(-1)
    level = count[..., 1 if ties else 0].clamp(max=LEVELS - 1)
    return level, (count[..., 2] != count[..., 0]) if ties else None


def conv_backend(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, pad: list[int]) -> str | None:
    """Which algorithm F.conv2d runs for input x ("slow2d": im2col, "mkldnn": oneDNN, or another),
    or None where this torch lacks the private API that says so, or one of the two kernels. Tested
    on torch 2.13.0 (CI's); tests/test_sampling.py also draws with it hidden."""
    select, kinds = getattr(torch._C, "_select_conv_backend", None), getattr(torch._C, "_ConvBackend", None)
    if select is None or kinds is None or not hasattr(torch, "mkldnn_convolution"):
        return None
    try:
        backend = select(x, kernel, bias, [1, 1], pad, [1, 1], False, [0, 0], 1, None)
        torch.ops.aten.thnn_conv2d  # noqa: B018  (an AttributeError where this torch has no such op)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return {kinds.Slow2d: "slow2d", kinds.Mkldnn: "mkldnn"}.get(backend, "other")


def masked_layers(model, batch: int, width: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The PixelCNN's masked convolutions (image_in's first), kernels masked once per draw, each
    run by the algorithm F.conv2d picks for the sequential sampler's input at this batch size.
    torch runs a 3x3 convolution of one image by im2col and of several by oneDNN, whose sums round
    differently in the last bit; so a face keeps the arithmetic of its call when the faces beside
    it have converged and left the batch (tests/test_sampling.py).

    Where this torch cannot say or run that algorithm (conv_backend is None), the layers are plain
    F.conv2d. Faces are then still exact draws of the fixed point in F.conv2d's arithmetic, but no
    longer guaranteed to be the sequential sampler's bit for bit: a pixel whose noise lies within a
    rounding of a step of its CDF may take the neighbouring level (the near-tie redraw still runs)."""
    layers = []
    for m in (model.image_in, *model.blocks):
        kernel, pad = m.weight * m.mask, list(m.padding)
        probe = torch.empty(batch, m.in_channels, model.reach + 1, width, device=kernel.device)  # a sequential window
        backend = conv_backend(probe, kernel, m.bias, pad)
        if backend == "slow2d":
            layers.append(partial(torch.ops.aten.thnn_conv2d, weight=kernel, kernel_size=list(kernel.shape[2:]),
                                  bias=m.bias, stride=[1, 1], padding=pad))
        elif backend == "mkldnn":
            layers.append(partial(torch.mkldnn_convolution, weight=kernel, bias=m.bias, padding=pad,
                                  stride=[1, 1], dilation=[1, 1], groups=1))
        else:  # a GPU's (F.conv2d picks the same whatever the batch), or no private API
            layers.append(partial(F.conv2d, weight=kernel, bias=m.bias, padding=pad))
    return layers


def features(x: torch.Tensor, cond: list[torch.Tensor], layers: list[Callable[[torch.Tensor], torch.Tensor]],
             rows: int | None = None) -> torch.Tensor:
    """PixelVAE.features in evaluation (no dropout), through masked_layers(): the same sums, for the
    last `rows` rows of the window x (all by default), which must hold the `reach` rows above
    them. A row reads one row above it of each block's input, so each layer computes only the rows
    that the layers after it read."""
    height = x.shape[2]
    keep = height if rows is None else rows
    need = min(height, keep + len(layers) - 1)  # rows of image_in's output that the blocks read
    a = layers[0](x)[:, :, -need:] + cond[0][:, :, -need:]
    for layer, c in zip(layers[1:], cond[1:], strict=True):
        out = layer(F.relu(a + c[:, :, -need:]))
        need = max(keep, need - 1)  # the top row's output saw padding, not the row above: dropped
        a = a[:, :, -need:] + out[:, :, -need:]
    return F.relu(a)


def rows_of(t: torch.Tensor, images: slice | torch.Tensor, first: int | np.ndarray, count: int) -> torch.Tensor:
    """Rows first[i] .. first[i] + count - 1 of images[i] of t, kept rows outermost (B, H, C, W),
    as (n, C, count, W): a view when all the images start together (first an int) and `images` is
    a slice (of images side by side), else a copy of whole rows, gathered."""
    if isinstance(first, int):
        return t[images, first:first + count].transpose(1, 2)
    if isinstance(images, slice):
        images = torch.arange(images.start or 0, (images.start or 0) + len(first), device=t.device)
    rows = torch.from_numpy(first[:, None] + np.arange(count)).to(t.device)
    return t[images[:, None], rows].transpose(1, 2)


class Waiting(NamedTuple):
    """An image added to a Fixpoint, not yet in a place."""

    ticket: int
    cond: list[torch.Tensor]  # what z says to the PixelCNN (PixelVAE.condition), unpadded
    u: torch.Tensor
    start: torch.Tensor | None


class Fixpoint:
    """Fixed-point draws of a changing set of images: add() puts latents in, step() runs one pass
    over at most `room` of them (the first added first) and hands back those now final. sample()
    draws a batch through it, a new image taking each place that frees, so a pass stays full; the
    explore server keeps one, so a request that arrives joins the pass already running. Every face
    is drawn with the arithmetic of a sequential draw of `like_batch` images (masked_layers)."""

    def __init__(self, model, room: int, like_batch: int, band: int | None = None) -> None:
        keep_freed_memory()  # a pass frees and allocates the same buffers (60 faces' logits: 10 MB) again
        device = next(model.parameters()).device
        height, width = model.image_shape
        # On a CPU each image starts from guess.guess, nearly always the answer: one pass over the
        # whole image then confirms it. On a GPU passes are cheap and the guess's loop is not.
        self.guessing = device.type == "cpu"
        band = band or (height if self.guessing else BAND)
        self.model, self.room, self.band = model, room, band
        self.pixels, self.width, self.rows = height * width, width, model.reach + height + band
        self.layers = masked_layers(model, like_batch, width)
        self.like_batch = like_batch
        self.weight, self.bias = model.to_logits.weight.flatten(1), model.to_logits.bias
        # Each place holds an image padded so that every window has reach + band rows: above it,
        # pixels 0 and conditions -inf (each layer's input there is relu(-inf) = 0, a convolution's
        # own zero padding); below it, zeros that the masked kernels never read into the rows above.
        # Rows are kept outermost (place, row, channel, column), so that a window is whole rows.
        channels = model.image_in.out_channels
        self.cond = [torch.zeros(room, self.rows, channels, width, device=device) for _ in range(1 + len(model.blocks))]
        for c in self.cond:  # the padding, set once: a place's image goes between, each time it is taken
            c[:, :model.reach] = -float("inf")
        self.levels = torch.zeros(room, self.rows, 1, width, dtype=torch.long, device=device)
        self.noise = torch.zeros(room, self.rows, 1, width, device=device)
        self.final = np.full(room, -1, dtype=np.int64)  # per place: the pixels before this are final; -1 free
        self.ticket = np.zeros(room, dtype=np.int64)
        self.waiting: list[Waiting] = []
        self.added = self.passes = self.image_passes = 0

    @torch.no_grad()
    def add(self, z: torch.Tensor, u: torch.Tensor, start: torch.Tensor | None = None) -> list[int]:
        """Latents z (k, D) to draw, with noise u and start images (uint8), one or k of each (start
        default black); their tickets, which step() hands back with the faces. What z says to the
        PixelCNN is computed here, for the k together, as the sequential sampler computes it for
        its batch: the decoder's matrix products also round by batch size."""
        k, shape = len(z), (-1, 1, *self.model.image_shape)
        u = u.reshape(shape).expand(k, -1, -1, -1)
        start = None if start is None else start.reshape(shape).expand(k, -1, -1, -1)
        cond = self.model.condition(z.to(self.levels.device))
        if start is None and self.guessing:
            start = guess(self.model, cond, u, AT_ONCE)  # as many together as a pass holds
        tickets = list(range(self.added, self.added + k))
        for i, t in enumerate(tickets):
            self.waiting.append(Waiting(t, [c[i] for c in cond], u[i], None if start is None else start[i]))
        self.added += k
        return tickets

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or bool((self.final >= 0).any())

    @torch.no_grad()
    def _admit(self) -> None:
        """The waiting images take the free places, first come first."""
        free = np.flatnonzero(self.final < 0)[:len(self.waiting)]
        if not free.size:
            return
        joining, self.waiting = self.waiting[:free.size], self.waiting[free.size:]
        reach, height = self.model.reach, self.model.image_shape[0]
        together = free[-1] - free[0] + 1 == free.size  # places side by side: a slice, copied to in place
        places = slice(int(free[0]), int(free[-1]) + 1) if together else torch.from_numpy(free).to(self.levels.device)
        for k, mine in enumerate(self.cond):
            mine[places, reach:reach + height] = torch.stack([j.cond[k].transpose(0, 1) for j in joining])
        self.noise[places, reach:reach + height] = torch.stack([j.u for j in joining]).to(self.noise).transpose(1, 2)
        self.levels[places] = 0
        for place, j in zip(free, joining, strict=True):
            if j.start is not None:
                self.levels[place, reach:reach + height] = j.start.to(self.levels.device).long().transpose(0, 1)
        self.final[free] = 0
        self.ticket[free] = [j.ticket for j in joining]

    def redraw_near_ties(self, new: torch.Tensor, near: torch.Tensor, h: torch.Tensor, u: torch.Tensor,
                         call_rows: np.ndarray) -> None:
        """The pixels `near` a step of their CDF, each by the sequential sampler's own product: its
        call's `like_batch` rows for that pixel, this image's (row call_rows[i] of its call) among
        them. A product never mixes rows, so the others can be zeros."""
        for i, r, c in near.nonzero().tolist():
            matrix = h.new_zeros(self.like_batch, h.shape[-1])
            matrix[call_rows[i]] = h[i, r, c]
            logits = self.model.level_logits(F.linear(matrix, self.weight, self.bias)[call_rows[i]])
            new[i, r, c] = inverse_cdf(logits, u[i, r, c])[0]

    @torch.no_grad()
    def step(self) -> list[tuple[int, torch.Tensor]]:
        """One pass over the images in place; (ticket, face as uint8 (1, H, W)) for each now final."""
        self._admit()
        moving = np.flatnonzero(self.final >= 0)
        if not moving.size:
            return []
        self.passes, self.image_passes = self.passes + 1, self.image_passes + moving.size
        reach, band, width, pixels, device = self.model.reach, self.band, self.width, self.pixels, self.levels.device
        together = moving[-1] - moving[0] + 1 == moving.size  # places side by side: a slice, which copies nothing
        pick = slice(int(moving[0]), int(moving[-1]) + 1) if together else torch.from_numpy(moving).to(device)
        first_row = self.final[moving] // width  # each image's band starts here, its window `reach` rows above
        top = int(first_row[0]) if (first_row == first_row[0]).all() else first_row  # in the padded rows
        # every pixel of each band at once, under the current image: one pass of the PixelCNN
        # (one channel: strides made plain, or oneDNN takes the image as channels-last, and slowly)
        x = rows_of(self.levels, pick, top, reach + band)[:, 0].unsqueeze(1) / (LEVELS - 1)
        h = features(x, [rows_of(c, pick, top, reach + band) for c in self.cond], self.layers, band)
        h, u = h.permute(0, 2, 3, 1), rows_of(self.noise, pick, top + reach, band)[:, 0]
        call_rows = self.ticket[moving] % self.like_batch  # each image's row in the sequential sampler's products
        apart = call_rows >= self.like_batch // 4 * 4  # a product's last 1-3 rows round otherwise than a pass's
        logits = self.model.level_logits(F.linear(h, self.weight, self.bias))
        new, near = inverse_cdf(logits, u, apart.any())  # (images, band, W)
        old = rows_of(self.levels, pick, top + reach, band)[:, 0]  # a view, or a copy to scatter back
        position = first_row[:, None] * width + np.arange(band * width)  # (images, band pixels), may run past the image
        movable = (position >= self.final[moving, None]) & (position < pixels)  # final pixels keep their value
        changed = (new.flatten(1) != old.flatten(1)).cpu().numpy() & movable
        if near is not None:
            near = near.flatten(1).cpu().numpy() & movable & apart[:, None]
            while (todo := near & (position <= np.where(changed, position, pixels).min(1, keepdims=True))).any():
                # the ties among the pixels this pass makes final (up to each image's first change,
                # which a redraw may move), drawn again as the sequential sampler rounds them
                self.redraw_near_ties(new, torch.from_numpy(todo).to(device).view_as(new), h, u, call_rows)
                near &= ~todo
                changed = (new.flatten(1) != old.flatten(1)).cpu().numpy() & movable
        merged = torch.where(torch.from_numpy(movable).to(device).view_as(new), new, old)
        if isinstance(top, int) and isinstance(pick, slice):
            old.copy_(merged)  # old is a view of the levels
        else:
            rows = torch.from_numpy(first_row[:, None] + reach + np.arange(band)).to(device)
            self.levels[torch.from_numpy(moving).to(device)[:, None], rows, 0] = merged
        first_change = np.where(changed, position, pixels).min(1)
        self.final[moving] = np.where(changed.any(1), first_change + 1,
                                      np.minimum(pixels, np.maximum(self.final[moving], position[:, -1] + 1)))
        done = moving[self.final[moving] == pixels]
        if not done.size:
            return []
        faces = self.levels[torch.from_numpy(done).to(device), reach:self.rows - band].transpose(1, 2).to(torch.uint8)
        self.final[done] = -1
        return list(zip(self.ticket[done].tolist(), faces, strict=True))


@torch.no_grad()
def sample(model, z: torch.Tensor, u: torch.Tensor, start: torch.Tensor | None = None,
           stats: dict | None = None, band: int | None = None, at_once: int = AT_ONCE) -> torch.Tensor:
    """PixelVAE.sample's images (uint8, (B, 1, H, W)) for latents z (B, D), noise u and start
    images (uint8; one or B of each; start default black), by fixed-point iteration: each pass
    updates, in every image not yet final, the `band` rows from its first non-final row. At most
    `at_once` images (default AT_ONCE) are in a pass. `stats`, if given, gets the number of passes,
    and of images in them."""
    batch = len(z)
    height, width = model.image_shape
    drawing = Fixpoint(model, min(batch, at_once), batch, band)
    drawing.add(z, u, start)
    out = torch.empty(batch, 1, height, width, dtype=torch.uint8, device=z.device)
    while drawing.busy:
        for ticket, face in drawing.step():
            out[ticket] = face
    if stats is not None:
        stats.update(passes=drawing.passes, image_passes=drawing.image_passes)
    return out
