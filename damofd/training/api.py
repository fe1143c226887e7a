"""Python entry point in the spirit of ModelScope's ``build_trainer`` (reference spec §8.2).

>>> from damofd import build_trainer
>>> trainer = build_trainer(
...     cfg_file="damofd-0.5g",                 # zoo name, our .json/.py, or DamoFD_lms.py
...     work_dir="runs/damofd_0.5g",
...     train_root="data/retinaface/train/",    # labelv2.txt + images/
...     val_root="data/retinaface/val/",        # labelv2.txt + images/ (or WIDER_val + val_gt)
...     total_epochs=1,
...     cfg_modify_fn=lambda cfg: cfg,          # edit the TrainConfig (mmcv-style names work)
... )
>>> trainer.train()

The configuration object handed to ``cfg_modify_fn`` is a :class:`~damofd.training.config.
TrainConfig`, whose sections carry the mmcv names, so the seed's example function
(``cfg.checkpoint_config.interval = 1``, ``cfg.log_config.interval = 10``,
``cfg.evaluation.interval = 1``, ``cfg.data.workers_per_gpu = 1``, ``cfg.data.samples_per_gpu =
4``) works as written. The config is type-checked after the function returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from damofd.errors import ConfigError
from damofd.training.config import TrainConfig, apply_mapping, recipe
from damofd.training.config_files import load_config_file
from damofd.training.options import apply_options
from damofd.training.trainer import Trainer, TrainerHook

__all__ = ["build_trainer", "resolve_config"]


def resolve_config(
    cfg_file: str | os.PathLike[str] | TrainConfig | None, *, structure: str | None = None
) -> TrainConfig:
    """A :class:`TrainConfig` from a zoo name, a ModelScope model id (its zoo model's recipe), a
    config file (``.json``, ``.py``, an mmcv ``DamoFD_lms.py``), a ModelScope model folder
    holding ``DamoFD_lms.py``, or a TrainConfig (copied). With ``structure`` and no
    ``cfg_file``, the recipe of the DamoFD model whose backbone budget is nearest (the one
    ``create_model(structure=...)`` takes the neck and head from) is used."""
    if isinstance(cfg_file, TrainConfig):
        cfg = cfg_file.copy()
    elif cfg_file is None:
        if not structure:
            raise ConfigError("give a model name or config file (or a structure string)")
        from damofd.models.factory import create_model

        m = create_model(structure=structure, init=False)
        from damofd.training.config_files import template_name

        cfg = recipe(template_name(m.config))
    else:
        text = os.fspath(cfg_file)
        p = Path(text)
        if p.is_dir() and (p / "DamoFD_lms.py").is_file():
            cfg = load_config_file(p / "DamoFD_lms.py")
        elif p.is_file():
            cfg = load_config_file(p)
        elif p.suffix.lower() in (".json", ".py"):
            raise FileNotFoundError(f"config file {text!r} does not exist")
        else:
            from damofd.models.modelscope import MODELSCOPE_MODELS

            # a ModelScope model id selects the recipe of the zoo model it serves
            cfg = recipe(MODELSCOPE_MODELS.get(text, text))
    if structure:
        cfg.structure = structure
        cfg.detector = None
    return cfg.validate()


def build_trainer(
    cfg_file: str | os.PathLike[str] | TrainConfig | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    train_root: str | os.PathLike[str] | None = None,
    val_root: str | os.PathLike[str] | None = None,
    total_epochs: int | None = None,
    cfg_modify_fn: Callable[[TrainConfig], TrainConfig | None] | None = None,
    *,
    train_images: str | os.PathLike[str] | None = None,
    val_gt: str | os.PathLike[str] | None = None,
    structure: str | None = None,
    resume_from: str | os.PathLike[str] | bool | None = None,
    load_from: str | None = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    device: str | None = None,
    gpu_ids: Sequence[int] | None = None,
    launcher: str | None = None,
    no_validate: bool = False,
    overrides: Mapping[str, Any] | None = None,
    hooks: Sequence[TrainerHook] = (),
    name: str | None = None,
    overwrite: bool = False,
) -> Trainer:
    """Build a :class:`~damofd.training.trainer.Trainer` (call ``.train()`` on it).

    Args mirror ModelScope's ``face-detection-scrfd`` trainer:
        cfg_file: zoo name, config file (ours or an mmcv ``DamoFD_lms.py``), a ModelScope model
            folder, or a :class:`TrainConfig`.
        work_dir: output folder (default ``./work_dirs/<config name>``).
        train_root: training set (labelv2 file, ``labelv2.txt`` + ``images/`` folder, or a
            ModelScope split folder); ``train_images`` when the images live elsewhere.
        val_root: validation folder (WIDER split with ``val_gt``, or a labelv2 folder).
        total_epochs: epochs (the lr steps keep their fractions of the run).
        cfg_modify_fn: ``fn(cfg) -> cfg`` applied last (may also modify in place and return None).
        resume_from: checkpoint to resume (``True``: ``work_dir/latest.pth`` if present).
        load_from: weights to fine-tune from (see :func:`damofd.training.trainer.load_pretrained`).
        seed, deterministic, device: as the config keys.
        gpu_ids: single-process GPU choice (the first id is used); multi-GPU runs use torchrun.
        launcher: ``"none"`` or ``"pytorch"`` (torchrun; detected from the environment anyway).
        no_validate: disable periodic evaluation.
        overrides: extra ``{dotted key: value}`` settings (applied before ``cfg_modify_fn``).
        name: accepted for ModelScope compatibility (``Trainers.face_detection_scrfd``).
        overwrite: start over in a work dir that already holds ``latest.pth`` (refused
            otherwise unless ``resume_from`` is given).

    The keywords that set config keys are rows of :data:`damofd.training.options.OPTIONS`, the
    table ``damofd train`` reads its flags from (``train_root`` = ``--train``, ``total_epochs``
    = ``--epochs`` …).
    """
    if name not in (None, "face-detection-scrfd"):
        raise ConfigError(f"build_trainer: unknown trainer name {name!r}")
    if launcher not in (None, "none", "pytorch"):
        raise ConfigError(f"build_trainer: launcher {launcher!r} (use 'pytorch' via torchrun)")
    cfg = resolve_config(cfg_file, structure=structure)
    values = {
        "train_root": train_root,
        "train_images": train_images,
        "val_root": val_root,
        "val_gt": val_gt,
        "total_epochs": total_epochs,
        "seed": seed,
        "deterministic": deterministic,
        "device": device,
        "gpu_ids": gpu_ids,
        "load_from": load_from,
        "no_validate": no_validate,
    }
    apply_options(cfg, values, names="kwarg")
    if overrides:
        apply_mapping(cfg, overrides, where="overrides")
    if cfg_modify_fn is not None:
        cfg = _modified(cfg, cfg_modify_fn)
    cfg.validate()
    if work_dir is None:
        stem = Path(os.fspath(cfg_file)).stem if cfg_file is not None else "structure"
        if isinstance(cfg_file, TrainConfig):
            stem = cfg.model
        work_dir = Path("work_dirs") / stem
    resume: bool | str | os.PathLike[str] = False
    if resume_from is True:
        resume = True
    elif resume_from:
        resume = resume_from
    return Trainer(cfg, work_dir, resume=resume, hooks=hooks, overwrite=overwrite)


def _modified(cfg: TrainConfig, fn: Callable[[TrainConfig], TrainConfig | None]) -> TrainConfig:
    """``fn(cfg)``: the TrainConfig it returns, or ``cfg`` (modified in place) for None."""
    out = fn(cfg)
    if out is None:
        return cfg
    if not isinstance(out, TrainConfig):
        raise ConfigError(
            f"cfg_modify_fn must return the TrainConfig (or None), got {type(out).__name__}"
        )
    return out
