"""Small vectorised array helpers shared by the evaluation modules."""

from __future__ import annotations

import numpy as np

__all__ = ["concat_ranges"]


def concat_ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every pair (s, n), without a Python loop."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    base = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - sizes), sizes)
    return base + np.arange(total, dtype=np.int64)
