"""Inference: :class:`FaceDetector` (onnxruntime and PyTorch backends), drawing, the
ModelScope-style :func:`pipeline`, and video processing.

Quick start::

    from damofd.inference import FaceDetector

    det = FaceDetector.from_onnx("det_500m.onnx")          # or from_zoo / from_checkpoint / ...
    for face in det.detect("photo.jpg"):
        print(face.box, face.score, face.keypoints)          # original-image pixels, xyxy

Submodules: :mod:`.detector` (API), :mod:`.backends`, :mod:`.preprocess` (protocols),
:mod:`.postprocess` (decoding, NMS), :mod:`.image_io`, :mod:`.results`, :mod:`.draw`,
:mod:`.pipeline`, :mod:`.video`.
"""

from __future__ import annotations

from .backends import OnnxBackend, TorchBackend
from .detector import DEFAULT_SCORE_THR, FaceDetector
from .draw import draw_face_detection_result, draw_faces
from .image_io import load_image
from .pipeline import FaceDetectionPipeline, Tasks, pipeline
from .preprocess import PROTOCOLS, Protocol, get_protocol
from .results import Face, ImageResult

__all__ = [
    "DEFAULT_SCORE_THR",
    "PROTOCOLS",
    "Face",
    "FaceDetectionPipeline",
    "FaceDetector",
    "ImageResult",
    "OnnxBackend",
    "Protocol",
    "Tasks",
    "TorchBackend",
    "draw_face_detection_result",
    "draw_faces",
    "get_protocol",
    "load_image",
    "pipeline",
]
