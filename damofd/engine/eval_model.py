"""The detector of a ``damofd eval`` run (:func:`damofd.engine.wider_eval.run_wider_eval`).

:func:`build_eval_model` turns what the caller passed (a model spec resolved by
:func:`damofd.models.sources.resolve_source`, an ``nn.Module`` or a ready
:class:`~damofd.inference.FaceDetector`) into a detector with the run's settings, a label (the
default work-dir name) and an identity (recorded in the run's manifest, so a work dir is never
reused for other weights); :func:`to_onnx_model` exports a PyTorch one for ``backend="onnx"``.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from damofd.errors import ConfigError

__all__ = ["EvalModel", "build_eval_model", "model_label", "remove_empty_dirs", "to_onnx_model"]


@dataclass
class EvalModel:
    detector: Any  # FaceDetector
    label: str
    identity: str
    backend: str


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_module(model: Any) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _identity_of_spec(spec: str, weights: str | os.PathLike[str] | None) -> str:
    p = Path(spec)
    ident = f"file:{p.name}:sha256:{_sha256_file(p)}" if p.is_file() else f"name:{spec}"
    if weights is not None:
        w = Path(os.fspath(weights))
        ident += f"+weights:{w.name}:sha256:{_sha256_file(w)}" if w.is_file() else ""
    return ident


def _identity_of_detector(det: Any) -> str:
    path = getattr(det.backend, "path", None)
    if isinstance(path, Path) and path.is_file():
        return f"file:{path.name}:sha256:{_sha256_file(path)}"
    model = getattr(det.backend, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        return f"module:sha256:{_sha256_module(model)}"
    return f"backend:{det.backend.description}"


def _label_of_detector(det: Any) -> str:
    path = getattr(det.backend, "path", None)
    if isinstance(path, Path):
        return path.stem
    model = getattr(det.backend, "model", None)
    return str(getattr(model, "name", None) or "model")


def build_eval_model(
    model: Any,
    *,
    backend: str | None,
    weights: str | os.PathLike[str] | None,
    common: dict[str, Any],
    device: str,
    fp16: bool,
    threads: int | None,
) -> EvalModel:
    """A FaceDetector for ``model`` plus a label (work-dir name) and an identity (manifest).

    With ``backend="onnx"`` a PyTorch model is returned on the torch backend all the same;
    :func:`to_onnx_model` converts it once the work dir is known to be usable.
    """
    from torch import nn

    from damofd.inference import FaceDetector
    from damofd.inference.detector import choose_backend
    from damofd.models.sources import resolve_source

    if backend not in (None, "torch", "onnx"):
        raise ConfigError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    torch_kw = {"device": device, "fp16": fp16}
    if isinstance(model, FaceDetector):
        if weights is not None:
            raise ConfigError("weights= cannot be combined with a FaceDetector")
        # a shallow copy keeps its sessions (and worker sessions); only the settings change
        det = copy.copy(model)
        det.protocol = common["protocol"]
        det.score_thr = common["score_thr"]
        det.nms_thr = common["nms_thr"]
        det.batch_size = common["batch_size"]
        kind = "onnx" if hasattr(det.backend, "session") else "torch"
        if backend is not None and backend != kind:
            raise ConfigError(f"the FaceDetector given runs on {kind}, not {backend}")
        return EvalModel(det, _label_of_detector(det), _identity_of_detector(det), kind)
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ConfigError("weights= cannot be combined with a model module")
        det = FaceDetector.from_model(model, **torch_kw, **common)
        label = model_label(model)
        ident = f"module:sha256:{_sha256_module(model)}"
        kind = "torch"
    elif isinstance(model, (str, os.PathLike)):
        spec = os.fspath(model)
        src = resolve_source(spec, weights)
        # a zoo name with weights names a PyTorch architecture: built there (then exported by
        # to_onnx_model for backend="onnx"), as the run's manifest records it
        providers = _providers(device)
        use = choose_backend(src, backend, device=device, fp16=fp16, providers=providers)
        if use == "onnx" and weights is None:
            det = FaceDetector.from_pretrained(
                src, backend="onnx", threads=threads, providers=providers, **common
            )
            kind = "onnx"
        else:
            # torch; a torch-only source asked for onnx is exported by to_onnx_model once the work
            # dir is known; a zoo name with weights names a PyTorch architecture, built here
            det = FaceDetector.from_pretrained(src, backend="torch", **torch_kw, **common)
            kind = "torch"
        if src.kind == "bundled":
            assert src.name is not None
            sha = _sha256_file(src.file("onnx" if kind == "onnx" else "pth"))
            return EvalModel(det, src.name, f"bundled:{src.name}:sha256:{sha}", kind)
        return EvalModel(det, model_label(spec), _identity_of_spec(spec, weights), kind)
    else:
        raise ConfigError(
            f"model must be a path, a zoo name, an SCRFD module or a FaceDetector, got {model!r}"
        )
    return EvalModel(det, label, ident, kind)


def _providers(device: str) -> list[str]:
    """onnxruntime providers for ``device`` (CUDA when asked for and available, else CPU)."""
    from damofd.device import onnx_providers

    try:
        return onnx_providers(str(device))
    except ConfigError:
        return ["CPUExecutionProvider"]


def to_onnx_model(built: EvalModel, onnx_path: Path, threads: int | None) -> EvalModel:
    """Export a torch-backend model to ``onnx_path`` and run it with onnxruntime instead
    (:func:`damofd.export.export_detector`: same settings)."""
    from damofd.export.detector import export_detector

    det = export_detector(built.detector, onnx_path, threads=threads)
    return EvalModel(det, built.label, built.identity, "onnx")


def remove_empty_dirs(created: Sequence[Path]) -> None:
    """Remove the folders a failed run created (deepest first) while they are empty."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            break


def model_label(model: Any) -> str:
    """Model label used for the default work dir."""
    from torch import nn

    if isinstance(model, (str, os.PathLike)):
        p = Path(os.fspath(model))
        return p.stem if (p.is_file() or p.is_dir()) else os.fspath(model).replace("/", "_")
    if isinstance(model, nn.Module):
        return str(getattr(model, "name", None) or "model")
    if hasattr(model, "backend"):
        return _label_of_detector(model)
    return "model"
