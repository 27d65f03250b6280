"""Checkpoints: written atomically, opened only with weights_only=True, checked before use.

A checkpoint is a plain dict of tensors and Python primitives:
  format, model, optimizer, epoch, step, config, split (train/test, and val for the literature
  split: index tensors), data_hash,
  history (per-epoch numbers), rng (generator states), progress (mid-epoch state or None), versions;
  a pretrained model (freyvae_cli/pretrained/) has no optimizer, rng or progress, and adds card
  (how it was made, its figures) and summary (its test faces' latent means and log-variances);
  a PixelVAE's has prior, the Gaussian fitted to its training faces (prior.py).
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from freyvae_cli.atomic_files import atomic_write
from freyvae_cli.config import PIXELVAE_LIKELIHOODS, TrainConfig, config_problem
from freyvae_cli.errors import FreyError
from freyvae_cli.inputs import MAX_CHECKPOINT_BYTES, MAX_FACES, check
from freyvae_cli.prior import of_checkpoint
from freyvae_cli.prior import problem as prior_problem
from freyvae_cli.vae import VAE

FORMAT = "freyvae-checkpoint-1"
REQUIRED = ("format", "model", "epoch", "config", "split", "history")


class CheckpointError(FreyError):
    """The file is not a usable freyvae checkpoint."""


def save(path: str | Path, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Open a checkpoint safely: no pickled code runs, and every field is checked."""
    path = Path(path)
    check(path, CheckpointError, MAX_CHECKPOINT_BYTES)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; train one with `freyvae train` or pass --checkpoint PATH")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .pth file itself")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols on stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "GLOBAL" in str(e) or _pickled_code(path):
            raise CheckpointError(
                f"refused to open {path}: it holds Python objects that could run code when loaded, "
                "which a freyvae checkpoint never does"
            ) from None
        if "weights_only" in str(e):  # torch's long advice on weights_only is no reason a user can use
            first = "unreadable pickle data"
        raise CheckpointError(f"{path} is not a freyvae checkpoint (corrupt or truncated: {first[:80]})") from None
    except Exception as e:  # torch raises a dozen types on foreign bytes; all mean "not a checkpoint"
        raise CheckpointError(
            f"{path} is not a freyvae checkpoint (corrupt or truncated: {type(e).__name__})"
        ) from None
    return validate(ckpt, path)


def _pickled_code(path: Path) -> bool:
    """Whether a file that torch refused is a plain pickle naming Python callables (what could run
    code), rather than bytes that are no pickle at all. Its first MB is enough to tell."""
    import pickletools

    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head.startswith(b"PK"):  # a zip: torch names a forbidden global itself
        return False
    try:
        return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX")
                   for op, _, _ in pickletools.genops(io.BytesIO(head)))
    except Exception:  # not a pickle: pickletools raises ValueError and others on foreign bytes
        return False


def validate(ckpt: object, path: Path) -> dict:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a freyvae checkpoint (no '{FORMAT}' marker)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    cfg = ckpt["config"]
    if not isinstance(cfg, dict) or "latent_dim" not in cfg or "likelihood" not in cfg:
        raise CheckpointError(f"{path} has no valid config (latent size and likelihood)")
    problem = config_problem(cfg)
    if problem is not None:
        raise CheckpointError(f"{path} has an invalid setting in its config: {problem}")
    if type(ckpt["epoch"]) is not int or ckpt["epoch"] < 0:
        raise CheckpointError(f"{path} has an invalid epoch {ckpt['epoch']!r:.40}")
    problem = _split_problem(ckpt["split"])
    if problem is not None:
        raise CheckpointError(f"{path} has no valid train/test split: {problem}")
    if not _valid_history(ckpt["history"]):
        raise CheckpointError(f"{path} has an invalid history (expected a list of per-epoch records of numbers)")
    if not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path} has no model weights")
    if "card" in ckpt and not _plain_record(ckpt["card"]):
        raise CheckpointError(f"{path} has an invalid model card (expected names to text and numbers)")
    problem = _summary_problem(ckpt.get("summary"), len(ckpt["split"]["test"]), cfg["latent_dim"])
    if problem is not None:
        raise CheckpointError(f"{path} has an invalid summary of its test faces: {problem}")
    problem = prior_problem(ckpt.get("prior"), cfg["latent_dim"])
    if problem is not None:
        raise CheckpointError(f"{path} has an invalid fitted prior: {problem}")
    source = ckpt.get("data_source")
    if source is not None and not (isinstance(source, dict) and _plain_names(source.get("files", []))):
        raise CheckpointError(f"{path} has an invalid data_source (file names must be plain names in one folder)")
    return ckpt


def _split_problem(split: object) -> str | None:
    """What is wrong with a checkpoint's split, or None: each part a 1-D tensor of distinct image
    numbers (no float, no negative index that would wrap around), train and test not empty."""
    if not isinstance(split, dict) or not all(k in split for k in ("train", "test")):
        return "no train and test parts"
    for name, idx in split.items():
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1:
            return f"{name!s:.20} is not a list of image numbers"
        if len(idx) == 0 and name in ("train", "test"):
            return f"{name} is empty"
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= MAX_FACES):
            return f"{name} has image numbers outside 0..{MAX_FACES - 1}"
    every = torch.cat([idx.long() for idx in split.values()])
    if len(torch.unique(every)) != len(every):
        return "an image is in it twice"
    return None


def _valid_history(history: object) -> bool:
    """A list of per-epoch records, each a dict of names to numbers (None where a split is missing)
    with its epoch and the train and test losses that `info` and `compare` print."""
    def number(v: object) -> bool:
        return type(v) in (int, float)

    return isinstance(history, list) and all(
        isinstance(r, dict) and type(r.get("epoch")) is int and number(r.get("train_loss"))
        and number(r.get("test_loss")) and all(isinstance(k, str) and (v is None or number(v)) for k, v in r.items())
        for r in history)


def _plain_record(record: object, depth: int = 0) -> bool:
    """A model card: names to text, numbers, lists of them and such records, a few levels deep."""
    def plain(v: object) -> bool:
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool) or _plain_record(v, depth + 1)

    return depth < 4 and isinstance(record, dict) and all(isinstance(k, str) and plain(v) for k, v in record.items())


def _summary_problem(summary: object, n_test: int, latent: int) -> str | None:
    """What is wrong with a stored summary of the test faces, or None (also where there is none)."""
    if summary is None:
        return None
    if not isinstance(summary, dict) or set(summary) != {"mu", "logvar"}:
        return "expected the test faces' mu and logvar"
    for name, t in summary.items():
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != (n_test, latent):
            return f"{name} is not a float32 tensor of {n_test} test faces by {latent} dimensions"
        if not torch.isfinite(t).all():
            return f"{name} contains NaN or infinite values"
    return None


def _plain_names(files: object) -> bool:
    """A list of file names that stay inside their folder (a checkpoint's folder of images)."""
    return isinstance(files, list) and all(isinstance(f, str) and f not in ("", "..") and Path(f).name == f
                                           for f in files)


def new_model(cfg: TrainConfig) -> VAE:
    """A freshly initialised model of the config's kind."""
    if cfg.model == "pixelvae":
        from freyvae_cli.pixelvae.model import PixelVAE

        return PixelVAE(cfg.latent_dim, cfg.likelihood, cfg.channels, cfg.blocks, cfg.dropout)
    return VAE(cfg.latent_dim, cfg.likelihood)


def build_model(ckpt: dict, path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The model a checkpoint describes, with its weights, in evaluation mode."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    if cfg.model == "pixelvae" and cfg.likelihood not in PIXELVAE_LIKELIHOODS:
        raise CheckpointError(f"{path}: a pixelvae model needs the categorical or mixture likelihood, "
                              f"not {cfg.likelihood}")
    with torch.device("meta"):  # the shapes the config asks for, with no memory behind them
        expected = new_model(cfg).state_dict()
    weights = ckpt["model"]
    if set(weights) != set(expected):
        raise CheckpointError(f"{path}: its weights do not belong to the freyvae model (other layer names)")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name].shape:
            shape = tuple(getattr(tensor, "shape", ()))
            raise CheckpointError(
                f"{path}: weight {name} has shape {shape}, but a latent size of {cfg.latent_dim} "
                f"with the {cfg.likelihood} likelihood needs {tuple(expected[name].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {name} contains NaN or infinite values")
    model = new_model(cfg)
    model.load_state_dict(weights)
    return model.to(device, memory_format=torch.channels_last).eval()  # oneDNN's faster layout


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VAE, dict]:
    ckpt = load(path)
    return build_model(ckpt, path, device), ckpt


def load_with_data(path: Path, device: torch.device, data: Path | None, warn: Callable[[str], None],
                   summary_will_do: bool = False):
    """The model, its checkpoint and the faces it was trained on (data.data_path says which file).
    Data with fewer images than the split is refused; other pixels only get a warning. With
    summary_will_do, a checkpoint with a summary of its test faces gives faces None where no
    --data was given and the file is not there."""
    from freyvae_cli.data.frey import data_path, pixel_hash
    from freyvae_cli.data.sources import load_data

    model, ckpt = load_model(path, device)
    where = data_path(data, ckpt["config"].get("data", ""))
    if summary_will_do and "summary" in ckpt and data is None and not where.exists():
        return model, ckpt, None
    faces, _ = load_data(where, data_files(ckpt))
    if max(int(idx.max()) for idx in ckpt["split"].values()) >= len(faces):
        raise FreyError(f"{where} has {len(faces)} images, fewer than the data {path} was trained on; "
                        "pass the same --data")
    if ckpt.get("data_hash") and pixel_hash(faces) != ckpt["data_hash"]:
        warn(f"{where} differs from the data {path} was trained on")
    return model, ckpt, faces


def data_source(ckpt: dict) -> dict:
    """What the model was trained on: the checkpoint's data_source, or for checkpoints made before
    there was one, the .mat file its config names."""
    source = ckpt.get("data_source")
    if source is None:
        return {"kind": "mat", "path": ckpt["config"].get("data", "")}
    return source


def data_files(ckpt: dict | None) -> list[str] | None:
    """The image files a model was trained on, in order, where its data was a folder."""
    return (ckpt.get("data_source") or {}).get("files") if ckpt is not None else None


def describe_data(source: dict) -> str:
    """data_source in words: 'folder faces/ (300 images: a.png .. z.png)'."""
    kinds = {"mat": ".mat file", "folder": "folder", "npy": ".npy array", "npz": ".npz array"}
    kind = kinds.get(source.get("kind"), "?")
    text = f"{kind} {source.get('path', '')}"
    files = source.get("files") or []
    if "images" in source:
        span = f": {files[0]} .. {files[-1]}" if len(files) > 1 else ""
        text += f" ({source['images']} images{span})"
    return text


def describe(ckpt: dict, path: Path) -> tuple[dict, list[str]]:
    """What `info` says of a checkpoint: its --json payload and its lines of text (nats per image)."""
    from freyvae_cli.runs import best_epoch

    last = ckpt["history"][-1] if ckpt["history"] else {}
    best = best_epoch(ckpt["history"])
    payload = {
        "checkpoint": str(path), "epoch": ckpt["epoch"], "config": ckpt["config"],
        "split": {name: len(idx) for name, idx in ckpt["split"].items()},
        "final": {k: v for k, v in last.items() if k != "epoch"}, "units": "nats per image",
        "best_val_epoch": best["epoch"] if best else None,
        "versions": ckpt.get("versions", {}), "data_hash": ckpt.get("data_hash"),
        "interrupted_mid_epoch": bool(ckpt.get("progress")),
        "data": data_source(ckpt),
        "prior": of_checkpoint(ckpt).name,
    }
    split = "/".join(str(n) for n in payload["split"].values())
    lines = [f"{path}: {ckpt['epoch']} epochs, split {split} ({'/'.join(payload['split'])})"]
    lines += [f"  {k} = {v}" for k, v in ckpt["config"].items()]
    if last:
        lines.append(f"  last epoch: train {last['train_loss']:.2f}, test {last['test_loss']:.2f} nats per image")
    if best:
        lines.append(f"  best validation loss {best['val_loss']:.2f} at epoch {best['epoch']} "
                     f"(test there {best['test_loss']:.2f} nats per image)")
    lines.append(f"  prior p(z): {payload['prior']}")
    lines.append(f"  data: {describe_data(payload['data'])}, sha256 {payload['data_hash']}")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()))
    if "card" in ckpt:
        payload["card"] = ckpt["card"]
        lines += ["", "model card:", *_card_lines(ckpt["card"], "  ")]
    return payload, lines


def _card_lines(record: dict, indent: str) -> list[str]:
    """A model card as indented `name: value` lines, nested records one level further in."""
    lines = []
    for k, v in record.items():
        if isinstance(v, dict):
            lines += [f"{indent}{k}:", *_card_lines(v, indent + "  ")]
        else:
            lines.append(f"{indent}{k}: {v}")
    return lines
