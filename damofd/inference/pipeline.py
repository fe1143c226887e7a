"""A drop-in for the ModelScope face-detection pipeline (reference spec §8.1).

Code written for the seed's example ports by changing the imports::

    from damofd.inference import Tasks, pipeline, draw_face_detection_result

    model_id = "damo/cv_ddsar_face-detection_iclr23-damofd"
    face_detection = pipeline(Tasks.face_detection, model=model_id)
    result = face_detection("face_detection2.jpeg")   # {"scores", "boxes", "keypoints"}

Without ``model`` the bundled default detector (``DEFAULT_MODEL``, trained by damofd) is
used, offline. ``model`` may be a ModelScope id (mapped to the zoo name; the weights come from
the ModelScope loader of :mod:`damofd.models`), a downloaded ModelScope folder, a zoo name
(bundled weights, or pass ``weights=``), a ``.pth`` checkpoint or an ONNX file. Like
ModelScope, the default score threshold is 0.3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from damofd.errors import ConfigError

from .detector import FaceDetector, resolve_modelscope_id
from .image_io import ImageInput

__all__ = ["FaceDetectionPipeline", "Tasks", "pipeline"]

MODELSCOPE_SCORE_THR = 0.3


class Tasks:
    """The task names of ``modelscope.utils.constant.Tasks`` that damofd serves."""

    face_detection = "face-detection"


class FaceDetectionPipeline:
    """Callable returning the ModelScope dict for one input, or a list of dicts for a list."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector

    def __call__(
        self, inputs: ImageInput | Iterable[ImageInput], **kwargs: Any
    ) -> dict[str, Any] | list[dict[str, Any]]:
        return self.detector.detect_modelscope(inputs, **kwargs)

    def __repr__(self) -> str:
        return f"FaceDetectionPipeline({self.detector!r})"


def pipeline(
    task: str = Tasks.face_detection,
    model: str | os.PathLike[str] | FaceDetector | None = None,
    *,
    score_thr: float = MODELSCOPE_SCORE_THR,
    **kwargs: Any,
) -> FaceDetectionPipeline:
    """Build a face-detection pipeline.

    Args:
        task: must be ``"face-detection"`` (``Tasks.face_detection``).
        model: ModelScope id or folder, zoo name, ``.pth`` or ``.onnx`` path, or a ready
            :class:`FaceDetector`; ``None`` (default): the bundled default model,
            offline.
        score_thr: score threshold (ModelScope's default 0.3).
        **kwargs: passed to :meth:`FaceDetector.from_pretrained` (``weights=``, ``device=``,
            ``protocol=``, ``nms_thr=``, ``max_faces=``...).
    """
    if task != Tasks.face_detection:
        raise ConfigError(f"damofd pipelines serve only task 'face-detection', got {task!r}")
    if model is None:
        # the bundled default model, offline (damofd.models.bundled.DEFAULT_MODEL)
        return FaceDetectionPipeline(
            FaceDetector.from_pretrained(None, score_thr=score_thr, **kwargs)
        )
    if isinstance(model, FaceDetector):
        return FaceDetectionPipeline(model)
    spec = os.fspath(model)
    zoo = resolve_modelscope_id(spec)
    if zoo is not None and "weights" in kwargs:
        # a ModelScope id with explicit weights: build the mapped zoo architecture
        return FaceDetectionPipeline(FaceDetector.from_zoo(zoo, score_thr=score_thr, **kwargs))
    return FaceDetectionPipeline(FaceDetector.from_pretrained(spec, score_thr=score_thr, **kwargs))
