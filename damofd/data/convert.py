"""Converters from the common WIDER FACE annotation formats to labelv2 (reference spec §5.1).

Sources:

* ``wider-txt``: WIDER's own ``wider_face_{train,val}_bbx_gt.txt`` — image path, face count, then
  one ``x y w h blur expression illumination invalid occlusion pose`` line per face (an image with
  0 faces is followed by one all-zero line).
* ``wider-mat``: WIDER's ``wider_face_{train,val}.mat`` (``event_list``, ``file_list``,
  ``face_bbx_list`` and, for the split files, ``invalid_label_list``).
* ``retinaface``: RetinaFace ``label.txt`` — ``# <path>`` headers, then ``x y w h`` or
  ``x y w h (lx ly flag) x 5 [blur]`` lines; keypoints become labelv2 keypoints.

Boxes become ``xyxy`` with ``x2 = x + w`` (no +1), exactly as the shipped labelv2 files. Faces
flagged invalid are kept by default, as insightface does (``invalid="ignore"`` writes them as
ignore regions, ``"drop"`` removes them). None of these sources stores the image size: with an
image folder the converter reads it from each file header (an error names every missing image,
unless ``skip_missing`` drops those images); without one the headers carry no size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from damofd.data.imagesize import read_image_size
from damofd.data.labelv2 import NUM_KEYPOINTS, ImageAnnotation, read_text_file
from damofd.errors import InputError

__all__ = [
    "ConvertResult",
    "InvalidPolicy",
    "MissingImagesError",
    "SOURCE_FORMATS",
    "add_image_sizes",
    "convert",
    "read_retinaface_txt",
    "read_wider_mat",
    "read_wider_txt",
]

InvalidPolicy = Literal["keep", "ignore", "drop"]
SOURCE_FORMATS: tuple[str, ...] = ("wider-txt", "wider-mat", "retinaface")


@dataclass(frozen=True)
class _Face:
    xywh: tuple[float, float, float, float]
    invalid: bool = False
    kps: tuple[float, ...] | None = None  # 15 raw values (x, y, flag) x 5


def _make_image(
    name: str,
    faces: Sequence[_Face],
    invalid: InvalidPolicy,
    line: int = 0,
    drop_empty: bool = False,
) -> ImageAnnotation:
    if invalid == "drop":
        faces = [f for f in faces if not f.invalid]
    if drop_empty:
        faces = [f for f in faces if f.xywh[2] > 0 and f.xywh[3] > 0]
    n = len(faces)
    xywh = np.asarray([f.xywh for f in faces], dtype=np.float32).reshape(n, 4)
    boxes = np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), axis=1)
    kps = np.zeros((n, NUM_KEYPOINTS, 3), dtype=np.float32)
    has = np.zeros((n,), dtype=bool)
    for i, f in enumerate(faces):
        if f.kps is not None:
            kps[i] = np.asarray(f.kps, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
            has[i] = True
    ignore = np.asarray([f.invalid for f in faces], dtype=bool).reshape(n)
    if invalid == "keep":
        ignore[:] = False
    return ImageAnnotation(
        name=name,
        bboxes=boxes,
        keypoints=kps,
        has_keypoints=has,
        ignore=ignore,
        line=line,
        box_lines=np.zeros((n,), dtype=np.int64),
    )


def _numbers(parts: list[str], src: Path, lineno: int) -> list[float]:
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise InputError(f"{src}:{lineno}: expected numbers, got {' '.join(parts)!r}") from None


def read_wider_txt(
    path: str | os.PathLike[str], *, invalid: InvalidPolicy = "keep", drop_empty: bool = False
) -> list[ImageAnnotation]:
    """Parse WIDER's ``wider_face_*_bbx_gt.txt`` (``x y w h`` + 6 attributes per face).

    ``drop_empty`` removes boxes with ``w <= 0`` or ``h <= 0`` (the shipped val labelv2 has none).
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"WIDER annotation file not found: {str(src)!r}")
    lines = read_text_file(src).splitlines()
    out: list[ImageAnnotation] = []
    i, n = 0, len(lines)
    while i < n:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        head = i + 1
        if i + 1 >= n:
            raise InputError(f"{src}:{head}: image {name!r} has no face-count line")
        count_text = lines[i + 1].strip()
        try:
            count = int(count_text)
        except ValueError:
            raise InputError(
                f"{src}:{head + 1}: expected the face count of {name!r}, got {count_text!r}"
            ) from None
        if count < 0:
            raise InputError(f"{src}:{head + 1}: negative face count {count}")
        rows = max(count, 1)  # a 0-face image is followed by one placeholder line
        if i + 2 + rows > n:
            raise InputError(
                f"{src}:{head}: image {name!r} announces {count} faces but the file ends"
            )
        faces: list[_Face] = []
        for k in range(count):
            lineno = i + 3 + k
            parts = lines[i + 2 + k].split()
            if len(parts) < 4:
                raise InputError(
                    f"{src}:{lineno}: expected 'x y w h [attributes]', got {len(parts)} values"
                )
            v = _numbers(parts, src, lineno)
            bad = len(v) >= 8 and v[7] == 1
            faces.append(_Face((v[0], v[1], v[2], v[3]), invalid=bad))
        out.append(_make_image(name, faces, invalid, head, drop_empty))
        i += 2 + rows
    return out


def _mat_str(x) -> str:
    a = np.asarray(x).reshape(-1)
    while a.dtype == object:
        a = np.asarray(a[0]).reshape(-1)
    return str(a[0])


def read_wider_mat(
    path: str | os.PathLike[str], *, invalid: InvalidPolicy = "keep", drop_empty: bool = False
) -> list[ImageAnnotation]:
    """Parse WIDER's ``wider_face_*.mat`` (boxes ``x y w h``; invalid flags when present)."""
    from scipy.io import loadmat

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"WIDER .mat file not found: {str(src)!r}")
    try:
        mat = loadmat(str(src))
    except Exception as e:  # scipy raises several unrelated types for a bad file
        raise InputError(f"{src}: not a readable MATLAB file ({e})") from None
    for key in ("event_list", "file_list", "face_bbx_list"):
        if key not in mat:
            raise InputError(f"{src}: missing variable {key!r} (not a WIDER FACE .mat file)")
    events, files, boxes = mat["event_list"], mat["file_list"], mat["face_bbx_list"]
    invalids = mat.get("invalid_label_list")
    out: list[ImageAnnotation] = []
    for e in range(events.shape[0]):
        event = _mat_str(events[e])
        ev_files = files[e][0].reshape(-1)
        ev_boxes = boxes[e][0].reshape(-1)
        ev_inv = invalids[e][0].reshape(-1) if invalids is not None else None
        for j in range(ev_files.shape[0]):
            name = f"{event}/{_mat_str(ev_files[j])}.jpg"
            xywh = np.asarray(ev_boxes[j], dtype=np.float64).reshape(-1, 4)
            inv = (
                np.asarray(ev_inv[j]).reshape(-1).astype(bool)
                if ev_inv is not None
                else np.zeros(len(xywh), dtype=bool)
            )
            if inv.shape[0] != xywh.shape[0]:
                raise InputError(
                    f"{src}: {name}: {xywh.shape[0]} boxes but {inv.shape[0]} invalid flags"
                )
            faces = [
                _Face((b[0], b[1], b[2], b[3]), invalid=bool(f)) for b, f in zip(xywh.tolist(), inv)
            ]
            out.append(_make_image(name, faces, invalid, 0, drop_empty))
    return out


def read_retinaface_txt(
    path: str | os.PathLike[str], *, drop_empty: bool = False
) -> list[ImageAnnotation]:
    """Parse a RetinaFace ``label.txt`` (``x y w h [15 keypoint values [extra]]`` per face)."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"RetinaFace label file not found: {str(src)!r}")
    out: list[ImageAnnotation] = []
    name: str | None = None
    head = 0
    faces: list[_Face] = []
    for lineno, raw in enumerate(read_text_file(src).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if name is not None:
                out.append(_make_image(name, faces, "keep", head, drop_empty))
            parts = line[1:].split()
            if not parts:
                raise InputError(f"{src}:{lineno}: header '#' without an image path")
            name = parts[0].removeprefix("./")
            head, faces = lineno, []
            continue
        if name is None:
            raise InputError(f"{src}:{lineno}: face line before the first '# <image>' header")
        parts = line.split()
        if len(parts) != 4 and len(parts) < 4 + 3 * NUM_KEYPOINTS:
            raise InputError(
                f"{src}:{lineno}: expected 4 (box) or >= {4 + 3 * NUM_KEYPOINTS} "
                f"(box + 5 keypoints) values, got {len(parts)}"
            )
        v = _numbers(parts, src, lineno)
        kps = tuple(v[4 : 4 + 3 * NUM_KEYPOINTS]) if len(v) > 4 else None
        if kps is not None:
            for j in range(NUM_KEYPOINTS):
                trip = kps[3 * j : 3 * j + 3]
                if not all(t == -1 for t in trip) and trip[2] < 0:
                    raise InputError(
                        f"{src}:{lineno}: keypoint {j} has flag {trip[2]:g} (must be >= 0, or "
                        f"all three values -1 for an absent keypoint)"
                    )
        faces.append(_Face((v[0], v[1], v[2], v[3]), kps=kps))
    if name is not None:
        out.append(_make_image(name, faces, "keep", head, drop_empty))
    return out


def add_image_sizes(
    images: list[ImageAnnotation],
    image_dir: str | os.PathLike[str],
    *,
    skip_missing: bool = False,
) -> tuple[list[ImageAnnotation], list[str]]:
    """Fill ``width``/``height`` from the image files under ``image_dir`` (header read only).

    Returns ``(images, missing)``. Missing images raise :class:`MissingImagesError` (an
    :class:`InputError`) naming them (all of them are counted, the first 20 listed) unless
    ``skip_missing``, which drops those images.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} does not exist")
    kept: list[ImageAnnotation] = []
    missing: list[str] = []
    for img in images:
        p = root / img.name
        if not p.is_file():
            missing.append(img.name)
            continue
        img.width, img.height = read_image_size(p)
        kept.append(img)
    if missing and not skip_missing:
        raise MissingImagesError(missing, len(images), root)
    return kept, missing


class MissingImagesError(InputError):
    """Images of an annotation file are not on disk. ``missing`` (names), ``total`` and ``root``
    are kept so that a caller can word the remedy its own way (:meth:`with_hint`)."""

    def __init__(
        self,
        missing: Sequence[str],
        total: int,
        root: Path,
        hint: str = "pass skip_missing=True to drop them",
    ) -> None:
        self.missing, self.total, self.root, self.hint = list(missing), total, root, hint
        shown = "\n  ".join(self.missing[:20])
        more = f"\n  ... and {len(self.missing) - 20} more" if len(self.missing) > 20 else ""
        super().__init__(
            f"{len(self.missing)} of {total} images are missing under {str(root)!r} "
            f"({hint}):\n  {shown}{more}"
        )

    def with_hint(self, hint: str) -> MissingImagesError:
        """The same error with another remedy (e.g. a command-line flag)."""
        return MissingImagesError(self.missing, self.total, self.root, hint)


@dataclass(frozen=True)
class ConvertResult:
    images: list[ImageAnnotation]
    skipped_missing: list[str]


def convert(
    source_format: str,
    src: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str] | None = None,
    invalid: InvalidPolicy = "keep",
    drop_empty: bool = False,
    skip_missing: bool = False,
) -> ConvertResult:
    """Read ``src`` in ``source_format`` (one of :data:`SOURCE_FORMATS`) into labelv2 records.

    With ``image_dir`` the image sizes are read from the files (see :func:`add_image_sizes`).
    ``drop_empty`` removes zero-area boxes (``w <= 0`` or ``h <= 0``), as insightface's val file.
    """
    if invalid not in ("keep", "ignore", "drop"):
        raise InputError(f"invalid policy must be keep, ignore or drop, got {invalid!r}")
    if source_format == "wider-txt":
        images = read_wider_txt(src, invalid=invalid, drop_empty=drop_empty)
    elif source_format == "wider-mat":
        images = read_wider_mat(src, invalid=invalid, drop_empty=drop_empty)
    elif source_format == "retinaface":
        images = read_retinaface_txt(src, drop_empty=drop_empty)
    else:
        raise InputError(
            f"unknown source format {source_format!r}; choose one of {', '.join(SOURCE_FORMATS)}"
        )
    missing: list[str] = []
    if image_dir is not None:
        images, missing = add_image_sizes(images, image_dir, skip_missing=skip_missing)
    return ConvertResult(images, missing)
