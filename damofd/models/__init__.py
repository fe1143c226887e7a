"""damofd.models: SCRFD-style detectors (backbone → PAFPN → SCRFDHead), the model zoo, the
mmcv-rule FLOPs counter, mmdet-layout checkpoints and BN folding.

Shared contract (used by training, inference and export):

* :func:`create_model` — a :class:`SCRFD` by zoo name (:func:`list_models`) and/or from a DamoFD
  structure string;
* ``cls, bbox, kps = model(x)`` for a normalised RGB (B, 3, H, W) batch, H and W multiples of 32;
* :meth:`SCRFD.forward_export` — the flattened layout of the official batched ONNX export;
* :meth:`SCRFD.fuse` — fold BatchNorm into convs for inference.

Modules: :mod:`~damofd.models.configs` (typed configs), :mod:`~damofd.models.backbones`,
:mod:`~damofd.models.necks`, :mod:`~damofd.models.heads`, :mod:`~damofd.models.detector`,
:mod:`~damofd.models.zoo` (names and metadata), :mod:`~damofd.models.factory` (build and load),
:mod:`~damofd.models.flops`, :mod:`~damofd.models.checkpoint` (file I/O, a leaf),
:mod:`~damofd.models.fuse`, :mod:`~damofd.models.mmcv_config` (mmcv config files),
:mod:`~damofd.models.modelscope` (ModelScope folders and hub).
"""

from damofd.models.checkpoint import CheckpointError, save_checkpoint
from damofd.models.configs import (
    DetectorConfig,
    MasterNetConfig,
    MobileNetV1Config,
    PAFPNConfig,
    ResNetV1eConfig,
    SCRFDHeadConfig,
)
from damofd.models.detector import SCRFD, build_backbone, check_input_size, pad_to_multiple
from damofd.models.factory import create_model, load_checkpoint, load_model
from damofd.models.flops import Complexity, count_params, get_model_complexity
from damofd.models.zoo import ModelInfo, get_config, get_model_info, list_models

__all__ = [
    "SCRFD",
    "CheckpointError",
    "Complexity",
    "DetectorConfig",
    "MasterNetConfig",
    "MobileNetV1Config",
    "ModelInfo",
    "PAFPNConfig",
    "ResNetV1eConfig",
    "SCRFDHeadConfig",
    "build_backbone",
    "check_input_size",
    "count_params",
    "create_model",
    "get_config",
    "get_model_complexity",
    "get_model_info",
    "list_models",
    "load_checkpoint",
    "load_model",
    "pad_to_multiple",
    "save_checkpoint",
]
