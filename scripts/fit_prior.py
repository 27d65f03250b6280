"""Give a PixelVAE checkpoint written before freyvae fitted priors the one `train` now stores:
the Gaussian fitted to its training faces' posteriors (freyvae_cli/prior.py). Writes a copy.

    python scripts/fit_prior.py ../shared/models/pixelvae-321.pth runs/pixelvae-321-fitted.pth \
        --data ../shared/data/frey_rawface.mat
"""

from __future__ import annotations

import argparse
from pathlib import Path

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent, prior
from freyvae_cli.data.sources import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    model, c = ck.load_model(args.checkpoint)
    faces, _ = load_data(args.data)
    x, _ = latent.split_images(c, faces, "train")
    c["prior"] = prior.as_state(latent.fitted_prior(model, x))
    ck.save(args.out, c)
    print(f"wrote {args.out}: {args.checkpoint} with its prior fitted to {len(x)} training faces")


if __name__ == "__main__":
    main()
