"""Aligned face crops from the five keypoints (the ArcFace 112×112 convention).

The similarity transform (rotation, uniform scale, translation) that maps a face's five
keypoints onto the standard ArcFace template is estimated in closed form by least squares
(Umeyama's method, the one ``skimage.transform.SimilarityTransform.estimate`` and insightface's
``norm_crop`` use), then applied with ``cv2.warpAffine``. Other crop sizes scale the template;
``margin`` shrinks it towards the crop centre so more of the head is kept.

>>> faces = FaceDetector().detect("group.jpg")                        # doctest: +SKIP
>>> crops = align_faces(cv2.imread("group.jpg"), faces, size=112)     # doctest: +SKIP
>>> crops[0].image.shape, crops[0].matrix                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from damofd.errors import ConfigError

__all__ = ["ARCFACE_TEMPLATE", "AlignedFace", "align_faces", "alignment_template", "similarity"]

#: The five ArcFace reference points in a 112×112 crop (insightface ``arcface_dst``): left eye,
#: right eye, nose, left and right mouth corners, as the SCRFD keypoints are ordered.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class AlignedFace:
    """One aligned crop: ``image`` (size × size × 3, BGR), the 2×3 ``matrix`` mapping source
    pixels to crop pixels, the face ``index`` in the input list and its ``score``."""

    image: np.ndarray
    matrix: np.ndarray
    index: int
    score: float


def alignment_template(size: int = 112, margin: float = 0.0) -> np.ndarray:
    """The template for a ``size``×``size`` crop: the ArcFace points scaled by ``size / 112``,
    pulled towards the centre by ``margin`` (0 = the standard crop, 0.2 = 20 % more context)."""
    if size < 16:
        raise ConfigError(f"crop size must be >= 16, got {size}")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"margin must be in [0, 1), got {margin}")
    centre = 56.0
    t = (ARCFACE_TEMPLATE - centre) * (1.0 - margin) + centre
    return t * (size / 112.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity transform taking ``src`` points (N, 2) to ``dst`` (N, 2),
    in closed form (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / n
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / n
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _keypoints_and_scores(faces: Any) -> list[tuple[np.ndarray | None, float]]:
    """(keypoints (5, 2) or None, score) per face of a list of Face, an ImageResult or a
    ModelScope dict."""
    if isinstance(faces, dict):
        kps = faces.get("keypoints")
        scores = faces.get("scores", [])
        if kps is None:
            return [(None, float(s)) for s in scores]
        return [(np.asarray(k, np.float64).reshape(5, 2), float(s)) for k, s in zip(kps, scores)]
    if hasattr(faces, "faces"):
        faces = faces.faces
    out = []
    for f in faces:
        k = None if f.keypoints is None else np.asarray(f.keypoints, np.float64).reshape(5, 2)
        out.append((k, float(f.score)))
    return out


def align_faces(
    image: np.ndarray,
    faces: Sequence[Any] | Any,
    *,
    size: int = 112,
    margin: float = 0.0,
) -> list[AlignedFace]:
    """Aligned ``size``×``size`` crops of ``faces`` (detections of ``image``, a BGR array).
    Faces without keypoints are skipped (the result is shorter; ``AlignedFace.index`` says
    which face each crop is)."""
    template = alignment_template(size, margin)
    out = []
    for i, (kps, score) in enumerate(_keypoints_and_scores(faces)):
        if kps is None:
            continue
        m = similarity(kps, template)
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        out.append(AlignedFace(image=crop, matrix=m, index=i, score=score))
    return out
