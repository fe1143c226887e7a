"""Low-level tensor operations (boxes, NMS) shared by every stage; no torchvision."""

from damofd.ops.anchors import (
    SCRFD_ANCHOR_BASE_SIZES,
    SCRFD_ANCHOR_SCALES,
    SCRFD_STRIDES,
    anchor_boxes,
    anchor_centers,
    anchor_centers_numpy,
    num_anchors_total,
)
from damofd.ops.boxes import (
    bbox2distance,
    box_area,
    box_iou,
    box_iou_aligned,
    distance2bbox,
    distance2kps,
    kps2distance,
    nms,
    nms_numpy,
    xywh_to_xyxy,
    xyxy_to_xywh,
)

__all__ = [
    "SCRFD_ANCHOR_BASE_SIZES",
    "SCRFD_ANCHOR_SCALES",
    "SCRFD_STRIDES",
    "anchor_boxes",
    "anchor_centers",
    "anchor_centers_numpy",
    "num_anchors_total",
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
