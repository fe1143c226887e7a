"""int8 vs fp32: WIDER val-subset AP and CPU latency, for the bundled model and SCRFD-500M-KPS.

    python benchmarks/bench_int8.py --threads 2 [--calib-images 64] [--json bench_int8.json]

Each float model is quantised with ``damofd export --int8`` (static QDQ, per-channel int8
weights, int8 activations, min-max calibration) on ``--calib-images`` photos of the WIDER *train*
subset (never the val images it is scored on), then both files are evaluated with
``damofd eval --subset`` (vga protocol, score 0.02) and timed on one 640×480 photo (model-only
``session.run`` and end-to-end ``predict``, medians). The gain depends on the CPU's int8 dot
products (AVX-512 VNNI / AVX-VNNI / AMX): the flags found are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from damofd.testing import assets_dir


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f == "avx512_bf16")


def _ms(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main(argv: list[str] | None = None) -> int:
    from damofd.evaluation.run import run_wider_eval
    from damofd.export.quantize import quantize_int8
    from damofd.inference import FaceDetector
    from damofd.inference.preprocess import fill_canvas
    from damofd.models.bundled import DEFAULT_MODEL, bundled_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    assets = assets_dir()
    if assets is None:
        print("shared assets not found (set DAMOFD_ASSETS)", file=sys.stderr)
        return 2
    w = assets / "widerface"
    train = sorted((w / "WIDER_train" / "images").rglob("*.jpg"))
    idx = np.linspace(0, len(train) - 1, args.calib_images).round().astype(int)
    calib = [train[i] for i in idx]
    photo = cv2.resize(cv2.imread(str(assets / "images" / "t1.jpg")), (640, 480))
    models = {
        f"{DEFAULT_MODEL} (bundled)": bundled_file(DEFAULT_MODEL, "onnx"),
        "SCRFD-500M-KPS (scrfd_500m_bnkps.onnx)": assets / "models/scrfd/scrfd_500m_bnkps.onnx",
    }
    rows = []
    print("CPU int8 features:", ", ".join(_cpu_flags()) or "none found")
    with tempfile.TemporaryDirectory() as tmp:
        for label, fp32 in models.items():
            q = quantize_int8(fp32, Path(tmp) / f"{fp32.stem}_int8.onnx", calib)
            for kind, path in (("fp32", fp32), ("int8", q)):
                ev = run_wider_eval(
                    str(path), str(w / "WIDER_val"), str(w / "ground_truth"), subset=True,
                    score_thr=0.02, work_dir=str(Path(tmp) / f"ev_{path.stem}"),
                    threads=args.threads, progress=False,
                )  # fmt: skip
                det = FaceDetector.from_onnx(path, threads=args.threads, workers=0)
                plan = det.protocol.plan(480, 640)
                blob = np.zeros((1, 3, *plan.canvas), np.float32)
                fill_canvas(blob[0], photo, plan, det.protocol.pad_value)
                sess = det.backend.session
                feed = {det.backend.input_name: blob}
                row = {
                    "model": label,
                    "precision": kind,
                    "bytes": Path(path).stat().st_size,
                    "easy": ev.result.easy,
                    "medium": ev.result.medium,
                    "hard": ev.result.hard,
                    "model_only_ms": _ms(lambda s=sess, f=feed: s.run(None, f), args.repeat),
                    "e2e_ms": _ms(lambda d=det: d.predict(photo), args.repeat),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    for label in models:
        f, i = (next(r for r in rows if r["model"] == label and r["precision"] == p)
                for p in ("fp32", "int8"))  # fmt: skip
        d = [i[k] - f[k] for k in ("easy", "medium", "hard")]
        speed = f["model_only_ms"] / i["model_only_ms"], f["e2e_ms"] / i["e2e_ms"]
        print(
            f"{label}: int8 − fp32 AP {d[0]:+.4f} / {d[1]:+.4f} / {d[2]:+.4f}; speed-up "
            f"×{speed[0]:.2f} model-only, ×{speed[1]:.2f} end to end"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu_flags": _cpu_flags(), "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
