"""Do the new faces pass for real? A classifier two-sample test, and a check for copied faces.

The test (Lopez-Paz & Oquab, ICLR 2017, "Revisiting classifier two-sample tests"): a small CNN is
trained to tell the checkpoint's held-out faces from as many faces drawn from the prior, and
scored on faces it did not see, over FOLDS folds. Its accuracy is 0.5 when it cannot tell them
apart and 1.0 when it always can. The control runs the same test on training faces against the
held-out ones: what a model that drew real faces would get.

A model that copied its training faces would pass the test, so beside it stands the median
distance (RMS, in grey levels 0..255) from each sample to its nearest training face, and the same
for the held-out faces: samples much closer to the training faces than held-out faces are have
been memorised.

The protocol is fixed (docs/models.md, "Realism"): every face as uint8, as the figures show it;
the classifier below, Adam 1e-3, batch 32, EPOCHS epochs, FOLDS folds, all seeded from `seed`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freyvae_cli.errors import FreyError

FOLDS = 5
EPOCHS = 40
BATCH = 32
MIN_FACES = 50  # held-out faces below which the test says too little
COPIED = 0.5  # samples' median nearest distance under this share of the held-out faces' is flagged


def classifier() -> nn.Module:
    """Two 3x3 convolutions with max pooling and one logit: real (1) or not (0)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 14 x 10
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 5
        nn.Flatten(), nn.Linear(32 * 7 * 5, 1),
    )


def fold_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                  generator: torch.Generator) -> float:
    """Train a fresh classifier on one fold's training faces; its accuracy on the fold's test faces."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        net = classifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), BATCH):
            batch = order[i:i + BATCH]
            loss = F.binary_cross_entropy_with_logits(net(x_train[batch]).squeeze(1), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float(((net(x_test).squeeze(1) > 0).float() == y_test).float().mean())


def two_sample_accuracy(real: np.ndarray, other: np.ndarray, seed: int = 0,
                        advance: Callable[[int], None] = lambda n: None) -> tuple[float, float]:
    """Mean and sample sd over FOLDS folds of the held-out accuracy telling `real` from `other`
    (uint8 faces (n, 28, 20) each, as many of each). Each fold holds out a fifth of both."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.concatenate([real, other])).float().div(255).unsqueeze(1)
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(other))])
    folds = [torch.cat(parts) for parts in zip(
        torch.randperm(len(real), generator=generator).chunk(FOLDS),
        (len(real) + torch.randperm(len(other), generator=generator)).chunk(FOLDS), strict=True)]
    accuracies = []
    with torch.enable_grad():
        for k in range(FOLDS):
            train = torch.cat([f for j, f in enumerate(folds) if j != k])
            accuracies.append(fold_accuracy(x[train], y[train], x[folds[k]], y[folds[k]], generator))
            advance(1)
    return float(np.mean(accuracies)), float(np.std(accuracies, ddof=1))


def nearest_rms(faces: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Each face's RMS distance, in grey levels, to its nearest training face."""
    a = torch.from_numpy(faces.reshape(len(faces), -1)).double()
    b = torch.from_numpy(train.reshape(len(train), -1)).double()
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
    return squared.clamp(min=0).min(1).values.div(a.shape[1]).sqrt().numpy()


def memorisation(samples: np.ndarray, held_out: np.ndarray, train: np.ndarray) -> dict:
    """The median distance from a sample, and from a held-out face, to its nearest training face;
    and whether the samples lie so much closer than held-out faces do that they are copies."""
    near_samples, near_held_out = (float(np.median(nearest_rms(f, train))) for f in (samples, held_out))
    return {"samples_nearest_train_rms": near_samples, "held_out_nearest_train_rms": near_held_out,
            "copies_training_faces": near_samples < COPIED * near_held_out}


def realism(samples: np.ndarray, held_out: np.ndarray, train: np.ndarray, seed: int = 0,
            advance: Callable[[int], None] = lambda n: None) -> dict:
    """The realism figures of `samples` (uint8, as many as the held-out faces) against the held-out
    faces, with the control (as many training faces against the held-out ones) and the
    memorisation check against every training face."""
    control = train[np.random.default_rng(seed).choice(len(train), len(held_out), replace=False)]
    accuracy, sd = two_sample_accuracy(held_out, samples, seed, advance)
    control_accuracy, control_sd = two_sample_accuracy(held_out, control, seed, advance)
    return {
        "accuracy": accuracy, "accuracy_sd": sd,
        "control_accuracy": control_accuracy, "control_accuracy_sd": control_sd,
        **memorisation(samples, held_out, train),
        "faces": len(held_out), "folds": FOLDS, "epochs": EPOCHS, "seed": seed,
        "units": "accuracy of a classifier on unseen faces (0.5: cannot tell); distances in grey levels, RMS",
    }


def check(ckpt: dict) -> None:
    """Refuse, before any work, a checkpoint whose test split is too small for the test."""
    n = len(ckpt["split"]["test"])
    if n < MIN_FACES:
        raise FreyError(f"--realism needs at least {MIN_FACES} held-out faces, and this model's test split has {n}; "
                        "train with more data or a larger --test-fraction")


def of_model(model, ckpt: dict, faces: np.ndarray, seed: int = 0,
             advance: Callable[[int], None] = lambda n: None) -> dict:
    """The realism figures of a model: as many samples from its prior as its test faces, drawn as
    `freyvae sample --seed SEED` draws them (each with its own pixel noise), against those faces."""
    from freyvae_cli import figures, latent
    from freyvae_cli.prior import of_checkpoint

    check(ckpt)
    held_out = faces[ckpt["split"]["test"].numpy()]
    samples = figures.as_uint8(latent.sample(model, len(held_out), seed, of_checkpoint(ckpt)))
    return realism(samples, held_out, faces[ckpt["split"]["train"].numpy()], seed, advance)
