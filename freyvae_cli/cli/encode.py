"""`freyvae encode`: your own images through a model. images.py makes them faces, latent.py and
evaluate.py do the maths, figures.py draws."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import (
    CheckpointOpt,
    Crop,
    CropOpt,
    Device,
    DeviceOpt,
    ImagesArg,
    JsonOpt,
    PretrainedOpt,
    QuietOpt,
    ScaleOpt,
    command,
    done,
    load,
    model_file,
)


@command
def encode(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("encoded.png"),
    crop: CropOpt = Crop.centre,
    scale: ScaleOpt = 4,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Your own images (PNG, JPEG, BMP, TIFF, WebP, GIF) into the latent space: each as the model
    sees it, beside its reconstruction; --json gives each one's latent mean and sd, and its -ELBO."""
    import numpy as np
    import torch

    from freyvae_cli import figures, latent
    from freyvae_cli.data.images import read_faces

    figures.check_out(out)
    x = torch.from_numpy(read_faces(images, crop.value)).unsqueeze(1)
    checkpoint = model_file(checkpoint, pretrained)
    model, ckpt, _ = load(checkpoint, device, need_data=False)
    mu, sd, neg_elbo = latent.encode_with_elbo(model, x)
    pairs = zip(x.squeeze(1).numpy() / 255.0, latent.decode(model, mu), strict=True)  # as the model sees it
    rows = [np.stack(pair) for pair in pairs]
    labels = [f"{p.name} · -ELBO {v:.0f} nats" for p, v in zip(images, neg_elbo, strict=True)]
    title = "as the model sees it (left), its reconstruction (right)"
    if model.autoregressive:
        title += f"; {latent.what_is_drawn(model)}"
    figures.save_image(figures.face_grid(rows, scale=scale, labels=labels, title=title), out)
    test = ckpt["history"][-1].get("test_loss") if ckpt["history"] else None
    per_image = [{"path": str(p), "mu": [float(v) for v in m], "sd": [float(v) for v in s], "neg_elbo": float(e)}
                 for p, m, s, e in zip(images, mu.numpy(), sd.numpy(), neg_elbo.numpy(), strict=True)]
    if model.likelihood != "bernoulli":  # a discrete likelihood: bits per dimension too
        from freyvae_cli.likelihood import bits_per_dim

        for item in per_image:
            item["bits_per_dim"] = bits_per_dim(item["neg_elbo"])
    for item in per_image[:10]:
        ui.info(f"{item['path']}: -ELBO {item['neg_elbo']:.1f} nats per image")
    typical = f" (this model's test faces: {test:.1f})" if test is not None else ""
    done(json_out, {"out": str(out), "checkpoint": str(checkpoint), "crop": crop.value, "units": "nats per image",
                    "test_neg_elbo": test, "images": per_image},
         f"wrote {out}: {len(images)} image{'s' * (len(images) > 1)}, each beside its reconstruction; "
         f"-ELBO in nats per image{typical}")
