"""The fixed-point sampler draws exactly the faces of the sequential one (tests/reference.py), bit
for bit, from any start: on a tiny model, on a PixelVAE the tests train in seconds, and on the trained
pixelvae-321 of ../shared/models where it is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent
from freyvae_cli.data.frey import load_faces
from freyvae_cli.pixelvae import guess, sampler
from freyvae_cli.pixelvae.model import PixelVAE
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


def test_tiny_model_from_its_guess_from_black_from_noise_and_from_another_face(tiny):
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    want = sequential_sample(tiny, z, noise())
    assert torch.equal(guess.guess(tiny, tiny.condition(z), noise()), want)  # the guess: the very faces here
    each = torch.rand(5, 1, 28, 20, generator=torch.Generator().manual_seed(4))  # a noise for each face
    assert torch.equal(guess.guess(tiny, tiny.condition(z), each), sequential_sample(tiny, z, each))
    stats = {}
    assert torch.equal(sampler.sample(tiny, z, noise(), stats=stats), want)
    assert stats["passes"] == 1  # from the guess, one pass over the whole image confirms it
    black = torch.zeros(1, 1, 28, 20, dtype=torch.uint8)
    stats = {}
    assert torch.equal(sampler.sample(tiny, z, noise(), start=black, band=sampler.BAND, stats=stats), want)
    assert 1 < stats["passes"] < 560
    junk = torch.randint(0, 256, (5, 1, 28, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sampler.sample(tiny, z, noise(), start=junk), want)
    assert torch.equal(sampler.sample(tiny, z, noise(), start=junk, band=sampler.BAND), want)
    assert torch.equal(sampler.sample(tiny, z, noise(), start=want[:1]), want)  # one start for all
    stats = {}
    assert torch.equal(sampler.sample(tiny, z, noise(), start=want, band=sampler.BAND, stats=stats), want)
    assert stats["passes"] == -(-28 // sampler.BAND)  # the answer itself: one pass a band confirms it
    assert torch.equal(tiny.sample(z, noise()), want)  # the model's own sample() is the fast one


def test_the_samplers_features_are_the_models_to_the_bit(tiny):
    x = torch.rand(3, 1, 28, 20, generator=torch.Generator().manual_seed(6))
    cond = tiny.condition(torch.randn(3, 3, generator=torch.Generator().manual_seed(6)))
    with torch.no_grad():
        want = tiny.features(x, cond)
        layers = sampler.masked_layers(tiny, 3, 20)
        assert torch.equal(sampler.features(x, cond, layers), want)
        # the last rows of a window holding the `reach` rows above them: each layer computing fewer rows
        window = [t[:, :, 10 - tiny.reach:18] for t in (x, *cond)]
        assert torch.equal(sampler.features(window[0], window[1:], layers, rows=8), want[:, :, 10:18])


def test_an_image_left_alone_keeps_the_arithmetic_of_its_batch(tiny):
    """torch computes a 3x3 convolution of one image by im2col and of several by oneDNN, which round
    differently; the sampler's layers for a batch of 3 give the batch's sums on one image too."""
    x = torch.rand(3, 1, 28, 20, generator=torch.Generator().manual_seed(9))
    cond = tiny.condition(torch.randn(3, 3, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        want = tiny.features(x, cond)[:1]
        alone = tiny.features(x[:1], [c[:1] for c in cond])
        ours = sampler.features(x[:1], [c[:1] for c in cond], sampler.masked_layers(tiny, 3, 20))
    backends = {torch._C._select_conv_backend(torch.empty(n, 8, 8, 20), tiny.blocks[0].weight, None, [1, 1], [1, 1],
                                              [1, 1], False, [0, 0], 1, None) for n in (1, 3)}
    if len(backends) == 2:  # this torch changes algorithm with the batch size: F.conv2d alone differs
        assert not torch.equal(alone, want)
    assert torch.equal(ours, want)


def test_a_batch_converges_image_by_image(tiny):
    """Images that converge early leave the batch; each still equals its draw alone."""
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(4))
    batch = sampler.sample(tiny, z, noise(5))
    for i in range(7):
        assert torch.equal(batch[i:i + 1], sampler.sample(tiny, z[i:i + 1], noise(5)))


def test_images_join_a_draw_under_way_and_each_gets_its_own_face(tiny):
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(12))
    want = sequential_sample(tiny, z, noise(3))
    drawing = sampler.Fixpoint(tiny, room=3, like_batch=6, band=sampler.BAND)
    got = {}
    drawing.add(z[:4], noise(3), start=torch.zeros(1, 1, 28, 20, dtype=torch.uint8))  # from black: many passes
    for _ in range(3):
        got.update(drawing.step())
    junk = torch.randint(0, 256, (2, 1, 28, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert drawing.add(z[4:5], noise(3), start=junk[:1]) == [4]
    assert drawing.add(z[5:], noise(3)) == [5]  # from its guess
    while drawing.busy:
        got.update(drawing.step())
    assert sorted(got) == list(range(6))
    for i in range(6):
        assert torch.equal(got[i], want[i]), i
    assert torch.equal(sampler.sample(tiny, z, noise(3), at_once=2), want)  # two at a time


def test_the_manifold_draws_each_row_as_the_sequential_sampler_does(tiny):
    from scipy.stats import norm

    grid, directions = 4, torch.eye(3)[:2]
    rows = latent.manifold(tiny, directions, grid)
    q = torch.tensor(norm.ppf(np.linspace(0.5 / grid, 1 - 0.5 / grid, grid)), dtype=torch.float32)
    for i, row in enumerate(rows):
        z = q.unsqueeze(1) * directions[0] + float(q[grid - 1 - i]) * directions[1]
        want = sequential_sample(tiny, z, noise(0)).squeeze(1).float().numpy() / 255.0
        assert np.array_equal(row, want), i


@pytest.fixture(scope="module", params=["quick", "pixelvae-321"])
def trained(request):
    """A trained PixelVAE: one the tests train in seconds (every clone has it), and pixelvae-321
    where ../shared/models has it. Its checkpoint, and the faces it was trained on."""
    if request.param == "quick":
        path, data = request.getfixturevalue("quick_pixelvae")
    else:
        if not TRAINED.is_file():
            pytest.skip(f"{TRAINED} is absent")
        path, data = TRAINED, REAL_DATA
    model, ckpt = ck.load_model(path)
    return model, ckpt, path, data


def latents(model, ckpt, data: Path) -> dict[str, torch.Tensor]:
    """Prior draws, the latent means of test faces, and a traversal around one of them."""
    prior = torch.randn(24, model.latent_dim, generator=torch.Generator().manual_seed(7))
    if data.is_file():
        x, _ = latent.split_images(ckpt, load_faces(data), "test")
        means = latent.encode(model, x[:24])[0]
    else:  # without the data, points near the prior's bulk stand in for the means
        means = 0.5 * torch.randn(24, model.latent_dim, generator=torch.Generator().manual_seed(8))
    dim = int(latent.kl_per_dim(model, x[:64]).argmax()) if data.is_file() else 0
    walk = means[0].repeat(24, 1)
    walk[:, dim] += torch.linspace(-3, 3, 24)
    return {"prior": prior, "reconstruction": means, "traversal": walk}


def test_the_trained_model_at_batch_1_and_at_batch_72(trained):
    model, ckpt, _, data = trained
    z = latents(model, ckpt, data)
    u = noise()
    everything = torch.cat(list(z.values()))
    want = sequential_sample(model, everything, u)
    guessed = guess.guess(model, model.condition(everything), u)
    assert (guessed == want).flatten(1).all(1).sum() >= 66  # nearly every face (guess.py); rounding may miss a few
    assert torch.equal(sampler.sample(model, everything, u), want)
    assert torch.equal(sampler.sample(model, everything, u, at_once=20), want)
    black = torch.zeros(1, 1, 28, 20, dtype=torch.uint8)  # the fixed-point iteration alone, no guess
    assert torch.equal(sampler.sample(model, everything, u, start=black, band=sampler.BAND, at_once=20), want)
    off = want.clone()  # a guess wrong at one pixel, mid-face: the pixels after it are checked again
    off[:, 0, 10, 5] = off[:, 0, 10, 5] ^ 1
    assert torch.equal(sampler.sample(model, everything, u, start=off), want)
    for i, kind in enumerate(z):
        one = everything[24 * i + 3:24 * i + 4]
        assert torch.equal(sampler.sample(model, one, u), want[24 * i + 3:24 * i + 4]), kind
    # a slider step: the face before as the start
    assert torch.equal(sampler.sample(model, everything[49:50], u, start=want[48:49]), want[49:50])


def tied_noise(model, z: torch.Tensor) -> torch.Tensor:
    """Noise that puts every pixel of z's face on a step of its CDF as a pass computes it (a matrix
    of 160 rows), where the sequential sampler's one-row product may round to either side."""
    x = sampler.sample(model, z, noise())
    with torch.no_grad():
        h = model.features(x.float() / 255, model.condition(z)).permute(0, 2, 3, 1)
        cdf = torch.softmax(F.linear(h, model.to_logits.weight.flatten(1), model.to_logits.bias), -1).cumsum(-1)
    return cdf.gather(-1, x.permute(0, 2, 3, 1).long()).permute(0, 3, 1, 2)


def test_pixels_on_a_step_of_their_cdf_are_drawn_as_the_sequential_sampler_rounds_them(trained):
    model, *_ = trained
    z = torch.randn(1, model.latent_dim, generator=torch.Generator().manual_seed(30))
    u = tied_noise(model, z)
    want = sequential_sample(model, z, u)
    assert torch.equal(sampler.sample(model, z, u), want)
    saved, sampler.TIE = sampler.TIE, 0.0  # without the redraw, the pass's own rounding decides
    try:
        assert not torch.equal(sampler.sample(model, z, u), want)
    finally:
        sampler.TIE = saved


def test_the_two_products_cdfs_differ_by_far_less_than_the_tie_margin(trained):
    model, *_ = trained
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(31))
    x = sampler.sample(model, z, noise())
    weight, bias = model.to_logits.weight.flatten(1), model.to_logits.bias
    with torch.no_grad():
        h = model.features(x.float() / 255, model.condition(z)).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
        tall = torch.softmax(F.linear(h, weight, bias), -1).cumsum(-1)
        alone = torch.stack([torch.softmax(F.linear(row.unsqueeze(0), weight, bias), -1).cumsum(-1)[0] for row in h])
    assert (tall - alone).abs().max() < sampler.TIE / 10


def test_sample_draws_each_face_with_its_own_noise_and_each_is_the_sequential_draw(trained):
    """latent.sample (the `sample` command's faces): each face the sequential sampler's draw with
    its own pixel noise; the first face's noise is the shared noise the figures along z use."""
    model, *_ = trained
    faces = latent.sample(model, 4, seed=11)
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(11))
    u = torch.rand(4, 1, 28, 20, generator=torch.Generator().manual_seed(11))
    assert not torch.equal(u[0], u[1]) and torch.equal(u[:1], noise(11))
    want = sequential_sample(model, z, u).squeeze(1).float().numpy() / 255.0
    assert np.array_equal(faces, want)
    shared = latent.decode(model, z, noise_seed=11)  # traverse, interpolate, manifold: one noise for all
    assert np.array_equal(shared, sequential_sample(model, z, noise(11)).squeeze(1).float().numpy() / 255.0)
    assert np.array_equal(shared[0], faces[0]) and not np.array_equal(shared[1:], faces[1:])


@pytest.fixture(scope="module")
def explorer(trained):
    """The explore server's state for the trained model (it needs the faces it was trained on)."""
    model, ckpt, path, data = trained
    if not data.is_file():
        pytest.skip(f"{data} is absent")
    from freyvae_cli.explore_server import Explorer

    return Explorer.build(model, ckpt, load_faces(data), str(path), 3.0)


def test_the_explorer_draws_the_sequential_face_mostly_in_one_pass(trained, explorer):
    from freyvae_cli.explore_server import png

    model, *_ = trained
    z, drawing = explorer.mu[0].clone(), explorer.drawer.drawing
    passes = drawing.passes
    for step in range(3):
        z[0] += 0.2
        assert explorer.decode_png(z) == png(latent.decode(model, z.unsqueeze(0))[0]), step
        want = sequential_sample(model, z.unsqueeze(0), noise())[0, 0].float().numpy() / 255.0
        assert explorer.decode_png(z) == png(want), step
    assert drawing.passes - passes <= 8  # six faces: each guessed (guess.py) and confirmed, nearly always at once


def test_concurrent_requests_share_passes_and_each_gets_the_face_it_would_get_alone(trained, explorer):
    import threading

    model, *_ = trained
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(21))
    drawing = explorer.drawer.drawing
    passes, image_passes = drawing.passes, drawing.image_passes
    got = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, explorer.drawer(z[i]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert drawing.image_passes - image_passes > drawing.passes - passes  # some passes drew several
    for i in range(8):  # each as the sequential sampler draws it on its own
        want = sequential_sample(model, z[i:i + 1], noise())[0, 0].float().numpy() / 255.0
        assert np.array_equal(got[i], want), i
    assert not explorer.drawer.flying and not explorer.drawer.incoming


class Failing:
    """An engine for explore_server.Drawer whose second pass fails, after a first slow enough for other
    requests to arrive meanwhile."""

    made = 0

    def __init__(self) -> None:
        Failing.made += 1
        self.added, self.steps = 0, 0

    def add(self, z, u):
        self.added += 1
        return [self.added - 1]

    def step(self):
        import threading

        self.steps += 1
        if self.steps == 1:
            threading.Event().wait(0.3)
            return []
        raise RuntimeError("out of memory")


def test_a_failed_pass_fails_every_request_in_the_draw_and_the_next_starts_afresh():
    import threading

    from freyvae_cli.explore_server import Drawer

    drawer = Drawer(Failing, threading.Lock(), noise())
    results = {}

    def ask(i):
        try:
            results[i] = drawer(torch.tensor([float(i)]))
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
    assert not any(t.is_alive() for t in [first, *rest])
    assert results == {i: "out of memory" for i in range(4)}
    assert Failing.made == 2 and drawer.drawing.added == 0  # a fresh engine for the next requests


def test_without_torchs_private_conv_api_the_sampler_still_draws_valid_faces(trained, monkeypatch):
    """Where a torch lacks _select_conv_backend, masked_layers falls back to F.conv2d: each face is
    still the fixed point of its own noise (every pixel the level its CDF gives under the pixels
    before it, but for rare near-ties), and nearly always the sequential sampler's face."""
    model, *_ = trained
    z = torch.randn(12, model.latent_dim, generator=torch.Generator().manual_seed(40))
    u = torch.rand(12, 1, 28, 20, generator=torch.Generator().manual_seed(41))
    want = sequential_sample(model, z, u)
    assert sampler.conv_backend(torch.empty(1, 1, 8, 20), model.image_in.weight, model.image_in.bias, [3, 3])
    monkeypatch.delattr(torch._C, "_select_conv_backend")
    assert sampler.conv_backend(torch.empty(1, 1, 8, 20), model.image_in.weight, model.image_in.bias, [3, 3]) is None
    faces = sampler.sample(model, z, u)
    assert faces.dtype == torch.uint8 and faces.shape == (12, 1, 28, 20)
    with torch.no_grad():
        logits = model.to_logits(model.features(faces.float() / 255, model.condition(z))).permute(0, 2, 3, 1)
    levels, _ = sampler.inverse_cdf(logits, u[:, 0])
    assert (levels == faces[:, 0]).float().mean() > 0.999
    assert (faces == want).flatten(1).all(1).sum() >= 10


def test_a_deeper_narrower_pixelcnn_is_drawn_exactly_too():
    """--blocks and --channels change the PixelCNN's reach and width; the guess and the
    confirming passes follow them."""
    torch.manual_seed(5)
    model = PixelVAE(latent_dim=3, channels=6, blocks=6).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    u = torch.rand(3, 1, 28, 20, generator=torch.Generator().manual_seed(2))
    assert model.reach == 9
    assert torch.equal(sampler.sample(model, z, u), sequential_sample(model, z, u))


def test_a_mixture_pixelvae_is_drawn_exactly_and_its_levels_are_a_law():
    """--likelihood mixture: the 256 levels' log-probabilities sum to 1, the likelihood at x is
    the table's entry, the guess's NumPy table is torch's, and the draw is the sequential one."""
    from freyvae_cli.likelihood import level_log_probs, pixel_log_probs

    torch.manual_seed(6)
    model = PixelVAE(latent_dim=3, likelihood="mixture", channels=8, blocks=2).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    params = torch.randn(7, 15) * 3
    table = level_log_probs(params)
    assert torch.allclose(table.exp().sum(-1), torch.ones(7), atol=1e-5)
    assert np.allclose(guess.mixture_levels(params.numpy()), table.numpy(), atol=1e-4)
    x = torch.randint(0, 256, (2, 1, 28, 20), dtype=torch.uint8)
    z = torch.randn(2, 3)
    with torch.no_grad():
        out = model.decode(z, x.float() / 255)
    at_x = pixel_log_probs(out, x, "mixture")
    full = level_log_probs(out.permute(0, 2, 3, 1)).gather(-1, x.long().permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(at_x, full, atol=1e-5)
    u = torch.rand(2, 1, 28, 20, generator=torch.Generator().manual_seed(3))
    want = sequential_sample(model, z, u)
    assert torch.equal(sampler.sample(model, z, u), want)
    assert (guess.guess(model, model.condition(z), u) == want).float().mean() > 0.99
