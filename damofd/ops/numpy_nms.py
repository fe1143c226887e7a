"""Greedy non-maximum suppression in numpy (no torch import, for the onnxruntime path).

Semantics of mmcv ``nms.cpp`` and torchvision: boxes are ``xyxy``; a box is suppressed when its IoU
with an already kept, higher-scored box is **greater** than the threshold; ``offset=1`` gives the
pixel-inclusive (+1) areas of the insightface wrapper.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou_numpy", "nms_numpy"]

_MATRIX_LIMIT = 256  # above this many boxes, NMS shrinks the candidate set instead of an N×N matrix


def box_iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of ``xyxy`` boxes (float64, no +1 convention; 0 where the union is empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    offset: float = 0.0,
) -> np.ndarray:
    """Greedy NMS on ``xyxy`` boxes (numpy). Returns kept indices, highest score first.

    A box is suppressed when its IoU with an already kept, higher-scored box is **greater** than
    ``iou_threshold`` (mmcv ``nms.cpp`` and torchvision semantics; equal scores keep input order).
    The Python loop runs once per *kept* box; each step is one vectorised pass.
    """
    n = int(boxes.shape[0])
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes, dtype=np.float64)[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    keep: list[int] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        if n <= _MATRIX_LIMIT:
            iw = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
            ih = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
            inter = np.clip(iw + offset, 0, None) * np.clip(ih + offset, 0, None)
            over = inter / (areas[:, None] + areas[None, :] - inter) > iou_threshold
            alive = np.ones(n, dtype=bool)
            i = 0
            while True:
                keep.append(i)
                alive[i] = False
                alive &= ~over[i]
                rest = alive[i + 1 :]
                if not rest.any():
                    break
                i = i + 1 + int(rest.argmax())
        else:
            idx = np.arange(n)
            while idx.size:
                i = int(idx[0])
                keep.append(i)
                rest = idx[1:]
                iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + offset
                ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + offset
                inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
                iou = inter / (areas[i] + areas[rest] - inter)
                idx = rest[~(iou > iou_threshold)]
    return order[np.asarray(keep, dtype=np.int64)]
