"""Latent-space maths behind reconstruct, sample, traverse, project, interpolate, manifold and encode.

Each function takes a trained model and returns faces as numpy arrays (n, 28, 20) in [0, 1];
drawing them is figures.py's job. A decoder that factorises over pixels gives the mean image
E[x|z]; an autoregressive one has no tractable mean, so each face is one draw x ~ p(x|z). Where
faces are compared along z (traverse, interpolate, manifold, explore) every face of a figure has the
same pixel noise, so they differ only by z; where they are samples (`sample`, the realism test)
each has its own (what_is_drawn says which).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import torch

from freyvae_cli.errors import UsageError
from freyvae_cli.evaluate import INACTIVE_KL, mean_kl_order, reconstruction_term
from freyvae_cli.likelihood import kl_divergence, mean_image
from freyvae_cli.prior import Prior, fit
from freyvae_cli.vae import VAE


def check_dims(dims, latent: int, option: str) -> None:
    """Every dimension an option names is one of the model's."""
    for d in dims or ():
        if not 0 <= d < latent:
            raise UsageError(f"{option} {d} is outside the latent space; this model has dimensions 0..{latent - 1}")


def check_face(option: str, i: int, n: int) -> None:
    """An index an option gives is one of the n test faces."""
    if i >= n:
        raise UsageError(f"{option} {i} is outside the test split; it has faces 0..{n - 1}")


def split_images(ckpt: dict, faces: np.ndarray, split: str = "test") -> tuple[torch.Tensor, np.ndarray]:
    """The checkpoint's train, val or test images as uint8 (n, 1, 28, 20), with their frame indices."""
    if split not in ckpt["split"]:
        raise UsageError(f"this model has no {split} split (it has {', '.join(ckpt['split'])}); "
                         "validation images exist for runs trained with --split literature")
    frames = ckpt["split"][split].numpy()
    return torch.from_numpy(faces[frames]).unsqueeze(1), frames


def test_codes(model: VAE, ckpt: dict, faces: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test faces' posterior means and log-variances: encoded from the faces, or where there
    is no data file, the summary a pretrained checkpoint stores (the same numbers, encoded when it
    was made: freyvae_cli/pretrained/)."""
    if faces is None:
        return ckpt["summary"]["mu"], ckpt["summary"]["logvar"]
    return encode(model, split_images(ckpt, faces, "test")[0])


@torch.no_grad()
def encode(model: VAE, x: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of uint8 images x, on the CPU."""
    device = next(model.parameters()).device
    parts = [model.encode(x[i:i + batch].to(device).float() / 255.0) for i in range(0, len(x), batch)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


def what_is_drawn(model: VAE, shared_noise: bool = True) -> str:
    """A figure title's note on what a decoded face is."""
    if model.autoregressive:
        noise = "the same pixel noise in every face" if shared_noise else "each with its own pixel noise"
        return f"each face one draw from p(x|z), {noise}"
    return "each face the mean image E[x|z]"


def pixel_noise(model: VAE, seed: int = 0, faces: int = 1) -> torch.Tensor:
    """The uniform noise (faces, 1, H, W) an autoregressive decoder draws faces with: one for every
    face of a figure (and for the explore server's faces, seed 0), or one for each face. The first
    face's noise is the shared noise of the same seed."""
    return torch.rand(faces, 1, *model.image_shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor, batch: int = 1024, noise_seed: int = 0,
           shared_noise: bool = True) -> np.ndarray:
    """The face for each latent vector, as (n, 28, 20) floats in [0, 1]: the mean image, or for an
    autoregressive decoder one draw with the uniform pixel noise of `noise_seed`, shared by all or
    each face's own."""
    device = next(model.parameters()).device
    if model.autoregressive:
        from freyvae_cli.pixelvae.sampler import CHUNK

        u = pixel_noise(model, noise_seed, 1 if shared_noise else len(z))
        out = [model.sample(z[i:i + CHUNK].to(device), u if shared_noise else u[i:i + CHUNK]).cpu().float() / 255.0
               for i in range(0, len(z), CHUNK)]
    else:
        out = [mean_image(model.decode(z[i:i + batch].to(device)), model.likelihood).cpu()
               for i in range(0, len(z), batch)]
    return torch.cat(out).squeeze(1).numpy()


def reconstruct(model: VAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Originals and their reconstructions through the posterior mean."""
    mu, _ = encode(model, x)
    return x.squeeze(1).numpy() / 255.0, decode(model, mu)


@torch.no_grad()
def encode_with_elbo(model: VAE, x: torch.Tensor, samples: int = 10, seed: int = 0):
    """Latent means, standard deviations and -ELBO in nats of uint8 images x (n, 1, 28, 20), on the
    CPU; the -ELBO as `evaluate` computes it (exact KL, reconstruction over `samples` seeded draws)."""
    device = next(model.parameters()).device
    xd = x.to(device)
    mu, logvar = model.encode(xd.float() / 255.0)
    rec = reconstruction_term(model, xd, mu, logvar, samples, torch.Generator(device).manual_seed(seed))
    loss = rec + kl_divergence(mu, logvar).sum(1)
    return mu.cpu(), torch.exp(0.5 * logvar).cpu(), loss.cpu()


def sample(model: VAE, n: int, seed: int = 0, prior: Prior | None = None) -> np.ndarray:
    """n new faces: z from the model's prior (N(0, I) unless a fitted one is given: prior.py),
    each face with its own pixel noise (an autoregressive decoder), drawn on the CPU so any device
    gives the same faces."""
    prior = prior or Prior(model.latent_dim)
    z = prior.draw(n, torch.Generator().manual_seed(seed))
    return decode(model, z, noise_seed=seed, shared_noise=False)



def fitted_prior(model: VAE, x: torch.Tensor) -> Prior:
    """The prior fitted to the posteriors of uint8 images x, a model's training faces (prior.py)."""
    return fit(*encode(model, x))


def kl_per_dim(model: VAE, x: torch.Tensor) -> np.ndarray:
    """Mean KL(q(z_d|x) || N(0,1)) of each latent dimension over the images, in nats."""
    return mean_kl(encode(model, x))


def mean_kl(codes: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Mean KL of each latent dimension over encoded images (their means and log-variances), in nats."""
    return kl_divergence(*codes).mean(0).numpy()


def traverse(model: VAE, base: torch.Tensor, directions: torch.Tensor, steps: int, span: float) -> list[np.ndarray]:
    """One row per direction (a row of `directions`, (k, D)): base + v * direction for v evenly
    from -span to +span. A latent dimension d is the direction e_d."""
    values = torch.linspace(-span, span, steps).unsqueeze(1)
    faces = decode(model, (base + values.unsqueeze(0) * directions.unsqueeze(1)).flatten(0, 1))  # drawn together
    return [faces[i * steps:(i + 1) * steps] for i in range(len(directions))]


def principal_directions(model: VAE, mu: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray]:
    """The top k principal axes of latent means mu (n, D), each scaled to one standard
    deviation of the means along it (k, D), and each axis's share of their variance. Where faces
    vary most (as GANSpace, Harkonen et al. 2020, finds it for GANs)."""
    if model.latent_dim < 2:
        raise UsageError("--pca needs a latent space of two or more dimensions; this model has one")
    if not 1 <= k <= model.latent_dim:
        raise UsageError(f"--k {k} is outside 1..{model.latent_dim}: this model has {model.latent_dim} latent "
                         "dimensions, so as many principal directions")
    points, axes, share = pca(mu.numpy(), k)
    scaled = torch.tensor(axes * points.std(0, ddof=1)[:, None], dtype=torch.float32)  # as manifold --pca
    return scaled, share


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, slerp: bool = False) -> torch.Tensor:
    """steps points from z0 to z1: on the straight line, or on the great circle (slerp)."""
    t = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    if not slerp:
        return (1 - t) * z0 + t * z1
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp(min=1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def pca(mu: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection of the centred means on their top-k principal axes, the axes, and variance shares."""
    centred = mu - mu.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-12)
    if len(vt) < k:  # a latent space of fewer than k dimensions: the missing axes are zero
        vt = np.concatenate([vt, np.zeros((k - len(vt), vt.shape[1]))])
        share = np.concatenate([share, np.zeros(k - len(share))])
    return centred @ vt[:k].T, vt[:k], share[:k]


def manifold(model: VAE, directions: torch.Tensor, grid: int, centre: torch.Tensor | None = None,
             scales: tuple[float, float] = (1.0, 1.0), on_row=lambda: None) -> list[np.ndarray]:
    """A grid x grid image of decodes over two directions, spaced by Gaussian quantiles.

    As in Kingma & Welling's Frey Face figure: coordinates are the inverse normal CDF of evenly
    spaced probabilities, so equal areas of the prior get equal room.
    """
    q = torch.tensor([NormalDist().inv_cdf(p) for p in np.linspace(0.5 / grid, 1 - 0.5 / grid, grid).tolist()],
                     dtype=torch.float32)  # the same float32 values as scipy's norm.ppf, for grids 1..100
    centre = torch.zeros(model.latent_dim) if centre is None else centre
    rows = []
    for i in range(grid):  # rows go from high to low along the second direction, like a y axis
        z = centre + (q * scales[0]).unsqueeze(1) * directions[0] + float(q[grid - 1 - i]) * scales[1] * directions[1]
        rows.append(decode(model, z))
        on_row()
    return rows


def traverse_dims(kl: np.ndarray, asked: list[int] | None, note) -> tuple[list[int], list[int]]:
    """The dimensions to draw (those asked for, else the six with most KL) and the inactive ones.
    A model with none active gets its highest-KL ones, and `note` says so."""
    active, inactive = mean_kl_order(kl)
    dims = list(asked) if asked else active[:6]
    if not dims:  # a young or collapsed model: show what little there is, and say so
        dims = (active + inactive)[:6]
        note(f"note: every latent dimension is inactive (KL < {INACTIVE_KL} nats); the rows drawn, the "
             "highest-KL ones, carry almost no information")
    return dims, inactive


def manifold_axes(model: VAE, codes: tuple[torch.Tensor, torch.Tensor], dims: tuple[int, int] | None,
                  use_pca: bool, note):
    """The two directions a manifold spans, its centre, the scale along each, and their names: the
    top two principal axes of the test means (in their standard deviations), or two latent
    dimensions (the two with most KL unless given) around the test means' mean."""
    latent = model.latent_dim
    mu = codes[0]
    centre = mu.mean(0)
    if use_pca:
        _, axes, _ = pca(mu.numpy())
        directions = torch.tensor(axes, dtype=torch.float32)
        proj = (mu - centre) @ directions.T
        return directions, centre, (float(proj[:, 0].std()), float(proj[:, 1].std())), ["pc1", "pc2"]
    if dims is None:
        kl = mean_kl(codes)
        dims = tuple(int(d) for d in kl.argsort()[::-1][:2]) if latent >= 2 else None
        if dims is not None and kl[list(dims)].max() < INACTIVE_KL:
            note(f"note: every latent dimension is inactive (KL < {INACTIVE_KL} nats); the two drawn, "
                 "the highest-KL ones, carry almost no information")
    if dims is None or latent < 2:
        raise UsageError("a manifold needs two latent dimensions; this model has one")
    check_dims(dims, latent, "--dims")
    if dims[0] == dims[1]:
        raise UsageError("--dims needs two different dimensions")
    centre[list(dims)] = 0.0  # the other dimensions stay at the test set's mean
    return torch.eye(latent)[list(dims)], centre, (1.0, 1.0), list(dims)
