"""Typed detection results: :class:`Face` and the per-image :class:`ImageResult`.

Coordinates are in pixels of the **original** image (before any resize), ``xyxy`` boxes with
``x2 = x1 + w`` (no +1 convention), keypoints as five ``(x, y)`` points in the SCRFD order
(left eye, right eye, nose, left mouth corner, right mouth corner, from the viewer's side as
annotated in WIDER FACE). Scores are sigmoid probabilities in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Face", "ImageResult"]


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in original-image pixels (floats, no +1 convention).
        score: detection confidence in [0, 1].
        keypoints: five ``(x, y)`` points in original-image pixels, or ``None`` when the model
            has no keypoint branch.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: tuple[tuple[float, float], ...] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"box": [x1,y1,x2,y2], "score": s, "keypoints": [[x,y]×5] | None}``."""
        return {
            "box": list(self.box),
            "score": self.score,
            "keypoints": None if self.keypoints is None else [list(p) for p in self.keypoints],
        }


@dataclass(slots=True)
class ImageResult:
    """Detections of one image, as arrays (fast) with typed views.

    Attributes:
        boxes: (N, 4) float32 ``xyxy`` boxes in original-image pixels, sorted by score descending.
        scores: (N,) float32.
        keypoints: (N, 5, 2) float32 or ``None`` (model without keypoints).
        image_size: ``(height, width)`` of the original image; ``(0, 0)`` when it failed to load.
        source: a label of the input (its path or URL, ``"<array>"``, ``"<PIL.Image>"``, ...).
        error: ``None`` on success, else a one-line message saying why this input was skipped
            (then ``boxes`` is empty).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None
    image_size: tuple[int, int]
    source: str = "<array>"
    error: str | None = None
    _faces: list[Face] | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, source: str, error: str, use_kps: bool = True) -> ImageResult:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, 5, 2), np.float32) if use_kps else None,
            image_size=(0, 0),
            source=source,
            error=error,
        )

    @property
    def ok(self) -> bool:
        return self.error is None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def faces(self) -> list[Face]:
        """The detections as :class:`Face` objects (built once, on first access)."""
        if self._faces is None:
            boxes = self.boxes.astype(np.float64).tolist()
            scores = self.scores.astype(np.float64).tolist()
            if self.keypoints is None:
                self._faces = [
                    Face(box=tuple(b), score=s)  # type: ignore[arg-type]
                    for b, s in zip(boxes, scores)
                ]
            else:
                kps = self.keypoints.astype(np.float64).tolist()
                self._faces = [
                    Face(box=tuple(b), score=s, keypoints=tuple(tuple(p) for p in k))  # type: ignore[arg-type]
                    for b, s, k in zip(boxes, scores, kps)
                ]
        return self._faces

    def to_modelscope(self) -> dict[str, Any]:
        """The ModelScope ``face-detection`` output dict (reference spec §8.1).

        ``{"scores": [s, ...], "boxes": [[x1, y1, x2, y2], ...], "keypoints": [[x1, y1, ...,
        x5, y5], ...]}`` sorted by score descending, in original-image pixels. For a model
        without keypoints ModelScope itself crashes (spec §10.9); here ``"keypoints"`` is then
        ``None``.
        """
        return {
            "scores": self.scores.astype(np.float64).tolist(),
            "boxes": self.boxes.astype(np.float64).tolist(),
            "keypoints": None
            if self.keypoints is None
            else self.keypoints.reshape(-1, 10).astype(np.float64).tolist(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``path``, ``image_size`` [h, w], ``error`` and the ModelScope keys."""
        d: dict[str, Any] = {"path": self.source, "image_size": list(self.image_size)}
        if self.error is not None:
            d["error"] = self.error
        d.update(self.to_modelscope())
        return d
