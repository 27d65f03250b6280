"""The stronger model and the literature protocol: the split, the PixelCNN's order, sampling,
early stopping, resume, and every command on a tiny PixelVAE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freyvae_cli import checkpoint
from freyvae_cli.cli import app
from freyvae_cli.data.frey import literature_split
from freyvae_cli.pixelvae.model import PixelVAE
from freyvae_cli.train import EVAL_SEED_OFFSET, evaluate_loss
from tests.conftest import last_json, make_faces, write_mat

TINY = ["--model", "pixelvae", "--split", "literature", "--latent-dim", "4", "--batch-size", "16", "--quiet"]


@pytest.mark.parametrize("seed", [123, 321, 231])
def test_literature_split_is_the_reference_procedure(seed):
    """Berg et al.'s load_freyfaces: np.random.seed(s); np.random.shuffle(rows); 1565/200/200."""
    rows = np.random.default_rng(0).integers(0, 256, (1965, 560), dtype=np.uint8)  # every row distinct
    data = rows.copy()
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        np.random.shuffle(data)
    finally:
        np.random.set_state(saved)
    split = literature_split(len(rows), seed)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1565, 200, 200]
    assert np.array_equal(rows[split["train"]], data[:1565])
    assert np.array_equal(rows[split["val"]], data[1565:1765])
    assert np.array_equal(rows[split["test"]], data[1765:])


def _tiny_model(seed: int = 0) -> PixelVAE:
    torch.manual_seed(seed)
    model = PixelVAE(latent_dim=3, channels=8, blocks=2).eval()
    for p in model.parameters():  # large weights, so that every input visibly moves the logits
        p.data.normal_(0, 0.3)
    return model


def test_changing_a_pixel_leaves_the_logits_before_it_unchanged():
    model = _tiny_model()
    z = torch.randn(1, 3)
    x = torch.rand(1, 1, 28, 20)
    with torch.no_grad():
        base = model.decode(z, x).flatten(2)  # (1, 256, 560) in raster order
        for j in (0, 45, 287, 559):
            y = x.clone()
            y.view(-1)[j] = 1.0 - y.view(-1)[j]
            moved = (model.decode(z, y).flatten(2) - base).abs().amax(1)[0]  # per pixel
            assert moved[:j + 1].max() == 0  # pixel j's own logits and all before it: unchanged
            if j < 559:
                assert moved[j + 1:].max() > 1e-4  # pixels after it see it


def test_sampling_fills_pixels_in_order_and_matches_teacher_forcing():
    """Each pixel is the inverse CDF of its logits given the pixels drawn before it: the windowed
    passes of sample() equal one teacher-forced pass over the finished image."""
    model = _tiny_model(1)
    z = torch.randn(3, 3)
    u = torch.rand(1, 1, 28, 20, generator=torch.Generator().manual_seed(0))
    x = model.sample(z, u)
    assert x.dtype == torch.uint8 and x.shape == (3, 1, 28, 20)
    with torch.no_grad():
        cdf = torch.softmax(model.decode(z, x.float() / 255.0), dim=1).cumsum(1)
    expected = (cdf < u).sum(1, keepdim=True).clamp(max=255)
    assert torch.equal(expected.to(torch.uint8), x)
    later = u.clone()
    later.view(-1)[300:] = torch.rand(260, generator=torch.Generator().manual_seed(1))
    y = model.sample(z, later)  # other noise from pixel 300 on: the first 300 pixels stay
    assert torch.equal(y.flatten(1)[:, :300], x.flatten(1)[:, :300])
    assert not torch.equal(y, x)


def test_early_stopping_keeps_the_best_validation_model(runner, tmp_path):
    """Train faces dark, validation faces bright: the better the model fits the training faces,
    the worse it does on validation, so validation gets worse after the first epochs and the run
    stops `patience` epochs after its best one; that epoch's model is the one kept."""
    n = 60
    split = literature_split(n, 7)
    faces = make_faces(n)
    faces[split["train"]] //= 4
    faces[split["val"]] = 255 - faces[split["val"]] // 4
    data = write_mat(tmp_path / "adversarial.mat", faces)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--split", "literature",
                            "--split-seed", "7", "--epochs", "40", "--patience", "3", "--latent-dim", "3",
                            "--batch-size", "8", "--lr", "3e-3", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    result = last_json(r.stdout)
    history = json.loads((out / "history.json").read_text())
    best = min(history, key=lambda h: h["val_loss"])
    assert result["stopped_early"] and result["epochs"] == best["epoch"] + 3 < 40
    assert result["best_epoch"] == best["epoch"] and result["best_val_loss"] == best["val_loss"]
    assert result["best_test_loss"] == best["test_loss"]
    assert history[-1]["val_loss"] > best["val_loss"]
    kept = checkpoint.load(out / "vae_best_model.pth")
    assert kept["epoch"] == best["epoch"]
    model = checkpoint.build_model(kept, out / "vae_best_model.pth")
    x_val = torch.from_numpy(faces[kept["split"]["val"].numpy()]).unsqueeze(1)
    rec, kl = evaluate_loss(model, x_val, kept["config"]["seed"] + EVAL_SEED_OFFSET)
    assert rec + kl == pytest.approx(best["val_loss"], rel=1e-5)  # the same weights as at that epoch


def test_cosine_schedule_runs_from_lr_to_zero():
    from freyvae_cli.config import TrainConfig
    from freyvae_cli.train import learning_rate

    cfg = TrainConfig(lr=2e-3, lr_schedule="cosine", epochs=10)
    assert learning_rate(cfg, 1, 0, 5) == pytest.approx(2e-3)
    assert learning_rate(cfg, 6, 0, 5) == pytest.approx(1e-3)  # half way: 5 of 10 epochs done
    assert learning_rate(cfg, 10, 5, 5) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(lr=2e-3, epochs=10), 6, 0, 5) == 2e-3  # constant


def test_patience_needs_a_validation_split(runner, small_mat, tmp_path):
    r = runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(tmp_path), "--patience", "3"])
    assert r.exit_code == 2 and "--split literature" in r.stderr


def test_pixelvae_refuses_another_likelihood(runner, small_mat, tmp_path):
    r = runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(tmp_path), "--model", "pixelvae",
                            "--likelihood", "logistic"])
    assert r.exit_code == 2 and "categorical" in r.stderr


def test_pixelvae_resumes_bit_for_bit(runner, small_mat, tmp_path, monkeypatch):
    """A real SIGINT inside epoch 2 of 4 (cosine schedule, dropout, KL warm-up, validation), then a
    resume: the same weights, history and best-validation model as a run never stopped."""
    import os
    import signal

    from freyvae_cli import train as train_module

    real = train_module.kl_weight

    def signalling(cfg, epoch, step, n_steps):
        if (epoch, step) == (2, 1):
            os.kill(os.getpid(), signal.SIGINT)
        return real(cfg, epoch, step, n_steps)

    base = ["train", "--data", str(small_mat), *TINY, "--epochs", "4", "--kl-warmup", "3", "--lr-schedule", "cosine",
            "--dropout", "0.2"]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "straight")]).exit_code == 0
    monkeypatch.setattr(train_module, "kl_weight", signalling)
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "cut")]).exit_code == 130
    monkeypatch.setattr(train_module, "kl_weight", real)
    cut = tmp_path / "cut" / "interrupted.pth"
    assert torch.load(cut, weights_only=True)["progress"]["step"] == 2
    r = runner.invoke(app, ["train", "--resume", str(cut), "--epochs", "6"])  # the schedule spans 4 epochs
    assert r.exit_code == 2 and "cosine" in r.stderr and "--epochs 4" in r.stderr
    r = runner.invoke(app, ["train", "--resume", str(cut), "--quiet"])
    assert r.exit_code == 0, r.output
    for name in ("vae_final_model.pth", "vae_best_model.pth"):
        a, b = (torch.load(tmp_path / d / name, weights_only=True) for d in ("straight", "cut"))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["epoch"] == b["epoch"]
    assert a["config"]["model"] == "pixelvae" and set(a["split"]) == {"train", "val", "test"}
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


@pytest.fixture(scope="module")
def tiny_pixelvae(tmp_path_factory):
    from typer.testing import CliRunner

    tmp = tmp_path_factory.mktemp("pixelvae")
    data = write_mat(tmp / "faces.mat")
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp / "run"), *TINY, "--epochs", "2",
                                 "--json"])
    assert r.exit_code == 0, r.output
    return tmp / "run" / "vae_best_model.pth", data


@pytest.mark.parametrize("command", [
    ["reconstruct", "-n", "3"], ["reconstruct", "-n", "2", "--split", "val"], ["sample", "-n", "3"],
    ["traverse", "--steps", "3"], ["interpolate", "--steps", "3"], ["manifold", "--grid", "2"],
    ["manifold", "--pca", "--grid", "2"], ["project"],
])
def test_every_picture_command_runs_on_a_tiny_pixelvae(runner, tiny_pixelvae, tmp_path, command):
    ckpt, data = tiny_pixelvae
    out = tmp_path / "out.png"
    extra = [] if command[0] == "sample" else ["--data", str(data)]
    r = runner.invoke(app, [*command, "-c", str(ckpt), *extra, "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(out) as image:
        assert image.size[0] > 20 and image.size[1] > 28


def test_evaluate_and_info_on_a_tiny_pixelvae(runner, tiny_pixelvae):
    ckpt, data = tiny_pixelvae
    r = runner.invoke(app, ["evaluate", "-c", str(ckpt), "--data", str(data), "--iw-samples", "7", "--json"])
    assert r.exit_code == 0, r.output
    ev = last_json(r.stdout)
    bits = ev["bits_per_dim"]
    assert ev["likelihood"] == "categorical" and len(ev["kl_per_dim"]) == 4
    assert bits["iw_nll"] <= bits["neg_elbo"] + 0.05  # the IW bound is the tighter one (up to noise)
    assert bits["neg_elbo"] == pytest.approx(ev["neg_elbo"] / (560 * np.log(2)))
    r = runner.invoke(app, ["info", "-c", str(ckpt), "--json"])
    assert r.exit_code == 0, r.output
    info = last_json(r.stdout)
    assert info["config"]["model"] == "pixelvae" and info["best_val_epoch"] == info["epoch"]
    assert sum(info["split"].values()) == 60 and set(info["split"]) == {"train", "val", "test"}


def test_iw_bound_of_the_autoregressive_decoder_is_teacher_forced_and_exact():
    """With K = 1 the bound is one draw of the ELBO's integrand: log p(x|z) + log p(z) - log q(z|x),
    where log p(x|z) is the sum of the teacher-forced pixel log-probabilities."""
    from freyvae_cli.evaluate import LOG_2PI, iw_nll
    from freyvae_cli.likelihood import log_likelihood

    model = _tiny_model(2)
    x = torch.from_numpy(make_faces(4)).unsqueeze(1)
    got = iw_nll(model, x, 1, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        mu, logvar = model.encode(x.float() / 255.0)
        eps = torch.randn((1, *mu.shape), generator=gen)[0]
        z = mu + torch.exp(0.5 * logvar) * eps
        log_px = log_likelihood(model.decode(z, x.float() / 255.0), x, "categorical")
        log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
        log_q = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)
    assert torch.allclose(got, -(log_px + log_pz - log_q), rtol=1e-5)


def test_traverse_on_an_untrained_model_draws_rows(runner, small_mat, tmp_path):
    """A model whose every dimension is inactive still gets a picture, and a note saying so."""
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(out), "--epochs", "1",
                            "--lr", "1e-9", "--latent-dim", "4", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["traverse", "-c", str(out / "vae_final_model.pth"), "--data", str(small_mat),
                            "-o", str(tmp_path / "t.png"), "--steps", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert "inactive" in r.stderr and "almost no information" in r.stderr
    assert len(last_json(r.stdout)["dims"]) == 4 and (tmp_path / "t.png").stat().st_size > 0
