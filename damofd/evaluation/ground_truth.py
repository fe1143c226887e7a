"""WIDER FACE evaluation ground truth: the four official ``.mat`` files.

The official protocol (reference-spec §6) reads

* ``wider_face_val.mat``: ``event_list`` (E), ``file_list`` (per event, the image names without
  ``.jpg``) and ``face_bbx_list`` (per image an N×4 ``[x, y, w, h]`` array in pixels, ``w = x2 −
  x1``);
* ``wider_{easy,medium,hard}_val.mat``: ``gt_list``, per image the **1-based** indices of the
  faces that count in that setting; every other face of the image is an "ignore" face.

:func:`load_wider_gt` flattens that into :class:`WiderGroundTruth`: one (G, 4) float64 array of all
boxes of all images (image-major, file order), per-image offsets, and per setting a (G,) boolean
"kept" mask plus the per-image kept-face counts that form the recall denominator.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from damofd.errors import InputError
from damofd.evaluation._arrays import concat_ranges

__all__ = [
    "GT_FILES",
    "SETTINGS",
    "WiderGroundTruth",
    "load_wider_gt",
]

#: The three evaluation settings, in the order the protocol reports them.
SETTINGS: tuple[str, str, str] = ("easy", "medium", "hard")

#: The four ground-truth files the protocol reads from the ``--gt`` folder.
GT_FILES: dict[str, str] = {
    "face": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}


@dataclass(frozen=True, eq=False)
class WiderGroundTruth:
    """All WIDER FACE ground truth of one split, flattened.

    Attributes:
        events: event folder of every image (e.g. ``"0--Parade"``), length n.
        names: image name without ``.jpg`` (e.g. ``"0_Parade_marchingband_1_465"``), length n.
        boxes: (G, 4) float64 ``[x, y, w, h]`` boxes in pixels (``w = x2 − x1``, no +1) of all
            images, image-major in file order.
        offsets: (n + 1,) int64; the boxes of image ``i`` are ``boxes[offsets[i]:offsets[i+1]]``.
        keep: setting → (G,) bool, True for the faces that count in that setting.
        keep_counts: setting → (n,) int64, number of entries of the image's keep list (the
            protocol's ``count_face`` adds these, duplicates included).
        source: where it was read from (for messages).
    """

    events: tuple[str, ...]
    names: tuple[str, ...]
    boxes: np.ndarray
    offsets: np.ndarray
    keep: dict[str, np.ndarray]
    keep_counts: dict[str, np.ndarray]
    source: str = "<memory>"
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.events) != n or self.offsets.shape != (n + 1,):
            raise InputError(f"{self.source}: inconsistent ground truth (events/names/offsets)")
        index: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if name in index:
                raise InputError(
                    f"{self.source}: image name {name!r} appears twice "
                    f"({self.events[index[name]]} and {self.events[i]})"
                )
            index[name] = i
        self._index.update(index)

    @classmethod
    def from_images(
        cls,
        images: Iterable[tuple[str, str, ArrayLike, Mapping[str, ArrayLike]]],
        source: str = "<memory>",
    ) -> WiderGroundTruth:
        """Build ground truth from ``(event, name, boxes, keep)`` per image.

        ``boxes`` is (G, 4) ``[x, y, w, h]`` in pixels; ``keep`` maps each of ``"easy"``,
        ``"medium"``, ``"hard"`` to the **1-based** indices of the faces that count in that
        setting (the others are ignore faces), exactly like the official ``gt_list``.
        """
        events: list[str] = []
        names: list[str] = []
        boxes: list[np.ndarray] = []
        keeps: dict[str, list[np.ndarray]] = {s: [] for s in SETTINGS}
        for event, name, bxs, keep in images:
            b = np.asarray(bxs, dtype=np.float64)
            b = b.reshape(0, 4) if b.size == 0 else b
            if b.ndim != 2 or b.shape[1] != 4:
                raise InputError(f"{source}: boxes of {event}/{name} have shape {b.shape}")
            events.append(str(event))
            names.append(str(name))
            boxes.append(b)
            for s in SETTINGS:
                if s not in keep:
                    raise InputError(f"{source}: {event}/{name} has no {s!r} keep list")
                keeps[s].append(np.asarray(keep[s]).astype(np.int64).ravel())
        sizes = np.array([len(b) for b in boxes], dtype=np.int64)
        offsets = np.zeros(len(boxes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        keep_masks, keep_counts = {}, {}
        for s in SETTINGS:
            keep_masks[s], keep_counts[s] = _keep_masks(
                keeps[s], sizes, offsets, events, names, source
            )
        return cls(
            events=tuple(events),
            names=tuple(names),
            boxes=all_boxes,
            offsets=offsets,
            keep=keep_masks,
            keep_counts=keep_counts,
            source=source,
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def keys(self) -> list[str]:
        """``"event/name"`` of every image."""
        return [f"{e}/{n}" for e, n in zip(self.events, self.names)]

    @property
    def num_boxes(self) -> int:
        return int(self.offsets[-1])

    def index_of(self, name: str) -> int | None:
        """Image index of ``name`` (without ``.jpg``), or None."""
        return self._index.get(name)

    def count_face(self, setting: str) -> int:
        """The protocol's recall denominator for ``setting`` over all images."""
        return int(self.keep_counts[setting].sum())

    def image_boxes(self, i: int) -> np.ndarray:
        """(G_i, 4) xywh boxes of image ``i``."""
        return self.boxes[self.offsets[i] : self.offsets[i + 1]]

    def select(self, image_indices: Sequence[int] | np.ndarray) -> WiderGroundTruth:
        """The ground truth restricted to ``image_indices`` (in that order)."""
        idx = np.asarray(image_indices, dtype=np.int64)
        starts, stops = self.offsets[idx], self.offsets[idx + 1]
        sizes = stops - starts
        rows = concat_ranges(starts, sizes)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return WiderGroundTruth(
            events=tuple(self.events[i] for i in idx),
            names=tuple(self.names[i] for i in idx),
            boxes=self.boxes[rows],
            offsets=offsets,
            keep={s: m[rows] for s, m in self.keep.items()},
            keep_counts={s: c[idx] for s, c in self.keep_counts.items()},
            source=f"{self.source} (subset of {len(idx)} images)",
        )


def _keep_masks(
    idx_per_image: Sequence[np.ndarray],
    sizes: np.ndarray,
    offsets: np.ndarray,
    events: Sequence[str],
    names: Sequence[str],
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(G,) kept-face mask and (n,) keep-list lengths from per-image 1-based index lists."""
    counts = np.array([a.size for a in idx_per_image], dtype=np.int64)
    idx = np.concatenate(idx_per_image) if idx_per_image else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(idx_per_image)), counts)
    bad = (idx < 1) | (idx > sizes[owner])
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        i = int(owner[j])
        raise InputError(
            f"{source}: keep index {int(idx[j])} out of range 1..{int(sizes[i])} for "
            f"{events[i]}/{names[i]}"
        )
    mask = np.zeros(int(offsets[-1]), dtype=bool)
    mask[offsets[owner] + idx - 1] = True
    return mask, counts


def _loadmat(path: Path, variables: Sequence[str]) -> dict[str, Any]:
    from scipy.io import loadmat

    if not path.is_file():
        raise InputError(
            f"ground-truth file {str(path)!r} not found: the WIDER FACE evaluation needs "
            f"{', '.join(GT_FILES.values())} in the --gt folder"
        )
    try:
        mat = loadmat(str(path), variable_names=list(variables))
    except Exception as e:  # scipy raises several types for corrupt files
        raise InputError(f"{str(path)!r} is not a readable .mat file: {e}") from None
    missing = [v for v in variables if v not in mat]
    if missing:
        raise InputError(f"{str(path)!r} lacks the variable(s) {', '.join(missing)}")
    return mat


def _cell_str(cell: Any) -> str:
    a = np.asarray(cell).ravel()
    while a.dtype == object and a.size == 1:
        a = np.asarray(a[0]).ravel()
    return str(a[0]) if a.size else ""


def _cells(arr: Any) -> list[Any]:
    """The entries of a MATLAB cell array read by scipy (shape (k, 1) or (1, k) of objects)."""
    return list(np.asarray(arr, dtype=object).ravel())


def _check_nested(keep: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """The official settings are nested, easy ⊆ medium ⊆ hard (7,211 ⊂ 13,319 ⊂ 31,958 faces on
    WIDER val); a copied or swapped file (e.g. easy saved as hard) breaks that and would give
    silently wrong APs."""
    order = [s for s in ("easy", "medium", "hard") if s in keep]
    for a, b in itertools.pairwise(order):
        outside = int((keep[a] & ~keep[b]).sum())
        if outside:
            raise InputError(
                f"{str(paths[b])!r} is not the {b} list of the official ground truth: {outside} "
                f"faces kept by {a} are not kept by {b} (the settings are nested, easy ⊆ medium "
                f"⊆ hard); files swapped or copied?"
            )


def _gt_folder(gt_dir: str | os.PathLike[str]) -> Path:
    """The folder of the four files: ``gt_dir`` itself, or the folder of one of the four."""
    root = Path(gt_dir)
    if root.is_file():
        if root.name not in GT_FILES.values():
            raise InputError(
                f"ground truth {str(root)!r} is a file; pass the folder that holds "
                f"{', '.join(GT_FILES.values())}"
            )
        root = root.parent  # one of the four files: read all four from its folder
    elif not root.is_dir():
        raise InputError(f"ground-truth folder {str(root)!r} does not exist")
    return root


def _read_face_list(
    face_path: Path, face: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str], list[np.ndarray]]:
    """``wider_face_val.mat`` flattened: (event list, event of every image, name of every image,
    (N_i, 4) boxes of every image)."""
    event_cells = _cells(face["event_list"])
    file_cells = _cells(face["file_list"])
    box_cells = _cells(face["face_bbx_list"])
    if not (len(event_cells) == len(file_cells) == len(box_cells)):
        raise InputError(
            f"{str(face_path)!r}: event_list, file_list and face_bbx_list differ in length"
        )

    event_names: list[str] = []
    events: list[str] = []
    names: list[str] = []
    boxes: list[np.ndarray] = []
    for ev_cell, files, bbxs in zip(event_cells, file_cells, box_cells):
        event = _cell_str(ev_cell)
        event_names.append(event)
        files_e, bbxs_e = _cells(files), _cells(bbxs)
        if len(files_e) != len(bbxs_e):
            raise InputError(
                f"{str(face_path)!r}: event {event!r} has {len(files_e)} files but "
                f"{len(bbxs_e)} box lists"
            )
        for name_cell, bb in zip(files_e, bbxs_e):
            b = np.asarray(bb, dtype=np.float64)
            if b.size == 0:
                b = b.reshape(0, 4)
            if b.ndim != 2 or b.shape[1] != 4:
                raise InputError(
                    f"{str(face_path)!r}: boxes of {event}/{_cell_str(name_cell)} have shape "
                    f"{b.shape}, expected (N, 4)"
                )
            events.append(event)
            names.append(_cell_str(name_cell))
            boxes.append(b)
    return event_names, events, names, boxes


def _setting_keep(
    path: Path,
    mat: Mapping[str, Any],
    event_names: list[str],
    events: list[str],
    names: list[str],
    sizes: np.ndarray,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(G,) kept-face mask and (n,) keep-list lengths of one ``wider_<setting>_val.mat``, after
    checking that it lists the same events and images as ``wider_face_val.mat``."""
    s_events = [_cell_str(c) for c in _cells(mat["event_list"])]
    s_names = [_cell_str(c) for f in _cells(mat["file_list"]) for c in _cells(f)]
    if s_events != event_names or s_names != names:
        raise InputError(
            f"{str(path)!r}: its event_list/file_list do not match {GT_FILES['face']} "
            f"(mixed ground-truth files?)"
        )
    lists = [k for e_lists in _cells(mat["gt_list"]) for k in _cells(e_lists)]
    if len(lists) != len(names):
        raise InputError(
            f"{str(path)!r}: gt_list covers {len(lists)} images, {GT_FILES['face']} has "
            f"{len(names)}"
        )
    idx_per_image = [np.asarray(k).astype(np.int64).ravel() for k in lists]
    return _keep_masks(idx_per_image, sizes, offsets, events, names, str(path))


def load_wider_gt(gt_dir: str | os.PathLike[str]) -> WiderGroundTruth:
    """Read the four official ``.mat`` files from ``gt_dir`` (the folder, or the path of one of
    the four files: the others are read from the same folder).

    Raises :class:`~damofd.errors.InputError` naming the file when one is missing, unreadable,
    lacks a variable, disagrees with ``wider_face_val.mat`` about the images, or holds a keep
    index outside ``1..N``.
    """
    root = _gt_folder(gt_dir)
    face_path = root / GT_FILES["face"]
    face = _loadmat(face_path, ("event_list", "file_list", "face_bbx_list"))
    setting_mats = {
        s: (
            root / GT_FILES[s],
            _loadmat(root / GT_FILES[s], ("event_list", "file_list", "gt_list")),
        )
        for s in SETTINGS
    }

    event_names, events, names, boxes = _read_face_list(face_path, face)
    sizes = np.array([len(b) for b in boxes], dtype=np.int64)
    offsets = np.zeros(len(boxes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    all_boxes = np.concatenate(boxes, axis=0) if boxes else np.zeros((0, 4))

    keep: dict[str, np.ndarray] = {}
    keep_counts: dict[str, np.ndarray] = {}
    for s, (path, mat) in setting_mats.items():
        keep[s], keep_counts[s] = _setting_keep(
            path, mat, event_names, events, names, sizes, offsets
        )

    _check_nested(keep, {s: path for s, (path, _) in setting_mats.items()})
    return WiderGroundTruth(
        events=tuple(events),
        names=tuple(names),
        boxes=all_boxes,
        offsets=offsets,
        keep=keep,
        keep_counts=keep_counts,
        source=str(root),
    )
