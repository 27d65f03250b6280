"""`freyvae traverse --pca`: rows along the principal directions of the test faces' latent means."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent
from freyvae_cli.cli import app
from freyvae_cli.data.frey import load_faces
from tests.conftest import last_json


def test_rows_follow_the_principal_directions(runner, trained, small_mat, tmp_path):
    out = tmp_path / "pca.png"
    r = runner.invoke(app, ["traverse", "-c", str(trained), "--data", str(small_mat), "--pca", "--k", "3",
                            "--steps", "5", "--range", "2", "--scale", "1", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    payload = last_json(r.stdout)
    assert payload["directions"] == ["pc1", "pc2", "pc3"] and payload["method"] == "pca"
    share = payload["explained_variance"]
    assert share == sorted(share, reverse=True) and 0 < sum(share) <= 1 + 1e-9
    assert "principal directions pc1, pc2, pc3" in r.stderr

    model, ckpt = ck.load_model(trained)
    x, _ = latent.split_images(ckpt, load_faces(small_mat), "test")
    mu = latent.encode(model, x)[0]
    directions, _ = latent.principal_directions(model, latent.encode(model, x)[0], 3)
    # one standard deviation of the test means along each unit axis
    axes = directions / directions.norm(dim=1, keepdim=True)
    spread = ((mu - mu.mean(0)) @ axes.T).std(0)
    assert torch.allclose(directions.norm(dim=1), spread, rtol=1e-4)
    # the last row's right end: test face 0's mean plus two standard deviations along PC 3
    expected = latent.decode(model, (mu[0] + 2 * directions[2]).unsqueeze(0))[0]
    img = np.asarray(Image.open(out).convert("L"))
    tile = img[-2 - 28:-2, -2 - 20:-2]  # bottom-right face, inside the 2-pixel separator
    assert np.abs(tile.astype(int) - np.round(expected * 255).astype(int)).max() <= 1


def test_bad_pca_options_get_one_line_and_exit_2(runner, trained, small_mat, tmp_path):
    base = ["traverse", "-c", str(trained), "--data", str(small_mat), "-o", str(tmp_path / "t.png")]
    for extra, words in ((["--pca", "--k", "5"], "--k 5 is outside 1..4"),
                         (["--k", "2"], "add --pca"),
                         (["--pca", "--dim", "0"], "either --dim or --pca")):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "t.png").exists()


def test_a_one_dimensional_model_has_no_directions_to_span(runner, small_mat, tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", str(small_mat), "--out", str(out), "--epochs", "1",
                               "--latent-dim", "1", "--quiet"]).exit_code == 0
    r = runner.invoke(app, ["traverse", "-c", str(out / "vae_final_model.pth"), "--data", str(small_mat), "--pca",
                            "-o", str(tmp_path / "t.png")])
    assert r.exit_code == 2 and "two or more dimensions" in r.stderr and r.stderr.count("\n") == 1
