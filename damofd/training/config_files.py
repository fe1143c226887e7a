"""Training config files: JSON, plain Python assignments, and official mmcv/mmdet configs.

:func:`load_config_file` reads a file into a :class:`~damofd.training.config.TrainConfig`;
:func:`config_from_mmcv_dict` translates an official SCRFD/DamoFD mmcv config (ModelScope's
``DamoFD_lms.py``) key by key; :func:`template_name` names the zoo recipe a detector config uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from damofd import typed_config
from damofd.errors import ConfigError
from damofd.io import read_json_object
from damofd.training.config import _WHAT, TrainConfig, apply_mapping, recipe

__all__ = ["config_from_mmcv_dict", "load_config_file", "template_name"]


def load_config_file(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a training config file.

    * ``.json``: a nested or dotted dict of :class:`TrainConfig` keys. A top-level ``"model"``
      (zoo name) selects the recipe that the other keys modify.
    * ``.py``: plain assignments (``model = "damofd-10g"``, ``optimizer = dict(lr=0.02)``),
      evaluated without executing the file; helper variables must start with ``_`` (any other
      name must be a config key, so a typo is an error, not silently ignored). If the file is
      an official mmcv/mmdet config (its ``model`` is a ``dict(type='SCRFD', ...)``, e.g.
      ModelScope's ``DamoFD_lms.py``) it is translated with :func:`config_from_mmcv_dict`.

    Errors name the file and the key.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    where = str(p)
    if p.suffix.lower() == ".json":
        return _from_plain(read_json_object(p, ConfigError), where)
    if p.suffix.lower() == ".py":
        from damofd.models.mmcv_config import read_mmcv_config

        raw = read_mmcv_config(p)
        skipped = raw.pop("__skipped__", {})
        if isinstance(raw.get("model"), Mapping):
            return config_from_mmcv_dict(raw, where=where)
        raw = {k: v for k, v in raw.items() if not k.startswith("_")}  # helper variables
        skipped = {k: v for k, v in skipped.items() if not k.startswith("_")}
        if skipped:
            first = next(iter(skipped.values()))
            raise ConfigError(f"{where}: cannot evaluate {', '.join(skipped)} ({first})")
        return _from_plain(raw, where)
    raise ConfigError(f"{where}: unsupported config file type (use .json or .py)")


def _from_plain(raw: Mapping[str, Any], where: str) -> TrainConfig:
    raw = dict(raw)
    model = raw.pop("model", None)
    structure = raw.get("structure")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{where}: config key 'model' must be a zoo name string")
    if model is None and structure:
        from damofd.models.factory import create_model

        m = create_model(structure=structure, init=False)
        cfg = recipe(template_name(m.config))
    else:
        cfg = recipe(model or TrainConfig.model)
    apply_mapping(cfg, raw, where=where)
    return cfg.validate()


def template_name(detector_config: Any) -> str:
    """Zoo name whose recipe a detector config should use: an exact zoo match, else the DamoFD
    model of the nearest backbone budget (the one ``create_model(structure=...)`` copies the neck
    and head from), with ``-kps`` when the config has keypoints. ``damofd train --print-config``
    and ``damofd info`` name it for a searched structure."""
    from damofd.models.factory import nearest_damofd_template
    from damofd.models.zoo import get_config, list_models

    for name in list_models():
        if get_config(name) == detector_config:
            return name
    from damofd.models.detector import build_backbone
    from damofd.models.factory import _vga_backbone_flops

    name = nearest_damofd_template(_vga_backbone_flops(build_backbone(detector_config.backbone)))
    return name + ("-kps" if detector_config.use_kps else "")


def _pipeline_step(pipeline: Any, type_name: str) -> Mapping[str, Any] | None:
    if not isinstance(pipeline, (list, tuple)):
        return None
    for step in pipeline:
        if isinstance(step, Mapping) and step.get("type") == type_name:
            return step
    return None


def _read_pipeline(
    cfg: TrainConfig, pipeline: Any, put: Callable[[str, str, Any], None], where: str
) -> None:
    """The augmentation settings of an mmcv train pipeline (crop, resize, flip, photometric)."""
    crop = _pipeline_step(pipeline, "RandomSquareCrop")
    if crop is not None:
        put("data.crop_choice", "RandomSquareCrop.crop_choice", crop.get("crop_choice"))
        put(
            "data.bbox_clip_border",
            "RandomSquareCrop.bbox_clip_border",
            crop.get("bbox_clip_border"),
        )
    resize = _pipeline_step(pipeline, "Resize") or _pipeline_step(pipeline, "ResizeV2")
    if resize is not None:
        scale = resize.get("img_scale")
        if isinstance(scale, (list, tuple)) and scale and isinstance(scale[0], (list, tuple)):
            scale = scale[0]
        if isinstance(scale, (list, tuple)) and len(scale) == 2:
            if int(scale[0]) != int(scale[1]):
                raise ConfigError(f"{where}: Resize img_scale {list(scale)} is not square")
            put("data.img_size", "Resize.img_scale", int(scale[0]))
        put("data.bbox_clip_border", "Resize.bbox_clip_border", resize.get("bbox_clip_border"))
    flip = _pipeline_step(pipeline, "RandomFlip") or _pipeline_step(pipeline, "RandomFlipV2")
    if flip is not None:
        put("data.flip_ratio", "RandomFlip.flip_ratio", flip.get("flip_ratio"))
    cfg.data.photometric = _pipeline_step(pipeline, "PhotoMetricDistortion") is not None or (
        pipeline is None
    )


def config_from_mmcv_dict(raw: Mapping[str, Any], *, where: str = "config") -> TrainConfig:
    """Translate an official mmcv/mmdet SCRFD config namespace (as read by
    :func:`damofd.models.mmcv_config.read_mmcv_config`) into a :class:`TrainConfig`.

    Read: ``model`` (→ detector), ``optimizer`` (lr, momentum, weight_decay), ``lr_config``
    (warmup_iters, warmup_ratio, step), ``total_epochs`` (or ``runner.max_epochs``),
    ``data.samples_per_gpu`` / ``workers_per_gpu``, the train pipeline's ``RandomSquareCrop``
    (crop_choice), ``Resize`` (img_scale, bbox_clip_border) and ``RandomFlip`` (flip_ratio),
    ``checkpoint_config.interval``, ``evaluation.interval``, ``log_config.interval``. Anything
    else (dataset paths, hooks) is ignored; a value of the wrong type raises ConfigError naming
    the mmcv key.
    """
    from damofd.models.mmcv_config import config_from_mmcv

    det = config_from_mmcv(raw, where=where)
    cfg = recipe(template_name(det))
    cfg.detector = det.to_dict()

    def get(path: str) -> Any:
        cur: Any = raw
        for part in path.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return None
            cur = cur[part]
        return cur

    def put(ours: str, theirs: str, value: Any) -> None:
        if value is None:
            return
        try:
            typed_config.set_path(cfg, ours, value, what=_WHAT)
        except ConfigError as e:
            raise ConfigError(f"{where}: mmcv key {theirs!r}: {e}") from None

    put("optimizer.lr", "optimizer.lr", get("optimizer.lr"))
    put("optimizer.momentum", "optimizer.momentum", get("optimizer.momentum"))
    put("optimizer.weight_decay", "optimizer.weight_decay", get("optimizer.weight_decay"))
    put("lr_config.warmup_iters", "lr_config.warmup_iters", get("lr_config.warmup_iters"))
    put("lr_config.warmup_ratio", "lr_config.warmup_ratio", get("lr_config.warmup_ratio"))
    step = get("lr_config.step")
    if isinstance(step, (int, float)):
        step = [step]
    put("lr_config.step", "lr_config.step", step)
    put("lr_config.gamma", "lr_config.gamma", get("lr_config.gamma"))
    epochs = get("total_epochs") or get("runner.max_epochs")
    put("total_epochs", "total_epochs", epochs)
    if epochs is not None:
        cfg.lr_config.step_ref_epochs = cfg.total_epochs
    spg = get("data.samples_per_gpu")
    put("data.samples_per_gpu", "data.samples_per_gpu", spg)
    if spg is not None:
        cfg.optimizer.base_batch_size = 4 * cfg.data.samples_per_gpu
    put("data.workers_per_gpu", "data.workers_per_gpu", get("data.workers_per_gpu"))
    _read_pipeline(cfg, get("data.train.pipeline") or raw.get("train_pipeline"), put, where)
    ck = "checkpoint_config.interval"
    put(ck, ck, get(ck))
    put("evaluation.interval", "evaluation.interval", get("evaluation.interval"))
    put("log_config.interval", "log_config.interval", get("log_config.interval"))
    return cfg.validate()
