"""Export a :class:`~damofd.inference.FaceDetector` that runs a PyTorch model to ONNX, and get
back the same detector on onnxruntime.

This is the export stage driving the inference stage's detector type (export sits above
inference), so that :mod:`damofd.inference` never imports export (this replaces the former
``FaceDetector.to_onnx`` method).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from damofd.errors import ConfigError
from damofd.export.onnx import export_onnx
from damofd.inference.detector import FaceDetector

__all__ = ["export_detector"]


def export_detector(
    detector: FaceDetector,
    path: str | os.PathLike[str] | None = None,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
    workers: int | None = None,
) -> FaceDetector:
    """``detector``'s PyTorch model exported to ONNX (:func:`damofd.export.export_onnx`, dynamic
    batch and size) and run with onnxruntime, with the same settings (protocol, thresholds, max
    faces, batch size, input limits).

    Args:
        detector: a detector on the PyTorch backend.
        path: the ``.onnx`` file to write; ``None``: a temporary file, deleted once the sessions
            have loaded it.
        threads, providers, workers: as in :meth:`FaceDetector.from_onnx`.

    Raises:
        ConfigError: the detector does not run a PyTorch model (it is on onnxruntime already).
    """
    model = getattr(detector.backend, "model", None)
    if model is None or not hasattr(model, "forward_export"):
        raise ConfigError(
            f"export_detector needs a detector on the PyTorch backend, this one runs "
            f"{detector.backend.description}"
        )
    settings: dict[str, Any] = {
        "protocol": detector.protocol,
        "score_thr": detector.score_thr,
        "nms_thr": detector.nms_thr,
        "max_faces": detector.max_faces,
        "max_faces_metric": detector.max_faces_metric,
        "batch_size": detector.batch_size,
        "max_pixels": detector.max_pixels,
        "url_timeout": detector.url_timeout,
    }
    onnx_kw: dict[str, Any] = {"threads": threads, "providers": providers, "workers": workers}
    if path is not None:
        return FaceDetector.from_onnx(export_onnx(model, path), **onnx_kw, **settings)
    with tempfile.TemporaryDirectory(prefix="damofd-onnx-") as tmp:
        out = export_onnx(model, Path(tmp) / "model.onnx")
        return FaceDetector.from_onnx(out, **onnx_kw, **settings)
