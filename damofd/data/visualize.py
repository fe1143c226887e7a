"""Drawing of augmented training samples (used by ``damofd data show``)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["KEYPOINT_COLORS", "draw_sample"]

# BGR colours of left eye, right eye, nose, left mouth corner, right mouth corner
KEYPOINT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 0, 255),
    (0, 255, 255),
    (255, 0, 255),
    (0, 165, 255),
)


def draw_sample(
    img: np.ndarray,
    bboxes: np.ndarray,
    keypoints: np.ndarray | None = None,
    bboxes_ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Return a uint8 BGR copy of ``img`` (any float/uint8 BGR ``(H, W, 3)``, clipped to
    [0, 255]) with boxes (green), ignore boxes (grey) and keypoints of weight > 0 drawn
    (left-side points blue/magenta, right-side red/orange, nose yellow)."""
    out = np.clip(img, 0, 255).astype(np.uint8) if img.dtype != np.uint8 else img.copy()
    for b in np.asarray(bboxes).reshape(-1, 4):
        p1 = (round(float(b[0])), round(float(b[1])))
        p2 = (round(float(b[2])), round(float(b[3])))
        cv2.rectangle(out, p1, p2, (0, 255, 0), 1, cv2.LINE_AA)
    if bboxes_ignore is not None:
        for b in np.asarray(bboxes_ignore).reshape(-1, 4):
            p1 = (round(float(b[0])), round(float(b[1])))
            p2 = (round(float(b[2])), round(float(b[3])))
            cv2.rectangle(out, p1, p2, (128, 128, 128), 1, cv2.LINE_AA)
    if keypoints is not None:
        for face in np.asarray(keypoints).reshape(-1, 5, 3):
            for j, (x, y, w) in enumerate(face):
                if w > 0:
                    cv2.circle(out, (round(float(x)), round(float(y))), 2, KEYPOINT_COLORS[j], -1)
    return out
