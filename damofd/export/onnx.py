"""ONNX export in the layout of the official SCRFD batched export (reference spec §7.1).

The exported graph is what ``SCRFD.forward_export`` computes, with BatchNorm folded into the
convolutions and the model in eval mode:

* input ``input.1``: (B, 3, H, W) float32, RGB, normalised ``(x − 127.5) / 128``, H and W
  multiples of 32;
* outputs, in this order: ``score_8, score_16, score_32, bbox_8, bbox_16, bbox_32`` and, for a
  model with keypoints, ``kps_8, kps_16, kps_32``; each (B, N_l, C) with
  ``N_l = (H/s)·(W/s)·2`` rows in anchor-centre order (location-major, anchor-minor) and C = 1
  (sigmoid score), 4 (ltrb distances in **stride units**, Scale applied, not multiplied by the
  stride) or 10 (keypoint offsets in stride units). No decoding, no NMS;
* dynamic axes by default: input ``{0: batch, 2: height, 3: width}``, every output ``{0: batch,
  1: anchors_<stride>}``; a fixed export pins all of them.

So the official insightface/DamoFD onnxruntime wrappers (9 outputs → 3 levels with keypoints,
3-D outputs → batched) and :class:`damofd.inference.FaceDetector` run these files unchanged.

The graph is traced with PyTorch's TorchScript exporter (``torch.onnx.export(..., dynamo=False)``,
opset ≥ 11), optionally simplified with ``onnxslim`` (extra ``damofd[simplify]``), checked with
``onnx.checker``, run once with onnxruntime on the trace input and compared with PyTorch, and only
then written atomically (:func:`damofd.io.atomic_write_bytes`): a failed export leaves no file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from damofd.errors import ConfigError, InputError

__all__ = [
    "DEFAULT_EXPORT_SHAPE",
    "INPUT_NAME",
    "MIN_OPSET",
    "OnnxExport",
    "export_onnx",
    "export_onnx_detailed",
    "output_names",
    "resolve_model",
]

#: Name of the graph input, as in the official SCRFD exports.
INPUT_NAME = "input.1"
#: Lowest opset: the official exporter asserts 11 (Resize with runtime sizes, GN as
#: InstanceNormalization).
MIN_OPSET = 11
#: Trace shape (H, W) of a dynamic export when no shape is given, as the official tool.
DEFAULT_EXPORT_SHAPE = (640, 640)


def output_names(strides: Sequence[int] = (8, 16, 32), use_kps: bool = True) -> list[str]:
    """Output names in graph order: ``score_<s>`` ×L, ``bbox_<s>`` ×L[, ``kps_<s>`` ×L]."""
    kinds = ("score", "bbox", "kps") if use_kps else ("score", "bbox")
    return [f"{k}_{s}" for k in kinds for s in strides]


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx_detailed` wrote.

    Attributes:
        path: the ``.onnx`` file.
        input_shape: (B, 3, H, W) of the trace input; ``dynamic`` says whether B, H and W are free.
        dynamic: dynamic batch and spatial axes.
        output_names: outputs in graph order.
        output_shapes: shape of every output at the trace input.
        opset: ONNX opset of the graph.
        simplified: whether onnxslim ran.
        max_abs_diff: largest |onnxruntime − PyTorch| over all outputs at the trace input
            (``None`` when ``verify=False``).
        num_bytes: file size.
        seconds: wall time of the whole export.
    """

    path: Path
    input_shape: tuple[int, int, int, int]
    dynamic: bool
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    opset: int
    simplified: bool
    max_abs_diff: float | None
    num_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "input": INPUT_NAME,
            "input_shape": list(self.input_shape),
            "dynamic": self.dynamic,
            "outputs": {n: list(s) for n, s in zip(self.output_names, self.output_shapes)},
            "opset": self.opset,
            "simplified": self.simplified,
            "max_abs_diff": self.max_abs_diff,
            "bytes": self.num_bytes,
            "seconds": round(self.seconds, 3),
        }


# ----------------------------------------------------------------------------------------------
# model resolution


def resolve_model(
    model: Any,
    weights: str | os.PathLike[str] | None = None,
    *,
    allow_random: bool = False,
) -> Any:
    """The :class:`damofd.models.SCRFD` described by ``model`` (and ``weights``).

    ``model`` is an ``nn.Module`` following the SCRFD contract (returned as is; ``weights`` must
    be None) or any spec of :func:`damofd.models.sources.resolve_source`: a zoo name (with
    ``weights``, a ``.pth`` or ONNX file of that architecture; or its bundled weights), a
    ``.pth``/``.pt`` checkpoint, an ``.onnx`` file, a ModelScope folder or id. A zoo name
    without weights is randomly initialised only when ``allow_random`` (else
    :class:`ConfigError`); it is never downloaded here.
    """
    from torch import nn

    if isinstance(model, nn.Module):
        if weights is not None:
            raise ConfigError("weights= cannot be combined with a model module; load them first")
        return model
    from damofd.models.sources import load_source, resolve_source

    src = resolve_source(model, weights)
    if allow_random and weights is None and src.kind in ("bundled", "zoo"):
        from damofd.models.factory import create_model

        assert src.name is not None
        return create_model(src.name)
    hint = "; or --random-init to export untrained weights"
    return load_source(src, download=False, hint=hint)


# ----------------------------------------------------------------------------------------------
# export


def _export_wrapper(model: Any) -> Any:
    from torch import nn

    class _ExportGraph(nn.Module):
        """``forward`` = ``model.forward_export`` as a tuple (what the exporter traces)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: Any) -> tuple[Any, ...]:
            return tuple(self.model.forward_export(x))

    return _ExportGraph(model)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known, harmless warnings (and only those).

    * the legacy-exporter notice (we choose the TorchScript exporter on purpose: it gives the
      official graph layout at opset 11);
    * ``TracerWarning`` from ``torch.nn.functional`` (GroupNorm's batch-size check turns a shape
      product into a Python bool; it is a check, not part of the graph).
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
        warnings.filterwarnings(
            "ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.functional"
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.onnx")
        yield


def _max_opset() -> int:
    """Highest opset of the TorchScript exporter of the installed PyTorch (20 in torch 2.13)."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17))
    except ImportError:  # pragma: no cover - private module moved
        return 17


def _check_shape(shape: Sequence[int] | None, batch: int) -> tuple[int, int]:
    if batch < 1:
        raise ConfigError(f"batch must be ≥ 1, got {batch}")
    if shape is None:
        return DEFAULT_EXPORT_SHAPE
    if len(shape) != 2:
        raise ConfigError(f"shape must be (H, W), got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    bad = [f"{n} {v}" for n, v in (("height", h), ("width", w)) if v <= 0 or v % 32]
    if bad:
        raise ConfigError(
            f"export shape {h}x{w} (H W): {', '.join(bad)} is not a positive multiple of 32 "
            f"(the detector's input contract)"
        )
    return h, w


def _simplify(proto: Any) -> Any:
    try:
        import onnxslim
    except ImportError:
        raise ConfigError(
            "ONNX simplification needs the onnxslim package: pip install 'damofd[simplify]' "
            "(or pip install onnxslim), or export without --simplify"
        ) from None
    out = onnxslim.slim(proto)
    if out is None:  # older onnxslim returns None when asked to save; we never ask
        raise ConfigError("onnxslim returned no model")
    return out


def _check_io(proto: Any, names: list[str], where: str) -> None:
    inputs = [i.name for i in proto.graph.input]
    init = {t.name for t in proto.graph.initializer}
    inputs = [n for n in inputs if n not in init]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != names:
        raise RuntimeError(
            f"{where}: unexpected graph interface: inputs {inputs}, outputs {outputs} "
            f"(expected [{INPUT_NAME!r}] and {names})"
        )


def export_onnx_detailed(
    model_or_name: Any,
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    dynamic: bool = True,
    shape: Sequence[int] | None = None,
    batch: int = 1,
    opset: int = MIN_OPSET,
    simplify: bool = False,
    verify: bool = True,
    allow_random: bool = False,
    metadata: dict[str, str] | None = None,
) -> OnnxExport:
    """:func:`export_onnx` returning an :class:`OnnxExport` record instead of the path."""
    import onnx
    import torch

    t0 = time.perf_counter()
    h, w, target = _check_options(out, shape, batch, opset)
    model = _fused_copy(resolve_model(model_or_name, weights, allow_random=allow_random))
    names = output_names(tuple(int(s) for s in model.strides), bool(model.use_kps))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(int(batch), 3, h, w, generator=gen)
    with torch.inference_mode():
        reference = [t.numpy().copy() for t in model.forward_export(x)]
    if len(reference) != len(names):
        raise RuntimeError(f"forward_export returned {len(reference)} outputs, expected {names}")

    proto = _trace_to_onnx(model, x, names, dynamic=dynamic, opset=int(opset))
    if simplify:
        proto = _simplify(proto)
    _check_io(proto, names, str(target))
    _set_metadata(proto, model, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    max_diff: float | None = None
    shapes = tuple(tuple(int(d) for d in r.shape) for r in reference)
    if verify:
        max_diff = _smoke_run(data, x.numpy(), names, reference, str(target))

    from damofd.io import atomic_write_bytes

    atomic_write_bytes(target, data)
    return OnnxExport(
        path=target,
        input_shape=(int(batch), 3, h, w),
        dynamic=bool(dynamic),
        output_names=tuple(names),
        output_shapes=shapes,
        opset=int(opset),
        simplified=bool(simplify),
        max_abs_diff=max_diff,
        num_bytes=len(data),
        seconds=time.perf_counter() - t0,
    )


def _check_options(
    out: str | os.PathLike[str], shape: Sequence[int] | None, batch: int, opset: int
) -> tuple[int, int, Path]:
    """Validate opset, trace shape and output path; returns (H, W, output file)."""
    max_opset = _max_opset()
    if not MIN_OPSET <= int(opset) <= max_opset:
        raise ConfigError(
            f"opset must be in {MIN_OPSET}..{max_opset} (the official export uses 11), got {opset}"
        )
    h, w = _check_shape(shape, int(batch))
    target = Path(out)
    if target.is_dir():
        raise InputError(
            f"--out {str(target)!r} is a directory; give a file name such as "
            f"{str(target / 'model.onnx')!r}"
        )
    return h, w, target


def _fused_copy(src: Any) -> Any:
    """A CPU float32 eval copy of an SCRFD model with BN fused; ``src`` is left untouched."""
    for attr in ("forward_export", "fuse", "strides", "use_kps"):
        if not hasattr(src, attr):
            raise ConfigError(f"model {type(src).__name__} has no {attr!r} (not an SCRFD model)")
    # Work on a CPU float32 copy: the caller's module keeps its BN layers, mode and device.
    model = copy.deepcopy(src).float().cpu().eval()
    model.fuse()
    model.eval()
    return model


def _trace_to_onnx(model: Any, x: Any, names: list[str], *, dynamic: bool, opset: int) -> Any:
    """Trace ``model.forward_export`` on ``x`` with the TorchScript exporter; the ModelProto."""
    import onnx
    import torch

    graph = _export_wrapper(model).eval()
    dynamic_axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        for n in names:
            dynamic_axes[n] = {0: "batch", 1: f"anchors_{n.rsplit('_', 1)[1]}"}
    buf = io.BytesIO()
    with _quiet_exporter(), torch.no_grad():
        try:
            torch.onnx.export(
                graph,
                (x,),
                buf,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        finally:
            # the exporter restores the wrapper's training flag recursively (scrfd-spec §8.4)
            graph.eval()
    return onnx.load_from_string(buf.getvalue())


def _set_metadata(proto: Any, model: Any, metadata: dict[str, str] | None) -> None:
    """Write damofd's model properties (and the caller's ``metadata``) into ``proto``."""
    import onnx

    from damofd._version import __version__

    props = {
        "producer": "damofd",
        "model_name": str(getattr(model, "name", None) or type(model).__name__),
        "strides": ",".join(str(int(s)) for s in model.strides),
        "num_anchors": str(int(model.num_anchors)),
        "use_kps": str(bool(model.use_kps)).lower(),
        "input_format": "RGB NCHW float32, (x - 127.5) / 128, H and W multiples of 32",
        "bbox_units": "ltrb distances in stride units",
    }
    props["damofd_version"] = __version__
    props.update(metadata or {})
    onnx.helper.set_model_props(proto, props)


def _smoke_run(
    data: bytes, x: np.ndarray, names: list[str], reference: list[np.ndarray], where: str
) -> float:
    """Run the serialised graph once with onnxruntime and compare with PyTorch."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    got = sess.run(names, {INPUT_NAME: x})
    worst = 0.0
    for n, g, r in zip(names, got, reference):
        if g.shape != r.shape:
            raise RuntimeError(f"{where}: output {n} has shape {g.shape}, PyTorch {r.shape}")
        diff = float(np.abs(g - r).max()) if r.size else 0.0
        # float32 rounding scales with the magnitude of the outputs (random BN stats can make
        # them large); an export bug gives O(1) relative errors
        if not diff <= 1e-3 * max(1.0, float(np.abs(r).max(initial=0.0))):
            raise RuntimeError(
                f"{where}: onnxruntime and PyTorch disagree on {n}: max |diff| = {diff:.3g}"
            )
        worst = max(worst, diff)
    return worst


def export_onnx(
    model_or_name: Any,
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    dynamic: bool = True,
    shape: Sequence[int] | None = None,
    batch: int = 1,
    opset: int = MIN_OPSET,
    simplify: bool = False,
    verify: bool = True,
    allow_random: bool = False,
) -> Path:
    """Export a detector to ONNX in the official batched SCRFD layout; returns the file path.

    Args:
        model_or_name: an :class:`damofd.models.SCRFD` module (not modified: a copy is fused), a
            zoo name (with ``weights``), a damofd ``.pth`` checkpoint, an ONNX file (re-export,
            e.g. to turn an old batch-1 official file into a batched one) or a ModelScope folder;
            see :func:`resolve_model`.
        out: the ``.onnx`` file to write (atomically; parent folders are created).
        weights: ``.pth`` checkpoint or ONNX file for a zoo name.
        dynamic: free batch, height and width axes (default). ``False`` pins them to
            ``batch`` × 3 × ``shape``.
        shape: (H, W) of the trace input, multiples of 32 (default 640 × 640).
        batch: batch size of the trace input (the fixed batch of a non-dynamic export).
        opset: ONNX opset, ≥ 11.
        simplify: run ``onnxslim`` on the graph (extra ``damofd[simplify]``).
        verify: run the file once with onnxruntime and compare with PyTorch (max |diff| ≤
            1e-3 relative to the output magnitude) before writing it.
        allow_random: accept a zoo name without weights (random init, for tests and timing).

    Raises:
        ConfigError: bad option (opset, shape, missing weights or onnxslim).
        InputError: missing or unreadable model/weights file, ``out`` is a folder.
    """
    return export_onnx_detailed(
        model_or_name,
        out,
        weights=weights,
        dynamic=dynamic,
        shape=shape,
        batch=batch,
        opset=opset,
        simplify=simplify,
        verify=verify,
        allow_random=allow_random,
    ).path
