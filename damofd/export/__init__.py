"""Export: DamoFD/SCRFD detectors to ONNX in the official batched SCRFD layout.

::

    from damofd.export import export_onnx
    export_onnx("damofd-0.5g-kps", "damofd_0.5g_kps.onnx", weights="epoch_640.pth")

See :mod:`damofd.export.onnx` for the graph interface and docs/export.md for usage.
"""

from damofd._lazy import lazy_attributes
from damofd.export.onnx import (
    DEFAULT_EXPORT_SHAPE,
    INPUT_NAME,
    MIN_OPSET,
    OnnxExport,
    export_onnx,
    export_onnx_detailed,
    output_names,
    resolve_model,
)

__all__ = [
    "DEFAULT_EXPORT_SHAPE",
    "INPUT_NAME",
    "MIN_OPSET",
    "OnnxExport",
    "export_detector",
    "export_onnx",
    "export_onnx_detailed",
    "output_names",
    "resolve_model",
]

# resolved on first access, so that importing the export stage does not import inference
_LAZY: dict[str, str] = {"export_detector": "damofd.export.detector"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
