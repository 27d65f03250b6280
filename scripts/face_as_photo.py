"""Write a Frey test face as a picture of your own would come: a 200x280 RGB JPEG, and pasted
into a 640x480 PNG with margins. For the README's worked example of `freyvae encode` (a photo of a
real person does not belong in the repo; these are made on your machine from your own data file).

    python scripts/face_as_photo.py -c runs/vae_final_model.pth --face 0 --out my_face
"""

from __future__ import annotations

import argparse

from PIL import Image

from freyvae_cli import checkpoint, latent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", default="runs/vae_final_model.pth")
    ap.add_argument("--face", type=int, default=0, help="index of the test face")
    ap.add_argument("--out", default="my_face", help="writes OUT.jpg and OUT_framed.png")
    args = ap.parse_args()
    _, ckpt, faces = checkpoint.load_with_data(args.checkpoint, "cpu", None, print)  # whatever its data was
    face = latent.split_images(ckpt, faces, "test")[0][args.face, 0].numpy()
    photo = Image.fromarray(face).resize((200, 280), Image.Resampling.BICUBIC).convert("RGB")
    photo.save(f"{args.out}.jpg", quality=90)
    framed = Image.new("RGB", (640, 480), (250, 250, 250))  # margins left and right: the crop's to remove
    framed.paste(photo.resize((343, 480), Image.Resampling.BICUBIC), (149, 0))
    framed.save(f"{args.out}_framed.png")
    print(f"wrote {args.out}.jpg (200x280 JPEG) and {args.out}_framed.png (640x480, the face in the middle)")


if __name__ == "__main__":
    main()
