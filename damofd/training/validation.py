"""Periodic validation during training: WIDER FACE Easy/Medium/Hard AP of the model being trained.

Two kinds of validation folder are accepted:

* a WIDER split folder (``WIDER_val``: ``images/<event>/*.jpg``, or the event folders directly)
  plus the official ground-truth folder (``wider_*_val.mat``): the WIDER protocol of
  :func:`damofd.evaluation.evaluate_wider`, in subset mode (only the images present are scored,
  so a partial copy of WIDER_val works);
* a labelv2 dataset (a folder holding ``labelv2.txt`` + ``images/``, e.g. a ModelScope
  validation split) without ``.mat`` files: the same protocol on an in-memory ground truth in which
  every annotated face counts in every setting (so Easy = Medium = Hard = the AP over all faces).

Inference uses the test-time protocol of the published numbers (``vga``: keep-ratio resize into
640×640, score threshold 0.02, NMS 0.45) through :class:`damofd.inference.FaceDetector` on a
BN-fused copy of the model. Under DDP every rank predicts a strided share of the images and
rank 0 evaluates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from damofd.constants import WIDER_IMAGE_EXTENSIONS, WIDER_SCORE_THR
from damofd.errors import InputError
from damofd.evaluation.ground_truth import SETTINGS, WiderGroundTruth, load_wider_gt
from damofd.evaluation.widerface import WiderResult, evaluate_wider
from damofd.training.distributed import all_gather_object

__all__ = ["Validator", "labelv2_ground_truth", "list_split_images"]

_IMAGE_EXTS = WIDER_IMAGE_EXTENSIONS


def list_split_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files of a WIDER split folder (``root/images/<event>/*`` or ``root/<event>/*``),
    sorted by event and name: the listing of ``damofd eval``
    (:func:`damofd.evaluation.wider_images.list_wider_images`)."""
    from damofd.evaluation.wider_images import list_wider_images

    r = Path(root)
    base = r / "images" if (r / "images").is_dir() else r
    if not base.is_dir():
        raise FileNotFoundError(f"validation folder {str(r)!r} does not exist")
    try:
        return [im.path for im in list_wider_images(r)]
    except InputError as e:
        raise InputError(f"validation folder {str(base)!r} holds no images ({e})") from None


def labelv2_ground_truth(labels: str | os.PathLike[str]) -> tuple[WiderGroundTruth, list[str]]:
    """An in-memory :class:`WiderGroundTruth` from a labelv2 file in which every box (ignore
    boxes included, as in the WIDER GT) is kept in every setting; also returns the image paths
    relative to the image folder. Boxes become ``[x, y, w, h]`` with ``w = x2 − x1``."""
    from damofd.data.labelv2 import read_labelv2

    records = read_labelv2(labels)
    if not records:
        raise InputError(f"{labels}: no images")
    events = tuple(
        r.name.replace("\\", "/").rsplit("/", 1)[0] if "/" in r.name else "" for r in records
    )
    names = tuple(Path(r.name).stem for r in records)
    sizes = np.asarray([r.num_objects for r in records], dtype=np.int64)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    boxes = (
        np.concatenate([r.bboxes for r in records]).astype(np.float64)
        if offsets[-1]
        else np.zeros((0, 4))
    )
    boxes[:, 2:] -= boxes[:, :2]
    keep = {s: np.ones(int(offsets[-1]), dtype=bool) for s in SETTINGS}
    counts = {s: sizes.copy() for s in SETTINGS}
    gt = WiderGroundTruth(events, names, boxes, offsets, keep, counts, source=str(labels))
    return gt, [r.name for r in records]


@dataclass
class _Prepared:
    gt: WiderGroundTruth
    images: list[Path]
    keys: list[str]
    protocol: str


class Validator:
    """Evaluate a detector on a validation folder (see the module docstring).

    Args:
        val_root: WIDER split folder or labelv2 dataset folder.
        gt_dir: folder with the official ``.mat`` ground truth (WIDER mode); ``None`` for a
            labelv2 dataset.
        max_images: use at most this many images, evenly spaced over the sorted list (0 = all).
        score_thr: detection threshold (0.02 in the protocol).
        protocol: test-time protocol name (``vga``).
    """

    def __init__(
        self,
        val_root: str | os.PathLike[str],
        gt_dir: str | os.PathLike[str] | None = None,
        *,
        max_images: int = 0,
        score_thr: float = WIDER_SCORE_THR,
        protocol: str = "vga",
    ) -> None:
        self.val_root = Path(val_root)
        self.gt_dir = Path(gt_dir) if gt_dir is not None else None
        self.max_images = int(max_images)
        self.score_thr = float(score_thr)
        self.protocol = protocol
        self._prepared = self._prepare()

    @property
    def num_images(self) -> int:
        return len(self._prepared.images)

    @property
    def description(self) -> str:
        p = self._prepared
        return f"{len(p.images)} images of {self.val_root} ({p.protocol})"

    def _prepare(self) -> _Prepared:
        if self.gt_dir is not None:
            gt = load_wider_gt(self.gt_dir)
            files = list_split_images(self.val_root)
            known = [f for f in files if gt.index_of(f.stem) is not None]
            if not known:
                raise InputError(
                    f"none of the {len(files)} images under {str(self.val_root)!r} is in the "
                    f"ground truth {str(self.gt_dir)!r} (wrong split?)"
                )
            files = self._thin(known)
            keys = [f"{gt.events[gt.index_of(f.stem)]}/{f.stem}" for f in files]  # type: ignore[index]
            return _Prepared(gt, files, keys, "WIDER protocol, subset mode")
        from damofd.data.layout import resolve_dataset

        try:
            paths = resolve_dataset(self.val_root)
        except (InputError, FileNotFoundError) as e:
            raise InputError(
                f"validation folder {str(self.val_root)!r}: give the WIDER ground-truth folder "
                f"(val_gt / --val-gt) or a folder with labelv2.txt + images/ ({e})"
            ) from None
        gt, rel = labelv2_ground_truth(paths.labels)
        files = [paths.images / r for r in rel]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} validation images listed in {paths.labels} are missing: "
                + ", ".join(missing[:5])
                + (" …" if len(missing) > 5 else "")
            )
        order = self._thin(files)
        index = {f: i for i, f in enumerate(files)}
        keys = []
        for f in order:
            i = index[f]
            keys.append(f"{gt.events[i]}/{gt.names[i]}" if gt.events[i] else gt.names[i])
        return _Prepared(gt, order, keys, "labelv2 ground truth, every face kept")

    def _thin(self, files: list[Path]) -> list[Path]:
        n = self.max_images
        if n <= 0 or n >= len(files):
            return files
        idx = np.unique(np.linspace(0, len(files) - 1, n).round().astype(np.int64))
        return [files[i] for i in idx]

    def predict(
        self, model: nn.Module, device: str = "cpu", *, rank: int = 0, world_size: int = 1
    ) -> dict[str, np.ndarray]:
        """Detections of this rank's share of the images: ``{key: (N, 5) [x, y, w, h, score]}``
        in original pixels (``w = x2 − x1``)."""
        from damofd.inference.detector import FaceDetector

        det = FaceDetector.from_model(
            model,
            device=device,
            copy_model=True,
            fuse=True,
            protocol=self.protocol,
            score_thr=self.score_thr,
            max_pixels=None,
        )
        p = self._prepared
        mine = list(range(rank, len(p.images), world_size))
        out: dict[str, np.ndarray] = {}
        results = det.predict([str(p.images[i]) for i in mine])
        for i, r in zip(mine, results):
            if r.error is not None:
                raise InputError(f"validation image {p.images[i]}: {r.error}")
            rows = np.zeros((len(r.scores), 5), dtype=np.float64)
            if len(r.scores):
                rows[:, :2] = r.boxes[:, :2]
                rows[:, 2:4] = r.boxes[:, 2:] - r.boxes[:, :2]
                rows[:, 4] = r.scores
            out[p.keys[i]] = rows
        return out

    def evaluate(
        self, model: nn.Module, device: str = "cpu", *, rank: int = 0, world_size: int = 1
    ) -> WiderResult | None:
        """Predict (sharded over ranks) and evaluate; the result on rank 0, ``None`` elsewhere.
        Every rank must call it."""
        part = self.predict(model, device, rank=rank, world_size=world_size)
        parts = all_gather_object(part) if world_size > 1 else [part]
        if rank != 0:
            return None
        merged: dict[str, Any] = {}
        for d in parts:
            merged.update(d)
        return evaluate_wider(merged, self._prepared.gt, subset=True)
