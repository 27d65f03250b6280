"""evaluate: the IW bound, the Bernoulli floor, active units, KL per dimension."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freyvae_cli import checkpoint
from freyvae_cli.cli import app
from freyvae_cli.evaluate import active_units, bce_floor, bernoulli_log_px, evaluate, iw_nll, iw_precision
from freyvae_cli.latent import split_images
from freyvae_cli.likelihood import log_likelihood
from freyvae_cli.speedups import native_bf16
from freyvae_cli.vae import VAE
from tests.conftest import last_json, make_faces

KEYS = {"neg_elbo", "reconstruction", "kl", "iw_nll", "bits_per_dim", "bce_floor", "excess", "kl_per_dim",
        "active_units", "split", "n_images", "likelihood", "prior"}


def test_evaluate_json_has_exactly_the_documented_keys(runner, trained, small_mat):
    r = runner.invoke(app, ["evaluate", "-c", str(trained), "--data", str(small_mat), "--iw-samples", "50",
                            "--json"])
    assert r.exit_code == 0, r.output
    out = last_json(r.stdout)
    assert set(out) == KEYS
    assert out["split"] == "test" and out["n_images"] == 12 and out["likelihood"] == "bernoulli"
    assert out["neg_elbo"] == pytest.approx(out["reconstruction"] + out["kl"])
    assert out["excess"] == pytest.approx(out["neg_elbo"] - out["bce_floor"])
    assert out["kl"] == pytest.approx(sum(out["kl_per_dim"]), rel=1e-4, abs=1e-4)
    assert out["bits_per_dim"] is None and out["excess"] > 0 and out["prior"] == "N(0, I)"
    assert "nats per image" in r.stderr


def test_iw_bound_is_tighter_than_the_elbo_and_improves_with_k(trained, small_mat):
    from freyvae_cli.data.frey import load_faces

    model, ckpt = checkpoint.load_model(trained)
    x, _ = split_images(ckpt, load_faces(small_mat), "train")
    elbo = evaluate(model, x, iw_samples=0, elbo_samples=50)["neg_elbo"]
    nll = {k: float(iw_nll(model, x, k, torch.Generator().manual_seed(1)).mean()) for k in (1, 10, 200)}
    k1 = np.mean([float(iw_nll(model, x, 1, torch.Generator().manual_seed(s)).mean()) for s in range(30)])
    assert k1 == pytest.approx(elbo, abs=0.5)  # K = 1 is the ELBO itself, up to sampling noise
    assert elbo >= nll[10] >= nll[200]
    assert elbo - nll[200] > 1e-3


def test_bce_floor_matches_numpy():
    x = torch.from_numpy(make_faces(9)).unsqueeze(1)
    p = x.numpy().astype(np.float64) / 255
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0) + np.where(p < 1, (1 - p) * np.log(1 - p), 0))
    assert bce_floor(x) == pytest.approx(h.reshape(9, -1).sum(1).mean(), rel=1e-12)


def test_active_units_finds_exactly_the_dimensions_the_model_uses():
    torch.manual_seed(0)
    model = VAE(latent_dim=6).eval()
    used = [0, 2, 5]
    with torch.no_grad():
        for d in range(6):
            if d in used:
                model.to_mu.weight[d] *= 50.0   # posterior means that move with the image
            else:
                model.to_mu.weight[d] = 0.0     # means that ignore the image ...
                model.decoder[0].weight[:, d] = 0.0  # ... and a decoder that ignores the dimension
    x = torch.from_numpy(make_faces(40)).unsqueeze(1)
    mu, _ = model.encode(x.float() / 255)
    assert active_units(mu) == 3
    assert evaluate(model, x, iw_samples=0)["active_units"] == 3


def test_discrete_likelihood_reports_bits_per_dim(runner, small_mat, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(out), "--epochs", "1", "--latent-dim", "2",
                            "--likelihood", "logistic", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "-c", str(out / "vae_final_model.pth"), "--data", str(small_mat),
                            "--iw-samples", "20", "--json"])
    res = last_json(r.stdout)
    assert res["likelihood"] == "logistic" and res["bce_floor"] is None
    assert res["bits_per_dim"]["neg_elbo"] == pytest.approx(res["neg_elbo"] / (560 * np.log(2)))
    assert 0 < res["bits_per_dim"]["iw_nll"] <= res["bits_per_dim"]["neg_elbo"] + 0.05 < 20


def test_bernoulli_shortcut_equals_the_model_likelihood():
    """iw_nll's Bernoulli sum equals log_likelihood on m copies of the images, grey and 0/255 pixels."""
    torch.manual_seed(3)
    m, b = 7, 3
    logits = torch.randn(m * b, 1, 28, 20) * 4
    x = torch.randint(0, 256, (b, 1, 28, 20), dtype=torch.uint8)
    x[0, 0, :5] = 0
    x[1, 0, :5] = 255
    expected = log_likelihood(logits, x.repeat(m, 1, 1, 1), "bernoulli").view(m, b)
    got = bernoulli_log_px(logits.view(m, b, -1), x.float().flatten(1) / 255.0)
    assert got.shape == (m, b)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_auto_precision_decodes_in_bf16_only_where_the_likelihood_tolerates_it():
    cpu = torch.device("cpu")
    for likelihood in ("bernoulli", "categorical"):
        assert iw_precision("auto", likelihood, cpu) == native_bf16(cpu)
    assert not iw_precision("auto", "logistic", cpu)  # log p moves by 1/scale: stays fp32
    assert not iw_precision("fp32", "bernoulli", cpu)
    assert iw_precision("bf16", "logistic", cpu)
    assert not iw_precision("bf16", "bernoulli", torch.device("meta"))  # not a CPU: fp32


def test_evaluate_precision_changes_only_the_iw_bound_and_says_so(runner, trained, small_mat):
    common = ["evaluate", "-c", str(trained), "--data", str(small_mat), "--iw-samples", "300", "--json"]
    res = {}
    for precision in ("fp32", "bf16"):
        r = runner.invoke(app, [*common, "--precision", precision])
        assert r.exit_code == 0, r.output
        res[precision] = last_json(r.stdout)
        assert set(res[precision]) == KEYS
        assert ("bf16" in r.stderr) == (precision == "bf16")  # the table says how iw_nll was decoded
    assert res["bf16"]["neg_elbo"] == res["fp32"]["neg_elbo"]  # the ELBO is always fp32
    assert res["bf16"]["iw_nll"] != res["fp32"]["iw_nll"]     # the bf16 decoder was used ...
    assert res["bf16"]["iw_nll"] == pytest.approx(res["fp32"]["iw_nll"], abs=0.05)  # ... and moved it little
