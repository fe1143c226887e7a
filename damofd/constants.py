"""Constants shared by several stages, defined once (a leaf module: imports nothing)."""

from __future__ import annotations

__all__ = ["BACKBONE_INIT_SCHEMES", "WIDER_IMAGE_EXTENSIONS", "WIDER_SCORE_THR"]

#: Score threshold of the WIDER FACE evaluation protocol (reference spec §6): detections above
#: it are written and scored.
WIDER_SCORE_THR = 0.02

#: Image files a WIDER-style split folder (``images/<event>/<name>``) is searched for.
WIDER_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: Conv init schemes of a from-scratch DamoFD backbone (``MasterNet.init_weights(scheme=)``,
#: ``TrainConfig.backbone_init``): the reference xavier gain 3.26, or Kaiming fan_out.
BACKBONE_INIT_SCHEMES = ("official", "kaiming")
