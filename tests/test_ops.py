"""Box ops, NMS and anchors (damofd.ops) against straightforward reference code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import damofd.ops.numpy_nms as nms_module
from damofd.ops import (
    anchor_boxes,
    anchor_centers,
    bbox2distance,
    box_iou,
    distance2bbox,
    distance2kps,
    kps2distance,
    nms,
    nms_numpy,
    num_anchors_total,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def _naive_nms(b: np.ndarray, s: np.ndarray, thr: float, off: float) -> np.ndarray:
    order = np.argsort(-s, kind="stable")
    suppressed = np.zeros(len(b), bool)
    keep = []
    for ii, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[ii + 1 :]:
            if suppressed[j]:
                continue
            w = max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + off)
            h = max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + off)
            inter = w * h
            a1 = (b[i, 2] - b[i, 0] + off) * (b[i, 3] - b[i, 1] + off)
            a2 = (b[j, 2] - b[j, 0] + off) * (b[j, 3] - b[j, 1] + off)
            if inter / (a1 + a2 - inter) > thr:
                suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)


@pytest.mark.parametrize("matrix_limit", [0, 10**6])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_nms_matches_naive_greedy(
    monkeypatch: pytest.MonkeyPatch, matrix_limit: int, offset: float
) -> None:
    monkeypatch.setattr(nms_module, "_MATRIX_LIMIT", matrix_limit)
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(1, 200))
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], 1)
        scores = rng.integers(0, 10, n).astype(float)  # many ties: order must be stable
        expected = _naive_nms(boxes, scores, 0.45, offset)
        np.testing.assert_array_equal(nms_numpy(boxes, scores, 0.45, offset), expected)
        kept = nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), 0.45, offset)
        np.testing.assert_array_equal(kept.numpy(), expected)


def test_nms_edge_cases() -> None:
    assert nms_numpy(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    np.testing.assert_array_equal(nms_numpy(b, np.array([0.5, 0.9, 0.1]), 0.5), [1, 2])
    # IoU exactly at the threshold is kept (suppress only when greater)
    b2 = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], float)
    np.testing.assert_array_equal(nms_numpy(b2, np.array([1.0, 0.5]), 0.5), [0, 1])
    with pytest.raises(ValueError, match="shape"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


def test_box_conversions_and_iou() -> None:
    xywh = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert torch.equal(xyxy_to_xywh(xyxy), xywh)
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(box_iou(a, b).numpy(), [[50 / 150, 0.0]])
    np.testing.assert_allclose(box_iou(a, b, offset=1).numpy(), [[66 / 176, 0.0]])


def test_distance_round_trips() -> None:
    pts = torch.tensor([[8.0, 16.0], [32.0, 0.0]])
    boxes = torch.tensor([[0.0, 4.0, 20.0, 30.0], [30.0, -5.0, 40.0, 7.0]])
    assert torch.allclose(distance2bbox(pts, bbox2distance(pts, boxes)), boxes)
    clamped = distance2bbox(pts, bbox2distance(pts, boxes), max_shape=(6, 35))
    assert clamped[1].tolist() == [30.0, 0.0, 35.0, 6.0]
    kps = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    assert torch.allclose(distance2kps(pts, kps2distance(pts, kps)), kps)


def test_anchor_layout() -> None:
    assert num_anchors_total(640, 640) == 16_800
    assert num_anchors_total(480, 640) == 12_600
    c = anchor_centers(2, 3, 8)
    assert c.shape == (12, 2)
    # location-major (row-major over y, x), anchor-minor, top-left of each cell
    assert c[::2].tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]
    assert torch.equal(c[0], c[1])
    boxes = anchor_boxes(1, 2, 16, 64)
    assert boxes.tolist() == [
        [-32, -32, 32, 32],
        [-64, -64, 64, 64],
        [-16, -32, 48, 32],
        [-48, -64, 80, 64],
    ]


def test_numpy_ops_do_not_import_torch() -> None:
    code = (
        "import sys; from damofd.ops import nms_numpy, anchor_centers_numpy; "
        "import damofd.inference; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_box_iou_numpy_equals_the_torch_op() -> None:
    from damofd.ops import box_iou, box_iou_numpy

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (7, 2))
    a = np.concatenate([xy, xy + rng.uniform(0, 50, (7, 2))], axis=1)
    xy = rng.uniform(0, 100, (5, 2))
    b = np.concatenate([xy, xy + rng.uniform(0, 50, (5, 2))], axis=1)
    b[0] = [10, 10, 10, 30]  # zero area
    ref = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou_numpy(a, b), np.nan_to_num(ref), atol=1e-12)
