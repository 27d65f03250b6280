"""The pixel likelihoods p(x|z), the KL term, and the loss: the negative ELBO, for every model.

-ELBO(x) = -E_q(z|x) log p(x|z) + KL(q(z|x) || N(0, I))   (Kingma & Welling, 2014), in nats per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from freyvae_cli.data.frey import PIXELS

LEVELS = 256  # 8-bit pixels, for the discrete likelihoods
MIXTURES = 5  # logistics in the mixture likelihood (PixelCNN++ uses 10 for three colour channels)
OUT_CHANNELS = {"bernoulli": 1, "logistic": 2, "categorical": LEVELS, "mixture": 3 * MIXTURES}


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


def mixture_log_probs(params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """log P(level) under a mixture of MIXTURES logistics discretised to 256 bins on [-1, 1], edge
    bins open (Salimans et al., 2017, "PixelCNN++"), from params (..., 3 * MIXTURES), channels
    last: mixture logits, means, log-scales; levels (..., L) integers 0..255, -> (..., L).
    Each component's bin, log(sigmoid(u) - sigmoid(l)) = l + log(expm1(u - l)) - softplus(u) - softplus(l),
    stays finite however far the bin lies from its mean."""
    logit_pi, mean, log_scale = params.float().unsqueeze(-2).split(MIXTURES, dim=-1)  # (..., 1, K) each
    inv_scale = torch.exp(-log_scale.clamp(-7.0, 7.0))  # a bin always has some width, and some mass
    centred = levels.unsqueeze(-1).float() / 127.5 - 1.0 - mean  # (..., L, K)
    upper, lower = inv_scale * (centred + 1.0 / 255.0), inv_scale * (centred - 1.0 / 255.0)
    mid = lower + torch.log(torch.expm1(inv_scale * (2.0 / 255.0))) - F.softplus(upper) - F.softplus(lower)
    edge = levels.unsqueeze(-1)
    log_bin = torch.where(edge == 0, upper - F.softplus(upper),
                          torch.where(edge == LEVELS - 1, -F.softplus(lower), mid))
    return torch.logsumexp(torch.log_softmax(logit_pi, dim=-1) + log_bin, dim=-1)


def level_log_probs(params: torch.Tensor) -> torch.Tensor:
    """The mixture's log P of all 256 levels, (..., 256), from params (..., 3 * MIXTURES), channels last:
    what the 256-way categorical's logits are, for drawing a pixel."""
    levels = torch.arange(LEVELS, device=params.device)
    return mixture_log_probs(params, levels.expand(*params.shape[:-1], LEVELS))


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
    if likelihood == "mixture":
        return mixture_log_probs(params.permute(0, 2, 3, 1), x.long().permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
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
    elif likelihood == "mixture":
        probs = torch.exp(level_log_probs(params.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    else:
        grid = levels.view(1, LEVELS, 1, 1).expand(params.shape[0], LEVELS, *params.shape[2:])
        probs = torch.exp(_logistic_log_probs(params, grid))
    return (probs * levels.view(1, LEVELS, 1, 1)).sum(1, keepdim=True) / (LEVELS - 1)


def bits_per_dim(nats: float | None) -> float | None:
    """A loss in nats per 28x20 image as bits per pixel: nats / (560 ln 2); None stays None."""
    return None if nats is None else nats / (PIXELS * math.log(2))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, (B, D): the closed form of Kingma & Welling."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def neg_elbo(model, x: torch.Tensor, generator: torch.Generator | None = None):
    """Reconstruction term -log p(x|z) and KL term, one value per image each, in nats, for uint8
    images x; an autoregressive decoder is teacher-forced on x itself."""
    params, mu, logvar = model(x.float() / 255.0, generator)
    return -log_likelihood(params, x, model.likelihood), kl_divergence(mu, logvar).sum(1)
