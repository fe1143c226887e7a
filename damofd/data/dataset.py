"""WIDER FACE training dataset over a labelv2 file (reference spec §5.1–5.2).

Sample contract (what the trainer receives from ``dataset[i]``)::

    {
      "img":              float32 (3, S, S)  RGB, (x − 127.5)/128, S = config.size (640)
      "gt_bboxes":        float32 (N, 4)     xyxy pixels of the S×S image (no +1)
      "gt_keypoints":     float32 (N, 5, 3)  (x, y, weight) pixels, weight 0 = no keypoint
      "gt_bboxes_ignore": float32 (K, 4)     xyxy pixels (carried, unused by the loss)
      "meta": {"index", "name", "ori_shape" (H, W), "patch" (x1, y1, x2, y2), "flipped"}
    }

:func:`collate_batch` stacks images to (B, 3, S, S) and keeps the variable-length targets as
lists. Randomness: each sample draws from its own ``numpy.random.Generator`` seeded with
``(seed, epoch, index)`` (call :meth:`WiderFaceDataset.set_epoch` at every epoch), so a sample
does not depend on the worker that loads it nor on the samples before it — runs are reproducible
and resumable mid-epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from damofd.data.imagesize import read_image_size
from damofd.data.labelv2 import ImageAnnotation, read_labelv2
from damofd.data.layout import resolve_dataset
from damofd.data.transforms import AugmentConfig, TrainSample, TrainTransform
from damofd.errors import InputError

__all__ = ["WiderFaceDataset", "collate_batch", "load_image_bgr"]

# OpenCV's own thread pool fights DataLoader workers for the cores; one thread per process.
_CV2_THREADS = 1


def _quiesce_cv2_across_fork() -> None:
    """Run OpenCV single-threaded across every ``os.fork`` of this process.

    A child forked while OpenCV's thread pool is active (after any multi-threaded ``cv2.resize``
    in the parent, e.g. an evaluation) can deadlock on its first OpenCV call. DataLoader workers
    are forked, so the pool is shrunk to one thread just before each fork and restored in the
    parent right after; the child keeps one thread (what its workers want anyway).
    """
    saved: list[int] = []

    def before() -> None:
        n = cv2.getNumThreads()
        saved.append(n)
        if n != 1:
            cv2.setNumThreads(1)

    def after_in_parent() -> None:
        n = saved.pop() if saved else 1
        if n != 1:
            cv2.setNumThreads(n)

    def after_in_child() -> None:
        saved.clear()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )


_quiesce_cv2_across_fork()


def load_image_bgr(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image as ``(H, W, 3)`` uint8 BGR; :class:`InputError` naming it on failure."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {str(p)!r}")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot decode image {str(p)!r}")
    return img


class WiderFaceDataset(Dataset):
    """Augmented training samples from a labelv2 file and its image folder.

    Args:
        labels: labelv2 file, a folder holding ``labelv2.txt`` + ``images/``, or a ModelScope
            split folder (see :func:`damofd.data.layout.resolve_dataset`).
        image_dir: image folder (default: ``images/`` next to the annotation file).
        config: augmentation recipe (:class:`AugmentConfig`; ``AugmentConfig.for_model(name)``
            gives a zoo model's reference recipe).
        seed: base seed of the per-sample generators.
        min_size: boxes narrower or shorter than this (pixels) become ignore regions (unset in
            the reference recipe).
        min_image_size: images whose header ``min(width, height)`` is below this are dropped
            (mmdet ``_filter_imgs``, 32).

    As in the reference, images without any box are dropped, and so are images too small.
    Image sizes missing from the headers are read from the files (header only).
    """

    def __init__(
        self,
        labels: str | os.PathLike[str],
        image_dir: str | os.PathLike[str] | None = None,
        *,
        config: AugmentConfig | None = None,
        seed: int = 0,
        min_size: float | None = None,
        min_image_size: int = 32,
    ) -> None:
        paths = resolve_dataset(labels, image_dir=image_dir)
        self.labels_path = paths.labels
        self.image_dir = paths.images
        self.config = config or AugmentConfig()
        self.transform = TrainTransform(self.config)
        self.seed = int(seed)
        self.epoch = 0
        records = read_labelv2(self.labels_path, min_size=min_size)
        total = len(records)
        records = [r for r in records if r.num_objects > 0]
        self.num_dropped_empty = total - len(records)
        unsized = [r for r in records if r.width is None or r.height is None]
        if unsized:
            missing = [r.name for r in unsized if not (self.image_dir / r.name).is_file()]
            if missing:
                raise self._missing_error(missing, "have no size in the header and are")
            for r in unsized:
                r.width, r.height = read_image_size(self.image_dir / r.name)
        kept = [r for r in records if min(r.width or 0, r.height or 0) >= min_image_size]
        self.num_dropped_small = len(records) - len(kept)
        self.records: list[ImageAnnotation] = kept
        if not self.records:
            raise InputError(
                f"{self.labels_path}: no usable training image ({total} images, "
                f"{self.num_dropped_empty} without boxes, {self.num_dropped_small} smaller "
                f"than {min_image_size} px)"
            )
        # aspect-ratio group flag (mmdet _set_group_flag): 1 when w / h > 1
        self.flag = np.asarray([r.width > r.height for r in self.records], dtype=np.uint8)  # type: ignore[operator]

    # ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random stream :meth:`__getitem__` uses."""
        self.epoch = int(epoch)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of sample ``index`` in ``epoch`` (default: the current epoch)."""
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, e, int(index)])

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.records[index].name

    def missing_images(self) -> list[str]:
        """Names of every image of the dataset that is not on disk."""
        return [r.name for r in self.records if not (self.image_dir / r.name).is_file()]

    def _missing_error(self, missing: Sequence[str], what: str = "") -> InputError:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        what = what or "listed in the annotation but"
        return InputError(
            f"{len(missing)} images {what} missing under {str(self.image_dir)!r} "
            f"(annotation {str(self.labels_path)!r}):\n  {shown}{more}"
        )

    def validate(self) -> None:
        """Raise :class:`InputError` listing every missing image, then every truncated or
        unreadable one (call before training: a truncated JPEG would otherwise be trained on
        with gray fill). The structural check reads each file once and decodes nothing."""
        missing = self.missing_images()
        if missing:
            err = self._missing_error(missing)
            err.missing = missing  # type: ignore[attr-defined]
            raise err
        from damofd.data.imagesize import image_problem

        problems = [q for r in self.records if (q := image_problem(self.image_dir / r.name))]
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise InputError(
                f"{len(problems)} images of {str(self.labels_path)!r} cannot be trained on "
                f"(run 'damofd data check' for the full report):\n  {shown}{more}"
            )

    # ------------------------------------------------------------------------------------------
    def augment(self, index: int, *, normalize: bool = True) -> TrainSample:
        """Load and augment sample ``index`` with its own generator (no tensor conversion)."""
        if get_worker_info() is not None and cv2.getNumThreads() != _CV2_THREADS:
            cv2.setNumThreads(_CV2_THREADS)  # only inside DataLoader worker processes
        rec = self.records[index]
        img = load_image_bgr(self.image_dir / rec.name)
        return self.transform(
            img,
            rec.gt_bboxes,
            rec.gt_keypoints,
            rec.gt_bboxes_ignore,
            self.rng(index),
            normalize=normalize,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} images")
        rec = self.records[index]
        s = self.augment(index)
        return {
            "img": torch.from_numpy(s.img),
            "gt_bboxes": torch.from_numpy(np.ascontiguousarray(s.bboxes, dtype=np.float32)),
            "gt_keypoints": torch.from_numpy(np.ascontiguousarray(s.keypoints, dtype=np.float32)),
            "gt_bboxes_ignore": torch.from_numpy(
                np.ascontiguousarray(s.bboxes_ignore, dtype=np.float32)
            ),
            "meta": {
                "index": index,
                "name": rec.name,
                "ori_shape": (rec.height, rec.width),
                "patch": s.patch,
                "flipped": s.flipped,
            },
        }


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of :class:`WiderFaceDataset` (use as ``DataLoader(collate_fn=...)``).

    Returns ``{"img": (B, 3, S, S) float32, "gt_bboxes": [ (N_i, 4) ], "gt_keypoints":
    [ (N_i, 5, 3) ], "gt_bboxes_ignore": [ (K_i, 4) ], "metas": [dict]}``.
    """
    if not samples:
        raise ValueError("collate_batch: empty batch")
    return {
        "img": torch.stack([s["img"] for s in samples]),
        "gt_bboxes": [s["gt_bboxes"] for s in samples],
        "gt_keypoints": [s["gt_keypoints"] for s in samples],
        "gt_bboxes_ignore": [s["gt_bboxes_ignore"] for s in samples],
        "metas": [s["meta"] for s in samples],
    }
