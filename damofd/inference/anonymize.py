"""Hide faces in photos and videos, and follow faces across video frames.

* :func:`anonymize_image` — blur, pixelate, fill (``solid``) or blur an ellipse (``mask``) inside
  each face box, enlarged by ``box_scale`` so hair and chin are covered.
* :class:`FaceTracker` — IoU association in the SORT manner: the boxes of a frame are matched to
  the live tracks by maximum total IoU (``scipy.optimize.linear_sum_assignment``), unmatched
  boxes start tracks, and a track that misses detections is kept for ``keep_frames`` frames,
  moved by its smoothed velocity (constant-velocity prediction), so a face missed for a frame or
  two stays hidden — the flicker that exposes faces in naive per-frame anonymisation. Boxes are
  smoothed with an exponential moving average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from damofd.errors import ConfigError
from damofd.ops.numpy_nms import box_iou_numpy

__all__ = [
    "MODES",
    "FaceTracker",
    "Track",
    "anonymize_image",
    "anonymize_video",
    "scale_boxes",
]

MODES = ("blur", "pixelate", "solid", "mask")


def scale_boxes(boxes: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """``boxes`` (N, 4) xyxy enlarged by ``scale`` about their centres, clipped to the image,
    as integers."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) * scale / 2
    out = np.concatenate([c - half, c + half], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return np.round(out).astype(np.int64)


def anonymize_image(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    *,
    mode: str = "blur",
    box_scale: float = 1.3,
) -> np.ndarray:
    """A copy of ``image`` (BGR) with every box hidden (see the module doc for the modes)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if not box_scale > 0:
        raise ConfigError(f"box_scale must be > 0, got {box_scale}")
    out = image.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in scale_boxes(np.asarray(boxes), box_scale, w, h):
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        roi = out[y1:y2, x1:x2]
        side = max(x2 - x1, y2 - y1)
        if mode == "solid":
            roi[:] = 0
            continue
        if mode == "pixelate":
            cells = max(2, min(8, side // 4))
            small = cv2.resize(roi, (cells, cells), interpolation=cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
            continue
        k = max(3, (side // 3) | 1)  # odd kernel about a third of the face
        blurred = cv2.GaussianBlur(roi, (k, k), 0)
        blurred = cv2.GaussianBlur(blurred, (k, k), 0)  # twice: no recognisable detail left
        if mode == "blur":
            roi[:] = blurred
        else:  # mask: an elliptical blur that follows the face shape
            m = np.zeros(roi.shape[:2], np.uint8)
            ax = (int(x2 - x1) // 2, int(y2 - y1) // 2)
            cv2.ellipse(m, ax, ax, 0, 0, 360, 255, -1)
            roi[m > 0] = blurred[m > 0]
    return out


@dataclass
class Track:
    """A face followed across frames: id, smoothed box, velocity, frames since last seen."""

    id: int
    box: np.ndarray
    score: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    misses: int = 0
    hits: int = 1


class FaceTracker:
    """IoU + constant-velocity tracker (see the module doc).

    Args:
        iou_thr: least IoU for a detection to continue a track.
        keep_frames: frames a track survives without a detection (its box keeps moving).
        smoothing: weight of the new detection in the box EMA (1 = no smoothing).
    """

    def __init__(
        self, *, iou_thr: float = 0.3, keep_frames: int = 5, smoothing: float = 0.6
    ) -> None:
        if keep_frames < 0:
            raise ConfigError(f"keep_frames must be >= 0, got {keep_frames}")
        if not 0 < smoothing <= 1:
            raise ConfigError(f"smoothing must be in (0, 1], got {smoothing}")
        self.iou_thr, self.keep_frames, self.alpha = iou_thr, keep_frames, smoothing
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, boxes: np.ndarray, scores: np.ndarray | None = None) -> list[Track]:
        """Feed one frame's detections; returns the tracks to show for it (matched and kept),
        each with its id; ``Track.misses > 0`` for a predicted (undetected) box."""
        from scipy.optimize import linear_sum_assignment

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)
        for t in self.tracks:  # predict: move by the smoothed velocity
            t.box = t.box + t.velocity
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.tracks and len(boxes):
            iou = box_iou_numpy(np.stack([t.box for t in self.tracks]), boxes)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_thr:
                    t = self.tracks[r]
                    new = self.alpha * boxes[c] + (1 - self.alpha) * t.box
                    t.velocity = 0.5 * t.velocity + 0.5 * (new - (t.box - t.velocity))
                    t.box, t.score, t.misses = new, float(scores[c]), 0
                    t.hits += 1
                    matched_t.add(r)
                    matched_d.add(c)
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.keep_frames]
        for c in range(len(boxes)):
            if c not in matched_d:
                self.tracks.append(Track(self._next_id, boxes[c].copy(), float(scores[c])))
                self._next_id += 1
        return list(self.tracks)


def anonymize_video(
    detector,
    source,
    output,
    *,
    mode: str = "blur",
    box_scale: float = 1.3,
    keep_frames: int = 5,
    track: bool = True,
    max_frames: int | None = None,
    on_frame=None,
):
    """Write ``source`` (a video file or camera index) to ``output`` with every face hidden.

    With ``track`` (default) faces are followed by a :class:`FaceTracker` and a face the
    detector misses stays hidden for ``keep_frames`` frames; without it each frame hides only
    its own detections. ``on_frame(index, tracks)`` receives the shown tracks of every frame.
    Returns the :class:`~damofd.inference.video.VideoSummary`.
    """
    from damofd.inference.video import process_video

    tracker = FaceTracker(keep_frames=keep_frames if track else 0)
    shown: list[Track] = []

    def step(i: int, res) -> None:
        if track:
            shown[:] = tracker.update(res.boxes, res.scores)
        else:
            shown[:] = [Track(k, b.astype(np.float64), float(s_))
                        for k, (b, s_) in enumerate(zip(res.boxes, res.scores))]  # fmt: skip
        if on_frame is not None:
            on_frame(i, list(shown))

    def render(frame: np.ndarray, res) -> np.ndarray:
        boxes = np.array([t.box for t in shown], np.float64).reshape(-1, 4)
        return anonymize_image(frame, boxes, mode=mode, box_scale=box_scale)

    return process_video(
        detector, source, output, max_frames=max_frames, progress=False, on_frame=step,
        render=render,
    )  # fmt: skip
