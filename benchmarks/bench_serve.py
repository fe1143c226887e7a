"""Load test of ``damofd serve`` on loopback: batching on vs off.

    python benchmarks/bench_serve.py                         # 8/32/64 clients, 2,000 requests
    python benchmarks/bench_serve.py --clients 32 --requests 400 --json bench_serve.json

For each setting the server is started in a subprocess (``damofd serve``, the bundled model,
``--max-batch-size 8`` for "on", ``1`` for "off"), warmed up, then hit by N concurrent clients
(threads with one HTTP connection each) posting the same 640×480 JPEG until the request count or
the time cap (``--max-seconds``) is reached. Reported: throughput (images/s), p50/p95/p99
latency, errors, and the batch-size histogram read back from ``/metrics``.

On a 2-core machine batching cannot gain much: one image already keeps both cores ~90 % busy
(see ``batch_speedup_ceiling`` in ``bench_infer.py``), so the bound is about 1.1–1.25×; under
concurrent clients batching mainly trades latency for fewer, larger model calls.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo() -> bytes:
    from damofd.testing import assets_dir

    assets = assets_dir()
    src = assets / "images" / "t1.jpg" if assets else ROOT / "examples" / "astronaut.jpg"
    img = cv2.resize(cv2.imread(str(src)), (640, 480), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _start(batch: int, timeout_ms: float, threads: int) -> tuple[subprocess.Popen, str]:
    port = _port()
    cmd = [
        sys.executable, "-m", "damofd", "serve", "--port", str(port),
        "--max-batch-size", str(batch), "--batch-timeout-ms", str(timeout_ms),
        "--threads", str(threads),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready")


def _batch_hist(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics").text
    buckets = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'damofd_batch_size_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text)
    }
    calls = re.search(r"damofd_model_calls_total ([0-9.e+]+)", text)
    return {"model_calls": float(calls.group(1)) if calls else 0.0, "cumulative": buckets}


def run_load(base: str, body: bytes, clients: int, requests: int, max_s: float) -> dict:
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))
    t_end = time.monotonic() + max_s

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < t_end:
                with lock:
                    if next(counter, None) is None:
                        return
                t = time.perf_counter()
                try:
                    ok = c.post(base + "/v1/detect", content=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
                    errors += 0 if ok else 1

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    return {
        "requests": len(lat),
        "errors": errors,
        "seconds": wall,
        "images_per_s": len(lat) / wall,
        "p50_ms": q[49] * 1e3,
        "p95_ms": q[94] * 1e3,
        "p99_ms": q[98] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="8,32,64", help="concurrent clients, comma-separated")
    ap.add_argument("--requests", type=int, default=2000, help="requests per run")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time cap per run")
    ap.add_argument("--batch", type=int, default=8, help="--max-batch-size when batching")
    ap.add_argument("--timeout-ms", type=float, default=10.0, help="--batch-timeout-ms")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    body = _photo()
    rows = []
    for batching in (True, False):
        proc, base = _start(args.batch if batching else 1, args.timeout_ms, args.threads)
        try:
            run_load(base, body, 4, 40, 30)  # warm-up
            for n in (int(x) for x in args.clients.split(",")):
                before = _batch_hist(base)
                row = run_load(base, body, n, args.requests, args.max_seconds)
                after = _batch_hist(base)
                calls = after["model_calls"] - before["model_calls"]
                row.update(
                    batching="on" if batching else "off",
                    clients=n,
                    model_calls=calls,
                    mean_batch=row["requests"] / calls if calls else None,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    for n in {r["clients"] for r in rows}:
        on = next(r for r in rows if r["clients"] == n and r["batching"] == "on")
        off = next(r for r in rows if r["clients"] == n and r["batching"] == "off")
        ratio = on["images_per_s"] / off["images_per_s"]
        print(f"{n} clients: batching on/off throughput ×{ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
