"""Training data: labelv2 annotations, converters, checks, augmentation and the dataset.

Public API (see docs/data.md):

* :mod:`damofd.data.labelv2` — :class:`ImageAnnotation`, :func:`read_labelv2`,
  :func:`scan_labelv2`, :func:`write_labelv2`, :data:`KEYPOINT_FLIP_ORDER`.
* :mod:`damofd.data.convert` — WIDER txt / WIDER .mat / RetinaFace label.txt → labelv2.
* :mod:`damofd.data.check` — :func:`check_labelv2` (every malformed line and missing image).
* :mod:`damofd.data.layout` — :func:`resolve_dataset` (file, folder or ModelScope split).
* :mod:`damofd.data.transforms` — :class:`AugmentConfig`, :class:`TrainTransform` and the
  individual steps (RandomSquareCrop, resize, flip, PhotoMetricDistortion, normalise).
* :mod:`damofd.data.dataset` — :class:`WiderFaceDataset`, :func:`collate_batch`.
* :mod:`damofd.data.sampler` — :class:`GroupSampler` (aspect-ratio groups, distributed).
"""

from damofd._lazy import lazy_attributes
from damofd.data.check import CheckReport, check_labelv2
from damofd.data.convert import convert
from damofd.data.imagesize import read_image_size
from damofd.data.labelv2 import (
    KEYPOINT_FLIP_ORDER,
    NUM_KEYPOINTS,
    ImageAnnotation,
    LabelIssue,
    format_labelv2,
    read_labelv2,
    scan_labelv2,
    write_labelv2,
)
from damofd.data.layout import DatasetPaths, resolve_dataset
from damofd.data.transforms import AugmentConfig, TrainSample, TrainTransform

# torch-dependent names are imported on first use, so `damofd data check/convert` stay light
_LAZY = {
    "WiderFaceDataset": "damofd.data.dataset",
    "collate_batch": "damofd.data.dataset",
    "load_image_bgr": "damofd.data.dataset",
    "GroupSampler": "damofd.data.sampler",
}


__all__ = [
    "KEYPOINT_FLIP_ORDER",
    "NUM_KEYPOINTS",
    "AugmentConfig",
    "CheckReport",
    "DatasetPaths",
    "GroupSampler",
    "ImageAnnotation",
    "LabelIssue",
    "TrainSample",
    "TrainTransform",
    "WiderFaceDataset",
    "check_labelv2",
    "collate_batch",
    "convert",
    "format_labelv2",
    "load_image_bgr",
    "read_image_size",
    "read_labelv2",
    "resolve_dataset",
    "scan_labelv2",
    "write_labelv2",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
