"""The training loop: single process (CPU or GPU) or ``torchrun`` DDP, resumable at any iteration.

Per iteration: the learning rate of the recipe's schedule (:mod:`damofd.training.schedule`) is
set, the batch goes through the detector (under ``torch.autocast`` fp16 with ``--amp`` on CUDA),
:class:`~damofd.training.criterion.SCRFDCriterion` computes ``loss_cls + loss_bbox (+
loss_kps)`` (normalisers averaged over ranks, reference spec §5.3), the losses are averaged over
ranks for logging and checked for NaN/inf *before* the backward pass (every rank sees the same
value and stops at the same iteration), then SGD steps (through a ``GradScaler`` under AMP).

The trainer is a ladder of small methods, ``train → _train_epoch → _train_iter``, with hook
points before and after each rung; logging, the progress bar, validation and checkpoint cadence
are default hooks (:mod:`damofd.training.hooks`), the components come from builders
(:mod:`damofd.training.builders`), checkpoints and RNG states from :mod:`damofd.training.state`.

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

import json
import os
import random
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

from damofd.errors import ConfigError, DamoFDError, InputError
from damofd.io import atomic_write_json, ensure_writable_dir, remove_stale_tmp
from damofd.training.builders import (
    build_criterion,
    build_dataset,
    build_loader,
    build_model,
    build_optimizer,
    build_schedule,
    build_validator,
    load_pretrained,
    prepare_model,
    resolve_device,
    total_iters,
)
from damofd.training.config import TrainConfig
from damofd.training.distributed import DistInfo, barrier, destroy_distributed, init_distributed
from damofd.training.hooks import TrainerHook, default_hooks, hook_priority
from damofd.training.state import (
    BEST,
    CONFIG_FILE,
    LATEST,
    LOG_FILE,
    GlobalTorchState,
    checkpoint_dict,
    progress_point,
    restore_checkpoint,
    write_checkpoint,
)

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
    ``epoch_iter``: iterations completed inside the current epoch; ``improved``: the validation
    of the epoch that just ended raised ``best_metric`` (set by the EvalHook, not saved)."""

    epoch: int = 0
    iter: int = 0
    epoch_iter: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    last_eval: dict[str, Any] | None = None
    improved: bool = False


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


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


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

    ``default_hooks`` (from the config, :func:`damofd.training.hooks.default_hooks`) log,
    validate and checkpoint; ``hooks`` are the user's. What hooks read, per iteration:
    ``state``, ``last_losses`` (rank-averaged), ``lr``, ``batch_images`` (images in the global
    batch), ``iter_times`` (``perf_counter`` at the iteration start, batch ready, step done);
    at the end: ``stopped``, ``images_per_s``, ``session_s``.
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
        self.default_hooks: list[TrainerHook] = default_hooks(self.cfg)
        self._log_fn = log
        self.state = TrainState()
        self.last_losses: dict[str, float] = {}
        self._ready = False
        self._stop_signal: str | None = None
        self.stop_reason: str | None = None

    # -- public helpers -----------------------------------------------------------------------
    def register_hook(self, hook: TrainerHook) -> None:
        self.hooks.append(hook)

    @property
    def model_without_ddp(self) -> nn.Module:
        m = self.model
        return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m

    @property
    def stopped(self) -> str:
        """Why the loop ended: ``completed``, ``max_iters``, ``time_limit`` or ``signal``."""
        return self.stop_reason or "completed"

    def log(self, msg: str) -> None:
        if not getattr(self, "dist", DistInfo()).is_main:
            return
        if self._log_fn is not None:
            self._log_fn(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def write_log(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one JSON line to ``log.jsonl`` (rank 0)."""
        if not self.dist.is_main:
            return
        line = json.dumps(record, allow_nan=True)
        with open(self.work_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def call_hooks(self, point: str) -> None:
        """Run ``point`` (``before_train`` … ``after_train``) of every hook, default and user,
        in order of priority (:func:`damofd.training.hooks.hook_priority`)."""
        hooks = sorted([*self.default_hooks, *self.hooks], key=lambda h: hook_priority(h, point))
        for h in hooks:
            fn = getattr(h, point, None)
            if fn is not None:
                fn(self)

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build data, model, optimizer and state (idempotent)."""
        if self._ready:
            return
        cfg = self.cfg
        if not cfg.data.train:
            raise ConfigError("config key 'data.train': no training set given (--train)")
        self._setup_process()
        if self.dist.is_main:
            self._check_work_dir()
        barrier()
        # data first: missing images / malformed labels fail before anything is trained
        self.dataset, self.sampler = build_dataset(cfg, self.dist)
        self.epoch_len = self.sampler.num_samples // cfg.data.samples_per_gpu
        self.total_iters = total_iters(cfg, self.epoch_len)
        self.validator = build_validator(cfg)
        self._setup_model()
        self.base_lr = cfg.effective_lr(self.dist.world_size)
        self.optimizer = build_optimizer(self.model_without_ddp, cfg, self.base_lr)
        self.schedule = build_schedule(cfg, self.base_lr, self.epoch_len)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # seeds after the model: its init used seed alone, identical on every rank
        random.seed(cfg.seed + self.dist.rank)
        np.random.seed((cfg.seed + self.dist.rank) % 2**32)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.resumed_from: Path | None = None
        ckpt_path = self._resume_path()
        if ckpt_path is not None:
            self._restore(ckpt_path)
            self.resumed_from = ckpt_path
        self._ready = True

    def _setup_process(self) -> None:
        """Process group, device, AMP, threads and determinism."""
        cfg = self.cfg
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

    def _setup_model(self) -> None:
        """Model (seeded init, optional fine-tuning weights), its placement and the loss."""
        cfg = self.cfg
        model = build_model(cfg)
        self.load_report = None
        if cfg.load_from:
            self.load_report = load_pretrained(
                model, cfg.load_from, strict=cfg.load_strict, log=self.log
            )
        self.model: nn.Module
        self.model, model, self.channels_last = prepare_model(model, cfg, self.device, self.dist)
        self.use_kps = bool(getattr(model, "use_kps", False))
        self.criterion = build_criterion(model, self.device)

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
        return checkpoint_dict(self)

    def save_checkpoint(self, *, epoch_file: bool = False, best: bool = False) -> Path | None:
        """Write ``latest.pth`` (and ``epoch_{n}.pth`` / ``best.pth``) atomically on rank 0.
        Every rank must call it (the RNG states are gathered)."""
        ckpt = self._checkpoint_dict()
        if not self.dist.is_main:
            return None
        st = self.state
        latest, written = write_checkpoint(
            ckpt, self.work_dir, st.epoch, epoch_file=epoch_file, best=best
        )
        self.write_log({"mode": "checkpoint", "epoch": st.epoch, "iter": st.iter, "files": written})
        self.last_checkpoint = latest
        self.last_checkpoint_iter = st.iter
        return latest

    def _restore(self, path: Path) -> None:
        restore_checkpoint(self, path)

    # -- the step -----------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict[str, Any]]:
        """An iterator over this epoch's batches (from the current position); the DataLoader
        (:func:`~damofd.training.builders.build_loader`) is built once per session."""
        d = self.cfg.data
        self.sampler.set_epoch(self.state.epoch, skip=self.state.epoch_iter * d.samples_per_gpu)
        if getattr(self, "_dataloader", None) is None:
            self._dataloader = build_loader(
                self.dataset, self.sampler, self.cfg, self.device, self.log
            )
        return iter(self._dataloader)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            _set_bn_eval(self.model)

    def _step(self, batch: dict[str, Any]) -> Tensor:
        """One optimisation step; returns the rank-averaged ``[loss, loss_cls, loss_bbox,
        (loss_kps)]`` vector followed by the stop flag (after the finiteness check)."""
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
        # the stop request rides the loss all-reduce, so every rank stops at the same iteration
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

    # -- stopping -----------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        if self._stop_signal is not None:
            return True
        tl = self.cfg.time_limit
        return bool(tl and time.monotonic() - self._t_session > tl)

    def _check_stop(self, flag: bool) -> str | None:
        """The reason to stop after this iteration (``flag``: a rank asked to stop), or None."""
        if flag:
            return "signal" if self._stop_signal else "time_limit"
        if self.cfg.max_iters and self.state.iter >= self.cfg.max_iters:
            return "max_iters"
        return None

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
        self.write_log(
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

    # -- the loop: train → _train_epoch → _train_iter -------------------------------------------
    def train(self) -> TrainResult:
        """Run (or continue) the training; returns a :class:`TrainResult`.

        Raises :class:`TrainingDivergedError` on a NaN/inf loss (nothing is written; the last
        good checkpoint stays).
        """
        saved = GlobalTorchState.capture()
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
        self._before_train()
        st, cfg = self.state, self.cfg
        try:
            while st.epoch < cfg.total_epochs and self.stop_reason is None:
                if cfg.max_iters and st.iter >= cfg.max_iters:
                    self.stop_reason = "max_iters"
                    break
                self._train_epoch()
        finally:
            self.call_hooks("after_loop")
        return self._after_train()

    def _before_train(self) -> None:
        self._t_session = time.monotonic()
        self.stop_reason = None
        self.images_seen = 0
        if self.dist.is_main:
            atomic_write_json(self.work_dir / CONFIG_FILE, self.cfg.to_dict())
        self.call_hooks("before_train")
        self._t_train_start = time.perf_counter()

    def _train_epoch(self) -> None:
        st = self.state
        self.call_hooks("before_epoch")
        self._set_train_mode()
        loader = self._loader()
        t_start = time.perf_counter()
        for batch in loader:
            self._train_iter(batch, t_start)
            if self.stop_reason is not None:
                break
            t_start = time.perf_counter()
        if self.stop_reason is not None and st.epoch_iter < self.epoch_len:
            self.save_checkpoint()  # a stop inside an epoch always leaves latest.pth
            return
        st.epoch += 1
        st.epoch_iter = 0
        self.call_hooks("after_epoch")

    def _train_iter(self, batch: dict[str, Any], t_start: float) -> None:
        st = self.state
        t_data = time.perf_counter()
        self.call_hooks("before_iter")
        self.lr = self.schedule.apply(self.optimizer, st.iter, st.epoch)
        vec = self._step(batch)
        st.iter += 1
        st.epoch_iter += 1
        self.iter_times = (t_start, t_data, time.perf_counter())
        self.batch_images = int(batch["img"].shape[0]) * self.dist.world_size
        self.images_seen += self.batch_images
        self.last_losses = dict(zip(self._loss_names, vec[:-1].tolist()))
        stop_flag = vec[-1].item() > 0
        self.call_hooks("after_iter")
        self.stop_reason = self._check_stop(stop_flag)

    def _after_train(self) -> TrainResult:
        st = self.state
        elapsed = time.perf_counter() - self._t_train_start
        n = self.images_seen
        self.images_per_s = n / elapsed if elapsed > 0 and n else None
        self.session_s = elapsed
        self.call_hooks("after_train")
        barrier()
        best = self.work_dir / BEST
        result = TrainResult(
            epochs=st.epoch,
            iters=st.iter,
            stopped=self.stopped,
            work_dir=self.work_dir,
            latest=getattr(self, "last_checkpoint", None),
            best=best if best.is_file() else None,
            best_metric=st.best_metric,
            last_eval=st.last_eval,
            images_per_s=self.images_per_s,
        )
        where = progress_point(st.iter, st.epoch, st.epoch_iter, self.epoch_len)
        ips, metric = self.images_per_s, self.cfg.evaluation.metric
        self.log(
            f"stopped ({self.stopped}) at {where}"
            + (f"; {ips:.2f} images/s" if ips else "")
            + (f"; best {metric} AP {st.best_metric:.4f}" if st.best_metric else "")
        )
        return result
