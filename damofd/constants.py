"""Constants shared by several stages, defined once (a leaf module: imports nothing)."""

from __future__ import annotations

__all__ = ["WIDER_IMAGE_EXTENSIONS", "WIDER_SCORE_THR"]

#: Score threshold of the WIDER FACE evaluation protocol (reference spec §6): detections above
#: it are written and scored.
WIDER_SCORE_THR = 0.02

#: Image files a WIDER-style split folder (``images/<event>/<name>``) is searched for.
WIDER_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
