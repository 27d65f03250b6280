"""Your own images, measured: how close a Frey test face comes back through a JPEG or a framed PNG
(the tolerance tests/test_own_images.py allows), what -ELBO each model gives faces and non-faces,
and how long a folder of images takes to read.

    python benchmarks/bench_own_images.py --data ../shared/data/frey_rawface.mat \\
        -c runs/vae_final_model.pth -c ../shared/models/pixelvae-321.pth --faces 200

Grey levels off: mean absolute difference from the original face. Latent shift: the encoding's
move in posterior standard deviations of the original (rms over dimensions). -ELBO in nats per image.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from freyvae_cli import checkpoint, latent
from freyvae_cli.data.frey import load_faces
from freyvae_cli.data.images import to_face
from freyvae_cli.data.sources import load_data


def as_photo(face: np.ndarray, framed: bool) -> Image.Image:
    """A face upscaled (bicubic) to a 200x280 RGB JPEG, or that pasted full height into a 640x480 PNG."""
    big = Image.fromarray(face).resize((200, 280), Image.Resampling.BICUBIC).convert("RGB")
    buf = io.BytesIO()
    if framed:
        frame = Image.new("RGB", (640, 480), (250, 250, 250))
        frame.paste(big.resize((343, 480), Image.Resampling.BICUBIC), (149, 0))
        frame.save(buf, "PNG")
    else:
        big.save(buf, "JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf)


def tolerance(model, x: torch.Tensor) -> dict:
    mu0, logvar0 = latent.encode(model, x)
    sd0 = torch.exp(0.5 * logvar0)
    out = {}
    for kind in ("jpeg", "framed"):
        back = np.stack([to_face(as_photo(f, kind == "framed")) for f in x[:, 0].numpy()])
        mu1 = latent.encode(model, torch.from_numpy(back).unsqueeze(1))[0]
        shift = (((mu1 - mu0) / sd0) ** 2).mean(1).sqrt()
        own = (torch.cdist(mu1, mu0).argmin(1) == torch.arange(len(x))).sum()
        out[kind] = {"grey_levels_off": float(np.abs(back.astype(int) - x[:, 0].numpy().astype(int)).mean()),
                     "shift_median": float(shift.median()), "shift_max": float(shift.max()),
                     "nearest_is_own": f"{int(own)}/{len(x)}"}
    return out


def elbo_table(model, x: torch.Tensor) -> dict:
    neg = latent.encode_with_elbo(model, x)[2]
    probes = {"test face 0": x[:1], "test face 0 upside down": x[:1].flip(2),
              "all white": torch.full((1, 1, 28, 20), 255, dtype=torch.uint8),
              "all mid grey": torch.full((1, 1, 28, 20), 128, dtype=torch.uint8),
              "uniform noise": torch.randint(0, 256, (1, 1, 28, 20), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(0))}
    table = {"test faces, mean": float(neg.mean()), "test faces, 5%": float(neg.quantile(0.05)),
             "test faces, 95%": float(neg.quantile(0.95))}
    table.update({name: float(latent.encode_with_elbo(model, probe)[2][0]) for name, probe in probes.items()})
    return table


def folder_read(faces: np.ndarray) -> dict:
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp, "small"), Path(tmp, "big")
        small.mkdir(), big.mkdir()
        for i, f in enumerate(faces):
            Image.fromarray(f).save(small / f"f{i:04d}.png")
        for i, f in enumerate(faces[:300]):
            as_photo(f, framed=False).save(big / f"f{i:03d}.jpg")
        for name, where in ((f"{len(faces)} PNGs of 28x20", small), ("300 JPEGs of 200x280", big)):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                load_data(where)
                runs.append(time.perf_counter() - t0)
            times[name] = f"{statistics.median(runs):.2f} s (median of 3)"
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("-c", "--checkpoint", action="append", required=True)
    ap.add_argument("--faces", type=int, default=200, help="test faces for the tolerance")
    args = ap.parse_args()
    faces = load_faces(args.data)
    for path in args.checkpoint:
        model, ckpt = checkpoint.load_model(path)
        x, _ = latent.split_images(ckpt, faces, "test")
        print(f"== {path} ({ckpt['config'].get('model', 'seed')} model)")
        for kind, row in tolerance(model, x[:args.faces]).items():
            print(f"  {kind:<7} " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in row.items()))
        for name, value in elbo_table(model, x).items():
            print(f"  -ELBO {name:<26} {value:10.1f} nats per image")
    for name, value in folder_read(faces).items():
        print(f"reading {name}: {value}")


if __name__ == "__main__":
    main()
