"""The HTTP face-detection service (FastAPI on uvicorn): ``damofd serve``.

Endpoints (JSON unless said otherwise; OpenAPI schema at ``/openapi.json``, docs at ``/docs``):

* ``POST /v1/detect`` — one image as a multipart upload (field ``image``), a raw body
  (``image/*`` or ``application/octet-stream``), JSON ``{"image": "<base64>"}`` or, when the
  server allows it, JSON ``{"url": "https://..."}``. Parameters ``score_thr``, ``max_faces``,
  ``return_landmarks`` as query parameters, form fields or JSON keys; ``?format=modelscope``
  answers the ModelScope dict. Answer: ``{"faces": [{"box", "score", "keypoints"}],
  "image_size": [w, h], "model", "timings_ms": {"decode", "queue", "inference", "total"}}``.
* ``POST /v1/detect/batch`` — several images (multipart fields ``images``, or JSON
  ``{"images": [...base64]}``): ``{"results": [...]}``, a failed image has an ``error``.
* ``POST /v1/draw`` — one image, answered as the annotated JPEG (``?format=png`` for PNG).
* ``GET /healthz``, ``GET /readyz`` (503 until the model is loaded), ``GET /v1/models``,
  ``GET /metrics`` (Prometheus text format), ``GET /`` (a page to try it in a browser).

Every image goes through one :class:`~damofd.serve.batcher.DynamicBatcher`, so concurrent
requests share model calls. Bad input is a 4xx JSON error ``{"error": {"kind", "message"}}``
that names the problem and never reaches the model; the body size and pixel count are limited.
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations
# (``request: Request``) at definition time, and Request is imported inside create_app
import asyncio
import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from damofd.errors import InputError
from damofd.serve.batcher import BatchStats, DynamicBatcher

__all__ = ["ServeConfig", "create_app"]

PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServeConfig:
    """Service settings (the ``damofd serve`` flags)."""

    max_batch_size: int = 8
    batch_timeout_ms: float = 10.0
    score_thr: float = 0.5
    max_faces: int = 0
    allow_urls: bool = False
    url_timeout: float = 10.0
    max_body_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    request_timeout_s: float = 30.0


class _HTTPError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _metrics():  # -> tuple of prometheus objects on a private registry
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    requests = Counter(
        "damofd_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
        registry=reg,
    )  # fmt: skip
    errors = Counter("damofd_errors", "Rejected requests by kind", ["kind"], registry=reg)
    batch = Histogram(
        "damofd_batch_size", "Images per model call", registry=reg,
        buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
    )  # fmt: skip
    calls = Counter("damofd_model_calls", "Model calls (batches)", registry=reg)
    images = Counter("damofd_images", "Images detected", registry=reg)
    latency = Histogram(
        "damofd_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
        registry=reg,
    )  # fmt: skip
    return reg, requests, errors, batch, calls, images, latency


def create_app(detector: Any, config: ServeConfig | None = None, *, model_name: str = ""):
    """A FastAPI application serving ``detector`` (see the module doc)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.concurrency import run_in_threadpool

    cfg = config or ServeConfig()
    name = model_name or getattr(detector, "model_label", None) or "face detector"
    reg, m_requests, m_errors, m_batch, m_calls, m_images, m_latency = _metrics()

    def on_batch(st: BatchStats) -> None:
        m_batch.observe(st.size)
        m_calls.inc()
        m_images.inc(st.size)

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = DynamicBatcher(
            detector,
            max_batch_size=cfg.max_batch_size,
            batch_timeout_ms=cfg.batch_timeout_ms,
            on_batch=on_batch,
        )
        yield
        # uvicorn has finished the in-flight requests; let the batcher drain, then stop
        await run_in_threadpool(state.pop("batcher").close)

    app = FastAPI(
        title="damofd face detection",
        version="1",
        description="Face detection with cross-request batching (damofd serve).",
        lifespan=lifespan,
    )
    app.state.config = cfg
    app.state.metrics_registry = reg

    # -- request parsing ---------------------------------------------------------------------
    async def _body(request: Request) -> bytes:
        limit = int(cfg.max_body_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _HTTPError(413, "too_large", f"request body over {cfg.max_body_mb:g} MB")
        data = await request.body()
        if len(data) > limit:
            raise _HTTPError(413, "too_large", f"request body over {cfg.max_body_mb:g} MB")
        return data

    def _number(value: Any, key: str, kind: type, lo: float, hi: float) -> Any:
        try:
            v = kind(value)
        except (TypeError, ValueError):
            raise _HTTPError(
                422, "bad_parameter", f"{key} must be a number, got {value!r}"
            ) from None
        if not (lo <= v <= hi) or v != v:  # v != v: NaN
            raise _HTTPError(422, "bad_parameter", f"{key} must be in [{lo:g}, {hi:g}], got {v}")
        return v

    def _params(src: dict[str, Any]) -> dict[str, Any]:
        thr = src.get("score_thr", cfg.score_thr)
        faces = src.get("max_faces", cfg.max_faces)
        lm = str(src.get("return_landmarks", "true")).lower() not in ("0", "false", "no")
        return {
            "score_thr": _number(thr, "score_thr", float, 0.0, 1.0),
            "max_faces": _number(faces, "max_faces", int, 0, 100_000),
            "return_landmarks": lm,
        }

    def _b64(text: Any, what: str) -> bytes:
        if not isinstance(text, str):
            raise _HTTPError(422, "bad_request", f"{what} must be a base64 string")
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _HTTPError(422, "bad_request", f"{what} is not valid base64") from None

    async def _inputs(request: Request, many: bool) -> tuple[list[Any], dict[str, Any]]:
        """(list of encoded images or URLs, parameters) from any supported request form."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        params: dict[str, Any] = dict(request.query_params)
        if ctype == "multipart/form-data":
            await _body(request)  # size check before parsing
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            field = "images" if many else "image"
            files = [f for f in form.getlist(field) if not isinstance(f, str)]
            if not files and many:
                files = [f for f in form.getlist("image") if not isinstance(f, str)]
            if not files:
                raise _HTTPError(422, "bad_request", f"multipart form without a {field!r} file")
            return [await f.read() for f in files], params
        data = await _body(request)
        if ctype == "application/json":
            import json

            try:
                obj = json.loads(data or b"null")
            except ValueError:
                raise _HTTPError(422, "bad_request", "body is not valid JSON") from None
            if not isinstance(obj, dict):
                raise _HTTPError(422, "bad_request", "JSON body must be an object")
            params.update({k: v for k, v in obj.items() if k not in ("image", "images", "url")})
            if many and "images" in obj:
                if not isinstance(obj["images"], list) or not obj["images"]:
                    raise _HTTPError(422, "bad_request", "'images' must be a non-empty list")
                return [_b64(x, f"images[{i}]") for i, x in enumerate(obj["images"])], params
            if "image" in obj:
                return [_b64(obj["image"], "image")], params
            if "url" in obj:
                if not cfg.allow_urls:
                    raise _HTTPError(
                        403, "urls_disabled", "URL inputs are off (start with --allow-urls)"
                    )
                url = obj["url"]
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise _HTTPError(422, "bad_request", "'url' must be an http(s) URL")
                return [url], params
            raise _HTTPError(422, "bad_request", "JSON body needs 'image' (base64) or 'url'")
        if not data:
            raise _HTTPError(422, "bad_request", "empty request body: send an image")
        return [data], params

    def _decode(src: Any) -> Any:
        from damofd.inference.image_io import load_image

        return load_image(src, timeout=cfg.url_timeout, max_pixels=cfg.max_image_pixels)

    async def _detect_one(src: Any, p: dict[str, Any]) -> tuple[Any, Any, dict[str, float]]:
        """(decoded image, result, timings) of one encoded image or URL."""
        t0 = time.perf_counter()
        try:
            img = await run_in_threadpool(_decode, src)
        except InputError as e:
            msg = str(e).replace("<bytes>: ", "")
            kind = "too_large" if "above the limit" in msg else "bad_image"
            raise _HTTPError(413 if kind == "too_large" else 422, kind, msg) from None
        t1 = time.perf_counter()
        batcher: DynamicBatcher | None = state.get("batcher")
        if batcher is None or not batcher.alive:
            raise _HTTPError(503, "not_ready", "the model is not loaded")
        fut = batcher.submit(img, p["score_thr"], p["max_faces"])
        try:
            res = await asyncio.wait_for(asyncio.wrap_future(fut), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPError(504, "timeout", "detection timed out") from None
        t2 = time.perf_counter()
        return img, res, {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}

    def _faces(res: Any, landmarks: bool) -> list[dict[str, Any]]:
        out = []
        for f in res.faces:
            d: dict[str, Any] = {"box": list(f.box), "score": f.score}
            if landmarks:
                d["keypoints"] = None if f.keypoints is None else [list(k) for k in f.keypoints]
            out.append(d)
        return out

    def _answer(res: Any, p: dict[str, Any], timings: dict[str, float], fmt: str | None) -> Any:
        if fmt == "modelscope":
            return res.to_modelscope()
        h, w = res.image_size
        return {
            "faces": _faces(res, p["return_landmarks"]),
            "image_size": [w, h],
            "model": name,
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }

    def _error(e: _HTTPError) -> JSONResponse:
        m_errors.labels(e.kind).inc()
        return JSONResponse({"error": {"kind": e.kind, "message": e.message}}, e.status)

    async def _guard(endpoint: str, fn) -> Any:
        t0 = time.perf_counter()
        try:
            resp = await fn()
        except _HTTPError as e:
            resp = _error(e)
        status = getattr(resp, "status_code", 200)
        m_requests.labels(endpoint, str(status)).inc()
        m_latency.labels(endpoint).observe(time.perf_counter() - t0)
        return resp

    body_doc = {
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "score_thr": {"type": "number"},
                            "max_faces": {"type": "integer"},
                            "return_landmarks": {"type": "boolean"},
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "image": {"type": "string", "format": "byte"},
                            "url": {"type": "string"},
                            "score_thr": {"type": "number"},
                            "max_faces": {"type": "integer"},
                            "return_landmarks": {"type": "boolean"},
                        },
                    }
                },
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    }

    @app.post("/v1/detect", openapi_extra=body_doc, summary="Detect faces in one image")
    async def detect(request: Request) -> Any:
        async def run() -> Any:
            t0 = time.perf_counter()
            srcs, raw = await _inputs(request, many=False)
            p = _params(raw)
            _, res, tm = await _detect_one(srcs[0], p)
            tm["total"] = (time.perf_counter() - t0) * 1e3
            return JSONResponse(_answer(res, p, tm, request.query_params.get("format")))

        return await _guard("detect", run)

    @app.post("/v1/detect/batch", openapi_extra=body_doc, summary="Detect faces in images")
    async def detect_batch(request: Request) -> Any:
        async def run() -> Any:
            srcs, raw = await _inputs(request, many=True)
            p = _params(raw)

            async def one(src: Any) -> dict[str, Any]:
                try:
                    _, res, tm = await _detect_one(src, p)
                except _HTTPError as e:
                    m_errors.labels(e.kind).inc()
                    return {"error": {"kind": e.kind, "message": e.message}}
                return _answer(res, p, tm, request.query_params.get("format"))

            results = await asyncio.gather(*(one(s) for s in srcs))
            return JSONResponse({"results": list(results), "model": name})

        return await _guard("detect_batch", run)

    @app.post("/v1/draw", openapi_extra=body_doc, summary="Annotated image (JPEG or PNG)")
    async def draw(request: Request) -> Any:
        async def run() -> Any:
            import cv2

            from damofd.inference.draw import draw_faces

            srcs, raw = await _inputs(request, many=False)
            p = _params(raw)
            image, res, _ = await _detect_one(srcs[0], p)
            canvas = await run_in_threadpool(draw_faces, image, res)
            png = request.query_params.get("format") == "png"
            ok, buf = cv2.imencode(".png" if png else ".jpg", canvas)
            if not ok:
                raise _HTTPError(500, "encode", "could not encode the drawing")
            return Response(buf.tobytes(), media_type="image/png" if png else "image/jpeg")

        return await _guard("draw", run)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded")
    async def readyz() -> Any:
        b = state.get("batcher")
        if b is None or not b.alive:
            return JSONResponse({"status": "not ready"}, 503)
        return {"status": "ready", "model": name}

    @app.get("/v1/models", summary="The served model")
    async def models() -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name,
                    "use_kps": bool(getattr(detector, "use_kps", False)),
                    "protocol": detector.protocol.name,
                    "max_batch_size": cfg.max_batch_size,
                    "batch_timeout_ms": cfg.batch_timeout_ms,
                }
            ]
        }

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app
