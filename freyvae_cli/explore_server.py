"""`freyvae explore`: a local HTTP server that decodes faces for the page in freyvae_cli/web/.

Standard library only (http.server, threaded). The model decodes on the server; the page asks for
faces as PNGs. Nothing from a request reaches the file system: the page's files are a fixed table,
every parameter is parsed and checked, and a bad request gets a 4xx with a short JSON error. A face
of the user's own arrives as its 560 grey values in the query string (the page makes them from the
image: data/images.py's conversion); it is encoded and forgotten, never stored.
Requests whose Host header is not this server's own address are refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from freyvae_cli import latent
from freyvae_cli.data.frey import HEIGHT, PIXELS, WIDTH
from freyvae_cli.likelihood import bits_per_dim, kl_divergence
from freyvae_cli.prior import of_checkpoint

PAGE_FILES = {  # URL path -> (file in freyvae_cli/web, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_URL = 4096  # bytes of request line target; a z of 512 numbers fits easily
MAX_Z = 50.0  # |z_d| above this is refused: the prior puts no mass there
SCALE = 10  # the face is 28x20 pixels; the page shows it 280x200, crisp
MAX_STEPS = 20
PCS = 8  # sliders along the top principal directions of the test means
MAX_FIELDS = 8  # query fields in one request
IDLE_TIMEOUT = 20.0  # seconds a connection may wait for its next request, or take to send one
MAX_CONNECTIONS = 32  # open at once (a browser opens six to one host), fewer under a low file limit


class BadRequest(Exception):
    """A request parameter is missing or wrong: 400 with this message."""


class Drawer:
    """PixelVAE faces for requests that come together, drawn together: each request's latent joins
    the fixed-point draw under way (sampler.Fixpoint) and leaves it once its face is final, so no
    request waits for a whole batch, and 8 clients share every pass. One thread runs the passes,
    under the explorer's lock: a thread of its own, or (`thread` False) whoever calls run(): the
    command runs them on its main thread, where torch's thread pool runs a pass in half the time it
    takes on another thread here (docs/performance.md). A pass that fails fails every request in
    the draw, and the next requests start a fresh one."""

    def __init__(self, engine, lock: threading.Lock, noise: torch.Tensor, thread: bool = True) -> None:
        self.engine = engine  # () -> a fresh Fixpoint: add(z, u) -> tickets, step() -> [(ticket, face)]
        self.drawing = engine()
        self.lock, self.noise = lock, noise
        mutex = threading.Lock()
        self.work, self.ready = threading.Condition(mutex), threading.Condition(mutex)
        self.incoming: list[dict] = []
        self.flying: dict[int, dict] = {}  # ticket -> request
        if thread:
            threading.Thread(target=self.run, name="freyvae-drawer", daemon=True).start()

    def __call__(self, z: torch.Tensor) -> np.ndarray:
        """The face (28, 20) in [0, 1] for latent z (D,)."""
        slot = {"z": z}
        with self.work:
            self.incoming.append(slot)
            self.work.notify()
            while "face" not in slot and "error" not in slot:
                self.ready.wait()
        if "error" in slot:
            raise slot["error"]
        return slot["face"]

    def run(self) -> None:
        """Draw for the requests, forever."""
        with self.work:
            while True:
                while not self.incoming and not self.flying:
                    # a timeout: Ctrl-C may reach another thread, and only a main thread that wakes
                    # up runs Python's handler for it
                    self.work.wait(timeout=0.5)
                self.one_pass()

    def one_pass(self) -> None:
        """The requests that came in join the draw, and one pass runs; called holding the mutex."""
        joining, self.incoming = self.incoming, []
        self.work.release()
        try:
            with self.lock:
                tickets = [self.drawing.add(s["z"].unsqueeze(0), self.noise)[0] for s in joining]
                done = self.drawing.step()
            error = None
        except Exception as e:  # every request in the draw hears of it, none hangs
            done, error = [], e
        finally:
            self.work.acquire()
        if error is not None:
            for s in [*self.flying.values(), *joining]:
                s["error"] = error
            self.flying, self.drawing = {}, self.engine()
        else:
            self.flying.update(zip(tickets, joining, strict=True))
            for ticket, face in done:
                self.flying.pop(ticket)["face"] = face[0].float().numpy() / 255.0
        if done or error is not None:
            self.ready.notify_all()


def _prior_info(prior) -> dict | None:
    """The fitted prior the page draws its random faces from (mean and Cholesky factor), or None: N(0, I)."""
    if not prior.fitted:
        return None
    return {"mean": [round(float(v), 6) for v in prior.mean], "chol": prior.chol.float().numpy().round(6).tolist()}


@dataclass
class Explorer:
    """What the page needs, computed once: the model, the test faces and their latent means."""

    model: torch.nn.Module
    info: dict
    faces: np.ndarray | None  # (n, 28, 20) uint8, the test split; None without the data file
    frames: np.ndarray
    mu: torch.Tensor  # (n, D) posterior means
    lock: threading.Lock  # one decode at a time: torch already uses every core for one
    drawer: Drawer | None = None  # PixelVAE's faces, for the requests that come together
    drawer_thread: bool = True  # False: the caller runs drawer.run()

    def __post_init__(self) -> None:
        if self.model.autoregressive:
            from freyvae_cli.pixelvae import sampler

            # each face drawn with the arithmetic of a draw of its own, however many are drawn with it
            self.drawer = Drawer(lambda: sampler.Fixpoint(self.model, sampler.AT_ONCE, like_batch=1), self.lock,
                                 latent.pixel_noise(self.model), self.drawer_thread)

    @classmethod
    def build(cls, model, ckpt: dict, faces: np.ndarray | None, checkpoint: str, span: float,
              drawer_thread: bool = True, named: str | None = None) -> Explorer:
        """faces None: a pretrained model without the data file, mapped from its stored test means.
        `named` is how the page's commands name a pretrained model (--pretrained NAME), else -c PATH."""
        frames = ckpt["split"]["test"].numpy()
        test = None if faces is None else latent.split_images(ckpt, faces, "test")[0].squeeze(1).numpy()
        mu, logvar = latent.test_codes(model, ckpt, faces)
        kl = kl_divergence(mu, logvar).mean(0).numpy()  # nats per dimension, as latent.kl_per_dim
        points, axes, share = latent.pca(mu.numpy())
        top, top_axes, top_share = latent.pca(mu.numpy(), min(PCS, model.latent_dim))
        last = ckpt["history"][-1] if ckpt["history"] else {}
        cfg = ckpt["config"]
        info = {
            "checkpoint": checkpoint, "named": named, "faces": test is not None,
            "model": cfg.get("model", "seed"), "likelihood": cfg["likelihood"],
            "epochs": ckpt["epoch"], "test_loss": last.get("test_loss"), "units": "nats per image",
            "latent_dim": model.latent_dim, "range": span, "n_test": len(mu),
            "autoregressive": bool(model.autoregressive), "drawn": latent.what_is_drawn(model),
            "prior": _prior_info(of_checkpoint(ckpt)),
            "dims": [{"index": int(d), "kl": float(kl[d])} for d in np.argsort(-kl, kind="stable")],
            "map": {"points": points.round(4).tolist(), "frames": frames.tolist(), "axes": axes.tolist(),
                    "centre": mu.mean(0).tolist(), "share": [float(s) for s in share]},
            # sliders along the principal directions, in standard deviations of the means along each
            "pca": {"axes": top_axes.tolist(), "sd": top.std(0, ddof=1).tolist(),
                    "share": [float(s) for s in top_share]},
        }
        return cls(model, info, test, frames, mu, threading.Lock(), drawer_thread=drawer_thread)

    def decode_png(self, z: torch.Tensor) -> bytes:
        if self.drawer is not None:
            return png(self.drawer(z))
        with self.lock:  # the seed model: one at a time, as cheap as a batch
            return png(latent.decode(self.model, z.unsqueeze(0))[0])

    def strip_png(self, a: int, b: int, steps: int) -> bytes:
        with self.lock:
            path = latent.decode(self.model, latent.interpolate(self.mu[a], self.mu[b], steps))
        return png(path, scale=4)

    def encode_face(self, x: torch.Tensor) -> dict:
        """A face of the user's own (uint8 (1, 1, 28, 20)): its latent mean and standard deviation,
        and its -ELBO in nats (bits per dimension for a discrete likelihood)."""
        with self.lock:
            mu, sd, neg_elbo = latent.encode_with_elbo(self.model, x)
        loss = float(neg_elbo[0])
        found = {"mu": [round(float(v), 5) for v in mu[0]], "sd": [round(float(v), 5) for v in sd[0]],
                 "neg_elbo": loss, "units": "nats per image"}
        if self.model.likelihood != "bernoulli":
            found["bits_per_dim"] = bits_per_dim(loss)
        return found

    def face(self, i: int) -> dict:
        return {"index": i, "frame": int(self.frames[i]), "mu": [round(float(v), 5) for v in self.mu[i]]}


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer where the process may open few files (ulimit -n): half of what
    is left beside those open now, so that accept() never runs out of descriptors."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(2, min(MAX_CONNECTIONS, (soft - in_use - 8) // 2))


def png(faces: np.ndarray, scale: int = SCALE) -> bytes:
    """One face (28, 20) or a row of them (k, 28, 20), values in [0, 1], as a PNG upscaled by
    nearest neighbour, side by side with no gaps (figures.face_grid)."""
    from freyvae_cli import figures

    row = faces[None] if faces.ndim == 2 else faces
    return figures.png_bytes(figures.face_grid([row], scale=scale, sep=0))


def parse_z(text: str, latent: int) -> torch.Tensor:
    parts = text.split(",")
    if len(parts) != latent:
        raise BadRequest(f"z must have {latent} numbers (got {len(parts)})")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise BadRequest("z must be comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise BadRequest("z must be finite numbers")
    if max(abs(v) for v in values) > MAX_Z:
        raise BadRequest(f"z values must lie within ±{MAX_Z:g}")
    return torch.tensor(values, dtype=torch.float32)


def parse_face(query: dict) -> torch.Tensor:
    """A face of the user's own: exactly 560 whole numbers 0..255, comma-separated, row by row."""
    values = query.get("face")
    if not values or len(values) != 1:
        raise BadRequest(f"give one face: {PIXELS} grey values 0..255, comma-separated")
    parts = values[0].split(",")
    if len(parts) != PIXELS:
        raise BadRequest(f"face must have {PIXELS} grey values ({HEIGHT} rows of {WIDTH}); got {len(parts)}")
    if not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        raise BadRequest("face values must be whole numbers from 0 to 255")
    return torch.tensor([int(p) for p in parts], dtype=torch.uint8).view(1, 1, HEIGHT, WIDTH)


def parse_int(query: dict, name: str, low: int, high: int) -> int:
    values = query.get(name)
    if not values or len(values) != 1:
        raise BadRequest(f"give one {name}")
    text = values[0]
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise BadRequest(f"{name} must be a whole number")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high} (got {value})")
    return value


class Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "freyvae"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm the body waits for the client
    # to acknowledge the headers, which a kept-alive connection delays by 40 ms: every answer took
    # 44 ms here, /api/info too (benchmarks/bench_explore.py --walk).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal is the user's
        pass

    timeout = IDLE_TIMEOUT  # on the socket: a client silent this long is closed, its thread freed

    def handle_one_request(self) -> None:
        self.server.waiting(self.connection, True)  # until its headers are in, the server may close it
        super().handle_one_request()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.waiting(self.connection, False)
        return parsed

    def send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client left (a closed tab, a reset): nobody to tell, nothing to print
            self.close_connection = True

    def fail(self, status: int, message: str) -> None:
        self.send(status, json.dumps({"error": message}).encode(), "application/json")

    def do_GET(self) -> None:
        try:
            self.route()
        except BadRequest as e:
            self.fail(HTTPStatus.BAD_REQUEST, str(e))
        except OSError:  # the page went away before its answer (a closed tab): nobody to tell
            self.close_connection = True
        except Exception as e:  # a bug must not stop the server or show a traceback
            self.fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__})")

    def do_POST(self) -> None:
        self.close_connection = True
        self.fail(HTTPStatus.METHOD_NOT_ALLOWED, "only GET is served")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def route(self) -> None:
        if (self.headers.get("Host") or "").lower() not in self.server.hosts:  # host names know no case
            self.close_connection = True
            return self.fail(HTTPStatus.FORBIDDEN, "unknown Host header")
        length = self.headers.get("Content-Length")
        if length not in (None, "0"):
            self.close_connection = True
            return self.fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "GET requests carry no body")
        if len(self.path) > MAX_URL:
            return self.fail(HTTPStatus.REQUEST_URI_TOO_LONG, "request too long")
        url = urlsplit(self.path)
        try:
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            raise BadRequest(f"a request has at most {MAX_FIELDS} query fields") from None
        ex = self.server.explorer
        if url.path in PAGE_FILES:
            name, kind = PAGE_FILES[url.path]
            page = resources.files("freyvae_cli").joinpath("web").joinpath(name).read_bytes()
            return self.send(HTTPStatus.OK, page, kind)
        if url.path == "/favicon.ico":  # browsers ask for it; there is none
            return self.send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if url.path == "/api/info":
            return self.send(HTTPStatus.OK, json.dumps(ex.info).encode(), "application/json")
        if url.path == "/api/encode":
            return self.send(HTTPStatus.OK, json.dumps(ex.encode_face(parse_face(query))).encode(), "application/json")
        if url.path == "/api/decode.png":
            z = parse_z(query.get("z", [""])[0], ex.model.latent_dim)
            return self.send(HTTPStatus.OK, ex.decode_png(z), "image/png")
        last = len(ex.frames) - 1
        if url.path == "/api/face":
            return self.send(HTTPStatus.OK, json.dumps(ex.face(parse_int(query, "i", 0, last))).encode(),
                             "application/json")
        if url.path == "/api/original.png":
            if ex.faces is None:
                return self.fail(HTTPStatus.NOT_FOUND, "the test faces need the data file: run `freyvae download`")
            return self.send(HTTPStatus.OK, png(ex.faces[parse_int(query, "i", 0, last)] / 255.0), "image/png")
        if url.path == "/api/interpolate.png":
            a, b = parse_int(query, "a", 0, last), parse_int(query, "b", 0, last)
            steps = parse_int(query, "steps", 2, MAX_STEPS)
            return self.send(HTTPStatus.OK, ex.strip_png(a, b, steps), "image/png")
        return self.fail(HTTPStatus.NOT_FOUND, "no such page")


class ExploreServer(ThreadingHTTPServer):
    """A thread per connection, at most max_connections open at once. Past that, the connection
    that has waited longest for a request is closed (a browser opens another when it needs one),
    and where every one is busy the newcomer gets a 503: idle clients can take neither the
    threads nor the file descriptors, and the page still answers."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, explorer: Explorer) -> None:
        super().__init__((host, port), Handler)
        self.explorer = explorer
        bound = self.server_address[1]
        self.hosts = {f"{host}:{bound}".lower(), f"127.0.0.1:{bound}", f"localhost:{bound}"}
        self.open: dict[socket.socket, float | None] = {}  # connection -> since when it waits (None: busy)
        self.open_lock = threading.Lock()
        self.max_connections = connection_limit()

    def process_request(self, request, client_address) -> None:
        with self.open_lock:
            if len(self.open) >= self.max_connections:
                waiting = [(since, conn) for conn, since in self.open.items() if since is not None]
                if not waiting:
                    with contextlib.suppress(OSError):
                        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                        b"Connection: close\r\n\r\n")
                    super().shutdown_request(request)  # never in self.open: no need of the lock we hold
                    return
                oldest = min(waiting, key=lambda w: w[0])[1]
                del self.open[oldest]
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its thread reads the end, and closes it
            self.open[request] = time.monotonic()
        super().process_request(request, client_address)

    def waiting(self, conn: socket.socket, waits: bool) -> None:
        with self.open_lock:
            if conn in self.open:
                self.open[conn] = time.monotonic() if waits else None

    def shutdown_request(self, request) -> None:
        with self.open_lock:
            self.open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Silent: a client that left mid-answer is no news, and the terminal is the user's."""

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/"

    def run(self) -> None:
        """Serve until interrupted (KeyboardInterrupt), then close. An explorer built with
        drawer_thread=False draws PixelVAE's faces on this, the calling thread (the main one: torch
        runs a pass fastest there), and the HTTP server runs on another."""
        drawer = self.explorer.drawer
        try:
            if drawer is None:
                self.serve_forever()
            else:
                # one face at a time, beside a browser: a second torch thread waits on a busy core
                # (a confirming pass's p95 was 144 ms with a competing process, 7 ms on one thread)
                torch.set_num_threads(1)
                threading.Thread(target=self.serve_forever, daemon=True).start()
                drawer.run()
        finally:
            if drawer is not None:
                self.shutdown()
            self.server_close()
            # Every torch call runs under the explorer's lock. Take it for good: the decode under
            # way ends, and none starts, since a daemon thread inside torch when the interpreter
            # exits aborts it ("terminate called without an active exception", exit -6).
            self.explorer.lock.acquire(timeout=10)
