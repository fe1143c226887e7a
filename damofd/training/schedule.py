"""Learning-rate schedule of the official recipes: linear warm-up, then step decay by epoch.

Semantics of mmcv's ``StepLrUpdaterHook(by_epoch=True, warmup='linear')`` (reference spec §5.4):

* regular rate in epoch ``e`` (0-based): ``lr · gamma^k`` with ``k = #{s in steps : e >= s}``;
* during the first ``warmup_iters`` iterations (``i`` = iterations already done, 0-based):
  ``lr_i = regular · (1 − (1 − i / warmup_iters) · (1 − warmup_ratio))`` — so the first
  iteration uses ``warmup_ratio · lr`` and the rate reaches the regular value at
  ``i = warmup_iters``.

The schedule is a pure function of (iteration, epoch); :class:`StepWarmupSchedule` only applies it
to an optimizer and records its settings in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from damofd.errors import ConfigError

__all__ = ["StepWarmupSchedule", "lr_at"]


def lr_at(
    iteration: int,
    epoch: int,
    *,
    base_lr: float,
    steps: Sequence[int],
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.001,
) -> float:
    """Learning rate of the iteration that starts after ``iteration`` iterations, in 0-based
    ``epoch`` (see the module docstring)."""
    k = sum(1 for s in steps if epoch >= s)
    regular = base_lr * gamma**k
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

    def __call__(self, iteration: int, epoch: int) -> float:
        return lr_at(
            iteration,
            epoch,
            base_lr=self.base_lr,
            steps=self.steps,
            gamma=self.gamma,
            warmup_iters=self.warmup_iters,
            warmup_ratio=self.warmup_ratio,
        )

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
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid scheduler state in checkpoint: {e}") from None
