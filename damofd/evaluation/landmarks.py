"""Five-point landmark error of a detector against labelv2 keypoint annotations.

NME (normalised mean error) of one face = the mean over its five points of the Euclidean
distance between predicted and annotated point, divided by the diagonal of the annotated box.
Faces are matched one-to-one to detections at IoU ≥ ``iou_thr`` (greedy, best score first, as
the WIDER protocol matches); a face is counted only when all five of its keypoints are annotated.
The result reports the mean NME over the matched faces and how many annotated faces were matched,
since an error over matched faces alone says nothing about faces never found.

Pure NumPy: predictions come as arrays, so any backend (ours, insightface's ONNX files) can be
scored the same way::

    from damofd.evaluation.landmarks import landmark_nme
    res = landmark_nme(predictions, annotations)   # {name: (boxes, scores, kps)}, [ImageAnnotation]
    print(res.nme, res.matched, res.faces)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from damofd.data.labelv2 import ImageAnnotation
from damofd.ops.numpy_nms import box_iou_numpy

__all__ = ["LandmarkResult", "landmark_nme"]

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class LandmarkResult:
    """Mean NME over matched faces, with the counts behind it.

    Attributes:
        nme: mean NME (fraction of the box diagonal) over matched faces; ``nan`` if none matched.
        median_nme: median of the same per-face errors.
        matched: annotated faces (all five keypoints) matched by a detection at IoU ≥ iou_thr.
        faces: annotated faces with all five keypoints.
        images: images scored.
        iou_thr: matching threshold.
    """

    nme: float
    median_nme: float
    matched: int
    faces: int
    images: int
    iou_thr: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "nme": self.nme,
            "median_nme": self.median_nme,
            "matched": self.matched,
            "faces": self.faces,
            "images": self.images,
            "iou_thr": self.iou_thr,
        }


def landmark_nme(
    predictions: Mapping[str, Prediction],
    annotations: Sequence[ImageAnnotation],
    *,
    iou_thr: float = 0.5,
) -> LandmarkResult:
    """Score ``predictions`` (``{image name: (boxes (N,4), scores (N,), keypoints (N,5,2))}``)
    against the keypoints of ``annotations``. Images absent from ``predictions`` count as images
    with no detection; a prediction without keypoints matches nothing."""
    errors: list[float] = []
    faces = 0
    for ann in annotations:
        keep = ~ann.ignore & np.all(ann.keypoint_weights() > 0, axis=1)
        gt_boxes = ann.bboxes[keep].astype(np.float64)
        gt_kps = ann.keypoints[keep][..., :2].astype(np.float64)
        faces += len(gt_boxes)
        pred = predictions.get(ann.name)
        if pred is None or not len(gt_boxes):
            continue
        boxes, scores, kps = pred
        if kps is None or not len(boxes):
            continue
        iou = box_iou_numpy(boxes, gt_boxes)
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for i in np.argsort(-np.asarray(scores), kind="stable"):
            cand = np.where(~taken & (iou[i] >= iou_thr), iou[i], -1.0)
            j = int(np.argmax(cand))
            if cand[j] < 0:
                continue
            taken[j] = True
            diag = float(np.hypot(*(gt_boxes[j, 2:] - gt_boxes[j, :2])))
            dist = np.linalg.norm(np.asarray(kps[i], np.float64) - gt_kps[j], axis=1)
            errors.append(float(dist.mean()) / max(diag, 1e-9))
    arr = np.asarray(errors)
    return LandmarkResult(
        nme=float(arr.mean()) if arr.size else float("nan"),
        median_nme=float(np.median(arr)) if arr.size else float("nan"),
        matched=int(arr.size),
        faces=faces,
        images=len(annotations),
        iou_thr=iou_thr,
    )
