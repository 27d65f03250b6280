"""Load on `freyvae explore`: C clients each send R decode requests (random z) to the real server
process; prints requests per second, p50/p95 latency, and the server's resident memory before,
between and after the rounds (it should stay flat). Every answer must be a 200 PNG.

    python benchmarks/bench_explore.py -c runs/vae_final_model.pth --data ../shared/data/frey_rawface.mat
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", default="runs/vae_final_model.pth")
    ap.add_argument("--data", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=250, help="per client and round")
    ap.add_argument("--rounds", type=int, default=2)
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
