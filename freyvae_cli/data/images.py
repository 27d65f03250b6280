"""Your own pictures as faces: any image Pillow opens, turned into the 28x20 grey faces the models read.

The one conversion (docs/your-images.md), the same in `encode`, `project --with`, `train --data
FOLDER` and the explorer's page (freyvae_cli/web/app.js):
  1. the first frame, turned upright as its EXIF orientation says;
  2. transparent parts over white; grey as ITU-R 601 luma, 0.299 R + 0.587 G + 0.114 B, unrounded;
     16-bit grey scaled from 0..65535 to 0..255;
  3. the largest centred box of the faces' 20:28 aspect (crop "none": the whole image, squashed);
  4. resized to 20x28 with Pillow's box filter (each output pixel the mean of the input pixels whose
     centres fall inside it), then rounded to whole grey levels.
Files are untrusted: every way one can be wrong is one ImageError line that names it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from freyvae_cli.data.frey import HEIGHT, WIDTH
from freyvae_cli.errors import FreyError
from freyvae_cli.inputs import MAX_FACES, check

MAX_PIXELS = 50_000_000  # a 50-megapixel photo; anything larger is refused before it is decoded
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own decompression-bomb guard, lowered from 89 M to this
CROPS = ("centre", "none")
KINDS = "PNG, JPEG, BMP, TIFF, WebP or GIF"


class ImageError(FreyError):
    """A file that cannot become a face: not an image, truncated, too large or too small."""


def open_image(path: Path) -> Image.Image:
    """The decoded first frame of an image file, upright, or an ImageError that says what is wrong."""
    check(path, ImageError)
    if not path.exists():
        raise ImageError(f"{path} not found")
    if path.is_dir():
        raise ImageError(f"{path} is a folder; give image files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # closed here, whatever it holds (a GIF keeps its file open)
                im.seek(0)
                im.load()
                _check_levels(im, path)
                return ImageOps.exif_transpose(im)  # a copy, turned or not
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(f"{path} has more than {MAX_PIXELS // 10**6} megapixels, more than this tool decodes "
                         "(a decompression bomb?); shrink it first") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path} is not an image Pillow can read ({KINDS})") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        reason = (str(e).splitlines() or [type(e).__name__])[0][:80]
        raise ImageError(f"{path} is truncated or corrupt ({reason}); save it again") from None


def _check_levels(im: Image.Image, path: Path) -> None:
    """Grey levels that grey() can scale: finite floats, and integers of at most 16 bits (a TIFF
    of 32-bit integers opens as mode I, as 16-bit grey does in older Pillows)."""
    if im.mode == "F" and not np.isfinite(np.asarray(im)).all():
        raise ImageError(f"{path} has NaN or infinite pixel values; save it with finite grey levels")
    if im.mode == "I" and im.format == "TIFF" and max(im.tag_v2.get(258, (16,))) > 16:
        raise ImageError(f"{path} is a 32-bit integer image, whose grey levels have no agreed white; "
                         "save it as 8- or 16-bit grey")


def grey(im: Image.Image) -> Image.Image:
    """The image as 32-bit float grey levels 0..255 (mode F): transparency over white, 16 bits scaled."""
    if im.mode.startswith("I"):  # 16-bit grey (I;16, I;16B, ...; older Pillows open such PNGs as I)
        return im.convert("F").point(lambda v: v * (255 / 65535))
    if im.mode == "F":
        return im
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, palette, YCbCr, 1-bit
    return im.convert("F")


def crop_box(width: int, height: int, crop: str) -> tuple[float, float, float, float]:
    """The region that becomes the face: the largest centred box of aspect 20:28, or everything."""
    if crop == "none":
        return 0.0, 0.0, float(width), float(height)
    if width * HEIGHT > height * WIDTH:  # wider than a face: keep the full height
        w = height * WIDTH / HEIGHT
        return (width - w) / 2, 0.0, (width + w) / 2, float(height)
    h = width * HEIGHT / WIDTH
    return 0.0, (height - h) / 2, float(width), (height + h) / 2


def to_face(im: Image.Image, crop: str = "centre") -> np.ndarray:
    """A decoded image as one face, uint8 (28, 20)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}")
    width, height = im.size
    small = grey(im).resize((WIDTH, HEIGHT), Image.Resampling.BOX, box=crop_box(width, height, crop))
    return np.clip(np.rint(np.asarray(small, dtype=np.float64)), 0, 255).astype(np.uint8)


def read_face(path: str | Path, crop: str = "centre") -> np.ndarray:
    """The face in an image file, uint8 (28, 20)."""
    path = Path(path)
    im = open_image(path)
    if im.width < WIDTH or im.height < HEIGHT:
        raise ImageError(f"{path} is {im.width}x{im.height} pixels; a face needs at least {WIDTH}x{HEIGHT} "
                         "(width x height)")
    return to_face(im, crop)


def read_faces(paths: list[Path], crop: str = "centre") -> np.ndarray:
    """Faces (n, 28, 20) uint8 from image files; the first bad file stops it, named."""
    return np.stack([read_face(p, crop) for p in paths])


def read_folder(folder: Path, files: list[str] | None = None, skip_bad: bool = False,
                warn=lambda message: None) -> tuple[np.ndarray, list[str]]:
    """The faces of every image in a folder, in sorted name order (hidden files and subfolders are
    not read), and their names. `files` reads just those names (a model's own list). A file that is
    not a readable image stops it, named with the others, unless `skip_bad` (then `warn` names it)."""
    names = files if files is not None else sorted(
        p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not names:
        raise ImageError(f"{folder} holds no image files (subfolders are not read); put {KINDS} files in it")
    if len(names) > MAX_FACES:
        raise ImageError(f"{folder} holds {len(names)} files, more than the {MAX_FACES} faces freyvae reads")
    faces, kept, bad = [], [], []
    for name in names:
        try:
            faces.append(read_face(folder / name))
            kept.append(name)
        except ImageError as e:
            bad.append((name, str(e).removeprefix(str(folder / name)).strip()))
    if bad:
        more = f"; {len(bad) - 3} more" if len(bad) > 3 else ""
        listed = "; ".join(f"{name} {why}" for name, why in bad[:3]) + more
        if not skip_bad:
            raise ImageError(f"{len(bad)} of the {len(names)} files in {folder} cannot be read: {listed}. "
                             "Remove them, or pass --skip-bad to leave them out")
        warn(f"left out {len(bad)} of the {len(names)} files in {folder}: {listed}")
    if not faces:
        raise ImageError(f"none of the {len(names)} files in {folder} is a readable image ({KINDS})")
    return np.stack(faces), kept
