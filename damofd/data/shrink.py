"""Shrink a labelv2 training set: every image scaled by one factor and re-encoded as JPEG, its
boxes and keypoints scaled to match, so the set travels in fewer bytes (to a GPU machine, say).

The training pipeline crops a square of ``crop scale × short side`` and resizes it to the input
size, so a uniformly scaled image gives the same face sizes at the network's input; what is lost
is detail that the resize would mostly have discarded (the 640 recipe's crops of 1.0–2.0 × the
short side of a 1024-px WIDER image are shrunk 1.2–2.4× anyway)::

    damofd data shrink train95_kps.txt --images WIDER_train/images --scale 0.75 --quality 80 \\
        --out gpu_data

writes ``gpu_data/labelv2.txt`` and ``gpu_data/images/<same relative names>``, a folder that
``damofd train --train gpu_data`` reads directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from damofd.data.imagesize import read_image_size
from damofd.data.labelv2 import ImageAnnotation, write_labelv2
from damofd.errors import InputError
from damofd.io import atomic_write_bytes

__all__ = ["ShrinkReport", "scale_annotation", "shrink_dataset"]


def _header_size_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return read_image_size(path)
    except (OSError, InputError):
        return None


def scale_annotation(ann: ImageAnnotation, sx: float, sy: float) -> ImageAnnotation:
    """``ann`` with boxes and present keypoints scaled by ``(sx, sy)`` (absent keypoints, all -1,
    and the flags stay as written)."""
    boxes = ann.bboxes.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
    kps = ann.keypoints.astype(np.float32).copy()
    present = ~np.all(ann.keypoints == -1, axis=2) & ann.has_keypoints[:, None]
    kps[..., 0] = np.where(present, kps[..., 0] * sx, kps[..., 0])
    kps[..., 1] = np.where(present, kps[..., 1] * sy, kps[..., 1])
    return replace(ann, bboxes=boxes, keypoints=kps)


@dataclass
class ShrinkReport:
    """What :func:`shrink_dataset` wrote: image count, bytes before and after, the label file."""

    images: int
    bytes_in: int
    bytes_out: int
    labels: Path
    skipped: int = 0

    def __str__(self) -> str:
        mib = 2.0**20
        return (
            f"wrote {self.images} images ({self.bytes_in / mib:.1f} MiB -> "
            f"{self.bytes_out / mib:.1f} MiB) and {self.labels}"
            + (f"; {self.skipped} already there were kept" if self.skipped else "")
        )


def shrink_dataset(
    annotations: Sequence[ImageAnnotation],
    image_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    scale: float = 0.75,
    quality: int = 80,
    force: bool = False,
) -> ShrinkReport:
    """Write ``out_dir/images/<name>`` (each image scaled by ``scale``, JPEG ``quality``) and
    ``out_dir/labelv2.txt`` (the annotations scaled to the written pixel sizes).

    Images already in ``out_dir`` are kept when their size matches (an interrupted run resumes;
    every file is written atomically, so one that is there is whole);
    the label file is written last, atomically, and an existing one is replaced only with
    ``force``. Raises :class:`InputError` naming the image that cannot be read.
    """
    if not 0.0 < scale <= 1.0:
        raise InputError(f"--scale must be in (0, 1], got {scale}")
    if not 1 <= quality <= 100:
        raise InputError(f"--quality must be in 1..100, got {quality}")
    src, out = Path(image_dir), Path(out_dir)
    labels = out / "labelv2.txt"
    if (out / "images").resolve() == src.resolve():
        raise InputError(f"--out {out} would overwrite the source images {src}")
    if labels.exists() and not force:
        raise InputError(f"{labels} exists (pass --force to replace it)")
    scaled: list[ImageAnnotation] = []
    bytes_in = bytes_out = skipped = 0
    for ann in annotations:
        path = src / ann.name
        unreadable = InputError(f"cannot read image {str(path)!r} (line {ann.line} of the labels)")
        try:  # sizes from the file headers: a rerun decodes only the images it still writes
            w, h = read_image_size(path)
        except (OSError, InputError):
            raise unreadable from None
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        dst = out / "images" / ann.name
        bytes_in += path.stat().st_size
        if dst.is_file() and _header_size_or_none(dst) == (nw, nh):
            skipped += 1
        else:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise unreadable
            if img.shape[:2] != (h, w):  # decoded as the training loader sees it (EXIF turns)
                h, w = img.shape[:2]
                nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:
                raise InputError(f"cannot encode {str(path)!r} as JPEG")
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dst, buf.tobytes())
        bytes_out += dst.stat().st_size
        ann2 = scale_annotation(ann, nw / w, nh / h)
        scaled.append(replace(ann2, width=nw, height=nh))
    write_labelv2(labels, scaled)
    return ShrinkReport(len(scaled), bytes_in, bytes_out, labels, skipped)
