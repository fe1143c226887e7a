"""Build and load detectors: :func:`create_model` by zoo name and/or structure string,
:func:`load_model` for a checkpoint (build the architecture it records, then load it) and
:func:`load_checkpoint` (strict loading whose hints name zoo models).

The names and their metadata are :mod:`damofd.models.zoo` (the registry); the checkpoint file
I/O is :mod:`damofd.models.checkpoint` (a leaf). This is timm's split of ``_registry`` /
``_factory`` / ``_helpers``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from damofd.errors import ConfigError
from damofd.models.checkpoint import (
    ArchitectureNotRecordedError,
    CheckpointError,
    CheckpointSource,
    read_checkpoint,
)
from damofd.models.checkpoint import load_checkpoint as _load_checkpoint
from damofd.models.configs import DetectorConfig, MasterNetConfig, PAFPNConfig, SCRFDHeadConfig
from damofd.models.detector import SCRFD
from damofd.models.zoo import _registry, get_model_info, list_models
from damofd.search.structure import Structure

__all__ = ["create_model", "load_checkpoint", "load_model", "nearest_damofd_template"]


def _vga_backbone_flops(backbone) -> int:
    """mmcv-rule FLOPs (GN counted) of a backbone at 640×480 (exact, scaled count)."""
    from damofd.models.flops import get_model_complexity

    return get_model_complexity(backbone, (640, 480), count_gn=True, method="scaled").flops


@cache
def _zoo_backbone_flops(name: str) -> int:
    from damofd.models.detector import build_backbone

    return _vga_backbone_flops(build_backbone(get_model_info(name).config.backbone))


def nearest_damofd_template(backbone_flops: int) -> str:
    """The non-kps DamoFD zoo model whose backbone FLOPs (640×480) are nearest in log scale."""
    names = list_models("damofd", use_kps=False)
    return min(names, key=lambda n: abs(math.log(_zoo_backbone_flops(n) / max(backbone_flops, 1))))


def create_model(
    name: str | None = None,
    *,
    structure: str | Structure | None = None,
    use_kps: bool | None = None,
    neck: PAFPNConfig | None = None,
    head: SCRFDHeadConfig | None = None,
    checkpoint: str | Path | None = None,
    init: bool = True,
) -> SCRFD:
    """Build a detector by zoo name and/or from a DamoFD structure string.

    * ``create_model("damofd-10g")`` — the zoo architecture;
    * ``create_model(structure=s)`` — MasterNet backbone from ``s``; the neck and head are copied
      from the DamoFD zoo model whose backbone FLOPs at 640×480 are nearest, and the neck's
      ``in_channels`` come from the structure's stage channels;
    * ``create_model("damofd-2.5g", structure=s)`` — the same with an explicit template;
    * ``neck=`` / ``head=`` replace the template's (the head's ``in_channels`` must equal the
      neck's ``out_channels``);
    * ``use_kps``: with a zoo name, selects its ``-kps`` (or plain) sibling when the zoo has one
      (for SCRFD that is the official ``bnkps`` config, whose head also differs: BN, per-stride
      weights); otherwise it only switches the keypoint branch of the head on or off;
    * ``checkpoint``: an mmdet/damofd checkpoint loaded with strict key matching;
    * ``init``: apply the training-from-scratch initialisation (default).
    """
    backbone_module = None
    if structure is None:
        if name is None:
            raise ConfigError("create_model needs a zoo name or a structure")
        info = get_model_info(name)
        config = info.config
        model_name: str | None = info.name
        if neck is not None or head is not None:
            config = DetectorConfig(config.backbone, neck or config.neck, head or config.head)
            model_name = None
    else:
        from damofd.models.detector import build_backbone

        s = structure if isinstance(structure, Structure) else Structure.parse(structure)
        bb_cfg = MasterNetConfig(s.format())
        backbone_module = build_backbone(bb_cfg)
        if name is None:
            template = get_model_info(nearest_damofd_template(_vga_backbone_flops(backbone_module)))
        else:
            template = get_model_info(name)
        stage = tuple(int(c) for c in backbone_module.stage_channels)
        tneck = neck or template.config.neck
        if len(stage) < tneck.start_level + tneck.num_outs:
            strides = ", ".join(str(int(x)) for x in backbone_module.out_strides) or "none"
            raise ConfigError(
                f"a detector backbone needs at least 5 blocks (stem + 4 stages) whose outputs "
                f"reach strides 4, 8, 16 and 32; the structure has {len(s)} block(s) with stage "
                f"outputs at strides {strides}: {s.format()}"
            )
        neck_cfg = dataclasses.replace(tneck, in_channels=stage) if neck is None else tneck
        head_cfg = head or template.config.head
        config = DetectorConfig(bb_cfg, neck_cfg, head_cfg)
        model_name = None
    if use_kps is not None:
        if model_name is not None and use_kps != config.use_kps:
            kps_name = (model_name + "-kps") if use_kps else model_name.removesuffix("-kps")
            model_name = kps_name if kps_name in _registry() else None
            if model_name is not None:
                config = _registry()[model_name].config
            else:
                config = config.with_kps(use_kps)
        else:
            config = config.with_kps(use_kps)
    model = SCRFD(config, init=init, name=model_name, backbone=backbone_module)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


# --------------------------------------------------------------------------------------------
# loading (build + load)
# --------------------------------------------------------------------------------------------
def _kps_sibling(name: str, use_kps: bool) -> str | None:
    """The zoo model like ``name`` with (``use_kps``) or without keypoints, if the zoo has it."""
    other = name + "-kps" if use_kps else name.removesuffix("-kps")
    return other if other != name and other in _registry() else None


def load_checkpoint(
    model: nn.Module,
    source: CheckpointSource,
    *,
    strict: bool = True,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """:func:`damofd.models.checkpoint.load_checkpoint` whose key-mismatch hint names the zoo
    model with (or without) keypoints when ``model`` carries a zoo name.

    Returns the checkpoint's ``meta`` dict; raises :class:`CheckpointError` on a mismatch.
    """
    return _load_checkpoint(
        model, source, strict=strict, trust_pickle=trust_pickle, kps_sibling=_kps_sibling
    )


def load_model(
    source: str | os.PathLike[str], *, name: str | None = None, trust_pickle: bool = False
) -> SCRFD:
    """Build a detector for a checkpoint and load it strictly.

    The architecture comes from ``name`` (a zoo name) if given, else from the config a damofd
    checkpoint records in its meta (``damofd_config``); an official mmdet checkpoint has no such
    record, so pass ``name`` for those (else :class:`ArchitectureNotRecordedError`).
    """
    obj = read_checkpoint(source, trust_pickle=trust_pickle)
    if name is not None:
        model = create_model(name, init=False)
    else:
        meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
        cfg = meta.get("damofd_config") if meta else None
        if cfg is None:
            raise ArchitectureNotRecordedError(str(source))
        model = SCRFD(DetectorConfig.from_dict(cfg), init=False, name=meta.get("model_name"))
    try:
        load_checkpoint(model, obj if "state_dict" in obj else {"state_dict": obj})
    except CheckpointError as e:
        raise CheckpointError(f"{str(source)!r}: {e}") from None
    return model
