"""WIDER FACE val AP of an ONNX model through :class:`FaceDetector`, on the asset subset.

    python benchmarks/wider_subset_check.py det_500m.onnx --protocol insightface vga

Runs the detector (score threshold 0.02, as the evaluation protocol) over the val images present
under ``widerface/WIDER_val/images`` (358 images in 4 events in the shared assets) and evaluates
them with :func:`damofd.evaluation.widerface.evaluate_wider` (``subset=True``: ground-truth images
without a prediction entry are dropped). The insightface protocol reproduces the official ONNX
wrapper, the vga protocol the mmdet test path (reference spec §4.5, §7.2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from damofd.inference import FaceDetector
from damofd.testing import assets_dir


def predict_wider(det: FaceDetector, image_root: Path) -> dict[str, np.ndarray]:
    """``{event/name: (N, 5) [x, y, w, h, score]}`` for every image under ``image_root``."""
    paths = sorted(image_root.glob("*/*.jpg"))
    out: dict[str, np.ndarray] = {}
    for path, res in zip(paths, det.iter_predict(paths)):
        if res.error is not None:
            raise SystemExit(res.error)
        b = res.boxes.astype(np.float64)
        xywh = np.column_stack([b[:, :2], b[:, 2:] - b[:, :2], res.scores.astype(np.float64)])
        out[f"{path.parent.name}/{path.stem}"] = xywh
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", help="ONNX file (a name is looked up in assets/models/scrfd)")
    ap.add_argument("--protocol", nargs="+", default=["insightface", "vga"])
    ap.add_argument("--score-thr", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from damofd.evaluation.widerface import evaluate_wider

    assets = assets_dir()
    if assets is None:
        print("shared assets not found (set DAMOFD_ASSETS)", file=sys.stderr)
        return 2
    model = Path(args.onnx)
    if not model.is_file():
        model = assets / "models/scrfd" / args.onnx
    wider = assets / "widerface"
    for proto in args.protocol:
        det = FaceDetector.from_onnx(
            model, threads=args.threads, protocol=proto, score_thr=args.score_thr
        )
        t = time.perf_counter()
        preds = predict_wider(det, wider / "WIDER_val/images")
        dt = time.perf_counter() - t
        res = evaluate_wider(preds, wider / "ground_truth", subset=True)
        print(
            f"{model.name} protocol={proto} thr={args.score_thr}: easy {res.easy:.4f} "
            f"medium {res.medium:.4f} hard {res.hard:.4f} ({len(preds)} images, {dt:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
