"""The prior p(z) that faces are drawn from and scored under: N(0, I), or for PixelVAE a Gaussian
fitted to the training faces once the model is trained.

Every model trains with p(z) = N(0, I). Its training faces' posteriors q(z|x) do not fill that
ball evenly: z drawn from N(0, I) lands where no face's posterior lies, and PixelVAE's decoder
draws such z as faces that give themselves away. Given the trained encoder and decoder, the
Gaussian prior with the highest ELBO on the training faces has a closed form, the moments of their
aggregate posterior (1/N) sum_i q(z|x_i) (it maximises sum_i E_q(z|x_i)[log N(z; m, S)]):

    m = mean_i mu_i,    S = mean_i [diag(sigma_i^2) + (mu_i - m)(mu_i - m)^T]

(the aggregate posterior is the optimal prior: Hoffman & Johnson, "ELBO surgery", 2016; fitting a
density to the codes after training to draw from: Ghosh et al., ICLR 2020, "ex-post density
estimation"). `train` stores it in every PixelVAE checkpoint; `sample`, the realism test and
`evaluate` (the KL and the importance-weighted bound) use it. A checkpoint without one has N(0, I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from freyvae_cli.likelihood import kl_divergence

FITTED_FOR = ("pixelvae",)  # the seed model stays the seed's: N(0, I)


@dataclass
class Prior:
    """N(mean, cov) over the latent space; mean None is the standard normal N(0, I)."""

    dim: int
    mean: torch.Tensor | None = None
    cov: torch.Tensor | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def name(self) -> str:
        """What `evaluate` and `info` call it."""
        return "fitted to the training faces" if self.fitted else "N(0, I)"

    @cached_property
    def chol(self) -> torch.Tensor:
        """The Cholesky factor L of the covariance, S = L L^T, in float64 (computed once)."""
        return torch.linalg.cholesky(self.cov.double())

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws (n, D): the standard normal's eps itself, else mean + L eps with S = L L^T."""
        eps = torch.randn(n, self.dim, generator=generator)
        if not self.fitted:
            return eps
        return self.mean + eps @ self.chol.float().T

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) over the last dimension of z."""
        if not self.fitted:
            return -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(-1)
        chol = self.chol.to(z)
        white = torch.linalg.solve_triangular(chol, (z - self.mean.to(z)).unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (self.dim * math.log(2 * math.pi) + white.pow(2).sum(-1)) - chol.diagonal().log().sum()

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag exp(logvar)) || p) of each row, in nats, in closed form."""
        if not self.fitted:
            return kl_divergence(mu, logvar).sum(-1)
        precision = torch.cholesky_inverse(self.chol)
        d = mu.double() - self.mean.double()
        trace = (logvar.double().exp() * precision.diagonal()).sum(-1)
        logdet = 2 * self.chol.diagonal().log().sum()
        return (0.5 * (trace + (d @ precision * d).sum(-1) - self.dim + logdet - logvar.double().sum(-1))).to(mu.dtype)


def fit(mu: torch.Tensor, logvar: torch.Tensor) -> Prior:
    """The Gaussian with the highest ELBO on faces with posteriors N(mu_i, diag exp(logvar_i))."""
    mu64 = mu.double()
    mean = mu64.mean(0)
    centred = mu64 - mean
    cov = centred.T @ centred / len(mu64) + torch.diag(logvar.double().exp().mean(0))
    return Prior(mu.shape[1], mean.float(), ((cov + cov.T) / 2).float())  # symmetric to the last bit


def of_checkpoint(ckpt: dict) -> Prior:
    """The prior a checkpoint's faces are drawn from: its fitted one, else N(0, I)."""
    stored = ckpt.get("prior")
    dim = ckpt["config"]["latent_dim"]
    return Prior(dim) if stored is None else Prior(dim, stored["mean"], stored["cov"])


def as_state(prior: Prior) -> dict:
    """What a checkpoint stores of a fitted prior."""
    return {"mean": prior.mean.contiguous(), "cov": prior.cov.contiguous()}


def problem(stored: object, dim: int) -> str | None:
    """What is wrong with a checkpoint's stored prior, or None (also where there is none)."""
    if stored is None:
        return None
    if not isinstance(stored, dict) or set(stored) != {"mean", "cov"}:
        return "expected its mean and covariance"
    mean, cov = stored["mean"], stored["cov"]
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in (mean, cov)) \
            or tuple(mean.shape) != (dim,) or tuple(cov.shape) != (dim, dim):
        return f"expected a float32 mean of {dim} and a {dim} x {dim} covariance"
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()) or not torch.equal(cov, cov.T):
        return "its numbers are not finite, or its covariance is not symmetric"
    if torch.linalg.cholesky_ex(cov.double()).info != 0:
        return "its covariance is not positive definite"
    return None
