"""Inputs of FaceDetector: batching, image kinds, and bad input (never a crash of the batch)."""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.errors import ConfigError, InputError
from damofd.inference import FaceDetector, ImageResult, load_image
from damofd.inference.image_io import header_image_size, to_bgr_uint8
from tests.conftest import require_asset


@pytest.fixture(scope="module")
def model_paths(assets: Path) -> dict[str, Path]:
    return {
        "2d": require_asset(assets, "models/scrfd/det_500m.onnx"),
        "batched": require_asset(assets, "models/scrfd/scrfd_500m_bnkps.onnx"),
    }


@pytest.fixture(scope="module")
def det(model_paths: dict[str, Path]) -> FaceDetector:
    # two single-threaded worker sessions share each batch (data parallel)
    return FaceDetector.from_onnx(model_paths["batched"], threads=2, workers=2, batch_size=4)


@pytest.fixture(scope="module")
def t1(assets: Path) -> np.ndarray:
    img = cv2.imread(str(require_asset(assets, "images/t1.jpg")))
    assert img is not None
    return img


def _variants(t1: np.ndarray) -> list[np.ndarray]:
    """Differently sized crops/resizes of one photo (portrait, landscape, tiny, large)."""
    return [
        t1,
        np.ascontiguousarray(t1[100:800, 300:900]),  # portrait-ish crop
        cv2.resize(t1, (500, 320)),
        cv2.resize(t1, (1700, 1100)),
        np.ascontiguousarray(t1[::-1, ::-1]),
        cv2.resize(t1, (96, 64)),
    ]


def _same(a: ImageResult, b: ImageResult, atol: float = 1e-3) -> None:
    assert a.ok and b.ok
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    if a.keypoints is not None:
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=atol)


@pytest.mark.parametrize("protocol", ["vga", "original", "insightface", "480x640"])
def test_batch_equals_one_by_one(det: FaceDetector, t1: np.ndarray, protocol: str) -> None:
    imgs = _variants(t1)
    det.protocol = protocol  # type: ignore[assignment]
    try:
        batched = det.predict(imgs, batch_size=4)
        singles = [det.predict(im, batch_size=1)[0] for im in imgs]
    finally:
        det.protocol = "vga"  # type: ignore[assignment]
    assert len(batched) == len(imgs)
    for a, b in zip(batched, singles):
        _same(a, b)
    assert len(batched[0]) == 6  # the six faces of t1.jpg


def test_batched_and_2d_onnx_files_agree(model_paths: dict[str, Path], t1: np.ndarray) -> None:
    """det_500m.onnx (2-D outputs, batch 1: looped) and scrfd_500m_bnkps.onnx (3-D, batched)
    hold the same weights."""
    a = FaceDetector.from_onnx(model_paths["2d"], batch_size=8, workers=2)  # looped per image
    b = FaceDetector.from_onnx(model_paths["batched"], batch_size=8, workers=0)  # one run
    assert a.layout.max_batch == 1 and b.layout.max_batch is None
    imgs = _variants(t1)[:3]
    for ra, rb in zip(a.predict(imgs), b.predict(imgs)):
        _same(ra, rb, atol=1e-2)


def test_image_kinds_give_the_same_faces(det: FaceDetector, t1: np.ndarray, tmp_path: Path) -> None:
    base = det.predict(t1)[0]
    png16 = tmp_path / "t1_16bit.png"
    assert cv2.imwrite(str(png16), t1.astype(np.uint16) * 257)
    assert cv2.imread(str(png16), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    rgba = cv2.cvtColor(t1, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 7
    for variant in (str(png16), png16, rgba, t1.astype(np.uint16) * 257, png16.read_bytes()):
        _same(det.predict(variant)[0], base)
    gray = cv2.cvtColor(t1, cv2.COLOR_BGR2GRAY)
    g1 = det.predict(gray)[0]
    g3 = det.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))[0]
    _same(g1, g3)
    assert len(g1) >= 4


def test_pil_input_is_rgb(det: FaceDetector, t1: np.ndarray) -> None:
    pil = pytest.importorskip("PIL.Image")
    base = det.predict(t1)[0]
    rgb = pil.fromarray(cv2.cvtColor(t1, cv2.COLOR_BGR2RGB))
    _same(det.predict(rgb)[0], base)
    _same(det.predict(rgb.convert("RGBA"))[0], base)
    gray = pil.fromarray(cv2.cvtColor(t1, cv2.COLOR_BGR2GRAY))
    assert len(det.predict(gray)[0]) >= 4


def test_to_bgr_uint8_conversions() -> None:
    a16 = np.array([[0, 257, 65535, 32768]], np.uint16)
    assert to_bgr_uint8(a16)[0, :, 0].tolist() == [0, 1, 255, 128]
    f = np.array([[0.0, 127.6, 300.0, -5.0]], np.float32)
    assert to_bgr_uint8(f)[0, :, 1].tolist() == [0, 128, 255, 0]
    assert to_bgr_uint8(np.ones((2, 3), bool))[0, 0].tolist() == [255, 255, 255]
    x = np.zeros((4, 5, 3), np.uint8)
    assert to_bgr_uint8(x) is x  # no copy for BGR uint8
    with pytest.raises(InputError, match="zero size"):
        to_bgr_uint8(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(InputError, match="shape"):
        to_bgr_uint8(np.zeros((4, 5, 2), np.uint8))


def _fake_png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00" * 64
    )


def test_header_sizes(t1: np.ndarray) -> None:
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        ok, buf = cv2.imencode(ext, t1[:37, :53])
        assert ok
        assert header_image_size(buf.tobytes()) == (53, 37), ext
    assert header_image_size(_fake_png_header(20000, 20000)) == (20000, 20000)
    assert header_image_size(b"not an image at all") is None


def test_bad_inputs_are_reported_per_item(
    det: FaceDetector, t1: np.ndarray, tmp_path: Path, assets: Path
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    jpg = require_asset(assets, "images/t1.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpg[: len(jpg) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"  # 20000×20000 claimed by the header: refused before decoding
    huge.write_bytes(_fake_png_header(20000, 20000))
    inputs = [
        tmp_path / "missing.jpg",
        text,
        truncated,
        t1,
        empty,
        np.zeros((0, 10, 3), np.uint8),
        huge,
        tmp_path,  # a folder
        12345,  # not an image type
    ]
    results = det.predict(inputs)
    assert [r.ok for r in results] == [False, False, False, True, False, False, False, False, False]
    msgs = [r.error or "" for r in results]
    assert "missing.jpg: no such file" in msgs[0]
    assert "notes.jpg: not a readable image" in msgs[1]
    assert "truncated.jpg: not a readable image" in msgs[2]
    assert len(results[3]) == 6
    assert "empty.png: empty file" in msgs[4]
    assert "zero size" in msgs[5]
    assert "20000x20000" in msgs[6] and "limit" in msgs[6]
    assert "is a directory" in msgs[7]
    assert "unsupported input type int" in msgs[8]
    for r in results:
        assert r.to_dict()["path"]  # every record names its input
    with pytest.raises(InputError, match="no such file"):
        det.detect([t1, tmp_path / "missing.jpg"])


def test_pixel_limit_on_real_file(t1: np.ndarray, tmp_path: Path, model_paths: dict[str, Path]):
    p = tmp_path / "t1.png"
    cv2.imwrite(str(p), t1)
    small = FaceDetector.from_onnx(model_paths["batched"], max_pixels=1000 * 800)
    (r,) = small.predict(p)
    assert not r.ok and "1280x886" in (r.error or "")
    with pytest.raises(InputError, match="above the limit"):
        load_image(p, max_pixels=100)
    # arrays already in memory are not limited
    assert len(small.predict(t1)[0]) == 6


def test_url_timeout_and_refusal() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts connections (backlog) but never answers
    port = srv.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = srv.accept()
            held.append(conn)
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with pytest.raises(InputError, match=r"timed out after 0\.3 s"):
            load_image(f"http://127.0.0.1:{port}/face.jpg", timeout=0.3)
    finally:
        srv.close()
        for c in held:
            c.close()
    # a closed port: refused at once, with the URL in the message
    with pytest.raises(InputError, match=rf"127\.0\.0\.1:{port}/x\.jpg: cannot fetch"):
        load_image(f"http://127.0.0.1:{port}/x.jpg", timeout=0.3)


def test_options_validated(model_paths: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="unknown protocol"):
        FaceDetector.from_onnx(model_paths["2d"], protocol="qvga")
    with pytest.raises(ConfigError, match="max_faces_metric"):
        FaceDetector.from_onnx(model_paths["2d"], max_faces_metric="biggest")
    with pytest.raises(InputError, match="not found"):
        FaceDetector.from_onnx(model_paths["2d"].with_name("nope.onnx"))
    with pytest.raises(InputError, match="no such file"):
        FaceDetector.from_pretrained("nope.onnx")
