"""damofd.training: ATSS assignment, the SCRFD losses, typed recipes and the trainer.

* :mod:`~damofd.training.assigner`, :mod:`~damofd.training.losses`,
  :mod:`~damofd.training.criterion` — ATSS, QFL / DIoU / smooth-L1, :class:`SCRFDCriterion`;
* :mod:`~damofd.training.config` — :class:`TrainConfig` and the per-model :func:`recipe`;
* :mod:`~damofd.training.schedule` — warm-up + step learning-rate schedule;
* :mod:`~damofd.training.trainer` — :class:`Trainer` (single process or torchrun DDP, resumable),
  a ladder ``train → epoch → iteration``; :mod:`~damofd.training.hooks` — :class:`TrainerHook`
  and the default logging / validation / checkpoint hooks; :mod:`~damofd.training.builders` —
  one builder per component; :mod:`~damofd.training.state` — checkpoints and RNG states;
* :mod:`~damofd.training.options` — the table of ``damofd train`` flags / ``build_trainer``
  keywords and the config keys they set;
* :mod:`~damofd.training.validation` — periodic WIDER evaluation;
* :mod:`~damofd.training.api` — :func:`build_trainer` (ModelScope-style entry point).

Names are resolved lazily so ``import damofd.training`` stays cheap.
"""

from __future__ import annotations

from damofd._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "ATSSAssigner": "damofd.training.assigner",
    "SCRFDCriterion": "damofd.training.criterion",
    "CriterionConfig": "damofd.training.criterion",
    "TrainConfig": "damofd.training.config",
    "recipe": "damofd.training.config",
    "list_recipes": "damofd.training.config",
    "load_config_file": "damofd.training.config_files",
    "apply_overrides": "damofd.training.config",
    "Trainer": "damofd.training.trainer",
    "TrainerHook": "damofd.training.hooks",
    "TrainResult": "damofd.training.trainer",
    "TrainingDivergedError": "damofd.training.trainer",
    "Validator": "damofd.training.validation",
    "build_trainer": "damofd.training.api",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
