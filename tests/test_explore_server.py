"""`freyvae explore`: the real HTTP server on port 0, its page, every bad request, the command."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent
from freyvae_cli.data.frey import load_faces
from freyvae_cli.explore_server import Explorer, ExploreServer
from tests.conftest import make_faces


@pytest.fixture(scope="module")
def served(trained, small_mat):
    """The server of the tiny trained model, in a thread, on a free port."""
    model, ckpt = ck.load_model(trained)
    explorer = Explorer.build(model, ckpt, load_faces(small_mat), str(trained), 3.0)
    server = ExploreServer("127.0.0.1", 0, explorer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, model, ckpt
    server.shutdown()
    server.server_close()


def get(server, path: str, host: str | None = None, method: str = "GET", body: bytes | None = None,
        headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.server_address[1]}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), data


def zq(z) -> str:
    return ",".join(f"{float(v):.4f}" for v in z)


def test_the_page_and_its_files_load(served):
    server, _, _ = served
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, ctype, body = get(server, path)
        assert status == 200 and ctype.startswith(kind) and len(body) > 200
    status, _, body = get(server, "/")
    assert b'src="/app.js"' in body and b"http" not in body.replace(b"http-equiv", b"")  # nothing from the internet
    info = json.loads(get(server, "/api/info")[2])
    assert info["latent_dim"] == 4 and len(info["dims"]) == 4 and info["units"] == "nats per image"
    kls = [d["kl"] for d in info["dims"]]
    assert kls == sorted(kls, reverse=True) and len(info["map"]["points"]) == info["n_test"] == 12


def test_decode_returns_the_models_face_and_changes_with_z(served):
    server, model, _ = served
    z = torch.tensor([0.5, -1.0, 0.25, 2.0])
    status, ctype, body = get(server, "/api/decode.png?z=" + zq(z))
    assert status == 200 and ctype == "image/png"
    image = np.asarray(Image.open(io.BytesIO(body)))
    assert image.shape == (280, 200)
    expected = (np.clip(latent.decode(model, z.unsqueeze(0))[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(image[::10, ::10], expected)  # the same face, upscaled 10x by nearest neighbour
    other = np.asarray(Image.open(io.BytesIO(get(server, "/api/decode.png?z=" + zq(-z))[2])))
    assert not np.array_equal(image, other)


def test_faces_originals_and_interpolation(served, small_mat):
    server, model, ckpt = served
    face = json.loads(get(server, "/api/face?i=3")[2])
    frame = int(ckpt["split"]["test"][3])
    assert face["frame"] == frame
    x = torch.from_numpy(load_faces(small_mat)[[frame]]).unsqueeze(1)
    assert np.allclose(face["mu"], latent.encode(model, x)[0][0].numpy(), atol=1e-4)
    original = np.asarray(Image.open(io.BytesIO(get(server, "/api/original.png?i=3")[2])))
    assert np.array_equal(original[::10, ::10], load_faces(small_mat)[frame])
    status, ctype, body = get(server, "/api/interpolate.png?a=0&b=5&steps=7")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (7 * 20 * 4, 28 * 4)


def fq(values) -> str:
    return ",".join(str(int(v)) for v in np.asarray(values).ravel())


def test_your_face_is_encoded_from_its_560_values_and_nothing_is_kept(served, tmp_path):
    server, model, _ = served
    face = make_faces(1, seed=9)[0]
    before = dict(vars(server.explorer))
    status, ctype, body = get(server, "/api/encode?face=" + fq(face))
    assert vars(server.explorer) == before  # encoded and forgotten: the explorer holds nothing new
    assert status == 200 and ctype == "application/json"
    found = json.loads(body)
    x = torch.from_numpy(face)[None, None]
    mu, logvar = latent.encode(model, x)
    assert np.allclose(found["mu"], mu[0].numpy(), atol=1e-4)
    assert np.allclose(found["sd"], (0.5 * logvar[0]).exp(), atol=1e-4)
    import warnings

    from freyvae_cli.evaluate import evaluate  # the same -ELBO as `freyvae evaluate` gives that one image

    with warnings.catch_warnings():  # its active-unit count has no variance over one image
        warnings.simplefilter("ignore", UserWarning)
        want = evaluate(model, x, iw_samples=0)["neg_elbo"]
    assert found["neg_elbo"] == pytest.approx(want, rel=1e-5)
    assert found["units"] == "nats per image"
    assert json.loads(get(server, "/api/encode?face=" + fq(255 - face))[2])["mu"] != found["mu"]


FACE_OK = ",".join(["7"] * 560)
BAD = [
    ("/api/encode", 400, "give one face"),
    ("/api/encode?face=" + FACE_OK + "&face=" + FACE_OK, 400, "give one face"),
    ("/api/encode?face=" + ",".join(["7"] * 559), 400, "got 559"),
    ("/api/encode?face=" + FACE_OK + ",7", 400, "got 561"),
    ("/api/encode?face=" + FACE_OK.replace("7", "256", 1), 400, "0 to 255"),
    ("/api/encode?face=" + FACE_OK.replace("7", "-1", 1), 400, "0 to 255"),
    ("/api/encode?face=" + FACE_OK.replace("7", "1.5", 1), 400, "0 to 255"),
    ("/api/encode?face=" + FACE_OK.replace("7", "", 1), 400, "0 to 255"),
    ("/api/encode?face=" + FACE_OK.replace("7", "%C2%B2", 1), 400, "0 to 255"),
    ("/api/encode?face=" + FACE_OK.replace("7", "0007", 1), 400, "0 to 255"),
    ("/api/decode.png?z=1,2,3", 400, "4 numbers"),
    ("/api/decode.png?z=1,2,3,nan", 400, "finite"),
    ("/api/decode.png?z=1,2,3,inf", 400, "finite"),
    ("/api/decode.png?z=1,2,3,1e30", 400, "within"),
    ("/api/decode.png?z=1,2,3,abc", 400, "numbers"),
    ("/api/decode.png", 400, "numbers"),
    ("/api/face?i=12", 400, "between 0 and 11"),
    ("/api/face?i=-1", 400, "whole number"),
    ("/api/face?i=1&i=2", 400, "one i"),
    ("/api/interpolate.png?a=0&b=1&steps=1000", 400, "steps"),
    ("/nope", 404, "no such page"),
    ("/../../etc/passwd", 404, "no such page"),
    ("/%2e%2e/pyproject.toml", 404, "no such page"),
    ("/web/app.js", 404, "no such page"),
    ("/api/decode.png?z=" + "1," * 3000 + "1", 414, "too long"),
]


@pytest.mark.parametrize("path,status,message", BAD)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(served, path, status, message):
    server, _, _ = served
    got, ctype, body = get(server, path)
    assert got == status and ctype == "application/json"
    assert message in json.loads(body)["error"] and b"Traceback" not in body
    assert get(server, "/api/decode.png?z=0,0,0,0")[0] == 200


def test_foreign_host_bodies_and_other_methods_are_refused(served):
    server, _, _ = served
    assert get(server, "/", host="evil.example:80")[0] == 403  # DNS rebinding
    assert get(server, "/api/info", host="attacker.test")[0] == 403
    assert get(server, "/", host=f"localhost:{server.server_address[1]}")[0] == 200
    assert get(server, "/api/face?i=1", body=b"x" * 100_000)[0] == 413
    assert get(server, "/api/info", method="POST", body=b"{}")[0] == 405
    assert get(server, "/api/decode.png?z=0,0,0,0")[0] == 200


def test_explore_command_serves_until_ctrl_c(trained, small_mat, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "freyvae_cli", "explore", "-c", str(trained),
                             "--data", str(small_mat), "--no-browser"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stderr.readline()
        assert "http://127.0.0.1:" in line
        url = line.split("http://")[1].split("/")[0]
        conn = http.client.HTTPConnection(url, timeout=30)
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0 and "Traceback" not in rest and rest.strip() == "stopped"


def test_answers_go_out_without_waiting_for_the_clients_acknowledgement(served, monkeypatch):
    """Headers and body are two writes: with Nagle's algorithm on, a kept-alive client's delayed
    acknowledgement held every answer back 40 ms. Each connection the server accepts has it off."""
    import socket as sockets

    from freyvae_cli.explore_server import Handler

    server, _, _ = served
    seen = []
    setup = Handler.setup

    def recording(self):
        setup(self)
        seen.append(self.connection.getsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY))

    monkeypatch.setattr(Handler, "setup", recording)
    assert get(server, "/api/info")[0] == 200
    assert seen and all(seen)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_explore_on_pixelvae_draws_on_its_main_thread_and_stops_on_a_signal(sig, tmp_path):
    """PixelVAE's passes run on the command's main thread (server.Drawer): faces for 3 clients at
    once are the sequential sampler's, drawn alone; a signal still stops it cleanly."""
    from tests.conftest import REAL_DATA
    from tests.reference import sequential_sample

    pixelvae = REAL_DATA.parents[1] / "models" / "pixelvae-321.pth"
    if not (pixelvae.is_file() and REAL_DATA.is_file()):
        pytest.skip("needs ../shared/models/pixelvae-321.pth and the real data")
    proc = subprocess.Popen([sys.executable, "-m", "freyvae_cli", "explore", "-c", str(pixelvae),
                             "--data", str(REAL_DATA), "--no-browser"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            cwd=tmp_path)
    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(40))
    got = {}
    try:
        address = proc.stderr.readline().split("http://")[1].split("/")[0]

        def ask(i):
            conn = http.client.HTTPConnection(address, timeout=60)
            conn.request("GET", "/api/decode.png?z=" + ",".join(f"{v:.4f}" for v in z[i].tolist()))
            response = conn.getresponse()
            got[i] = (response.status, response.read())

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        proc.send_signal(sig)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0 and "Traceback" not in rest and rest.strip() == "stopped"
    model, _ = ck.load_model(pixelvae)
    u = torch.rand(1, 1, 28, 20, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        status, body = got[i]
        face = np.asarray(Image.open(io.BytesIO(body)).convert("L"))[::10, ::10]  # shown 10 times larger
        z4 = torch.tensor([float(f"{v:.4f}") for v in z[i].tolist()]).unsqueeze(0)
        assert status == 200 and np.array_equal(face, sequential_sample(model, z4, u)[0, 0].numpy()), i


def test_explore_refuses_a_port_in_use_and_a_missing_checkpoint(runner, trained, small_mat, tmp_path):
    from freyvae_cli.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["explore", "-c", str(trained), "--data", str(small_mat), "--port", str(port),
                                "--no-browser"])
    assert r.exit_code == 1 and "--port" in r.stderr and r.stderr.count("\n") == 1
    r = runner.invoke(app, ["explore", "-c", str(tmp_path / "none.pth"), "--no-browser"])
    assert r.exit_code == 1 and "not found" in r.stderr and r.stderr.count("\n") == 1
    bad = tmp_path / "bad.pth"
    bad.write_bytes(trained.read_bytes()[:3000])  # a truncated checkpoint
    r = runner.invoke(app, ["explore", "-c", str(bad), "--no-browser"])
    assert r.exit_code == 1 and "bad.pth" in r.stderr and r.stderr.count("\n") == 1


def test_a_client_that_leaves_before_its_answer_gets_no_traceback(served, capfd):
    """A closed tab mid-request: the server writes into a closed socket, says nothing, keeps serving."""
    server, _, _ = served
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            s.sendall(f"GET /api/decode.png?z=0,0,0,0 HTTP/1.1\r\nHost: 127.0.0.1:{server.server_address[1]}"
                      "\r\n\r\n".encode())
    assert get(server, "/api/decode.png?z=0,0,0,0")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err
