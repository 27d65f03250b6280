"""PixelVAE (Gulrajani et al., 2017): the seed's encoder, and a decoder whose output is an
autoregressive PixelCNN over the image, conditioned on z.

The seed's decoder (dense 768, transposed convolutions 64 -> 32 -> C) turns z into a C x 28 x 20
feature map. A small PixelCNN (van den Oord et al., 2016) reads the image through masked
convolutions, so that the 256 logits of pixel i depend only on z and on the pixels before i in
raster order: one 7x7 type-A convolution on the image, then residual blocks of one 3x3 type-B
convolution each, every one also fed the feature map through a 1x1 convolution (and, in
training, dropout on its input against overfitting 1565 faces), and a 1x1 convolution to 256
logits. log p(x|z) = sum_i log p(x_i | x_<i, z) is exact and needs one pass over the image
(teacher forcing); drawing x, pixel by pixel, is a fixed point that sampler.py finds in a few passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from freyvae_cli.data.frey import HEIGHT, WIDTH
from freyvae_cli.likelihood import OUT_CHANNELS, level_log_probs
from freyvae_cli.vae import VAE, reparameterise


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees the rows above and, in its own row, the pixels to the left; type A
    (the first layer, on the image) not the centre pixel itself, type B (later layers) also it."""

    def __init__(self, cin: int, cout: int, k: int, kind: str) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones_like(self.weight)
        c = k // 2
        mask[:, :, c, c + (kind == "B"):] = 0
        mask[:, :, c + 1:] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelVAE(VAE):
    autoregressive = True
    image_shape = (HEIGHT, WIDTH)

    def __init__(self, latent_dim: int = 64, likelihood: str = "categorical", channels: int = 32,
                 blocks: int = 4, dropout: float = 0.0) -> None:
        if likelihood not in ("categorical", "mixture"):
            raise ValueError("the PixelVAE decoder models each pixel as a law over its 256 levels")
        super().__init__(latent_dim, likelihood, out_channels=channels)  # decoder: z -> C x 28 x 20
        self.image_in = MaskedConv2d(1, channels, 7, "A")
        self.blocks = nn.ModuleList(MaskedConv2d(channels, channels, 3, "B") for _ in range(blocks))
        self.conditions = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(blocks))
        self.to_logits = nn.Conv2d(channels, OUT_CHANNELS[likelihood], 1)  # 256 logits, or the mixture's
        # How many rows above its own a pixel's logits can see: 3 for the 7x7 layer, 1 per block.
        self.reach = 3 + blocks
        self.dropout = dropout

    def condition(self, z: torch.Tensor) -> list[torch.Tensor]:
        """What z says to the PixelCNN: the feature map, and its projection for every block."""
        h = self.decoder(z)
        return [h] + [c(h) for c in self.conditions]

    def features(self, x: torch.Tensor, cond: list[torch.Tensor],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The PixelCNN's last hidden layer for images x in [0, 1]; row r sees rows <= r of x only.
        Dropout masks come from `generator`, so a resumed run draws the same ones."""
        a = self.image_in(x) + cond[0]
        for block, c in zip(self.blocks, cond[1:], strict=True):
            h = F.relu(a + c)
            if self.training and self.dropout > 0:
                keep = torch.rand(h.shape, generator=generator, device=h.device) >= self.dropout
                h = h * keep / (1.0 - self.dropout)
            a = a + block(h)
        return F.relu(a)

    def level_logits(self, params: torch.Tensor) -> torch.Tensor:
        """The 256 levels' logits of pixels, (..., 256), from to_logits's outputs (..., C), channels
        last: those themselves for the categorical, the log-probabilities for the mixture."""
        return params if self.likelihood == "categorical" else level_log_probs(params)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None, bf16_hidden: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The law of every pixel given z and the pixels before it in x (teacher forcing): its 256
        logits, or the mixture's parameters."""
        if x is None:
            raise ValueError("an autoregressive decoder needs the image x; use sample() to draw one")
        return self.to_logits(self.features(x, self.condition(z), generator)).float()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        return self.decode(reparameterise(mu, logvar, generator), x, generator=generator), mu, logvar

    def sample(self, z: torch.Tensor, u: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """Images x ~ p(x|z) as uint8 (B, 1, 28, 20). Pixel i takes the value where its CDF, given
        z and the pixels before it, first reaches u_i (inverse-CDF sampling), so a grid that shares
        u differs only by z. That is the image a pass per pixel in raster order draws; sampler.py
        finds it with far fewer passes over all pixels at once, from `start` (uint8 images) if
        given: the same image whatever the start (tests/test_sampling.py)."""
        from freyvae_cli.pixelvae.sampler import sample

        return sample(self, z, u, start)
