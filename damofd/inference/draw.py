"""Drawing detections in the look of ModelScope's ``draw_face_detection_result`` (spec §8.1):
box (255, 0, 0) thickness 2, keypoints as radius-1 circles (0, 0, 255), the score as
``f"{score:.2f}"`` at (x1, y2) in ``FONT_HERSHEY_PLAIN`` scale 1 colour (0, 255, 0). Colours are
BGR, so boxes are blue and keypoints red, as in the original.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from damofd.errors import InputError
from damofd.io import atomic_write_bytes

from .image_io import load_image
from .results import Face, ImageResult

__all__ = ["draw_face_detection_result", "draw_faces", "write_image"]

BOX_COLOR = (255, 0, 0)
KPS_COLOR = (0, 0, 255)
TEXT_COLOR = (0, 255, 0)

FacesLike = ImageResult | Mapping[str, Any] | Sequence[Face]


def _as_arrays(result: FacesLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes (N,4), scores (N,), keypoints (N,5,2) or None) from any result form."""
    if isinstance(result, ImageResult):
        return result.boxes, result.scores, result.keypoints
    if isinstance(result, Mapping):
        boxes = np.asarray(result.get("boxes") or [], np.float64).reshape(-1, 4)
        scores = np.asarray(result.get("scores") or [], np.float64).reshape(-1)
        kps_raw = result.get("keypoints")
        kps = None if kps_raw is None else np.asarray(kps_raw, np.float64).reshape(-1, 5, 2)
        return boxes, scores, kps
    faces = list(result)
    boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
    scores = np.array([f.score for f in faces], np.float64)
    kps = None
    if faces and all(f.keypoints is not None for f in faces):
        kps = np.array([f.keypoints for f in faces], np.float64).reshape(-1, 5, 2)
    return boxes, scores, kps


def draw_faces(
    image: Any,
    result: FacesLike,
    out_path: str | os.PathLike[str] | None = None,
    *,
    kps_radius: int | None = None,
) -> np.ndarray:
    """Draw boxes, keypoints and scores on a **copy** of ``image`` and return it (BGR uint8).

    Keypoints are filled dots whose radius follows the face (``max(1, side / 40)`` px, so they
    stay visible on large faces); ``kps_radius=1`` gives ModelScope's exact radius-1 circles
    (:func:`draw_face_detection_result` uses that).

    Args:
        image: anything :func:`~damofd.inference.image_io.load_image` accepts (numpy BGR, path,
            URL, PIL image).
        result: an :class:`ImageResult`, a list of :class:`Face` or a ModelScope dict
            ``{"scores", "boxes", "keypoints"}`` (coordinates in ``image`` pixels).
        out_path: also write the drawing there (format from the extension; atomic write).
    """
    img = load_image(image)
    canvas = img.copy()
    boxes, scores, kps = _as_arrays(result)
    ib = boxes.astype(np.int32)
    for i in range(ib.shape[0]):  # one OpenCV call per face; there is no vectorised drawing
        x1, y1, x2, y2 = (int(v) for v in ib[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, 2)
        if kps is not None and i < kps.shape[0]:
            side = min(x2 - x1, y2 - y1)
            r = kps_radius if kps_radius is not None else max(1, round(side / 40))
            for x, y in kps[i].astype(np.int32):
                if r == 1:
                    cv2.circle(canvas, (int(x), int(y)), 1, KPS_COLOR, 1)
                else:
                    cv2.circle(canvas, (int(x), int(y)), r, KPS_COLOR, -1, cv2.LINE_AA)
        cv2.putText(
            canvas,
            f"{float(scores[i]):.2f}",
            (x1, y2),
            cv2.FONT_HERSHEY_PLAIN,
            1.0,
            TEXT_COLOR,
            thickness=1,
            lineType=8,
        )
    if out_path is not None:
        write_image(out_path, canvas)
    return canvas


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode ``image`` (BGR) by the file extension and write it atomically."""
    ext = os.path.splitext(os.fspath(path))[1] or ".jpg"
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise InputError(f"{os.fspath(path)}: cannot encode an image with extension {ext!r}")
    atomic_write_bytes(path, buf.tobytes())


def draw_face_detection_result(img_path: str | os.PathLike[str], result: FacesLike) -> np.ndarray:
    """ModelScope-compatible: read ``img_path`` (BGR), draw ``result``, print
    ``Found N faces`` and return the drawn image (same signature as
    ``modelscope.utils.cv.image_utils.draw_face_detection_result``)."""
    img = draw_faces(img_path, result, kps_radius=1)
    n = len(_as_arrays(result)[1])
    print(f"Found {n} faces")
    return img
