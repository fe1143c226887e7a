"""Recall by face size: which faces of a WIDER setting a detector finds, bucketed by size.

AP says how good a detector is; this says where it fails. Each face that counts in the chosen
setting (Easy/Medium/Hard keep lists) is put in a size bin by ``sqrt(w·h)`` of its ground-truth
box, in the original image's pixels, and counts as *found* when a prediction with a raw score of
at least ``score_thr`` matches it exactly as the protocol matches (the prediction's single
max-IoU face, IoU ≥ ``iou_thresh`` with the +1-pixel convention). The mean best IoU of the
bin's faces (over the predictions above the threshold) shows whether misses are missing boxes or
badly placed ones::

    from damofd.evaluation import recall_by_size
    print(recall_by_size("runs/eval/mymodel-vga", "ground_truth/", subset=True).table())

``damofd eval-wider --pred DIR --gt DIR --by-size`` prints the same table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from damofd.errors import InputError
from damofd.evaluation.ground_truth import SETTINGS, WiderGroundTruth, load_wider_gt
from damofd.evaluation.widerface import (
    PredictionsLike,
    _align,
    _as_predictions,
    _gather_rows,
    match_predictions,
)
from damofd.ops.numpy_nms import box_iou_numpy

__all__ = ["DEFAULT_SIZE_EDGES", "SizeBin", "SizeRecall", "recall_by_size"]

#: Lower edges of the size bins in pixels (``sqrt(w·h)``); the last bin is open-ended.
DEFAULT_SIZE_EDGES: tuple[float, ...] = (0, 8, 16, 24, 32, 48, 64, 96, 128, 256)


@dataclass(frozen=True)
class SizeBin:
    """Faces of one size bin ``[lo, hi)`` and how many of them were found."""

    lo: float
    hi: float
    faces: int
    found: int
    mean_best_iou: float

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else float("nan")


@dataclass(frozen=True)
class SizeRecall:
    """:func:`recall_by_size`'s result: one :class:`SizeBin` per size bin."""

    setting: str
    score_thr: float
    iou_thresh: float
    images: int
    bins: tuple[SizeBin, ...]

    def table(self) -> str:
        head = (
            f"{self.setting} faces by size (sqrt(w*h), original pixels), found = matched at "
            f"IoU >= {self.iou_thresh:g} by a prediction with score >= {self.score_thr:g} "
            f"({self.images} images)\n"
            f"| size px | faces | found | recall | mean best IoU |\n| --- | --- | --- | --- | --- |"
        )
        rows = [
            f"| {b.lo:g}–{'' if np.isinf(b.hi) else f'{b.hi:g}'} | {b.faces} | {b.found} | "
            f"{b.recall:.3f} | {b.mean_best_iou:.3f} |"
            for b in self.bins
            if b.faces
        ]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "score_thr": self.score_thr,
            "iou_thresh": self.iou_thresh,
            "images": self.images,
            "bins": [
                {
                    "lo": b.lo,
                    "hi": None if np.isinf(b.hi) else b.hi,
                    "faces": b.faces,
                    "found": b.found,
                    "recall": None if not b.faces else b.recall,
                    "mean_best_iou": None if not b.faces else b.mean_best_iou,
                }
                for b in self.bins
            ],
        }


def _best_iou(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """(G,) best plain IoU of each xywh face over the xywh detections of the same image."""
    if len(det) == 0 or len(gt) == 0:
        return np.zeros(len(gt))
    gt_xyxy = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:4]], axis=1)
    det_xyxy = np.concatenate([det[:, :2], det[:, :2] + det[:, 2:4]], axis=1)
    return box_iou_numpy(gt_xyxy, det_xyxy).max(axis=1)


def recall_by_size(
    predictions: PredictionsLike,
    gt: str | os.PathLike[str] | WiderGroundTruth,
    *,
    setting: str = "hard",
    score_thr: float = 0.5,
    iou_thresh: float = 0.5,
    edges: Sequence[float] = DEFAULT_SIZE_EDGES,
    subset: bool = False,
    check_count: bool = True,
    allow_inverted: bool = False,
) -> SizeRecall:
    """Recall of the faces of ``setting`` per size bin (module doc); arguments as
    :func:`~damofd.evaluation.widerface.evaluate_wider`, plus ``setting``, ``score_thr`` (raw
    scores, not normalised) and ``edges`` (increasing lower bin edges in pixels)."""
    if setting not in SETTINGS:
        raise InputError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if not (0 < iou_thresh <= 1):
        raise InputError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    lo = np.asarray(edges, dtype=np.float64)
    if lo.ndim != 1 or lo.size == 0 or np.any(np.diff(lo) <= 0):
        raise InputError(f"edges must be increasing lower bin edges, got {list(edges)}")
    gt_all = gt if isinstance(gt, WiderGroundTruth) else load_wider_gt(gt)
    preds = _as_predictions(predictions, check_count, allow_inverted)
    used, pred_img = _align(gt_all, preds, subset)
    g = gt_all if used.size == len(gt_all) else gt_all.select(used)
    data, p_off, _, _ = _gather_rows(preds, pred_img)
    keep = data[:, 4] >= score_thr
    pred_idx, gt_idx = match_predictions(data[:, :4], p_off, g.boxes, g.offsets, iou_thresh)
    found = np.zeros(len(g.boxes), dtype=bool)
    found[gt_idx[keep[pred_idx]]] = True
    best = np.zeros(len(g.boxes))
    for i in range(len(g.names)):
        a, b = g.offsets[i], g.offsets[i + 1]
        det = data[p_off[i] : p_off[i + 1]]
        best[a:b] = _best_iou(g.boxes[a:b], det[det[:, 4] >= score_thr, :4])
    counted = g.keep[setting]
    size = np.sqrt(np.clip(g.boxes[:, 2], 0, None) * np.clip(g.boxes[:, 3], 0, None))
    which = np.searchsorted(lo, size, side="right") - 1
    hi = np.append(lo[1:], np.inf)
    bins = []
    for k in range(lo.size):
        m = counted & (which == k)
        n = int(m.sum())
        mean_iou = float(best[m].mean()) if n else float("nan")
        bins.append(SizeBin(float(lo[k]), float(hi[k]), n, int(found[m].sum()), mean_iou))
    return SizeRecall(setting, float(score_thr), float(iou_thresh), len(used), tuple(bins))
