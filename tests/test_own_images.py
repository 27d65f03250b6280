"""Your own images: the conversion (every kind of file Pillow opens), `freyvae encode`, `project
--with`, and every bad image refused in one line with nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent
from freyvae_cli.data.images import MAX_PIXELS, read_face, to_face
from tests.conftest import REAL_DATA, last_json, main_in_process, make_faces

PIXELVAE = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "pixelvae-321.pth"
FACE = make_faces(1, seed=3)[0]


def upscaled(face: np.ndarray, k: int = 10) -> Image.Image:
    """A face k times larger by nearest neighbour: the box filter gives the face back exactly."""
    return Image.fromarray(face).resize((20 * k, 28 * k), Image.Resampling.NEAREST)


def test_the_conversion_is_exact_for_every_lossless_kind_and_mode(tmp_path):
    big = upscaled(FACE)
    rgb = big.convert("RGB")
    cases = {
        "grey.png": big, "rgb.bmp": rgb, "rgb.tiff": rgb, "lossless.webp": rgb,
        "palette.png": big.convert("P"), "opaque.png": big.convert("RGBA"),
        "cmyk.tiff": Image.merge("CMYK", [Image.new("L", big.size, 0)] * 3 + [big.point(lambda v: 255 - v)]),
        "16bit.png": Image.fromarray(np.asarray(big).astype(np.uint16) * 257),
    }
    for name, im in cases.items():
        kwargs = {"lossless": True} if name.endswith(".webp") else {}
        im.save(tmp_path / name, **kwargs)
        assert np.array_equal(read_face(tmp_path / name), FACE), name
    # a GIF's first frame, not its second
    other = upscaled(255 - FACE)
    big.save(tmp_path / "two.gif", save_all=True, append_images=[other])
    assert np.array_equal(read_face(tmp_path / "two.gif"), FACE)
    # the EXIF orientation applied: stored on its side, tagged "rotate 90 clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    big.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    assert np.array_equal(read_face(tmp_path / "sideways.png"), FACE)


def test_transparency_is_white_and_the_crop_takes_the_centre(tmp_path):
    clear = Image.new("RGBA", (40, 56), (0, 0, 0, 0))
    assert (to_face(clear) == 255).all()
    half = Image.new("RGBA", (40, 56), (0, 0, 0, 128))  # black at half opacity over white
    assert np.abs(to_face(half).astype(int) - 127).max() <= 1
    wide = Image.new("L", (600, 280), 0)  # the face in the middle, margins left and right
    wide.paste(upscaled(FACE), (200, 0))
    assert np.array_equal(to_face(wide), FACE)
    squashed = to_face(wide, "none")  # the whole image: the margins stay, the face is squeezed
    assert squashed[:, 0].max() == 0 and squashed[:, 10].max() > 0


@pytest.mark.skipif(not (REAL_DATA.is_file() and PIXELVAE.is_file()), reason="needs the real data and pixelvae-321.pth")
def test_a_test_face_as_a_jpeg_and_framed_in_a_png_encodes_close_to_the_face(tmp_path):
    """A Frey test face upscaled (bicubic) to a 200x280 colour JPEG, and pasted full height into a
    640x480 PNG with margins, then converted back. Measured on the first 200 test faces of
    pixelvae-321: 2.9-3.1 grey levels off on average (bicubic's overshoot, JPEG); the latent mean
    moves 0.84-0.90 posterior standard deviations at the median (rms over dimensions; 1.33 at most)
    and stays nearer the face's own mean than any other test face's (200 of 200). Tolerances: 4
    levels, 1.5 sds (benchmarks/bench_own_images.py measures them)."""
    from freyvae_cli.data.frey import load_faces

    model, ckpt = ck.load_model(PIXELVAE)
    x, _ = latent.split_images(ckpt, load_faces(REAL_DATA), "test")
    mu_all, logvar_all = latent.encode(model, x)
    picks = list(range(0, 200, 10))
    for i in picks:
        big = Image.fromarray(x[i, 0].numpy()).resize((200, 280), Image.Resampling.BICUBIC).convert("RGB")
        big.save(tmp_path / f"{i}.jpg", quality=90)
        framed = Image.new("RGB", (640, 480), (250, 250, 250))
        framed.paste(big.resize((343, 480), Image.Resampling.BICUBIC), (149, 0))
        framed.save(tmp_path / f"{i}_framed.png")
        for path in (tmp_path / f"{i}.jpg", tmp_path / f"{i}_framed.png"):
            face = read_face(path)
            assert np.abs(face.astype(int) - x[i, 0].numpy().astype(int)).mean() <= 4, path.name
            mu = latent.encode(model, torch.from_numpy(face)[None, None])[0][0]
            shift = (((mu - mu_all[i]) / (0.5 * logvar_all[i]).exp()) ** 2).mean().sqrt()
            assert shift <= 1.5, (path.name, float(shift))
            assert int((mu_all - mu).norm(dim=1).argmin()) == i, path.name


def test_encode_draws_each_image_beside_its_reconstruction(runner, trained, tmp_path, capsys):
    upscaled(FACE).convert("RGB").save(tmp_path / "me.jpg", quality=95)
    wide = Image.new("L", (600, 280), 0)
    wide.paste(upscaled(FACE), (200, 0))
    wide.save(tmp_path / "wide.png")
    out = tmp_path / "enc.png"
    r = main_in_process(["encode", str(tmp_path / "me.jpg"), str(tmp_path / "wide.png"), "-c", str(trained),
                         "-o", str(out), "--json"], capsys)
    assert r.returncode == 0, r.stderr
    payload = last_json(r.stdout)
    model, _ = ck.load_model(trained)
    x = torch.from_numpy(np.stack([read_face(tmp_path / "me.jpg"), read_face(tmp_path / "wide.png")])).unsqueeze(1)
    mu, logvar = latent.encode(model, x)
    assert [item["path"] for item in payload["images"]] == [str(tmp_path / "me.jpg"), str(tmp_path / "wide.png")]
    for item, m, lv in zip(payload["images"], mu, logvar, strict=True):
        assert np.allclose(item["mu"], m.numpy(), atol=1e-6) and np.allclose(item["sd"], (0.5 * lv).exp(), atol=1e-6)
        assert 0 < item["neg_elbo"] < 560 * np.log(2) * 8  # nats per image, as the model's own test loss
    assert payload["units"] == "nats per image" and payload["test_neg_elbo"] > 0
    assert "me.jpg: -ELBO" in r.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] > 2 * 28 * 4 and grid.shape[1] > 2 * 20 * 4  # two rows of two faces, labelled
    # the same face either way: the crop took the margins off
    assert payload["images"][0]["mu"] == pytest.approx(payload["images"][1]["mu"], abs=0.05)
    # --crop none squashes the margins in: the model sees (and encodes) another face
    r = main_in_process(["encode", str(tmp_path / "wide.png"), "-c", str(trained), "-o", str(out), "--crop", "none",
                         "--json"], capsys)
    squashed = to_face(Image.open(tmp_path / "wide.png"), "none")
    assert not np.array_equal(squashed, read_face(tmp_path / "wide.png"))
    want = latent.encode(model, torch.from_numpy(squashed)[None, None])[0][0]
    assert np.allclose(last_json(r.stdout)["images"][0]["mu"], want.numpy(), atol=1e-6)


def test_project_with_marks_the_images_where_their_means_project(runner, trained, small_mat, tmp_path, capsys):
    upscaled(FACE).save(tmp_path / "me.png")
    out = tmp_path / "map.png"
    r = main_in_process(["project", "-c", str(trained), "--data", str(small_mat), "-o", str(out),
                         "--with", str(tmp_path / "me.png"), "--json"], capsys)
    assert r.returncode == 0, r.stderr
    payload = last_json(r.stdout)
    model, ckpt = ck.load_model(trained)
    from freyvae_cli.data.frey import load_faces

    x, _ = latent.split_images(ckpt, load_faces(small_mat), "test")
    mu = latent.encode(model, x)[0].numpy()
    _, axes, _ = latent.pca(mu)
    own = latent.encode(model, torch.from_numpy(FACE)[None, None])[0].numpy()
    assert payload["with"][0]["point"] == pytest.approx(((own - mu.mean(0)) @ axes.T)[0].tolist(), abs=1e-4)
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 50  # the red star is drawn


def _bad_images(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Each bad image and a word its one line must hold."""
    cases = {}
    (tmp / "notes.png").write_text("not an image at all\n")
    cases["not an image"] = (tmp / "notes.png", "not an image")
    buf = io.BytesIO()
    upscaled(FACE).save(buf, "PNG")
    (tmp / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases["truncated PNG"] = (tmp / "cut.png", "truncated")
    buf = io.BytesIO()
    upscaled(FACE).convert("RGB").save(buf, "JPEG")
    (tmp / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases["truncated JPEG"] = (tmp / "cut.jpg", "truncated")
    Image.new("L", (1, 1)).save(tmp / "dot.png")
    cases["1x1"] = (tmp / "dot.png", "1x1")
    side = int((MAX_PIXELS * 1.2) ** 0.5)  # a few kB of PNG that would decode to 60 megapixels
    Image.new("L", (side, side)).save(tmp / "bomb.png")
    cases["decompression bomb"] = (tmp / "bomb.png", "megapixels")
    cases["missing"] = (tmp / "nowhere.png", "not found")
    cases["a folder"] = (tmp, "folder")
    return cases


def test_every_bad_image_gets_one_line_and_nothing_is_written(trained, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    upscaled(FACE).save(tmp_path / "good.png")
    for case, (path, word) in _bad_images(bad).items():
        for args in (["encode", str(tmp_path / "good.png"), str(path), "-o", str(tmp_path / "out.png")],
                     ["project", "--with", str(path), "-o", str(tmp_path / "out.png")]):
            r = main_in_process([*args, "-c", str(trained)], capsys)
            assert r.returncode == 1, (case, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and word in lines[0] and "Traceback" not in r.stderr, (case, r.stderr)
            assert not (tmp_path / "out.png").exists(), case
