"""Inference speed: model-only vs end-to-end, batching, and OpenCV YuNet, on one 640×480 photo.

Run (2 CPU cores, as CI):

    python benchmarks/bench_infer.py --threads 2
    python benchmarks/bench_infer.py --threads 2 --json bench_infer.json

Per ONNX model (the bundled default, damofd-0.5g-bnkps, first, then the official files; add
``--onnx damofd/weights/damofd-0.5g-kps.onnx`` for the other bundled model), all on the same
640×480 BGR array (``t1.jpg`` resized):

* ``model-only``: ``session.run`` alone on the preprocessed (1, 3, 640, 640) blob;
* ``e2e``: ``FaceDetector.predict(array)`` (array in → faces out: resize/normalise/pad, run,
  decode, NMS), protocol ``vga``; ``e2e/model`` is the overhead ratio (target ≤ 1.15);
* ``wrapper``: the official insightface wrapper's ``detect`` (the straight re-implementation in
  ``tests/_reference_scrfd.py``), for context;
* ``batch``: throughput of 8 different 640×480 images in one call with ``batch_size=8`` vs eight
  single-image calls (target ≥ 1.3× on 2 cores): two single-threaded worker sessions sharing
  the batch (``workers=2``, the default on CPU), and one session taking the whole
  (8, 3, 640, 640) batch (``workers=0``; needs an ONNX file with a dynamic batch axis, otherwise
  it loops); each variant is timed in its own block;
* ``cpu_1thread_ms``: CPU time of one single-threaded ``session.run`` per image (batch 1 and 8):
  twice its inverse bounds any 2-core throughput; ``overhead_cpu_ms``: CPU time of everything
  around the network in ``predict`` (single-threaded detector), and ``e2e_over_model_from_cpu``
  = 1 + overhead / model-only, the overhead ratio without the noise of a shared machine;
  ``batch_speedup_ceiling`` = single-image time / ((cpu_1thread + overhead) / threads): the batch
  gain if every core did single-threaded work with no synchronisation (an upper bound);
* ``yunet``: ``cv2.FaceDetectorYN`` (``yunet_2023mar_640x640.onnx``) at 640×480, same image.

Timings are medians (or minima with ``--stat min``) over ``--repeat`` runs after a warm-up, the
compared variants timed in alternation; on a machine shared with other jobs use ``--stat min``
and re-run when figures look off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from damofd.inference import FaceDetector, OnnxBackend
from damofd.inference.preprocess import fill_canvas
from damofd.testing import assets_dir, repo_root

# statistic over repeats: median (default) or min (--stat min: the least disturbed run, for a
# machine shared with other jobs)
STAT: Callable[[list[float]], float] = statistics.median


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    return interleaved_ms([fn], repeat, warmup)[0]


def interleaved_ms(fns: list[Callable[[], Any]], repeat: int, warmup: int = 3) -> list[float]:
    """Median ms of each function, timed in alternation so they see the same machine load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(repeat, 1)):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [STAT(ts) * 1e3 for ts in times]


def cpu_ms(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    """Median CPU time (ms) of the calling thread."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeat, 3)):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return STAT(times) * 1e3


def load_photos(assets: Path, n: int) -> list[np.ndarray]:
    """``n`` 640×480 BGR photos: t1.jpg first, then other asset photos (resized, cropped)."""
    names = ["t1.jpg", "bald_guys.jpg", "face_detection2.jpeg", "Tom_Cruise_avp_2014_4.jpg"]
    names += [f"dlib_faces/{p.name}" for p in sorted((assets / "images/dlib_faces").glob("*.jpg"))]
    out = []
    for name in names:
        img = cv2.imread(str(assets / "images" / name))
        if img is not None:
            out.append(cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA))
    while len(out) < n:  # flipped copies if the folder holds fewer photos
        out.append(np.ascontiguousarray(out[len(out) % len(out)][:, ::-1]))
    return out[:n]


def bench_onnx(
    path: Path, photos: list[np.ndarray], threads: int, repeat: int, batch: int
) -> dict[str, Any]:
    sys.path.insert(0, str(repo_root() / "tests"))
    from _reference_scrfd import ReferenceSCRFD

    img = photos[0]
    det = FaceDetector.from_onnx(path, threads=threads, protocol="vga", workers=0)
    backend = det.backend
    plan = det.protocol.plan(*img.shape[:2])
    blob = np.empty((1, 3, *plan.canvas), np.float32)
    fill_canvas(blob[0], img, plan, det.protocol.pad_value)
    sess = backend.session  # type: ignore[attr-defined]
    feed = {backend.input_name: blob}  # type: ignore[attr-defined]
    row: dict[str, Any] = {"model": path.name, "faces": len(det.predict(img)[0])}
    ref = ReferenceSCRFD(str(path))
    ref.session = sess  # same session options (threads) as ours
    model_ms, e2e_ms, wrapper_ms = interleaved_ms(
        [
            lambda: sess.run(None, feed),
            lambda: det.predict(img),
            lambda: ref.detect(img, (640, 640)),
        ],
        repeat,
    )
    row["model_only_ms"] = model_ms
    row["e2e_ms"] = e2e_ms
    row["e2e_over_model"] = e2e_ms / model_ms
    row["wrapper_ms"] = wrapper_ms
    row["wrapper_over_model"] = wrapper_ms / model_ms
    orig = FaceDetector.from_onnx(path, threads=threads, protocol="original", workers=0)
    oblob = np.empty((1, 3, 480, 640), np.float32)
    fill_canvas(oblob[0], img, orig.protocol.plan(480, 640), 0.0)
    ofeed = {backend.input_name: oblob}  # type: ignore[attr-defined]
    osess = orig.backend.session  # type: ignore[attr-defined]
    om, oe = interleaved_ms([lambda: osess.run(None, ofeed), lambda: orig.predict(img)], repeat)
    row["original_640x480_model_only_ms"] = om
    row["original_640x480_e2e_ms"] = oe
    # CPU time of a single-threaded run (the calling thread does all the work): not disturbed
    # by other processes, and 2 / it is the ceiling of any 2-core throughput
    one = OnnxBackend(path, threads=1)
    row["cpu_1thread_ms"] = cpu_ms(lambda: one.run(blob), repeat // 2)
    # our overhead (resize/normalise/pad, decode, NMS, results) as CPU time: e2e − model-only of
    # a single-threaded detector, insensitive to other jobs on the machine
    det1 = FaceDetector(one, protocol="vga")
    row["overhead_cpu_ms"] = cpu_ms(lambda: det1.predict(img), repeat // 2) - row["cpu_1thread_ms"]
    row["e2e_over_model_from_cpu"] = 1 + row["overhead_cpu_ms"] / row["model_only_ms"]
    if det.layout.max_batch is None:
        b8 = np.concatenate([blob] * batch)
        row["cpu_1thread_batch_ms_per_img"] = cpu_ms(lambda: one.run(b8), repeat // 4) / batch
    imgs = photos[:batch]
    if det.layout.max_batch is None:
        bblob = np.concatenate([blob] * batch)
        row["model_only_batch_ms_per_img"] = (
            median_ms(lambda: sess.run(None, {backend.input_name: bblob}), max(repeat // 4, 5))  # type: ignore[attr-defined]
            / batch
        )
    # each variant in its own block with its own detector: sessions timed in alternation would
    # slow each other (onnxruntime's intra-op threads keep spinning after a run)
    reps = max(repeat // 4, 5)

    def per_img(make: Callable[[], FaceDetector], call: Callable[[FaceDetector], Any]) -> float:
        d = make()
        return median_ms(lambda: call(d), reps) / batch

    row["e2e_single_ms_per_img"] = per_img(
        lambda: FaceDetector.from_onnx(path, threads=threads, workers=0),
        lambda d: [d.predict(im) for im in imgs],
    )
    row["e2e_batch_one_session_ms_per_img"] = per_img(
        lambda: FaceDetector.from_onnx(path, threads=threads, workers=0, batch_size=batch),
        lambda d: d.predict(imgs),
    )
    row["e2e_batch_2workers_ms_per_img"] = per_img(
        lambda: FaceDetector.from_onnx(path, threads=threads, workers=2, batch_size=batch),
        lambda d: d.predict(imgs),
    )
    single = row["e2e_single_ms_per_img"]
    row["batch_one_session_speedup"] = single / row["e2e_batch_one_session_ms_per_img"]
    row["batch_2workers_speedup"] = single / row["e2e_batch_2workers_ms_per_img"]
    # the most any scheme can get from `threads` cores: every core busy with single-threaded
    # work (network + our overhead, as CPU time) and no synchronisation at all
    ideal = (row["cpu_1thread_ms"] + row["overhead_cpu_ms"]) / max(threads, 1)
    row["batch_speedup_ceiling"] = single / ideal
    return row


def bench_yunet(path: Path, img: np.ndarray, repeat: int) -> dict[str, Any]:
    h, w = img.shape[:2]
    yn = cv2.FaceDetectorYN.create(str(path), "", (w, h), 0.5, 0.3, 5000)
    yn.setInputSize((w, h))
    _, faces = yn.detect(img)
    return {
        "model": path.name,
        "faces": 0 if faces is None else len(faces),
        "e2e_ms": median_ms(lambda: yn.detect(img), repeat),
    }


def bench_torch(photos: list[np.ndarray], threads: int, repeat: int) -> list[dict[str, Any]]:
    """damofd-0.5g (zoo architecture, initial weights: the timing does not depend on them)."""
    try:
        import torch

        from damofd.models.factory import create_model
    except ImportError as e:
        return [{"model": "damofd-0.5g (torch)", "skipped": str(e)}]
    torch.set_num_threads(threads)
    img = photos[0]
    rows = []
    for name in ("damofd-0.5g", "scrfd-500m-kps"):
        det = FaceDetector.from_model(create_model(name), protocol="vga")
        plan = det.protocol.plan(*img.shape[:2])
        blob = np.empty((1, 3, *plan.canvas), np.float32)
        fill_canvas(blob[0], img, plan, 0.0)
        row = {"model": f"{name} (torch fused, init weights)"}
        row["model_only_ms"], row["e2e_ms"] = interleaved_ms(
            [lambda d=det, b=blob: d.backend.run(b), lambda d=det: d.predict(img)], repeat
        )
        row["e2e_over_model"] = row["e2e_ms"] / row["model_only_ms"]
        rows.append(row)
    return rows


def bench_damofd_export(
    photos: list[np.ndarray], threads: int, repeat: int, batch: int
) -> list[dict[str, Any]]:
    """damofd-0.5g exported with damofd.export (initial weights: timing only, no faces)."""
    import tempfile

    try:
        from damofd.export.onnx import export_onnx
    except ImportError as e:
        return [{"model": "damofd-0.5g (onnx export)", "skipped": str(e)}]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx("damofd-0.5g", Path(tmp) / "damofd-0.5g.onnx", allow_random=True)
        row = bench_onnx(path, photos, threads, repeat, batch)
    row["model"] = "damofd-0.5g export (init weights)"
    return [row]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime/OpenCV/torch threads")
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument(
        "--onnx",
        nargs="+",
        default=["scrfd_500m_bnkps.onnx", "det_500m.onnx", "det_2.5g.onnx"],
        help="ONNX files to time: names in assets/models/scrfd, or paths",
    )
    ap.add_argument(
        "--no-bundled", action="store_true", help="skip the bundled default model's row"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    args = ap.parse_args(argv)
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    assets = assets_dir()
    if assets is None:
        print("shared assets not found (set DAMOFD_ASSETS)", file=sys.stderr)
        return 2
    cv2.setNumThreads(args.threads)
    photos = load_photos(assets, args.batch)
    rows: list[dict[str, Any]] = []
    paths = [Path(n) if Path(n).is_file() else assets / "models/scrfd" / n for n in args.onnx]
    if not args.no_bundled:
        from damofd.models.bundled import DEFAULT_MODEL, bundled_file, get_bundled

        if get_bundled(DEFAULT_MODEL) is not None:
            paths.insert(0, bundled_file(DEFAULT_MODEL, "onnx"))
    for path in paths:
        rows.append(bench_onnx(path, photos, args.threads, args.repeat, args.batch))
    rows.append(
        bench_yunet(assets / "models/peers/yunet_2023mar_640x640.onnx", photos[0], args.repeat)
    )
    if not args.no_torch:
        rows += bench_torch(photos, args.threads, args.repeat // 2)
        rows += bench_damofd_export(photos, args.threads, args.repeat, args.batch)
    for r in rows:
        print(
            "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        )
    if args.json:
        from damofd.io import atomic_write_json

        atomic_write_json(args.json, {"threads": args.threads, "stat": args.stat, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
