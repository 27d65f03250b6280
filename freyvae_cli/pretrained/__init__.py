"""The two models shipped with freyvae, so that a fresh install draws faces at once.

Each is a checkpoint of weights only (no optimizer state, no faces) made by
scripts/make_pretrained.py from a real run, with a model card (`card`: the command that made it,
its figures, the data's pixel hash) and the test faces' latent means and log-variances
(`summary`), from which traverse, manifold, project and explore work without the data file.
Each file is checked against its SHA-256 before it is opened.
"""

from __future__ import annotations

from pathlib import Path

from freyvae_cli.errors import FreyError
from freyvae_cli.inputs import MAX_BYTES, read_bytes

NAMES = ("seed", "pixelvae")
# Written by scripts/make_pretrained.py together with the files.
SHA256 = {
    "seed": "98b04ac88982a423a406e17585e48669ac714aa7fa394c9b00935d7f29800037",
    "pixelvae": "35d2256437d87c1c5b881ed7e6664b3835355aad6fa8525313f9cc35918dbb02",
}


class PretrainedError(FreyError):
    """A packaged model is missing or damaged: the installation needs repairing."""


def path(name: str) -> Path:
    """The packaged file of a pretrained model, after checking its SHA-256."""
    import hashlib  # here, not at import: every command's --help imports this module for NAMES

    where = Path(__file__).with_name(f"{name}.pth")
    fix = "reinstall freyvae (pip install --force-reinstall freyvae)"
    if not where.is_file():
        raise PretrainedError(f"the pretrained model {name} is missing from this installation ({where}); {fix}")
    digest = hashlib.sha256(read_bytes(where, PretrainedError, MAX_BYTES)).hexdigest()
    if digest != SHA256[name]:
        raise PretrainedError(f"the pretrained model {name} ({where}) is damaged: its SHA-256 is not the one "
                              f"freyvae shipped; {fix}")
    return where
