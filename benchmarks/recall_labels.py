"""Recall by face size on labelv2 data: which faces of your own labelled images a detector finds.

    python benchmarks/recall_labels.py LABELS.txt --images DIR [--model SPEC] [--every N]
        [--protocol vga] [--score-thr 0.5] [--iou 0.5] [--json out.json]

``damofd eval-wider --by-size`` answers this for the WIDER val ground truth (.mat files); this
script answers it for any ``labelv2.txt`` (for example the training list, to tell under-fitting
from over-fitting: a detector that misses small faces on the very images it was trained on
under-fits them). Each non-ignore box is put in a size bin by ``sqrt(w·h)`` in original pixels
(the bins of ``damofd.evaluation.DEFAULT_SIZE_EDGES``) and counts as found when a detection
scoring at least ``--score-thr`` overlaps it at IoU ≥ ``--iou`` (plain IoU, any detection: a
recall, not the protocol's one-to-one matching). ``--model`` takes what ``damofd detect``
takes (default: the bundled default model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from damofd.data.labelv2 import read_labelv2
from damofd.evaluation.size_recall import DEFAULT_SIZE_EDGES
from damofd.inference import FaceDetector
from damofd.ops.numpy_nms import box_iou_numpy


def size_recall(
    detector: FaceDetector,
    labels: Path,
    images: Path,
    every: int = 1,
    iou: float = 0.5,
) -> list[dict[str, float | int | None]]:
    """One row per size bin: faces, found, recall, over every ``every``-th image of ``labels``."""
    records = read_labelv2(labels)[::every]
    lo = np.asarray(DEFAULT_SIZE_EDGES, dtype=np.float64)
    faces = np.zeros(lo.size, dtype=np.int64)
    found = np.zeros(lo.size, dtype=np.int64)
    for rec in records:
        gt = rec.bboxes[~rec.ignore].astype(np.float64)
        if len(gt) == 0:
            continue
        path = images / rec.name
        if not path.is_file():
            raise SystemExit(f"{labels}:{rec.line}: image {path} not found")
        dets = detector.detect(str(path))
        hit = np.zeros(len(gt), dtype=bool)
        if dets:
            boxes = np.array([f.box for f in dets], dtype=np.float64)
            hit = (box_iou_numpy(gt, boxes) >= iou).any(axis=1)
        wh = np.clip(gt[:, 2:] - gt[:, :2], 0, None)
        size = np.sqrt(wh[:, 0] * wh[:, 1])
        which = np.searchsorted(lo, size, side="right") - 1
        np.add.at(faces, which, 1)
        np.add.at(found, which, hit.astype(np.int64))
    hi = [*lo[1:].tolist(), None]
    return [
        {
            "lo": float(lo[k]),
            "hi": hi[k],
            "faces": int(faces[k]),
            "found": int(found[k]),
            "recall": float(found[k] / faces[k]) if faces[k] else None,
        }
        for k in range(lo.size)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", type=Path, help="labelv2.txt")
    ap.add_argument("--images", type=Path, required=True, help="folder the label paths are under")
    ap.add_argument("--model", help="ONNX, checkpoint or zoo name (default: the bundled default)")
    ap.add_argument("--every", type=int, default=1, help="use every N-th image (default 1)")
    ap.add_argument("--protocol", default="vga", help="test protocol (default vga)")
    ap.add_argument("--score-thr", type=float, default=0.5, help="score to count (default 0.5)")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU of a match (default 0.5)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error(f"--every must be >= 1, got {args.every}")
    det = FaceDetector.from_pretrained(
        args.model, threads=args.threads, protocol=args.protocol, score_thr=args.score_thr
    )
    rows = size_recall(det, args.labels, args.images, args.every, args.iou)
    print(
        f"faces of {args.labels} (every {args.every}) by size (sqrt(w*h), original px), found = "
        f"IoU >= {args.iou:g} with a detection scoring >= {args.score_thr:g} ({args.protocol})"
    )
    print("| size px | faces | found | recall |\n| --- | --- | --- | --- |")
    for r in rows:
        if r["faces"]:
            hi = "" if r["hi"] is None else f"{r['hi']:g}"
            print(f"| {r['lo']:g}–{hi} | {r['faces']} | {r['found']} | {r['recall']:.3f} |")
    if args.json:
        from damofd.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
