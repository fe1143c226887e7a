"""Checked settings of :class:`damofd.inference.FaceDetector`: thresholds and the backend choice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from damofd.device import check_device
from damofd.errors import ConfigError

if TYPE_CHECKING:
    from damofd.models.sources import ModelSource

__all__ = [
    "DEFAULT_SCORE_THR",
    "check_nms_thr",
    "check_score_thr",
    "choose_backend",
    "modelscope_model_ids",
]


#: Default score threshold of the API and the CLI (the insightface wrapper's ``det_thresh``).
#: WIDER FACE evaluation uses 0.02 (spec §6); the ModelScope pipeline 0.3.
DEFAULT_SCORE_THR = 0.5


def check_score_thr(value: float, name: str = "score_thr") -> float:
    """``value`` as a float in [0, 1] (a sigmoid score threshold), else :class:`ConfigError`
    naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {v:g}")
    return v


def check_nms_thr(value: float, name: str = "nms_thr") -> float:
    """``value`` as a float in (0, 1] (an IoU threshold), else :class:`ConfigError` naming
    ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise ConfigError(f"{name} must be in (0, 1], got {v:g}")
    return v


def modelscope_model_ids() -> dict[str, str]:
    """ModelScope model ids → damofd zoo names (reference spec §8.1), from
    :data:`damofd.models.zoo.MODELSCOPE_MODELS`."""
    from damofd.models.zoo import MODELSCOPE_MODELS

    return dict(MODELSCOPE_MODELS)


def choose_backend(
    source: ModelSource,
    backend: str | None = None,
    *,
    device: str = "cpu",
    fp16: bool = False,
    providers: Sequence[str] | None = None,
) -> str:
    """``"onnx"`` or ``"torch"``: ``backend`` when given; else onnxruntime for a source with an
    ONNX file (``.onnx`` files; bundled weights unless ``fp16`` or a CUDA ``device`` that
    ``providers`` cannot serve asks for PyTorch) and PyTorch for every other source."""
    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx' or 'torch', got {backend!r}")
    if backend is not None:
        return backend
    if source.kind == "bundled":
        ort_cuda = "CUDAExecutionProvider" in (providers or ())
        if fp16 or (check_device(device).type == "cuda" and not ort_cuda):
            return "torch"
    return "onnx" if source.has_onnx else "torch"
