"""Loading images for inference: paths, URLs, ``PIL.Image`` objects and numpy arrays.

Everything is converted to a **BGR uint8 (H, W, 3)** array, the OpenCV and ModelScope
convention: grayscale is expanded to three channels, an alpha channel is dropped (as
``cv2.imread`` does), 16-bit images are scaled to 8 bits by ``round(x / 257)`` (65535 → 255),
float arrays whose values all lie in [0, 1] are scaled by 255 (the torchvision/PIL float
convention), other float arrays are taken as 0–255 values and clipped. Files are decoded with
OpenCV (EXIF orientation applied, like ``cv2.imread``); the pixel count is checked from the file
header before decoding so a decompression bomb is refused cheaply. Only regular files are read (a
FIFO or device would block or never end).
"""

from __future__ import annotations

import os
import stat
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from damofd.errors import InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "describe_input",
    "header_image_size",
    "load_image",
    "to_bgr_uint8",
]

#: Largest image (width × height) decoded from a file or URL; PIL's own bomb limit.
DEFAULT_MAX_PIXELS = 178_956_970
#: Largest download accepted from a URL, in bytes.
MAX_URL_BYTES = 200 * 1024 * 1024
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pbm", ".pgm", ".ppm"}
)

# str / PathLike (file or http(s) URL), bytes (encoded file), np.ndarray (BGR), PIL.Image.Image
ImageInput = Any


def describe_input(src: ImageInput) -> str:
    """A short label for ``src`` used in results and error messages."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, np.ndarray):
        return "<array>"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if _is_pil(src):
        return "<PIL.Image>"
    return f"<{type(src).__name__}>"


def _is_pil(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("PIL.") and hasattr(obj, "mode") and hasattr(obj, "size")


def header_image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` read from a PNG, JPEG, GIF, BMP or WebP header; ``None`` if unknown.

    Reads at most the first few kilobytes for JPEG (the SOF marker), nothing is decoded.
    """
    b = bytes(data[:32])
    try:
        if b.startswith(b"\x89PNG\r\n\x1a\n") and b[12:16] == b"IHDR":
            w, h = struct.unpack(">II", b[16:24])
            return int(w), int(h)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", b[6:10])
            return int(w), int(h)
        if b.startswith(b"BM") and len(b) >= 26:
            w, h = struct.unpack("<ii", b[18:26])
            return abs(int(w)), abs(int(h))
        if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
            chunk = b[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(b[24:27], "little") + 1
                h = int.from_bytes(b[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L":
                bits = int.from_bytes(b[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", b[26:30])
                return w & 0x3FFF, h & 0x3FFF
            return None
        if b.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except (struct.error, IndexError):
        return None
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if marker in _SOF_MARKERS:
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return int(w), int(h)
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
        i += 2 + seg_len
    return None


def _check_pixels(w: int, h: int, max_pixels: int | None, label: str) -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"{label}: image has zero size ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{label}: image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
            f"(raise the limit to allow it: --max-pixels N on the command line, max_pixels= in "
            f"Python)"
        )


def decode_image(
    data: bytes | memoryview | np.ndarray, label: str, max_pixels: int | None
) -> np.ndarray:
    """Decode an encoded image file's bytes to BGR uint8 (size-checked before decoding)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.size == 0:
        raise InputError(f"{label}: empty file")
    size = header_image_size(memoryview(buf))
    if size is not None:
        _check_pixels(size[0], size[1], max_pixels, label)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise InputError(f"{label}: not a readable image (unknown format, truncated or corrupt)")
    if size is None:
        _check_pixels(img.shape[1], img.shape[0], max_pixels, label)
    return to_bgr_uint8(img, label)


def _read_url(url: str, timeout: float) -> bytes:
    """Download ``url``; ``timeout`` bounds the whole download (connection, headers and body),
    not each socket read, so a server that trickles bytes cannot hold the caller longer."""
    req = urllib.request.Request(url, headers={"User-Agent": "damofd"})
    deadline = time.monotonic() + timeout
    timed_out = InputError(f"{url}: timed out after {timeout:g} s")
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise timed_out
                if sock is not None:
                    sock.settimeout(left)
                chunk = resp.read1(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_URL_BYTES:
                    raise InputError(f"{url}: download larger than {MAX_URL_BYTES:,} bytes")
    except InputError:
        raise
    except TimeoutError:
        raise timed_out from None
    except urllib.error.HTTPError as e:
        raise InputError(f"{url}: HTTP error {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise timed_out from None
        raise InputError(f"{url}: cannot fetch ({e.reason})") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{url}: cannot fetch ({e})") from None
    return b"".join(chunks)


def to_bgr_uint8(img: np.ndarray, label: str = "<array>") -> np.ndarray:
    """Normalise an array to BGR uint8 (H, W, 3); returns ``img`` itself when it already is.

    Accepted: (H, W) or (H, W, 1) grayscale, (H, W, 3) BGR, (H, W, 4) BGRA (alpha dropped);
    dtypes uint8, uint16 (scaled by 1/257, rounded), bool, other integers (clipped to 0–255),
    float (values all in [0, 1]: scaled by 255; otherwise taken as 0–255; clipped and rounded).
    """
    if not isinstance(img, np.ndarray):
        raise InputError(f"{label}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise InputError(
            f"{label}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {img.shape}"
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"{label}: image has zero size ({img.shape[1]}x{img.shape[0]})")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = cv2.convertScaleAbs(img, alpha=1.0 / 257.0)
        elif img.dtype == np.bool_:
            img = img.astype(np.uint8) * np.uint8(255)
        elif np.issubdtype(img.dtype, np.integer):
            img = np.clip(img, 0, 255).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            f = np.nan_to_num(img.astype(np.float32, copy=False), nan=0.0)
            if f.size and float(f.min()) >= 0.0 and float(f.max()) <= 1.0:
                f = f * 255.0  # a [0, 1] float image (torchvision / skimage convention)
            img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        else:
            raise InputError(f"{label}: unsupported image dtype {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _pil_to_bgr(img: Any, label: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I":  # 32-bit integer; PNG 16-bit grayscale opens this way in old Pillow
            arr = arr.astype(np.uint16) if arr.max(initial=0) <= 65535 else arr
        return to_bgr_uint8(arr, label)
    if mode == "F":
        return to_bgr_uint8(np.asarray(img), label)
    if mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.size == 0:
        raise InputError(f"{label}: image has zero size")
    return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)


def load_image(
    src: ImageInput,
    *,
    timeout: float = 10.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load ``src`` as a BGR uint8 (H, W, 3) array.

    Args:
        src: a file path (str or ``os.PathLike``), an ``http(s)://`` URL, the bytes of an encoded
            image file, a ``PIL.Image.Image`` (any mode; converted from RGB) or a numpy array
            (taken as **BGR**, the ModelScope/OpenCV convention; grayscale, BGRA and 16-bit
            accepted, see :func:`to_bgr_uint8`). Arrays that are already BGR uint8 are returned
            without a copy.
        timeout: seconds a URL download may take in all (connection and body).
        max_pixels: refuse files/URLs whose width × height exceeds this (``None``: no limit).

    Raises:
        InputError: naming the input, for a missing, unreadable, truncated, zero-sized,
            oversized or timed-out image.
    """
    label = describe_input(src)
    if isinstance(src, np.ndarray):
        return to_bgr_uint8(src, label)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return decode_image(src, label, max_pixels)
    if _is_pil(src):
        return _pil_to_bgr(src, label)
    if isinstance(src, (str, os.PathLike)):
        s = os.fspath(src)
        if s.startswith(("http://", "https://")):
            return decode_image(_read_url(s, timeout), label, max_pixels)
        path = Path(s)
        if not path.exists():
            raise InputError(f"{label}: no such file")
        if path.is_dir():
            raise InputError(f"{label}: is a directory, not an image")
        try:
            mode = path.stat().st_mode
        except OSError as e:
            raise InputError(f"{label}: cannot read ({e.strerror or e})") from None
        if not stat.S_ISREG(mode):
            raise InputError(f"{label}: not a regular file (a FIFO, device or socket); refused")
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise InputError(f"{label}: cannot read ({e.strerror or e})") from None
        return decode_image(data, label, max_pixels)
    raise InputError(
        f"{label}: unsupported input type {type(src).__name__} (expected a path, URL, bytes, "
        f"numpy array or PIL.Image)"
    )
