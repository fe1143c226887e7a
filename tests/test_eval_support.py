"""Helpers for the WIDER evaluation tests (imported by the other tests/test_eval_*.py files):

* :func:`reference_eval`: a deliberately plain per-prediction / per-threshold loop port of the
  reference protocol (reference-spec §6), the oracle the vectorised evaluator is compared with;
* :func:`write_gt_mats`: writes synthetic ground truth as the four official ``.mat`` files;
* :func:`write_pred_dir`: writes prediction ``.txt`` files in the official layout.

The tests at the bottom check the helpers themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from damofd.evaluation import (
    SETTINGS,
    WiderGroundTruth,
    WiderPredictions,
    load_wider_gt,
    read_predictions,
)

PRED_TAR = "widerface/predictions/retinaface_mnet025/widerface_txt.tar.gz"
GT_DIR = "widerface/ground_truth"

# One synthetic image: (event, name, boxes (G, 4) xywh, {setting: 1-based keep indices}).
GtImage = tuple[str, str, np.ndarray, dict[str, Sequence[int]]]


@functools.lru_cache(maxsize=1)
def real_gt(path: Path) -> WiderGroundTruth:
    """The official val ground truth, read once per test session."""
    return load_wider_gt(path)


@functools.lru_cache(maxsize=1)
def real_predictions(path: Path) -> WiderPredictions:
    """The RetinaFace-MobileNet0.25 prediction archive, read once per test session."""
    return read_predictions(path)


def reference_eval(
    preds: Mapping[str, np.ndarray],
    gt_images: Sequence[GtImage],
    iou_thresh: float = 0.5,
    thresh_num: int = 1000,
) -> dict[str, float]:
    """Loop port of the reference: rows used in the given order (no sorting)."""
    preds = {k: np.array(v, dtype=np.float64, copy=True).reshape(-1, 5) for k, v in preds.items()}
    hi, lo = -1.0, 2.0
    for v in preds.values():
        if len(v):
            hi = max(float(v[:, 4].max()), hi)
            lo = min(float(v[:, 4].min()), lo)
    with np.errstate(all="ignore"):
        for v in preds.values():
            if len(v):
                v[:, 4] = (v[:, 4] - lo) / (hi - lo)

    aps: dict[str, float] = {}
    for setting in SETTINGS:
        curve = np.zeros((thresh_num, 2))
        count_face = 0
        for _, name, boxes, keeps in gt_images:
            keep = np.asarray(keeps[setting], dtype=np.int64)
            count_face += len(keep)
            p = preds[name]
            g = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
            if len(g) == 0 or len(p) == 0:
                continue
            kept = np.zeros(len(g), dtype=bool)
            kept[keep - 1] = True
            p = p.copy()
            p[:, 2] += p[:, 0]
            p[:, 3] += p[:, 1]
            g[:, 2] += g[:, 0]
            g[:, 3] += g[:, 1]
            recall_list = np.zeros(len(g))
            proposal = np.ones(len(p))
            pred_recall = np.zeros(len(p))
            for h in range(len(p)):
                b = p[h]
                with np.errstate(all="ignore"):
                    w = np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0]) + 1
                    hh = np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1]) + 1
                    inter = w * hh
                    garea = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
                    parea = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
                    o = inter / (garea + parea - inter)
                o[w <= 0] = 0
                o[hh <= 0] = 0
                best, j = o.max(), o.argmax()
                if best >= iou_thresh:
                    if not kept[j]:
                        recall_list[j] = -1
                        proposal[h] = -1
                    elif recall_list[j] == 0:
                        recall_list[j] = 1
                pred_recall[h] = np.count_nonzero(recall_list == 1)
            for t in range(thresh_num):
                thresh = 1 - (t + 1) / thresh_num
                above = np.where(p[:, 4] >= thresh)[0]
                if len(above):
                    r = above[-1]
                    curve[t, 0] += np.count_nonzero(proposal[: r + 1] == 1)
                    curve[t, 1] += pred_recall[r]
        with np.errstate(all="ignore"):
            precision = curve[:, 1] / curve[:, 0]
            recall = curve[:, 1] / count_face
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps[setting] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    return aps


def _cell(items: Sequence[object]) -> np.ndarray:
    arr = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        arr[i, 0] = x
    return arr


def write_gt_mats(root: Path, images: Sequence[GtImage]) -> Path:
    """Write ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` for ``images``."""
    root.mkdir(parents=True, exist_ok=True)
    events: list[str] = []
    for ev, *_ in images:
        if ev not in events:
            events.append(ev)
    per_event = {e: [im for im in images if im[0] == e] for e in events}
    event_list = _cell(events)
    file_list = _cell([_cell([im[1] for im in per_event[e]]) for e in events])
    boxes = _cell(
        [
            _cell([np.asarray(im[2], dtype=np.float64).reshape(-1, 4) for im in per_event[e]])
            for e in events
        ]
    )
    savemat(
        root / "wider_face_val.mat",
        {"event_list": event_list, "file_list": file_list, "face_bbx_list": boxes},
    )
    for s in SETTINGS:
        gt_list = _cell(
            [
                _cell([np.asarray(im[3][s], dtype=np.uint16).reshape(-1, 1) for im in per_event[e]])
                for e in events
            ]
        )
        savemat(
            root / f"wider_{s}_val.mat",
            {"event_list": event_list, "file_list": file_list, "gt_list": gt_list},
        )
    return root


def format_rows(rows: np.ndarray) -> str:
    return "".join(
        f"{r[0]:.5f} {r[1]:.5f} {r[2]:.5f} {r[3]:.5f} {float(r[4])!r}\n"
        for r in np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    )


def write_pred_dir(root: Path, preds: Mapping[str, np.ndarray]) -> Path:
    """Write ``{"event/name": rows}`` as ``root/event/name.txt`` (official layout)."""
    for key, rows in preds.items():
        event, name = key.split("/")
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        f = root / event / f"{name}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"{name}\n{len(rows)}\n{format_rows(rows)}")
    return root


def random_case(
    rng: np.random.Generator, n_images: int
) -> tuple[list[GtImage], dict[str, np.ndarray]]:
    """Random GT and predictions rich in the protocol's corner cases: ignore faces, duplicate
    and near-duplicate detections, equal scores, equal IoUs, images without GT or without
    predictions, degenerate (negative-size) boxes. Rows are sorted by descending score."""
    gt_images: list[GtImage] = []
    preds: dict[str, np.ndarray] = {}
    for i in range(n_images):
        event = f"{i % 3}--Ev{i % 3}"
        name = f"{i % 3}_img_{i}"
        n_gt = int(rng.choice([0, 1, 3, 8, 20]))
        xy = rng.integers(0, 300, size=(n_gt, 2)).astype(np.float64)
        wh = rng.integers(2, 60, size=(n_gt, 2)).astype(np.float64)
        boxes = np.concatenate([xy, wh], axis=1)
        if n_gt >= 3:  # an exact duplicate GT: equal IoUs, ties go to the first index
            boxes[1] = boxes[0]
        keeps: dict[str, list[int]] = {}
        all_idx = np.arange(1, n_gt + 1)
        hard = all_idx[rng.random(n_gt) < 0.8]
        medium = hard[rng.random(hard.size) < 0.6]
        easy = medium[rng.random(medium.size) < 0.6]
        keeps = {"easy": list(easy), "medium": list(medium), "hard": list(hard)}
        gt_images.append((event, name, boxes, keeps))

        rows = []
        if n_gt and rng.random() < 0.9:
            for b in boxes:
                for _ in range(int(rng.integers(0, 4))):  # 0..3 detections per face
                    jitter = rng.normal(0, 0.15, 4) * np.array([b[2], b[3], b[2], b[3]])
                    rows.append([*(b + np.round(jitter, 1)), rng.random()])
        for _ in range(int(rng.integers(0, 6))):  # background false positives
            rows.append([*rng.integers(0, 300, 2), *rng.integers(1, 50, 2), rng.random()])
        if rng.random() < 0.3:  # degenerate boxes with negative size
            rows.append([50.0, 50.0, -3.0, -1.0, rng.random()])
            rows.append([200.0, 20.0, -150.0, 30.0, rng.random()])
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        if len(a):
            a[:, 4] = np.round(a[:, 4], 2)  # many equal scores
            a = a[np.argsort(-a[:, 4], kind="stable")]
        preds[name] = a
    return gt_images, preds


# ----------------------------------------------------------------------------------------------
# tests of the helpers


def test_written_mats_load_back(tmp_path: Path) -> None:
    images: list[GtImage] = [
        (
            "0--A",
            "0_a_1",
            np.array([[1, 2, 3, 4], [5, 6, 7, 8]]),
            {"easy": [2], "medium": [1, 2], "hard": [1, 2]},
        ),
        ("0--A", "0_a_2", np.zeros((0, 4)), {"easy": [], "medium": [], "hard": []}),
        ("1--B", "1_b_1", np.array([[9, 9, 9, 9]]), {"easy": [], "medium": [1], "hard": [1]}),
    ]
    gt = load_wider_gt(write_gt_mats(tmp_path, images))
    assert gt.events == ("0--A", "0--A", "1--B")
    assert gt.names == ("0_a_1", "0_a_2", "1_b_1")
    assert gt.offsets.tolist() == [0, 2, 2, 3]
    np.testing.assert_array_equal(gt.boxes, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
    assert gt.keep["easy"].tolist() == [False, True, False]
    assert gt.keep["medium"].tolist() == [True, True, True]
    assert {s: gt.count_face(s) for s in SETTINGS} == {"easy": 1, "medium": 3, "hard": 3}


def test_reference_port_on_a_hand_case() -> None:
    # two kept faces; detections: hit A (0.9), far false positive (0.8), hit B (0.5)
    boxes = np.array([[0, 0, 10, 10], [100, 100, 10, 10]], dtype=np.float64)
    keeps = {s: [1, 2] for s in SETTINGS}
    preds = {"x": np.array([[0, 0, 10, 10, 0.9], [300, 300, 5, 5, 0.8], [100, 100, 10, 10, 0.5]])}
    aps = reference_eval(preds, [("e", "x", boxes, keeps)])
    assert aps["easy"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
