"""The one table of training options: ``damofd train`` flags, :func:`~damofd.training.api.
build_trainer` keywords and the :class:`~damofd.training.config.TrainConfig` keys they set.

``damofd train`` builds its argument parser from :data:`OPTIONS` (the flags, in help order) and
both it and ``build_trainer`` apply the given values with :func:`apply_options`, in table
order (``--patch-size`` after ``--img-size``; ``gpu_ids`` after ``device``). A value of ``None``
leaves the recipe's setting alone; a switch (``const``) sets its value when true. Rows without
a config key (work dir, resume, ``--set`` …) are handled by the command or ``build_trainer``
themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from damofd.training.config import TrainConfig, patch_config

__all__ = ["OPTIONS", "Option", "apply_options", "cli_values"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Option:
    """One row of :data:`OPTIONS`.

    Attributes:
        flag: the ``damofd train`` flag (``--batch-size``), or ``None`` (``build_trainer`` only).
        key: the dotted config key it sets, or ``None`` when the caller handles the value.
        kwarg: the ``build_trainer`` keyword, or ``None`` (command line only).
        group: the ``--help`` section.
        help, metavar, choices: for ``--help``.
        type: the argparse type by name (``str``, ``int``, ``positive_float``).
        store_true: a flag without a value (given: ``True``; absent: ``None``).
        const: for switches: the config value set when the option is true.
        convert: the given value → the config value (``None``: as given).
        apply: sets the config from the value instead of ``key`` (patch size, GPU ids).
        argparse: further ``add_argument`` keywords for rows without a config key.
    """

    flag: str | None
    key: str | None
    kwarg: str | None = None
    group: str = "run"
    help: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    type: str = "str"
    store_true: bool = False
    const: Any = _UNSET
    convert: Callable[[Any], Any] | None = None
    apply: Callable[[TrainConfig, Any], None] | None = None
    argparse: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def dest(self) -> str | None:
        """The argparse destination of ``flag``."""
        if self.flag is None:
            return None
        return str(self.argparse.get("dest", self.flag.lstrip("-").replace("-", "_")))

    def set(self, cfg: TrainConfig, value: Any) -> None:
        """Apply a given (not ``None``) ``value`` to ``cfg``."""
        if self.apply is not None:
            self.apply(cfg, value)
        elif self.const is not _UNSET:
            if value:
                _set_key(cfg, self._key(), self.const)
        else:
            _set_key(cfg, self._key(), value if self.convert is None else self.convert(value))

    def _key(self) -> str:
        assert self.key is not None, self.flag or self.kwarg
        return self.key


def _set_key(cfg: TrainConfig, key: str, value: Any) -> None:
    *sections, name = key.split(".")
    target: Any = cfg
    for s in sections:
        target = getattr(target, s)
    setattr(target, name, value)


def _patch(cfg: TrainConfig, size: int) -> None:
    patch_config(cfg, size)


def _gpu_ids(cfg: TrainConfig, ids: Any) -> None:
    if ids:
        cfg.device = f"cuda:{int(ids[0])}"


def _minutes(value: float) -> float:
    return value * 60.0


OPTIONS: tuple[Option, ...] = (
    # ---- data ----
    Option(
        "--train",
        "data.train",
        "train_root",
        group="data",
        metavar="DIR",
        help="training set: folder with labelv2.txt + images/ (or a ModelScope split folder, "
        "or a labelv2 file)",
        convert=os.fspath,
    ),
    Option(
        "--train-labels",
        "data.train",
        group="data",
        metavar="FILE",
        help="labelv2 annotation file",
    ),
    Option(
        "--train-images",
        "data.train_images",
        "train_images",
        group="data",
        metavar="DIR",
        help="image folder of --train-labels",
        convert=os.fspath,
    ),
    Option(
        "--val",
        "data.val",
        "val_root",
        group="data",
        metavar="DIR",
        help="validation folder: WIDER split (images/<event>/*.jpg) with --val-gt, or a "
        "labelv2.txt + images/ folder",
        convert=os.fspath,
    ),
    Option(
        "--val-gt",
        "data.val_gt",
        "val_gt",
        group="data",
        metavar="DIR",
        help="folder with the wider_*_val.mat files",
        convert=os.fspath,
    ),
    Option(
        "--batch-size",
        "data.samples_per_gpu",
        group="data",
        type="int",
        metavar="N",
        help="images per GPU/process",
    ),
    Option(
        "--workers",
        "data.workers_per_gpu",
        group="data",
        type="int",
        metavar="N",
        help="data loader workers per process",
    ),
    Option(
        "--img-size",
        "data.img_size",
        group="data",
        type="int",
        metavar="PX",
        help="training input side (640)",
    ),
    Option(
        "--patch-size",
        "data.img_size",
        group="data",
        type="int",
        metavar="PX",
        help="patch training: PX×PX crops with the same face scales as the recipe's img_size "
        "(crop scales × PX/img_size), about 4× cheaper per sample at 320; fine-tune at the "
        "full size afterwards (docs/training.md)",
        apply=_patch,
    ),
    # ---- optimisation ----
    Option(
        "--epochs",
        "total_epochs",
        "total_epochs",
        group="optimisation",
        type="int",
        metavar="N",
        help="total epochs (recipe: 640)",
        convert=int,
    ),
    Option(
        "--lr",
        "optimizer.lr",
        group="optimisation",
        type="positive_float",
        metavar="LR",
        help="learning rate (see below)",
    ),
    Option(
        "--auto-scale-lr",
        "optimizer.auto_scale_lr",
        group="optimisation",
        store_true=True,
        const=True,
        help="linear lr scaling rule",
    ),
    Option(
        "--warmup-iters",
        "lr_config.warmup_iters",
        group="optimisation",
        type="int",
        metavar="N",
        help="linear warm-up iterations",
    ),
    Option(
        "--lr-policy",
        "lr_config.policy",
        group="optimisation",
        choices=("step", "cosine"),
        help="step decay (the recipes) or cosine annealing by iteration (short runs)",
    ),
    Option(
        "--max-iters",
        "max_iters",
        group="optimisation",
        type="int",
        metavar="N",
        help="stop after N iterations",
    ),
    Option(
        "--time-limit",
        "time_limit",
        group="optimisation",
        type="positive_float",
        metavar="MIN",
        help="stop (saving latest.pth) after MIN minutes",
        convert=_minutes,
    ),
    # ---- run ----
    Option(
        "--work-dir",
        None,
        "work_dir",
        metavar="DIR",
        help="output folder",
        argparse=MappingProxyType({"required": True}),
    ),
    Option(
        "--device", "device", "device", metavar="DEV", help="auto (default), cpu, cuda or cuda:N"
    ),
    Option("--amp", "amp", store_true=True, const=True, help="mixed precision (CUDA)"),
    Option("--threads", "cpu_threads", type="int", metavar="N", help="torch CPU threads"),
    Option("--seed", "seed", "seed", type="int", metavar="S", convert=int),
    Option(
        "--deterministic",
        "deterministic",
        "deterministic",
        store_true=True,
        help="deterministic algorithms",
        convert=bool,
    ),
    Option(
        "--resume",
        None,
        "resume_from",
        metavar="FILE",
        help="continue from FILE, or from WORK_DIR/latest.pth when it exists",
        argparse=MappingProxyType({"nargs": "?", "const": True, "default": False}),
    ),
    Option(
        "--force",
        None,
        "overwrite",
        help="start over in a work dir that already holds a run (its checkpoints are replaced)",
        argparse=MappingProxyType({"action": "store_true"}),
    ),
    Option(
        "--load-from",
        "load_from",
        "load_from",
        metavar="W",
        help="fine-tune from weights: .pth, official .onnx, ModelScope folder or id",
    ),
    Option(
        "--no-strict",
        "load_strict",
        store_true=True,
        const=False,
        help="non-strict key matching for W",
    ),
    Option(
        "--freeze-bn",
        "freeze_bn",
        store_true=True,
        const=True,
        help="keep BatchNorm statistics frozen",
    ),
    Option(
        "--sync-bn", "sync_bn", store_true=True, const=True, help="SyncBatchNorm under DDP (CUDA)"
    ),
    Option(
        "--eval-every",
        "evaluation.interval",
        type="int",
        metavar="N",
        help="validate every N epochs (0=off)",
    ),
    Option(
        "--eval-metric",
        "evaluation.metric",
        choices=("easy", "medium", "hard", "mean"),
        help="metric for best.pth",
    ),
    Option(
        "--eval-max-images",
        "evaluation.max_images",
        type="int",
        metavar="N",
        help="validate on N images",
    ),
    Option(
        "--checkpoint-every",
        "checkpoint_config.interval",
        type="int",
        metavar="N",
        help="epoch_{n}.pth every N",
    ),
    Option(
        "--checkpoint-every-iters",
        "checkpoint_config.every_iters",
        type="int",
        metavar="N",
        help="refresh latest.pth every N iterations",
    ),
    Option(
        "--no-progress",
        "log_config.progress",
        store_true=True,
        const=False,
        help="no tqdm progress bar",
    ),
    Option(
        "--set",
        None,
        "overrides",
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optimizer.lr=0.02 (repeatable)",
        argparse=MappingProxyType({"dest": "overrides", "action": "append", "default": []}),
    ),
    Option(
        "--print-config",
        None,
        help="print the resolved config as JSON and exit",
        argparse=MappingProxyType({"action": "store_true"}),
    ),
    # ---- build_trainer only ----
    Option(None, "device", "gpu_ids", apply=_gpu_ids),
    Option(None, "evaluation.interval", "no_validate", const=0),
)


def cli_values(namespace: Any) -> dict[str, Any]:
    """The values of parsed ``damofd train`` arguments by destination; an empty string counts
    as not given."""
    return {k: v for k, v in vars(namespace).items() if not (isinstance(v, str) and v == "")}


def apply_options(
    cfg: TrainConfig, values: Mapping[str, Any], *, names: Literal["cli", "kwarg"]
) -> TrainConfig:
    """Apply ``values`` (by argparse destination for ``names="cli"``, by ``build_trainer``
    keyword for ``names="kwarg"``) to ``cfg`` in place, in table order; ``None`` values and
    absent names are skipped. Not validated here."""
    for opt in OPTIONS:
        name = opt.dest if names == "cli" else opt.kwarg
        if opt.key is None or name is None:
            continue
        value = values.get(name)
        if value is not None:
            opt.set(cfg, value)
    return cfg
