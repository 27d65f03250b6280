"""Honest numbers: the ELBO, the importance-weighted bound, the Bernoulli floor, active units.

All values are nats per image: summed over the 560 pixels, averaged over images.
iw_nll = -mean_x log (1/K sum_k p(x, z_k) / q(z_k | x)),  z_k ~ q(z|x)   (Burda et al., 2016).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from freyvae_cli.likelihood import bits_per_dim, kl_divergence, log_likelihood
from freyvae_cli.prior import Prior
from freyvae_cli.speedups import keep_freed_memory, native_bf16
from freyvae_cli.vae import VAE

LOG_2PI = math.log(2 * math.pi)
INACTIVE_KL = 0.05  # nats: below this a dimension barely changes the decoded face (see traverse)
# Likelihoods whose log p(x|z) moves at most as much as the logits do (|d log p / d logit| <= 1 per
# pixel for the Bernoulli, <= 2 summed over the softmax): there decoding with the hidden layers in
# bf16 moved iw_nll by far less than its Monte Carlo spread between seeds (docs/models.md, "Numbers"). The
# discretised logistic's moves by 1/scale: bf16 moved its bound by about its spread, so it stays fp32.
BF16_TOLERANT = ("bernoulli", "categorical")


def bce_floor(x: torch.Tensor) -> float:
    """Mean over images of sum_i H(x_i/255): the cross-entropy no Bernoulli decoder can beat."""
    p = x.double() / 255.0
    h = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))
    return float(h.flatten(1).sum(1).mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across the images: Var_x E_q[z_d] > 0.01."""
    return int((mu.var(0, unbiased=True) > threshold).sum())


def iw_precision(precision: str, likelihood: str, device: torch.device, autoregressive: bool = False) -> bool:
    """Whether the importance-weighted bound decodes with the decoder's hidden layers in bf16: on
    CPUs, when asked for, or (auto) where bf16 is native and the likelihood leaves the bound as it
    is. GPUs decode fast enough in fp32; an autoregressive decoder's bound is always fp32."""
    if device.type != "cpu" or precision == "fp32" or autoregressive:
        return False
    return precision == "bf16" or (likelihood in BF16_TOLERANT and native_bf16(device))


def bernoulli_log_px(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of model.log_likelihood for logits (m, B, 560) of m draws for each of B images,
    targets (B, 560) in [0, 1]: sum_i t_i l_i - softplus(l_i), the same value without m copies of x."""
    return torch.einsum("mbi,bi->mb", logits, target) - F.softplus(logits).sum(-1)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@torch.no_grad()
def iw_nll(model: VAE, x: torch.Tensor, k: int, gen: torch.Generator, decode_batch: int = 1024,
           advance: Callable[[int], None] = lambda n: None, bf16_hidden: bool = False,
           prior: Prior | None = None) -> torch.Tensor:
    """-log (1/K sum_k w_k) per image, with K importance samples drawn in large batches; log p(z)
    under `prior` (N(0, I) unless given)."""
    prior = prior or Prior(model.latent_dim)
    device = next(model.parameters()).device
    out = []
    images_per_chunk = max(1, min(len(x), decode_batch // min(k, decode_batch)))
    for i in range(0, len(x), images_per_chunk):
        xb = x[i:i + images_per_chunk].to(device)
        mu, logvar = model.encode(xb.float() / 255.0)
        std = torch.exp(0.5 * logvar)
        target = xb.float().flatten(1) / 255.0
        per_draw = max(1, decode_batch // len(xb))
        log_ws = []
        for j in range(0, k, per_draw):
            m = min(per_draw, k - j)
            eps = torch.randn((m, *mu.shape), generator=gen, device=device)
            z = mu + std * eps                                                  # (m, B, D)
            # image b of draw j at row j * B + b, like z.flatten(0, 1); the Bernoulli sum needs no copies
            xm = xb.repeat(m, 1, 1, 1) if model.autoregressive or model.likelihood != "bernoulli" else None
            params = model.decode(z.flatten(0, 1), xm.float() / 255.0 if model.autoregressive else None,
                                  bf16_hidden)
            if model.likelihood == "bernoulli":
                log_px = bernoulli_log_px(params.reshape(m, len(xb), -1), target)
            else:  # teacher-forced for an autoregressive decoder: exact log p(x|z)
                log_px = log_likelihood(params, xm, model.likelihood).view(m, -1)
            log_pz = prior.log_density(z)
            log_ws.append(log_px + log_pz - _log_normal(z, mu, logvar))
            advance(m * len(xb))
        out.append(math.log(k) - torch.logsumexp(torch.cat(log_ws), dim=0))
    return torch.cat(out).cpu()


@torch.no_grad()
def reconstruction_term(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, samples: int,
                        gen: torch.Generator) -> torch.Tensor:
    """-log p(x|z) of each uint8 image x (on the model's device) in nats, averaged over `samples`
    draws z ~ q(z|x) = N(mu, exp(logvar)): the ELBO's one term that needs draws (its KL is exact)."""
    x01 = x.float() / 255.0
    std = torch.exp(0.5 * logvar)
    rec = torch.zeros(len(x), device=x.device)
    for _ in range(samples):
        z = mu + std * torch.randn(mu.shape, generator=gen, device=x.device)
        rec -= log_likelihood(model.decode(z, x01), x, model.likelihood) / samples
    return rec


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, iw_samples: int = 1000, elbo_samples: int = 10, seed: int = 0,
             advance: Callable[[int], None] = lambda n: None, bf16_hidden: bool = False,
             prior: Prior | None = None) -> dict:
    """Every figure of `freyvae evaluate` for uint8 images x (n, 1, 28, 20), under the model's prior
    (N(0, I) unless a fitted one is given; kl_per_dim and active units are always against N(0, 1)).
    The ELBO is always computed in fp32; bf16_hidden is for the importance-weighted bound
    (iw_precision says when)."""
    prior = prior or Prior(model.latent_dim)
    keep_freed_memory()
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    xd = x.to(device)
    x01 = xd.float() / 255.0
    mu, logvar = model.encode(x01)
    kl_dims = kl_divergence(mu, logvar).mean(0).cpu()
    rec = float(reconstruction_term(model, xd, mu, logvar, elbo_samples, gen).mean())
    kl = float(prior.kl(mu, logvar).mean())
    result = {
        "neg_elbo": rec + kl,
        "reconstruction": rec,
        "kl": kl,
        "iw_nll": float(iw_nll(model, x, iw_samples, gen, advance=advance, bf16_hidden=bf16_hidden,
                               prior=prior).mean())
        if iw_samples else None,
        "bits_per_dim": None,
        "bce_floor": None,
        "excess": None,
        "kl_per_dim": [round(float(v), 6) for v in kl_dims],
        "active_units": active_units(mu.cpu()),
        "split": None,
        "n_images": len(x),
        "likelihood": model.likelihood,
        "prior": prior.name,
    }
    if model.likelihood == "bernoulli":
        result["bce_floor"] = bce_floor(x)
        result["excess"] = result["neg_elbo"] - result["bce_floor"]
    else:
        result["bits_per_dim"] = {"neg_elbo": bits_per_dim(result["neg_elbo"]),
                                  "iw_nll": bits_per_dim(result["iw_nll"])}
    return result


def mean_kl_order(kl_dims: np.ndarray, threshold: float = INACTIVE_KL) -> tuple[list[int], list[int]]:
    """Dimensions sorted by KL (most informative first), and those under `threshold` nats."""
    order = [int(d) for d in np.argsort(-kl_dims, kind="stable")]
    return [d for d in order if kl_dims[d] >= threshold], [d for d in order if kl_dims[d] < threshold]
