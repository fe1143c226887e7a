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


class _Forget:
    """A detector that loses every face in the frames listed (score forced below threshold)."""

    def __init__(self, det, missed: set[int]) -> None:
        self.det, self.missed, self.seen = det, missed, 0

    def __getattr__(self, name):
        return getattr(self.det, name)

    def predict(self, images, **kw):
        from damofd.serve.batcher import filter_result

        out = []
        for res in self.det.predict(images, **kw):
            out.append(filter_result(res, 1.1) if self.seen in self.missed else res)
            self.seen += 1
        return out


@pytest.mark.assets
def test_tracked_video_hides_a_face_the_detector_missed(assets: Path, tmp_path: Path) -> None:
    from damofd.inference import FaceDetector
    from damofd.inference.anonymize import anonymize_video

    onnx = assets / "models" / "scrfd" / "det_500m.onnx"
    if not onnx.is_file():
        pytest.skip(f"asset missing: {onnx}")
    face = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))[40:220, 140:320]  # 180×180
    bg = cv2.resize(cv2.imread(str(assets / "images" / "dogs.jpg")), (640, 360))
    video = tmp_path / "moving.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    frames = []
    for i in range(8):  # the face slides right by 30 px per frame
        f = bg.copy()
        x = 40 + 30 * i
        f[90:270, x : x + 180] = face
        frames.append((f, x))
        w.write(f)
    w.release()
    det = FaceDetector.from_onnx(onnx, score_thr=0.5, batch_size=1, workers=0)

    def face_changed(path: Path) -> list[float]:
        cap = cv2.VideoCapture(str(path))
        diffs = []
        for f, x in frames:
            ok, g = cap.read()
            assert ok
            inner = (slice(140, 220), slice(x + 50, x + 130))  # eyes to mouth
            diffs.append(float(np.abs(g[inner].astype(int) - f[inner]).mean()))
        cap.release()
        return diffs

    tracked = tmp_path / "tracked.mp4"
    anonymize_video(_Forget(det, {4}), video, tracked, mode="solid", keep_frames=3)
    untracked = tmp_path / "untracked.mp4"
    anonymize_video(_Forget(det, {4}), video, untracked, mode="solid", track=False)
    t, u = face_changed(tracked), face_changed(untracked)
    assert min(t) > 40, t  # solid black over the face in every frame, frame 4 included
    assert u[4] < 15 and min(u[:4] + u[5:]) > 40, u  # untracked: frame 4 exposed


@pytest.mark.assets
def test_alignment_on_t1_puts_keypoints_on_the_template(assets: Path) -> None:
    from damofd.inference import FaceDetector
    from damofd.inference.align import align_faces, alignment_template

    onnx = assets / "models" / "scrfd" / "det_500m.onnx"
    t1 = assets / "images" / "t1.jpg"
    if not onnx.is_file() or not t1.is_file():
        pytest.skip("asset missing: det_500m.onnx or t1.jpg")
    img = cv2.imread(str(t1))
    res = FaceDetector.from_onnx(onnx, workers=0).predict(img)[0]
    crops = align_faces(img, res, size=112)
    assert len(crops) == len(res) == 6
    means = []
    for c in crops:
        mapped = np.c_[res.keypoints[c.index], np.ones(5)] @ c.matrix.T
        err = np.linalg.norm(mapped - alignment_template(112), axis=1)
        # the least-squares residual of a real face (head turn, expression): a few pixels of
        # the 112-px crop; a turned head moves its nose off the frontal template most
        assert err.max() < 16.0, err
        means.append(err.mean())
    assert np.median(means) < 5.0 and max(means) < 8.0, means
