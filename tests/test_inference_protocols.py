"""Protocols, preprocessing and decoding on hand-made inputs (no assets, no network)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from damofd.errors import ConfigError
from damofd.inference import Face, ImageResult, get_protocol
from damofd.inference.postprocess import ModelLayout, decode_outputs, select_max_faces
from damofd.inference.preprocess import fill_canvas


def test_plans() -> None:
    vga = get_protocol("vga")
    p = vga.plan(886, 1280)  # t1.jpg
    assert (p.new_h, p.new_w, p.canvas) == (443, 640, (640, 640))  # int(886·0.5 + 0.5) = 443
    assert p.scale_x == 0.5 and p.scale_y == 443 / 886
    p = vga.plan(398, 600)  # face_detection2.jpeg: 398·640/600 = 424.53 → 425 (rounded)
    assert (p.new_h, p.new_w) == (425, 640)
    ins = get_protocol("insightface").plan(398, 600)  # int() truncation → 424
    assert (ins.new_h, ins.new_w) == (424, 640) and ins.scale_x == ins.scale_y == 424 / 398
    p = vga.plan(100, 50)  # upscaling too
    assert (p.new_h, p.new_w) == (640, 320)
    orig = get_protocol("original").plan(481, 650)
    assert (orig.new_h, orig.new_w, orig.canvas) == (481, 650, (512, 672))
    custom = get_protocol("480x640")
    assert custom.name == "480x640" and custom.plan(1000, 1000).canvas == (480, 640)
    assert (custom.plan(1000, 1000).new_h, custom.plan(1000, 1000).new_w) == (480, 480)
    assert get_protocol(" 320X320 ").size == (320, 320)
    for bad in ("qvga", "10x10", "640x", "0x640"):
        with pytest.raises(ConfigError):
            get_protocol(bad)


def test_fill_canvas_matches_blob_from_image() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    for name, pad in (("vga", 0.0), ("insightface", -127.5 / 128)):
        proto = get_protocol(name)
        assert proto.pad_value == pad
        plan = proto.plan(50, 70)
        canvas = np.full((3, *plan.canvas), 99.0, np.float32)
        fill_canvas(canvas, img, plan, proto.pad_value)
        resized = cv2.resize(img, (plan.new_w, plan.new_h), interpolation=cv2.INTER_LINEAR)
        want = cv2.dnn.blobFromImage(resized, 1 / 128, (plan.new_w, plan.new_h), (127.5,) * 3, True)
        assert np.array_equal(canvas[:, : plan.new_h, : plan.new_w], want[0])
        assert np.all(canvas[:, plan.new_h :, :] == np.float32(pad))
        assert np.all(canvas[:, :, plan.new_w :] == np.float32(pad))


def _outputs(canvas: int, hits: dict[tuple[int, int], tuple[float, list[float]]]):
    """Flattened outputs of a 3-level, 2-anchor, kps model with given (stride, row) hits."""
    strides = (8, 16, 32)
    n = [(canvas // s) ** 2 * 2 for s in strides]
    score = [np.zeros((k, 1), np.float32) for k in n]
    bbox = [np.ones((k, 4), np.float32) for k in n]
    kps = [np.zeros((k, 10), np.float32) for k in n]
    for (li, row), (s, d) in hits.items():
        score[li][row, 0] = s
        bbox[li][row] = d
        kps[li][row] = np.arange(10, dtype=np.float32) / 10
    return score + bbox + kps


def test_decode_known_boxes() -> None:
    layout = ModelLayout((8, 16, 32), 2, True)
    # row 2·(y·W + x) + a; stride 16, W = 40: x = 5, y = 3 → centre (80, 48)
    row = 2 * (3 * 40 + 5) + 1
    outs = _outputs(640, {(1, row): (0.9, [1.0, 2.0, 3.0, 4.0]), (0, 0): (0.5, [1, 1, 1, 1])})
    vga = get_protocol("vga")
    plan = vga.plan(320, 320)  # scale 2 → boxes halved
    d = decode_outputs(outs, layout, plan, vga, score_thr=0.5, nms_thr=0.45)
    assert len(d.scores) == 1  # 0.5 is not > 0.5 (mmdet)
    np.testing.assert_allclose(d.boxes[0], np.array([80 - 16, 48 - 32, 80 + 48, 48 + 64]) / 2)
    want_kps = (np.array([80, 48]) + np.arange(10).reshape(5, 2) / 10 * 16) / 2
    np.testing.assert_allclose(d.keypoints[0], want_kps, rtol=1e-6)
    ins = get_protocol("insightface")
    d = decode_outputs(outs, layout, ins.plan(320, 320), ins, score_thr=0.5, nms_thr=0.4)
    assert len(d.scores) == 2  # ≥ for insightface; the stride-8 box at (0, 0) is not clamped
    np.testing.assert_allclose(d.boxes[1], np.array([-8, -8, 8, 8]) / 2)
    d = decode_outputs(outs, layout, plan, vga, score_thr=0.4, nms_thr=0.45)
    np.testing.assert_allclose(d.boxes[1], [0, 0, 4, 4])  # clamped to the resized image first
    with pytest.raises(ConfigError, match="rows"):
        decode_outputs(outs, layout, get_protocol("original").plan(700, 700), vga, 0.5, 0.45)


def test_nms_conventions() -> None:
    layout = ModelLayout((8, 16, 32), 2, True)
    # two boxes at neighbouring anchors of stride 32: IoU 0.6 without +1
    a = 2 * (5 * 20 + 5)
    b = 2 * (5 * 20 + 5) + 1
    outs = _outputs(640, {(2, a): (0.9, [2.0, 2.0, 2.0, 2.0]), (2, b): (0.8, [2.0, 2.0, 2.0, 1.0])})
    vga = get_protocol("vga")
    plan = vga.plan(640, 640)
    assert len(decode_outputs(outs, layout, plan, vga, 0.5, 0.45).scores) == 1
    assert len(decode_outputs(outs, layout, plan, vga, 0.5, 0.8).scores) == 2


def test_select_max_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [45, 45, 55, 55], [0, 0, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # image 100×100, centre (50, 50): the centred small box beats the big corner box
    assert select_max_faces(boxes, scores, 1, (100, 100), "default").tolist() == [1]
    assert select_max_faces(boxes, scores, 1, (100, 100), "max").tolist() == [2]
    assert select_max_faces(boxes, scores, 2, (100, 100), "score").tolist() == [0, 1]
    assert select_max_faces(boxes, scores, 0, (100, 100)).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError):
        select_max_faces(boxes, scores, 1, (100, 100), "biggest")


def test_results_serialise() -> None:
    r = ImageResult(
        boxes=np.array([[1, 2, 3, 4]], np.float32),
        scores=np.array([0.75], np.float32),
        keypoints=np.arange(10, dtype=np.float32).reshape(1, 5, 2),
        image_size=(10, 20),
        source="x.jpg",
    )
    d = json.loads(json.dumps(r.to_dict()))
    assert d == {
        "path": "x.jpg",
        "image_size": [10, 20],
        "scores": [0.75],
        "boxes": [[1.0, 2.0, 3.0, 4.0]],
        "keypoints": [[float(i) for i in range(10)]],
    }
    (face,) = r.faces
    assert isinstance(face, Face) and face.box == (1.0, 2.0, 3.0, 4.0)
    assert face.keypoints == ((0.0, 1.0), (2.0, 3.0), (4.0, 5.0), (6.0, 7.0), (8.0, 9.0))
    assert face.width == 2.0 and face.height == 2.0
    assert json.loads(json.dumps(face.to_dict()))["keypoints"][4] == [8.0, 9.0]
    failed = ImageResult.failed("y.png", "y.png: no such file", use_kps=False)
    assert not failed.ok and len(failed) == 0
    assert failed.to_dict()["error"] == "y.png: no such file"
    assert failed.to_modelscope() == {"scores": [], "boxes": [], "keypoints": None}
