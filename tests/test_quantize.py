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
    from damofd.models.bundled import bundled_file

    calib = tmp_path / "calib"
    calib.mkdir()
    img = cv2.imread(str(PHOTO))
    for i, flip in enumerate((None, 1, 0)):  # three calibration photos from the sample
        cv2.imwrite(str(calib / f"{i}.jpg"), img if flip is None else cv2.flip(img, flip))
    out = tmp_path / "int8.onnx"
    assert main(["export", "--out", str(out), "--int8", "--calib", str(calib)]) == 0
    assert "int8 QDQ, calibrated on 3 images" in capsys.readouterr().out
    fp32 = bundled_file("damofd-0.5g-kps", "onnx")
    assert out.stat().st_size < 0.8 * fp32.stat().st_size
    a = FaceDetector.from_onnx(fp32, score_thr=0.05, workers=0).predict(str(PHOTO))[0]
    b = FaceDetector.from_onnx(out, score_thr=0.05, workers=0).predict(str(PHOTO))[0]
    assert len(a) and len(b)
    assert abs(float(a.scores[0]) - float(b.scores[0])) < 0.1
    assert np.abs(a.boxes[0] - b.boxes[0]).max() < 12  # px, on a 512 px photo


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
    from damofd.models.bundled import bundled_file

    fp32 = bundled_file("damofd-0.5g-kps", "onnx")
    assert max(o.version for o in onnx.load(str(fp32)).opset_import if o.domain == "") < 13
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "a.jpg"), cv2.imread(str(PHOTO)))
    out = tmp_path / "q.onnx"
    assert main(["export", str(fp32), "--out", str(out), "--int8", "--calib", str(calib)]) == 0
    res = FaceDetector.from_onnx(out, workers=0, score_thr=0.05).predict(str(PHOTO))[0]
    assert res.error is None and len(res) >= 1
