"""Measured latency of a MasterNet backbone (the search's optional ``budget_latency_ms``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from damofd.search.structure import Structure

__all__ = ["measure_latency_ms"]


def measure_latency_ms(
    structure: Structure | str,
    resolution: int = 224,
    *,
    batch_size: int = 1,
    num_classes: int = 1000,
    warmup: int = 2,
    repeats: int = 5,
    device: str = "cpu",
    num_threads: int | None = None,
) -> float:
    """Median forward latency (milliseconds per batch) of the MasterNet of ``structure``.

    Builds :class:`damofd.models.backbones.masternet.MasterNet` (with residual links and the
    ``num_classes``-way classifier, as the reference's latency check), runs ``warmup`` untimed
    and ``repeats`` timed forwards (to the logits; to the last feature map if ``num_classes`` is
    0) of a ``(batch_size, 3, resolution, resolution)`` input in inference mode. The structure
    must be chained (every ``in`` equal to the previous ``out``). ``num_threads`` sets torch's
    intra-op threads for the measurement only (restored afterwards); ``None`` keeps the current.
    """
    import torch

    from damofd.models.backbones.masternet import MasterNet

    model = MasterNet(Structure.of(structure), num_classes=num_classes or None, no_reslink=False)
    model = model.to(device).eval()
    forward = model.forward_logits if num_classes else model.forward_pre_gap
    x = torch.randn(batch_size, 3, resolution, resolution, device=device)
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.inference_mode():
            times = _time_forward(forward, x, warmup, repeats, device.startswith("cuda"))
    finally:
        torch.set_num_threads(old_threads)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def _time_forward(
    forward: Callable[[Any], Any], x: Any, warmup: int, repeats: int, cuda: bool
) -> list[float]:
    import torch

    times = []
    for i in range(warmup + max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        forward(x)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times
