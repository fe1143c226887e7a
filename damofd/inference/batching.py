"""Batch execution for :class:`~damofd.inference.FaceDetector`: inputs as a list, and the forward
passes of images sharing a canvas size.

A group of images with the same canvas runs on the main backend, or, when it needs more than one
forward pass and the detector has worker backends, is split into contiguous shards that the
workers run concurrently, each doing its own preprocessing, forward pass and decoding. Every
backend has a :class:`Lane` with its own reusable input buffer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from damofd.errors import InputError

from .backends import Backend
from .postprocess import ModelLayout, decode_outputs
from .preprocess import Protocol, ResizePlan, fill_canvas

__all__ = ["DecodeSettings", "Decoded", "Lane", "LaneSet", "Member", "as_items", "is_single"]

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # boxes, scores, keypoints
Member = tuple[int, np.ndarray, ResizePlan]  # index in the chunk, BGR image, its resize plan


def is_single(inputs: Any) -> bool:
    """``inputs`` is one image (path, URL, bytes, numpy array, PIL image), not a list of them."""
    return isinstance(inputs, (str, os.PathLike, np.ndarray, bytes, bytearray, memoryview)) or (
        type(inputs).__module__.startswith("PIL.")
    )


def as_items(inputs: Any) -> list[Any]:
    """One input or an iterable of inputs as a list; anything else is an :class:`InputError`."""
    if is_single(inputs):
        return [inputs]
    if inputs is None or isinstance(inputs, (int, float, dict)):
        raise InputError(
            f"no image: got {type(inputs).__name__} (expected a path, URL, bytes, numpy array, "
            "PIL image, or a list of them)"
        )
    try:
        return list(inputs)
    except TypeError:
        raise InputError(
            f"unsupported input {type(inputs).__name__} (expected a path, URL, bytes, numpy "
            "array, PIL image, or a list of them)"
        ) from None


@dataclass(frozen=True)
class DecodeSettings:
    """How outputs become faces: the detector's layout, protocol and thresholds for one chunk."""

    layout: ModelLayout
    protocol: Protocol
    score_thr: float
    nms_thr: float
    max_faces: int
    max_faces_metric: str


class Lane:
    """One backend with its own reusable input buffer (a worker of the data-parallel path)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.blob: np.ndarray | None = None

    def canvas(self, b: int, h: int, w: int) -> np.ndarray:
        if self.blob is None or self.blob.shape != (b, 3, h, w):
            self.blob = np.empty((b, 3, h, w), np.float32)
        return self.blob

    def forward_decode(
        self, images: list[np.ndarray], plans: list[ResizePlan], settings: DecodeSettings
    ) -> list[Decoded]:
        """One forward pass over images sharing a canvas size."""
        ch, cw = plans[0].canvas
        blob = self.canvas(len(images), ch, cw)
        pad = settings.protocol.pad_value
        for i, (img, plan) in enumerate(zip(images, plans)):
            fill_canvas(blob[i], img, plan, pad)
        outs = self.backend.run(blob)
        res = []
        for i, plan in enumerate(plans):
            d = decode_outputs(
                [o[i] for o in outs],
                settings.layout,
                plan,
                settings.protocol,
                settings.score_thr,
                settings.nms_thr,
                settings.max_faces,
                settings.max_faces_metric,
            )
            res.append((d.boxes, d.scores, d.keypoints))
        return res

    def run(self, members: list[Member], bsz: int, settings: DecodeSettings) -> list[Decoded]:
        """Forward passes of at most ``bsz`` images (and the backend's batch limit) each."""
        mb = self.backend.layout.max_batch
        step = min(bsz, mb) if mb else bsz
        out: list[Decoded] = []
        for start in range(0, len(members), step):
            part = members[start : start + step]
            out += self.forward_decode([m[1] for m in part], [m[2] for m in part], settings)
        return out


class LaneSet:
    """The main backend's lane and the worker lanes (with the thread pool they share)."""

    def __init__(self, main: Backend, workers: Sequence[Backend] = ()) -> None:
        self.main = Lane(main)
        self.workers = [Lane(b) for b in workers]
        self.pool: ThreadPoolExecutor | None = None

    def run_group(self, members: list[Member], bsz: int, settings: DecodeSettings) -> list[Decoded]:
        """Decoded faces for images sharing a canvas: on the main backend, or split across the
        workers (contiguous shards, run concurrently) when there is more than one forward pass.

        The unit of the split is the backend's batch limit: one image for dynamic-batch models,
        N images for a file with a fixed batch axis N (whose passes always run N images, padded),
        so that workers never pad what one pass could have held.
        """
        unit = (self.workers[0].backend.layout.max_batch or 1) if self.workers else 1
        passes = -(-len(members) // unit)
        nw = min(len(self.workers), passes)
        if nw < 2:
            return self.main.run(members, bsz, settings)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(len(self.workers), thread_name_prefix="damofd")
        shares = np.linspace(0, passes, nw + 1).round().astype(int)
        bounds = np.minimum(shares * unit, len(members))
        futures = [
            self.pool.submit(self.workers[k].run, members[bounds[k] : bounds[k + 1]], bsz, settings)
            for k in range(nw)
        ]
        out: list[Decoded] = []
        for f in futures:
            out += f.result()
        return out
