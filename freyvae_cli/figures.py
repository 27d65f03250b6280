"""Every picture the tool draws. Face grids use Pillow only (fast to import); plots use matplotlib.

Faces are 28x20, so grids are upscaled by nearest neighbour (`scale`) with thin white separators.
All files are written atomically, in the format their extension names.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from freyvae_cli.atomic_files import atomic_write, check_writable

GRID_FORMATS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif")
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")
_PIL_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}


def check_out(path: str | Path, kind: str = "grid") -> Path:
    """Fail before any work if `path` cannot be written as a face grid, a plot, a GIF or an array."""
    formats = {"grid": GRID_FORMATS, "plot": PLOT_FORMATS, "gif": ("gif",), "npy": ("npy",)}[kind]
    return check_writable(path, formats)


def as_uint8(faces: np.ndarray) -> np.ndarray:
    """Faces in [0, 1] as the grey levels every figure shows."""
    return (np.clip(faces, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_faces_npy(faces: np.ndarray, path: str | Path) -> Path:
    """Faces (n, 28, 20) in [0, 1] as a uint8 .npy array of the grey levels the figures show."""
    buffer = io.BytesIO()
    np.save(buffer, as_uint8(faces), allow_pickle=False)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def face_grid(
    rows: Sequence[np.ndarray],
    scale: int = 4,
    sep: int = 2,
    labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """One image from rows of faces: each row an array (k, 28, 20) of values in [0, 1]."""
    from PIL import Image, ImageDraw

    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    cols = max(len(r) for r in rows)
    font = _font(max(10, 3 * scale)) if labels or title else None  # the server draws bare faces per request
    label_w = 0
    if labels:
        draw = ImageDraw.Draw(Image.new("L", (1, 1)))
        label_w = max(int(draw.textlength(t, font=font)) for t in labels) + 3 * sep + 4
    title_h = (font.size + 4 * sep) if title else 0
    width = label_w + cols * w + (cols + 1) * sep
    height = title_h + len(rows) * h + (len(rows) + 1) * sep
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((sep + 2, 2 * sep), title, fill=0, font=font)
    for r, row in enumerate(rows):
        top = title_h + sep + r * (h + sep)
        if labels:
            draw.text((sep + 2, top + h // 2), labels[r], fill=0, font=font, anchor="lm")
        for c, face in enumerate(row):
            pixels = as_uint8(face)
            tile = Image.fromarray(pixels, mode="L").resize((w, h), Image.NEAREST)
            canvas.paste(tile, (label_w + sep + c * (w + sep), top))
    return canvas


def chunk(faces: np.ndarray, per_row: int) -> list[np.ndarray]:
    """Split (n, 28, 20) faces into rows of at most `per_row`."""
    return [faces[i:i + per_row] for i in range(0, len(faces), per_row)]


def save_image(image, path: str | Path) -> Path:
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    fmt = _PIL_FORMAT.get(ext, ext.upper())
    return atomic_write(path, lambda f: image.save(f, format=fmt))


def png_bytes(image) -> bytes:
    """A Pillow image as PNG bytes, for a server to send."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_gif(frames: Sequence, path: str | Path, ms_per_frame: int = 90) -> Path:
    """An endlessly looping animation from Pillow images of equal size."""
    first, *rest = frames
    return atomic_write(
        path, lambda f: first.save(f, format="GIF", save_all=True, append_images=rest,
                                   duration=ms_per_frame, loop=0)
    )


def save_sweep_gif(rows: Sequence[np.ndarray], labels: Sequence[str] | None, scale: int, path: str | Path) -> Path:
    """An animation that walks every row's faces forward and back together, one column a frame."""
    steps = len(rows[0])
    order = list(range(steps)) + list(range(steps - 2, 0, -1))
    return save_gif([face_grid([r[[i]] for r in rows], scale=scale, labels=labels) for i in order], path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip(".").replace("jpg", "jpeg"), dpi=120,
                bbox_inches="tight")
    _plt().close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def save_loss_curve(history: list[dict], path: str | Path) -> Path:
    """Train, validation (where there is one) and test negative ELBO per epoch, the KL part on a
    second panel, and the best validation epoch marked."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]
    splits = ["train"] + [s for s in ("val", "test") if history[-1].get(f"{s}_loss") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for s in splits:
        label = "validation" if s == "val" else s
        ax1.plot(epochs, [r[f"{s}_loss"] for r in history], "o-", ms=2, label=label)
        ax2.plot(epochs, [r[f"{s}_kl"] for r in history], "o-", ms=2, label=label)
    ax1.set(xlabel="epoch", ylabel="nats per image", title="negative ELBO (reconstruction + KL)")
    ax2.set(xlabel="epoch", ylabel="nats per image", title="KL part")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    last = history[-1]
    if len(history) >= 20:  # the first epochs (thousands of nats for 8-bit likelihoods) would flatten the rest
        losses = [r[f"{s}_loss"] for r in history for s in splits]
        late = [r[f"{s}_loss"] for r in history[len(history) // 10:] for s in splits]
        margin = 0.05 * (max(late) - min(losses))
        ax1.set_ylim(min(losses) - margin, max(late) + margin)
    if "val" in splits:
        best = min(history, key=lambda r: r["val_loss"])
        ax1.axvline(best["epoch"], color="grey", ls=":", lw=1)
        ax1.text(0.97, 0.96, f"best validation: epoch {best['epoch']} (dotted),\ntest {best['test_loss']:.1f} there",
                 transform=ax1.transAxes, ha="right", va="top", fontsize=8)
    else:
        ax1.annotate(f"test {last['test_loss']:.1f}", (epochs[-1], last["test_loss"]),
                     textcoords="offset points", xytext=(-40, 12), fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def save_compare_plot(curves: list[tuple[str, list[dict]]], path: str | Path, kl: bool = False) -> Path:
    """The test loss of every run per epoch on one figure (and their KL below, with kl=True);
    `curves` pairs each run's legend label with its history."""
    plt = _plt()
    fig, axes = plt.subplots(2 if kl else 1, 1, figsize=(8, 6.4 if kl else 3.8), sharex=True, squeeze=False)
    for label, history in curves:
        epochs = [r["epoch"] for r in history]
        line, = axes[0][0].plot(epochs, [r["test_loss"] for r in history], "-", lw=1.5, label=label)
        if kl:
            axes[1][0].plot(epochs, [r["test_kl"] for r in history], "-", lw=1.5, color=line.get_color())
    axes[0][0].set(ylabel="test loss, nats per image", title="negative ELBO on the test split")
    axes[0][0].legend(fontsize=8)
    if kl:
        axes[1][0].set(ylabel="test KL, nats per image", title="KL part")
    axes[-1][0].set(xlabel="epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save_figure(fig, path)


def save_latent_map(
    points: np.ndarray,
    frames: np.ndarray,
    path: str | Path,
    axis_labels: tuple[str, str],
    title: str,
    thumbnails: np.ndarray | None = None,
    n_thumbnails: int = 40,
    marks: Sequence[tuple[str, np.ndarray]] = (),
) -> Path:
    """Scatter of 2-D latent positions coloured by frame index; optional faces drawn over it, and
    `marks` (name, point): images of the user's own, as labelled red stars."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    sc = ax.scatter(points[:, 0], points[:, 1], c=frames, cmap="viridis", s=10, alpha=0.85)
    fig.colorbar(sc, ax=ax, label="frame index in the video")
    if thumbnails is not None:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        order = np.argsort(frames)
        picks = order[np.linspace(0, len(order) - 1, min(n_thumbnails, len(order))).astype(int)]
        for i in picks:
            grey = np.repeat(np.clip(thumbnails[i], 0, 1)[..., None], 3, axis=2)  # RGB: no colour map
            box = OffsetImage(grey, zoom=1.0)
            ax.add_artist(AnnotationBbox(box, points[i], frameon=True, pad=0.1,
                                         bboxprops={"lw": 0.4, "ec": "white"}))
    for name, (x, y) in marks:
        ax.scatter([x], [y], marker="*", s=260, c="red", edgecolors="black", linewidths=0.8, zorder=5)
        ax.annotate(name, (x, y), xytext=(7, 7), textcoords="offset points", fontsize=9, zorder=6,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set(xlabel=axis_labels[0], ylabel=axis_labels[1], title=title)
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def save_sweep_plot(rows: list[dict], importances: dict[str, float], path: str | Path) -> Path:
    """A study at a glance: the objective of each trial (best so far as a line), each searched
    parameter's importance, and the trade-off its trials made: validation reconstruction against
    KL, coloured by the most important parameter (nats per image)."""
    plt = _plt()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    done = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["number"])
    for state, marker in (("complete", "o"), ("pruned", "x")):
        pts = [r for r in done if r["state"] == state]
        if pts:
            ax1.plot([r["number"] for r in pts], [r["value"] for r in pts], marker, ls="none", label=state)
    complete = [r for r in done if r["state"] == "complete"]
    if complete:
        best = np.minimum.accumulate([r["value"] for r in complete])
        ax1.step([r["number"] for r in complete], best, where="post", color="k", lw=1, label="best so far")
    ax1.set(xlabel="trial", ylabel="best validation -ELBO (nats/image)", title="objective by trial")
    ax1.legend(fontsize=8)
    names = list(importances) or sorted({k for r in rows for k in r["params"]})
    ax2.barh(names[::-1], [importances.get(n, 0.0) for n in names[::-1]])  # one parameter: all of it
    ax2.set(xlabel="share of the objective's variance (fANOVA)",
            title="parameter importance" if importances else "importance: too few finished trials")
    key = names[0] if names else None
    pts = [r for r in complete if r.get("val_kl") is not None]
    if pts:
        colours = [r["params"].get(key) for r in pts]
        numeric = all(isinstance(c, (int, float)) for c in colours)
        sc = ax3.scatter([r["val_kl"] for r in pts], [r["val_reconstruction"] for r in pts],
                         c=colours if numeric else None, cmap="viridis",
                         norm="log" if numeric and min(colours) > 0 else None)
        if numeric:
            fig.colorbar(sc, ax=ax3, label=key)
    ax3.set(xlabel="validation KL (nats/image)", ylabel="validation reconstruction (nats/image)",
            title="reconstruction against KL")
    fig.tight_layout()
    return _save_figure(fig, path)
