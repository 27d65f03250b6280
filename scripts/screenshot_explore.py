"""The screenshot of `freyvae explore` in docs/explore.png: the page in headless Chromium (Debian's
chromium, the playwright package) with test face 17 loaded, test face 100 shift-clicked and the
walk a quarter of the way along the decoded path; with --image, that image put in with the page's
"your image" picker instead (docs/explore_your_image.png).

    python scripts/screenshot_explore.py -c runs/literature/pixelvae-123/vae_best_model.pth \\
        --data ../shared/data/frey_rawface.mat -o docs/explore.png
"""

from __future__ import annotations

import argparse
import shutil
import threading

from playwright.sync_api import sync_playwright

from freyvae_cli import checkpoint as ck
from freyvae_cli.data.frey import load_faces
from freyvae_cli.explore_server import Explorer, ExploreServer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def settle(page) -> None:
    page.wait_for_timeout(200)
    while page.evaluate("state.inFlight || state.pending !== null"):
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("-o", "--out", default="docs/explore.png")
    ap.add_argument("--image", help="an image for the page's picker (scripts/face_as_photo.py makes one)")
    args = ap.parse_args()
    model, ckpt = ck.load_model(args.checkpoint)
    server = ExploreServer("127.0.0.1", 0, Explorer.build(model, ckpt, load_faces(args.data), args.checkpoint, 3.0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']", timeout=60000)
        if args.image:
            page.set_input_files("#upload", args.image)
            page.wait_for_selector("body[data-yours]", timeout=60000)
        else:
            page.evaluate("loadFace(17)")
            settle(page)
            page.evaluate("interpolateTo(100)")
            page.locator("#walk").fill("0.25")
        settle(page)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    server.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
