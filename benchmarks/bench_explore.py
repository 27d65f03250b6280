"""Load on `freyvae explore`: C clients each send R decode requests (random z) to the real server
process; prints requests per second, p50/p95 latency, and the server's resident memory before,
between and after the rounds (it should stay flat). Every answer must be a 200 PNG.

    python benchmarks/bench_explore.py -c runs/vae_final_model.pth --data ../shared/data/frey_rawface.mat

--drag instead drives the page in headless Chromium (Debian's chromium, the playwright package):
a one-second drag of the first principal slider in 30 mouse moves, as a hand would; prints how
many distinct faces the page showed and the decode latencies the browser saw. --walk N instead
sends one client's requests along the same slider in N steps, each when the face before arrives,
without a browser sharing the cores: the server's own decode latency on a drag.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def client(host: str, latent: int, n: int, seed: int, latencies: list[float], failures: list[int]) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(host, timeout=60)
    for _ in range(n):
        z = ",".join(f"{rng.gauss(0, 1):.4f}" for _ in range(latent))
        t0 = time.perf_counter()
        conn.request("GET", "/api/decode.png?z=" + z)
        r = conn.getresponse()
        body = r.read()
        latencies.append(time.perf_counter() - t0)
        if r.status != 200 or not body.startswith(b"\x89PNG"):
            failures.append(r.status)


def walk(host: str, steps: int = 30) -> None:
    """One client walks the first principal slider from -3 to +3 in `steps` requests, each sent
    when the face before arrives, as the page does: the server's decode time on a drag, without
    a browser sharing the cores."""
    import json

    conn = http.client.HTTPConnection(host, timeout=60)
    conn.request("GET", "/api/info")
    info = json.loads(conn.getresponse().read())
    centre, axis, sd = info["map"]["centre"], info["pca"]["axes"][0], info["pca"]["sd"][0]
    latencies = []
    for i in range(steps):
        v = -3 + 6 * i / (steps - 1)
        z = ",".join(f"{c + v * sd * a:.4f}" for c, a in zip(centre, axis, strict=True))
        t0 = time.perf_counter()
        conn.request("GET", "/api/decode.png?z=" + z)
        conn.getresponse().read()
        latencies.append(1000 * (time.perf_counter() - t0))
    q = statistics.quantiles(latencies, n=100)
    print(f"walk of {steps} steps along pc1: decode p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, "
          f"all {sum(latencies) / 1000:.2f} s")


DRAG_JS_COUNT = """() => { window.changes = 0;
  new MutationObserver(() => { window.changes++; }).observe(document.getElementById('face'),
    {attributes: true, attributeFilter: ['src']}); }"""


def drag(url: str, moves: int = 30, seconds: float = 1.0) -> None:
    """A one-second drag of the first principal slider; the faces shown and the decode latencies."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=60000)
        while page.evaluate("state.inFlight || state.pending !== null"):
            page.wait_for_timeout(50)
        # as a person does, drag once the page has settled: started at once, the drag's first
        # request waited 260-490 ms in the browser, behind the page's own start-up requests
        page.wait_for_load_state("networkidle")
        page.evaluate("performance.clearResourceTimings()")
        page.evaluate(DRAG_JS_COUNT)
        box = page.locator(".slider.pc input").first.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        t0 = time.perf_counter()
        for i in range(1, moves + 1):
            page.mouse.move(box["x"] + 2 + (box["width"] - 4) * i / moves, y)
            page.wait_for_timeout(max(0.0, 1000 * (t0 + seconds * i / moves - time.perf_counter())))
        during, took = page.evaluate("window.changes"), time.perf_counter() - t0
        page.mouse.up()
        while page.evaluate("state.inFlight || state.pending !== null"):
            page.wait_for_timeout(50)
        ms = page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('decode.png'))"
                           ".map(e => e.duration)")
        browser.close()
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    print(f"drag of {took:.2f} s in {moves} moves: {during} faces shown during it, {len(ms)} decodes asked for; "
          f"decode p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", default="runs/vae_final_model.pth")
    ap.add_argument("--data", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=250, help="per client and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--drag", action="store_true", help="a slider drag in headless Chromium instead")
    ap.add_argument("--walk", type=int, default=0, help="instead, one client's walk along pc1 in this many steps")
    args = ap.parse_args()
    exe = shutil.which("freyvae")
    if exe is None:
        raise SystemExit("freyvae is not on PATH: pip install . first")
    cmd = [exe, "explore", "-c", args.checkpoint, "--no-browser"] + (["--data", args.data] if args.data else [])
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        if "http://" not in line:
            raise SystemExit(f"explore did not start: {line}{server.stderr.read()}")
        host = line.split("http://")[1].split("/")[0]
        conn = http.client.HTTPConnection(host, timeout=60)
        conn.request("GET", "/api/info")
        import json

        latent = json.loads(conn.getresponse().read())["latent_dim"]
        print(f"server ready in {time.perf_counter() - t0:.2f} s; resident memory {rss_mib(server.pid):.0f} MiB")
        if args.drag:
            return drag(f"http://{host}/")
        if args.walk:
            return walk(host, args.walk)
        for rnd in range(1, args.rounds + 1):
            latencies: list[float] = []
            failures: list[int] = []
            threads = [threading.Thread(target=client, args=(host, latent, args.requests, 1000 * rnd + i, latencies,
                                                              failures)) for i in range(args.clients)]
            t1 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t1
            q = statistics.quantiles(latencies, n=100)
            print(f"round {rnd}: {len(latencies)} requests from {args.clients} clients in {wall:.1f} s: "
                  f"{len(latencies) / wall:.0f} requests/s, p50 {1000 * q[49]:.1f} ms, p95 {1000 * q[94]:.1f} ms, "
                  f"{len(failures)} failed; resident memory {rss_mib(server.pid):.0f} MiB")
            if failures:
                sys.exit(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
