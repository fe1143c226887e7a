"""damofd: DamoFD (ICLR 2023) and SCRFD face detection without mmcv.

Stages (dependencies point one way, top to bottom):

* :mod:`damofd.search` — structure strings, DDSAR and other zero-shot proxies, evolutionary search,
  and the MasterNet backbone module;
* :mod:`damofd.models` — detectors (backbone + PAFPN + SCRFDHead), model zoo, FLOPs counter,
  checkpoint and ONNX weight import;
* :mod:`damofd.data` — WIDER FACE annotations (labelv2), datasets, augmentation;
* :mod:`damofd.evaluation` — the WIDER FACE Easy/Medium/Hard protocol;
* :mod:`damofd.inference` — :class:`FaceDetector` (PyTorch and onnxruntime backends), drawing;
* :mod:`damofd.export` — ONNX export;
* :mod:`damofd.training` — ATSS, losses, trainer (single process and torchrun DDP).

Heavy submodules are imported lazily, so ``import damofd`` is cheap.
"""

from __future__ import annotations

from damofd._lazy import lazy_attributes
from damofd._version import __version__

# public name -> module that defines it (resolved on first access)
_LAZY: dict[str, str] = {
    "Structure": "damofd.search.structure",
    "ddsar": "damofd.search.ddsar",
    "create_model": "damofd.models.factory",
    "list_models": "damofd.models.zoo",
    "FaceDetector": "damofd.inference.detector",
    "pipeline": "damofd.inference.pipeline",
    "draw_face_detection_result": "damofd.inference.draw",
    "evaluate_wider": "damofd.evaluation.widerface",
    "export_onnx": "damofd.export.onnx",
    "build_trainer": "damofd.training.api",
}

__all__ = ["__version__", *_LAZY]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
