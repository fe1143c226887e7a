"""Box operations shared by the models, training and inference stages (torch, no torchvision).

Conventions, stated once and named in every signature:

* ``xyxy``: ``(x1, y1, x2, y2)`` in pixels, ``x2``/``y2`` exclusive in the continuous sense;
  ``xywh``: ``(x, y, w, h)`` with ``w = x2 − x1`` (no +1), as WIDER prediction files store them.
* ``offset``: 0 for the mmcv/torchvision convention (area = w·h) and 1 for the old pixel-inclusive
  convention (area = (w+1)(h+1)) used by the insightface ONNX wrapper's NMS and by the WIDER
  evaluation.
* ``distance`` (``ltrb``): distances from an anchor point to the four box sides, in the same unit
  as the point (pixels once multiplied by the stride).
"""

from __future__ import annotations

import torch
from torch import Tensor

from damofd.ops.numpy_nms import nms_numpy

__all__ = [
    "bbox2distance",
    "box_area",
    "box_iou",
    "box_iou_aligned",
    "distance2bbox",
    "distance2kps",
    "kps2distance",
    "nms",
    "nms_numpy",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x, y, w, h)`` → ``(x1, y1, x2, y2)`` with ``x2 = x + w`` (no +1)."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` → ``(x, y, w, h)`` with ``w = x2 − x1`` (no +1)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor, offset: float = 0.0) -> Tensor:
    """Area of ``xyxy`` boxes; ``offset=1`` adds one pixel to each side length."""
    return (boxes[..., 2] - boxes[..., 0] + offset) * (boxes[..., 3] - boxes[..., 1] + offset)


def box_iou(a: Tensor, b: Tensor, offset: float = 0.0, eps: float = 0.0) -> Tensor:
    """Pairwise IoU of ``xyxy`` boxes: ``a`` (N,4), ``b`` (M,4) → (N, M).

    ``eps`` is added to the union (mmdet's ``bbox_overlaps`` uses 1e-6); with ``eps=0`` a zero
    union gives NaN, as the reference kernels do.
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, offset)[:, None] + box_area(b, offset)[None, :] - inter
    return inter / (union + eps) if eps else inter / union


def box_iou_aligned(a: Tensor, b: Tensor, offset: float = 0.0, eps: float = 1e-6) -> Tensor:
    """IoU of corresponding ``xyxy`` boxes: ``a``, ``b`` (..., 4) → (...)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, offset) + box_area(b, offset) - inter
    return inter / union.clamp(min=eps)


def distance2bbox(
    points: Tensor, distance: Tensor, max_shape: tuple[int, int] | None = None
) -> Tensor:
    """Decode ``ltrb`` distances from ``points`` (…,2 as x,y) to ``xyxy`` boxes.

    ``max_shape`` = (H, W) clamps x to [0, W] and y to [0, H] (mmdet ``get_bboxes``).
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None:
        h, w = max_shape
        x1 = x1.clamp(0, w)
        y1 = y1.clamp(0, h)
        x2 = x2.clamp(0, w)
        y2 = y2.clamp(0, h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def bbox2distance(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of :func:`distance2bbox`: ``xyxy`` boxes → ``ltrb`` distances from ``points``."""
    return torch.stack(
        (
            points[..., 0] - boxes[..., 0],
            points[..., 1] - boxes[..., 1],
            boxes[..., 2] - points[..., 0],
            boxes[..., 3] - points[..., 1],
        ),
        dim=-1,
    )


def distance2kps(points: Tensor, distance: Tensor) -> Tensor:
    """Decode keypoint offsets (…, 2K as x0,y0,x1,y1,…) relative to ``points`` (…, 2)."""
    k = distance.shape[-1] // 2
    d = distance.reshape(*distance.shape[:-1], k, 2)
    return (points[..., None, :] + d).reshape(distance.shape)


def kps2distance(points: Tensor, kps: Tensor) -> Tensor:
    """Inverse of :func:`distance2kps` (keypoints (…, 2K) → offsets from ``points``)."""
    k = kps.shape[-1] // 2
    d = kps.reshape(*kps.shape[:-1], k, 2) - points[..., None, :]
    return d.reshape(kps.shape)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: float = 0.0) -> Tensor:
    """Greedy NMS on ``xyxy`` boxes; same semantics as :func:`nms_numpy` (and torchvision).

    Returns a ``long`` tensor of kept indices on ``boxes.device``, sorted by decreasing score.
    The greedy pass runs on the CPU in float64 (exact thresholds, deterministic ties).
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms: scores must have shape ({boxes.shape[0]},), got {tuple(scores.shape)}"
        )
    keep = nms_numpy(
        boxes.detach().cpu().double().numpy(),
        scores.detach().cpu().double().numpy(),
        iou_threshold,
        offset,
    )
    return torch.from_numpy(keep).to(boxes.device)
