"""The images of a WIDER FACE split folder, listed once for ``damofd eval`` and training's
periodic validation: ``<root>/images/<event>/<file>`` (or ``<root>/<event>/<file>``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from damofd.constants import WIDER_IMAGE_EXTENSIONS
from damofd.errors import InputError
from damofd.evaluation.predictions import image_name

__all__ = ["WiderImage", "list_wider_images"]

_IMAGE_EXTS = WIDER_IMAGE_EXTENSIONS


@dataclass(frozen=True)
class WiderImage:
    """One image of a WIDER split: ``images/<event>/<file>``."""

    event: str
    file: str
    path: Path

    @property
    def name(self) -> str:
        """Image key (file name without extension), as in the ground truth."""
        return image_name(self.file)

    @property
    def key(self) -> str:
        """``"<event>/<name>"``."""
        return f"{self.event}/{self.name}"


def list_wider_images(wider_root: str | os.PathLike[str]) -> list[WiderImage]:
    """Every image under ``<wider_root>/images/<event>/`` (or ``<wider_root>/<event>/``), sorted
    by event and file name. Raises :class:`InputError` when there is none."""
    root = Path(wider_root)
    if not root.is_dir():
        raise InputError(f"WIDER split folder {str(root)!r} is not a folder")
    images_dir = root / "images" if (root / "images").is_dir() else root
    out: list[WiderImage] = []
    for event_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        if event_dir.name.startswith("."):
            continue
        for f in sorted(event_dir.iterdir()):
            if f.suffix.lower() in _IMAGE_EXTS and not f.name.startswith(".") and f.is_file():
                out.append(WiderImage(event_dir.name, f.name, f))
    if not out:
        raise InputError(
            f"no images found under {str(images_dir)!r}: expected "
            f"images/<event>/<name>.jpg (e.g. WIDER_val/images/0--Parade/0_Parade_...jpg)"
        )
    seen: dict[str, WiderImage] = {}
    for im in out:
        other = seen.setdefault(im.name, im)
        if other is not im:
            raise InputError(
                f"image name {im.name!r} appears twice: {other.path} and {im.path} (WIDER image "
                f"names are unique across events)"
            )
    return out
