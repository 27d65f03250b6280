"""The VAE's shapes and the loss, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from freyvae_cli.likelihood import LEVELS, kl_divergence, mean_image, neg_elbo, pixel_log_probs
from freyvae_cli.speedups import TapsConvTranspose2d, transposed_conv_by_taps
from freyvae_cli.vae import LOGVAR_MAX, LOGVAR_MIN, VAE
from tests.reference import relu_then_pool, transposed_conv_as


@pytest.mark.parametrize("likelihood,channels", [("bernoulli", 1), ("logistic", 2), ("categorical", 256)])
def test_shapes(likelihood, channels):
    model = VAE(latent_dim=20, likelihood=likelihood)
    x = torch.rand(5, 1, 28, 20)
    h = model.encoder(x)
    assert h.shape == (5, 768)  # 128 x 3 x 2, the seed's "dense 768"
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 20)
    params = model.decode(mu)
    assert params.shape == (5, channels, 28, 20)
    assert mean_image(params, likelihood).shape == (5, 1, 28, 20)
    m = mean_image(params, likelihood)
    assert (m >= 0).all() and (m <= 1).all()


def test_seed_architecture_layers():
    model = VAE()
    convs = [m.out_channels for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.encoder if isinstance(m, torch.nn.MaxPool2d)]
    deconvs = [m.out_channels for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs == [32, 64, 128] and len(pools) == 3
    assert deconvs == [64, 32, 1]
    assert model.decoder[0].out_features == 768


# (in, out, kernel, stride, padding, input size): the model's first and last transposed
# convolutions, then shapes it does not use, with a stride that is not 2 and kernels that overlap.
TAPS_CASES = [(128, 64, 3, 2, 0, (3, 2)), (32, 1, 4, 2, 1, (14, 10)), (5, 3, 4, 2, 1, (4, 3)),
              (4, 2, 3, 1, 1, (5, 4)), (3, 2, 5, 3, 2, (3, 4))]


@pytest.mark.parametrize("cin,cout,k,s,p,size", TAPS_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_taps_transposed_convolution_equals_torch(cin, cout, k, s, p, size, channels_last):
    """Inference by taps gives torch's result; with gradients on, the layer is torch's own."""
    torch.manual_seed(5)
    ours = TapsConvTranspose2d(cin, cout, k, stride=s, padding=p)
    rng = torch.get_rng_state()
    ref = transposed_conv_as(ours, torch.nn.ConvTranspose2d)
    assert torch.equal(torch.get_rng_state(), rng)  # the benchmark's plain loop keeps its random stream
    assert type(ref) is torch.nn.ConvTranspose2d and ref.weight is ours.weight
    x = torch.randn(6, cin, *size)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = ref(x), transposed_conv_by_taps(x, ours)
        assert torch.equal(ours(x), got)  # inference goes by taps
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours(x), ref(x))  # gradients on: torch's kernels, bit for bit


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic", "categorical"])
def test_decoder_computes_the_same_for_inference_and_training(likelihood):
    torch.manual_seed(2)
    model = VAE(latent_dim=5, likelihood=likelihood).to(memory_format=torch.channels_last)
    z = torch.randn(37, 5) * 2
    with torch.no_grad():
        fast = model.decode(z)
    assert torch.allclose(fast, model.decode(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic", "categorical"])
def test_bf16_hidden_layers_move_the_decoder_output_by_bf16_rounding_only(likelihood):
    """The importance-weighted bound's fast decoder: close to fp32 (hidden layers rounded to bf16's
    8 bits), not equal to it (the bf16 path is taken), and its last layer's output stays fp32."""
    torch.manual_seed(5)
    model = VAE(latent_dim=5, likelihood=likelihood).to(memory_format=torch.channels_last).eval()
    z = torch.randn(64, 5) * 2
    with torch.no_grad():
        exact, fast = model.decode(z), model.decode(z, bf16_hidden=True)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    err = (fast - exact).abs().max().item()
    assert 0 < err < 2e-2 * exact.abs().max().item()


def test_pooling_before_relu_is_the_seeds_relu_then_pool_exactly():
    """Same outputs and the same weight gradients, bit for bit, as the seed's conv-ReLU-pool order."""
    torch.manual_seed(4)
    model = VAE()
    seed_order = relu_then_pool(model.encoder)
    assert [type(m).__name__ for m in seed_order][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    x = torch.rand(8, 1, 28, 20)
    g = torch.randn(8, 768)
    ours = model.encoder(x)
    grads_ours = torch.autograd.grad(ours, list(seed_order.parameters()), g)
    theirs = seed_order(x)
    grads_theirs = torch.autograd.grad(theirs, list(seed_order.parameters()), g)
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(grads_ours, grads_theirs, strict=True))
    assert (ours == 0).any()  # the ReLUs did cut something: the comparison covers that case


def test_bernoulli_loss_matches_hand_computation():
    """BCE summed over pixels + analytic KL, averaged over images, computed by hand on 2 images."""
    torch.manual_seed(0)
    model = VAE(latent_dim=3)
    x = torch.randint(0, 256, (2, 1, 28, 20), dtype=torch.uint8)
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.no_grad():
        rec, kl = neg_elbo(model, x, gen_a)
        mu, logvar = model.encode(x.float() / 255)

    target = x.double() / 255
    eps = torch.randn(mu.shape, generator=gen_b)
    z = mu + torch.exp(0.5 * logvar) * eps
    with torch.no_grad():
        p = torch.sigmoid(model.decode(z).double())
    hand_rec = [-(target[i] * torch.log(p[i]) + (1 - target[i]) * torch.log(1 - p[i])).sum().item() for i in range(2)]
    hand_kl = [sum(-0.5 * (1 + logvar[i, d] - mu[i, d] ** 2 - math.exp(logvar[i, d])) for d in range(3)).item()
               for i in range(2)]
    assert rec.tolist() == pytest.approx(hand_rec, rel=1e-5)
    assert kl.tolist() == pytest.approx(hand_kl, rel=1e-5, abs=1e-6)
    assert 300 < sum(hand_rec) / 2 < 600  # about 560 * ln 2 for an untrained model on random pixels


def test_kl_is_zero_at_the_prior_and_clamped():
    assert kl_divergence(torch.zeros(1, 4), torch.zeros(1, 4)).sum() == 0
    model = VAE(latent_dim=2)
    with torch.no_grad():
        model.to_logvar.bias.fill_(1e4)
    _, logvar = model.encode(torch.rand(1, 1, 28, 20))
    assert logvar.max() == LOGVAR_MAX
    with torch.no_grad():
        model.to_logvar.bias.fill_(-1e4)
    _, logvar = model.encode(torch.rand(1, 1, 28, 20))
    assert logvar.min() == LOGVAR_MIN
    assert torch.isfinite(kl_divergence(torch.zeros(1, 2), torch.full((1, 2), LOGVAR_MAX))).all()


@pytest.mark.parametrize("likelihood", ["logistic", "categorical"])
def test_discrete_likelihoods_sum_to_one_over_256_levels(likelihood):
    torch.manual_seed(1)
    channels = 2 if likelihood == "logistic" else LEVELS
    params = torch.randn(3, channels, 28, 20) * 2
    if likelihood == "logistic":
        params[:, 1] = torch.empty(3, 28, 20).uniform_(-6, 1)  # log-scales from sharp to broad
    total = torch.zeros(3, 1, 28, 20, dtype=torch.float64)
    for level in range(LEVELS):
        x = torch.full((3, 1, 28, 20), level, dtype=torch.uint8)
        lp = pixel_log_probs(params, x, likelihood)
        total += lp.double().exp()
    assert torch.allclose(total, torch.ones_like(total), atol=2e-3)
