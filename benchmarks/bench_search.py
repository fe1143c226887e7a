"""Benchmark of the evolutionary search on ONE CPU core.

Runs the search (default mode and/or faithful mode) for several seeds, reports wall time, CPU
time, iterations/s and the best score; optionally times the full CLI (``damofd search``,
checkpoints and progress bar included) and the literal reference re-implementation
(``benchmarks/reference_search.py``) for comparison. The process pins itself to one core
(like ``taskset -c 0``) unless ``--no-pin``; wall times on a busy machine are inflated, the CPU
times are not.

    python benchmarks/bench_search.py --preset damofd-0.5g --seeds 0,1,2,3,4
    python benchmarks/bench_search.py --modes faithful --seeds 0 --reference-iterations 2000
    python benchmarks/bench_search.py --cli --seeds 0 --modes default
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from damofd.search.evolution import EvolutionSearch, SearchConfig

MODES = {
    "default": {},  # dedup + up to 8 proposals per iteration
    "faithful": {"dedup": False, "proposals": 1},  # the released algorithm
}


def pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def run_search(preset: str, mode: str, seed: int, iterations: int) -> dict:
    cfg = SearchConfig.from_preset(preset, seed=seed, iterations=iterations, **MODES[mode])
    t0, c0 = time.perf_counter(), time.process_time()
    res = EvolutionSearch(cfg).run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "mode": mode,
        "seed": seed,
        "iterations": iterations,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "iterations_per_s": round(iterations / wall, 1),
        "best": res.best.score if res.best else None,
        "accepted": res.accepted,
        "proposals": res.stats["proposals"],
        "best_structure": res.best.structure.format() if res.best else None,
    }


def run_cli(preset: str, mode: str, seed: int, iterations: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "damofd", "search", "--preset", preset, "--seed", str(seed)]
        argv += ["--iterations", str(iterations), "--out", tmp, "--json", "--no-progress"]
        if mode == "faithful":
            argv.append("--faithful")
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    rep = json.loads(out.stdout)
    return {
        "mode": f"cli-{mode}",
        "seed": seed,
        "iterations": iterations,
        "wall_s": round(wall, 2),
        "search_wall_s": rep["wall_time_s"],
        "best": rep["best"]["score"],
    }


def run_reference(preset: str, seed: int, iterations: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference_search as ref

    space, budget, layers, init = ref.PRESETS[preset]
    t0, c0 = time.perf_counter(), time.process_time()
    _structures, scores = ref.evolution_search(
        init, space, budget_flops=budget, max_layers=layers, iterations=iterations, seed=seed
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "mode": "reference-reimplementation",
        "seed": seed,
        "iterations": iterations,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "iterations_per_s": round(iterations / wall, 1),
        "extrapolated_96k_s": round(96_000 * cpu / iterations, 1),
        "best": max(scores) if scores else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="damofd-0.5g")
    ap.add_argument("--iterations", type=int, default=96_000)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--modes", default="default,faithful")
    ap.add_argument("--cli", action="store_true", help="also time `damofd search` end to end")
    ap.add_argument("--reference-iterations", type=int, default=0, metavar="N",
                    help="also time N iterations of benchmarks/reference_search.py")  # fmt: skip
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    core = None if args.no_pin else pin_one_core()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m for m in args.modes.split(",") if m]
    rows = []
    for mode in modes:
        for seed in seeds:
            rows.append(run_search(args.preset, mode, seed, args.iterations))
            if not args.json:
                r = rows[-1]
                print(
                    f"{mode:9s} seed {seed}: best {r['best']:.6f}  wall {r['wall_s']:6.2f} s  "
                    f"cpu {r['cpu_s']:6.2f} s  {r['iterations_per_s']:8.1f} it/s  "
                    f"accepted {r['accepted']}  proposals {r['proposals']}",
                    flush=True,
                )
        if args.cli:
            rows.append(run_cli(args.preset, mode, seeds[0], args.iterations))
            if not args.json:
                r = rows[-1]
                print(
                    f"cli {mode} seed {seeds[0]}: wall {r['wall_s']:.2f} s (process), "
                    f"search {r['search_wall_s']:.2f} s, best {r['best']:.6f}",
                    flush=True,
                )
    if args.reference_iterations:
        rows.append(run_reference(args.preset, seeds[0], args.reference_iterations))
        if not args.json:
            r = rows[-1]
            print(
                f"reference re-implementation, {r['iterations']} iterations: wall {r['wall_s']} s, "
                f"cpu {r['cpu_s']} s ({r['iterations_per_s']} it/s; 96k ≈ "
                f"{r['extrapolated_96k_s']} s cpu)",
                flush=True,
            )
    summary = {}
    for mode in modes:
        best = [r["best"] for r in rows if r["mode"] == mode]
        if best:
            summary[mode] = {"mean_best": statistics.mean(best), "min_best": min(best)}
    torch_loaded = "torch" in sys.modules
    if args.json:
        print(json.dumps({"core": core, "torch_imported": torch_loaded, "rows": rows,
                          "summary": summary}))  # fmt: skip
    else:
        for mode, s in summary.items():
            print(f"{mode}: mean best {s['mean_best']:.6f}, min best {s['min_best']:.6f}")
        print(f"pinned to core {core}; torch imported: {torch_loaded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
