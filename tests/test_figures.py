"""Pictures: the traversal picks the highest-KL dimensions; grids and labels; terminal progress."""

from __future__ import annotations

import torch
from PIL import Image

from freyvae_cli import checkpoint
from freyvae_cli.cli import app
from freyvae_cli.figures import face_grid
from tests.conftest import last_json, run_in_pty


def _known_kl_checkpoint(trained, tmp_path):
    """A model whose posterior is the same for every face: mu = (0, 2, 0.5, 1), var = 1.

    So KL per dimension is mu^2 / 2 = (0, 2, 0.125, 0.5) nats: the order is 1, 3, 2 and 0 is inactive.
    """
    ckpt = torch.load(trained, weights_only=True)
    m = ckpt["model"]
    m["to_mu.weight"].zero_()
    m["to_mu.bias"].copy_(torch.tensor([0.0, 2.0, 0.5, 1.0]))
    m["to_logvar.weight"].zero_()
    m["to_logvar.bias"].zero_()
    path = tmp_path / "known.pth"
    checkpoint.save(path, {k: v for k, v in ckpt.items() if k != "format"})
    return path


def test_traverse_default_picks_the_highest_kl_dimensions(runner, trained, small_mat, tmp_path):
    path = _known_kl_checkpoint(trained, tmp_path)
    out = tmp_path / "t.png"
    r = runner.invoke(app, ["traverse", "-c", str(path), "--data", str(small_mat), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = last_json(r.stdout)
    assert res["dims"] == [1, 3, 2] and res["inactive"] == [0]
    assert [round(k, 3) for k in res["kl"]] == [2.0, 0.5, 0.125]
    assert "inactive dimensions" in r.stderr and "0" in r.stderr
    assert Image.open(out).size[1] > 3 * 28 * 4  # three rows, not six


def test_grid_size_scale_and_labels():
    rows = [torch.rand(5, 28, 20).numpy(), torch.rand(5, 28, 20).numpy()]
    plain = face_grid(rows, scale=3, sep=1)
    assert plain.size == (5 * 60 + 6, 2 * 84 + 3)
    labelled = face_grid(rows, scale=3, sep=1, labels=["dim 7 · KL 3.2 nats", "dim 1 · KL 0.4 nats"])
    assert labelled.size[0] > plain.size[0] + 40  # room for the labels
    assert labelled.size[1] == plain.size[1]
    # the label column holds dark text pixels
    import numpy as np

    assert (np.asarray(labelled)[:, : labelled.size[0] - plain.size[0]] < 128).any()


def test_progress_redraws_in_a_terminal_and_honours_no_color(small_mat, tmp_path):
    args = ["train", "--data", str(small_mat), "--epochs", "3", "--latent-dim", "2", "--batch-size", "4"]
    code, text = run_in_pty([*args, "--out", str(tmp_path / "a")], {})
    assert code == 0
    assert "batch" in text and "eta" in text and "loss" in text
    assert "\x1b[" in text  # cursor control: the bar redraws in place
    assert "\x1b[3" in text or "\x1b[9" in text or "38;" in text  # colours
    code, text = run_in_pty([*args, "--out", str(tmp_path / "b")], {"NO_COLOR": "1"})
    assert code == 0 and "batch" in text
    assert "38;5" not in text and "\x1b[31m" not in text and "\x1b[32m" not in text
