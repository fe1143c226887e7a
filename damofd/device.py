"""One check for every ``--device`` / ``device=`` argument (search proxies, inference, training).

torch is imported on call, so importing this module stays torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from damofd.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["check_device", "onnx_has_cuda", "onnx_providers", "resolve_device_name"]


def resolve_device_name(device: Any) -> Any:
    """``"auto"`` → ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``; anything else is
    returned unchanged (the same rule for ``detect``, ``eval`` and ``train``)."""
    if isinstance(device, str) and device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def onnx_has_cuda() -> bool:
    """Whether this onnxruntime offers the CUDA execution provider (onnxruntime-gpu)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for a ``--device`` value: the CUDA provider (with the
    CPU one as fallback) for ``auto``/``cuda``/``cuda:N`` when onnxruntime-gpu offers it, else
    the CPU provider. ``cuda`` without the CUDA provider is a :class:`ConfigError`."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = onnx_has_cuda()
    if device == "auto":
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if has_cuda
            else ["CPUExecutionProvider"]
        )
    if device == "cuda" or device.startswith("cuda:"):
        if not has_cuda:
            raise ConfigError(
                f"device {device!r}: this onnxruntime has no CUDA provider (install "
                "onnxruntime-gpu), or use --backend torch"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"device {device!r} is not supported by onnxruntime; use auto, cpu or cuda")


def check_device(device: Any) -> torch.device:
    """``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``...) as a
    ``torch.device`` that can be used on this machine (``"auto"``: CUDA when present).

    Raises:
        ConfigError: naming the value: not a torch device name, CUDA requested on a machine
            without it, a CUDA index beyond the visible GPUs, the data-less ``meta`` device, or
            another device type on which torch cannot allocate a tensor here.
    """
    import torch

    device = resolve_device_name(device)
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
