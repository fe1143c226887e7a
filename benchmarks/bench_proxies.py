"""Torch zero-shot proxies on the four released DamoFD backbones: scores and CPU time.

Run (2 CPU cores, as CI; TE-NAS on the 34G backbone takes minutes):

    python benchmarks/bench_proxies.py --threads 2
    python benchmarks/bench_proxies.py --proxies Zen,NASWOT --models 0.5g,2.5g --json out.json

Each cell is one ``compute_torch_proxy(name, structure, resolution=R, batch_size=B, seed=S)``
call (model construction included), timed once: the scores are deterministic for a seed, the
times are wall-clock on a shared machine, so re-run when figures look off.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from damofd.io import atomic_write_json
from damofd.models.zoo import DAMOFD_STRUCTURES
from damofd.search.proxies import TORCH_PROXIES, compute_torch_proxy, get_torch_proxy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--proxies", default=",".join(TORCH_PROXIES), help="comma-separated names")
    ap.add_argument("--models", default=",".join(DAMOFD_STRUCTURES), help="0.5g,2.5g,10g,34g")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    proxies = [get_torch_proxy(p).name for p in args.proxies.split(",") if p]
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in DAMOFD_STRUCTURES:
            ap.error(f"unknown model {m!r}; choose from {', '.join(DAMOFD_STRUCTURES)}")
    rows = []
    print(f"R={args.resolution} batch={args.batch_size} seed={args.seed} threads={args.threads}")
    print(f"{'proxy':9s} {'model':5s} {'score':>16s} {'seconds':>8s}")
    for p in proxies:
        for m in models:
            t0 = time.perf_counter()
            score = compute_torch_proxy(
                p,
                DAMOFD_STRUCTURES[m],
                resolution=args.resolution,
                batch_size=args.batch_size,
                seed=args.seed,
                device=args.device,
            )
            dt = time.perf_counter() - t0
            rows.append({"proxy": p, "model": m, "score": score, "seconds": dt})
            print(f"{p:9s} {m:5s} {score:16.8g} {dt:8.2f}", flush=True)
    if args.json is not None:
        atomic_write_json(
            args.json,
            {
                "resolution": args.resolution,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "threads": args.threads,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
