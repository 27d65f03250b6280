"""`train --data` on your own faces: a folder of images, a .npy or a .npz; every command reads the
model that comes out, `info` says what the data was, and every bad data set is one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli.data.frey import load_faces, pixel_hash
from tests.conftest import REAL_DATA, last_json, main_in_process, make_faces, run_freyvae

N_FOLDER = 300


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """300 PNGs written from the data (generated faces where the real file is absent), 2 of them
    larger and in colour, and a hidden file the folder reader must pass over."""
    faces = load_faces(REAL_DATA)[:N_FOLDER] if REAL_DATA.is_file() else make_faces(N_FOLDER)
    where = tmp_path_factory.mktemp("faces")
    for i, face in enumerate(faces):
        im = Image.fromarray(face)
        if i % 150 == 7:  # 4x larger, RGB: converted back to the same face exactly
            im = im.resize((80, 112), Image.Resampling.NEAREST).convert("RGB")
        im.save(where / f"face_{i:04d}.png")
    (where / ".DS_Store").write_bytes(b"\0\1junk")
    return where, faces


@pytest.fixture(scope="module")
def folder_model(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    r = run_freyvae("train", "--data", str(folder[0]), "--out", str(out), "--epochs", "2", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    return out / "vae_final_model.pth"


def test_a_folder_trains_and_the_checkpoint_keeps_its_file_names(folder, folder_model):
    where, faces = folder
    ckpt = ck.load(folder_model)
    assert ckpt["data_hash"] == pixel_hash(faces)  # the hash covers the pixels, read back exactly
    source = ckpt["data_source"]
    assert source["kind"] == "folder" and source["images"] == N_FOLDER
    assert source["files"] == [f"face_{i:04d}.png" for i in range(N_FOLDER)]  # sorted, hidden file left out
    assert sum(len(idx) for idx in ckpt["split"].values()) == N_FOLDER


def test_info_says_what_the_data_was(folder, folder_model, capsys):
    r = main_in_process(["info", "-c", str(folder_model), "--json"], capsys)
    data = last_json(r.stdout)["data"]
    assert data["kind"] == "folder" and data["path"] == str(folder[0]) and data["images"] == N_FOLDER
    r = main_in_process(["info", "-c", str(folder_model)], capsys)
    assert f"data: folder {folder[0]} ({N_FOLDER} images: face_0000.png .. face_0299.png)" in r.stderr


@pytest.mark.parametrize("args", [
    ["reconstruct", "-n", "5"], ["sample", "-n", "4"], ["traverse", "--steps", "3"], ["traverse", "--pca", "--k", "2"],
    ["interpolate", "--steps", "3"], ["manifold", "--grid", "3"], ["project"], ["evaluate", "--iw-samples", "5"],
])
def test_every_command_reads_a_folder_model(folder_model, tmp_path, capsys, args):
    out = [] if args[0] == "evaluate" else ["-o", str(tmp_path / ("out.png"))]
    r = main_in_process([*args, "-c", str(folder_model), *out, "--json"], capsys)
    assert r.returncode == 0, r.stderr
    assert "differs from the data" not in r.stderr  # the folder read back is the data it was trained on
    if out:
        assert Image.open(tmp_path / "out.png").size[0] > 20


def test_compare_explore_and_resume_read_a_folder_model(folder_model, tmp_path, capsys):
    r = main_in_process(["compare", str(folder_model.parent), "--json"], capsys)
    assert r.returncode == 0 and last_json(r.stdout)[0]["epochs"] == 2, r.stderr
    r = main_in_process(["train", "--resume", str(folder_model), "--epochs", "3", "--out", str(tmp_path / "more"),
                         "--quiet"], capsys)
    assert r.returncode == 0, r.stderr
    assert ck.load(tmp_path / "more" / "vae_final_model.pth")["data_source"]["files"][0] == "face_0000.png"
    from freyvae_cli.explore_server import Explorer

    model, ckpt, faces = ck.load_with_data(folder_model, "cpu", None, print)
    assert Explorer.build(model, ckpt, faces, str(folder_model), 3.0).info["n_test"] == len(ckpt["split"]["test"])


def test_npy_and_npz_train(tmp_path, capsys):
    faces = make_faces(40)
    np.save(tmp_path / "faces.npy", faces)
    np.savez_compressed(tmp_path / "faces.npz", my_faces=faces)
    for name in ("faces.npy", "faces.npz"):
        out = tmp_path / name.replace(".", "_")
        r = main_in_process(["train", "--data", str(tmp_path / name), "--out", str(out), "--epochs", "1",
                             "--latent-dim", "4", "--quiet"], capsys)
        assert r.returncode == 0, r.stderr
        ckpt = ck.load(out / "vae_final_model.pth")
        assert ckpt["data_hash"] == pixel_hash(faces) and ckpt["data_source"]["kind"] == name[-3:]
        r = main_in_process(["reconstruct", "-c", str(out / "vae_final_model.pth"), "-o", str(out / "r.png")], capsys)
        assert r.returncode == 0, r.stderr


def test_skip_bad_leaves_out_the_named_files_and_refuses_without_it(tmp_path, capsys):
    where = tmp_path / "mixed"
    where.mkdir()
    for i, face in enumerate(make_faces(12)):
        Image.fromarray(face).save(where / f"f{i:02d}.png")
    (where / "notes.txt").write_text("my faces\n")
    (where / "broken.png").write_bytes((where / "f00.png").read_bytes()[:60])
    r = main_in_process(["train", "--data", str(where), "--out", str(tmp_path / "run"), "--epochs", "1"], capsys)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "broken.png" in r.stderr and "notes.txt" in r.stderr and "--skip-bad" in r.stderr
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())
    r = main_in_process(["train", "--data", str(where), "--out", str(tmp_path / "run"), "--epochs", "1",
                         "--skip-bad", "--latent-dim", "4"], capsys)
    assert r.returncode == 0, r.stderr
    assert "left out 2 of the 14 files" in r.stderr and "broken.png" in r.stderr
    files = ck.load(tmp_path / "run" / "vae_final_model.pth")["data_source"]["files"]
    assert files == [f"f{i:02d}.png" for i in range(12)]
    r = main_in_process(["reconstruct", "-c", str(tmp_path / "run" / "vae_final_model.pth"), "-o",
                         str(tmp_path / "r.png")], capsys)  # later commands read just those files
    assert r.returncode == 0 and "differs" not in r.stderr, r.stderr


def _bad_data(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Each bad --data and a word its one line must hold."""
    cases = {}
    (tmp / "empty").mkdir()
    cases["empty folder"] = (tmp / "empty", "no image files")
    (tmp / "few").mkdir()
    for i, face in enumerate(make_faces(5)):
        Image.fromarray(face).save(tmp / "few" / f"{i}.png")
    cases["5 images"] = (tmp / "few", "at least 10")
    (tmp / "junk").mkdir()
    (tmp / "junk" / "a.txt").write_text("text")
    cases["no readable image"] = (tmp / "junk", "a.txt")
    np.save(tmp / "shape.npy", np.zeros((20, 20, 28), np.uint8))
    cases["npy wrong shape"] = (tmp / "shape.npy", "(20, 20, 28)")
    np.save(tmp / "dtype.npy", np.zeros((20, 28, 20), np.float32))
    cases["npy wrong dtype"] = (tmp / "dtype.npy", "float32")
    np.save(tmp / "objects.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    cases["npy of objects"] = (tmp / "objects.npy", "object")
    np.save(tmp / "cut.npy", make_faces(40))
    (tmp / "cut.npy").write_bytes((tmp / "cut.npy").read_bytes()[:5000])
    cases["npy truncated"] = (tmp / "cut.npy", "truncated")
    (tmp / "text.npy").write_text("not numpy")
    cases["npy not numpy"] = (tmp / "text.npy", "not a readable .npy")
    np.savez(tmp / "several.npz", a=make_faces(20), b=make_faces(20))
    cases["npz several arrays"] = (tmp / "several.npz", "2 arrays (a, b)")
    with zipfile.ZipFile(tmp / "empty.npz", "w"):
        pass
    cases["npz no array"] = (tmp / "empty.npz", "0 arrays")
    (tmp / "bad.npz").write_bytes(b"PK\3\4 broken zip")
    cases["npz corrupt"] = (tmp / "bad.npz", "corrupt")
    Image.fromarray(make_faces(1)[0]).save(tmp / "one.png")
    cases["one image"] = (tmp / "one.png", "folder of face images")
    np.save(tmp / "nine.npy", make_faces(9))
    cases["9 faces"] = (tmp / "nine.npy", "at least 10")
    return cases


def test_every_bad_data_set_gets_one_line_and_nothing_is_written(tmp_path, capsys):
    for case, (path, word) in _bad_data(tmp_path).items():
        out = tmp_path / f"run-{case.replace(' ', '_')}"
        r = main_in_process(["train", "--data", str(path), "--out", str(out), "--epochs", "1"], capsys)
        assert r.returncode == 1, (case, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in r.stderr, (case, r.stderr)
        assert not out.exists() or not list(out.iterdir()), case


def test_a_checkpoint_with_file_names_that_leave_the_folder_is_refused(folder_model, tmp_path):
    import torch

    ckpt = torch.load(folder_model, weights_only=True)
    ckpt["data_source"]["files"][0] = "../../etc/passwd"
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(ck.CheckpointError, match="data_source"):
        ck.load(tmp_path / "evil.pth")
    real = ck.load(folder_model)["data_source"]  # the file it was made from still loads, its names plain
    assert real["files"][:2] == ["face_0000.png", "face_0001.png"] and len(real["files"]) == N_FOLDER
