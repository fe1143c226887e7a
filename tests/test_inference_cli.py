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
    # no model option: the bundled default runs (here on an empty folder, a failed input)
    assert main(["detect", str(tmp_path)]) == 1
    assert "no images or videos in this folder" in capsys.readouterr().err
    assert main(["detect", "--onnx", str(onnx_model)]) == 2
    assert "no input" in capsys.readouterr().err
    rc = main(["detect", str(tmp_path), "--onnx", str(onnx_model), "--protocol", "big"])
    assert rc == 2
    assert "unknown protocol" in capsys.readouterr().err
    rc = main(["detect", str(tmp_path), "--onnx", str(tmp_path / "none.onnx")])
    assert rc == 2
    assert "none.onnx: ONNX file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official SCRFD-500M-KPS weights as a damofd ``.pth`` checkpoint."""
    from damofd.models import save_checkpoint
    from damofd.models.onnx_import import import_scrfd_onnx

    official = require_asset(assets, "models/scrfd/det_500m.onnx")
    return save_checkpoint(import_scrfd_onnx(official), tmp_path_factory.mktemp("ckpt") / "m.pth")


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_option_ranges(onnx_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["detect", "x.jpg", "--onnx", str(onnx_model)]
    for flag, value, what in (
        ("--score-thr", "1.5", "in [0, 1]"),
        ("--score-thr", "-0.1", "in [0, 1]"),
        ("--score-thr", "nan", "in [0, 1]"),
        ("--nms-thr", "0", "in (0, 1]"),
        ("--nms-thr", "1.2", "in (0, 1]"),
        ("--threads", "-1", "≥ 0"),
        ("--workers", "-2", "≥ 0"),
        ("--max-frames", "0", "≥ 1"),
        ("--batch-size", "0", "≥ 1"),
        ("--max-faces", "-1", "≥ 0"),
    ):
        err = _usage_error(capsys, [*base, flag, value])
        assert f"argument {flag}: must be {what}, got {value}" in err, err
    err = _usage_error(capsys, [*base, "--threads", "two"])
    assert "argument --threads: expected an integer, got 'two'" in err


def test_model_option_conflicts(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = str(tmp_path / "x.jpg")
    m = str(onnx_model)
    for extra, want in (
        (["--model", "damofd-0.5g"], "--onnx cannot be combined with --model"),
        (["--weights", "x.pth"], "--onnx cannot be combined with --weights"),
        (["--device", "cuda"], "--device cuda applies to the torch backend"),
        (["--fp16"], "--fp16 applies to the torch backend"),
        (["--device", "cuda:1", "--fp16"], "--device cuda:1 and --fp16 apply to the torch"),
    ):
        assert main(["detect", img, "--onnx", m, *extra]) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err
    assert main(["detect", img, "--model", m, "--weights", "x.pth"]) == 2
    assert "is an ONNX file; --weights is for a zoo name" in capsys.readouterr().err
    assert main(["detect", img, "--onnx", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a directory, not an ONNX file" in capsys.readouterr().err


def test_bad_device_is_a_usage_error(checkpoint: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["detect", "x.jpg", "--model", str(checkpoint), "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert "device 'foo' is not a torch device" in err and err.count("\n") == 1


def test_empty_folder_is_a_failed_input(
    onnx_model: Path, tmp_path: Path, t1: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.resize(t1, (320, 224)))
    rc = main(["detect", str(empty), str(tmp_path / "a.jpg"), "--onnx", str(onnx_model)])
    cap = capsys.readouterr()
    assert rc == 1
    assert f"warning: {empty}: no images or videos in this folder" in cap.err
    assert "1 image, " in cap.err and "1 failed" in cap.err
    assert "a.jpg: " in cap.out


def test_no_progress_reaches_videos(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import damofd.inference.video as video

    seen: list[bool] = []

    def fake(det, source, out, *, max_frames, progress, on_frame):  # type: ignore[no-untyped-def]
        seen.append(progress)
        return video.VideoSummary(str(source), 1, 0, 25.0, (8, 8), None)

    monkeypatch.setattr(video, "process_video", fake)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["detect", "clip.avi", "--onnx", str(onnx_model)]
    assert main(argv) == 0 and main([*argv, "--no-progress"]) == 0
    assert seen == [True, False]
    capsys.readouterr()


def test_backend_onnx_exports_a_checkpoint(
    checkpoint: Path, t1: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "t1.jpg"
    cv2.imwrite(str(img), t1)
    argv = ["detect", str(img), "--model", str(checkpoint), "--json"]
    assert main([*argv, "--backend", "onnx", "--workers", "0"]) == 0
    cap = capsys.readouterr()
    assert "exporting the model to ONNX" in cap.err
    via_onnx = json.loads(cap.out)
    assert main(argv) == 0
    via_torch = json.loads(capsys.readouterr().out)
    assert len(via_onnx["scores"]) == len(via_torch["scores"]) == 6
    np.testing.assert_allclose(via_onnx["boxes"], via_torch["boxes"], atol=1e-2)
    np.testing.assert_allclose(via_onnx["scores"], via_torch["scores"], atol=1e-4)
