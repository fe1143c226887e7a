"""Trainer hooks: the extension points of :class:`~damofd.training.trainer.Trainer` and the default
hooks that do its logging, validation and checkpointing.

The trainer is a ladder ``train → epoch → iteration``; at each rung it calls every hook's method
of that point::

    before_train
      before_epoch
        before_iter   [step]   after_iter
      after_epoch
    after_loop      (the epoch loop was left, also by an exception)
    after_train     (only when training ended normally)

Hooks run in order of :func:`hook_priority` (lower first), and in the order they were added where
priorities are equal. User hooks have :data:`NORMAL` priority; the defaults are placed around
them so that user code sees the same state as before this module existed:

================  ========================================  =====================================
hook              does                                      runs (relative to user hooks)
================  ========================================  =====================================
ProgressBarHook   tqdm bar (rank 0, ``log_config.progress``) before; the bar is created after the
                                                            user ``before_train``
LoggerHook        ``start`` / ``train`` (every              before
                  ``log_config.interval``) / ``stop``
                  records of ``log.jsonl``
EvalHook          validation every ``evaluation.interval``  before
                  epochs and after the last; best metric
CheckpointHook    ``latest.pth`` / ``epoch_{n}.pth`` /      after_epoch: before (after EvalHook);
                  ``best.pth`` at epoch ends, ``latest``    after_iter: after the user hooks
                  every ``checkpoint_config.every_iters``
================  ========================================  =====================================

Stopping (SIGINT/SIGTERM, ``time_limit``, ``max_iters``) and the NaN check are not hooks: the stop
flag and the losses travel in one all-reduce inside the step, so every rank stops (or diverges)
at the same iteration, and a stop always saves ``latest.pth``.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from damofd.training.distributed import broadcast_object

if TYPE_CHECKING:
    from damofd.training.config import TrainConfig

# damofd.training.trainer imports this module: the annotations name its Trainer without
# importing it (no import cycle)
Trainer = Any

__all__ = [
    "HIGH",
    "HIGHEST",
    "LOW",
    "LOWEST",
    "NORMAL",
    "CheckpointHook",
    "EvalHook",
    "LoggerHook",
    "ProgressBarHook",
    "TrainerHook",
    "default_hooks",
    "hook_priority",
]

HIGHEST, HIGH, NORMAL, LOW, LOWEST = 0, 25, 50, 75, 100


class TrainerHook:
    """Extension points; override any subset. Each receives the :class:`Trainer`
    (``trainer.state``, ``trainer.model``, ``trainer.last_losses`` …).

    ``priority`` orders the hooks of a point (lower first, :data:`NORMAL` by default);
    ``priorities`` overrides it for single points, e.g. ``{"after_iter": LOW}``.
    """

    priority: ClassVar[int] = NORMAL
    priorities: ClassVar[Mapping[str, int]] = MappingProxyType({})

    def before_train(self, trainer: Trainer) -> None:
        pass

    def before_epoch(self, trainer: Trainer) -> None:
        pass

    def before_iter(self, trainer: Trainer) -> None:
        pass

    def after_iter(self, trainer: Trainer) -> None:
        pass

    def after_epoch(self, trainer: Trainer) -> None:
        pass

    def after_loop(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


def hook_priority(hook: object, point: str) -> int:
    """The priority of ``hook`` at ``point`` (duck-typed hooks without the attributes:
    :data:`NORMAL`)."""
    per_point: Mapping[str, int] = getattr(hook, "priorities", None) or {}
    return int(per_point.get(point, getattr(hook, "priority", NORMAL)))


def default_hooks(cfg: TrainConfig) -> list[TrainerHook]:
    """The hooks every :class:`Trainer` installs for ``cfg``."""
    hooks: list[TrainerHook] = []
    if cfg.log_config.progress:
        hooks.append(ProgressBarHook())
    hooks.append(LoggerHook())
    if cfg.data.val and cfg.evaluation.interval > 0:
        hooks.append(EvalHook())
    hooks.append(CheckpointHook())
    return hooks


# ----------------------------------------------------------------------------------------------
# logging


class ProgressBarHook(TrainerHook):
    """A tqdm bar over the run's iterations on stderr (rank 0): redrawn every 0.5 s on a
    terminal, every 30 s otherwise."""

    priority = HIGHEST + 10
    priorities = MappingProxyType({"before_train": LOWEST})

    def __init__(self) -> None:
        self.bar: Any = None

    def before_train(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main or trainer.state.iter >= trainer.total_iters:
            return
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=trainer.total_iters,
            initial=trainer.state.iter,
            unit="it",
            dynamic_ncols=True,
            mininterval=0.5 if tty else 30.0,
            file=sys.stderr,
        )

    def after_iter(self, trainer: Trainer) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix(
            epoch=trainer.state.epoch + 1,
            loss=f"{trainer.last_losses['loss']:.4f}",
            lr=f"{trainer.lr:.2e}",
            refresh=False,  # redraw at tqdm's own pace (mininterval)
        )

    def after_loop(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss / 1024.0, "cpu_max_rss"


class LoggerHook(TrainerHook):
    """``log.jsonl`` records ``start`` (and the console line of the run), ``train`` (means over
    every ``log_config.interval`` iterations; the window spans epoch ends) and ``stop``."""

    priority = HIGHEST + 20

    def __init__(self) -> None:
        self.window: dict[str, float] = {}
        self.n_window = 0

    def before_train(self, trainer: Trainer) -> None:
        self.window, self.n_window = {}, 0
        trainer.write_log(_start_record(trainer))
        world, spg = trainer.dist.world_size, trainer.cfg.data.samples_per_gpu
        trainer.log(
            f"training {getattr(trainer.model_without_ddp, 'name', None) or 'detector'} on "
            f"{len(trainer.dataset)} images ({trainer.epoch_len} iterations/epoch, global batch "
            f"{world * spg}; {trainer.schedule.describe()}) on {trainer.device}"
            + (f" × {world} processes" if world > 1 else "")
            + f"; work dir {trainer.work_dir}"
        )

    def after_iter(self, trainer: Trainer) -> None:
        w = self.window
        for k, v in trainer.last_losses.items():
            w[k] = w.get(k, 0.0) + v
        t_start, t_data, t_step = trainer.iter_times
        w["time"] = w.get("time", 0.0) + (t_step - t_start)
        w["data_time"] = w.get("data_time", 0.0) + (t_data - t_start)
        w["images"] = w.get("images", 0.0) + trainer.batch_images
        self.n_window += 1
        if self.n_window >= trainer.cfg.log_config.interval:
            self._flush(trainer, trainer.lr)

    def after_train(self, trainer: Trainer) -> None:
        if self.n_window:  # the last, partial window
            self._flush(trainer, trainer.optimizer.param_groups[0]["lr"])
        st = trainer.state
        trainer.write_log(
            {
                "mode": "stop",
                "reason": trainer.stopped,
                "epoch": st.epoch,
                "iter": st.iter,
                "images_per_s": trainer.images_per_s,
                "session_s": trainer.session_s,
            }
        )

    def _flush(self, trainer: Trainer, lr: float) -> None:
        st, w, n = trainer.state, self.window, self.n_window
        mem, kind = _memory_mb(trainer.device)
        # after an epoch end the window's last iteration belongs to the epoch just finished
        ended = st.epoch_iter == 0 and st.iter > 0
        rec: dict[str, Any] = {
            "mode": "train",
            "epoch": st.epoch if ended else st.epoch + 1,
            "iter": st.iter,
            "epoch_iter": trainer.epoch_len if ended else st.epoch_iter,
            "epoch_len": trainer.epoch_len,
            "lr": lr,
        }
        for k in trainer.last_losses:
            rec[k] = w.get(k, 0.0) / n
        rec["time"] = w["time"] / n
        rec["data_time"] = w["data_time"] / n
        rec["images_per_s"] = w["images"] / w["time"] if w["time"] > 0 else None
        rec["memory_mb"] = round(mem, 1)
        rec["memory_kind"] = kind
        trainer.write_log(rec)
        self.window, self.n_window = {}, 0


def _start_record(trainer: Trainer) -> dict[str, Any]:
    cfg, st, d = trainer.cfg, trainer.state, trainer.cfg.data
    world = trainer.dist.world_size
    return {
        "mode": "start",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": getattr(trainer.model_without_ddp, "name", None) or cfg.model,
        "structure": cfg.structure,
        "device": str(trainer.device),
        "world_size": world,
        "samples_per_gpu": d.samples_per_gpu,
        "global_batch": world * d.samples_per_gpu,
        "lr": trainer.base_lr,
        "steps": list(trainer.schedule.steps),
        "warmup_iters": trainer.schedule.warmup_iters,
        "schedule": trainer.schedule.state_dict(),
        "total_epochs": cfg.total_epochs,
        "epoch_len": trainer.epoch_len,
        "train_images": len(trainer.dataset),
        "amp": trainer.amp,
        "channels_last": trainer.channels_last,
        "resumed_from": None if trainer.resumed_from is None else str(trainer.resumed_from),
        "epoch": st.epoch,
        "iter": st.iter,
        "load_from": cfg.load_from,
    }


# ----------------------------------------------------------------------------------------------
# validation and checkpoints


class EvalHook(TrainerHook):
    """Validate every ``evaluation.interval`` epochs and after the last one; track the best
    ``evaluation.metric`` (``state.best_metric`` / ``best_epoch``) and set ``state.improved``
    for :class:`CheckpointHook`. Every rank calls it (the result is broadcast)."""

    priority = HIGHEST + 30

    def after_epoch(self, trainer: Trainer) -> None:
        st, ev = trainer.state, trainer.cfg.evaluation
        last = st.epoch >= trainer.cfg.total_epochs
        due = trainer.validator is not None and (st.epoch % ev.interval == 0 or last)
        st.improved = self.evaluate(trainer) if due else False

    def evaluate(self, trainer: Trainer) -> bool:
        """Validate; returns True (on every rank) when the metric improved."""
        assert trainer.validator is not None
        st, ev, dist = trainer.state, trainer.cfg.evaluation, trainer.dist
        t0 = time.perf_counter()
        res = trainer.validator.evaluate(
            trainer.model_without_ddp,
            str(trainer.device),
            rank=dist.rank,
            world_size=dist.world_size,
        )
        improved = False
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
            trainer.write_log(record)
            trainer.log(
                f"epoch {st.epoch}: val AP easy {aps['easy']:.4f} medium {aps['medium']:.4f} "
                f"hard {aps['hard']:.4f} ({res.images} images, {record['time']:.0f} s)"
            )
        improved, st.best_metric, st.best_epoch, st.last_eval = broadcast_object(
            (improved, st.best_metric, st.best_epoch, st.last_eval)
        )
        return bool(improved)


class CheckpointHook(TrainerHook):
    """``latest.pth`` at every epoch end (also ``epoch_{n}.pth`` every
    ``checkpoint_config.interval`` epochs and after the last, ``best.pth`` when the validation
    improved), and every ``checkpoint_config.every_iters`` iterations inside an epoch — after the
    user hooks of that iteration. Every rank calls it (the RNG states are gathered)."""

    priority = HIGHEST + 40
    priorities = MappingProxyType({"after_iter": LOW})

    def after_iter(self, trainer: Trainer) -> None:
        every, st = trainer.cfg.checkpoint_config.every_iters, trainer.state
        if every and st.iter % every == 0 and st.epoch_iter < trainer.epoch_len:
            trainer.save_checkpoint()

    def after_epoch(self, trainer: Trainer) -> None:
        st, ck = trainer.state, trainer.cfg.checkpoint_config
        last = st.epoch >= trainer.cfg.total_epochs
        epoch_file = bool(ck.interval) and (st.epoch % ck.interval == 0 or last)
        trainer.save_checkpoint(epoch_file=epoch_file, best=st.improved)
