"""``damofd serve``: every endpoint and input form over real HTTP on a loopback port, bad input,
and cross-request batching (fewer model calls than concurrent requests)."""

from __future__ import annotations

import base64
import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests._serve_util import running_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


class _SlowDetector:
    """Wraps a detector; counts model calls and makes each take a while, so that concurrent
    requests pile up behind it (what batching is for)."""

    def __init__(self, det, delay: float = 0.15) -> None:
        self.det, self.delay, self.calls, self.sizes = det, delay, 0, []

    def __getattr__(self, name):
        return getattr(self.det, name)

    def predict(self, images, **kw):
        self.calls += 1
        self.sizes.append(len(images))
        time.sleep(self.delay)
        return self.det.predict(images, **kw)


def _post(*args, **kwargs):
    kwargs.setdefault("timeout", 60)  # a loaded CI machine can be slow; never a flaky 5 s
    return httpx.post(*args, **kwargs)


def _get(*args, **kwargs):
    kwargs.setdefault("timeout", 60)
    return httpx.get(*args, **kwargs)


@pytest.fixture(scope="module")
def server():

    from damofd.inference import FaceDetector
    from damofd.serve.app import ServeConfig, create_app
    from tests._synthetic_onnx import make_scrfd_like_onnx

    tmp = Path(__import__("tempfile").mkdtemp())
    onnx = make_scrfd_like_onnx(tmp / "m.onnx", strides=(8, 16, 32), num_anchors=2, batched=True)
    det = _SlowDetector(FaceDetector.from_onnx(onnx, workers=0, threads=1, score_thr=0.02))
    # request_timeout_s just under the clients' 60 s: a CI machine loaded by other jobs can take
    # well over the default 30 s to clear 16 queued requests (504s were seen at load 7 on 2 cores)
    cfg = ServeConfig(
        max_batch_size=8, batch_timeout_ms=30, max_body_mb=1, score_thr=0.5, allow_urls=True,
        request_timeout_s=55,
    )  # fmt: skip
    app = create_app(det, cfg, model_name="synthetic")
    with running_server(app) as (base, _srv):
        yield base, det


JPEG = ASTRONAUT.read_bytes()


def test_input_forms_agree(server) -> None:
    base, _ = server
    forms = [
        _post(f"{base}/v1/detect", files={"image": ("a.jpg", JPEG, "image/jpeg")}),
        _post(f"{base}/v1/detect", content=JPEG, headers={"content-type": "image/jpeg"}),
        _post(f"{base}/v1/detect", json={"image": base64.b64encode(JPEG).decode()}),
    ]
    bodies = [r.json() for r in forms]
    assert [r.status_code for r in forms] == [200, 200, 200], bodies
    for b in bodies:
        assert b["image_size"] == [512, 512] and b["model"] == "synthetic"
        assert set(b["timings_ms"]) >= {"decode", "detect", "total"}
        assert [f["box"] for f in b["faces"]] == [f["box"] for f in bodies[0]["faces"]]


def test_parameters_and_formats(server) -> None:
    base, _ = server
    low = _post(f"{base}/v1/detect?score_thr=0.02", content=JPEG).json()
    few = _post(f"{base}/v1/detect?score_thr=0.02&max_faces=2", content=JPEG).json()
    assert len(few["faces"]) == min(2, len(low["faces"]))
    assert few["faces"] == low["faces"][: len(few["faces"])]
    nolm = _post(f"{base}/v1/detect?score_thr=0.02&return_landmarks=false", content=JPEG)
    assert all("keypoints" not in f for f in nolm.json()["faces"])
    ms = _post(f"{base}/v1/detect?score_thr=0.02&format=modelscope", content=JPEG).json()
    assert set(ms) == {"scores", "boxes", "keypoints"} and len(ms["scores"]) == len(low["faces"])
    form = _post(
        f"{base}/v1/detect",
        files={"image": ("a.jpg", JPEG, "image/jpeg")},
        data={"score_thr": "0.02", "max_faces": "1"},
    ).json()
    assert len(form["faces"]) == min(1, len(low["faces"]))


def test_batch_draw_and_info_endpoints(server) -> None:
    base, _ = server
    r = _post(
        f"{base}/v1/detect/batch",
        files=[("images", ("a.jpg", JPEG, "image/jpeg")), ("images", ("b.jpg", b"junk", "x"))],
    )
    res = r.json()["results"]
    assert r.status_code == 200 and len(res) == 2
    assert res[0]["image_size"] == [512, 512] and res[1]["error"]["kind"] == "bad_image"
    drawn = _post(f"{base}/v1/draw", content=JPEG)
    assert drawn.headers["content-type"] == "image/jpeg" and drawn.content[:2] == b"\xff\xd8"
    png = _post(f"{base}/v1/draw?format=png", content=JPEG)
    assert png.content[:4] == b"\x89PNG"
    assert _get(f"{base}/healthz").json() == {"status": "ok"}
    assert _get(f"{base}/v1/models").json()["models"][0]["name"] == "synthetic"
    assert "/v1/detect" in _get(f"{base}/openapi.json").json()["paths"]
    page = _get(f"{base}/")
    assert page.status_code == 200 and "v1/detect" in page.text


@pytest.mark.parametrize(
    ("kwargs", "status", "kind"),
    [
        ({"content": b""}, 422, "bad_request"),
        ({"content": b"not an image at all"}, 422, "bad_image"),
        ({"content": JPEG[: len(JPEG) // 3]}, 422, "bad_image"),  # truncated: refused
        ({"content": b"\x00" * (2 * 1024 * 1024)}, 413, "too_large"),
        ({"json": {"image": "%%%"}}, 422, "bad_request"),
        ({"json": {"url": "ftp://127.0.0.1/x.jpg"}}, 422, "bad_request"),
        ({"json": [1, 2]}, 422, "bad_request"),
        ({"content": JPEG, "params": {"score_thr": "2"}}, 422, "bad_parameter"),
        ({"content": JPEG, "params": {"max_faces": "nan"}}, 422, "bad_parameter"),
    ],
)
def test_bad_input_is_a_json_4xx(server, kwargs, status, kind) -> None:
    base, _ = server
    r = _post(f"{base}/v1/detect", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["kind"] == kind and r.json()["error"]["message"]


def test_16bit_and_huge_images(server) -> None:
    import cv2

    base, _ = server
    img16 = (np.random.default_rng(0).random((64, 80, 3)) * 65535).astype(np.uint16)
    _, png16 = cv2.imencode(".png", img16)
    r = _post(f"{base}/v1/detect", content=png16.tobytes())
    assert r.status_code == 200 and r.json()["image_size"] == [80, 64]
    # a PNG header claiming 100000 × 100000 pixels: refused from the header, before decoding
    head = bytearray(cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    head[16:24] = (100000).to_bytes(4, "big") * 2
    r = _post(f"{base}/v1/detect", content=bytes(head))
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_large"


def test_concurrent_requests_share_model_calls(server) -> None:
    base, det = server
    before = det.calls
    det.delay = 0.5  # each model call is slow: requests queue behind it whatever the machine load
    n = 16
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda _: _post(f"{base}/v1/detect", content=JPEG,
                                                   timeout=60).status_code, range(n)))  # fmt: skip
    det.delay = 0.15
    assert codes == [200] * n
    calls = det.calls - before
    assert calls < n, f"{n} concurrent requests took {calls} model calls"
    metrics = _get(f"{base}/metrics").text
    assert "damofd_batch_size_bucket" in metrics and "damofd_model_calls_total" in metrics
    assert 'damofd_requests_total{endpoint="detect",status="200"}' in metrics


def test_mixed_load_loses_no_valid_request(server) -> None:
    base, _ = server
    bodies = [JPEG if i % 10 else b"broken" for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda b: _post(f"{base}/v1/detect", content=b,
                                                   timeout=60).status_code, bodies))  # fmt: skip
    assert codes.count(200) == 27 and codes.count(422) == 3


def test_url_input_and_urls_off(server, tmp_path: Path) -> None:
    import http.server

    from fastapi.testclient import TestClient

    from damofd.serve.app import ServeConfig, create_app

    base, det = server
    (tmp_path / "a.jpg").write_bytes(JPEG)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *a):
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/a.jpg"
        r = _post(f"{base}/v1/detect", json={"url": url}, timeout=30)
        assert r.status_code == 200 and r.json()["image_size"] == [512, 512]
        missing = _post(f"{base}/v1/detect", json={"url": url + ".nope"}, timeout=30)
        assert missing.status_code == 422 and "404" in missing.json()["error"]["message"]
    finally:
        files.shutdown()
        files.server_close()
    with TestClient(create_app(det.det, ServeConfig(allow_urls=False))) as client:
        off = client.post("/v1/detect", json={"url": "http://127.0.0.1:9/x.jpg"})
        assert off.status_code == 403 and off.json()["error"]["kind"] == "urls_disabled"
        assert client.get("/readyz").status_code == 200


def test_graceful_shutdown_finishes_in_flight_requests() -> None:

    from damofd.inference import FaceDetector
    from damofd.serve.app import ServeConfig, create_app
    from tests._synthetic_onnx import make_scrfd_like_onnx

    tmp = Path(__import__("tempfile").mkdtemp())
    onnx = make_scrfd_like_onnx(tmp / "m.onnx", strides=(8, 16, 32), num_anchors=2, batched=True)
    det = _SlowDetector(FaceDetector.from_onnx(onnx, workers=0, threads=1), delay=1.0)
    app = create_app(det, ServeConfig(max_batch_size=2, batch_timeout_ms=1))
    with running_server(app) as (base, srv):
        _graceful_check(base, srv, det)


def _graceful_check(base: str, srv, det: _SlowDetector) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(lambda: _post(f"{base}/v1/detect", content=JPEG, timeout=60))
            for _ in range(6)
        ]
        # all six in flight: the first model call (1 s) has started and the other requests,
        # queued behind it, have had time to connect even on a loaded machine
        deadline = time.monotonic() + 30
        while det.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.6)
        srv.should_exit = True  # what SIGTERM/SIGINT do
        codes = [f.result().status_code for f in futures]
    assert codes == [200] * 6


def test_batcher_survives_cancelled_requests() -> None:
    from damofd.inference import FaceDetector
    from damofd.serve.batcher import DynamicBatcher
    from tests._synthetic_onnx import make_scrfd_like_onnx

    tmp = Path(__import__("tempfile").mkdtemp())
    onnx = make_scrfd_like_onnx(tmp / "m.onnx", strides=(8, 16, 32), num_anchors=2, batched=True)
    det = _SlowDetector(FaceDetector.from_onnx(onnx, workers=0, threads=1), delay=0.3)
    b = DynamicBatcher(det, max_batch_size=4, batch_timeout_ms=50)
    img = np.zeros((64, 64, 3), np.uint8)
    first = b.submit(img, 0.5)  # occupies the model for 0.3 s
    time.sleep(0.1)
    gone = [b.submit(img, 0.5) for _ in range(3)]
    for f in gone:
        assert f.cancel()  # clients that went away before their batch ran
    kept = b.submit(img, 0.5)
    assert first.result(10).image_size == (64, 64)
    assert kept.result(10).image_size == (64, 64)
    assert b.alive and sum(det.sizes) == 2  # the cancelled images never reached the model
    b.close()
    assert not b.alive
