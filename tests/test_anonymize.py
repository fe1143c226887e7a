"""Anonymisation: the modes hide only the faces; the tracker keeps a lost face hidden and its id;
``damofd anonymize`` on a photo and a video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.inference.anonymize import MODES, FaceTracker, anonymize_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", MODES)
def test_modes_change_only_the_enlarged_box(mode: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    out = anonymize_image(img, [[100, 50, 160, 130]], mode=mode, box_scale=1.5)
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000
    # box 60×80 enlarged ×1.5 about its centre (130, 90): x 85..175, y 30..150
    assert xs.min() >= 85 and xs.max() < 175 and ys.min() >= 30 and ys.max() < 150
    assert np.array_equal(out[:, :80], img[:, :80])


def test_tracker_keeps_ids_and_bridges_misses() -> None:
    tr = FaceTracker(keep_frames=2, smoothing=1.0)
    ids = []
    for f in range(10):
        box = np.array([[10 + 5 * f, 20, 60 + 5 * f, 80]], float)
        dets = box if f not in (4, 5) else np.zeros((0, 4))  # missed for two frames
        shown = tr.update(dets, np.ones(len(dets)))
        assert len(shown) == 1, f  # still hidden while missed
        ids.append(shown[0].id)
        if f in (4, 5):
            assert shown[0].misses > 0
            # predicted by constant velocity: close to where the face really is
            assert abs(shown[0].box[0] - (10 + 5 * f)) < 6
    assert set(ids) == {0}
    for _ in range(3):  # gone for longer than keep_frames: the track ends
        shown = tr.update(np.zeros((0, 4)))
    assert shown == []
    two = tr.update(np.array([[0, 0, 10, 10], [100, 100, 120, 130]], float))
    assert sorted(t.id for t in two) == [1, 2]


@pytest.mark.assets
def test_cli_photo_and_video(assets: Path, tmp_path: Path, capsys) -> None:
    from damofd.cli.main import main

    onnx = assets / "models" / "scrfd" / "det_500m.onnx"
    if not onnx.is_file():
        pytest.skip(f"asset missing: {onnx}")
    photo = ROOT / "examples" / "astronaut.jpg"
    img = cv2.imread(str(photo))
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for i in range(8):
        frame = img.copy()
        if i in (3, 4):  # the face vanishes from two frames (occluded)
            frame[40:200, 150:300] = 0
        w.write(frame)
    w.release()
    out = tmp_path / "out"
    rc = main(["anonymize", str(photo), str(video), "--out", str(out), "--onnx", str(onnx),
               "--mode", "pixelate", "--keep-frames", "3"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    hidden = cv2.imread(str(out / "astronaut.jpg"))
    assert hidden.shape == img.shape and not np.array_equal(hidden, img)
    assert np.abs(hidden[90:150, 190:260].astype(int) - img[90:150, 190:260]).mean() > 5
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
    recs = [json.loads(x) for x in (out / "anonymized.jsonl").read_text().splitlines()]
    frames = [r for r in recs if "frame" in r]
    assert [len(r["faces"]) for r in frames] == [1] * 8  # hidden in every frame, misses bridged
    assert {f["track"] for r in frames for f in r["faces"]} == {0}
    assert [r["faces"][0]["predicted"] for r in frames][3:5] == [True, True]


@pytest.mark.assets
def test_detect_track_gives_ids(assets: Path, tmp_path: Path, capsys) -> None:
    from damofd.cli.main import main

    onnx = assets / "models" / "scrfd" / "det_500m.onnx"
    if not onnx.is_file():
        pytest.skip(f"asset missing: {onnx}")
    img = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    video = tmp_path / "c.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for _ in range(4):
        w.write(img)
    w.release()
    assert main(["detect", str(video), "--onnx", str(onnx), "--track", "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [[t["track"] for t in r["tracks"]] for r in recs] == [[0]] * 4
