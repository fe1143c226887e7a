"""Typed training configuration: the official SCRFD / DamoFD recipes as dataclasses.

A :class:`TrainConfig` is a tree of small mutable dataclasses whose section names follow the
mmcv/mmdet configs (``optimizer``, ``lr_config``, ``total_epochs``, ``data``,
``checkpoint_config``, ``evaluation``, ``log_config``), so a ModelScope ``cfg_modify_fn`` written
for the official trainer (``cfg.checkpoint_config.interval = 1``, ``cfg.data.samples_per_gpu =
4`` …) works unchanged on it. :meth:`TrainConfig.validate` type-checks the whole tree after such
edits.

Where a configuration comes from:

* :func:`recipe` — the reference recipe of a zoo model (reference spec §5.4, scrfd-spec §4), see
  the table in docs/training.md;
* :func:`damofd.training.config_files.load_config_file` — our JSON file (nested sections or
  dotted keys), a small Python file of plain assignments (read by an ``ast`` evaluator, never
  executed), or an official mmcv config such as ModelScope's ``DamoFD_lms.py`` (translated
  field by field);
* :func:`apply_overrides` — ``key=value`` strings with dotted paths (``--set
  optimizer.lr=0.02``), converted to the field's type; an unknown key or a bad value raises
  :class:`~damofd.errors.ConfigError` naming the key.

Learning-rate semantics (as the official configs): ``optimizer.lr`` is the rate for a global
batch of ``optimizer.base_batch_size`` images (4 GPUs × 8 = 32; 64 for SCRFD-500M-KPS, which uses
16 per GPU). It is used verbatim unless ``optimizer.auto_scale_lr`` is set, in which case the
linear-scaling rule ``lr · (world_size · samples_per_gpu) / base_batch_size`` applies.

Schedule semantics: ``lr_config.step`` are epochs (0-based epoch index at which the decay takes
effect, mmcv ``StepLrUpdaterHook``) of a ``lr_config.step_ref_epochs``-epoch schedule (640). When
``total_epochs`` differs, the steps are scaled to keep the same fractions of the run
(440/640 = 68.75 %, 544/640 = 85 %), rounded half up; ``step_ref_epochs = 0`` uses them verbatim.
Warm-up is counted in iterations and is never scaled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from damofd import typed_config
from damofd.constants import BACKBONE_INIT_SCHEMES as INIT_SCHEMES
from damofd.constants import WIDER_SCORE_THR
from damofd.errors import ConfigError
from damofd.typed_config import parse_override

if TYPE_CHECKING:
    from damofd.data.transforms import AugmentConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "LrConfig",
    "OptimizerConfig",
    "TrainConfig",
    "apply_overrides",
    "list_recipes",
    "parse_override",
    "patch_config",
    "recipe",
    "scaled_steps",
]

REFERENCE_EPOCHS = 640
REFERENCE_STEPS = (440, 544)
EVAL_METRICS = ("easy", "medium", "hard", "mean")
_WHAT = "the training config"


# ----------------------------------------------------------------------------------------------
# sections


@dataclass
class OptimizerConfig:
    """SGD settings (reference spec §5.4: momentum 0.9, weight decay 5e-4 on every parameter,
    no gradient clipping).

    Attributes:
        lr: learning rate for a global batch of ``base_batch_size`` images.
        momentum, weight_decay: SGD hyper-parameters (weight decay on all parameters).
        base_batch_size: global batch ``lr`` was tuned for (official: 4 GPUs × samples_per_gpu).
        auto_scale_lr: apply the linear-scaling rule to the actual global batch.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    base_batch_size: int = 32
    auto_scale_lr: bool = False


@dataclass
class LrConfig:
    """Linear warm-up then step decay (mmcv ``policy='step', warmup='linear'``), or cosine
    annealing by iteration (``policy='cosine'``, for short runs).

    Attributes:
        policy: ``step`` (the official recipes) or ``cosine``.
        warmup_iters: iterations of linear warm-up (0 = none).
        warmup_ratio: the warm-up starts at ``warmup_ratio · lr``.
        warmup_max_fraction: cap the warm-up at this fraction of the run's iterations (0 = no
            cap), so a short run does not spend itself warming up; the official 640-epoch runs
            are far below the default cap.
        step: epochs at which the rate is multiplied by ``gamma`` (of a ``step_ref_epochs`` run).
        gamma: decay factor.
        step_ref_epochs: run length ``step`` was written for (0: use ``step`` verbatim).
        min_lr_ratio: cosine policy: the rate at the end of the run, as a fraction of ``lr``.
    """

    policy: str = "step"
    warmup_iters: int = 1500
    warmup_ratio: float = 0.001
    warmup_max_fraction: float = 0.25
    step: tuple[int, ...] = REFERENCE_STEPS
    gamma: float = 0.1
    step_ref_epochs: int = REFERENCE_EPOCHS
    min_lr_ratio: float = 0.01

    def capped_warmup(self, total_iters: int) -> int:
        """Warm-up iterations of a run of ``total_iters`` iterations (after the cap)."""
        if self.warmup_max_fraction <= 0 or total_iters <= 0:
            return self.warmup_iters
        return min(self.warmup_iters, int(self.warmup_max_fraction * total_iters))


@dataclass
class DataConfig:
    """Data paths, loader and augmentation settings.

    Attributes:
        train: training set — a labelv2 file, a folder with ``labelv2.txt`` + ``images/``, or a
            ModelScope split folder (:func:`damofd.data.resolve_dataset`).
        train_images: image folder when it is not ``images/`` next to the labels.
        val: validation folder — a WIDER split folder (``images/<event>/*.jpg`` or the events
            directly; evaluated with ``val_gt``), or a labelv2 dataset folder.
        val_gt: folder with the official ``wider_*_val.mat`` files.
        samples_per_gpu: batch size per process.
        workers_per_gpu: DataLoader worker processes per process (0 = load in the main process).
        img_size: training input side in pixels (the square crop is resized to it; 640).
        crop_choice: RandomSquareCrop scales (multiples of the image's short side).
        bbox_clip_border: clip boxes and keypoints to the crop (mmdet ``bbox_clip_border``).
        flip_ratio: horizontal flip probability.
        photometric: apply PhotoMetricDistortion.
        shuffle: shuffle the sample order (aspect-group sampler); False keeps the file order.
    """

    train: str | None = None
    train_images: str | None = None
    val: str | None = None
    val_gt: str | None = None
    samples_per_gpu: int = 8
    workers_per_gpu: int = 3
    img_size: int = 640
    crop_choice: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
    bbox_clip_border: bool = True
    flip_ratio: float = 0.5
    photometric: bool = True
    shuffle: bool = True

    def augment_config(self) -> AugmentConfig:
        """The :class:`damofd.data.AugmentConfig` these settings describe."""
        from damofd.data.transforms import AugmentConfig

        return AugmentConfig(
            size=self.img_size,
            crop_choice=tuple(self.crop_choice),
            clip_border=self.bbox_clip_border,
            flip_ratio=self.flip_ratio,
            photometric=self.photometric,
        )


@dataclass
class CheckpointConfig:
    """Checkpointing.

    Attributes:
        interval: write ``epoch_{n}.pth`` every ``interval`` epochs (and after the last epoch);
            0 = only ``latest.pth``.
        every_iters: also refresh ``latest.pth`` every this many iterations (0 = only at epoch
            ends), so a killed run loses at most that many iterations.
        save_optimizer: store the optimizer state (needed for an exact resume).
    """

    interval: int = 80
    every_iters: int = 0
    save_optimizer: bool = True


@dataclass
class EvalConfig:
    """Periodic validation (WIDER protocol on ``data.val``).

    Attributes:
        interval: evaluate every this many epochs (0 = never).
        metric: AP used to pick ``best.pth``: ``easy``, ``medium``, ``hard`` or ``mean``.
        max_images: evaluate on at most this many val images (evenly spaced; 0 = all). The WIDER
            protocol then runs in subset mode.
        score_thr: detection score threshold (the protocol's 0.02).
        protocol: test-time protocol (``vga`` = the published one).
    """

    interval: int = 80
    metric: str = "hard"
    max_images: int = 0
    score_thr: float = WIDER_SCORE_THR
    protocol: str = "vga"


@dataclass
class LogConfig:
    """Logging: a JSON line every ``interval`` iterations in ``work_dir/log.jsonl``, and a tqdm
    progress bar (rank 0) when ``progress``."""

    interval: int = 10
    progress: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs (see the module docstring).

    Attributes:
        model: zoo name (``damofd-0.5g``, ``scrfd-2.5g-kps`` …); ignored when ``structure`` or
            ``detector`` is set except as the recipe/template it came from.
        structure: DamoFD backbone structure string (a searched backbone); neck and head come
            from the zoo model of the nearest budget (``create_model(structure=...)``).
        detector: an explicit detector config as a dict (``DetectorConfig.to_dict()``), e.g.
            translated from an mmcv config file.
        total_epochs: epochs to train.
        seed: seed of the data order, the augmentation and the weight initialisation.
        deterministic: deterministic algorithms (bitwise-reproducible on CPU; slower on GPU).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision (``torch.autocast`` fp16 + ``GradScaler``), CUDA only.
        cpu_threads: torch intra-op threads on CPU (0 = torch default).
        channels_last: NHWC memory format for the network (``None``: on for CPU training,
            where oneDNN runs the convolutions about 1.6× faster in it; off on CUDA).
        load_from: weights to fine-tune from (``.pth``, an official ``.onnx``, a ModelScope id
            or folder); the epoch counter starts at 0.
        load_strict: strict key matching for ``load_from``.
        freeze_bn: keep BatchNorm layers in eval mode (statistics and affine frozen).
        sync_bn: convert BatchNorm to SyncBatchNorm under DDP (CUDA).
        max_iters: stop after this many iterations in total (0 = no limit), saving latest.pth.
        time_limit: stop (saving latest.pth) after this many seconds of this session (0 = none).
        backbone_init: conv init of a from-scratch DamoFD backbone: ``official`` (the reference
            xavier gain 3.26) or ``kaiming`` (fan_out, the scale of SCRFD's backbones, which
            already use it); see :meth:`MasterNet.init_weights`.
    """

    model: str = "damofd-0.5g"
    structure: str | None = None
    detector: dict[str, Any] | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_config: LrConfig = field(default_factory=LrConfig)
    total_epochs: int = REFERENCE_EPOCHS
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    log_config: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False
    cpu_threads: int = 0
    channels_last: bool | None = None
    load_from: str | None = None
    load_strict: bool = True
    freeze_bn: bool = False
    sync_bn: bool = False
    max_iters: int = 0
    time_limit: float = 0.0
    backbone_init: str = "official"

    # -- derived values --------------------------------------------------------------------
    def effective_steps(self) -> tuple[int, ...]:
        """Decay epochs for ``total_epochs`` (see :func:`scaled_steps`)."""
        lr = self.lr_config
        return scaled_steps(lr.step, self.total_epochs, lr.step_ref_epochs)

    def effective_lr(self, world_size: int = 1) -> float:
        """The learning rate actually used for ``world_size`` processes."""
        o = self.optimizer
        if not o.auto_scale_lr:
            return float(o.lr)
        return float(o.lr) * world_size * self.data.samples_per_gpu / o.base_batch_size

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "config") -> TrainConfig:
        """Build from a nested or dotted dict; unknown keys raise :class:`ConfigError`."""
        cfg = cls()
        apply_mapping(cfg, d, where=where)
        cfg.validate()
        return cfg

    def copy(self) -> TrainConfig:
        return TrainConfig.from_dict(self.to_dict())

    def validate(self) -> TrainConfig:
        """Type-check every field (after attribute edits such as a ``cfg_modify_fn``) and check
        ranges; raise :class:`ConfigError` naming the key. Returns ``self``."""
        typed_config.check_types(self, "")
        c = self
        _require(c.total_epochs >= 1, "total_epochs", f"must be >= 1, got {c.total_epochs}")
        o = c.optimizer
        _require(o.lr > 0 and math.isfinite(o.lr), "optimizer.lr", f"must be > 0, got {o.lr}")
        _require(0 <= o.momentum < 1, "optimizer.momentum", f"must be in [0, 1): {o.momentum}")
        _require(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
        _require(o.base_batch_size >= 1, "optimizer.base_batch_size", "must be >= 1")
        lr = c.lr_config
        _require(
            lr.policy in ("step", "cosine"),
            "lr_config.policy",
            f"must be step or cosine, got {lr.policy!r}",
        )
        _require(lr.warmup_iters >= 0, "lr_config.warmup_iters", "must be >= 0")
        _require(
            0 <= lr.warmup_max_fraction <= 1,
            "lr_config.warmup_max_fraction",
            f"must be in [0, 1], got {lr.warmup_max_fraction}",
        )
        _require(0 <= lr.min_lr_ratio <= 1, "lr_config.min_lr_ratio", "must be in [0, 1]")
        _require(0 < lr.warmup_ratio <= 1, "lr_config.warmup_ratio", "must be in (0, 1]")
        _require(lr.gamma > 0, "lr_config.gamma", "must be > 0")
        _require(
            all(s >= 0 for s in lr.step) and list(lr.step) == sorted(lr.step),
            "lr_config.step",
            f"must be non-negative and increasing, got {list(lr.step)}",
        )
        _require(lr.step_ref_epochs >= 0, "lr_config.step_ref_epochs", "must be >= 0")
        d = c.data
        _require(d.samples_per_gpu >= 1, "data.samples_per_gpu", "must be >= 1")
        _require(d.workers_per_gpu >= 0, "data.workers_per_gpu", "must be >= 0")
        _require(
            d.img_size >= 32 and d.img_size % 32 == 0,
            "data.img_size",
            f"must be a positive multiple of 32, got {d.img_size}",
        )
        _require(
            bool(d.crop_choice) and all(v > 0 for v in d.crop_choice),
            "data.crop_choice",
            "must be a non-empty list of positive scales",
        )
        _require(0 <= d.flip_ratio <= 1, "data.flip_ratio", "must be in [0, 1]")
        _require(c.checkpoint_config.interval >= 0, "checkpoint_config.interval", "must be >= 0")
        _require(
            c.checkpoint_config.every_iters >= 0, "checkpoint_config.every_iters", "must be >= 0"
        )
        e = c.evaluation
        _require(e.interval >= 0, "evaluation.interval", "must be >= 0")
        _require(
            e.metric in EVAL_METRICS,
            "evaluation.metric",
            f"must be one of {', '.join(EVAL_METRICS)}, got {e.metric!r}",
        )
        _require(e.max_images >= 0, "evaluation.max_images", "must be >= 0")
        _require(0 <= e.score_thr < 1, "evaluation.score_thr", "must be in [0, 1)")
        _require(c.log_config.interval >= 1, "log_config.interval", "must be >= 1")
        _require(c.cpu_threads >= 0, "cpu_threads", "must be >= 0")
        _require(c.max_iters >= 0, "max_iters", "must be >= 0")
        _require(c.time_limit >= 0, "time_limit", "must be >= 0")
        _require(
            c.backbone_init in INIT_SCHEMES,
            "backbone_init",
            f"must be one of {', '.join(INIT_SCHEMES)}, got {c.backbone_init!r}",
        )
        dev = c.device
        _require(
            dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
            "device",
            f"must be auto, cpu, cuda or cuda:N, got {dev!r}",
        )
        return self


def patch_config(cfg: TrainConfig, size: int) -> TrainConfig:
    """Switch ``cfg`` to patch training in place: ``size``×``size`` inputs whose faces have the
    same pixel sizes as at ``data.img_size`` — every RandomSquareCrop scale is multiplied by
    ``size / img_size`` (the 0.5G recipe's 1.0…2.0 of 640 becomes 0.5…1.0 of 320). A train step
    then costs about ``(size / img_size)²`` of the full one; the faces the model learns are the
    ones it meets at test time. Returns ``cfg``."""
    d = cfg.data
    if size < 32 or size % 32:
        raise ConfigError(f"patch size must be a positive multiple of 32, got {size}")
    factor = size / d.img_size
    d.crop_choice = tuple(round(c * factor, 6) for c in d.crop_choice)
    d.img_size = size
    return cfg


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key!r}: {msg}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def scaled_steps(steps: Iterable[int], total_epochs: int, ref_epochs: int) -> tuple[int, ...]:
    """Decay epochs of ``steps`` (written for ``ref_epochs``) scaled to ``total_epochs``.

    ``round_half_up(s · total / ref)``; unchanged when ``ref_epochs`` is 0 or equals
    ``total_epochs``. E.g. (440, 544) of 640 → (7, 9) for 10 epochs, (69, 85) for 100.
    """
    steps = tuple(int(s) for s in steps)
    if ref_epochs <= 0 or ref_epochs == total_epochs:
        return steps
    return tuple(math.floor(s * total_epochs / ref_epochs + 0.5) for s in steps)


# ----------------------------------------------------------------------------------------------
# recipes (reference spec §5.4, scrfd-spec §4)


@dataclass(frozen=True)
class _Recipe:
    lr: float = 0.01
    warmup_iters: int = 1500
    samples_per_gpu: int = 8
    workers: int = 3
    checkpoint_interval: int = 80
    eval_interval: int = 80


# keys are zoo names without "-kps" (the kps configs share the recipe, except scrfd-500m-kps)
_RECIPES: dict[str, _Recipe] = {
    "damofd-0.5g": _Recipe(warmup_iters=5000, checkpoint_interval=10),
    "damofd-2.5g": _Recipe(workers=4),
    "damofd-10g": _Recipe(),
    "damofd-34g": _Recipe(lr=0.02),
    "scrfd-500m": _Recipe(),
    "scrfd-1g": _Recipe(checkpoint_interval=320, eval_interval=160),
    "scrfd-1g-bn": _Recipe(checkpoint_interval=320, eval_interval=160),
    "scrfd-1.3g": _Recipe(),
    # scrfd_2.5g: checkpoint only at the end of the 640 epochs
    "scrfd-2.5g": _Recipe(checkpoint_interval=REFERENCE_EPOCHS),
    "scrfd-10g": _Recipe(),
    "scrfd-34g": _Recipe(lr=0.02),
}
_RECIPE_OVERRIDES: dict[str, _Recipe] = {
    "scrfd-500m-kps": _Recipe(samples_per_gpu=16),  # scrfd_500m_bnkps: 16 per GPU
}


def list_recipes() -> list[str]:
    """Zoo names that have a training recipe (all of them)."""
    from damofd.models.zoo import list_models

    return [n for n in list_models() if _recipe_key(n) in _RECIPES]


def _recipe_key(name: str) -> str:
    """``damofd-10g-kps`` → ``damofd-10g``; damofd's BN-head variant ``damofd-0.5g-bnkps``
    trains with its backbone's recipe (``damofd-0.5g``)."""
    return name.removesuffix("-bnkps").removesuffix("-kps")


def recipe(name: str, **top_level: Any) -> TrainConfig:
    """The reference training recipe of zoo model ``name`` (aliases such as ``DamoFD_10G_lms``
    accepted) as a :class:`TrainConfig`.

    Common to all: SGD momentum 0.9, wd 5e-4; warm-up from 0.001·lr; decay ×0.1 at epochs 440
    and 544 of 640; 8 images per GPU for 4 GPUs (lr for a global batch of 32). Per model: lr 0.02
    for the 34G models else 0.01; 5000 warm-up iterations for DamoFD-0.5G else 1500; workers 4
    for DamoFD-2.5G else 3; SCRFD-500M-KPS 16 images per GPU (lr for 64); ``crop_choice`` and
    ``bbox_clip_border`` from :meth:`damofd.data.AugmentConfig.for_model`; checkpoint / eval
    intervals 10/80 (DamoFD-0.5G), 320/160 (SCRFD-1G), 640/80 (SCRFD-2.5G), 80/80 otherwise.
    ``top_level`` sets further :class:`TrainConfig` fields.
    """
    from damofd.data.transforms import AugmentConfig
    from damofd.models.zoo import resolve_name

    canonical = resolve_name(name)
    key = _recipe_key(canonical)
    if key not in _RECIPES:
        raise ConfigError(f"no training recipe for model {name!r}")
    r = _RECIPE_OVERRIDES.get(canonical, _RECIPES[key])
    try:
        aug = AugmentConfig.for_model(canonical)
    except ConfigError:  # models the augmentation table does not list (e.g. scrfd-1g-bn)
        aug = AugmentConfig.for_model(key.removesuffix("-bn"))
    cfg = TrainConfig(
        model=canonical,
        optimizer=OptimizerConfig(lr=r.lr, base_batch_size=4 * r.samples_per_gpu),
        lr_config=LrConfig(warmup_iters=r.warmup_iters),
        data=DataConfig(
            samples_per_gpu=r.samples_per_gpu,
            workers_per_gpu=r.workers,
            crop_choice=tuple(aug.crop_choice),
            bbox_clip_border=aug.clip_border,
        ),
        checkpoint_config=CheckpointConfig(interval=r.checkpoint_interval),
        evaluation=EvalConfig(interval=r.eval_interval),
    )
    for k, v in top_level.items():
        typed_config.set_path(cfg, k, v, where="recipe()", what=_WHAT)
    return cfg.validate()


def apply_mapping(cfg: TrainConfig, d: Mapping[str, Any], *, where: str = "config") -> TrainConfig:
    """Apply a nested (``{"optimizer": {"lr": 0.02}}``) or dotted (``{"optimizer.lr": 0.02}``)
    mapping onto ``cfg`` in place (:func:`damofd.typed_config.apply_mapping`)."""
    return typed_config.apply_mapping(cfg, d, where=where, what=_WHAT)


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply ``key=value`` strings (dotted paths, values converted to the field types) in order,
    then :meth:`~TrainConfig.validate`."""
    for text in overrides:
        key, value = parse_override(text)
        typed_config.set_path(cfg, key, value, where=f"--set {text}", what=_WHAT)
    return cfg.validate()
