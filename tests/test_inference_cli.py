"""``damofd detect`` on a folder with a bad file, JSON lines, drawings and a synthetic video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.cli.main import main
from tests.conftest import require_asset


@pytest.fixture(scope="module")
def onnx_model(assets: Path) -> Path:
    return require_asset(assets, "models/scrfd/scrfd_500m_bnkps.onnx")


@pytest.fixture(scope="module")
def t1(assets: Path) -> np.ndarray:
    img = cv2.imread(str(require_asset(assets, "images/t1.jpg")))
    assert img is not None
    return img


def _folder(tmp_path: Path, t1: np.ndarray) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.jpg"), t1)
    cv2.imwrite(str(d / "sub" / "b.png"), cv2.resize(t1, (640, 443)))
    (d / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (d / "readme.txt").write_text("ignored: not an image extension")
    return d


def test_folder_json_lines(
    tmp_path: Path, t1: np.ndarray, onnx_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _folder(tmp_path, t1)
    rc = main(["detect", str(d), "--onnx", str(onnx_model), "--json", "--batch-size", "2"])
    cap = capsys.readouterr()
    assert rc == 1  # one file failed
    records = [json.loads(line) for line in cap.out.splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert set(by_name) == {"a.jpg", "b.png", "broken.jpg"}
    for name in ("a.jpg", "b.png"):
        r = by_name[name]
        assert "error" not in r
        assert len(r["scores"]) == 6
        assert len(r["boxes"]) == 6 and len(r["boxes"][0]) == 4
        assert len(r["keypoints"]) == 6 and len(r["keypoints"][0]) == 10
        assert r["scores"] == sorted(r["scores"], reverse=True)
    assert by_name["a.jpg"]["image_size"] == [886, 1280]
    assert "not a readable image" in by_name["broken.jpg"]["error"]
    assert "broken.jpg" in cap.err
    assert "3 images, 12 faces, 1 failed" in cap.err


def test_save_vis_and_video(
    tmp_path: Path, t1: np.ndarray, onnx_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _folder(tmp_path, t1)
    video = tmp_path / "clip.avi"
    frame = cv2.resize(t1, (320, 224))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 224))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.roll(frame, 4 * i, axis=1))
    writer.release()
    out = tmp_path / "out"
    rc = main(
        [
            "detect",
            str(d),
            str(video),
            str(tmp_path / "missing.jpg"),
            "--onnx",
            str(onnx_model),
            "--out",
            str(out),
            "--save-vis",
            "--score-thr",
            "0.3",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 1
    assert "missing.jpg: no such file" in cap.err
    assert "2 failed" in cap.err
    assert "clip.avi: 5 frames" in cap.out
    # drawings keep the folder structure
    a = cv2.imread(str(out / "a.jpg"))
    b = cv2.imread(str(out / "sub" / "b.png"))
    assert a is not None and a.shape == t1.shape
    assert b is not None and b.shape == (443, 640, 3)
    # the annotated video: same size, every frame written
    vout = out / "clip.mp4"
    assert vout.is_file()
    cap_v = cv2.VideoCapture(str(vout))
    n = 0
    while True:
        ok, f = cap_v.read()
        if not ok:
            break
        assert f.shape == (224, 320, 3)
        n += 1
    cap_v.release()
    assert n == 5
    assert not list(out.glob(".*partial*"))
    records = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    frames = [r for r in records if r["path"] == str(video)]
    assert [r["frame"] for r in frames] == [0, 1, 2, 3, 4]
    assert all(len(r["scores"]) >= 1 for r in frames)
    assert sum(1 for r in records if "error" in r) == 2


def test_usage_errors(onnx_model: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert main(["detect", str(tmp_path)]) == 2
    assert "no model" in capsys.readouterr().err
    assert main(["detect", "--onnx", str(onnx_model)]) == 2
    assert "no input" in capsys.readouterr().err
    rc = main(["detect", str(tmp_path), "--onnx", str(onnx_model), "--protocol", "big"])
    assert rc == 2
    assert "unknown protocol" in capsys.readouterr().err
    rc = main(["detect", str(tmp_path), "--onnx", str(tmp_path / "none.onnx")])
    assert rc == 2
    assert "none.onnx: ONNX file not found" in capsys.readouterr().err
