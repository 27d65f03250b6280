"""`freyvae explore` in a real browser: headless Chromium (Debian's package) driven by Playwright
drags a slider, clicks the latent map, shift-clicks for an interpolation, and sees the face change
with no console error."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import torch

from freyvae_cli import checkpoint as ck
from freyvae_cli.data.frey import load_faces
from freyvae_cli.explore_server import Explorer, ExploreServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(trained, small_mat, tmp_path):
    model, ckpt = ck.load_model(trained)
    server = ExploreServer("127.0.0.1", 0, Explorer.build(model, ckpt, load_faces(small_mat), str(trained), 3.0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        yield page, errors
        page.screenshot(path=str(tmp_path / "latent.png"))
        if os.environ.get("FREYVAE_SCREENSHOT"):  # to look at it, as a person would
            shutil.copy(tmp_path / "latent.png", os.environ["FREYVAE_SCREENSHOT"])
        browser.close()
    server.shutdown()
    server.server_close()


def wait_until(page, js: str, timeout: float = 10.0) -> None:
    """Poll a JavaScript expression through the DevTools protocol (Playwright's own waiting helper
    evaluates strings, which the page's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        page.wait_for_timeout(50)


def face_pixels(page) -> bytes:
    return page.locator("#face").screenshot()


def wait_for_change(page, before: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = face_pixels(page)
        if now != before:
            return now
        page.wait_for_timeout(100)
    raise AssertionError("the face did not change")


def test_dragging_a_slider_clicking_the_map_and_interpolating(page):
    page, errors = page
    assert "epochs" in page.inner_text("#info") and "nats per image" in page.inner_text("#info")
    assert page.locator("#sliders input").count() + page.locator("#inactive input").count() == 4
    assert "freyvae traverse" in page.inner_text("#command")
    wait_until(page, "document.getElementById('face').src.startsWith('blob:')")
    before = face_pixels(page)

    if page.locator("#sliders input").count() == 0:  # a young model: every dimension folded away
        page.click("#inactive-summary")
    slider = page.locator(".slider input").first
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=12)  # dragging: no waiting for mouse-up
    after_drag = wait_for_change(page, before)
    page.mouse.up()

    def point_on_map(i: int) -> tuple[float, float]:
        x, y = page.evaluate(f"mapGeometry().toPx(state.info.map.points[{i}])")
        c = page.locator("#map").bounding_box()
        return c["x"] + x * c["width"] / 420, c["y"] + y * c["height"] / 360

    page.mouse.click(*point_on_map(5))
    wait_until(page, "document.getElementById('original').src.endsWith('i=5')")
    assert "--face 5" in page.inner_text("#command")
    after_click = wait_for_change(page, after_drag)

    page.keyboard.down("Shift")
    page.mouse.click(*point_on_map(9))
    page.keyboard.up("Shift")
    page.wait_for_selector("#interp:not([hidden])")
    wait_until(page, "document.getElementById('strip').complete && "
                     "document.getElementById('strip').naturalWidth > 0")
    assert "freyvae interpolate" in page.inner_text("#command") and "--to 9" in page.inner_text("#command")
    page.locator("#walk").fill("1")
    wait_for_change(page, after_click)
    assert errors == []


def test_a_principal_slider_moves_z_along_its_direction(page):
    page, errors = page
    pca = page.evaluate("state.info.pca")
    labels = page.locator(".slider.pc span").all_inner_texts()
    assert len(labels) == len(pca["axes"]) == 4 and labels[0].startswith("PC 1 · ") and "% of variance" in labels[0]
    wait_until(page, "document.getElementById('face').src.startsWith('blob:')")
    asked: list[list[float]] = []
    page.on("request", lambda r: asked.append([float(v) for v in r.url.split("z=")[1].split(",")])
            if "/api/decode.png?z=" in r.url else None)
    z_before = page.evaluate("state.z")
    before = face_pixels(page)

    slider = page.locator(".slider.pc input").first
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=12)
    wait_for_change(page, before)
    page.mouse.up()
    wait_until(page, "!state.inFlight && state.pending === null")
    assert asked, "no face was asked for"
    moved = [a - b for a, b in zip(asked[-1], z_before, strict=True)]
    axis = pca["axes"][0]
    along = sum(m * a for m, a in zip(moved, axis, strict=True))
    across = [m - along * a for m, a in zip(moved, axis, strict=True)]
    assert along > 0.5 * pca["sd"][0]  # to the right: the positive direction, by standard deviations
    assert max(abs(c) for c in across) < 1e-3 + 1e-3 * abs(along)  # and only along it (z is sent to 4 places)
    assert "--pca --k 4" in page.inner_text("#command")
    assert errors == []


def test_your_image_through_the_picker_shows_its_face_its_reconstruction_and_a_star(page, trained, tmp_path):
    """Playwright's set_input_files on the page's picker: the page makes the face on a canvas, as
    `freyvae encode` does (the same 560 values for a PNG), the server encodes it, and the face, its
    reconstruction, the star on the map and the sliders at its z appear."""
    from urllib.parse import parse_qs, urlsplit

    import numpy as np
    from PIL import Image

    from freyvae_cli import latent
    from freyvae_cli.data.images import read_face
    from tests.conftest import make_faces

    page, errors = page
    face = make_faces(1, seed=9)[0]
    wide = Image.new("RGB", (420, 280), (30, 200, 90))  # margins left and right, in colour
    wide.paste(Image.fromarray(face).resize((200, 280), Image.Resampling.BICUBIC), (110, 0))
    wide.save(tmp_path / "me.png")
    wide.save(tmp_path / "me.jpg", quality=90)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/encode" in r.url else None)
    wait_until(page, "document.getElementById('face').src.startsWith('blob:')")
    before, original_before = face_pixels(page), page.locator("#original").screenshot()

    page.set_input_files("#upload", str(tmp_path / "me.png"))
    wait_until(page, "document.body.dataset.yours === 'me.png'")
    values = np.array([int(v) for v in parse_qs(urlsplit(sent[-1]).query)["face"][0].split(",")])
    assert np.abs(values - read_face(tmp_path / "me.png").ravel().astype(int)).max() <= 1  # float rounding at most
    model, _ = ck.load_model(trained)
    mu = latent.encode(model, torch.from_numpy(values.astype(np.uint8).reshape(1, 1, 28, 20)))[0][0]
    assert np.allclose(page.evaluate("state.yours.mu"), mu.numpy(), atol=1e-4)
    assert np.allclose(page.evaluate("state.z"), mu.numpy(), atol=1e-4)  # the sliders at its z
    wait_for_change(page, before)
    assert page.locator("#original").screenshot() != original_before
    wait_until(page, "document.getElementById('recon').complete && document.getElementById('recon').naturalWidth > 0")
    assert "/api/decode.png?z=" in page.evaluate("document.getElementById('recon').src")
    assert "nats per image" in page.inner_text("#yours-note") and "freyvae encode me.png" in page.inner_text("#command")
    x, y = page.evaluate("mapGeometry().toPx(project(state.yours.mu))")
    pink = page.evaluate(f"Array.from(document.getElementById('map').getContext('2d')"
                         f".getImageData({round(x)}, {round(y) - 3}, 1, 1).data)")
    assert pink[0] > 200 and pink[1] < 80 and pink[2] > 60, (pink, x, y)  # inside the star (#e91e63)

    page.set_input_files("#upload", str(tmp_path / "me.jpg"))  # a JPEG: the browser's decoder, not Pillow's
    wait_until(page, "document.body.dataset.yours === 'me.jpg'")
    values = np.array([int(v) for v in parse_qs(urlsplit(sent[-1]).query)["face"][0].split(",")])
    assert np.abs(values - read_face(tmp_path / "me.jpg").ravel().astype(int)).max() <= 2

    # a file dropped on the face panel does the same (a DataTransfer holding the PNG's bytes)
    import base64

    drop = page.evaluate_handle(
        "(b64) => { const t = new DataTransfer(); const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));"
        " t.items.add(new File([bytes], 'dropped.png', { type: 'image/png' })); return t; }",
        base64.b64encode((tmp_path / "me.png").read_bytes()).decode())
    page.dispatch_event("#face-panel", "drop", {"dataTransfer": drop})
    wait_until(page, "document.body.dataset.yours === 'dropped.png'")
    values = np.array([int(v) for v in parse_qs(urlsplit(sent[-1]).query)["face"][0].split(",")])
    assert np.abs(values - read_face(tmp_path / "me.png").ravel().astype(int)).max() <= 1

    (tmp_path / "notes.png").write_text("not an image")
    asked = len(sent)
    page.set_input_files("#upload", str(tmp_path / "notes.png"))
    wait_until(page, "document.getElementById('yours-note').textContent.includes('not an image')")
    assert len(sent) == asked  # nothing was sent
    assert errors == []
