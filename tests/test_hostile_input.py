"""Hostile input, second round: endless and blocking files, compression bombs, crafted checkpoints,
device nodes as outputs, and a server that clients reset, flood with idle sockets or frame.
Every input is made here; each case gets one line and a non-zero exit, or a 4xx and a server that
keeps serving, with memory bounded."""

from __future__ import annotations

import http.client
import io
import json
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli.data.frey import load_faces
from freyvae_cli.explore_server import IDLE_TIMEOUT, Explorer, ExploreServer, Handler
from tests.conftest import main_in_process, make_faces, run_freyvae, write_mat

DEFLATE = 1 << 24  # zeros written to a compressor at a time


def one_line(r, codes=(1, 2)) -> str:
    """The run ended with exactly one error line on stderr, no traceback, nothing on stdout."""
    assert r.returncode in codes, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr and r.stdout == ""
    return lines[0]


def run_measured(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """The console program as the only child of a fresh Python, and the peak memory (MB) of it
    and its own children (the .mat reader's forked child)."""
    probe = ("import resource, subprocess, sys, json\n"
             "r = subprocess.run([sys.executable, '-m', 'freyvae_cli', *sys.argv[1:]],\n"
             "                   capture_output=True, text=True)\n"
             "print(json.dumps([r.returncode, r.stdout, r.stderr,"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=timeout)
    code, out, err, peak_kb = json.loads(done.stdout)
    return subprocess.CompletedProcess(args, code, out, err), peak_kb / 1024


# --- endless and blocking files ------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "faces.png"
    os.mkfifo(path)
    return path


def test_dev_zero_and_a_fifo_as_data_get_one_line_at_once(tmp_path, fifo, trained):
    for data in ("/dev/zero", str(fifo)):
        r = run_freyvae("train", "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1", timeout=60)
        assert "not a regular file" in one_line(r, codes=(1,))
    fifo_mat = tmp_path / "faces.mat"
    os.mkfifo(fifo_mat)
    r = run_freyvae("reconstruct", "-c", str(trained), "--data", str(fifo_mat), "-o", str(tmp_path / "r.png"),
                    timeout=60)
    assert "not a regular file" in one_line(r, codes=(1,))
    assert not (tmp_path / "run").exists() and not (tmp_path / "r.png").exists()


def test_a_fifo_or_a_device_as_an_image_or_a_checkpoint_gets_one_line(tmp_path, fifo, trained, capsys):
    r = run_freyvae("encode", str(fifo), "-c", str(trained), "-o", str(tmp_path / "e.png"), timeout=60)
    assert "not a regular file" in one_line(r, codes=(1,)) and not (tmp_path / "e.png").exists()
    for path in (str(fifo), "/dev/zero"):
        line = one_line(main_in_process(["info", "-c", path], capsys), codes=(1,))
        assert "not a regular file" in line


def test_links_that_lead_nowhere_are_named_as_such(tmp_path, trained, capsys):
    loop = tmp_path / "loop.mat"
    loop.symlink_to(tmp_path / "loop.mat")
    dangling = tmp_path / "gone.pth"
    dangling.symlink_to(tmp_path / "nothing-here.pth")
    line = one_line(run_freyvae("train", "--data", str(loop), "--out", str(tmp_path / "run"), timeout=60), codes=(1,))
    assert "loop of symbolic links" in line
    assert "symbolic link to nothing" in one_line(main_in_process(["info", "-c", str(dangling)], capsys))


def test_a_download_that_never_ends_is_cut_off(tmp_path):
    """A server that sends zeros without end: refused past the limit, nothing saved."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            chunk = bytes(1 << 20)
            try:
                for _ in range(400):  # 400 MB at most: the client hangs up long before
                    self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r, peak = run_measured("download", "--to", str(tmp_path / "f.mat"),
                               "--url", f"http://127.0.0.1:{server.server_address[1]}/frey_rawface.mat")
    finally:
        server.shutdown()
        server.server_close()
    assert "sends more than" in one_line(r, codes=(1,))
    assert not list(tmp_path.iterdir()) and peak < 900


# --- compression bombs ---------------------------------------------------------------------------

def npz_bomb(path: Path, faces: int) -> Path:
    """A .npz whose one array claims `faces` faces, all there as zeros: a few MB on disk."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (faces, 28, 20)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("faces.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            left, zeros = faces * 560, bytes(DEFLATE)
            while left:
                f.write(zeros[:min(left, DEFLATE)])
                left -= min(left, DEFLATE)
    return path


def mat_bomb(path: Path, faces: int, lie: bool = False) -> Path:
    """A MATLAB v5 file whose one compressed variable, ff, is 560 x `faces` uint8 zeros (`lie`:
    its tag claims a few kB)."""
    def element(kind: int, body: bytes) -> bytes:
        return struct.pack("<II", kind, len(body)) + body + bytes(-len(body) % 8)

    n = 560 * faces
    head = (element(6, struct.pack("<II", 9, 0)) + element(5, struct.pack("<ii", 560, faces))
            + element(1, b"ff") + struct.pack("<II", 2, n))  # uint8 class; then n bytes of uint8 values
    matrix = struct.pack("<II", 14, 4096 if lie else len(head) + n + (-n % 8))
    packer = zlib.compressobj(1)
    packed = [packer.compress(matrix + head)]
    left, zeros = n + (-n % 8), bytes(DEFLATE)
    while left:
        packed.append(packer.compress(zeros[:min(left, DEFLATE)]))
        left -= min(left, DEFLATE)
    body = b"".join(packed) + packer.flush()
    header = b"MATLAB 5.0 MAT-file, made by a test".ljust(116) + bytes(8) + b"\x00\x01IM"
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)
    return path


@pytest.mark.parametrize("kind", ["npz", "mat"])
def test_compression_bombs_are_refused_with_memory_bounded(kind, tmp_path, trained):
    """An .npz that unpacks to 560 MB and a .mat that unpacks to 448 MB (each a few MB): one line,
    and the command's peak memory stays near what it takes to start (~300 MB), not the bomb's."""
    bomb = npz_bomb(tmp_path / "faces.npz", 1_000_000) if kind == "npz" else mat_bomb(tmp_path / "ff.mat", 800_000)
    assert bomb.stat().st_size < 5e6
    r, peak = run_measured("reconstruct", "-c", str(trained), "--data", str(bomb), "-o", str(tmp_path / "r.png"))
    line = one_line(r, codes=(1,))
    assert ("more than the 100000 faces" in line) if kind == "npz" else ("unpacks to more than" in line)
    assert peak < 700, f"peak memory {peak:.0f} MB"
    assert not (tmp_path / "r.png").exists()


def test_the_mat_bomb_is_read_to_the_limit_only_and_the_frey_sized_file_still_reads(tmp_path):
    from freyvae_cli.data import matfile

    for lie in (False, True):  # refused by its own size, or by unpacking no further than the limit
        with pytest.raises(matfile.TooLarge):
            matfile.read(mat_bomb(tmp_path / "big.mat", 300_000, lie).read_bytes(), most=10_000_000)
    assert load_faces(mat_bomb(tmp_path / "ok.mat", 1965)).shape == (1965, 28, 20)


def test_scipys_reader_runs_with_its_memory_bounded(tmp_path):
    """Files the plain reader leaves to scipy run in a child whose address space is limited: a
    child that asks for gigabytes gets a MemoryError, not the machine's memory."""
    from freyvae_cli.data import frey

    def greedy(raw):  # what a decompression bomb does inside scipy
        frey._limit_memory(frey.MAX_BYTES)
        try:
            np.ones(2 * 1024**3, np.uint8)
        except MemoryError:
            return "error", "MemoryError"
        return "ok", ([], None)

    original = frey._read_mat
    frey._read_mat = greedy
    try:
        assert frey._read_mat_isolated(b"x") == ("error", "MemoryError")
    finally:
        frey._read_mat = original


def test_a_sparse_ff_is_named(tmp_path):
    path = tmp_path / "sparse.mat"
    scipy.io.savemat(path, {"ff": scipy.sparse.csc_matrix(make_faces(10).reshape(10, 560).T.astype(float))})
    from freyvae_cli.data.frey import DataError

    with pytest.raises(DataError, match="sparse matrix"):
        load_faces(path)


# --- crafted checkpoints -------------------------------------------------------------------------

def crafted(trained: Path, tmp_path: Path, change) -> Path:
    state = torch.load(trained, weights_only=True)
    change(state)
    path = tmp_path / "crafted.pth"
    torch.save(state, path)
    return path


def _set(*keys, value):
    def change(state):
        target = state
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return change


CRAFTED = {
    "latent_dim 10^9": (_set("config", "latent_dim", value=10**9), "latent_dim"),
    "latent_dim 300000": (_set("config", "latent_dim", value=300_000), "latent_dim"),
    "latent_dim True": (_set("config", "latent_dim", value=True), "latent_dim"),
    "channels 10^6": (_set("config", "channels", value=10**6), "channels"),
    "dropout NaN": (_set("config", "dropout", value=float("nan")), "dropout"),
    "likelihood 3": (_set("config", "likelihood", value=3), "likelihood"),
    "epoch -1": (_set("epoch", value=-1), "epoch"),
    "float split": (_set("split", "test", value=torch.tensor([0.0, 1.0])), "split"),
    "empty split": (_set("split", "test", value=torch.tensor([], dtype=torch.int64)), "split"),
    "2-D split": (_set("split", "test", value=torch.zeros(2, 3, dtype=torch.int64)), "split"),
    "negative index": (_set("split", "test", value=torch.tensor([-1, 2])), "split"),
    "a face in two splits": (lambda s: s["split"].__setitem__("test", s["split"]["train"][:3].clone()), "split"),
    "history a dict": (_set("history", value={"epoch": 1}), "history"),
    "history a string": (_set("history", value="oops"), "history"),
    "history of bad types": (_set("history", value=[{"epoch": "1", "train_loss": "x", "test_loss": []}]), "history"),
    "history without losses": (_set("history", value=[{"epoch": 1}]), "history"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_checkpoints_are_refused_before_a_model_is_built(case, trained, tmp_path, capsys):
    change, word = CRAFTED[case]
    path = crafted(trained, tmp_path, change)
    for cmd in (["info"], ["sample", "-o", str(tmp_path / "s.png")]):
        line = one_line(main_in_process([*cmd, "-c", str(path)], capsys), codes=(1,))
        assert word in line and "crafted.pth" in line
    assert not (tmp_path / "s.png").exists()


def test_a_huge_latent_size_costs_no_memory_and_no_time(trained, tmp_path):
    path = crafted(trained, tmp_path, _set("config", "latent_dim", value=300_000))
    r, peak = run_measured("info", "-c", str(path))
    assert "latent_dim 300000" in one_line(r, codes=(1,)) and peak < 700


def test_random_bytes_are_not_called_code_and_a_pickled_call_is(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(5):
        noise = tmp_path / f"noise{i}.pth"
        noise.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        line = one_line(main_in_process(["info", "-c", str(noise)], capsys), codes=(1,))
        assert "not a freyvae checkpoint" in line and "run code" not in line and "weights_only" not in line
    import pickle

    class Call:
        def __reduce__(self):
            return (os.getcwd, ())

    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps(Call(), protocol=4))
    assert "could run code" in one_line(main_in_process(["info", "-c", str(plain)], capsys), codes=(1,))


def test_real_checkpoints_still_pass_every_check(trained, quick_pixelvae):
    for path in (trained, quick_pixelvae[0]):
        ck.build_model(ck.load(path), path)


# --- device nodes as outputs ---------------------------------------------------------------------

@pytest.fixture
def null_copy(tmp_path) -> Path:
    """A character device like /dev/null, made here (root only)."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path


def test_a_device_node_is_never_replaced(null_copy, tmp_path, trained, small_mat):
    image = tmp_path / "face.png"
    Image.fromarray(make_faces(1)[0]).save(image)
    png_node = tmp_path / "N.png"
    os.rename(null_copy, png_node)
    r = run_freyvae("encode", str(image), "-c", str(trained), "-o", str(png_node), timeout=60)
    assert "device" in one_line(r, codes=(1,))
    r = run_freyvae("download", "--to", str(png_node), "--force", "--url", small_mat.as_uri(), timeout=60)
    assert "device" in one_line(r, codes=(1,))
    assert stat.S_ISCHR(png_node.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["N.png", "face.png"]  # no temporary file left


def test_atomic_write_refuses_a_node_that_appears_before_the_rename(null_copy, tmp_path):
    from freyvae_cli.atomic_files import atomic_write
    from freyvae_cli.errors import FreyError

    with pytest.raises(FreyError, match="device"):
        atomic_write(null_copy, lambda f: f.write(b"x"))
    assert stat.S_ISCHR(null_copy.stat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]


# --- images --------------------------------------------------------------------------------------

def test_float_images_with_nan_and_32_bit_integer_images_are_named(tmp_path, trained, capsys):
    nan = np.full((28, 20), 100.0, np.float32)
    nan[3, 3] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    Image.fromarray(np.full((28, 20), 2**31 - 5, np.int32)).save(tmp_path / "i32.tif")
    for name, words in (("nan.tif", "NaN"), ("i32.tif", "32-bit integer")):
        r = main_in_process(["encode", str(tmp_path / name), "-c", str(trained), "-o", str(tmp_path / "e.png")], capsys)
        assert words in one_line(r, codes=(1,)) and "Warning" not in r.stderr
    from freyvae_cli.data.images import read_face

    Image.fromarray(np.full((28, 20), 60000, np.uint16)).save(tmp_path / "u16.tif")
    assert read_face(tmp_path / "u16.tif").max() == round(60000 * 255 / 65535)  # 16 bits still scale


# --- the explore server --------------------------------------------------------------------------

@pytest.fixture
def server(trained, small_mat):
    """A server of the tiny model in this process, on a free port."""
    model, ckpt = ck.load_model(trained)
    srv = ExploreServer("127.0.0.1", 0, Explorer.build(model, ckpt, load_faces(small_mat), str(trained), 3.0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(port: int, path: str, host: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r, body


def test_many_query_fields_are_a_400_the_host_has_no_case_and_the_page_cannot_be_framed(server):
    port = server.server_address[1]
    r, body = request(port, "/api/info?" + "&".join(f"{c}=1" for c in "abcdefghi"))
    assert r.status == 400 and "at most 8 query fields" in json.loads(body)["error"]
    r, _ = request(port, "/", host=f"LOCALHOST:{port}")
    assert r.status == 200
    assert r.getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in r.getheader("Content-Security-Policy")


def explore_process(trained: Path, small_mat: Path, nofile: int | None = None) -> tuple[subprocess.Popen, int]:
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-m", "freyvae_cli", "explore", "-c", str(trained), "--data",
                             str(small_mat), "--no-browser"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=limit)
    line = proc.stderr.readline()
    assert "http://127.0.0.1:" in line, line + proc.stderr.read()
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, rest
    return rest


def test_clients_that_reset_mid_answer_print_nothing_on_the_servers_terminal(trained, small_mat):
    """Bad requests (400), the old 500 (many fields) and good ones, each reset by its client:
    the server's stderr holds only its own two lines."""
    proc, port = explore_process(trained, small_mat)
    try:
        paths = ["/api/decode.png?z=1,2", "/api/info?" + "&".join(f"{c}=1" for c in "abcdefghi"),
                 "/api/face?i=999", "/api/decode.png?z=0,0,0,0"]
        for i in range(20):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                s.sendall(f"GET {paths[i % 4]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert request(port, "/api/info")[0].status == 200
    finally:
        rest = stop(proc)
    assert rest.strip() == "stopped", rest


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_idle_sockets_under_a_low_file_limit_leave_the_page_answering(trained, small_mat):
    """70 idle connections to a server that may open 64 files: it closes the oldest idle ones
    instead of running out of descriptors, answers the page, and does not spin."""
    proc, port = explore_process(trained, small_mat, nofile=64)
    idle = []
    try:
        for _ in range(70):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        r, body = request(port, "/api/info")
        assert r.status == 200 and json.loads(body)["latent_dim"] == 4
        time.sleep(2.0)
        assert cpu_seconds(proc.pid) - before < 1.0  # idle, not spinning on accept()
        assert request(port, "/")[0].status == 200
    finally:
        for s in idle:
            s.close()
        rest = stop(proc)
    assert rest.strip() == "stopped", rest


def test_an_idle_connection_is_closed_after_the_idle_timeout(server, monkeypatch):
    assert Handler.timeout == IDLE_TIMEOUT and 0 < IDLE_TIMEOUT <= 60  # what the server runs with
    monkeypatch.setattr(Handler, "timeout", 0.5)  # the same mechanism, sooner
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")  # a request that never finishes (slow loris)
        assert s.recv(100) == b""  # closed by the server, well before the client's 10 s
    assert request(server.server_address[1], "/")[0].status == 200


def test_past_the_bound_idle_connections_make_way_and_busy_ones_refuse_newcomers(server):
    port = server.server_address[1]
    server.max_connections = 2
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    time.sleep(0.2)
    assert request(port, "/api/info")[0].status == 200  # an idle one was closed for it
    assert any(s.recv(10) == b"" for s in idle)
    for s in idle:
        s.close()
    time.sleep(0.2)
    explorer = server.explorer
    with explorer.lock:  # two decodes wait for the lock: both connections are busy
        busy = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET /api/decode.png?z=0,0,0,0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            busy.append(s)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(100).startswith(b"HTTP/1.1 503")  # refused at once, not left hanging
    for s in busy:
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        s.close()


def test_write_failures_in_the_handler_are_silent(server, capfd):
    port = server.server_address[1]
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(f"GET /api/face?i=999 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert request(port, "/api/info")[0].status == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_own_data_of_too_many_faces_is_refused_from_its_header(tmp_path, capsys):
    path = tmp_path / "many.npy"
    with open(path, "wb") as f:  # a header that claims 10^7 faces over a few bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 28, 20)})
        f.write(bytes(100))
    r = main_in_process(["train", "--data", str(path), "--out", str(tmp_path / "run")], capsys)
    assert "more than the 100000 faces" in one_line(r, codes=(1,))
    big = write_mat(tmp_path / "ok.mat", make_faces(12))
    assert load_faces(big).shape == (12, 28, 20)
