"""Decoding of the flattened SCRFD outputs and NMS (reference spec §4.4, §7.2), in numpy.

Input layout (shared by the official ONNX files, our export and ``SCRFD.forward_export``): for one
image, a list ``[score_l..., bbox_l..., (kps_l...)]`` over the levels, each ``(N_l, C)`` with
``N_l = (H/s)·(W/s)·A`` rows in :func:`damofd.ops.anchors.anchor_centers_numpy` order; ``score`` is
the sigmoid probability (C = 1), ``bbox`` the ``ltrb`` distances in **stride units** (C = 4) and
``kps`` the keypoint offsets in stride units (C = 10). Only rows above the score threshold are
decoded; the rest is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from damofd.errors import ConfigError
from damofd.ops.anchors import anchor_centers_numpy
from damofd.ops.numpy_nms import nms_numpy

from .preprocess import Protocol, ResizePlan

__all__ = ["Detections", "ModelLayout", "decode_outputs", "select_max_faces"]

MAX_FACES_METRICS = ("default", "max", "score")


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """What a network's flattened outputs look like.

    Attributes:
        strides: feature strides, one output group per level (``(8, 16, 32)`` or 5 levels).
        num_anchors: anchors per location (2 for SCRFD/DamoFD, 1 for 5-level files).
        use_kps: whether keypoint outputs follow the score and box outputs.
        max_batch: largest batch the network accepts (``None``: any).
        input_hw: fixed network input size (H, W), or ``None`` when dynamic.
    """

    strides: tuple[int, ...]
    num_anchors: int
    use_kps: bool
    max_batch: int | None = None
    input_hw: tuple[int, int] | None = None

    @property
    def num_outputs(self) -> int:
        return len(self.strides) * (3 if self.use_kps else 2)

    def rows(self, canvas_h: int, canvas_w: int) -> list[int]:
        """Expected rows per level for a canvas of ``canvas_h`` × ``canvas_w``."""
        return [(canvas_h // s) * (canvas_w // s) * self.num_anchors for s in self.strides]


@dataclass(slots=True)
class Detections:
    """Decoded faces of one image in original pixels, sorted by score descending."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32
    keypoints: np.ndarray | None  # (N, 5, 2) float32


def select_max_faces(
    boxes: np.ndarray,
    scores: np.ndarray,
    max_faces: int,
    image_hw: tuple[int, int],
    metric: str = "default",
) -> np.ndarray:
    """Indices (ascending, so score order is kept) of at most ``max_faces`` faces.

    ``metric`` (insightface ``SCRFD.detect``): ``"default"`` ranks by
    ``area − 2·‖box centre − image centre‖²`` (image centre ``(W//2, H//2)`` in original pixels),
    ``"max"`` by box area, ``"score"`` by score.
    """
    n = boxes.shape[0]
    if max_faces <= 0 or n <= max_faces:
        return np.arange(n)
    if metric == "score":
        values = scores
    else:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        if metric == "max":
            values = area
        elif metric == "default":
            cy, cx = image_hw[0] // 2, image_hw[1] // 2
            ox = (boxes[:, 0] + boxes[:, 2]) / 2 - cx
            oy = (boxes[:, 1] + boxes[:, 3]) / 2 - cy
            values = area - (ox * ox + oy * oy) * 2.0
        else:
            raise ConfigError(
                f"unknown max_faces metric {metric!r}; use one of {', '.join(MAX_FACES_METRICS)}"
            )
    top = np.argsort(-values, kind="stable")[:max_faces]
    return np.sort(top)


def decode_outputs(
    outputs: Sequence[np.ndarray],
    layout: ModelLayout,
    plan: ResizePlan,
    protocol: Protocol,
    score_thr: float,
    nms_thr: float,
    max_faces: int = 0,
    max_faces_metric: str = "default",
) -> Detections:
    """Turn one image's flattened outputs into faces in original-image pixels.

    Per level: keep rows with ``score > score_thr`` (``≥`` for the insightface protocol), decode
    ``box = (cx − l·s, cy − t·s, cx + r·s, cy + b·s)`` and ``kp = c + k·s`` at the cached anchor
    centres, clamp boxes to the resized image when the protocol says so (mmdet), divide by the
    resize scales (float32, as mmdet's ``scale_factor`` and the insightface ``det_scale``), then
    greedy NMS (suppress IoU > ``nms_thr``; +1 area convention for insightface) and the optional
    ``max_faces`` selection.
    """
    nl = len(layout.strides)
    ch, cw = plan.canvas
    boxes_l: list[np.ndarray] = []
    scores_l: list[np.ndarray] = []
    kps_l: list[np.ndarray] = []
    for li, stride in enumerate(layout.strides):
        s = outputs[li].reshape(-1)
        keep = np.flatnonzero(s > score_thr if protocol.strict_score else s >= score_thr)
        if keep.size == 0:
            continue
        centers = anchor_centers_numpy(ch // stride, cw // stride, stride, layout.num_anchors)
        if centers.shape[0] != s.shape[0]:
            raise ConfigError(
                f"model output for stride {stride} has {s.shape[0]} rows, expected "
                f"{centers.shape[0]} for a {ch}x{cw} input (wrong layout or strides?)"
            )
        c = centers[keep]
        d = outputs[nl + li][keep] * np.float32(stride)
        boxes_l.append(np.concatenate((c - d[:, :2], c + d[:, 2:]), axis=1))
        scores_l.append(s[keep])
        if layout.use_kps:
            k = outputs[2 * nl + li][keep] * np.float32(stride)
            kps_l.append(k.reshape(-1, 5, 2) + c[:, None, :])
    if not scores_l:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32) if layout.use_kps else None,
        )
    boxes = np.concatenate(boxes_l) if len(boxes_l) > 1 else boxes_l[0]
    scores = np.concatenate(scores_l) if len(scores_l) > 1 else scores_l[0]
    kps = (np.concatenate(kps_l) if len(kps_l) > 1 else kps_l[0]) if layout.use_kps else None
    if protocol.clamp:
        np.clip(boxes[:, 0::2], 0, plan.new_w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, plan.new_h, out=boxes[:, 1::2])
    if plan.scale_x != 1.0 or plan.scale_y != 1.0:
        sx, sy = np.float32(plan.scale_x), np.float32(plan.scale_y)
        boxes /= np.array([sx, sy, sx, sy], dtype=np.float32)
        if kps is not None:
            kps /= np.array([sx, sy], dtype=np.float32)
    order = nms_numpy(boxes, scores, nms_thr, offset=protocol.nms_offset)
    if max_faces > 0 and order.size > max_faces:
        order = order[
            select_max_faces(
                boxes[order], scores[order], max_faces, (plan.height, plan.width), max_faces_metric
            )
        ]
    return Detections(boxes[order], scores[order], None if kps is None else kps[order])
