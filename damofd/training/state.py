"""What a training checkpoint holds and how a run resumes from it; the process-wide settings the
trainer changes.

* :func:`checkpoint_dict` / :func:`write_checkpoint` / :func:`restore_checkpoint`: the official
  mmdet layout ``{'meta', 'state_dict', 'optimizer'}`` plus the resume state (``scheduler``,
  ``scaler``, ``rng`` of every rank, ``sampler`` position, ``trainer`` best-metric bookkeeping);
  see :mod:`damofd.training.trainer` for the semantics.
* :func:`rng_state` / :func:`set_rng_state`: python / numpy / torch / CUDA generator states as
  plain, ``weights_only``-loadable values.
* :class:`GlobalTorchState`: threads, determinism and cuDNN flags, captured before
  :meth:`Trainer.train` and restored after it.
"""

from __future__ import annotations

import io
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from damofd.errors import InputError
from damofd.io import atomic_write_bytes
from damofd.training.distributed import all_gather_object
from damofd.training.schedule import StepWarmupSchedule

# damofd.training.trainer imports this module: the annotations name its Trainer without
# importing it (no import cycle)
Trainer = Any

__all__ = [
    "BEST",
    "CONFIG_FILE",
    "LATEST",
    "LOG_FILE",
    "GlobalTorchState",
    "checkpoint_dict",
    "progress_point",
    "restore_checkpoint",
    "rng_state",
    "set_rng_state",
    "write_checkpoint",
]

LATEST = "latest.pth"
BEST = "best.pth"
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.json"


def progress_point(it: int, epochs_done: int, position: int, epoch_len: int) -> str:
    """Where training stands, for people: ``iteration 3 (epoch 1, 3/156 iterations done)`` or
    ``iteration 312 (2 epochs done; starting epoch 3)``; epochs 1-based as in the train log."""
    if position == 0:
        if epochs_done == 0:
            return f"iteration {it} (start of epoch 1)"
        s = "s" if epochs_done != 1 else ""
        return f"iteration {it} ({epochs_done} epoch{s} done; starting epoch {epochs_done + 1})"
    return f"iteration {it} (epoch {epochs_done + 1}, {position}/{epoch_len} iterations done)"


# ----------------------------------------------------------------------------------------------
# RNG


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states (numpy's as plain ints so ``weights_only`` loads it)."""
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


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
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


@dataclass(frozen=True)
class GlobalTorchState:
    """Process-wide settings the trainer changes (torch and OpenCV threads, determinism, cuDNN);
    restored when :meth:`Trainer.train` returns so library users are not surprised."""

    threads: int
    cv2_threads: int
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool

    @classmethod
    def capture(cls) -> GlobalTorchState:
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
# checkpoints


def checkpoint_dict(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint of ``trainer``'s current state. Every rank must call it (the RNG states
    of all ranks are gathered)."""
    from damofd._version import __version__

    model = trainer.model_without_ddp
    cfg, st = trainer.cfg, trainer.state
    meta: dict[str, Any] = {
        "epoch": st.epoch,
        "iter": st.iter,
        "mmdet_version": f"damofd-{__version__}",
        "damofd_version": __version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "CLASSES": ("FG",),
        "config": json.dumps(cfg.to_dict(), indent=1),
        "train_config": cfg.to_dict(),
        "world_size": trainer.dist.world_size,
    }
    det_cfg = getattr(model, "config", None)
    if det_cfg is not None and hasattr(det_cfg, "to_dict"):
        meta["damofd_config"] = det_cfg.to_dict()
    if isinstance(getattr(model, "name", None), str):
        meta["model_name"] = model.name
    rng = all_gather_object(rng_state(trainer.device))
    ckpt: dict[str, Any] = {
        "meta": meta,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "scheduler": trainer.schedule.state_dict(),
        "rng": rng,
        "sampler": {
            "epoch": st.epoch,
            "position": st.epoch_iter,
            "samples_per_gpu": cfg.data.samples_per_gpu,
            "world_size": trainer.dist.world_size,
            "seed": cfg.seed,
        },
        "trainer": {
            "best_metric": st.best_metric,
            "best_epoch": st.best_epoch,
            "metric": cfg.evaluation.metric,
            "last_eval": st.last_eval,
        },
    }
    if cfg.checkpoint_config.save_optimizer:
        ckpt["optimizer"] = trainer.optimizer.state_dict()
    if trainer.amp:
        ckpt["scaler"] = trainer.scaler.state_dict()
    return ckpt


def write_checkpoint(
    ckpt: dict[str, Any], work_dir: Path, epoch: int, *, epoch_file: bool, best: bool
) -> tuple[Path, list[str]]:
    """Serialise ``ckpt`` once and write it atomically as ``latest.pth`` (then
    ``epoch_{epoch}.pth`` and ``best.pth`` when asked); returns latest's path and the names
    written, in order."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    data = buf.getvalue()
    latest = atomic_write_bytes(work_dir / LATEST, data)
    written = [LATEST]
    if epoch_file:
        atomic_write_bytes(work_dir / f"epoch_{epoch}.pth", data)
        written.append(f"epoch_{epoch}.pth")
    if best:
        atomic_write_bytes(work_dir / BEST, data)
        written.append(BEST)
    return latest, written


def restore_checkpoint(trainer: Trainer, path: Path) -> None:
    """Load model, optimizer, scaler, progress, best-metric bookkeeping and RNG states from
    ``path`` into ``trainer`` (after :meth:`Trainer.setup` built them)."""
    from damofd.models.checkpoint import read_checkpoint
    from damofd.models.factory import load_checkpoint

    ckpt = read_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    if "meta" not in ckpt or "state_dict" not in ckpt:
        raise InputError(f"{where} is not a training checkpoint (no meta/state_dict)")
    load_checkpoint(trainer.model_without_ddp, ckpt, strict=True)
    meta = ckpt["meta"]
    if "optimizer" in ckpt:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
    else:
        trainer.log(f"warning: {where} has no optimizer state; momentum restarts from zero")
    if trainer.amp and "scaler" in ckpt:
        trainer.scaler.load_state_dict(ckpt["scaler"])
    _note_schedule_change(trainer, ckpt.get("scheduler"))
    epoch, it = int(meta.get("epoch", 0)), int(meta.get("iter", 0))
    epoch, position = _resume_position(trainer, ckpt.get("sampler") or {}, epoch)
    st = trainer.state
    st.epoch, st.iter, st.epoch_iter = epoch, it, position
    tr = ckpt.get("trainer") or {}
    st.best_metric = tr.get("best_metric")
    st.best_epoch = tr.get("best_epoch")
    st.last_eval = tr.get("last_eval")
    _restore_rng(trainer, ckpt.get("rng"), where)
    trainer.last_checkpoint = path
    trainer.last_checkpoint_iter = it
    where_now = progress_point(it, epoch, position, trainer.epoch_len)
    trainer.log(f"resumed from {path} at {where_now}")


def _note_schedule_change(trainer: Trainer, sched: dict[str, Any] | None) -> None:
    if sched is None:
        return
    old = StepWarmupSchedule.from_state_dict(sched)
    if old != trainer.schedule:
        trainer.log(
            f"note: the schedule differs from the checkpoint's ({old} → "
            f"{trainer.schedule}); the current configuration is used"
        )


def _resume_position(trainer: Trainer, sampler: dict[str, Any], epoch: int) -> tuple[int, int]:
    """``(epoch, batches done in it)`` to resume at; the position is rescaled when the global
    batch changed, and a finished epoch rolls over to the next."""
    d, world = trainer.cfg.data, trainer.dist.world_size
    same_epoch = int(sampler.get("epoch", epoch)) == epoch
    position = int(sampler.get("position", 0)) if same_epoch else 0
    old_batch = int(sampler.get("samples_per_gpu", d.samples_per_gpu)) * int(
        sampler.get("world_size", world)
    )
    new_batch = d.samples_per_gpu * world
    if position and old_batch != new_batch:
        position = (position * old_batch) // new_batch
        trainer.log(
            f"note: global batch changed from {old_batch} to {new_batch}; resuming epoch "
            f"{epoch + 1} at batch {position} (approximately the same sample)"
        )
    if position >= trainer.epoch_len:
        epoch, position = epoch + 1, 0
    return epoch, position


def _restore_rng(trainer: Trainer, rng: Any, where: str) -> None:
    if not (isinstance(rng, list) and rng):
        return
    dist = trainer.dist
    if len(rng) != dist.world_size:
        trainer.log(
            f"note: {where} was written by {len(rng)} processes, this run has "
            f"{dist.world_size}; RNG states are restored from rank 0's"
        )
    mine = rng[dist.rank] if len(rng) > dist.rank else rng[0]
    set_rng_state(mine, trainer.device)
