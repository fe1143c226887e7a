"""int8 export: the quantised bundled model loads like any ONNX file and stays close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.jpg"

pytestmark = pytest.mark.skipif(
    not (ROOT / "damofd" / "weights" / "bundled.json").is_file(), reason="no bundled weights"
)


def test_int8_export_runs_and_tracks_fp32(tmp_path: Path, capsys) -> None:
    import cv2

    from damofd.cli.main import main
    from damofd.inference import FaceDetector
    from damofd.models.bundled import DEFAULT_MODEL, bundled_file

    calib = tmp_path / "calib"
    calib.mkdir()
    img = cv2.imread(str(PHOTO))
    for i, flip in enumerate((None, 1, 0)):  # three calibration photos from the sample
        cv2.imwrite(str(calib / f"{i}.jpg"), img if flip is None else cv2.flip(img, flip))
    out = tmp_path / "int8.onnx"
    assert main(["export", "--out", str(out), "--int8", "--calib", str(calib)]) == 0
    assert "int8 QDQ, u8 activations, calibrated on 3 images" in capsys.readouterr().out
    assert _activation_zero_point_types(out) == {np.dtype(np.uint8)}
    fp32 = bundled_file(DEFAULT_MODEL, "onnx")
    assert out.stat().st_size < 0.8 * fp32.stat().st_size
    a = FaceDetector.from_onnx(fp32, score_thr=0.05, workers=0).predict(str(PHOTO))[0]
    b = FaceDetector.from_onnx(out, score_thr=0.05, workers=0).predict(str(PHOTO))[0]
    assert len(a) and len(b)
    assert abs(float(a.scores[0]) - float(b.scores[0])) < 0.1
    assert np.abs(a.boxes[0] - b.boxes[0]).max() < 12  # px, on a 512 px photo


def _activation_zero_point_types(path: Path) -> set[np.dtype]:
    """dtypes of the zero points of the activation QuantizeLinear nodes of a QDQ model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        inits[n.input[2]].dtype
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits
    }


def test_int8_signed_activations_and_custom_calibration_tensors(tmp_path: Path) -> None:
    """``activations="s8"`` writes signed activations; ``blobs=`` feeds ready input tensors
    (another model's preprocessing) instead of the detector's; bad choices are refused."""
    import cv2

    from damofd.errors import ConfigError
    from damofd.export.quantize import quantize_int8
    from damofd.inference import FaceDetector
    from damofd.models.bundled import DEFAULT_MODEL, bundled_file

    fp32 = bundled_file(DEFAULT_MODEL, "onnx")
    img = cv2.resize(cv2.imread(str(PHOTO)), (640, 640)).astype(np.float32)
    blob = ((img - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()
    seen = []

    def blobs():
        seen.append(1)
        return [blob, blob[:, :, ::-1].copy()]

    out = quantize_int8(fp32, tmp_path / "s8.onnx", [], activations="s8", blobs=blobs)
    assert seen and _activation_zero_point_types(out) == {np.dtype(np.int8)}
    res = FaceDetector.from_onnx(out, workers=0, score_thr=0.05).predict(str(PHOTO))[0]
    assert res.error is None and len(res) >= 1
    with pytest.raises(ConfigError, match="activations must be one of"):
        quantize_int8(fp32, tmp_path / "x.onnx", [PHOTO], activations="u16")
    with pytest.raises(ConfigError, match="at least one image"):
        quantize_int8(fp32, tmp_path / "x.onnx", [])


def test_int8_needs_calibration_photos(tmp_path: Path, capsys) -> None:
    from damofd.cli.main import main

    assert main(["export", "--out", str(tmp_path / "q.onnx"), "--int8"]) == 2
    assert "--int8 needs --calib DIR" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = main(["export", "--out", str(tmp_path / "q.onnx"), "--int8", "--calib",
               str(tmp_path / "empty")])  # fmt: skip
    assert rc == 2 and "holds no images" in capsys.readouterr().err


def test_int8_of_an_existing_opset11_file(tmp_path: Path, capsys) -> None:
    """The bundled ONNX (like the official SCRFD files) is opset 11; per-channel QDQ needs 13,
    so the file is converted before quantisation and the result loads."""
    import cv2
    import onnx

    from damofd.cli.main import main
    from damofd.inference import FaceDetector
    from damofd.models.bundled import DEFAULT_MODEL, bundled_file

    fp32 = bundled_file(DEFAULT_MODEL, "onnx")
    assert max(o.version for o in onnx.load(str(fp32)).opset_import if o.domain == "") < 13
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "a.jpg"), cv2.imread(str(PHOTO)))
    out = tmp_path / "q.onnx"
    assert main(["export", str(fp32), "--out", str(out), "--int8", "--calib", str(calib)]) == 0
    res = FaceDetector.from_onnx(out, workers=0, score_thr=0.05).predict(str(PHOTO))[0]
    assert res.error is None and len(res) >= 1
