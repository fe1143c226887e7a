"""ONNX layouts (spec §7.2): 6/9/10/15 outputs, 2-D or batched 3-D, fixed or dynamic input,
checked against the official wrapper's re-implementation on synthetic files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from damofd.errors import ConfigError
from damofd.inference import FaceDetector
from damofd.inference.backends import layout_from_output_count
from tests._reference_scrfd import ReferenceSCRFD, reference_mmdet_detect
from tests._synthetic_onnx import make_scrfd_like_onnx
from tests.conftest import require_asset


@pytest.fixture(scope="module")
def photo(assets: Path) -> np.ndarray:
    img = cv2.imread(str(require_asset(assets, "images/t1.jpg")))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """640×640 smooth noise: no padding and no tied scores in the synthetic nets' outputs (ties
    make greedy NMS depend on the sort algorithm)."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return cv2.resize(small, (640, 640), interpolation=cv2.INTER_CUBIC)


def test_layout_table() -> None:
    assert layout_from_output_count(6) == ((8, 16, 32), 2, False)
    assert layout_from_output_count(9) == ((8, 16, 32), 2, True)
    assert layout_from_output_count(10) == ((8, 16, 32, 64, 128), 1, False)
    assert layout_from_output_count(15) == ((8, 16, 32, 64, 128), 1, True)
    with pytest.raises(ConfigError, match="7 outputs"):
        layout_from_output_count(7)


@pytest.mark.parametrize(
    ("strides", "anchors", "kps", "batched"),
    [
        ((8, 16, 32, 64, 128), 1, True, False),
        ((8, 16, 32, 64, 128), 1, False, True),
        ((8, 16, 32), 2, True, True),
    ],
)
def test_synthetic_layouts_match_wrapper(
    tmp_path: Path,
    noise: np.ndarray,
    strides: tuple[int, ...],
    anchors: int,
    kps: bool,
    batched: bool,
) -> None:
    path = make_scrfd_like_onnx(tmp_path / "m.onnx", strides, anchors, kps, batched)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    blob = ((noise[:, :, ::-1].astype(np.float32) - 127.5) / 128).transpose(2, 0, 1)[None]
    outs = sess.run(None, {"input.1": np.ascontiguousarray(blob)})
    all_scores = np.concatenate([o.reshape(-1) for o in outs[: len(strides)]])
    thr = float(np.quantile(all_scores, 0.995))  # a few dozen candidates: quick oracle NMS
    det = FaceDetector.from_onnx(path, protocol="insightface", score_thr=thr)
    assert det.layout.strides == strides and det.layout.num_anchors == anchors
    assert det.use_kps == kps
    assert det.layout.max_batch == (None if batched else 1)
    ref = ReferenceSCRFD(str(path), det_thresh=thr)
    d, k = ref.detect(noise, (640, 640))
    order = np.argsort(-d[:, 4], kind="stable")
    got = det.predict(noise)[0]
    assert len(got) == len(d) > 3
    np.testing.assert_allclose(got.boxes, d[order, :4], atol=1e-3)
    if kps:
        np.testing.assert_allclose(got.keypoints, k[order], atol=1e-3)
    # vga protocol vs the mmdet path, and batching on the same file
    det.protocol = "vga"  # type: ignore[assignment]
    boxes, _, _ = reference_mmdet_detect(sess, noise, thr)
    got = det.predict(noise)[0]
    assert len(got) == len(boxes)
    np.testing.assert_allclose(got.boxes, boxes, atol=1e-3)
    small = cv2.resize(noise, (300, 450))
    both = det.predict([noise, small])
    np.testing.assert_allclose(both[1].boxes, det.predict(small)[0].boxes, atol=1e-3)
    # "original" keeps the size; 5-level files need canvases divisible by 128
    det.protocol = "original"  # type: ignore[assignment]
    assert det.protocol.plan(886, 1290).canvas == ((896, 1312) if anchors == 2 else (896, 1408))
    assert det.predict(small)[0].ok


def test_fixed_input_size(tmp_path: Path, photo: np.ndarray, assets: Path) -> None:
    """A file with a fixed 320×320 input: vga/insightface fit into it; 'original' is refused."""
    import onnx

    src = require_asset(assets, "models/scrfd/scrfd_500m_bnkps.onnx")
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 1
    dims[2].dim_value = 320
    dims[3].dim_value = 320
    fixed = tmp_path / "fixed320.onnx"
    onnx.save(model, str(fixed))
    det = FaceDetector.from_onnx(fixed, protocol="insightface")
    assert det.layout.input_hw == (320, 320)
    assert det.protocol.size == (320, 320)
    ref = ReferenceSCRFD(str(fixed))
    assert ref.input_size == (320, 320)
    d, _ = ref.detect(photo)
    got = det.predict(photo)[0]
    assert len(got) == len(d) >= 4
    np.testing.assert_allclose(got.boxes, d[np.argsort(-d[:, 4], kind="stable"), :4], atol=1e-3)
    with pytest.raises(ConfigError, match="fixed input size 320x320"):
        FaceDetector.from_onnx(fixed, protocol="original")
    with pytest.raises(ConfigError, match="fixed input size"):
        FaceDetector.from_onnx(fixed, protocol="640x640")
