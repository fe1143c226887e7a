"""One check for every ``--device`` / ``device=`` argument (search proxies, inference, training).

torch is imported on call, so importing this module stays torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from damofd.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["check_device"]


def check_device(device: Any) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``...) as a
    ``torch.device`` that can be used on this machine.

    Raises:
        ConfigError: naming the value: not a torch device name, CUDA requested on a machine
            without it, a CUDA index beyond the visible GPUs, the data-less ``meta`` device, or
            another device type on which torch cannot allocate a tensor here.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"device {device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise ConfigError(f"device {device!r} holds no data; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(
                f"device {device!r}: there {'is' if n == 1 else 'are'} only {n} CUDA "
                f"device{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})"
            )
        return dev
    try:
        torch.empty(1, device=dev)
    except Exception as e:  # torch raises RuntimeError, AssertionError... per backend
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise ConfigError(f"device {device!r} cannot be used here: {first}") from None
    return dev
