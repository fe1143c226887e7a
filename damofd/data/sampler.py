"""Aspect-ratio group sampler (mmdet ``GroupSampler`` / ``DistributedGroupSampler`` semantics).

Indices are shuffled within each aspect group (``dataset.flag``: 1 when w/h > 1), each group is
padded by repetition to a multiple of ``samples_per_gpu × num_replicas``, the resulting
``samples_per_gpu`` chunks are shuffled, and rank ``r`` takes the ``r``-th contiguous slice. With
SCRFD's square crops the flag does not change tensor shapes; it only shapes the sample order, as
in the reference. The order depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["GroupSampler"]


class GroupSampler(Sampler[int]):
    """Deterministic, optionally distributed, aspect-group sampler.

    Args:
        flags: (N,) integer group id of every sample (``WiderFaceDataset.flag``).
        samples_per_gpu: batch size per process.
        num_replicas, rank: distributed world size and this process's rank (default: from
            ``torch.distributed`` when initialised, else 1 and 0).
        seed: base seed; the permutation of epoch ``e`` uses ``seed + e``.
        shuffle: False keeps the dataset order (still padded and split across ranks).
    """

    def __init__(
        self,
        flags: np.ndarray,
        samples_per_gpu: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if samples_per_gpu < 1:
            raise ValueError(f"samples_per_gpu must be >= 1, got {samples_per_gpu}")
        dist = torch.distributed
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.flags = np.asarray(flags, dtype=np.int64).reshape(-1)
        self.samples_per_gpu = int(samples_per_gpu)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0
        self.group_sizes = np.bincount(self.flags) if self.flags.size else np.zeros(0, np.int64)
        unit = self.samples_per_gpu * self.num_replicas
        self.num_samples = sum(
            math.ceil(int(s) / unit) * self.samples_per_gpu for s in self.group_sizes
        )
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation; ``skip`` drops that many of this rank's first
        indices (to resume mid-epoch)."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (before ``skip``)."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        unit = self.samples_per_gpu * self.num_replicas
        order: list[int] = []
        for group, size in enumerate(self.group_sizes.tolist()):
            if size == 0:
                continue
            idx = np.flatnonzero(self.flags == group)
            if self.shuffle:
                idx = idx[torch.randperm(size, generator=g).numpy()]
            total = math.ceil(size / unit) * unit
            order.extend(np.resize(idx, total).tolist())  # pad by repetition
        spg = self.samples_per_gpu
        chunks = len(order) // spg
        perm = torch.randperm(chunks, generator=g).tolist() if self.shuffle else range(chunks)
        order = [order[j] for c in perm for j in range(c * spg, (c + 1) * spg)]
        start = self.num_samples * self.rank
        return order[start : start + self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
