"""argparse ``type=`` callables shared by the verbs: parse, then range-check.

argparse turns their ``ArgumentTypeError`` into ``argument --flag: ...`` and exit status 2, so a
bad number is named with its flag, never a traceback, and non-finite values (``nan``, ``inf``) are
refused wherever a number is taken.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "finite_float",
    "non_negative_int",
    "nms_threshold",
    "positive_float",
    "positive_int",
    "positive_seconds",
    "score_threshold",
    "unit_fraction",
]


def _ranged(kind: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: parse with ``kind`` and check ``ok``; argparse turns the error
    into ``argument --flag: ...`` and exit status 2."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


score_threshold = _ranged(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
nms_threshold = _ranged(float, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
positive_int = _ranged(int, lambda v: v >= 1, "≥ 1")
non_negative_int = _ranged(int, lambda v: v >= 0, "≥ 0")
positive_seconds = _ranged(float, lambda v: v > 0 and math.isfinite(v), "> 0")
finite_float = _ranged(float, math.isfinite, "a finite number")
unit_fraction = _ranged(float, lambda v: 0 < v <= 1, "in (0, 1]")
positive_float = _ranged(float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0")
