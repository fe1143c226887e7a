"""The components of a training run, one builder each (as YOLOX's ``Exp.get_*``).

:meth:`Trainer.setup <damofd.training.trainer.Trainer.setup>` calls them in a fixed order (the
order is part of the reproducibility contract: :func:`build_model` seeds the weight
initialisation, the data builders draw nothing from the global generators):

* :func:`resolve_device`, :func:`build_dataset` (dataset + :class:`~damofd.data.GroupSampler`),
  :func:`build_validator`;
* :func:`build_model`, :func:`load_pretrained`, :func:`prepare_model` (device, channels-last,
  SyncBN, DDP), :func:`build_criterion` (anchors and strides from the model's head config);
* :func:`build_optimizer`, :func:`build_schedule`;
* :func:`build_loader`, lazily on the first epoch (the DataLoader with persistent workers).
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from damofd.device import check_device
from damofd.errors import ConfigError
from damofd.training.config import TrainConfig
from damofd.training.distributed import DistInfo
from damofd.training.schedule import StepWarmupSchedule

if TYPE_CHECKING:
    from damofd.data.dataset import WiderFaceDataset
    from damofd.data.sampler import GroupSampler
    from damofd.training.criterion import SCRFDCriterion
    from damofd.training.validation import Validator

__all__ = [
    "build_criterion",
    "build_dataset",
    "build_loader",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "build_validator",
    "load_pretrained",
    "prepare_model",
    "resolve_device",
    "total_iters",
]

Log = Callable[[str], None]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available else ``cpu``; ``cuda`` →
    ``cuda:LOCAL_RANK``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = check_device(spec)
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported training device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return torch.device("cuda", local_rank) if spec == "cuda" else dev


# ----------------------------------------------------------------------------------------------
# data


def build_dataset(cfg: TrainConfig, dist: DistInfo) -> tuple[WiderFaceDataset, GroupSampler]:
    """The training set (validated: missing images and malformed label lines fail here, before
    any training) and this rank's sampler."""
    from damofd.data.dataset import WiderFaceDataset
    from damofd.data.sampler import GroupSampler

    d = cfg.data
    dataset = WiderFaceDataset(d.train, d.train_images, config=d.augment_config(), seed=cfg.seed)
    dataset.validate()
    sampler = GroupSampler(
        dataset.flag,
        d.samples_per_gpu,
        num_replicas=dist.world_size,
        rank=dist.rank,
        seed=cfg.seed,
        shuffle=d.shuffle,
    )
    return dataset, sampler


def build_validator(cfg: TrainConfig) -> Validator | None:
    """The periodic validator, or ``None`` without ``data.val`` or with ``evaluation.interval``
    0."""
    d, ev = cfg.data, cfg.evaluation
    if not (d.val and ev.interval > 0):
        return None
    from damofd.training.validation import Validator

    return Validator(
        d.val,
        d.val_gt,
        max_images=ev.max_images,
        score_thr=ev.score_thr,
        protocol=ev.protocol,
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` pairs of a :class:`~damofd.data.GroupSampler`'s current epoch."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _EpochDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` = ``dataset[index]`` drawn with that epoch's generator."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def build_loader(
    dataset: WiderFaceDataset,
    sampler: GroupSampler,
    cfg: TrainConfig,
    device: torch.device,
    log: Log,
) -> torch.utils.data.DataLoader:
    """The session's DataLoader, with persistent workers.

    The epoch travels with every index (:class:`_EpochSampler`), so the workers still draw each
    sample from its own ``(seed, epoch, index)`` generator. Before the workers are forked, OpenCV
    is set to one thread in this process: a child forked while OpenCV's thread pool is active
    deadlocks on its first OpenCV call (observed in 7 of 8 runs otherwise).
    """
    import cv2
    from torch.utils.data import DataLoader

    from damofd.data.dataset import collate_batch

    d = cfg.data
    workers = d.workers_per_gpu
    # never more loader processes per rank than the machine's share of cores: the
    # recipes' 3 workers on a 2-core machine only add contention (and torch warns)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    share = max(1, len(os.sched_getaffinity(0)) // local)
    if workers > share:
        log(
            f"note: data.workers_per_gpu {workers} > {share} available core(s) per "
            f"process; using {share}"
        )
        workers = share
    if workers:
        cv2.setNumThreads(1)
    return DataLoader(
        _EpochDataset(dataset),
        batch_size=d.samples_per_gpu,
        sampler=_EpochSampler(sampler),
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=device.type == "cuda",
        drop_last=False,
        worker_init_fn=_seed_worker if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=bool(workers),
    )


# ----------------------------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig) -> nn.Module:
    """The detector of ``cfg`` (explicit ``detector`` dict, a ``structure`` with ``model`` as
    its neck/head template, or the zoo ``model``), initialised from ``torch.manual_seed(seed)``
    so every rank builds identical weights; ``backbone_init`` re-draws a MasterNet's convs."""
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg)
    if cfg.backbone_init != "official":
        from damofd.models.backbones.masternet import MasterNet

        backbone = model.backbone
        if isinstance(backbone, MasterNet):  # SCRFD's backbones already use Kaiming
            backbone.init_weights(scheme=cfg.backbone_init)
    return model


def _build_model(cfg: TrainConfig) -> nn.Module:
    from damofd.models.configs import DetectorConfig
    from damofd.models.detector import SCRFD
    from damofd.models.factory import create_model

    if cfg.detector is not None:
        det = DetectorConfig.from_dict(cfg.detector)
        name = None
        try:
            from damofd.models.zoo import get_config, resolve_name

            canonical = resolve_name(cfg.model)
            name = canonical if get_config(canonical) == det else None
        except ConfigError:
            name = None
        return SCRFD(det, name=name)
    if cfg.structure:
        return create_model(cfg.model, structure=cfg.structure)
    return create_model(cfg.model)


def load_pretrained(
    model: nn.Module, source: str, *, strict: bool = True, log: Log = print
) -> dict[str, Any]:
    """Load fine-tuning weights into ``model``.

    ``source`` is any spec of :func:`damofd.models.sources.resolve_source`: an mmdet/damofd
    ``.pth``/``.pt`` checkpoint, an official SCRFD ``.onnx`` file (its BatchNorm statistics are
    gone, so a warning recommends ``freeze_bn``), a ModelScope model folder or id, or a zoo name
    with bundled weights (fine-tune the default model on your data). Returns a small report.
    """
    from damofd.models.factory import load_checkpoint
    from damofd.models.sources import load_source, resolve_source

    src = resolve_source(source, model_opt="--load-from")
    if src.kind == "onnx":
        from damofd.models.onnx_import import import_scrfd_onnx

        assert src.path is not None
        imported = import_scrfd_onnx(
            src.path, config=getattr(model, "name", None), form="canonical"
        )
        meta = load_checkpoint(model, {"state_dict": imported.state_dict()}, strict=strict)
        log(
            f"warning: {src.path.name} is an ONNX export: its BatchNorm statistics and affines "
            "were folded into the convolutions (BN layers are identities now); fine-tune with "
            "--freeze-bn (freeze_bn=True) to keep them that way"
        )
        return {"source": source, "kind": "onnx", "meta": meta, "bn_folded": True}
    if src.kind in ("checkpoint", "bundled"):
        path = src.file("pth")
        meta = load_checkpoint(model, path, strict=strict)
        report = meta.pop("_load_report", None)
        if report is not None:
            log(f"warning: non-strict load from {path}: {report.describe()}")
        return {"source": str(path), "kind": src.kind, "meta": _plain_meta(meta)}
    loaded = load_source(src, hint=" (--load-from)")
    meta = load_checkpoint(model, {"state_dict": loaded.state_dict()}, strict=strict)
    return {"source": source, "kind": "modelscope", "meta": _plain_meta(meta)}


def _plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("epoch", "iter", "model_name") if k in meta}


def _no_forward_buffer_sync() -> dict[str, Any]:
    """DDP keyword arguments so that buffers (BN statistics) are not broadcast from rank 0 at
    every forward: ``forward_sync_buffers=False`` where torch has it (2.13+, where
    ``broadcast_buffers`` is deprecated and warns on every rank), else
    ``broadcast_buffers=False``. The new flag still syncs buffers once when DDP is built; every
    rank builds (or resumes) identical buffers, so training is unchanged."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def prepare_model(
    model: nn.Module, cfg: TrainConfig, device: torch.device, dist: DistInfo
) -> tuple[nn.Module, nn.Module, bool]:
    """Move ``model`` to ``device`` (channels-last when ``cfg.channels_last``, default on CPU),
    convert it to SyncBatchNorm (``sync_bn`` under DDP) and wrap it in DDP when distributed.
    Returns ``(model to train, the unwrapped model, channels_last)``."""
    model.to(device)
    cl = cfg.channels_last
    channels_last = (device.type == "cpu") if cl is None else bool(cl)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and dist.distributed:
        if device.type != "cuda":
            raise ConfigError("config key 'sync_bn': SyncBatchNorm needs CUDA devices")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not dist.distributed:
        return model, model, channels_last
    ddp_kw: dict[str, Any] = _no_forward_buffer_sync()
    if device.type == "cuda":
        ddp_kw["device_ids"] = [device.index]
    return nn.parallel.DistributedDataParallel(model, **ddp_kw), model, channels_last


def build_criterion(model: nn.Module, device: torch.device) -> SCRFDCriterion:
    """The loss of ``model``: strides and anchors per location from its head config
    (:meth:`CriterionConfig.from_head`), keypoints when the model has the keypoint branch."""
    from damofd.training.criterion import CriterionConfig, SCRFDCriterion

    use_kps = bool(getattr(model, "use_kps", False))
    head = getattr(getattr(model, "config", None), "head", None)
    config = CriterionConfig.from_head(head) if head is not None else CriterionConfig()
    return SCRFDCriterion(config, use_kps=use_kps).to(device)


# ----------------------------------------------------------------------------------------------
# optimisation


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.SGD:
    """SGD with the recipe's momentum and weight decay at ``lr`` (the effective rate)."""
    o = cfg.optimizer
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def total_iters(cfg: TrainConfig, epoch_len: int) -> int:
    """Iterations of the whole run: ``total_epochs × epoch_len``, capped by ``max_iters``."""
    n = cfg.total_epochs * epoch_len
    return min(n, cfg.max_iters) if cfg.max_iters else n


def build_schedule(cfg: TrainConfig, lr: float, epoch_len: int) -> StepWarmupSchedule:
    """The learning-rate schedule of ``cfg.lr_config`` for a run of :func:`total_iters`."""
    lrc = cfg.lr_config
    n = total_iters(cfg, epoch_len)
    return StepWarmupSchedule(
        base_lr=lr,
        steps=cfg.effective_steps(),
        gamma=lrc.gamma,
        warmup_iters=lrc.capped_warmup(n),
        warmup_ratio=lrc.warmup_ratio,
        policy=lrc.policy,
        total_iters=n,
        min_lr_ratio=lrc.min_lr_ratio,
    )
