#!/usr/bin/env bash
# Re-make the gallery (docs/*.png, shown in the README and docs/models.md) from one real 30-epoch run with default settings.
# Usage: scripts/make_gallery.sh [path/to/frey_rawface.mat]   (needs `pip install .` first)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${FREYVAE_DATA:-data/frey_rawface.mat}}
RUN=runs/gallery
CK=$RUN/vae_final_model.pth
mkdir -p docs
[ -f "$CK" ] || freyvae train --data "$DATA" --out "$RUN" --epochs 30 --quiet
common=(-c "$CK" --data "$DATA" --quiet)
freyvae reconstruct "${common[@]}" -o docs/reconstructions.png
freyvae sample -c "$CK" --quiet -n 20 -o docs/generated_samples.png
freyvae traverse "${common[@]}" -o docs/latent_variations.png --gif docs/latent_variations.gif --scale 3
freyvae traverse "${common[@]}" --pca --k 4 -o docs/latent_variations_pca.png --scale 3
freyvae interpolate "${common[@]}" --from 0 --to 7 --steps 10 -o docs/interpolation.png
freyvae manifold "${common[@]}" --grid 10 --scale 3 -o docs/manifold.png
freyvae manifold "${common[@]}" --pca --grid 10 --scale 3 -o docs/manifold_pca.png
freyvae project "${common[@]}" --thumbnails -o docs/latent_space_2d.png
cp "$RUN/loss_curve.png" docs/loss_curve.png
# Your own faces (README, docs/your-images.md): test faces made into a JPEG and a framed PNG.
python scripts/face_as_photo.py -c "$CK" --face 0 --out "$RUN/my_face"
freyvae encode "$RUN/my_face.jpg" "$RUN/my_face_framed.png" -c "$CK" --quiet -o docs/encoded.png
freyvae project "${common[@]}" --with "$RUN/my_face.jpg" -o docs/latent_space_with.png
python scripts/face_as_photo.py -c "$CK" --face 5 --out "$RUN/face5"
python scripts/screenshot_explore.py -c "$CK" --data "$DATA" --image "$RUN/face5_framed.png" -o docs/explore_your_image.png
# The classic picture: a model with a 2-d latent space, its whole manifold on one grid.
[ -f runs/gallery2d/vae_final_model.pth ] || freyvae train --data "$DATA" --out runs/gallery2d --latent-dim 2 --quiet
freyvae manifold -c runs/gallery2d/vae_final_model.pth --data "$DATA" --quiet --grid 12 --scale 2 -o docs/manifold_2d.png
freyvae evaluate "${common[@]}" --iw-samples 1000 --json > docs/evaluate.json

# The stronger model: PixelVAE on the literature split (seed 123), as benchmarks/bench_literature.py
# trains it; its best-validation model draws the pictures.
PV=runs/literature/pixelvae-123
[ -f "$PV/vae_best_model.pth" ] || freyvae train --model pixelvae --split literature --split-seed 123 \
    --patience 30 --checkpoint-every 0 \
    --data "$DATA" --out "$PV" --quiet
pv=(-c "$PV/vae_best_model.pth" --data "$DATA" --quiet)
freyvae reconstruct "${pv[@]}" -n 20 -o docs/pixelvae_reconstructions.png
# The samples (each face its own pixel noise): the shipped PixelVAE, z from its fitted prior; and, where
# ../shared/models has it, split seed 321's model from before priors were fitted, z ~ N(0, I).
freyvae sample --pretrained pixelvae --quiet -n 20 -o docs/pixelvae_samples.png
OLD=../shared/models/pixelvae-321.pth
[ ! -f "$OLD" ] || freyvae sample -c "$OLD" --quiet -n 20 -o docs/pixelvae_samples_standard_prior.png
freyvae traverse "${pv[@]}" -o docs/pixelvae_traversal.png --scale 3
freyvae traverse "${pv[@]}" --pca -o docs/pixelvae_traversal_pca.png --scale 3
freyvae manifold "${pv[@]}" --pca --grid 10 --scale 3 -o docs/pixelvae_manifold_pca.png
cp "$PV/loss_curve.png" docs/pixelvae_loss_curve.png
ls -l docs/
