"""Test-time protocols and preprocessing (reference spec §4.5 and §7.2).

A :class:`Protocol` says how an image is fitted into the network input ("canvas") and how the raw
outputs are turned into faces:

========== =================================================== ==================================
name       resize / pad                                        decoding / NMS
========== =================================================== ==================================
vga        keep ratio into 640×640, ``int(x·f + 0.5)``,        boxes clamped to the resized image,
           pad bottom/right with 0 in normalised space         ``score > thr``, NMS IoU > 0.45,
           (mmdet ``test_widerface.py --mode 0``; published    no +1 (mmcv)
           AP)
HxW        keep ratio into H×W (``f = min(H/h, W/w)``, same    as vga
           rounding), canvas rounded up to multiples of 32
original   no resize (scale 1), pad to multiples of 32         as vga
           (mmdet ``--mode 2``)
insightface ``int()``-truncated keep-ratio resize into 640×640  no clamping, ``score ≥ thr``, NMS
           (or the ONNX file's fixed size), top-left paste on  IoU > 0.4 with the +1 area
           a **black** canvas (official ONNX wrapper)          convention
========== =================================================== ==================================

All protocols feed RGB, ``(x − 127.5) / 128``, NCHW float32; images are resized on uint8 with
OpenCV bilinear interpolation (``INTER_LINEAR``), once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from damofd.errors import ConfigError

__all__ = [
    "INPUT_MEAN",
    "INPUT_STD",
    "PROTOCOLS",
    "Protocol",
    "ResizePlan",
    "fill_canvas",
    "get_protocol",
]

INPUT_MEAN = 127.5
INPUT_STD = 128.0
# 1/128 is a power of two, so (x − 127.5)·(1/128) == (x − 127.5)/128 bit for bit
_SCALE = np.float32(1.0 / INPUT_STD)
_MEAN = np.float32(INPUT_MEAN)
#: (x − 127.5)/128 for every uint8 value, float32 (exact: x − 127.5 is a multiple of 0.5).
_NORM_LUT = ((np.arange(256, dtype=np.float32) - _MEAN) * _SCALE).reshape(1, 256)


@dataclass(frozen=True, slots=True)
class ResizePlan:
    """How one image of size (h, w) goes into the canvas.

    ``new_h``/``new_w``: resized size (the image occupies ``[0:new_h, 0:new_w]`` of the canvas);
    ``canvas_h``/``canvas_w``: network input size; ``scale_x``/``scale_y``: resized / original
    (boxes are divided by them to go back to original pixels).
    """

    height: int
    width: int
    new_h: int
    new_w: int
    canvas_h: int
    canvas_w: int
    scale_x: float
    scale_y: float

    @property
    def canvas(self) -> tuple[int, int]:
        return self.canvas_h, self.canvas_w


def _ceil_to(x: int, d: int) -> int:
    return int(math.ceil(x / d) * d)


@dataclass(frozen=True, slots=True)
class Protocol:
    """A test-time protocol (see the module docstring for the table).

    Attributes:
        name: ``"vga"``, ``"original"``, ``"insightface"`` or ``"HxW"``.
        size: target (H, W) to fit into, or ``None`` for scale 1 (``original``).
        truncate: ``int()`` truncation (insightface) instead of ``int(x·f + 0.5)`` rounding.
        pad_black: pad with black pixels (−127.5/128 after normalisation) instead of 0 in
            normalised space.
        clamp: clamp decoded boxes to the resized (unpadded) image.
        strict_score: keep ``score > thr`` (mmdet) instead of ``score ≥ thr`` (insightface).
        nms_thr: default NMS IoU threshold (a box is suppressed when IoU > nms_thr).
        nms_offset: 1 for the +1 area convention in NMS IoU, else 0.
        size_divisor: canvas sides are rounded up to a multiple of this.
    """

    name: str
    size: tuple[int, int] | None
    truncate: bool = False
    pad_black: bool = False
    clamp: bool = True
    strict_score: bool = True
    nms_thr: float = 0.45
    nms_offset: float = 0.0
    size_divisor: int = 32

    @property
    def pad_value(self) -> float:
        """Value of padded canvas pixels in normalised space."""
        return (0.0 - INPUT_MEAN) / INPUT_STD if self.pad_black else 0.0

    def with_size(self, size: tuple[int, int]) -> Protocol:
        """The same protocol fitting into ``size`` = (H, W) (e.g. an ONNX file's fixed input)."""
        if self.size is None:
            raise ConfigError(
                f"protocol {self.name!r} keeps the original image size and cannot be used with a "
                f"model whose input size is fixed to {size[0]}x{size[1]}"
            )
        return Protocol(
            name=self.name,
            size=(int(size[0]), int(size[1])),
            truncate=self.truncate,
            pad_black=self.pad_black,
            clamp=self.clamp,
            strict_score=self.strict_score,
            nms_thr=self.nms_thr,
            nms_offset=self.nms_offset,
            size_divisor=self.size_divisor,
        )

    def plan(self, height: int, width: int) -> ResizePlan:
        """Resize plan for an image of ``height`` × ``width`` pixels."""
        h, w = int(height), int(width)
        if self.size is None:
            d = self.size_divisor
            return ResizePlan(h, w, h, w, _ceil_to(h, d), _ceil_to(w, d), 1.0, 1.0)
        th, tw = self.size
        ch, cw = _ceil_to(th, self.size_divisor), _ceil_to(tw, self.size_divisor)
        if self.truncate:
            # insightface SCRFD.detect(), written the same way so the float rounding is identical
            im_ratio = float(h) / w
            model_ratio = float(th) / tw
            if im_ratio > model_ratio:
                new_h = th
                new_w = int(new_h / im_ratio)
            else:
                new_w = tw
                new_h = int(new_w * im_ratio)
            new_h, new_w = max(new_h, 1), max(new_w, 1)
            det_scale = float(new_h) / h
            return ResizePlan(h, w, new_h, new_w, ch, cw, det_scale, det_scale)
        f = min(th / h, tw / w)
        new_w = max(int(w * f + 0.5), 1)
        new_h = max(int(h * f + 0.5), 1)
        return ResizePlan(h, w, new_h, new_w, ch, cw, new_w / w, new_h / h)


PROTOCOLS: dict[str, Protocol] = {
    "vga": Protocol("vga", (640, 640)),
    "original": Protocol("original", None),
    "insightface": Protocol(
        "insightface",
        (640, 640),
        truncate=True,
        pad_black=True,
        clamp=False,
        strict_score=False,
        nms_thr=0.4,
        nms_offset=1.0,
    ),
}

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×,]\s*(\d+)\s*$")


def get_protocol(protocol: str | Protocol) -> Protocol:
    """Resolve ``"vga"``, ``"original"``, ``"insightface"`` or ``"HxW"`` (e.g. ``"480x640"``)."""
    if isinstance(protocol, Protocol):
        return protocol
    key = str(protocol).strip().lower()
    if key in PROTOCOLS:
        return PROTOCOLS[key]
    m = _SIZE_RE.match(key)
    if m:
        h, w = int(m.group(1)), int(m.group(2))
        if h < 32 or w < 32 or h > 8192 or w > 8192:
            raise ConfigError(f"protocol size {h}x{w} out of range (each side 32..8192)")
        return Protocol(f"{h}x{w}", (h, w))
    raise ConfigError(
        f"unknown protocol {protocol!r}; use 'vga', 'original', 'insightface' or a size 'HxW' "
        f"such as '640x640'"
    )


def fill_canvas(dst: np.ndarray, img_bgr: np.ndarray, plan: ResizePlan, pad_value: float) -> None:
    """Write one preprocessed image into ``dst`` (3, canvas_h, canvas_w) float32, in place.

    Resizes ``img_bgr`` (uint8 BGR) to ``(plan.new_h, plan.new_w)`` with bilinear interpolation
    (skipped when the size is unchanged), converts BGR→RGB and normalises ``(x − 127.5)/128``
    straight into the canvas, and sets the bottom/right padding to ``pad_value``.
    """
    nh, nw = plan.new_h, plan.new_w
    if img_bgr.shape[0] != nh or img_bgr.shape[1] != nw:
        img_bgr = cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    planes = cv2.split(img_bgr)  # contiguous B, G, R planes
    for c in range(3):
        # uint8 → float32 through a 256-entry table, written straight into the canvas view
        out = cv2.LUT(planes[2 - c], _NORM_LUT, dst=dst[c, :nh, :nw])
        if not np.shares_memory(out, dst):  # an OpenCV build that ignored dst
            dst[c, :nh, :nw] = out
    if nh < dst.shape[1]:
        dst[:, nh:, :] = pad_value
    if nw < dst.shape[2]:
        dst[:, :nh, nw:] = pad_value
