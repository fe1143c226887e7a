"""int8 static quantisation of an exported detector with ONNX Runtime's quantisation tools.

The float model is calibrated on real photos, preprocessed exactly as inference preprocesses
them (the ``vga`` protocol: keep-ratio resize into 640×640, normalisation, zero padding), with
min-max calibration, and written in the QDQ format (QuantizeLinear/DequantizeLinear pairs around
int8 weights and 8-bit activations; per-channel weights), which every onnxruntime execution
provider runs. The result loads like any ONNX file (``FaceDetector.from_onnx``, ``damofd detect
--onnx``).

Activations are unsigned (``uint8``, asymmetric) by default: x86 int8 kernels multiply
u8 activations by s8 weights (the VNNI ``vpdpbusd`` instruction and its AVX2 emulation), so
u8×s8 runs ONNX Runtime's fast path, while s8×s8 takes a slower one (on an AVX-512 VNNI
EPYC the bundled model ran 10.4 ms with u8 activations vs 21.9 ms with s8, fp32 9.1 ms).
``activations="s8"`` is there for accelerators that want symmetric signed tensors.

    damofd export --out d05_int8.onnx --int8 --calib photos/ --calib-images 64
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from damofd.errors import ConfigError, InputError

__all__ = ["ACTIVATION_TYPES", "calibration_images", "quantize_int8"]

#: ``activations=`` choices of :func:`quantize_int8`
ACTIVATION_TYPES = ("u8", "s8")


def calibration_images(folder: str | os.PathLike[str], limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``folder`` (recursive, sorted, evenly spaced)."""
    from damofd.inference.image_io import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--calib {str(root)!r} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"--calib {str(root)!r} holds no images")
    if len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in idx]
    return files


def _blobs(images: Sequence[Path], size: int) -> Iterator[np.ndarray]:
    from damofd.inference.image_io import load_image
    from damofd.inference.preprocess import fill_canvas, get_protocol

    proto = get_protocol("vga")
    for p in images:
        img = load_image(p)
        plan = proto.plan(*img.shape[:2])
        blob = np.zeros((1, 3, size, size), np.float32)
        fill_canvas(blob[0, :, : plan.canvas[0], : plan.canvas[1]], img, plan, proto.pad_value)
        yield blob


def quantize_int8(
    fp32: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    per_channel: bool = True,
    size: int = 640,
    activations: str = "u8",
    blobs: Callable[[], Iterable[np.ndarray]] | None = None,
) -> Path:
    """Write the int8 QDQ version of ``fp32`` to ``out``, calibrated on ``images``.

    ``blobs`` replaces the detector preprocessing of the calibration images: a function returning
    an iterable of ready input tensors (for a model with another input convention, e.g. OpenCV's
    YuNet); ``images`` is then ignored.
    """
    if blobs is None and not images:
        raise ConfigError("int8 calibration needs at least one image")
    if activations not in ACTIVATION_TYPES:
        raise ConfigError(f"activations must be one of {ACTIVATION_TYPES}, got {activations!r}")
    if blobs is None:
        paths = [Path(p) for p in images]

        def blobs() -> Iterable[np.ndarray]:
            return _blobs(paths, size)

    import onnxruntime as ort

    input_name = (
        ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    )

    import logging

    root = logging.getLogger()
    level = root.level
    # the quantiser logs a warning for every GroupNorm constant it leaves per-tensor; those are
    # expected (GN scales are 1-D), so keep the console quiet while it runs
    root.setLevel(logging.ERROR)
    try:
        return _quantize(fp32, out, blobs, input_name, per_channel, activations)
    finally:
        root.setLevel(level)


def _at_least_opset_13(path: Path, tmp: Path) -> Path:
    """Per-channel QDQ (DequantizeLinear with ``axis``) needs opset 13; older files (our default
    export and the official SCRFD files use opset 11) are converted first."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset >= 13:
        return path
    out = tmp / "opset13.onnx"
    onnx.save(version_converter.convert_version(model, 13), str(out))
    return out


def _quantize(fp32, out, blobs, input_name: str, per_channel: bool, activations: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from damofd.io import atomic_write_bytes

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(blobs())

        def get_next(self) -> dict[str, np.ndarray] | None:
            blob = next(self._it, None)
            return None if blob is None else {input_name: blob}

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = _at_least_opset_13(Path(fp32), Path(tmp))
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(q),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return atomic_write_bytes(out, q.read_bytes())
