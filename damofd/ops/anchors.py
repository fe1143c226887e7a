"""Anchor points and anchor boxes of the SCRFD head (reference spec §4.3).

mmdet ``AnchorGenerator`` with ``center_offset=0``: on a feature map of size (h, w) and stride s
the anchor centres are ``(x·s, y·s)`` for ``y < h``, ``x < w`` (top-left of each cell, no +0.5),
flattened row-major, each location repeated for its ``A`` anchors (location-major, anchor-minor).
This matches ``head_output.permute(0, 2, 3, 1).reshape(B, -1, C)`` of an NCHW head output with
anchor-major channels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the onnxruntime path never needs it
    import torch
    from torch import Tensor

__all__ = [
    "SCRFD_ANCHOR_BASE_SIZES",
    "SCRFD_ANCHOR_SCALES",
    "SCRFD_STRIDES",
    "anchor_boxes",
    "anchor_centers",
    "anchor_centers_numpy",
    "num_anchors_total",
]

SCRFD_STRIDES: tuple[int, ...] = (8, 16, 32)
SCRFD_ANCHOR_BASE_SIZES: tuple[int, ...] = (16, 64, 256)
SCRFD_ANCHOR_SCALES: tuple[float, ...] = (1.0, 2.0)


@lru_cache(maxsize=64)
def _centers_np(h: int, w: int, stride: int, num_anchors: int) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    c = np.stack((xs, ys), axis=-1).reshape(-1, 2).astype(np.float32) * stride
    if num_anchors > 1:
        c = np.repeat(c, num_anchors, axis=0)
    c.setflags(write=False)
    return c


def anchor_centers_numpy(h: int, w: int, stride: int, num_anchors: int = 2) -> np.ndarray:
    """(h·w·A, 2) float32 anchor centres ``(x·s, y·s)`` in pixels (cached, read-only)."""
    return _centers_np(int(h), int(w), int(stride), int(num_anchors))


def anchor_centers(
    h: int,
    w: int,
    stride: int,
    num_anchors: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Torch version of :func:`anchor_centers_numpy` (a fresh tensor on ``device``, float32 by
    default)."""
    import torch

    if dtype is None:
        dtype = torch.float32
    return torch.from_numpy(anchor_centers_numpy(h, w, stride, num_anchors).copy()).to(
        device=device, dtype=dtype
    )


def anchor_boxes(
    h: int,
    w: int,
    stride: int,
    base_size: int,
    scales: tuple[float, ...] = SCRFD_ANCHOR_SCALES,
    device: torch.device | str | None = None,
) -> Tensor:
    """(h·w·A, 4) ``xyxy`` square anchors of side ``base_size·scale`` centred on the points.

    Used only by the ATSS assigner. Anchor order within a location follows ``scales``.
    """
    import torch

    centers = anchor_centers(h, w, stride, 1, device=device)
    sides = torch.tensor([base_size * s for s in scales], dtype=torch.float32, device=device)
    half = (sides / 2)[None, :, None]  # (1, A, 1)
    c = centers[:, None, :]  # (HW, 1, 2)
    boxes = torch.cat((c - half, c + half), dim=-1)  # (HW, A, 4)
    return boxes.reshape(-1, 4)


def num_anchors_total(
    height: int, width: int, strides: tuple[int, ...] = SCRFD_STRIDES, num_anchors: int = 2
) -> int:
    """Number of anchors for an input of ``height``×``width`` (multiples of 32)."""
    return sum((height // s) * (width // s) * num_anchors for s in strides)
