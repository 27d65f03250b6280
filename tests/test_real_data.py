"""End to end on the real Frey Face file from ../shared/data: 2 epochs, then every command."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import REAL_DATA, last_json, run_freyvae

pytestmark = pytest.mark.skipif(not REAL_DATA.exists(), reason="needs ../shared/data/frey_rawface.mat")


def test_two_epochs_on_the_real_data_then_every_command(tmp_path):
    env = {"FREYVAE_DATA": str(REAL_DATA)}
    r = run_freyvae("train", "--epochs", "2", "--json", cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    result = last_json(r.stdout)
    assert result["epochs"] == 2
    assert 340 < result["test_loss"] < 365  # nats per image; about 348 after 30 epochs
    assert "epoch   2/2" in r.stderr  # not a terminal: one plain line per epoch
    ckpt = torch.load(tmp_path / "runs" / "vae_final_model.pth", weights_only=True)
    assert (len(ckpt["split"]["train"]), len(ckpt["split"]["test"])) == (1572, 393)
    assert ckpt["data_hash"].startswith("fbd70c2c")

    for args, name, size in (
        (["reconstruct"], "reconstructions.png", (10 * 80 + 11 * 2, 12 + 4 * 2 + 2 * 112 + 3 * 2)),
        (["sample", "-n", "10"], "generated_samples.png", (10 * 80 + 11 * 2, 112 + 2 * 2)),
        (["traverse", "--dim", "2"], "latent_variations.png", None),
        (["project"], "latent_space_2d.png", None),
    ):
        r = run_freyvae(*args, "--json", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        assert last_json(r.stdout)["out"] == name
        img = Image.open(tmp_path / name)
        if size:
            assert img.size == size
        assert img.size[0] > 300
    r = run_freyvae("evaluate", "--iw-samples", "20", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    ev = last_json(r.stdout)
    assert ev["n_images"] == 393 and ev["bce_floor"] == pytest.approx(337.07, abs=0.05)
