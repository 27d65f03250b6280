"""The VAE of the seed README.

Encoder: three 3x3 convolutions (32, 64, 128 channels), each followed by 2x2 max pooling and a
ReLU: 28x20 -> 14x10 -> 7x5 -> 3x2, i.e. 128*3*2 = 768 features, and two dense layers for the mean
and log-variance of q(z|x), 20-d. Decoder: a dense layer makes the 768 back from z, and three
transposed convolutions (64, 32, then the likelihood's channels) give 3x2 -> 7x5 -> 14x10 -> 28x20
exactly. The likelihoods and the loss are in likelihood.py; CPU speed tricks in speedups.py.
"""

from __future__ import annotations

import torch
from torch import nn

from freyvae_cli.likelihood import OUT_CHANNELS
from freyvae_cli.speedups import TapsConvTranspose2d

# Log-variances are clamped to this range so exp() cannot overflow the KL; a trained model's
# values lie well inside it (posterior std between 3e-7 and 2e4).
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a draw from q(z|x) that gradients flow through."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


class VAE(nn.Module):
    autoregressive = False  # p(x|z) factorises over pixels: decode(z) alone gives every pixel's law

    def __init__(self, latent_dim: int = 20, likelihood: str = "bernoulli", out_channels: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        out_channels = out_channels or OUT_CHANNELS[likelihood]
        # Pooling before ReLU gives exactly the seed's relu-then-pool (max commutes with a monotone
        # function, and the gradients match too) with the ReLU on a quarter of the values.
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),    # 32 x 14 x 10
            nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),   # 64 x 7 x 5
            nn.Conv2d(64, 128, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # 128 x 3 x 2
            nn.Flatten(),
        )
        self.to_mu = nn.Linear(768, latent_dim)
        self.to_logvar = nn.Linear(768, latent_dim)
        # Taps for inference on CPUs (speedups.py); with many output channels oneDNN is faster.
        last = nn.ConvTranspose2d if out_channels > 2 else TapsConvTranspose2d
        # In-place ReLUs: the layers before them keep their inputs, not their outputs, for the
        # backward pass, and evaluation decodes millions of z: copies would cost memory traffic.
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 768), nn.ReLU(inplace=True), nn.Unflatten(1, (128, 3, 2)),
            TapsConvTranspose2d(128, 64, 3, stride=2), nn.ReLU(inplace=True),           # 64 x 7 x 5
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # 32 x 14 x 10
            last(32, out_channels, 4, stride=2, padding=1),                             # C x 28 x 20
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x) for images x in [0, 1], shape (B, 1, 28, 20)."""
        h = self.encoder(x)
        logvar = self.to_logvar(h).float().clamp(LOGVAR_MIN, LOGVAR_MAX)
        return self.to_mu(h).float(), logvar

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None, bf16_hidden: bool = False) -> torch.Tensor:
        """Parameters of p(x|z): logits (bernoulli), mean and log-scale (logistic), or 256 logits.
        x is for autoregressive decoders and unused here.

        On CPUs the decoder runs in fp32, also under bf16 autocast: in training oneDNN's bf16
        transposed convolutions are no faster, and some are much slower (benchmarks/bench_layers.py).
        bf16_hidden runs every layer but the last in bf16 (matrix products sum in fp32), ~25 % more
        decodes per second for the importance-weighted bound, which decodes millions of z;
        evaluate.iw_precision says when that leaves the bound as it is.
        """
        if z.device.type != "cpu":
            return self.decoder(z).float()
        with torch.autocast("cpu", enabled=False):
            if not bf16_hidden:
                return self.decoder(z.float())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = self.decoder[:-1](z.float())
            return self.decoder[-1](h.float())

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """p(x|z)'s parameters for one z ~ q(z|x) per image (the reparameterisation trick), mu, logvar."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterise(mu, logvar, generator), x), mu, logvar
