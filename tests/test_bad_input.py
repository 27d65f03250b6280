"""Every way a user can get it wrong: one clear line on stderr, exit 1 or 2, nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from freyvae_cli import checkpoint
from freyvae_cli.data import matfile
from freyvae_cli.data.frey import DataError, _check_ff, _read_mat_isolated, parse_mat
from tests.conftest import main_in_process, make_faces, run_freyvae, write_mat


def _bad_data_files(tmp: Path) -> dict[str, Path]:
    files = {}
    files["missing"] = tmp / "nope.mat"
    (files.setdefault("empty", tmp / "empty.mat")).write_bytes(b"")
    (files.setdefault("not MATLAB", tmp / "text.mat")).write_text("hello, I am not a MATLAB file\n" * 20)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    (files.setdefault("MATLAB v7.3 (HDF5)", tmp / "v73.mat")).write_bytes(
        header.ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(600))
    scipy.io.savemat(files.setdefault("no ff key", tmp / "noff.mat"), {"faces": np.zeros((560, 10), np.uint8)})
    scipy.io.savemat(files.setdefault("wrong shape", tmp / "shape.mat"), {"ff": np.zeros((100, 50), np.uint8)})
    scipy.io.savemat(files.setdefault("wrong dtype", tmp / "dtype.mat"), {"ff": np.array(["abc", "def"])})
    over = make_faces(10).reshape(10, 560).T.astype(np.int16)
    over[0, 0] = 300
    scipy.io.savemat(files.setdefault("values over 255", tmp / "over.mat"), {"ff": over})
    nan = make_faces(10).reshape(10, 560).T.astype(np.float64)
    nan[5, 5] = np.nan
    scipy.io.savemat(files.setdefault("NaN", tmp / "nan.mat"), {"ff": nan})
    return files


DATA_CASES = ["missing", "empty", "not MATLAB", "MATLAB v7.3 (HDF5)", "no ff key", "wrong shape", "wrong dtype",
              "values over 255", "NaN"]


def _assert_one_line_error(r, codes=(1, 2)):
    assert r.returncode in codes, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.stderr
    assert r.stdout == ""
    return lines[0]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file(case, tmp_path):
    path = _bad_data_files(tmp_path)[case]
    out = tmp_path / "run"
    r = run_freyvae("train", "--data", str(path), "--out", str(out), "--epochs", "1")
    line = _assert_one_line_error(r, codes=(1,))
    assert str(path) in line
    assert not out.exists() or not any(out.iterdir())


def test_bad_data_messages_say_what_is_wrong(tmp_path):
    files = _bad_data_files(tmp_path)
    from freyvae_cli.data.frey import load_faces

    expect = {"missing": "not found", "empty": "empty", "not MATLAB": "not a readable MATLAB",
              "MATLAB v7.3 (HDF5)": "v7.3", "no ff key": "no variable 'ff'", "wrong shape": "shape (100, 50)",
              "wrong dtype": "type", "values over 255": "300", "NaN": "NaN"}
    for case, words in expect.items():
        with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load_faces(files[case])


@pytest.fixture(scope="module")
def ckpt_and_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    data = write_mat(d / "small.mat")
    r = run_freyvae("train", "--data", str(data), "--out", str(d / "run"), "--epochs", "1", "--latent-dim", "4", "-q")
    assert r.returncode == 0, r.stderr
    return d / "run" / "vae_final_model.pth", data


OPTION_CASES = [
    ("sample -n 0", ["sample", "-n", "0"], 2),
    ("sample -n -3", ["sample", "-n", "-3"], 2),
    ("reconstruct -n 0", ["reconstruct", "-n", "0"], 2),
    ("traverse --dim 4 (latent 4)", ["traverse", "--dim", "4"], 2),
    ("traverse --dim -1", ["traverse", "--dim", "-1"], 2),
    ("traverse --range 0", ["traverse", "--range", "0"], 2),
    ("traverse --range -1", ["traverse", "--range", "-1"], 2),
    ("traverse --steps 1", ["traverse", "--steps", "1"], 2),
    ("project --dims 0 9", ["project", "--dims", "0", "9"], 2),
    ("manifold --dims 2 2", ["manifold", "--dims", "2", "2"], 2),
    ("unknown device", ["sample", "--device", "tpu"], 2),
    ("output extension no image format has", ["sample", "-o", "{tmp}/faces.xyz"], 2),
    ("output without extension", ["sample", "-o", "{tmp}/faces"], 2),
    ("unwritable output (a file where a folder should be)", ["sample", "-o", "{tmp}/afile/faces.png"], 1),
    ("output is a folder", ["sample", "-o", "{tmp}"], 1),
    ("missing checkpoint", ["sample", "-c", "{tmp}/none.pth"], 1),
    ("interpolate --to 99", ["interpolate", "--to", "99"], 2),
    ("unknown option", ["sample", "--frobnicate"], 2),
    ("train --epochs 0", ["train", "--epochs", "0"], 2),
    ("train --batch-size 0", ["train", "--batch-size", "0"], 2),
    ("train --latent-dim 0", ["train", "--latent-dim", "0"], 2),
    ("train --lr 0", ["train", "--lr", "0"], 2),
    ("train --test-fraction 1.5", ["train", "--test-fraction", "1.5"], 2),
    ("train --likelihood gaussian", ["train", "--likelihood", "gaussian"], 2),
    ("evaluate --iw-samples -1", ["evaluate", "--iw-samples", "-1"], 2),
    ("evaluate --precision fp16", ["evaluate", "--precision", "fp16"], 2),
]


@pytest.mark.parametrize("name,args,code", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_options(name, args, code, ckpt_and_data, tmp_path, capsys, monkeypatch):
    ckpt, data = ckpt_and_data
    (tmp_path / "afile").write_text("I am a file")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    cmd = args[0]
    extra = []
    if cmd != "train" and "-c" not in args:
        extra = ["-c", str(ckpt)]
    if cmd in ("traverse", "reconstruct", "project", "manifold", "interpolate", "evaluate", "train"):
        extra += ["--data", str(data)]
    if cmd == "train":
        extra += ["--out", str(tmp_path / "run")]
    elif "-o" not in args:
        extra += ["-o", str(tmp_path / "out.png")]
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    r = main_in_process([*args, *extra], capsys)
    _assert_one_line_error(r, codes=(code,))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# Property-based: whatever bytes or arrays come in, only the tool's own error type comes out.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_random_bytes_give_only_data_errors(raw):
    try:
        faces = parse_mat(raw, "random")
    except DataError:
        return
    assert faces.dtype == np.uint8 and faces.shape[1:] == (28, 20)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 2000))
def test_mutated_mat_files_give_only_data_errors(junk, where):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": make_faces(3).reshape(3, 560).T})
    raw = bytearray(buf.getvalue())
    raw[where:where + len(junk)] = junk
    try:
        faces = parse_mat(bytes(raw), "mutated")
    except DataError:
        return
    assert faces.dtype == np.uint8 and faces.shape[1:] == (28, 20)


# matfile.py reads plain v5 files without scipy; scipy (in its forked child) is the reference.
@settings(max_examples=80, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64, np.float32, np.float64, np.bool_, np.complex64]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40)),
       st.booleans(), st.booleans())
def test_the_plain_reader_reads_what_scipy_reads(array, compress, another):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": array, **({"b": np.arange(6.0).reshape(2, 3)} if another else {})},
                     do_compression=compress)
    mine = matfile.read(buf.getvalue())
    theirs = {k: v for k, v in scipy.io.loadmat(io.BytesIO(buf.getvalue())).items() if not k.startswith("__")}
    if array.dtype.kind in "bc":
        assert mine is None  # logical and complex matrices are scipy's to read
        return
    assert mine is not None and mine.keys() == theirs.keys()
    for name, value in theirs.items():
        assert mine[name].dtype == value.dtype and np.array_equal(mine[name], value, equal_nan=True), name


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 2000), st.booleans(), st.none() | st.integers(0, 2100))
def test_the_plain_reader_reads_mutated_files_as_scipy_does_or_leaves_them_to_it(junk, where, compress, cut):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": make_faces(3).reshape(3, 560).T}, do_compression=compress)
    raw = bytearray(buf.getvalue())
    raw[where:where + len(junk)] = junk
    raw = bytes(raw[:cut])
    mine = matfile.read(raw)
    status, result = _read_mat_isolated(raw)  # scipy, in its forked child
    if mine is not None:  # then scipy reads the same
        assert status == "ok" and result[0] == list(mine)
        assert (result[1] is None and "ff" not in mine) or (
            result[1].dtype == mine["ff"].dtype and np.array_equal(result[1], mine["ff"], equal_nan=True))
    elif status == "ok" and result[1] is not None:  # left to scipy, which reads it: so does parse_mat
        try:
            faces = parse_mat(raw, "mutated")
        except DataError:
            return  # an ff that is not faces
        assert np.array_equal(faces, _check_ff(result[1], "scipy's"))


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.int16, np.float64, np.float32, np.int64, np.bool_,
                                         np.complex64]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=600)))
def test_random_arrays_give_only_data_errors(arr):
    try:
        faces = _check_ff(arr, "array")
    except DataError:
        return
    assert faces.dtype == np.uint8 and faces.shape[1:] == (28, 20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_random_bytes_give_only_checkpoint_errors(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("ck") / "random.pth"
    path.write_bytes(raw)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)


def test_mutated_checkpoints_give_only_checkpoint_errors(ckpt_and_data, tmp_path):
    good = ckpt_and_data[0].read_bytes()
    rng = np.random.default_rng(0)
    refused = []
    for i in range(40):
        raw = bytearray(good)
        if i % 2:
            raw = raw[: rng.integers(1, len(raw))]  # truncated
        else:
            at = int(rng.integers(0, len(raw) - 64))
            raw[at:at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        path = tmp_path / f"m{i}.pth"
        path.write_bytes(bytes(raw))
        try:
            ckpt = checkpoint.load(path)
            checkpoint.build_model(ckpt, path)
        except checkpoint.CheckpointError:
            refused.append(i)
    assert set(range(1, 40, 2)) <= set(refused)  # every truncated file is refused
    assert torch.load(ckpt_and_data[0], weights_only=True)["epoch"] == 1


def test_a_mat_file_that_crashes_scipy_gives_an_error_not_a_crash(tmp_path):
    """scipy's MAT reader dies with a segmentation fault on these bytes (found by the fuzz test above)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": make_faces(3).reshape(3, 560).T})
    raw = bytearray(buf.getvalue())
    raw[175:177] = bytes.fromhex("25f2")
    path = tmp_path / "crash.mat"
    path.write_bytes(bytes(raw))
    r = run_freyvae("train", "--data", str(path), "--out", str(tmp_path / "run"))
    line = _assert_one_line_error(r, codes=(1,))
    assert "not a readable MATLAB" in line and str(path) in line
