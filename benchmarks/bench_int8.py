"""int8 vs fp32: WIDER val-subset AP and CPU latency, for the bundled model and SCRFD-500M-KPS.

    python benchmarks/bench_int8.py --threads 2 [--calib-images 64] [--json bench_int8.json]

Each float model is quantised with ``damofd export --int8`` (static QDQ, per-channel int8
weights, int8 activations, min-max calibration) on ``--calib-images`` photos of the WIDER *train*
subset (never the val images it is scored on), then both files are evaluated with
``damofd eval --subset`` (vga protocol, score 0.02) and timed on one 640×480 photo (model-only
``session.run`` and end-to-end ``predict``, medians). The gain depends on the CPU's int8 dot
products (AVX-512 VNNI / AVX-VNNI / AMX): the flags found are printed.

OpenCV's YuNet (``yunet_2023mar_640x640.onnx`` of the shared assets, static 640×640 input, raw
BGR 0–255) is quantised the same way with its own input convention (``quantize_int8(blobs=...)``)
and timed beside them: model-only ``session.run`` in ONNX Runtime for fp32 and int8, and
end to end through ``cv2.FaceDetectorYN`` where OpenCV can load the file. Its AP is not measured
here (its decoder is OpenCV's, not damofd's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from bench_infer import median_ms  # the one median timer of benchmarks/

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


def _yunet_rows(
    assets: Path, calib: list[Path], photo: np.ndarray, threads: int, repeat: int, tmp: Path
) -> list[dict]:
    """YuNet fp32 vs int8: model-only (ONNX Runtime) and end to end (cv2.FaceDetectorYN)."""
    import onnxruntime as ort

    from damofd.export.quantize import quantize_int8

    fp32 = assets / "models" / "peers" / "yunet_2023mar_640x640.onnx"
    if not fp32.is_file():
        return []

    def blobs():  # what FaceDetectorYN feeds the network: BGR, 0..255, 640×640 (zero padded)
        for p in calib:
            img = cv2.imread(str(p))
            s = 640 / max(img.shape[:2])
            img = cv2.resize(img, None, fx=s, fy=s)
            canvas = np.zeros((640, 640, 3), np.float32)
            canvas[: img.shape[0], : img.shape[1]] = img
            yield canvas.transpose(2, 0, 1)[None].copy()

    q = quantize_int8(fp32, tmp / "yunet_int8.onnx", [], blobs=blobs)
    canvas = np.zeros((640, 640, 3), np.float32)
    canvas[:480] = photo
    feed = {"input": canvas.transpose(2, 0, 1)[None].copy()}
    rows = []
    for kind, path in (("fp32", fp32), ("int8", q)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        row = {
            "model": "YuNet 2023mar (yunet_2023mar_640x640.onnx)",
            "precision": kind,
            "bytes": path.stat().st_size,
            "model_only_ms": median_ms(lambda s=sess: s.run(None, feed), repeat),
        }
        try:
            cv2.setNumThreads(threads)
            yn = cv2.FaceDetectorYN.create(str(path), "", (640, 480), 0.5, 0.3, 5000)
            _, faces = yn.detect(photo)
            row["faces"] = 0 if faces is None else len(faces)
            row["e2e_ms"] = median_ms(lambda y=yn: y.detect(photo), repeat)
        except cv2.error as e:
            row["e2e_error"] = str(e).strip().splitlines()[-1][:200]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from damofd.engine.wider_eval import run_wider_eval
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
                    "model_only_ms": median_ms(lambda s=sess, f=feed: s.run(None, f), args.repeat),
                    "e2e_ms": median_ms(lambda d=det: d.predict(photo), args.repeat),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        rows += _yunet_rows(assets, calib, photo, args.threads, args.repeat, Path(tmp))
    for label in models:
        f, i = (next(r for r in rows if r["model"] == label and r["precision"] == p)
                for p in ("fp32", "int8"))  # fmt: skip
        d = [i[k] - f[k] for k in ("easy", "medium", "hard")]
        speed = f["model_only_ms"] / i["model_only_ms"], f["e2e_ms"] / i["e2e_ms"]
        print(
            f"{label}: int8 − fp32 AP {d[0]:+.4f} / {d[1]:+.4f} / {d[2]:+.4f}; speed-up "
            f"×{speed[0]:.2f} model-only, ×{speed[1]:.2f} end to end"
        )
    yn = [r for r in rows if r["model"].startswith("YuNet")]
    if len(yn) == 2:
        f, i = yn
        print(
            f"YuNet: int8 speed-up ×{f['model_only_ms'] / i['model_only_ms']:.2f} model-only"
            + (f", ×{f['e2e_ms'] / i['e2e_ms']:.2f} end to end" if "e2e_ms" in i else "")
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu_flags": _cpu_flags(), "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
