"""Aligned crops and anonymisation: how exact, how fast.

    python benchmarks/bench_extras.py --threads 2 [--onnx det_500m.onnx] [--json extras.json]

* **align**: detects the faces of ``t1.jpg`` (shared assets; the committed
  ``examples/astronaut.jpg`` without them), aligns each to the 112×112 ArcFace template and
  reports how far the detected keypoints land from the template after the transform (mean and
  max, pixels of the crop: the least-squares residual of five points that no similarity maps
  exactly) and the time of ``align_faces`` alone per face.
* **anonymize**: one photo end to end (detection + blur), and a 640×480 clip of ``--frames``
  frames in which the photo pans across the frame, written with tracking (``anonymize_video``):
  frames/s including decoding, detection, tracking, blurring and encoding.

The default detector is the bundled model (``--protocol original`` for the close-up sample,
``vga`` for the group photo); ``--onnx`` times another ONNX file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from bench_infer import median_ms  # the one median timer of benchmarks/

ROOT = Path(__file__).resolve().parents[1]


def _pan_clip(img: np.ndarray, path: Path, frames: int) -> None:
    """A 640×480 MJPG clip in which ``img`` (scaled to 480 px high) pans left to right."""
    s = 480 / img.shape[0]
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    canvas_w = max(640, small.shape[1]) + 160
    canvas = np.zeros((480, canvas_w, 3), np.uint8)
    canvas[:, 80 : 80 + small.shape[1]] = small
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    for i in range(frames):
        x = round(i * (canvas_w - 640) / max(1, frames - 1))
        w.write(canvas[:, x : x + 640])
    w.release()


def main(argv: list[str] | None = None) -> int:
    from damofd.inference import FaceDetector
    from damofd.inference.align import align_faces, alignment_template
    from damofd.inference.anonymize import anonymize_image, anonymize_video
    from damofd.models.bundled import DEFAULT_MODEL, bundled_file
    from damofd.testing import assets_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx", help="an ONNX detector instead of the bundled model")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    assets = assets_dir()
    photo = assets / "images" / "t1.jpg" if assets else ROOT / "examples" / "astronaut.jpg"
    protocol = "vga" if assets else "original"
    onnx = args.onnx or bundled_file(DEFAULT_MODEL, "onnx")
    kw = {"threads": args.threads, "workers": 0, "protocol": protocol, "score_thr": 0.5}
    det = FaceDetector.from_onnx(onnx, **kw)
    img = cv2.imread(str(photo))
    res = det.predict(img)[0]
    template = alignment_template(112)
    crops = align_faces(img, res, size=112)
    errs = []
    for c in crops:
        kps = np.asarray(res.keypoints[c.index], np.float64).reshape(5, 2)
        mapped = np.c_[kps, np.ones(5)] @ c.matrix.T
        errs.append(np.linalg.norm(mapped - template, axis=1))
    e = np.concatenate(errs) if errs else np.zeros(0)
    rows = {
        "detector": Path(args.onnx).name if args.onnx else f"{DEFAULT_MODEL} (bundled)",
        "photo": photo.name,
        "protocol": protocol,
        "faces": len(res),
        "align": {
            "crops": len(crops),
            "keypoint_residual_px_mean": float(e.mean()) if e.size else None,
            "keypoint_residual_px_max": float(e.max()) if e.size else None,
            "ms_per_face": median_ms(lambda: align_faces(img, res), args.repeat)
            / max(1, len(crops)),
        },
        "anonymize_photo_ms": median_ms(
            lambda: anonymize_image(img, det.predict(img)[0].boxes), args.repeat
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "pan.avi"
        _pan_clip(img, clip, args.frames)
        vdet = FaceDetector.from_onnx(onnx, **kw)
        hidden = []
        t = time.perf_counter()
        out = Path(tmp) / "out.mp4"
        anonymize_video(vdet, clip, out, on_frame=lambda i, tr: hidden.append(len(tr)))
        dt = time.perf_counter() - t
        rows["anonymize_video"] = {
            "frames": len(hidden),
            "size": "640x480",
            "fps": len(hidden) / dt,
            "mean_faces_hidden": float(np.mean(hidden)) if hidden else 0.0,
        }
    print(json.dumps(rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
