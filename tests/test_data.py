"""Loading, splitting and downloading the data (the download against a server on 127.0.0.1)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from freyvae_cli.cli import app
from freyvae_cli.data.frey import DataError, load_faces, pixel_hash, split_indices
from tests.conftest import REAL_DATA, last_json, make_faces, run_in_pty, write_mat

README_HASH = "fbd70c2c992104024a20f4d253da1a1132eb6bf8ed142dccbe7d2b1743b705c4"


def test_split_sizes_and_determinism():
    train, test = split_indices(1965, 0.2, 0)
    assert (len(train), len(test)) == (1572, 393)
    assert len(np.union1d(train, test)) == 1965 and len(np.intersect1d(train, test)) == 0
    expected = np.random.default_rng(0).permutation(1965)
    assert np.array_equal(train, expected[:1572]) and np.array_equal(test, expected[1572:])
    other, _ = split_indices(1965, 0.2, 1)
    assert not np.array_equal(train, other)


def test_load_round_trip_and_layout(tmp_path):
    faces = make_faces(7)
    loaded = load_faces(write_mat(tmp_path / "f.mat", faces))
    assert loaded.dtype == np.uint8 and loaded.shape == (7, 28, 20)
    assert np.array_equal(loaded, faces)


def test_integer_valued_doubles_are_accepted(tmp_path):
    import scipy.io

    faces = make_faces(5)
    scipy.io.savemat(tmp_path / "d.mat", {"ff": faces.reshape(5, 560).T.astype(np.float64)})
    assert np.array_equal(load_faces(tmp_path / "d.mat"), faces)


@pytest.mark.skipif(not REAL_DATA.exists(), reason="needs ../shared/data/frey_rawface.mat")
def test_real_file_matches_its_readme():
    faces = load_faces(REAL_DATA)
    assert faces.shape == (1965, 28, 20)
    assert faces.min() == 8 and faces.max() == 238
    assert pixel_hash(faces) == README_HASH


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_writes_a_checked_file(runner, http_root, tmp_path):
    root, base = http_root
    faces = make_faces(12)
    write_mat(root / "frey_rawface.mat", faces)
    dest = tmp_path / "data" / "frey_rawface.mat"
    r = runner.invoke(app, ["download", "--to", str(dest), "--url", f"{base}/frey_rawface.mat", "--json"])
    assert r.exit_code == 0, r.output
    info = last_json(r.stdout)
    assert info["downloaded"] and info["images"] == 12 and info["pixel_hash"] == pixel_hash(faces)
    assert dest.read_bytes() == (root / "frey_rawface.mat").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["frey_rawface.mat"]  # no temporary left
    again = runner.invoke(app, ["download", "--to", str(dest), "--url", f"{base}/frey_rawface.mat", "--json"])
    assert again.exit_code == 0 and last_json(again.stdout)["downloaded"] is False


@pytest.mark.parametrize("problem", ["404", "not a mat file", "no server"])
def test_download_failures_leave_nothing(runner, http_root, tmp_path, problem):
    root, base = http_root
    (root / "junk.mat").write_bytes(b"<html>moved</html>")
    url = {"404": f"{base}/missing.mat", "not a mat file": f"{base}/junk.mat",
           "no server": "http://127.0.0.1:9/frey_rawface.mat"}[problem]
    dest = tmp_path / "data" / "frey_rawface.mat"
    r = runner.invoke(app, ["download", "--to", str(dest), "--url", url])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not dest.exists()
    assert not dest.parent.exists() or not any(dest.parent.iterdir())


def test_env_var_sets_the_default_data_path(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FREYVAE_DATA", str(tmp_path / "elsewhere.mat"))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["train", "--epochs", "1"])
    assert r.exit_code == 1 and "elsewhere.mat not found" in r.stderr
    assert "freyvae download" in r.stderr


def test_data_error_is_the_tools_error(tmp_path):
    with pytest.raises(DataError):
        load_faces(Path(tmp_path / "missing.mat"))


def test_train_offers_the_download_in_a_terminal(http_root, tmp_path):
    root, base = http_root
    write_mat(root / "frey_rawface.mat", make_faces(40))
    env = {"FREYVAE_DATA_URL": f"{base}/frey_rawface.mat", "FREYVAE_DATA": ""}
    code, text = run_in_pty(["train", "--epochs", "1", "--latent-dim", "2"], env=env, cwd=tmp_path,
                            answers={"Download it from": b"y\n"})
    assert code == 0, text
    assert f"{base}/frey_rawface.mat" in text
    assert load_faces(tmp_path / "data" / "frey_rawface.mat").shape == (40, 28, 20)
    assert (tmp_path / "runs" / "vae_final_model.pth").is_file()


def test_declining_the_download_writes_nothing(http_root, tmp_path):
    root, base = http_root
    write_mat(root / "frey_rawface.mat", make_faces(40))
    code, text = run_in_pty(["train", "--epochs", "1"], env={"FREYVAE_DATA_URL": f"{base}/frey_rawface.mat",
                                                             "FREYVAE_DATA": ""},
                            cwd=tmp_path, answers={"Download it from": b"n\n"})
    assert code == 1 and "not found" in text
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
