"""The realism test: a classifier two-sample test (about 0.5 on two halves of the same faces, about
1.0 on faces plainly not real), deterministic for a seed, and the memorisation check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freyvae_cli import realism
from freyvae_cli.data.frey import load_faces
from tests.conftest import REAL_DATA, main_in_process, make_faces


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The real faces where the file is there, else 400 generated ones, shuffled."""
    x = load_faces(REAL_DATA) if REAL_DATA.is_file() else make_faces(400)
    return x[np.random.default_rng(0).permutation(len(x))]


def test_two_halves_of_the_same_faces_cannot_be_told_apart(faces):
    accuracy, sd = realism.two_sample_accuracy(faces[:100], faces[100:200], seed=1)
    assert 0.3 <= accuracy <= 0.7 and sd < 0.2


def test_faces_plainly_not_real_are_told_apart_nearly_always(faces):
    real = faces[:60]
    rng = np.random.default_rng(2)
    shuffled = np.stack([rng.permutation(f.ravel()).reshape(28, 20) for f in faces[100:160]])
    assert realism.two_sample_accuracy(real, shuffled, seed=1)[0] >= 0.95
    blurred = np.repeat(faces[100:200].mean(0, keepdims=True), 60, 0)  # the blurred mean, every time
    blurred = (blurred + rng.normal(0, 2, blurred.shape)).clip(0, 255).astype(np.uint8)
    assert realism.two_sample_accuracy(real, blurred, seed=1)[0] >= 0.95


def test_the_test_is_deterministic_for_a_seed(faces):
    a = realism.two_sample_accuracy(faces[:50], faces[50:100], seed=5)
    assert realism.two_sample_accuracy(faces[:50], faces[50:100], seed=5) == a


def test_the_memorisation_check_flags_samples_that_are_training_faces(faces):
    train, held_out, others = faces[:300], faces[300:350], faces[350:400]
    copied = realism.memorisation(train[:50], held_out, train)
    assert copied["samples_nearest_train_rms"] == 0 and copied["held_out_nearest_train_rms"] > 0
    assert copied["copies_training_faces"]
    assert not realism.memorisation(others, held_out, train)["copies_training_faces"]  # new faces of the same kind


def test_nearest_rms_is_the_plain_distance(faces):
    a, b = faces[:7].astype(float), faces[7:30].astype(float)
    want = np.sqrt(((a[:, None] - b[None]) ** 2).mean((2, 3))).min(1)
    assert np.allclose(realism.nearest_rms(faces[:7], faces[7:30]), want)


def test_evaluate_realism_through_the_cli(quick_pixelvae, trained, small_mat, capsys):
    """On a PixelVAE with 60 test faces: the figures in the table and under "realism" in --json;
    a model whose test split is too small gets one line."""
    checkpoint, data = quick_pixelvae
    r = main_in_process(["evaluate", "-c", str(checkpoint), "--data", str(data), "--iw-samples", "0",
                         "--realism", "--seed", "3", "--json"], capsys)
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["realism"]
    assert q["faces"] == 60 and q["folds"] == realism.FOLDS and q["epochs"] == realism.EPOCHS and q["seed"] == 3
    assert 0 <= q["accuracy"] <= 1 and 0 <= q["control_accuracy"] <= 1
    assert q["samples_nearest_train_rms"] > 0 and not q["copies_training_faces"]
    assert "realism" in r.stderr and "control" in r.stderr
    r = main_in_process(["evaluate", "-c", str(trained), "--data", str(small_mat), "--realism"], capsys)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "at least 50 held-out faces" in r.stderr and "has 12" in r.stderr
