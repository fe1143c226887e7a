"""Validation of a labelv2 file against its image folder (``damofd data check``).

Every problem is reported with its line number, not only the first: malformed lines (errors),
images missing on disk (errors, at their header line), and suspicious but loadable content
(warnings): headers without a size, a header size that differs from the image file, degenerate
boxes and boxes outside the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from damofd.data.imagesize import image_problem, read_image_size
from damofd.data.labelv2 import ImageAnnotation, LabelIssue, scan_labelv2
from damofd.errors import InputError

__all__ = ["CheckReport", "check_labelv2"]


@dataclass
class CheckReport:
    """Result of :func:`check_labelv2`."""

    source: str
    images: list[ImageAnnotation]
    issues: list[LabelIssue] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[LabelIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[LabelIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        n_boxes = sum(i.num_objects for i in self.images)
        n_ign = sum(int(i.ignore.sum()) for i in self.images)
        n_kps = sum(int(i.has_keypoints.sum()) for i in self.images)
        return (
            f"{self.source}: {len(self.images)} images, {n_boxes} boxes ({n_ign} ignore, "
            f"{n_kps} with keypoints); {len(self.errors)} errors "
            f"({len(self.missing_images)} missing images"
            + (f", {len(self.bad_images)} unreadable or truncated" if self.bad_images else "")
            + f"), {len(self.warnings)} warnings"
        )


def check_labelv2(
    labels: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    *,
    check_sizes: bool = True,
    decode: bool = True,
) -> CheckReport:
    """Check ``labels`` (and, with ``image_dir``, that every image exists, is whole — a truncated
    JPEG/PNG is an error — and decodes when ``decode``, and, when ``check_sizes``, that its
    header size matches the file). Issues are sorted by line."""
    src = str(labels)
    images, issues = scan_labelv2(labels)
    report = CheckReport(src, images, list(issues))
    root = Path(image_dir) if image_dir is not None else None
    if root is not None and not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} does not exist")

    def warn(line: int, msg: str) -> None:
        report.issues.append(LabelIssue(src, line, msg, "warning"))

    for img in images:
        w, h = img.width, img.height
        if root is not None:
            p = root / img.name
            if not p.is_file():
                report.missing_images.append(img.name)
                report.issues.append(LabelIssue(src, img.line, f"image not found: {p}"))
            elif (problem := image_problem(p, decode=decode)) is not None:
                report.bad_images.append(img.name)
                report.issues.append(LabelIssue(src, img.line, problem))
            elif check_sizes:
                try:
                    fw, fh = read_image_size(p)
                except InputError as e:
                    report.issues.append(LabelIssue(src, img.line, str(e)))
                else:
                    if w is not None and (fw, fh) != (w, h):
                        warn(img.line, f"header size {w}x{h} but {img.name} is {fw}x{fh}")
                    w, h = w or fw, h or fh
        if img.width is None:
            warn(img.line, f"no image size in the header of {img.name!r} (read from the file)")
        if img.num_objects == 0:
            continue
        b = img.bboxes
        bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        for k in np.flatnonzero(bad):
            warn(int(img.box_lines[k]), "degenerate box (x2 <= x1 or y2 <= y1)")
        if w is not None and h is not None:
            out = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
            for k in np.flatnonzero(out & ~bad):
                warn(int(img.box_lines[k]), f"box extends outside the {w}x{h} image")
    report.issues.sort(key=lambda i: (i.line, i.severity != "error"))
    return report
