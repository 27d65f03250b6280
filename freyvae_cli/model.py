"""The VAE of the seed README, its three pixel likelihoods, and the loss (the negative ELBO).

Shapes: a face is 1 x 28 x 20. The encoder's three 3x3 convolutions with 2x2 max pooling give
28x20 -> 14x10 -> 7x5 -> 3x2, i.e. 128*3*2 = 768 features; the decoder's dense layer makes those
768 back from z, and three transposed convolutions give 3x2 -> 7x5 -> 14x10 -> 28x20 exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Log-variances are clamped to this range so exp() cannot overflow the KL; a trained model's
# values lie well inside it (posterior std between 3e-7 and 2e4).
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
LEVELS = 256  # 8-bit pixels, for the discrete likelihoods
OUT_CHANNELS = {"bernoulli": 1, "logistic": 2, "categorical": LEVELS}


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


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bf16 natively (AVX512-BF16/AMX CPUs, recent GPUs)."""
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class TapsConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d that, for inference on CPUs, computes by taps: oneDNN runs this model's
    first transposed convolution (3x2 input pixels) and a last one with one or two output channels
    at a few GFLOP/s, and importance sampling decodes millions of z. Training (gradients on) keeps
    oneDNN's kernels: taps with a hand-written backward were no faster in the trainer (README)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return transposed_conv_by_taps(x, self)
        return super().forward(x)


class VAE(nn.Module):
    def __init__(self, latent_dim: int = 20, likelihood: str = "bernoulli") -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.likelihood = likelihood
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
        out_channels = OUT_CHANNELS[likelihood]
        # With 256 output channels (categorical) oneDNN is four times faster than taps.
        last = nn.ConvTranspose2d if likelihood == "categorical" else TapsConvTranspose2d
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

    def decode(self, z: torch.Tensor, bf16_hidden: bool = False) -> torch.Tensor:
        """Parameters of p(x|z): logits (bernoulli), mean and log-scale (logistic), or 256 logits.

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
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # the reparameterisation trick
        return self.decode(z), mu, logvar


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


def _logistic_log_probs(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel log P(x) of a logistic discretised to 256 bins on [-1, 1], edge bins open."""
    mean, log_scale = params[:, :1], params[:, 1:2].clamp(min=-7.0)
    centred = (x.float() / 127.5 - 1.0) - mean
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (centred + 1.0 / 255.0)
    lower = inv_scale * (centred - 1.0 / 255.0)
    log_cdf_upper = upper - F.softplus(upper)   # log sigmoid(upper), for x = 0
    log_sf_lower = -F.softplus(lower)           # log (1 - sigmoid(lower)), for x = 255
    delta = torch.sigmoid(upper) - torch.sigmoid(lower)
    mid = inv_scale * centred
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid)  # density at the bin centre
    log_mid = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    return torch.where(x == 0, log_cdf_upper, torch.where(x == LEVELS - 1, log_sf_lower, log_mid))


def pixel_log_probs(params: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """log p(x_i|z) for every pixel, (B, 1, 28, 20), for integer pixels x in 0..255.

    For bernoulli the target is x/255, so the value is minus the binary cross-entropy of grey
    targets, not a normalised likelihood of 8-bit data; the two discrete likelihoods are.
    """
    if likelihood == "bernoulli":
        return -F.binary_cross_entropy_with_logits(params, x.float() / 255.0, reduction="none")
    if likelihood == "logistic":
        return _logistic_log_probs(params, x)
    if likelihood == "categorical":  # over the last dimension, where channels-last logits are contiguous
        log_probs = torch.log_softmax(params.permute(0, 2, 3, 1), dim=-1)
        return log_probs.gather(-1, x.long().permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def log_likelihood(params: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """log p(x|z) summed over the 560 pixels, one value per image, in nats."""
    return pixel_log_probs(params, x, likelihood).flatten(1).sum(1)


def mean_image(params: torch.Tensor, likelihood: str) -> torch.Tensor:
    """E[x|z] in [0, 1], (B, 1, 28, 20): what the commands draw for a decoded z."""
    if likelihood == "bernoulli":
        return torch.sigmoid(params)
    levels = torch.arange(LEVELS, device=params.device)
    if likelihood == "categorical":
        probs = torch.softmax(params, dim=1)
    else:
        grid = levels.view(1, LEVELS, 1, 1).expand(params.shape[0], LEVELS, *params.shape[2:])
        probs = torch.exp(_logistic_log_probs(params, grid))
    return (probs * levels.view(1, LEVELS, 1, 1)).sum(1, keepdim=True) / (LEVELS - 1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, (B, D): the closed form of Kingma & Welling."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def neg_elbo(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None):
    """Reconstruction term -log p(x|z) and KL term, one value per image each, in nats."""
    params, mu, logvar = model(x.float() / 255.0, generator)
    return -log_likelihood(params, x, model.likelihood), kl_divergence(mu, logvar).sum(1)
