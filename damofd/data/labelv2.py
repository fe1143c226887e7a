"""The ``labelv2.txt`` annotation format of SCRFD / DamoFD (reference spec §5.1).

::

    # <relative image path> [<width> <height>]
    x1 y1 x2 y2                          box only
    x1 y1 x2 y2 ignore                   5th value 1 => the box is an "ignore" region
    x1 y1 x2 y2 (kx ky flag) x 5 [...]   >= 19 values: five keypoints, extra values ignored

Boxes are ``xyxy`` in absolute pixels of the original image (no +1 convention; the shipped files
write ``x2 = x + w``). A keypoint whose three values are all -1 is absent (training weight 0);
otherwise its flag must be >= 0 and its weight is 1 (the flag value itself is not used). Keypoint
order: left eye, right eye, nose, left mouth corner, right mouth corner
(horizontal-flip permutation :data:`KEYPOINT_FLIP_ORDER`).

The size in the header is optional here (the shipped val file has none); the training dataset
reads missing sizes from the image files. Unlike the reference parser, box-only lines are accepted
in training too (their keypoint weights are 0).

Parsing never stops at the first problem internally: :func:`scan_labelv2` returns every issue with
its line number (used by ``damofd data check``); :func:`read_labelv2` raises :class:`InputError`
naming the file and line of the first error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from damofd.errors import InputError
from damofd.io import atomic_write_text

__all__ = [
    "KEYPOINT_FLIP_ORDER",
    "NUM_KEYPOINTS",
    "ImageAnnotation",
    "LabelIssue",
    "format_labelv2",
    "parse_labelv2_text",
    "read_labelv2",
    "read_text_file",
    "scan_labelv2",
    "write_labelv2",
]

NUM_KEYPOINTS = 5
KEYPOINT_FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
_KPS_VALUES = 3 * NUM_KEYPOINTS  # values 4..18 of a line


@dataclass(frozen=True)
class LabelIssue:
    """A problem found in an annotation file (``line`` is 1-based; 0 = the file as a whole)."""

    source: str
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line > 0 else self.source
        return f"{where}: {self.severity}: {self.message}"


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_kps() -> np.ndarray:
    return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)


@dataclass
class ImageAnnotation:
    """All faces of one image, as stored in the file.

    Attributes:
        name: image path relative to the image folder (as written in the header).
        width, height: image size in pixels from the header, or ``None`` when absent.
        bboxes: (N, 4) float32 ``xyxy`` boxes in original-image pixels.
        keypoints: (N, 5, 3) float32 raw keypoint triplets ``(x, y, flag)`` as written; all -1
            for an absent keypoint, zeros for lines without keypoints.
        has_keypoints: (N,) bool, the line carried keypoint values (>= 19 values).
        ignore: (N,) bool, the box is an ignore region (5th value 1, or smaller than
            ``min_size`` when parsing with one).
        line: 1-based line number of the header; ``box_lines`` (N,) those of the boxes.
    """

    name: str
    width: int | None = None
    height: int | None = None
    bboxes: np.ndarray = field(default_factory=_empty_boxes)
    keypoints: np.ndarray = field(default_factory=_empty_kps)
    has_keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    line: int = 0
    box_lines: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    @property
    def num_objects(self) -> int:
        """Number of annotated boxes (ignore regions included, as the reference counts them)."""
        return int(self.bboxes.shape[0])

    def keypoint_weights(self) -> np.ndarray:
        """(N, 5) float32 training weights: 0 for absent keypoints and box-only lines, else 1."""
        absent = np.all(self.keypoints == -1, axis=2)
        return (self.has_keypoints[:, None] & ~absent).astype(np.float32)

    @property
    def gt_bboxes(self) -> np.ndarray:
        """(N', 4) float32 non-ignored boxes."""
        return self.bboxes[~self.ignore]

    @property
    def gt_keypoints(self) -> np.ndarray:
        """(N', 5, 3) float32 ``(x, y, weight)`` of the non-ignored boxes (reference layout)."""
        kps = self.keypoints.copy()
        kps[..., 2] = self.keypoint_weights()
        kps[~self.has_keypoints] = 0.0
        return kps[~self.ignore]

    @property
    def gt_bboxes_ignore(self) -> np.ndarray:
        """(K, 4) float32 ignore boxes."""
        return self.bboxes[self.ignore]


# ----------------------------------------------------------------------------------------------
# parsing


class _Builder:
    __slots__ = ("boxes", "has_kps", "height", "ignore", "kps", "line", "lines", "name", "width")

    def __init__(self, name: str, width: int | None, height: int | None, line: int) -> None:
        self.name, self.width, self.height, self.line = name, width, height, line
        self.boxes: list[list[float]] = []
        self.kps: list[list[float]] = []
        self.has_kps: list[bool] = []
        self.ignore: list[bool] = []
        self.lines: list[int] = []

    def build(self) -> ImageAnnotation:
        n = len(self.boxes)
        return ImageAnnotation(
            name=self.name,
            width=self.width,
            height=self.height,
            bboxes=np.asarray(self.boxes, dtype=np.float32).reshape(n, 4),
            keypoints=np.asarray(self.kps, dtype=np.float32).reshape(n, NUM_KEYPOINTS, 3),
            has_keypoints=np.asarray(self.has_kps, dtype=bool).reshape(n),
            ignore=np.asarray(self.ignore, dtype=bool).reshape(n),
            line=self.line,
            box_lines=np.asarray(self.lines, dtype=np.int64).reshape(n),
        )


_NO_KPS = [0.0] * _KPS_VALUES


def _parse_header(text: str) -> tuple[str, int | None, int | None] | str:
    """``text`` is the header line without ``#``; returns (name, w, h) or an error message."""
    parts = text.split()
    if not parts:
        return "header '#' without an image path"
    if len(parts) == 1:
        return parts[0], None, None
    if len(parts) != 3:
        return (
            f"header must be '# <image path> [<width> <height>]', got {len(parts)} fields "
            f"(image paths may not contain spaces)"
        )
    try:
        w, h = int(parts[1]), int(parts[2])
    except ValueError:
        return f"image size must be two integers, got {parts[1]!r} {parts[2]!r}"
    if w <= 0 or h <= 0:
        return f"image size must be positive, got {w}x{h}"
    return parts[0], w, h


def _parse_values(parts: list[str]) -> list[float] | str:
    try:
        values = [float(x) for x in parts]
    except ValueError:
        bad = next(x for x in parts if not _is_float(x))
        return f"not a number: {bad!r}"
    if not all(math.isfinite(v) for v in values):
        return "values must be finite (no nan/inf)"
    return values


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _start_image(
    text: str, lineno: int, seen: dict[str, int], issues: list[LabelIssue], source: str
) -> _Builder | None:
    """The image a header line (``text``, without ``#``) opens, or ``None`` when the header is
    invalid or names an image seen before (the issue is appended to ``issues``)."""
    header = _parse_header(text)
    if isinstance(header, str):
        issues.append(LabelIssue(source, lineno, header))
        return None
    name, w, h = header
    if name in seen:
        msg = f"duplicate image {name!r} (first header at line {seen[name]})"
        issues.append(LabelIssue(source, lineno, msg))
        return None
    seen[name] = lineno
    return _Builder(name, w, h, lineno)


def parse_labelv2_text(
    text: str | Iterable[str],
    *,
    source: str = "<labelv2>",
    min_size: float | None = None,
) -> tuple[list[ImageAnnotation], list[LabelIssue]]:
    """Parse labelv2 content, collecting every issue instead of stopping at the first.

    ``min_size`` (pixels; unset in DamoFD) marks boxes whose width or height is below it as
    ignore regions. Malformed lines are skipped (and reported); images keep their valid lines.
    Returns the images in file order and the issues in line order.
    """
    lines = text.splitlines() if isinstance(text, str) else text
    images: list[ImageAnnotation] = []
    issues: list[LabelIssue] = []
    seen: dict[str, int] = {}
    cur: _Builder | None = None
    orphan_reported = False
    any_header = False

    def error(lineno: int, msg: str) -> None:
        issues.append(LabelIssue(source, lineno, msg))

    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            any_header = True
            if cur is not None:
                images.append(cur.build())
            cur = _start_image(line[1:], lineno, seen, issues, source)
            continue
        if cur is None:
            # lines after a bad header belong to it (already reported); before the first header
            # they are reported once
            if not orphan_reported and not any_header:
                error(lineno, "box line before the first '# <image path>' header")
                orphan_reported = True
            continue
        parts = line.split()
        n = len(parts)
        if n < 4 or 5 < n < 4 + _KPS_VALUES:
            error(
                lineno,
                f"expected 4 (box), 5 (box + ignore flag) or >= {4 + _KPS_VALUES} "
                f"(box + 5 keypoints) values, got {n}",
            )
            continue
        values = _parse_values(parts)
        if isinstance(values, str):
            error(lineno, values)
            continue
        box = values[:4]
        ignore = False
        if min_size is not None and (box[2] - box[0] < min_size or box[3] - box[1] < min_size):
            ignore = True
        if n == 5:
            ignore = ignore or values[4] == 1.0
            kps, has_kps = _NO_KPS, False
        elif n > 5:
            kps, has_kps = values[4 : 4 + _KPS_VALUES], True
            bad = [
                j
                for j in range(NUM_KEYPOINTS)
                if not (kps[3 * j] == kps[3 * j + 1] == kps[3 * j + 2] == -1.0)
                and kps[3 * j + 2] < 0
            ]
            if bad:
                error(
                    lineno,
                    f"keypoint {bad[0]} has flag {kps[3 * bad[0] + 2]:g}; a flag must be >= 0 "
                    f"(or all three values -1 for an absent keypoint)",
                )
                continue
        else:
            kps, has_kps = _NO_KPS, False
        cur.boxes.append(box)
        cur.kps.append(kps)
        cur.has_kps.append(has_kps)
        cur.ignore.append(ignore)
        cur.lines.append(lineno)
    if cur is not None:
        images.append(cur.build())
    return images, issues


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _mat_header(p: Path) -> bool:
    """``p`` starts like a MATLAB file: the v5/v7 text header or an HDF5 (v7.3) signature."""
    try:
        with open(p, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return (
        (head.startswith(b"MATLAB ") and b"MAT-file" in head[:128])
        or head.startswith(_HDF5_SIGNATURE)
        or head[512:520] == _HDF5_SIGNATURE
    )


def read_text_file(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of an annotation file.

    A binary file raises :class:`InputError` saying it is not a UTF-8 text file; a MATLAB
    ``.mat`` / HDF5 file (e.g. WIDER's ``wider_face_train.mat``) says so and names the converter
    that reads it (``damofd data convert --from wider-mat``).
    """
    p = Path(path)
    mat_error = InputError(
        f"{p}: not a UTF-8 text file but a MATLAB .mat file; convert it with "
        "`damofd data convert --from wider-mat <file.mat> --out labelv2.txt`"
    )
    if _mat_header(p):
        raise mat_error
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        if p.suffix.lower() == ".mat":
            raise mat_error from None
        raise InputError(f"{p}: not a UTF-8 text file ({e})") from None


def scan_labelv2(
    path: str | os.PathLike[str], *, min_size: float | None = None
) -> tuple[list[ImageAnnotation], list[LabelIssue]]:
    """Parse a labelv2 file, returning ``(images, issues)`` (every malformed line reported)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {str(p)!r}")
    return parse_labelv2_text(read_text_file(p), source=str(p), min_size=min_size)


def read_labelv2(
    path: str | os.PathLike[str], *, min_size: float | None = None
) -> list[ImageAnnotation]:
    """Parse a labelv2 file; raise :class:`InputError` naming the file and line of the first
    malformed line (with the number of further errors)."""
    images, issues = scan_labelv2(path, min_size=min_size)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more; run 'damofd data check')" if len(errors) > 1 else ""
        raise InputError(f"{errors[0].source}:{errors[0].line}: {errors[0].message}{more}")
    return images


# ----------------------------------------------------------------------------------------------
# writing


def _fmt(v: float) -> str:
    """Shortest text that round-trips the float32 value (integers without a decimal point)."""
    f = np.float32(v)
    if f == np.round(f) and abs(f) < 2**24:
        return str(int(f))
    return np.format_float_positional(f, unique=True, trim="-")


def _format_image(img: ImageAnnotation) -> list[str]:
    head = f"# {img.name}"
    if img.width is not None and img.height is not None:
        head += f" {int(img.width)} {int(img.height)}"
    out = [head]
    for i in range(img.num_objects):
        vals = [_fmt(v) for v in img.bboxes[i]]
        if img.ignore[i]:
            vals.append("1")  # an ignore region cannot also carry keypoints in this format
        elif img.has_keypoints[i]:
            vals.extend(_fmt(v) for v in img.keypoints[i].reshape(-1))
        out.append(" ".join(vals))
    return out


def format_labelv2(images: Sequence[ImageAnnotation]) -> str:
    """labelv2 text of ``images`` (header with size when known; ignore boxes as 5 values)."""
    lines: list[str] = []
    for img in images:
        lines.extend(_format_image(img))
    return "\n".join(lines) + ("\n" if lines else "")


def write_labelv2(path: str | os.PathLike[str], images: Sequence[ImageAnnotation]) -> Path:
    """Write ``images`` to ``path`` atomically (an existing file is replaced only on success)."""
    return atomic_write_text(path, format_labelv2(images))
