"""Learning-rate schedules: linear warm-up, then step decay by epoch (the official recipes) or
cosine annealing by iteration (short runs).

``policy="step"`` — mmcv's ``StepLrUpdaterHook(by_epoch=True, warmup='linear')`` (reference
spec §5.4):

* regular rate in epoch ``e`` (0-based): ``lr · gamma^k`` with ``k = #{s in steps : e >= s}``;
* during the first ``warmup_iters`` iterations (``i`` = iterations already done, 0-based):
  ``lr_i = regular · (1 − (1 − i / warmup_iters) · (1 − warmup_ratio))`` — so the first
  iteration uses ``warmup_ratio · lr`` and the rate reaches the regular value at
  ``i = warmup_iters``.

``policy="cosine"`` — mmcv's ``CosineAnnealingLrUpdaterHook(by_epoch=False, min_lr_ratio=r)``:
regular rate ``lr · (r + (1 − r) · (1 + cos(π · i / total_iters)) / 2)``, with the same linear
warm-up factor on top. For a budget of a few CPU-hours it spends the whole run decaying smoothly
instead of most of it at the peak rate (docs/training.md, "Short CPU runs").

The schedule is a pure function of (iteration, epoch); :class:`StepWarmupSchedule` only applies it
to an optimizer and records its settings in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from damofd.errors import ConfigError

__all__ = ["POLICIES", "StepWarmupSchedule", "lr_at"]

POLICIES = ("step", "cosine")


def lr_at(
    iteration: int,
    epoch: int,
    *,
    base_lr: float,
    steps: Sequence[int],
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.001,
    policy: str = "step",
    total_iters: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate of the iteration that starts after ``iteration`` iterations, in 0-based
    ``epoch`` (see the module docstring). ``total_iters`` and ``min_lr_ratio`` are used by the
    cosine policy only."""
    if policy == "cosine":
        progress = min(max(iteration / total_iters, 0.0), 1.0) if total_iters > 0 else 0.0
        regular = base_lr * (
            min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        )
    elif policy == "step":
        k = sum(1 for s in steps if epoch >= s)
        regular = base_lr * gamma**k
    else:
        raise ConfigError(f"unknown lr policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if warmup_iters > 0 and iteration < warmup_iters:
        return regular * (1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio))
    return regular


@dataclass
class StepWarmupSchedule:
    """:func:`lr_at` bound to its settings; :meth:`apply` writes the rate into an optimizer."""

    base_lr: float
    steps: tuple[int, ...]
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    policy: str = "step"
    total_iters: int = 0
    min_lr_ratio: float = 0.0

    def __call__(self, iteration: int, epoch: int) -> float:
        return lr_at(
            iteration,
            epoch,
            base_lr=self.base_lr,
            steps=self.steps,
            gamma=self.gamma,
            warmup_iters=self.warmup_iters,
            warmup_ratio=self.warmup_ratio,
            policy=self.policy,
            total_iters=self.total_iters,
            min_lr_ratio=self.min_lr_ratio,
        )

    def describe(self) -> str:
        """One line for the log: rate, warm-up and decay."""
        warm = f"{self.warmup_iters} warm-up iterations" if self.warmup_iters else "no warm-up"
        if self.policy == "cosine":
            return (
                f"lr {self.base_lr:g}, {warm}, cosine over {self.total_iters} iterations to "
                f"{self.min_lr_ratio:g}×"
            )
        return f"lr {self.base_lr:g}, {warm}, ×{self.gamma:g} at epochs {list(self.steps)}"

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> float:
        """Set every param group's ``lr`` for this iteration; returns it."""
        lr = self(iteration, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> StepWarmupSchedule:
        try:
            return cls(
                base_lr=float(d["base_lr"]),
                steps=tuple(int(s) for s in d["steps"]),
                gamma=float(d["gamma"]),
                warmup_iters=int(d["warmup_iters"]),
                warmup_ratio=float(d["warmup_ratio"]),
                # checkpoints written before the cosine policy existed are step schedules
                policy=str(d.get("policy", "step")),
                total_iters=int(d.get("total_iters", 0)),
                min_lr_ratio=float(d.get("min_lr_ratio", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid scheduler state in checkpoint: {e}") from None
