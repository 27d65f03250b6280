"""--data of any kind: the Frey Face .mat file (frey.py), a folder of images of your own (images.py
makes each a face) or a .npy/.npz array of uint8 faces (N, 28, 20); what they were is kept in
checkpoints as data_source (kind, path, images, and a folder's file names in the order read)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from freyvae_cli.data.frey import HEIGHT, WIDTH, DataError, data_url, download, load_faces, pixel_hash
from freyvae_cli.inputs import MAX_FACES, check

__all__ = ["load_data", "load_array", "load_or_download", "pixel_hash", "MIN_OWN"]

MIN_OWN = 10  # faces in a data set of your own, at the least
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def load_data(path: str | Path, files: list[str] | None = None, skip_bad: bool = False,
              warn: Callable[[str], None] = lambda message: None) -> tuple[np.ndarray, dict]:
    """Faces (N, 28, 20) uint8 and what they are (a checkpoint keeps it as data_source), from a .mat
    file, a .npy/.npz array or a folder of images (`files`: just those, in that order, where all
    are there; `skip_bad`: leave out unreadable files), with a clear error for every way it can be wrong."""
    path = Path(path)
    check(path, DataError)
    if path.is_dir():
        from freyvae_cli.data.images import read_folder

        if files is not None and not all((path / name).is_file() for name in files):
            files = None  # not the folder the model knew: read it all, and let the pixel hash tell
        faces, names = read_folder(path, files, skip_bad, warn)
        source = {"kind": "folder", "path": str(path), "images": len(faces), "files": names}
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        faces = load_array(path)
        source = {"kind": path.suffix.lower()[1:], "path": str(path), "images": len(faces)}
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{path} is one image; --data takes a folder of face images (put it there with the "
                        "others), a .npy/.npz of faces or the Frey .mat file")
    else:
        faces = load_faces(path)
        return faces, {"kind": "mat", "path": str(path), "images": len(faces)}
    if len(faces) < MIN_OWN:
        raise DataError(f"{path} holds {len(faces)} faces; a data set needs at least {MIN_OWN}")
    return faces, source


def _read_checked(f, where: str) -> np.ndarray:
    """The array in an open .npy stream, its header checked before any data is read (a header can
    claim any size): uint8 faces (N, 28, 20), never pickled objects."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except Exception as e:  # numpy raises ValueError, EOFError... on foreign bytes
        raise DataError(f"{where} is not a readable .npy array ({type(e).__name__}); save it with numpy.save") from None
    if dtype != np.uint8 or len(shape) != 3 or tuple(shape[1:]) != (HEIGHT, WIDTH):
        raise DataError(f"{where} holds an array of shape {tuple(shape)} and type {dtype}; expected uint8 faces "
                        f"shaped (N, {HEIGHT}, {WIDTH}), e.g. numpy.save(path, faces.astype(numpy.uint8))")
    if shape[0] > MAX_FACES:  # what read_array would allocate, whatever the file's own size
        raise DataError(f"{where} holds {shape[0]} faces, more than the {MAX_FACES} faces freyvae reads")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def load_array(path: Path) -> np.ndarray:
    """Faces (N, 28, 20) uint8 from a .npy file, or a .npz holding exactly one such array."""
    import zipfile

    check(path, DataError)
    if not path.is_file():
        raise DataError(f"data file {path} not found; pass --data PATH")
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                return _read_checked(f, str(path))
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(names) != 1:
                listed = ", ".join(n.removesuffix(".npy") for n in names[:5])
                raise DataError(f"{path} holds {len(names)} arrays ({listed}); expected one array of faces "
                                f"(N, {HEIGHT}, {WIDTH}) uint8")
            with zf.open(names[0]) as f:
                return _read_checked(f, str(path))
    except DataError:
        raise
    except Exception as e:  # truncated data, a broken zip: numpy and zipfile raise many types
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}); save it again") from None


def load_or_download(path: Path, ask: Callable[[str], bool] | None, said: Callable[[str], None],
                     files: list[str] | None = None, skip_bad: bool = False,
                     warn: Callable[[str], None] = lambda message: None) -> tuple[np.ndarray, dict]:
    """load_data(path); a missing .mat file is first offered for download where `ask` can put the
    question (a person at a terminal); elsewhere load_data says what to run."""
    if (ask is not None and not path.exists() and path.suffix.lower() not in ARRAY_SUFFIXES
            and ask(f"{path} not found. Download it from {data_url()}?")):
        download(path)
        said(f"saved {path}")
    return load_data(path, files, skip_bad, warn)
