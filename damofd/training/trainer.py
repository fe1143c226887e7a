"""The training loop: single process (CPU or GPU) or ``torchrun`` DDP, resumable at any iteration.

Per iteration: the learning rate of the recipe's schedule (:mod:`damofd.training.schedule`) is
set, the batch goes through the detector (under ``torch.autocast`` fp16 with ``--amp`` on CUDA),
:class:`~damofd.training.criterion.SCRFDCriterion` computes ``loss_cls + loss_bbox (+
loss_kps)`` (normalisers averaged over ranks, reference spec §5.3), the losses are averaged over
ranks for logging and checked for NaN/inf *before* the backward pass (every rank sees the same
value and stops at the same iteration), then SGD steps (through a ``GradScaler`` under AMP).

Work-dir layout (everything written atomically with :mod:`damofd.io`)::

    config.json     the resolved TrainConfig
    log.jsonl       one JSON object per line: "start", "train" (every log interval), "val",
                    "checkpoint", "stop" / "diverged"
    latest.pth      the newest state (every epoch, every checkpoint_config.every_iters
                    iterations, and when the run stops on max_iters / time_limit / SIGTERM)
    epoch_{n}.pth   every checkpoint_config.interval epochs and after the last epoch
    best.pth        the checkpoint with the best validation AP (evaluation.metric)

A checkpoint is the official mmdet layout ``{'meta': {epoch, iter, mmdet_version, CLASSES,
config, ...}, 'state_dict', 'optimizer'}`` (loadable by :func:`damofd.models.load_checkpoint`
and by mmdet) plus the resume state: ``scheduler``, ``scaler``, ``rng`` (python / numpy / torch /
CUDA generator states of every rank) and ``sampler`` (epoch and batches consumed in it).
``meta['epoch']`` counts completed epochs and ``meta['iter']`` completed iterations, as mmcv.

Resume: model, optimizer, scheduler, GradScaler, RNG states, epoch and the position inside the
epoch are restored; samples are a pure function of ``(seed, epoch, index)``
(:class:`damofd.data.WiderFaceDataset`) and the order of ``(seed, epoch)``
(:class:`damofd.data.GroupSampler`), so a resumed run continues with exactly the batches the
interrupted one would have seen — bitwise identical on CPU with ``deterministic=True``.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import random
import re
import resource
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from damofd.device import check_device
from damofd.errors import ConfigError, DamoFDError, InputError
from damofd.io import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_writable_dir,
    remove_stale_tmp,
)
from damofd.training.config import TrainConfig
from damofd.training.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    broadcast_object,
    destroy_distributed,
    init_distributed,
)
from damofd.training.schedule import StepWarmupSchedule

__all__ = [
    "Trainer",
    "TrainerHook",
    "TrainingDivergedError",
    "TrainResult",
    "TrainState",
    "build_model",
    "load_pretrained",
    "resolve_device",
]

LATEST = "latest.pth"
BEST = "best.pth"
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.json"


class TrainingDivergedError(DamoFDError):
    """The loss became NaN or infinite; the run stopped without writing anything new.

    Attributes: ``iteration`` (1-based iteration whose loss was not finite), ``epoch``
    (1-based), ``checkpoint`` (the last good checkpoint on disk, or ``None``).
    """

    def __init__(self, message: str, iteration: int, epoch: int, checkpoint: Path | None):
        super().__init__(message)
        self.iteration = iteration
        self.epoch = epoch
        self.checkpoint = checkpoint


@dataclass
class TrainState:
    """Progress counters. ``epoch``: completed epochs; ``iter``: completed iterations;
    ``epoch_iter``: iterations completed inside the current epoch."""

    epoch: int = 0
    iter: int = 0
    epoch_iter: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    last_eval: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """Summary returned by :meth:`Trainer.train`.

    ``stopped``: ``"completed"``, ``"max_iters"``, ``"time_limit"`` or ``"signal"``.
    """

    epochs: int
    iters: int
    stopped: str
    work_dir: Path
    latest: Path | None
    best: Path | None = None
    best_metric: float | None = None
    last_eval: dict[str, Any] | None = None
    images_per_s: float | None = None


class TrainerHook:
    """Extension points; override any subset. Each receives the :class:`Trainer`
    (``trainer.state``, ``trainer.model``, ``trainer.last_losses`` …)."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def before_iter(self, trainer: Trainer) -> None:
        pass

    def after_iter(self, trainer: Trainer) -> None:
        pass

    def after_epoch(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# helpers


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available else ``cpu``; ``cuda`` →
    ``cuda:LOCAL_RANK``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = check_device(spec)
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported training device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return torch.device("cuda", local_rank) if spec == "cuda" else dev


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


def _progress_point(it: int, epochs_done: int, position: int, epoch_len: int) -> str:
    """Where training stands, for people: ``iteration 3 (epoch 1, 3/156 iterations done)`` or
    ``iteration 312 (2 epochs done; starting epoch 3)``; epochs 1-based as in the train log."""
    if position == 0:
        if epochs_done == 0:
            return f"iteration {it} (start of epoch 1)"
        s = "s" if epochs_done != 1 else ""
        return f"iteration {it} ({epochs_done} epoch{s} done; starting epoch {epochs_done + 1})"
    return f"iteration {it} (epoch {epochs_done + 1}, {position}/{epoch_len} iterations done)"


def build_model(cfg: TrainConfig) -> nn.Module:
    """The detector of ``cfg`` (explicit ``detector`` dict, a ``structure`` with ``model`` as
    its neck/head template, or the zoo ``model``), initialised from ``torch.manual_seed(seed)``
    so every rank builds identical weights."""
    from damofd.models.configs import DetectorConfig
    from damofd.models.detector import SCRFD
    from damofd.models.zoo import create_model

    torch.manual_seed(cfg.seed)
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
    model: nn.Module, source: str, *, strict: bool = True, log=print
) -> dict[str, Any]:
    """Load fine-tuning weights into ``model``.

    ``source``: an mmdet/damofd ``.pth``/``.pt`` checkpoint, an official SCRFD ``.onnx`` file
    (imported with :func:`damofd.models.onnx_import.import_scrfd_onnx`; its BatchNorm statistics
    are gone, so a warning recommends ``freeze_bn``), a ModelScope model folder or id (through
    :func:`damofd.models.modelscope.load_modelscope`). Returns a small report dict.
    """
    from damofd.models.checkpoint import load_checkpoint

    p = Path(source)
    if p.is_file() and p.suffix.lower() == ".onnx":
        from damofd.models.onnx_import import import_scrfd_onnx

        imported = import_scrfd_onnx(p, config=getattr(model, "name", None), form="canonical")
        meta = load_checkpoint(model, {"state_dict": imported.state_dict()}, strict=strict)
        log(
            f"warning: {p.name} is an ONNX export: its BatchNorm statistics and affines were "
            "folded into the convolutions (BN layers are identities now); fine-tune with "
            "--freeze-bn (freeze_bn=True) to keep them that way"
        )
        return {"source": str(p), "kind": "onnx", "meta": meta, "bn_folded": True}
    if p.is_file():
        meta = load_checkpoint(model, p, strict=strict)
        report = meta.pop("_load_report", None)
        if report is not None:
            log(f"warning: non-strict load from {p}: {report.describe()}")
        return {"source": str(p), "kind": "checkpoint", "meta": _plain_meta(meta)}
    if p.suffix.lower() in (".pth", ".pt", ".ckpt", ".onnx", ".bin"):
        raise InputError(f"--load-from {source}: no such file")
    from damofd.models import modelscope

    loader = getattr(modelscope, "load_modelscope", None)
    is_id = re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not p.exists()
    if p.is_dir() or is_id:
        if loader is None:
            raise ConfigError(
                f"--load-from {source}: loading ModelScope models needs "
                "damofd.models.modelscope.load_modelscope, which this installation lacks; "
                "pass the pytorch_model.pt file instead"
            )
        ms_model = loader(source)
        meta = load_checkpoint(model, {"state_dict": ms_model.state_dict()}, strict=strict)
        return {"source": source, "kind": "modelscope", "meta": _plain_meta(meta)}
    raise InputError(
        f"--load-from {source}: not a file, a ModelScope folder or a ModelScope id "
        "(e.g. damo/cv_ddsar_face-detection_iclr23-damofd)"
    )


def _plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("epoch", "iter", "model_name") if k in meta}


def _memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss / 1024.0, "cpu_max_rss"


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(np_state[0]),
            [int(v) for v in np_state[1]],
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_tuple(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return tuple(_to_tuple(v) for v in x)
    return x


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


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@dataclass(frozen=True)
class _GlobalTorchState:
    """Process-wide settings the trainer changes (torch and OpenCV threads, determinism, cuDNN);
    restored when :meth:`Trainer.train` returns so library users are not surprised."""

    threads: int
    cv2_threads: int
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool

    @classmethod
    def capture(cls) -> _GlobalTorchState:
        import cv2

        return cls(
            torch.get_num_threads(),
            cv2.getNumThreads(),
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )

    def restore(self) -> None:
        import cv2

        if cv2.getNumThreads() != self.cv2_threads:
            cv2.setNumThreads(self.cv2_threads)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(
            self.deterministic, warn_only=self.deterministic_warn_only
        )
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


# ----------------------------------------------------------------------------------------------
# trainer


class Trainer:
    """Train a detector according to a :class:`TrainConfig`.

    Args:
        cfg: the configuration (validated here); ``cfg.data.train`` must be set.
        work_dir: output folder (created; must be writable).
        resume: ``False`` (start fresh), ``True`` (continue from ``work_dir/latest.pth`` when it
            exists, else start fresh), or a checkpoint path.
        hooks: :class:`TrainerHook` instances.
        log: callable for human-readable messages (rank 0 only; default ``print`` to stderr).
        overwrite: start fresh in a work dir that already holds ``latest.pth`` (its checkpoints
            and log are then replaced as the new run writes them). Without it such a work dir is
            refused unless ``resume`` is given, so a finished run is never overwritten by
            accident.

    Call :meth:`train`. :meth:`setup` (called by ``train``) builds everything and runs the
    input checks (missing images are listed before any training), so bad input fails fast.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        work_dir: str | os.PathLike[str],
        *,
        resume: bool | str | os.PathLike[str] = False,
        hooks: Iterable[TrainerHook] = (),
        log: Any = None,
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg.validate()
        self.work_dir = Path(work_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.hooks: list[TrainerHook] = list(hooks)
        self._log_fn = log
        self.state = TrainState()
        self.last_losses: dict[str, float] = {}
        self._ready = False
        self._stop_signal: str | None = None

    # -- public helpers -----------------------------------------------------------------------
    def register_hook(self, hook: TrainerHook) -> None:
        self.hooks.append(hook)

    @property
    def model_without_ddp(self) -> nn.Module:
        m = self.model
        return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m

    def log(self, msg: str) -> None:
        if not getattr(self, "dist", DistInfo()).is_main:
            return
        if self._log_fn is not None:
            self._log_fn(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build data, model, optimizer and state (idempotent)."""
        if self._ready:
            return
        cfg = self.cfg
        if not cfg.data.train:
            raise ConfigError("config key 'data.train': no training set given (--train)")
        dev_spec = cfg.device
        pre_type = (
            "cuda"
            if dev_spec.startswith("cuda") or (dev_spec == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        if cfg.deterministic and pre_type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.dist = init_distributed(pre_type)
        self.device = resolve_device(dev_spec, self.dist.local_rank)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        if cfg.amp and not self.amp:
            self.log("warning: --amp needs a CUDA device; training in float32 on the CPU")
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        if self.dist.is_main:
            self._check_work_dir()
        barrier()

        # ---- data (fails before any training on missing images / malformed labels) --------
        from damofd.data.dataset import WiderFaceDataset
        from damofd.data.sampler import GroupSampler

        d = cfg.data
        self.dataset = WiderFaceDataset(
            d.train, d.train_images, config=d.augment_config(), seed=cfg.seed
        )
        self.dataset.validate()
        self.sampler = GroupSampler(
            self.dataset.flag,
            d.samples_per_gpu,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            seed=cfg.seed,
            shuffle=d.shuffle,
        )
        self.epoch_len = self.sampler.num_samples // d.samples_per_gpu
        self.validator = None
        if d.val and cfg.evaluation.interval > 0:
            from damofd.training.validation import Validator

            self.validator = Validator(
                d.val,
                d.val_gt,
                max_images=cfg.evaluation.max_images,
                score_thr=cfg.evaluation.score_thr,
                protocol=cfg.evaluation.protocol,
            )

        # ---- model ----------------------------------------------------------------------------
        from damofd.training.criterion import SCRFDCriterion

        model = build_model(cfg)
        self.load_report = None
        if cfg.load_from:
            self.load_report = load_pretrained(
                model, cfg.load_from, strict=cfg.load_strict, log=self.log
            )
        model.to(self.device)
        cl = cfg.channels_last
        self.channels_last = (self.device.type == "cpu") if cl is None else bool(cl)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.dist.distributed:
            if self.device.type != "cuda":
                raise ConfigError("config key 'sync_bn': SyncBatchNorm needs CUDA devices")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.use_kps = bool(getattr(model, "use_kps", False))
        self.criterion = SCRFDCriterion(use_kps=self.use_kps).to(self.device)
        if self.dist.distributed:
            ddp_kw: dict[str, Any] = _no_forward_buffer_sync()
            if self.device.type == "cuda":
                ddp_kw["device_ids"] = [self.device.index]
            self.model: nn.Module = nn.parallel.DistributedDataParallel(model, **ddp_kw)
        else:
            self.model = model

        # ---- optimisation -----------------------------------------------------------------------
        o = cfg.optimizer
        self.base_lr = cfg.effective_lr(self.dist.world_size)
        self.optimizer = torch.optim.SGD(
            self.model_without_ddp.parameters(),
            lr=self.base_lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
        )
        lrc = cfg.lr_config
        total_iters = cfg.total_epochs * self.epoch_len
        if cfg.max_iters:
            total_iters = min(total_iters, cfg.max_iters)
        self.schedule = StepWarmupSchedule(
            base_lr=self.base_lr,
            steps=cfg.effective_steps(),
            gamma=lrc.gamma,
            warmup_iters=lrc.capped_warmup(total_iters),
            warmup_ratio=lrc.warmup_ratio,
            policy=lrc.policy,
            total_iters=total_iters,
            min_lr_ratio=lrc.min_lr_ratio,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        # ---- seeds (after the model: its init used seed alone, identical on every rank) -------
        random.seed(cfg.seed + self.dist.rank)
        np.random.seed((cfg.seed + self.dist.rank) % 2**32)
        torch.manual_seed(cfg.seed + self.dist.rank)

        self.resumed_from: Path | None = None
        ckpt_path = self._resume_path()
        if ckpt_path is not None:
            self._restore(ckpt_path)
            self.resumed_from = ckpt_path
        self._ready = True

    def _check_work_dir(self) -> None:
        """Create the work dir, refuse to start over in one holding a run (without ``resume``
        or ``overwrite``), and remove temporary files a killed run left behind."""
        ensure_writable_dir(self.work_dir, "work directory")
        latest = self.work_dir / LATEST
        if self.resume in (False, None) and not self.overwrite and latest.is_file():
            raise InputError(
                f"work directory {str(self.work_dir)!r} already holds a run ({LATEST}); pass "
                "--resume to continue it, or --force to start over and replace its checkpoints"
            )
        # atomic writes go through ".<name>.<random>.tmp" files; a SIGKILL can leave one
        for tmp in remove_stale_tmp(self.work_dir):
            self.log(f"removed {tmp.name}, left by an interrupted run")

    def _resume_path(self) -> Path | None:
        r = self.resume
        if r is False or r is None:
            return None
        if r is True:
            p = self.work_dir / LATEST
            if not p.is_file():
                self.log(f"resume: no {p} yet; starting from scratch")
                return None
            return p
        p = Path(r)
        if not p.is_file():
            raise InputError(f"--resume: checkpoint {str(p)!r} does not exist")
        return p

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint_dict(self) -> dict[str, Any]:
        from damofd import __version__

        model = self.model_without_ddp
        cfg = self.cfg
        meta: dict[str, Any] = {
            "epoch": self.state.epoch,
            "iter": self.state.iter,
            "mmdet_version": f"damofd-{__version__}",
            "damofd_version": __version__,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "CLASSES": ("FG",),
            "config": json.dumps(cfg.to_dict(), indent=1),
            "train_config": cfg.to_dict(),
            "world_size": self.dist.world_size,
        }
        det_cfg = getattr(model, "config", None)
        if det_cfg is not None and hasattr(det_cfg, "to_dict"):
            meta["damofd_config"] = det_cfg.to_dict()
        if isinstance(getattr(model, "name", None), str):
            meta["model_name"] = model.name
        rng = all_gather_object(_rng_state(self.device))
        ckpt: dict[str, Any] = {
            "meta": meta,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "scheduler": self.schedule.state_dict(),
            "rng": rng,
            "sampler": {
                "epoch": self.state.epoch,
                "position": self.state.epoch_iter,
                "samples_per_gpu": self.cfg.data.samples_per_gpu,
                "world_size": self.dist.world_size,
                "seed": self.cfg.seed,
            },
            "trainer": {
                "best_metric": self.state.best_metric,
                "best_epoch": self.state.best_epoch,
                "metric": self.cfg.evaluation.metric,
                "last_eval": self.state.last_eval,
            },
        }
        if self.cfg.checkpoint_config.save_optimizer:
            ckpt["optimizer"] = self.optimizer.state_dict()
        if self.amp:
            ckpt["scaler"] = self.scaler.state_dict()
        return ckpt

    def save_checkpoint(self, *, epoch_file: bool = False, best: bool = False) -> Path | None:
        """Write ``latest.pth`` (and ``epoch_{n}.pth`` / ``best.pth``) atomically on rank 0.
        Every rank must call it (the RNG states are gathered)."""
        ckpt = self._checkpoint_dict()
        if not self.dist.is_main:
            return None
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        data = buf.getvalue()
        latest = atomic_write_bytes(self.work_dir / LATEST, data)
        written = [LATEST]
        if epoch_file:
            atomic_write_bytes(self.work_dir / f"epoch_{self.state.epoch}.pth", data)
            written.append(f"epoch_{self.state.epoch}.pth")
        if best:
            atomic_write_bytes(self.work_dir / BEST, data)
            written.append(BEST)
        self._write_log(
            {
                "mode": "checkpoint",
                "epoch": self.state.epoch,
                "iter": self.state.iter,
                "files": written,
            }
        )
        self.last_checkpoint = latest
        self.last_checkpoint_iter = self.state.iter
        return latest

    def _restore(self, path: Path) -> None:
        from damofd.models.checkpoint import load_checkpoint, read_checkpoint

        ckpt = read_checkpoint(path)
        where = f"checkpoint {str(path)!r}"
        if "meta" not in ckpt or "state_dict" not in ckpt:
            raise InputError(f"{where} is not a training checkpoint (no meta/state_dict)")
        load_checkpoint(self.model_without_ddp, ckpt, strict=True)
        meta = ckpt["meta"]
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        else:
            self.log(f"warning: {where} has no optimizer state; momentum restarts from zero")
        if self.amp and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        sched = ckpt.get("scheduler")
        if sched is not None:
            old = StepWarmupSchedule.from_state_dict(sched)
            if old != self.schedule:
                self.log(
                    f"note: the schedule differs from the checkpoint's ({old} → "
                    f"{self.schedule}); the current configuration is used"
                )
        epoch = int(meta.get("epoch", 0))
        it = int(meta.get("iter", 0))
        sampler = ckpt.get("sampler") or {}
        same_epoch = int(sampler.get("epoch", epoch)) == epoch
        position = int(sampler.get("position", 0)) if same_epoch else 0
        old_batch = int(sampler.get("samples_per_gpu", self.cfg.data.samples_per_gpu)) * int(
            sampler.get("world_size", self.dist.world_size)
        )
        new_batch = self.cfg.data.samples_per_gpu * self.dist.world_size
        if position and old_batch != new_batch:
            position = (position * old_batch) // new_batch
            self.log(
                f"note: global batch changed from {old_batch} to {new_batch}; resuming epoch "
                f"{epoch + 1} at batch {position} (approximately the same sample)"
            )
        if position >= self.epoch_len:
            epoch, position = epoch + 1, 0
        self.state.epoch, self.state.iter, self.state.epoch_iter = epoch, it, position
        tr = ckpt.get("trainer") or {}
        self.state.best_metric = tr.get("best_metric")
        self.state.best_epoch = tr.get("best_epoch")
        self.state.last_eval = tr.get("last_eval")
        rng = ckpt.get("rng")
        if isinstance(rng, list) and rng:
            if len(rng) != self.dist.world_size:
                self.log(
                    f"note: {where} was written by {len(rng)} processes, this run has "
                    f"{self.dist.world_size}; RNG states are restored from rank 0's"
                )
            mine = rng[self.dist.rank] if len(rng) > self.dist.rank else rng[0]
            _set_rng_state(mine, self.device)
        self.last_checkpoint = path
        self.last_checkpoint_iter = it
        self.log(f"resumed from {path} at {_progress_point(it, epoch, position, self.epoch_len)}")

    # -- logging ------------------------------------------------------------------------------
    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        line = json.dumps(record, allow_nan=True)
        with open(self.work_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    # -- the loop -----------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict[str, Any]]:
        """An iterator over this epoch's batches (from the current position).

        The DataLoader is built once per session, with persistent workers; the epoch travels
        with every index (:class:`_EpochSampler`), so the workers still draw each sample from its
        own ``(seed, epoch, index)`` generator. Before the workers are forked, OpenCV is set to
        one thread in this process: a child forked while OpenCV's thread pool is active
        deadlocks on its first OpenCV call (observed in 7 of 8 runs otherwise).
        """
        import cv2
        from torch.utils.data import DataLoader

        from damofd.data.dataset import collate_batch

        d = self.cfg.data
        self.sampler.set_epoch(self.state.epoch, skip=self.state.epoch_iter * d.samples_per_gpu)
        if getattr(self, "_dataloader", None) is None:
            workers = d.workers_per_gpu
            # never more loader processes per rank than the machine's share of cores: the
            # recipes' 3 workers on a 2-core machine only add contention (and torch warns)
            local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
            share = max(1, len(os.sched_getaffinity(0)) // local)
            if workers > share:
                self.log(
                    f"note: data.workers_per_gpu {workers} > {share} available core(s) per "
                    f"process; using {share}"
                )
                workers = share
            if workers:
                cv2.setNumThreads(1)
            self._dataloader = DataLoader(
                _EpochDataset(self.dataset),
                batch_size=d.samples_per_gpu,
                sampler=_EpochSampler(self.sampler),
                num_workers=workers,
                collate_fn=collate_batch,
                pin_memory=self.device.type == "cuda",
                drop_last=False,
                worker_init_fn=_seed_worker if workers else None,
                prefetch_factor=2 if workers else None,
                persistent_workers=bool(workers),
            )
        return iter(self._dataloader)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            _set_bn_eval(self.model)

    def _step(self, batch: dict[str, Any]) -> Tensor:
        """One optimisation step; returns the rank-averaged ``[loss, loss_cls, loss_bbox,
        (loss_kps)]`` vector (after the finiteness check, before nothing else)."""
        dev = self.device
        imgs = batch["img"].to(dev, non_blocking=True)
        if self.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        gt_bboxes = [b.to(dev, non_blocking=True) for b in batch["gt_bboxes"]]
        gt_kps = (
            [k.to(dev, non_blocking=True) for k in batch["gt_keypoints"]] if self.use_kps else None
        )
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.amp):
            cls, bbox, kps = self.model(imgs)
        losses = self.criterion(
            cls, bbox, kps, gt_bboxes, gt_kps, img_size=(imgs.shape[2], imgs.shape[3])
        )
        loss = sum(losses.values())
        assert isinstance(loss, Tensor)
        vec = torch.stack([loss.detach().float(), *(v.detach().float() for v in losses.values())])
        stop = 1.0 if self._stop_requested() else 0.0
        vec = torch.cat([vec, vec.new_tensor([stop])])
        if self.dist.distributed:
            torch.distributed.all_reduce(vec)
            vec[:-1] /= self.dist.world_size
        self._loss_names = ["loss", *losses.keys()]
        if not bool(torch.isfinite(vec[:-1]).all()):
            self._diverged(vec)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return vec

    def _stop_requested(self) -> bool:
        if self._stop_signal is not None:
            return True
        tl = self.cfg.time_limit
        return bool(tl and time.monotonic() - self._t_session > tl)

    def _diverged(self, vec: Tensor) -> None:
        it, ep = self.state.iter + 1, self.state.epoch + 1
        values = dict(zip(self._loss_names, vec[:-1].tolist()))
        ckpt = getattr(self, "last_checkpoint", None)
        ck_iter = getattr(self, "last_checkpoint_iter", None)
        where = (
            f"the last good checkpoint is {ckpt} (iteration {ck_iter})"
            if ckpt is not None
            else "no checkpoint had been written yet"
        )
        self._write_log(
            {
                "mode": "diverged",
                "epoch": ep,
                "iter": it,
                **values,
                "checkpoint": None if ckpt is None else str(ckpt),
            }
        )
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        raise TrainingDivergedError(
            f"training diverged: non-finite loss at iteration {it} (epoch {ep}): {shown}; "
            f"the run was stopped and nothing was written; {where}. Lower the learning rate "
            "(--lr) or lengthen the warm-up (--set lr_config.warmup_iters=N) and resume.",
            it,
            ep,
            ckpt,
        )

    def _install_signals(self) -> list[tuple[int, Any]]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return []
        old = []

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = name
            self.log(f"{name}: stopping after this iteration and saving latest.pth")

        for sig in (signal.SIGINT, signal.SIGTERM):
            old.append((sig, signal.signal(sig, handler)))
        return old

    def train(self) -> TrainResult:
        """Run (or continue) the training; returns a :class:`TrainResult`.

        Raises :class:`TrainingDivergedError` on a NaN/inf loss (nothing is written; the last
        good checkpoint stays).
        """
        saved = _GlobalTorchState.capture()
        try:
            self.setup()
            old_handlers = self._install_signals()
            try:
                return self._train()
            finally:
                for sig, h in old_handlers:
                    signal.signal(sig, h)
        finally:
            if hasattr(self, "dist"):
                destroy_distributed(self.dist)
            saved.restore()

    def _train(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        d = cfg.data
        world = self.dist.world_size
        self._t_session = time.monotonic()
        if self.dist.is_main:
            atomic_write_json(self.work_dir / CONFIG_FILE, cfg.to_dict())
        self._write_log(
            {
                "mode": "start",
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "model": getattr(self.model_without_ddp, "name", None) or cfg.model,
                "structure": cfg.structure,
                "device": str(self.device),
                "world_size": world,
                "samples_per_gpu": d.samples_per_gpu,
                "global_batch": world * d.samples_per_gpu,
                "lr": self.base_lr,
                "steps": list(self.schedule.steps),
                "warmup_iters": self.schedule.warmup_iters,
                "schedule": self.schedule.state_dict(),
                "total_epochs": cfg.total_epochs,
                "epoch_len": self.epoch_len,
                "train_images": len(self.dataset),
                "amp": self.amp,
                "channels_last": self.channels_last,
                "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
                "epoch": st.epoch,
                "iter": st.iter,
                "load_from": cfg.load_from,
            }
        )
        self.log(
            f"training {getattr(self.model_without_ddp, 'name', None) or 'detector'} on "
            f"{len(self.dataset)} images ({self.epoch_len} iterations/epoch, global batch "
            f"{world * d.samples_per_gpu}; {self.schedule.describe()}) on {self.device}"
            + (f" × {world} processes" if world > 1 else "")
            + f"; work dir {self.work_dir}"
        )
        for h in self.hooks:
            h.before_train(self)

        total_iters = cfg.total_epochs * self.epoch_len
        if cfg.max_iters:
            total_iters = min(total_iters, cfg.max_iters)
        bar = None
        if self.dist.is_main and cfg.log_config.progress and st.iter < total_iters:
            from tqdm import tqdm

            tty = sys.stderr.isatty()
            bar = tqdm(
                total=total_iters,
                initial=st.iter,
                unit="it",
                dynamic_ncols=True,
                mininterval=0.5 if tty else 30.0,
                file=sys.stderr,
            )
        stopped = "completed"
        window: dict[str, float] = {}
        n_window = 0
        t_images = 0
        t_train_start = time.perf_counter()
        try:
            while st.epoch < cfg.total_epochs:
                if cfg.max_iters and st.iter >= cfg.max_iters:
                    stopped = "max_iters"
                    break
                self._set_train_mode()
                loader = self._loader()
                t_end = time.perf_counter()
                stop_now = False
                while True:
                    try:
                        batch = next(loader)
                    except StopIteration:
                        break
                    t_data = time.perf_counter()
                    for h in self.hooks:
                        h.before_iter(self)
                    lr = self.schedule.apply(self.optimizer, st.iter, st.epoch)
                    vec = self._step(batch)
                    st.iter += 1
                    st.epoch_iter += 1
                    t_step = time.perf_counter()
                    n_img = int(batch["img"].shape[0]) * world
                    t_images += n_img
                    values = vec[:-1].tolist()
                    self.last_losses = dict(zip(self._loss_names, values))
                    for k, v in self.last_losses.items():
                        window[k] = window.get(k, 0.0) + v
                    window["time"] = window.get("time", 0.0) + (t_step - t_end)
                    window["data_time"] = window.get("data_time", 0.0) + (t_data - t_end)
                    window["images"] = window.get("images", 0.0) + n_img
                    n_window += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            epoch=st.epoch + 1,
                            loss=f"{values[0]:.4f}",
                            lr=f"{lr:.2e}",
                            refresh=False,  # redraw at tqdm's own pace (mininterval)
                        )
                    if n_window >= cfg.log_config.interval:
                        self._log_window(window, n_window, lr)
                        window, n_window = {}, 0
                    for h in self.hooks:
                        h.after_iter(self)
                    every = cfg.checkpoint_config.every_iters
                    if every and st.iter % every == 0 and st.epoch_iter < self.epoch_len:
                        self.save_checkpoint()
                    if vec[-1].item() > 0:
                        stopped = "signal" if self._stop_signal else "time_limit"
                        stop_now = True
                    elif cfg.max_iters and st.iter >= cfg.max_iters:
                        stopped = "max_iters"
                        stop_now = True
                    if stop_now:
                        break
                    t_end = time.perf_counter()
                if stop_now and st.epoch_iter < self.epoch_len:
                    self.save_checkpoint()
                    break
                # ---- end of epoch ------------------------------------------------------
                st.epoch += 1
                st.epoch_iter = 0
                self._end_of_epoch()
                for h in self.hooks:
                    h.after_epoch(self)
                if stop_now:
                    break
        finally:
            if bar is not None:
                bar.close()
        if n_window:  # the last, partial window (the log interval spans epoch ends)
            self._log_window(window, n_window, self.optimizer.param_groups[0]["lr"])
        elapsed = time.perf_counter() - t_train_start
        ips = t_images / elapsed if elapsed > 0 and t_images else None
        self._write_log(
            {
                "mode": "stop",
                "reason": stopped,
                "epoch": st.epoch,
                "iter": st.iter,
                "images_per_s": ips,
                "session_s": elapsed,
            }
        )
        for h in self.hooks:
            h.after_train(self)
        barrier()
        best = self.work_dir / BEST
        result = TrainResult(
            epochs=st.epoch,
            iters=st.iter,
            stopped=stopped,
            work_dir=self.work_dir,
            latest=getattr(self, "last_checkpoint", None),
            best=best if best.is_file() else None,
            best_metric=st.best_metric,
            last_eval=st.last_eval,
            images_per_s=ips,
        )
        where = _progress_point(st.iter, st.epoch, st.epoch_iter, self.epoch_len)
        self.log(
            f"stopped ({stopped}) at {where}"
            + (f"; {ips:.2f} images/s" if ips else "")
            + (f"; best {cfg.evaluation.metric} AP {st.best_metric:.4f}" if st.best_metric else "")
        )
        return result

    def _log_window(self, window: dict[str, float], n: int, lr: float) -> None:
        st = self.state
        mem, kind = _memory_mb(self.device)
        # after an epoch end the window's last iteration belongs to the epoch just finished
        ended = st.epoch_iter == 0 and st.iter > 0
        rec: dict[str, Any] = {
            "mode": "train",
            "epoch": st.epoch if ended else st.epoch + 1,
            "iter": st.iter,
            "epoch_iter": self.epoch_len if ended else st.epoch_iter,
            "epoch_len": self.epoch_len,
            "lr": lr,
        }
        for k in self._loss_names:
            rec[k] = window.get(k, 0.0) / n
        rec["time"] = window["time"] / n
        rec["data_time"] = window["data_time"] / n
        rec["images_per_s"] = window["images"] / window["time"] if window["time"] > 0 else None
        rec["memory_mb"] = round(mem, 1)
        rec["memory_kind"] = kind
        self._write_log(rec)

    def _end_of_epoch(self) -> None:
        cfg, st = self.cfg, self.state
        last = st.epoch >= cfg.total_epochs
        best = False
        ev = cfg.evaluation
        if self.validator is not None and (st.epoch % ev.interval == 0 or last):
            best = self._evaluate()
        ck = cfg.checkpoint_config
        epoch_file = bool(ck.interval) and (st.epoch % ck.interval == 0 or last)
        self.save_checkpoint(epoch_file=epoch_file, best=best)

    def _evaluate(self) -> bool:
        """Validate; returns True (on every rank) when the metric improved."""
        assert self.validator is not None
        st, ev = self.state, self.cfg.evaluation
        t0 = time.perf_counter()
        res = self.validator.evaluate(
            self.model_without_ddp,
            str(self.device),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        improved = False
        record = None
        if res is not None:
            aps = {k: float(v) for k, v in res.aps.items()}
            aps["mean"] = float(np.mean([aps["easy"], aps["medium"], aps["hard"]]))
            metric = aps[ev.metric]
            if math.isfinite(metric) and (st.best_metric is None or metric > st.best_metric):
                st.best_metric, st.best_epoch = metric, st.epoch
                improved = True
            record = {
                "mode": "val",
                "epoch": st.epoch,
                "iter": st.iter,
                **aps,
                "metric": ev.metric,
                "best": st.best_metric,
                "images": res.images,
                "time": time.perf_counter() - t0,
            }
            st.last_eval = record
            self._write_log(record)
            self.log(
                f"epoch {st.epoch}: val AP easy {aps['easy']:.4f} medium {aps['medium']:.4f} "
                f"hard {aps['hard']:.4f} ({res.images} images, {record['time']:.0f} s)"
            )
        improved, st.best_metric, st.best_epoch, st.last_eval = broadcast_object(
            (improved, st.best_metric, st.best_epoch, st.last_eval)
        )
        return bool(improved)
