"""Locating the annotation file and image folder of a dataset (reference spec §5.1, §8.2).

Accepted forms of ``root``:

* a labelv2 file: the images are in ``images/`` next to it (or ``image_dir`` when given);
* a folder holding ``labelv2.txt`` and ``images/`` (the SCRFD ``data/retinaface/train`` layout);
* a ModelScope split folder (``MsDataset`` ``split_config`` entry), which holds one sub-folder
  whose name does not start with ``_`` that in turn holds ``labelv2.txt`` and ``images/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from damofd.errors import InputError

__all__ = ["DatasetPaths", "resolve_dataset"]


@dataclass(frozen=True)
class DatasetPaths:
    """Annotation file and image folder of one split."""

    labels: Path
    images: Path


def resolve_dataset(
    root: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str] | None = None,
    label_name: str = "labelv2.txt",
    image_dir_name: str = "images",
) -> DatasetPaths:
    """Resolve ``root`` (file, dataset folder or ModelScope split folder) to its paths.

    Raises ``FileNotFoundError`` / :class:`InputError` naming what was looked for.
    """
    p = Path(root)
    if not p.exists():
        raise FileNotFoundError(f"dataset {str(p)!r} does not exist")
    if p.is_file():
        labels = p
    elif (p / label_name).is_file():
        labels = p / label_name
    else:
        subs = sorted(
            d
            for d in p.iterdir()
            if d.is_dir() and not d.name.startswith(("_", ".")) and (d / label_name).is_file()
        )
        if not subs:
            raise InputError(
                f"dataset folder {str(p)!r} holds neither {label_name!r} nor a sub-folder "
                f"(not starting with '_') that holds one"
            )
        if len(subs) > 1:
            names = ", ".join(d.name for d in subs)
            raise InputError(
                f"dataset folder {str(p)!r} has several sub-folders with {label_name!r} "
                f"({names}); pass one of them"
            )
        labels = subs[0] / label_name
    images = Path(image_dir) if image_dir is not None else labels.parent / image_dir_name
    if not images.is_dir():
        raise FileNotFoundError(
            f"image folder {str(images)!r} for {str(labels)!r} does not exist "
            f"(pass the image folder explicitly)"
        )
    return DatasetPaths(labels=labels, images=images)
