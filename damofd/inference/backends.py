"""Inference backends: onnxruntime (any official SCRFD/insightface ONNX file or our export) and
PyTorch (a :class:`damofd.models.SCRFD` module through ``forward_export``).

A backend takes a normalised NCHW float32 batch and returns the flattened per-level outputs
``[score_l..., bbox_l..., (kps_l...)]``, each ``(B, N_l, C)`` (see
:mod:`damofd.inference.postprocess` for the layout).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from damofd.device import check_device
from damofd.errors import ConfigError, InputError

from .postprocess import ModelLayout

__all__ = [
    "Backend",
    "OnnxBackend",
    "TorchBackend",
    "layout_from_output_count",
]


class Backend(Protocol):
    """What :class:`~damofd.inference.FaceDetector` needs from a backend."""

    layout: ModelLayout
    description: str

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """``blob`` (B, 3, H, W) float32 → outputs, each (B, N_l, C) float32."""
        ...


def layout_from_output_count(n: int) -> tuple[tuple[int, ...], int, bool]:
    """(strides, anchors per location, use_kps) from the number of outputs (spec §7.2)."""
    table = {
        6: ((8, 16, 32), 2, False),
        9: ((8, 16, 32), 2, True),
        10: ((8, 16, 32, 64, 128), 1, False),
        15: ((8, 16, 32, 64, 128), 1, True),
    }
    if n not in table:
        raise ConfigError(
            f"unsupported SCRFD ONNX layout: {n} outputs (expected 6 or 9 for 3 levels, "
            f"10 or 15 for 5 levels)"
        )
    return table[n]


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OnnxBackend:
    """onnxruntime session over an SCRFD-layout ONNX file.

    Detects the layout from the graph: the output count gives levels/anchors/keypoints (6, 9, 10
    or 15 outputs), 2-D ``(N, C)`` outputs mean batch 1 only (older official files), 3-D
    ``(B, N, C)`` outputs are batched; a fixed input H/W is honoured. Outputs named
    ``score_8 … kps_32`` (our export and the newer official export) are put in canonical order by
    name; unnamed outputs are taken in graph order (score×L, bbox×L, kps×L).

    A file whose batch axis is fixed (``damofd export --shape H W --batch N``, or 2-D outputs:
    exactly one image) runs exactly that many images per session call: :meth:`run` accepts any
    batch, splitting it into chunks of the fixed size and zero-padding the last one (the padded
    rows are dropped from the outputs). ``layout.max_batch`` is that fixed size, so
    :class:`~damofd.inference.FaceDetector` groups images by it.

    Args:
        path: the ``.onnx`` file.
        threads: ``intra_op_num_threads`` (``None``/0: onnxruntime's default, one per core).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, not an ONNX file")
        if not self.path.is_file():
            raise InputError(f"{self.path}: ONNX file not found")
        if threads is not None and int(threads) < 0:
            raise ConfigError(f"threads must be ≥ 0 (0: one per core), got {threads}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = int(threads or 0)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=so, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise InputError(f"{self.path}: cannot load ONNX model ({e})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"{self.path}: expected 1 input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        shape = list(inputs[0].shape)
        if len(shape) != 4 or _dim(shape[1]) not in (None, 3):
            raise ConfigError(f"{self.path}: expected an input (B, 3, H, W), got {shape}")
        outputs = self.session.get_outputs()
        try:
            strides, anchors, use_kps = layout_from_output_count(len(outputs))
        except ConfigError as e:
            raise ConfigError(f"{self.path}: {e}") from None
        names = [o.name for o in outputs]
        self.output_names = self._canonical_order(names, strides, use_kps)
        ranks = {len(o.shape) for o in outputs if o.shape is not None}
        self.batched = ranks == {3}
        if ranks and ranks not in ({2}, {3}):
            raise ConfigError(f"{self.path}: outputs must be all 2-D or all 3-D, got ranks {ranks}")
        #: images per session call when the batch axis is fixed (2-D outputs: 1), else None
        self.fixed_batch: int | None = _dim(shape[0]) if self.batched else 1
        h, w = _dim(shape[2]), _dim(shape[3])
        self.layout = ModelLayout(
            strides=strides,
            num_anchors=anchors,
            use_kps=use_kps,
            max_batch=self.fixed_batch,
            input_hw=(h, w) if h and w else None,
        )
        if not self.batched:
            kind = "batch 1"
        elif self.fixed_batch is not None:
            kind = f"fixed batch {self.fixed_batch}"
        else:
            kind = "batched"
        self.description = (
            f"onnxruntime {ort.__version__} {self.path.name} "
            f"({len(strides)} levels, {'kps' if use_kps else 'no kps'}, {kind})"
        )

    @staticmethod
    def _canonical_order(names: list[str], strides: tuple[int, ...], use_kps: bool) -> list[str]:
        kinds = ["score", "bbox", *(["kps"] if use_kps else [])]
        wanted = [f"{k}_{s}" for k in kinds for s in strides]
        return wanted if set(wanted) == set(names) else names

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """``blob`` (B, 3, H, W) float32, any B → outputs, each (B, N_l, C) float32.

        With a fixed batch axis of size F, the blob runs in ``ceil(B / F)`` session calls of
        exactly F images, the last one zero-padded; the padded rows are dropped.

        Raises:
            InputError: onnxruntime refused the input (e.g. an H×W other than a fixed input
                size); the message names the file and the input shape.
        """
        fb = self.fixed_batch
        b = blob.shape[0]
        if fb is None or b == fb:
            return self._run_exact(blob)
        parts: list[list[np.ndarray]] = []
        for start in range(0, max(b, 1), fb):
            chunk = blob[start : start + fb]
            n = chunk.shape[0]
            if n < fb:
                padded = np.zeros((fb, *blob.shape[1:]), dtype=blob.dtype)
                padded[:n] = chunk
                chunk = padded
            parts.append([o[:n] for o in self._run_exact(chunk)])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(level) for level in zip(*parts)]

    def _run_exact(self, blob: np.ndarray) -> list[np.ndarray]:
        """One session call; the batch already matches the graph's batch axis."""
        try:
            outs = self.session.run(self.output_names, {self.input_name: blob})
        except Exception as e:  # onnxruntime's own exception types (InvalidArgument, Fail...)
            msg = " ".join(str(e).split())  # one line for the CLI
            raise InputError(
                f"{self.path}: onnxruntime cannot run an input of shape {tuple(blob.shape)} "
                f"(model input {self.input_name!r}: {self._input_shape()}): {msg}"
            ) from None
        self._check_scores(outs)
        return outs if self.batched else [o[None] for o in outs]

    def _check_scores(self, outs: list[np.ndarray]) -> None:
        """The score outputs must be probabilities: a file exported without its final sigmoid
        gives logits, which would pass any threshold (thousands of "faces")."""
        for o in outs[: len(self.layout.strides)]:
            if o.size and (float(o.min()) < -1e-3 or float(o.max()) > 1.0 + 1e-3):
                raise InputError(
                    f"{self.path}: score outputs are not probabilities in [0, 1] (range "
                    f"{float(o.min()):.3g} … {float(o.max()):.3g}); the graph seems to end "
                    "without its sigmoid — export it with the sigmoid (damofd export does)"
                )

    def _input_shape(self) -> str:
        dims = self.session.get_inputs()[0].shape
        return "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in dims) + ")"


class TorchBackend:
    """A :class:`damofd.models.SCRFD` module run through ``forward_export`` (shared contract).

    Args:
        model: the detector (``strides``, ``num_anchors``, ``use_kps``, ``forward_export``,
            ``fuse``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        fp16: run in half precision (GPU only; outputs are returned as float32).
        fuse: fold BatchNorm into the convolutions (on a copy unless ``copy_model=False``).
        copy_model: deep-copy ``model`` before fusing/moving it so the caller's module is untouched.
        channels_last: run in the NHWC memory format (``None``: on the CPU only, where oneDNN's
            NHWC depthwise/pointwise kernels make a 0.5G model ~1.5× faster; outputs unchanged
            to float rounding).
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str = "cpu",
        fp16: bool = False,
        fuse: bool = True,
        copy_model: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        import torch

        dev = check_device(device)
        if fp16 and dev.type != "cuda":
            raise ConfigError("fp16 inference needs a CUDA device")
        if copy_model:
            model = copy.deepcopy(model)
        model.eval()
        if fuse and hasattr(model, "fuse"):
            model = model.fuse() or model
        model.to(dev)
        if fp16:
            model.half()
        self.channels_last = dev.type == "cpu" if channels_last is None else bool(channels_last)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = dev
        self.fp16 = fp16
        self.layout = ModelLayout(
            strides=tuple(int(s) for s in model.strides),
            num_anchors=int(model.num_anchors),
            use_kps=bool(model.use_kps),
        )
        self.description = (
            f"torch {torch.__version__} {type(model).__name__} on {dev}"
            f"{' fp16' if fp16 else ''}{' channels-last' if self.channels_last else ''} "
            f"({'kps' if model.use_kps else 'no kps'})"
        )

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(blob).to(self.device)  # zero-copy on the CPU
            if self.fp16:
                x = x.half()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            outs = self.model.forward_export(x)
            return [o.float().cpu().numpy() for o in outs]
