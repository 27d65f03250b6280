"""The fitted prior (freyvae_cli/prior.py): its closed forms against torch.distributions, the fit's
optimality, and PixelVAE's checkpoints drawing and scoring with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from freyvae_cli import checkpoint as ck
from freyvae_cli import figures, latent
from freyvae_cli.data.frey import load_faces
from freyvae_cli.prior import Prior, fit, of_checkpoint
from tests.conftest import last_json, run_freyvae


def posteriors(n: int = 300, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of n made-up faces: correlated, off-centre, of unequal spread."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g)
    mu = torch.randn(n, d, generator=g) @ mix + torch.linspace(-1, 2, d)
    return mu, torch.randn(n, d, generator=g) * 0.3 - 1.5


def expected_log_prior(prior: Prior, mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """mean_i E_q(z|x_i)[log p(z)], in closed form through the KL and q's entropy."""
    entropy = Normal(mu.double(), (0.5 * logvar.double()).exp()).entropy().sum(-1)
    return float((-prior.kl(mu.double(), logvar.double()).double() - entropy).mean())


def test_kl_and_log_density_are_torch_distributions_own():
    mu, logvar = posteriors()
    prior = fit(mu, logvar)
    reference = MultivariateNormal(prior.mean.double(), prior.cov.double())
    q = [MultivariateNormal(m.double(), torch.diag(lv.double().exp())) for m, lv in zip(mu[:20], logvar[:20],
                                                                                       strict=True)]
    expected = torch.stack([torch.distributions.kl_divergence(qi, reference) for qi in q])
    assert torch.allclose(prior.kl(mu[:20], logvar[:20]).double(), expected, rtol=1e-4, atol=1e-4)
    z = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(prior.log_density(z).double(), reference.log_prob(z.double()), atol=1e-4)
    standard = Prior(5)
    unit = MultivariateNormal(torch.zeros(5), torch.eye(5))
    assert torch.allclose(standard.log_density(z), unit.log_prob(z), atol=1e-5)
    assert torch.allclose(standard.kl(mu[:1], logvar[:1]), torch.distributions.kl_divergence(
        MultivariateNormal(mu[0], torch.diag(logvar[0].exp())), unit), atol=1e-4)


def test_the_fit_is_the_gaussian_with_the_highest_elbo_and_the_aggregate_posteriors_moments():
    mu, logvar = posteriors()
    best = fit(mu, logvar)
    score = expected_log_prior(best, mu, logvar)
    assert score > expected_log_prior(Prior(5), mu, logvar) + 1  # far better than N(0, I) here
    g = torch.Generator().manual_seed(2)
    for _ in range(20):  # any other Gaussian nearby is worse
        shift = 0.05 * torch.randn(5, generator=g)
        a = torch.eye(5) + 0.05 * torch.randn(5, 5, generator=g)
        other = Prior(5, best.mean + shift, a @ best.cov @ a.T)
        assert expected_log_prior(other, mu, logvar) < score
    draws = mu + (0.5 * logvar).exp() * torch.randn(400, *mu.shape, generator=g)  # the aggregate posterior
    flat = draws.reshape(-1, 5).double()
    assert torch.allclose(flat.mean(0).float(), best.mean, atol=0.02)
    assert torch.allclose(torch.cov(flat.T, correction=0).float(), best.cov, atol=0.05)


def test_draws_follow_the_prior_and_the_standard_ones_are_the_faces_drawn_before():
    mu, logvar = posteriors()
    prior = fit(mu, logvar)
    z = prior.draw(100_000, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), prior.mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), prior.cov, rtol=0.05, atol=0.05)
    before = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(Prior(5).draw(7, torch.Generator().manual_seed(3)), before)


def test_pixelvae_stores_its_fitted_prior_and_draws_and_scores_with_it(quick_pixelvae, trained, small_mat, tmp_path):
    pixel, data = quick_pixelvae
    model, c = ck.load_model(pixel)
    x, _ = latent.split_images(c, load_faces(data), "train")
    refit = latent.fitted_prior(model, x)
    prior = of_checkpoint(c)
    assert prior.fitted and torch.allclose(prior.mean, refit.mean, atol=1e-6) and torch.allclose(prior.cov, refit.cov,
                                                                                                 atol=1e-6)
    assert "prior" not in ck.load(trained)  # the seed model stays the seed's: N(0, I)
    fitted = latent.sample(model, 3, seed=4, prior=prior)
    standard = latent.sample(model, 3, seed=4)
    assert not np.array_equal(fitted, standard)
    r = run_freyvae("sample", "-c", str(pixel), "-n", "3", "--seed", "4", "--npy", "s.npy", "-o", "s.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "s.npy"), figures.as_uint8(fitted))
    found = last_json(run_freyvae("evaluate", "-c", str(pixel), "--data", str(data), "--split", "train",
                                  "--iw-samples", "0", "--json", cwd=tmp_path).stdout)
    mu, logvar = latent.encode(model, x)
    assert found["prior"] == "fitted to the training faces"
    assert found["kl"] == pytest.approx(float(prior.kl(mu, logvar).mean()), rel=1e-4)
    assert found["kl"] <= float(Prior(model.latent_dim).kl(mu, logvar).mean()) + 1e-3  # the fit is the best on them


def test_a_damaged_prior_in_a_checkpoint_is_one_line(quick_pixelvae, tmp_path):
    pixel, _ = quick_pixelvae
    c = ck.load(pixel)
    c["prior"]["cov"] = -c["prior"]["cov"]
    ck.save(tmp_path / "bad.pth", c)
    r = run_freyvae("sample", "-c", str(tmp_path / "bad.pth"), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not positive definite" in r.stderr, r.stderr
