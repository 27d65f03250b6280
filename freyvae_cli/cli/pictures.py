"""The commands that draw faces: reconstruct, sample, traverse, interpolate, manifold, project.
latent.py does the latent maths, figures.py the drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    CheckpointOpt,
    Crop,
    CropOpt,
    DataOpt,
    Device,
    DeviceOpt,
    JsonOpt,
    PretrainedOpt,
    QuietOpt,
    ScaleOpt,
    Split,
    command,
    done,
    load,
    model_file,
)
from freyvae_cli.errors import UsageError


@command
def reconstruct(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("reconstructions.png"),
    n: Annotated[int, typer.Option("-n", min=1, max=500, help="Number of images.")] = 10,
    split: Annotated[Split, typer.Option(help="Which images to use.")] = Split.test,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Originals above, their reconstructions (through the posterior mean) below."""
    from freyvae_cli import figures, latent

    figures.check_out(out)
    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data)
    x, frames = latent.split_images(ckpt, faces, split.value)
    n_used = min(n, len(x))
    originals, recons = latent.reconstruct(model, x[:n_used])
    per_row = 10
    pairs = zip(figures.chunk(originals, per_row), figures.chunk(recons, per_row), strict=True)
    rows = [r for pair in pairs for r in pair]
    title = f"{split.value} faces (odd rows) and their reconstructions (even rows)" if n_used > per_row \
        else f"{split.value} faces (top) and their reconstructions (bottom)"
    if model.autoregressive:
        title += f"; {latent.what_is_drawn(model)}"
    figures.save_image(figures.face_grid(rows, scale=scale, title=title), out)
    done(json_out, {"out": str(out), "n": n_used, "split": split.value, "frames": frames[:n_used].tolist()},
          f"wrote {out}: {n_used} {split.value} images (rows of originals above their reconstructions)")


@command
def sample(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("generated_samples.png"),
    n: Annotated[int, typer.Option("-n", min=1, max=10000, help="Number of faces.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the prior draws.")] = 0,
    cols: Annotated[int, typer.Option(min=1, help="Faces per row.")] = 10,
    scale: ScaleOpt = 4,
    npy: Annotated[Optional[Path], typer.Option("--npy", show_default=False,
                   help="Also write the faces here as a uint8 array of shape (n, 28, 20).")] = None,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """New faces: decode z drawn from the prior (PixelVAE: fitted to its training faces; each face its own noise)."""
    from freyvae_cli import figures, latent

    figures.check_out(out)
    if npy is not None:
        figures.check_out(npy, "npy")
    from freyvae_cli.prior import of_checkpoint

    model, ckpt, _ = load(model_file(checkpoint, pretrained), device, need_data=False)
    prior = of_checkpoint(ckpt)
    faces = latent.sample(model, n, seed, prior)
    title = f"z ~ {'the fitted prior' if prior.fitted else 'N(0, I)'}; " \
        f"{latent.what_is_drawn(model, shared_noise=False)}" if model.autoregressive else None
    figures.save_image(figures.face_grid(figures.chunk(faces, cols), scale=scale, title=title), out)
    if npy is not None:
        figures.save_faces_npy(faces, npy)
    payload = {"out": str(out), "n": n, "seed": seed, **({"npy": str(npy)} if npy is not None else {})}
    done(json_out, payload, f"wrote {out}{f' and {npy}' if npy is not None else ''}: {n} faces sampled from the prior")


@command
def traverse(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("latent_variations.png"),
    dim: Annotated[Optional[list[int]], typer.Option("--dim", show_default=False,
                   help="Dimension to vary (0-based, repeatable). [default: the six with most KL]")] = None,
    use_pca: Annotated[bool, typer.Option("--pca", help="Vary along the principal directions of the test faces' "
                                          "latent means instead, by their standard deviations.")] = False,
    k: Annotated[Optional[int], typer.Option("--k", min=1, show_default=False,
                 help="With --pca: how many directions. [default: 6, or the latent size if smaller]")] = None,
    steps: Annotated[int, typer.Option(min=2, max=100)] = 10,
    span: Annotated[float, typer.Option("--range", help="Vary each dimension from -RANGE to +RANGE.")] = 3.0,
    face: Annotated[int, typer.Option(min=0, help="Index of the test face whose latent mean is the centre.")] = 0,
    from_prior: Annotated[bool, typer.Option("--from-prior", help="Centre on z = 0 instead of a face.")] = False,
    gif: Annotated[Optional[Path], typer.Option(help="Also write an animation sweeping each dimension.",
                                                show_default=False)] = None,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One row per latent dimension (or principal direction), varied around a test face's latent mean."""
    import torch

    from freyvae_cli import figures, latent

    if span <= 0:
        raise UsageError(f"--range must be above 0 (got {span})")
    if use_pca and dim:
        raise UsageError("give either --dim or --pca, not both")
    if k is not None and not use_pca:
        raise UsageError("--k counts principal directions: add --pca")
    figures.check_out(out)
    if gif is not None:
        figures.check_out(gif, "gif")
    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data, summary_will_do=True)
    latent.check_dims(dim, model.latent_dim, "--dim")
    codes = latent.test_codes(model, ckpt, faces)
    latent.check_face("--face", face, len(codes[0]))
    directions, labels, found, said = (_principal(model, codes, k) if use_pca else _dimensions(model, codes, dim))
    base = torch.zeros(model.latent_dim) if from_prior else codes[0][face]
    rows = latent.traverse(model, base, directions, steps, span)
    unit = " standard deviations" if use_pca else ""
    title = f"values {-span:g} .. +{span:g}{unit} around " + ("z = 0" if from_prior else f"test face {face}")
    if model.autoregressive:
        title += f"; {latent.what_is_drawn(model)}"
    figures.save_image(figures.face_grid(rows, scale=scale, labels=labels, title=title), out)
    if said:
        ui.info(said)
    if gif is not None:
        figures.save_sweep_gif(rows, labels, scale, gif)
    what = "principal directions" if use_pca else "dimensions"
    done(json_out, {"out": str(out), "gif": str(gif) if gif else None, **found, "steps": steps, "range": span},
         f"wrote {out}: {what} {', '.join(map(str, found.get('dims') or found.get('directions')))}")


def _dimensions(model, codes, asked: list[int] | None):
    """Traverse's rows by latent dimension: the dimensions, their labels, the --json figures and a
    note on the inactive ones (when they were not asked for)."""
    import torch

    from freyvae_cli import latent
    from freyvae_cli.evaluate import INACTIVE_KL

    kl = latent.mean_kl(codes)
    dims, inactive = latent.traverse_dims(kl, asked, ui.info)
    labels = [f"dim {d} · KL {kl[d]:.2f} nats" for d in dims]
    note = (f"inactive dimensions (KL < {INACTIVE_KL} nats, not drawn): {', '.join(map(str, sorted(inactive)))}"
            if not asked and inactive and len(inactive) < model.latent_dim else "")
    found = {"dims": dims, "kl": [float(kl[d]) for d in dims], "inactive": sorted(inactive)}
    return torch.eye(model.latent_dim)[dims], labels, found, note


def _principal(model, codes, k: int | None):
    """Traverse's rows by principal direction of the test means, one standard deviation a unit."""
    from freyvae_cli import latent

    directions, share = latent.principal_directions(model, codes[0], min(6, model.latent_dim) if k is None else k)
    labels = [f"PC {i + 1} · {s:.0%} of variance" for i, s in enumerate(share)]
    found = {"method": "pca", "directions": [f"pc{i + 1}" for i in range(len(share))],
             "explained_variance": [float(s) for s in share]}
    return directions, labels, found, ""


@command
def interpolate(
    from_: Annotated[int, typer.Option("--from", min=0, help="Index of the first test face.")] = 0,
    to: Annotated[int, typer.Option("--to", min=0, help="Index of the last test face.")] = 1,
    steps: Annotated[int, typer.Option(min=2, max=200)] = 10,
    slerp: Annotated[bool, typer.Option("--slerp", help="Spherical instead of linear interpolation.")] = False,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("interpolation.png"),
    gif: Annotated[Optional[Path], typer.Option(help="Also write it as an animation.", show_default=False)] = None,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode the path between the latent means of two test faces (ends shown as originals)."""
    import numpy as np

    from freyvae_cli import figures, latent

    figures.check_out(out)
    if gif is not None:
        figures.check_out(gif, "gif")
    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data)
    x, frames = latent.split_images(ckpt, faces, "test")
    latent.check_face("--from", from_, len(x))
    latent.check_face("--to", to, len(x))
    mu, _ = latent.encode(model, x[[from_, to]])
    path = latent.decode(model, latent.interpolate(mu[0], mu[1], steps, slerp))
    ends = x[[from_, to]].squeeze(1).numpy() / 255.0
    row = np.concatenate([ends[:1], path, ends[1:]])
    title = f"originals at both ends; {latent.what_is_drawn(model)}" if model.autoregressive else None
    figures.save_image(figures.face_grid([row], scale=scale, title=title), out)
    if gif is not None:
        figures.save_sweep_gif([path], None, scale, gif)
    done(json_out, {"out": str(out), "gif": str(gif) if gif else None, "from": from_, "to": to,
                     "frames": [int(frames[from_]), int(frames[to])], "steps": steps,
                     "method": "slerp" if slerp else "linear"},
          f"wrote {out}: test face {from_} -> {to}, {steps} steps (originals at both ends)")


@command
def manifold(
    dims: Annotated[Optional[tuple[int, int]], typer.Option("--dims", show_default=False,
                    help="Two latent dimensions to span. [default: the two with most KL]")] = None,
    use_pca: Annotated[bool, typer.Option("--pca", help="Span the top two principal axes of the test means.")] = False,
    grid: Annotated[int, typer.Option(min=2, max=40)] = 20,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("manifold.png"),
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The face manifold: decode a grid over two latent directions, spaced by Gaussian quantiles."""
    from freyvae_cli import figures, latent

    if dims is not None and use_pca:
        raise UsageError("give either --dims A B or --pca, not both")
    figures.check_out(out)
    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data, summary_will_do=True)
    codes = latent.test_codes(model, ckpt, faces)
    directions, centre, scales, chosen = latent.manifold_axes(model, codes, dims, use_pca, ui.info)
    with ui.task_progress("decoding the manifold", total=grid) as advance:
        rows = latent.manifold(model, directions, grid, centre, scales, on_row=advance)
    over = "the top two principal axes" if use_pca else f"dimensions {chosen[0]} and {chosen[1]}"
    title = f"{over}; {latent.what_is_drawn(model)}" if model.autoregressive else None
    figures.save_image(figures.face_grid(rows, scale=scale, sep=1, title=title), out)
    done(json_out, {"out": str(out), "grid": grid, "directions": chosen},
         f"wrote {out}: {grid}x{grid} faces over {over}")


@command
def project(
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("latent_space_2d.png"),
    split: Annotated[Split, typer.Option(help="Which images to map.")] = Split.test,
    dims: Annotated[Optional[tuple[int, int]], typer.Option("--dims", show_default=False,
                    help="Plot two latent dimensions instead of the PCA projection.")] = None,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Draw small faces over the points.")] = False,
    with_: Annotated[Optional[list[Path]], typer.Option(
        "--with", show_default=False, help="Also mark these images of your own on the map (repeatable).")] = None,
    crop: CropOpt = Crop.centre,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """2-D map of the latent means (PCA), coloured by frame index in the video; --with marks your images."""
    import torch

    from freyvae_cli import figures, latent
    from freyvae_cli.data.images import read_faces

    figures.check_out(out, "plot")
    own = read_faces(with_, crop.value) if with_ else None
    model, ckpt, faces = load(model_file(checkpoint, pretrained), device, data,
                              summary_will_do=split is Split.test and not thumbnails)
    latent.check_dims(dims, model.latent_dim, "--dims")
    if faces is None:  # a pretrained model without the data file: its stored test means
        x, frames = None, ckpt["split"]["test"].numpy()
        mu = latent.test_codes(model, ckpt, None)[0].numpy()
    else:
        x, frames = latent.split_images(ckpt, faces, split.value)
        mu = latent.encode(model, x)[0].numpy()
    own_mu = latent.encode(model, torch.from_numpy(own).unsqueeze(1))[0].numpy() if with_ else mu[:0]
    if dims is None:
        points, axes, share = latent.pca(mu)
        labels = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
        own_points = (own_mu - mu.mean(0)) @ axes.T  # the map's own projection
    else:
        points, labels, share = mu[:, list(dims)], (f"z[{dims[0]}]", f"z[{dims[1]}]"), []
        own_points = own_mu[:, list(dims)]
    yours = list(zip(with_ or [], own_points, strict=True))
    marks = [(p.name, point) for p, point in yours]
    title = f"latent means of the {len(mu)} {split.value} images" + (" and yours (stars)" if marks else "")
    figures.save_latent_map(points, frames, out, labels, title,
                            thumbnails=x.squeeze(1).numpy() / 255.0 if thumbnails else None, marks=marks)
    done(json_out, {"out": str(out), "split": split.value, "n": len(mu),
                     "method": "dims" if dims else "pca", "explained_variance": [float(s) for s in share],
                     "with": [{"path": str(p), "point": point.tolist()} for p, point in yours]},
          f"wrote {out}: {len(mu)} {split.value} images" + (f" and {len(marks)} of yours" if marks else ""))
