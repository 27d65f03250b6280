"""The Frey Face data: load and check the .mat file, split it, download it.

The file holds one 8-bit grey 28x20 face per column of the matrix `ff` (560 x N). Faces of your own
(a folder of images, a .npy/.npz array) are sources.py's.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from freyvae_cli.atomic_files import atomic_write
from freyvae_cli.config import default_data_path
from freyvae_cli.data import matfile
from freyvae_cli.errors import FreyError, UsageError
from freyvae_cli.inputs import MAX_BYTES, MAX_FACES, check, megabytes, read_bytes

HEIGHT, WIDTH = 28, 20
PIXELS = HEIGHT * WIDTH
URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"


class DataError(FreyError):
    """The data file is missing or is not the Frey Face file."""


def data_url() -> str:
    """`FREYVAE_DATA_URL` (a mirror) if set, else the canonical address."""
    return os.environ.get("FREYVAE_DATA_URL") or URL


def data_path(given: str | Path | None = None, trained_on: str | None = None) -> Path:
    """--data, else $FREYVAE_DATA, else the file the model was trained on (if it is there), else
    data/frey_rawface.mat."""
    if given is not None:
        return Path(given)
    if not os.environ.get("FREYVAE_DATA") and trained_on and Path(trained_on).exists():
        return Path(trained_on)
    return default_data_path()


def _check_ff(ff: object, where: str) -> np.ndarray:
    """Return `ff` as (N, 28, 20) uint8 faces, or say exactly what is wrong with it."""
    if hasattr(ff, "toarray"):  # scipy reads a sparse matrix as one, whose dtype is its values'
        raise DataError(f"{where}: 'ff' is a sparse matrix; expected a full numeric 560 x N matrix of pixels")
    if not isinstance(ff, np.ndarray) or ff.dtype.kind not in "uif":
        kind = getattr(ff, "dtype", type(ff).__name__)
        raise DataError(f"{where}: 'ff' has type {kind}; expected a numeric 560 x N matrix of pixels")
    if ff.ndim != 2 or ff.shape[0] != PIXELS or ff.shape[1] < 2:
        raise DataError(f"{where}: 'ff' has shape {ff.shape}; expected 560 x N (28x20 faces, N >= 2)")
    if ff.shape[1] > MAX_FACES:
        raise DataError(f"{where}: 'ff' holds {ff.shape[1]} faces, more than the {MAX_FACES} faces freyvae reads")
    if ff.dtype != np.uint8:
        if ff.dtype.kind == "f" and not np.isfinite(ff).all():
            raise DataError(f"{where}: 'ff' contains NaN or infinite values; expected pixels 0..255")
        if ff.min() < 0 or ff.max() > 255:
            raise DataError(
                f"{where}: 'ff' has values from {ff.min()} to {ff.max()}; expected pixels 0..255"
            )
        if ff.dtype.kind == "f" and not (ff == np.round(ff)).all():
            raise DataError(f"{where}: 'ff' has fractional values; expected integer pixels 0..255")
    return np.ascontiguousarray(ff.T.reshape(-1, HEIGHT, WIDTH).astype(np.uint8))


def _read_mat(raw: bytes) -> tuple[str, object]:
    """("ok", (variable names, ff or None)) or ("error", exception type name)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(io.BytesIO(raw))
    except NotImplementedError:
        return "error", "NotImplementedError"
    except MemoryError:
        return "error", "MemoryError"
    except Exception as e:  # scipy raises many types on foreign bytes; all mean the same to a user
        return "error", type(e).__name__
    return "ok", ([k for k in mat if not k.startswith("__")], mat.get("ff"))


def _limit_memory(extra: int) -> None:
    """Let this process map at most `extra` more bytes (Linux): a file that unpacks without end
    makes scipy raise MemoryError instead of taking the machine's memory."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, ValueError):
        pass  # no /proc, or a lower limit already set: the reader runs as it is


def _read_mat_isolated(raw: bytes) -> tuple[str, object]:
    """_read_mat in a forked child: scipy's MAT reader can crash the interpreter on corrupt bytes
    (the fuzz tests found a segmentation fault), and a crash must become an error message."""
    if not hasattr(os, "fork"):
        return _read_mat(raw)
    import pickle
    import warnings

    rfd, wfd = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: read, send the result back, leave without running any cleanup
        try:
            os.close(rfd)
            _limit_memory(4 * MAX_BYTES)
            with os.fdopen(wfd, "wb") as pipe:
                pipe.write(pickle.dumps(_read_mat(raw)))
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    if not payload:
        return "error", "crash in the MATLAB reader"
    return pickle.loads(payload)  # our own child's bytes


def parse_mat(raw: bytes, where: str) -> np.ndarray:
    """Faces (N, 28, 20) uint8 from the bytes of a .mat file."""
    v73 = f"{where} is a MATLAB v7.3 (HDF5) file; save it with -v7 (scipy reads v7 and older)"
    if raw[:8] == b"\x89HDF\r\n\x1a\n" or raw[512:520] == b"\x89HDF\r\n\x1a\n":
        raise DataError(v73)
    too_large = f"{where} unpacks to more than the {megabytes(MAX_BYTES)} freyvae reads from one file"
    try:
        plain = matfile.read(raw)  # a plain file, such as the Frey Face file, without importing scipy
    except matfile.TooLarge:
        raise DataError(f"{too_large} (a decompression bomb?)") from None
    status, result = ("ok", (list(plain), plain.get("ff"))) if plain is not None else _read_mat_isolated(raw)
    if status == "error":
        if result == "NotImplementedError":
            raise DataError(v73)
        if result == "MemoryError":
            raise DataError(f"{too_large} (a decompression bomb?)")
        raise DataError(f"{where} is not a readable MATLAB .mat file ({result}); expected frey_rawface.mat")
    names, ff = result
    if ff is None:
        raise DataError(f"{where} has no variable 'ff' (found: {', '.join(names) or 'nothing'}); "
                        "expected frey_rawface.mat")
    return _check_ff(ff, where)


def load_faces(path: str | Path) -> np.ndarray:
    """Faces (N, 28, 20) uint8 from a .mat file, with a clear error for every way it can be wrong."""
    path = Path(path)
    check(path, DataError)
    if not path.exists():
        raise DataError(
            f"data file {path} not found; run `freyvae download --to {path}` or pass --data PATH"
        )
    if path.is_dir():
        raise DataError(f"data path {path} is a folder; pass the .mat file itself with --data")
    raw = read_bytes(path, DataError)
    if not raw:
        raise DataError(f"data file {path} is empty; download it again with `freyvae download --to {path}`")
    return parse_mat(raw, str(path))


def pixel_hash(faces: np.ndarray) -> str:
    """sha256 of the pixels as the (560, N) uint8 matrix `ff` (the hash in shared/data/README)."""
    ff = np.ascontiguousarray(faces.reshape(len(faces), PIXELS).T)
    return hashlib.sha256(ff.tobytes()).hexdigest()


def split_indices(n: int, test_fraction: float = 0.2, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with a seeded generator; the first round((1-f)*n) indices train, the rest test.
    (config.check_options says which fractions are valid at all; this, which leave both sides faces.)"""
    perm = np.random.default_rng(split_seed).permutation(n)
    n_train = round((1.0 - test_fraction) * n)
    if n_train < 1 or n_train >= n:
        raise UsageError(f"--test-fraction {test_fraction} leaves an empty split of {n} images")
    return perm[:n_train], perm[n_train:]


LITERATURE_SIZES = (1565, 200, 200)  # train, validation, test of the 1965 faces


def literature_split(n: int, seed: int) -> dict[str, np.ndarray]:
    """The published protocol (Berg et al.'s Sylvester code, utils/load_data.py): the rows shuffled
    by `np.random.seed(seed); np.random.shuffle(rows)`, then the first 1565 train, the next 200
    validate, the last 200 test. Other data sizes keep the same shares (at least one image each)."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)  # the legacy generator that np.random.seed seeds
    held = max(1, round(n * LITERATURE_SIZES[2] / sum(LITERATURE_SIZES)))
    if n - 2 * held < 1:
        raise UsageError(f"--split literature needs at least 3 images; the data has {n}")
    return {"train": order[:n - 2 * held], "val": order[n - 2 * held:n - held], "test": order[n - held:]}


def download(
    dest: str | Path,
    url: str | None = None,
    timeout: float = 60.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> np.ndarray:
    """Fetch the file, check it is the Frey Face data, then move it into place atomically."""
    dest = Path(dest)
    url = url or data_url()
    chunks: list[bytes] = []
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            got = 0
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                got += len(chunk)
                if got > MAX_BYTES:
                    raise DataError(f"{url} sends more than {megabytes(MAX_BYTES)}; it is not the Frey Face "
                                    "file (1.1 MB), so nothing was saved")
                if on_progress:
                    on_progress(got, total)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {url} ({reason}); fetch it by hand and pass --data PATH"
        ) from None
    raw = b"".join(chunks)
    faces = parse_mat(raw, f"the file downloaded from {url}")
    atomic_write(dest, lambda f: f.write(raw))
    return faces
