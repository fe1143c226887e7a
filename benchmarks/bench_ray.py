"""Single-process ``damofd detect`` vs ``damofd detect --engine ray`` (1 and 2 actors).

    python benchmarks/bench_ray.py                                   # 5,000 files, 1 and 2 actors
    python benchmarks/bench_ray.py --files 2000 --actors 2 --out-json bench_ray.json

The 358 images of the WIDER FACE val subset (shared assets) are replicated by symbolic links to
``--files`` files in a temporary folder (nothing is copied into the repository). Each setting runs
the real command in its own subprocess (the bundled model, ``--batch-size 8``, results under a
fresh ``--out``) while a sampler reads ``/proc`` every 0.25 s over the whole process tree (the
CLI and, for Ray, its GCS, raylet, agents and worker processes):

* memory: the peak of the summed PSS (shared pages divided between the processes that map them)
  and of the summed RSS;
* CPU: the user + system time of every process of the tree (threads included; a process that
  exits keeps the last value seen);
* progress: the images recorded so far in the result files (the local engine appends to
  ``detections.jsonl`` as it goes, the Ray engine writes a file per finished block).

Reported per setting: wall time, Ray's start-up (``ray.init`` of the local instance, from the
summary line), time to the first recorded result, images/s over the whole command, and *once
started*: images/s as the least-squares slope of the images recorded over time, taken at the
moments the count grows (a Ray job records a block at a time), from the first results to the
last, i.e. after Ray's and the actors' start-up (worker processes, imports, the model) or the
local model load, and before the shutdown; and CPU ms per image, the slope of the tree's CPU
time over the same span divided by that rate. The overhead per image is against the local
engine, in wall time (what a user waits for, but on a shared machine it moves with whatever else
runs) and in CPU time (what the job costs the machine, far less sensitive to other jobs). The
load average before and after each setting is recorded too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAL = "widerface/WIDER_val/images"


def _val_images() -> list[Path]:
    from damofd.testing import assets_dir

    root = assets_dir()
    if root is None or not (root / VAL).is_dir():
        sys.exit(f"bench_ray: the val subset is missing ({VAL} under the shared assets)")
    return sorted((root / VAL).rglob("*.jpg"))


def replicate(dest: Path, n: int) -> Path:
    """``n`` symbolic links to the val images, cycling through them, in ``dest/images``."""
    src = _val_images()
    d = dest / "images"
    d.mkdir(parents=True)
    for k in range(n):
        f = src[k % len(src)]
        (d / f"{k:06d}_{f.name}").symlink_to(f)
    return d


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [root], {root}
    while frontier:
        nxt = {pid for pid, pp in parent.items() if pp in frontier}
        out += sorted(nxt)
        frontier = nxt
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """(summed PSS, summed RSS) in bytes."""
    pss = rss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return pss, rss


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime of the process (all its threads)


def _progress(out: Path, cache: dict[str, int]) -> int:
    """Images recorded so far under ``out`` (a result file still being written is counted at a
    later sample)."""
    n = 0
    single = out / "detections.jsonl"
    if single.is_file():
        n += single.read_bytes().count(b"\n")
    d = out / "detections"
    for f in d.iterdir() if d.is_dir() else []:
        if f.name in cache:
            n += cache[f.name]
            continue
        try:
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                rows = pq.read_metadata(f).num_rows
            elif f.suffix == ".jsonl":
                rows = f.read_bytes().count(b"\n")
            else:
                continue
            settled = time.time() - f.stat().st_mtime > 1.0
        except Exception:  # being written
            continue
        if settled:
            cache[f.name] = rows
        n += rows
    return n


class Sampler(threading.Thread):
    """Every ``every`` s: (time, CPU seconds of the process tree, images recorded), and the peak
    summed PSS/RSS."""

    def __init__(self, pid: int, out: Path, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.out, self.every = pid, out, every
        self.peak_pss = self.peak_rss = self.peak_procs = 0
        self.cpu: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.samples: list[tuple[float, float, int]] = []
        self.by_kind: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()
        self._cache: dict[str, int] = {}
        self._tck = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        pids = _tree(self.pid)
        pss, rss = _memory(pids)
        for pid in pids:
            t = _cpu_ticks(pid)
            if t >= 0:
                self.cpu[pid] = max(self.cpu.get(pid, 0), t)
                if self.kind.get(pid) != "actors":  # a Ray worker is renamed when it becomes one
                    self.kind[pid] = _kind(pid, self.pid)
        kinds: dict[str, float] = {}
        for pid, ticks in self.cpu.items():
            kinds[self.kind[pid]] = kinds.get(self.kind[pid], 0.0) + ticks / self._tck
        self.by_kind.append((time.time(), kinds))
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, len(pids))
        done = _progress(self.out, self._cache)
        self.samples.append((time.time(), sum(self.cpu.values()) / self._tck, done))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.every)


def _kind(pid: int, root: int) -> str:
    """``cli`` (the command's own process), ``actors`` (Ray's detector actors) or ``ray`` (GCS,
    raylet, agents, Ray Data's helper actors, write tasks)."""
    if pid == root:
        return "cli"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "ray"
    return "actors" if b"MapWorker" in cmd or b"_DetectBatch" in cmd else "ray"


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _steady(samples: list[tuple[float, float, int]]) -> tuple[float, float] | None:
    """(images/s, CPU ms per image) once started: the least-squares slope of the images recorded
    over time at the moments the count grows (so a Ray job's block-sized steps count evenly,
    and the pause before the first results is left out), and the slope of the tree's CPU time
    over the same span."""
    steps = [(t, float(done)) for (t, _, done), prev in zip(samples[1:], samples) if done > prev[2]]
    if len(steps) < 3:
        return None
    t0, t1 = steps[0][0], steps[-1][0]
    rate = _slope(steps)
    cpu = _slope([(t, c) for t, c, _ in samples if t0 <= t <= t1])
    return rate, 1000.0 * cpu / rate


def run_setting(name: str, images: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "damofd", "detect", str(images), "--out", str(out)]
    cmd += ["--no-progress", "--batch-size", "8", *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    load_before = _loadavg()
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid, out)
    sampler.start()
    _, err = proc.communicate()
    wall = time.time() - t0
    sampler.stop.set()
    sampler.join()
    text = err.decode("utf-8", "replace")
    summary = next((x for x in text.splitlines() if re.match(r"damofd detect: \d+ image", x)), "")
    if not summary:
        raise SystemExit(f"bench_ray: {name} gave no summary:\n{text[-3000:]}")
    n = int(re.search(r"(\d+) images?", summary).group(1))
    m = re.search(r"Ray start-up ([\d.]+) s", summary)
    sampler.samples.append((time.time(), sampler.samples[-1][1], _progress(out, {})))
    steady = _steady(sampler.samples)
    split: dict[str, float] = {}
    if steady is not None:  # CPU ms per image of each kind of process, once started
        steps = [t for (t, _, d), prev in zip(sampler.samples[1:], sampler.samples) if d > prev[2]]
        t0s, t1s = steps[0], steps[-1]
        for kind in ("cli", "actors", "ray"):
            pts = [(t, k.get(kind, 0.0)) for t, k in sampler.by_kind if t0s <= t <= t1s]
            if len(pts) >= 2:
                split[kind] = round(1000.0 * _slope(pts) / steady[0], 2)
    first = next((t for t, _, done in sampler.samples if done > 0), None)
    res = {
        "setting": name,
        "images": n,
        "wall_s": round(wall, 2),
        "processing_s": float(re.search(r"failed, ([\d.]+) s", summary).group(1)),
        "ray_startup_s": float(m.group(1)) if m else None,
        "first_result_s": None if first is None else round(first - t0, 2),
        "images_per_s_wall": round(n / wall, 2),
        "images_per_s_started": None if steady is None else round(steady[0], 2),
        "cpu_ms_per_image_started": None if steady is None else round(steady[1], 2),
        "cpu_ms_per_image_started_by_process": split,
        "cpu_s_total": round(sum(sampler.cpu.values()) / os.sysconf("SC_CLK_TCK"), 1),
        "peak_pss_mib": round(sampler.peak_pss / 2**20, 1),
        "peak_rss_mib": round(sampler.peak_rss / 2**20, 1),
        "peak_processes": sampler.peak_procs,
        "load_before": load_before,
        "load_after": _loadavg(),
        "summary": summary,
    }
    print(json.dumps(res), flush=True)
    return res


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f} %"


def _table(results: list[dict]) -> None:
    print()
    print(
        f"{'setting':<8} {'img/s':>6} {'started':>8} {'ms/img':>7} {'vs local':>8} "
        f"{'CPU ms/img':>10} {'vs local':>8} {'Ray start':>9} {'1st result':>10} "
        f"{'peak PSS':>10} {'load':>9}"
    )
    for r in results:
        st, fr = r["ray_startup_s"], r["first_result_s"]
        print(
            f"{r['setting']:<8} {r['images_per_s_wall']:>6} "
            f"{r['images_per_s_started'] or '-':>8} {r.get('ms_per_image_started', '-'):>7} "
            f"{_pct(r.get('overhead_wall_pct')):>8} {r['cpu_ms_per_image_started'] or '-':>10} "
            f"{_pct(r.get('overhead_cpu_pct')):>8} {'-' if st is None else f'{st:.1f} s':>9} "
            f"{'-' if fr is None else f'{fr:.1f} s':>10} {r['peak_pss_mib']:>8} M "
            f"{r['load_before']:>4.1f}/{r['load_after']:<4.1f}"
        )
    print("\nCPU ms per image once started, by process:")
    for r in results:
        split = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_image_started_by_process"].items())
        print(f"  {r['setting']:<8} {split}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=5000, help="files in the replicated set (5000)")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="Ray pool sizes (1 2)")
    ap.add_argument("--format", choices=("jsonl", "parquet"), default="parquet")
    ap.add_argument("--skip-local", action="store_true", help="only the Ray settings")
    ap.add_argument("--out-json", help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        images = replicate(tmp, args.files)
        results = []
        if not args.skip_local:
            results.append(run_setting("local", images, tmp / "out_local", []))
        for a in args.actors:
            extra = ["--engine", "ray", "--num-actors", str(a), "--format", args.format]
            results.append(run_setting(f"ray-{a}", images, tmp / f"out_ray{a}", extra))
        local = next((r for r in results if r["setting"] == "local"), None)
        if local is not None and local["images_per_s_started"]:
            base = 1000.0 / local["images_per_s_started"]
            base_cpu = local["cpu_ms_per_image_started"]
            for r in results:
                if r["images_per_s_started"]:
                    ms = 1000.0 / r["images_per_s_started"]
                    r["ms_per_image_started"] = round(ms, 2)
                    r["overhead_wall_pct"] = round(100.0 * (ms / base - 1.0), 1)
                    cpu = r["cpu_ms_per_image_started"]
                    r["overhead_cpu_pct"] = round(100.0 * (cpu / base_cpu - 1.0), 1)
        import onnxruntime
        import ray

        report = {
            "files": args.files,
            "format": args.format,
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "onnxruntime": onnxruntime.__version__,
            "results": results,
        }
        _table(results)
        if args.out_json:
            Path(args.out_json).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
