"""FaceDetector vs. straight re-implementations of the official tools, on the official ONNX files.

* ``insightface`` protocol vs. the official ONNX wrapper (``tests/_reference_scrfd.py``): same
  faces, boxes and keypoints, on several photos and all six official files;
* ``vga`` protocol vs. the mmdet test path written out plainly;
* the ModelScope dict, pipeline and drawing on the seed's demo image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from damofd.inference import (
    FaceDetector,
    Tasks,
    draw_face_detection_result,
    draw_faces,
    pipeline,
)
from tests._reference_scrfd import ReferenceSCRFD, reference_mmdet_detect
from tests.conftest import require_asset

OFFICIAL = [
    "det_500m.onnx",
    "det_2.5g.onnx",
    "scrfd_500m_bnkps.onnx",
    "scrfd_500m.onnx",
    "scrfd_1g.onnx",
    "scrfd_2.5g.onnx",
]
PHOTOS = [
    "t1.jpg",
    "bald_guys.jpg",
    "face_detection2.jpeg",
    "Tom_Cruise_avp_2014_4.jpg",
    "dogs.jpg",
]


def _sorted_oracle(det: np.ndarray, kps: np.ndarray | None):
    order = np.argsort(-det[:, 4], kind="stable")
    return det[order], None if kps is None else kps[order]


@pytest.fixture(scope="module")
def photos(assets: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in PHOTOS:
        img = cv2.imread(str(require_asset(assets, f"images/{name}")))
        assert img is not None
        out[name] = img
    return out


@pytest.mark.parametrize("model", OFFICIAL)
def test_insightface_protocol_matches_official_wrapper(
    assets: Path, photos: dict[str, np.ndarray], model: str
) -> None:
    path = require_asset(assets, f"models/scrfd/{model}")
    ref = ReferenceSCRFD(str(path))
    det = FaceDetector.from_onnx(path, protocol="insightface", threads=2)
    assert det.use_kps == ref.use_kps
    total = 0
    for name, img in photos.items():
        want, want_kps = _sorted_oracle(*ref.detect(img, (640, 640)))
        got = det.predict(img)[0]
        assert got.ok
        assert len(got) == len(want), (model, name)
        total += len(got)
        np.testing.assert_allclose(got.boxes, want[:, :4], atol=1e-3, err_msg=f"{model} {name}")
        np.testing.assert_allclose(got.scores, want[:, 4], atol=1e-6)
        if ref.use_kps:
            np.testing.assert_allclose(got.keypoints, want_kps, atol=1e-3)
        else:
            assert got.keypoints is None
    assert total >= 30  # the photos hold 6 + ~24 + ~3 + 1 faces


@pytest.mark.parametrize("model", ["det_500m.onnx", "scrfd_1g.onnx"])
def test_max_faces_matches_official_wrapper(
    assets: Path, photos: dict[str, np.ndarray], model: str
) -> None:
    path = require_asset(assets, f"models/scrfd/{model}")
    ref = ReferenceSCRFD(str(path))
    img = photos["bald_guys.jpg"]
    for metric in ("default", "max"):
        det = FaceDetector.from_onnx(
            path, protocol="insightface", max_faces=5, max_faces_metric=metric
        )
        want, _ = _sorted_oracle(*ref.detect(img, (640, 640), max_num=5, metric=metric))
        got = det.predict(img)[0]
        assert len(got) == 5
        np.testing.assert_allclose(got.boxes, want[:, :4], atol=1e-3)
        assert np.all(np.diff(got.scores) <= 0)  # kept faces stay sorted by score


@pytest.mark.parametrize("model", ["det_500m.onnx", "scrfd_2.5g.onnx"])
def test_vga_protocol_matches_mmdet_path(
    assets: Path, photos: dict[str, np.ndarray], model: str
) -> None:
    path = require_asset(assets, f"models/scrfd/{model}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    det = FaceDetector.from_onnx(path, protocol="vga", score_thr=0.3)
    for name in ("t1.jpg", "face_detection2.jpeg", "bald_guys.jpg"):
        boxes, scores, kps = reference_mmdet_detect(sess, photos[name], 0.3)
        got = det.predict(photos[name])[0]
        assert len(got) == len(boxes), name
        np.testing.assert_allclose(got.boxes, boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, scores, atol=1e-6)
        if kps is not None:
            np.testing.assert_allclose(got.keypoints, kps, atol=1e-3)


def test_modelscope_dict_on_demo_image(assets: Path) -> None:
    """The seed's demo image with SCRFD-500M-KPS: three upright faces near the bottom centre."""
    img_path = require_asset(assets, "images/face_detection2.jpeg")
    model = require_asset(assets, "models/scrfd/det_500m.onnx")
    img = cv2.imread(str(img_path))
    want, want_kps = _sorted_oracle(*ReferenceSCRFD(str(model)).detect(img, (640, 640)))
    assert len(want) == 3

    det = FaceDetector.from_onnx(model)  # vga protocol, score 0.5
    res = det.detect_modelscope(str(img_path))
    assert isinstance(res, dict)
    assert set(res) == {"scores", "boxes", "keypoints"}
    assert len(res["scores"]) == 3
    assert res["scores"] == sorted(res["scores"], reverse=True)
    assert all(isinstance(v, float) for v in res["scores"])
    boxes = np.array(res["boxes"])
    kps = np.array(res["keypoints"])
    assert boxes.shape == (3, 4) and kps.shape == (3, 10)
    # the mmdet-style protocol differs from the wrapper (rounded resize, grey padding, clamp,
    # NMS 0.45): same faces, boxes within a few pixels
    assert np.abs(boxes - want[:, :4]).max() < 3.0
    assert np.abs(kps - want_kps.reshape(-1, 10)).max() < 3.0
    # the insightface protocol gives the wrapper's numbers exactly
    exact = FaceDetector.from_onnx(model, protocol="insightface").detect_modelscope(img)
    np.testing.assert_allclose(np.array(exact["boxes"]), want[:, :4], atol=1e-3)
    # Face objects agree with the dict
    faces = det.detect(img)
    assert [f.score for f in faces] == pytest.approx(res["scores"])
    assert faces[0].keypoints is not None and len(faces[0].keypoints) == 5
    assert faces[0].to_dict()["box"] == pytest.approx(res["boxes"][0])


def test_pipeline_and_drawing_like_the_seed(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img_path = require_asset(assets, "images/face_detection2.jpeg")
    model = require_asset(assets, "models/scrfd/det_500m.onnx")
    face_detection = pipeline(Tasks.face_detection, model=str(model))
    result = face_detection(str(img_path))
    assert isinstance(result, dict)
    # ModelScope's default threshold is 0.3: at least the three faces found at 0.5
    assert len(result["scores"]) >= 3 and min(result["scores"]) > 0.3

    src = tmp_path / "srcImg.jpg"
    original = cv2.imread(str(img_path))
    cv2.imwrite(str(src), original)
    drawn = draw_face_detection_result(str(src), result)
    assert f"Found {len(result['scores'])} faces" in capsys.readouterr().out
    assert drawn.shape == original.shape and drawn.dtype == np.uint8
    reread = cv2.imread(str(src))
    x1, y1, _, y2 = (int(v) for v in result["boxes"][0])
    ym = (y1 + y2) // 2
    assert tuple(int(c) for c in drawn[ym, x1]) == (255, 0, 0)  # box edge, BGR blue
    kx, ky = (int(v) for v in result["keypoints"][0][:2])
    assert tuple(int(c) for c in drawn[ky, kx - 1]) == (0, 0, 255)  # keypoint ring, red
    assert (drawn != reread).any(axis=2).sum() > 100

    out = tmp_path / "vis.png"
    again = draw_faces(reread, result, out, kps_radius=1)  # the ModelScope look
    assert np.array_equal(again, drawn)
    assert np.array_equal(cv2.imread(str(out)), again)
    assert np.array_equal(reread, cv2.imread(str(src)))  # drawing works on a copy
