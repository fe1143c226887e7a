"""Bad inputs get a clear error, never a hang, a traceback or a silent wrong answer (issue 11)."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from damofd.errors import InputError
from damofd.inference.image_io import load_image, to_bgr_uint8


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Answers 200 with a 1 MB body, sent one byte every 0.2 s (never finishes in time)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        try:
            for _ in range(1 << 20):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def trickle_url():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/slow.jpg"
    srv.shutdown()
    srv.server_close()


def test_url_timeout_bounds_the_whole_download(trickle_url: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"slow\.jpg: timed out after 1\.5 s"):
        load_image(trickle_url, timeout=1.5)
    # every read succeeds within the socket timeout, yet the whole call stops at the bound
    assert time.monotonic() - t0 < 4.0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo)  # would block forever if opened


def test_float_images_in_unit_range_are_scaled() -> None:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    as_unit = u8.astype(np.float32) / 255.0
    np.testing.assert_array_equal(to_bgr_uint8(as_unit), u8)
    np.testing.assert_array_equal(to_bgr_uint8(u8.astype(np.float64)), u8)  # 0-255 floats


def test_predict_none_is_an_input_error() -> None:
    from damofd.inference import FaceDetector

    det = FaceDetector.__new__(FaceDetector)  # no model needed: the input is checked first
    for bad in (None, 3, {"a": 1}):
        with pytest.raises(InputError, match="no image"):
            FaceDetector.predict(det, bad)


def test_landmark_nme_matches_and_normalises() -> None:
    from damofd.data.labelv2 import ImageAnnotation
    from damofd.evaluation.landmarks import landmark_nme

    kps = np.zeros((2, 5, 3), np.float32)
    kps[0, :, :2] = [[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]
    kps[1] = -1  # no landmarks: not counted
    ann = ImageAnnotation(
        name="a.jpg",
        bboxes=np.array([[0, 0, 30, 40], [100, 100, 150, 150]], np.float32),
        keypoints=kps,
        has_keypoints=np.array([True, True]),
        ignore=np.array([False, False]),
    )
    pred_kps = kps[:1, :, :2] + np.array([3.0, 4.0], np.float32)  # every point 5 px off
    boxes = np.array([[1, 1, 30, 40], [100, 100, 150, 150]], np.float32)
    res = landmark_nme(
        {"a.jpg": (boxes, np.array([0.9, 0.8]), np.concatenate([pred_kps, pred_kps]))}, [ann]
    )
    assert (res.faces, res.matched) == (1, 1)
    assert res.nme == pytest.approx(5.0 / 50.0)  # diagonal of a 30×40 box
    missed = landmark_nme({}, [ann])
    assert missed.matched == 0 and missed.faces == 1 and np.isnan(missed.nme)


D05 = (
    "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE1K7(32,64,2,40,1)"
    "SuperResIDWE1K7(64,120,2,40,2)SuperResIDWE1K5(120,160,2,120,1)"
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", D05, "--alpha", "nan"], "argument --alpha: must be a finite number"),
        (["score", D05, "--stage-weights", "0.2,inf,0.2,0.2,0.2"], "finite number"),
        (["search", "--preset", "damofd-0.5g", "--out", "x", "--alpha", "inf"], "finite number"),
        (["train", "damofd-0.5g", "--work-dir", "w", "--lr", "nan"], "--lr: must be a finite"),
        (
            ["score", "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(16,32,2,8,1)"],
            "channel chain broken at block 1",
        ),
        (["cost", D05, "--resolution", "16"], "shrinks to 0 px at block 4"),
        (["score", D05.replace("(3,32", "(4,32")], "takes 4 channels; an image has 3"),
    ],
)
def test_bad_numbers_and_unbuildable_structures(argv, message, capsys, tmp_path, monkeypatch):
    from damofd.cli.main import main

    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupted_seen_file_is_one_line_error(tmp_path: Path, capsys) -> None:
    from damofd.cli.main import main

    out = tmp_path / "s"
    assert main(["search", "--preset", "damofd-0.5g", "--out", str(out), "--iterations", "2000",
                 "--checkpoint-every", "1000", "--no-progress"]) == 0  # fmt: skip
    seen = out / "search_seen.txt"
    data = bytearray(seen.read_bytes())
    data[10:12] = b"\xff\xfe"
    seen.write_bytes(bytes(data))
    capsys.readouterr()
    rc = main(["search", "--preset", "damofd-0.5g", "--out", str(out), "--resume",
               "--iterations", "3000", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "search_seen.txt' is corrupted" in err and "Traceback" not in err


def test_onnx_with_logit_scores_is_refused(tmp_path: Path) -> None:
    from damofd.inference import FaceDetector
    from tests._synthetic_onnx import make_scrfd_like_onnx

    path = make_scrfd_like_onnx(
        tmp_path / "logits.onnx", strides=(8, 16, 32), num_anchors=2, score_sigmoid=False, seed=3
    )
    with pytest.raises(InputError, match=r"logits\.onnx: score outputs are not probabilities"):
        FaceDetector.from_onnx(path, workers=0).detect(np.full((64, 64, 3), 200, np.uint8))


def test_unsupported_onnx_layout_names_the_file(tmp_path: Path) -> None:
    from damofd.errors import ConfigError
    from damofd.inference import FaceDetector
    from tests._synthetic_onnx import make_scrfd_like_onnx

    path = make_scrfd_like_onnx(tmp_path / "four.onnx", strides=(8, 16, 32, 64), num_anchors=2)
    with pytest.raises(ConfigError, match=r"four\.onnx: unsupported SCRFD ONNX layout"):
        FaceDetector.from_onnx(path, workers=0)


@pytest.mark.assets
def test_swapped_ground_truth_is_detected(assets: Path, tmp_path: Path) -> None:
    import shutil

    from damofd.evaluation import load_wider_gt

    src = assets / "widerface" / "ground_truth"
    if not src.is_dir():
        pytest.skip(f"asset missing: {src}")
    for f in src.glob("*.mat"):
        shutil.copy(f, tmp_path / f.name)
    load_wider_gt(tmp_path)  # the official files pass
    shutil.copy(tmp_path / "wider_easy_val.mat", tmp_path / "wider_hard_val.mat")
    with pytest.raises(InputError, match=r"wider_hard_val\.mat' is not the hard list"):
        load_wider_gt(tmp_path)


def test_save_checkpoint_refuses_a_fused_model(tmp_path: Path) -> None:
    from damofd.models import create_model
    from damofd.models.checkpoint import save_checkpoint
    from damofd.models.factory import load_model

    model = create_model("damofd-0.5g").eval()
    save_checkpoint(model, tmp_path / "ok.pth")
    assert load_model(tmp_path / "ok.pth") is not None
    model.fuse()
    with pytest.raises(InputError, match="BatchNorm-fused"):
        save_checkpoint(model, tmp_path / "fused.pth")
    assert not (tmp_path / "fused.pth").exists()


def test_remove_stale_tmp_keeps_fresh_files(tmp_path: Path) -> None:
    from damofd.io import remove_stale_tmp

    old = tmp_path / "sub" / ".x.jpg.abc.tmp"
    old.parent.mkdir()
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".y.jpg.def.tmp"
    fresh.write_bytes(b"being written")
    keep = tmp_path / "z.tmp"  # not one of ours (no leading dot)
    keep.write_bytes(b"user file")
    assert remove_stale_tmp(tmp_path, min_age_s=600, recursive=True) == [old]
    assert fresh.exists() and keep.exists()
    assert remove_stale_tmp(tmp_path) == [fresh]


@pytest.mark.assets
def test_detect_checks_model_against_onnx_weights_and_max_pixels(assets: Path, capsys) -> None:
    from damofd.cli.main import main

    onnx = assets / "models" / "scrfd" / "det_500m.onnx"
    if not onnx.is_file():
        pytest.skip(f"asset missing: {onnx}")
    photo = str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg")
    assert main(["detect", photo, "--model", "damofd-0.5g", "--weights", str(onnx)]) == 2
    err = capsys.readouterr().err
    assert "holds a scrfd-500m-kps model, not --model damofd-0.5g" in err
    assert main(["detect", photo, "--onnx", str(onnx), "--max-pixels", "1000"]) == 1
    err = capsys.readouterr().err
    assert "above the limit of 1,000" in err and "--max-pixels" in err
