"""The fixed-point sampler draws exactly the faces of the sequential one (tests/reference.py), bit
for bit, from any start, on a tiny model and on the trained PixelVAE of ../shared/models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freyvae_cli import checkpoint as ck
from freyvae_cli import explore, sampling
from freyvae_cli.pixelvae import PixelVAE
from tests.conftest import REAL_DATA
from tests.reference import sequential_sample

TRAINED = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "pixelvae-321.pth"


def noise(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, 28, 20, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny() -> PixelVAE:
    torch.manual_seed(3)
    model = PixelVAE(latent_dim=3, channels=8, blocks=2).eval()
    for p in model.parameters():  # large weights: every pixel moves the ones after it
        p.data.normal_(0, 0.3)
    return model


def test_tiny_model_from_black_from_noise_and_from_another_face(tiny):
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    want = sequential_sample(tiny, z, noise())
    stats = {}
    assert torch.equal(sampling.sample(tiny, z, noise(), stats=stats), want)
    assert 1 < stats["passes"] < 560
    junk = torch.randint(0, 256, (5, 1, 28, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sampling.sample(tiny, z, noise(), start=junk), want)
    assert torch.equal(sampling.sample(tiny, z, noise(), start=want[:1]), want)  # one start for all
    stats = {}
    assert torch.equal(sampling.sample(tiny, z, noise(), start=want, stats=stats), want)
    assert stats["passes"] == -(-28 // sampling.BAND)  # the answer itself: one pass a band confirms it
    assert torch.equal(tiny.sample(z, noise()), want)  # the model's own sample() is the fast one


def test_the_samplers_features_are_the_models_to_the_bit(tiny):
    x = torch.rand(3, 1, 28, 20, generator=torch.Generator().manual_seed(6))
    cond = tiny.condition(torch.randn(3, 3, generator=torch.Generator().manual_seed(6)))
    with torch.no_grad():
        assert torch.equal(sampling.features(tiny, x, cond, sampling.masked_kernels(tiny)), tiny.features(x, cond))


def test_a_batch_converges_image_by_image(tiny):
    """Images that converge early leave the batch; each still equals its draw alone."""
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(4))
    batch = sampling.sample(tiny, z, noise(5))
    for i in range(7):
        assert torch.equal(batch[i:i + 1], sampling.sample(tiny, z[i:i + 1], noise(5)))


def test_the_manifold_starts_each_row_at_the_row_above_and_draws_the_same_faces(tiny):
    from scipy.stats import norm

    grid, directions = 4, torch.eye(3)[:2]
    rows = explore.manifold(tiny, directions, grid)
    q = torch.tensor(norm.ppf(np.linspace(0.5 / grid, 1 - 0.5 / grid, grid)), dtype=torch.float32)
    for i, row in enumerate(rows):
        z = q.unsqueeze(1) * directions[0] + float(q[grid - 1 - i]) * directions[1]
        want = sequential_sample(tiny, z, noise(0)).squeeze(1).float().numpy() / 255.0
        assert np.array_equal(row, want), i


@pytest.fixture(scope="module")
def trained():
    if not TRAINED.is_file():
        pytest.skip(f"{TRAINED} is absent")
    model, ckpt = ck.load_model(TRAINED)
    return model, ckpt


def latents(model, ckpt) -> dict[str, torch.Tensor]:
    """Prior draws, the latent means of test faces, and a traversal around one of them."""
    prior = torch.randn(24, model.latent_dim, generator=torch.Generator().manual_seed(7))
    if REAL_DATA.is_file():
        from freyvae_cli.data import load_faces

        x, _ = explore.split_images(ckpt, load_faces(REAL_DATA), "test")
        means = explore.encode(model, x[:24])[0]
    else:  # without the data, points near the prior's bulk stand in for the means
        means = 0.5 * torch.randn(24, model.latent_dim, generator=torch.Generator().manual_seed(8))
    dim = int(explore.kl_per_dim(model, x[:64]).argmax()) if REAL_DATA.is_file() else 0
    walk = means[0].repeat(24, 1)
    walk[:, dim] += torch.linspace(-3, 3, 24)
    return {"prior": prior, "reconstruction": means, "traversal": walk}


def test_the_trained_model_at_batch_1_and_at_batch_72(trained):
    model, ckpt = trained
    z = latents(model, ckpt)
    u = noise()
    everything = torch.cat(list(z.values()))
    want = sequential_sample(model, everything, u)
    assert torch.equal(sampling.sample(model, everything, u), want)
    for i, kind in enumerate(z):
        one = everything[24 * i + 3:24 * i + 4]
        assert torch.equal(sampling.sample(model, one, u), want[24 * i + 3:24 * i + 4]), kind
    # a slider step: the face before as the start
    assert torch.equal(sampling.sample(model, everything[49:50], u, start=want[48:49]), want[49:50])


def test_commands_draw_the_faces_they_drew_before(trained):
    """explore.sample (the `sample` command's faces) equals the sequential sampler's."""
    model, _ = trained
    faces = explore.sample(model, 4, seed=11)
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(11))
    want = sequential_sample(model, z, noise(11)).squeeze(1).float().numpy() / 255.0
    assert np.array_equal(faces, want)


@pytest.fixture(scope="module")
def explorer(trained):
    """The explore server's state for the trained model (it needs the real test faces)."""
    if not REAL_DATA.is_file():
        pytest.skip(f"{REAL_DATA} is absent")
    from freyvae_cli.data import load_faces
    from freyvae_cli.server import Explorer

    model, ckpt = trained
    return Explorer.build(model, ckpt, load_faces(REAL_DATA), str(TRAINED), 3.0)


def test_the_explorer_starts_each_draw_from_the_last_and_draws_the_same_faces(trained, explorer):
    from freyvae_cli.server import png

    model, _ = trained
    z = explorer.mu[0].clone()
    for step in range(3):
        z[0] += 0.2
        assert explorer.decode_png(z) == png(explore.decode(model, z.unsqueeze(0))[0]), step
        assert explorer.last is not None


def test_concurrent_requests_are_drawn_together_and_each_gets_its_own_face(trained, explorer):
    import threading

    model, _ = trained
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(21))
    sizes, got = [], {}
    decode_many = explorer.batcher.decode
    explorer.batcher.decode = lambda zs: sizes.append(len(zs)) or decode_many(zs)
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, explorer.batcher(z[i]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sizes) == 8 and max(sizes) > 1  # some were drawn in one batch
    want = sequential_sample(model, z, noise()).squeeze(1).float().numpy() / 255.0
    for i in range(8):
        assert np.array_equal(got[i], want[i]), i
    explorer.batcher.decode = decode_many


def test_a_failed_batch_fails_every_request_in_it():
    import threading

    from freyvae_cli.server import Batcher

    calls = []

    def decode(zs):
        calls.append(len(zs))
        if len(calls) == 1:
            threading.Event().wait(0.3)  # the others queue up meanwhile
            return zs.numpy() * 2
        raise RuntimeError("out of memory")

    batcher = Batcher(decode)
    results = {}

    def ask(i):
        try:
            results[i] = batcher(torch.tensor([float(i)]))
        except RuntimeError as e:
            results[i] = str(e)

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    threading.Event().wait(0.1)
    rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, 4)]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join(timeout=10)
    assert calls == [1, 3]
    assert results[0].tolist() == [0.0] and all(results[i] == "out of memory" for i in range(1, 4))
