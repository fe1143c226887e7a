"""Select part of a labelv2 annotation set: by event, by a list of image names, a seeded random
fraction (a held-out split), or the first N images.

:func:`select_images` is the one rule behind ``damofd data subset``; the held-out split of the
bundled model (``damofd/weights/holdout_train.txt``) was drawn with it, so the same command
rebuilds that list on any machine::

    damofd data subset labelv2_kps.txt --fraction 0.05 --seed 0 \\
        --out holdout.txt --names-out holdout_names.txt --rest-out train_95.txt
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from damofd.data.labelv2 import ImageAnnotation
from damofd.errors import InputError

__all__ = ["SubsetSelection", "event_of", "read_name_list", "select_images"]


def event_of(name: str) -> int | None:
    """WIDER event number of an image name (``12--Group/12_Group_...jpg`` → 12), else ``None``."""
    head = name.replace("\\", "/").split("/", 1)[0]
    num = head.split("--", 1)[0]
    return int(num) if num.isdigit() else None


def read_name_list(path: str | os.PathLike[str]) -> list[str]:
    """Image names, one per line (``#`` comments and blank lines skipped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the name list {str(p)!r}: {e}") from None
    names = [x.strip() for x in text.splitlines()]
    return [x for x in names if x and not x.startswith("#")]


@dataclass
class SubsetSelection:
    """Result of :func:`select_images`: the chosen images and the rest, both in file order."""

    selected: list[ImageAnnotation]
    rest: list[ImageAnnotation]


def select_images(
    images: Sequence[ImageAnnotation],
    *,
    events: Iterable[int] | None = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    fraction: float | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> SubsetSelection:
    """Filter ``images`` in this order: ``events`` → ``include`` → ``exclude`` → a seeded
    random ``fraction`` → the first ``limit``. Images keep their file order.

    The fraction draws ``round(fraction · n)`` images with ``numpy.random.default_rng(seed)``'s
    permutation of the candidates (so a list is reproducible across machines and numpy builds
    that keep the PCG64 stream, which numpy guarantees). Names given in ``include``/``exclude``
    that match no image raise :class:`InputError` (a typo would otherwise select silently).
    """
    pool = list(images)
    if events is not None:
        ev = set(events)
        pool = [im for im in pool if event_of(im.name) in ev]
    known = {im.name for im in images}
    if include is not None:
        inc = set(include)
        _check_names(inc, known, "include")
        pool = [im for im in pool if im.name in inc]
    if exclude is not None:
        exc = set(exclude)
        _check_names(exc, known, "exclude")
        pool = [im for im in pool if im.name not in exc]
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise InputError(f"--fraction must be in (0, 1], got {fraction}")
        k = round(fraction * len(pool))
        order = np.random.default_rng(seed).permutation(len(pool))
        keep = set(order[:k].tolist())
        pool = [im for i, im in enumerate(pool) if i in keep]
    if limit is not None:
        if limit < 0:
            raise InputError(f"--limit must be >= 0, got {limit}")
        pool = pool[:limit]
    chosen = {id(im) for im in pool}
    return SubsetSelection(selected=pool, rest=[im for im in images if id(im) not in chosen])


def _check_names(names: set[str], known: set[str], what: str) -> None:
    missing = sorted(names - known)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"--{what}: {missing[0]!r} is not an image of the annotation file{more}")
