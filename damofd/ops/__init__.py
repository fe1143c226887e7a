"""Low-level operations (boxes, NMS, anchors) shared by every stage; no torchvision.

Names are resolved lazily, so the numpy-only pieces (:func:`nms_numpy`,
:func:`anchor_centers_numpy`) can be used without importing torch.
"""

from __future__ import annotations

from damofd._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "SCRFD_ANCHOR_BASE_SIZES",
            "SCRFD_ANCHOR_SCALES",
            "SCRFD_STRIDES",
            "anchor_boxes",
            "anchor_centers",
            "anchor_centers_numpy",
            "num_anchors_total",
        ),
        "damofd.ops.anchors",
    ),
    **dict.fromkeys(
        (
            "bbox2distance",
            "box_area",
            "box_iou",
            "box_iou_aligned",
            "distance2bbox",
            "distance2kps",
            "kps2distance",
            "nms",
            "xywh_to_xyxy",
            "xyxy_to_xywh",
        ),
        "damofd.ops.boxes",
    ),
    "box_iou_numpy": "damofd.ops.numpy_nms",
    "nms_numpy": "damofd.ops.numpy_nms",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
