"""The FastAPI half of :mod:`damofd.serve.app`: request parsing, the shared service state and
one handler per endpoint. Imported by :func:`~damofd.serve.app.create_app` only, so that
``import damofd.serve.app`` needs neither FastAPI nor prometheus_client.
"""

# no ``from __future__ import annotations``: FastAPI reads the endpoints' annotations
# (``request: Request``) in add_routes at definition time
import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from damofd.errors import InputError
from damofd.serve.batcher import BatchStats, DynamicBatcher

PAGE = Path(__file__).with_name("page.html")

# the request body of the image endpoints, for the OpenAPI schema
_OPTION_FIELDS = {
    "score_thr": {"type": "number"},
    "max_faces": {"type": "integer"},
    "return_landmarks": {"type": "boolean"},
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
BODY_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        **_OPTION_FIELDS,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "byte"},
                        "url": {"type": "string"},
                        **_OPTION_FIELDS,
                    },
                }
            },
            "image/jpeg": _BINARY,
            "application/octet-stream": _BINARY,
        }
    }
}


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


# -- request parsing -----------------------------------------------------------------------------
async def _body(request: Request, cfg: Any) -> bytes:
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
        raise _HTTPError(422, "bad_parameter", f"{key} must be a number, got {value!r}") from None
    if not (lo <= v <= hi) or v != v:  # v != v: NaN
        raise _HTTPError(422, "bad_parameter", f"{key} must be in [{lo:g}, {hi:g}], got {v}")
    return v


def _params(src: dict[str, Any], cfg: Any) -> dict[str, Any]:
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


async def _form_inputs(request: Request, many: bool, params: dict[str, Any]) -> list[Any]:
    """The uploaded files of a multipart form (its text fields go into ``params``)."""
    form = await request.form()
    params.update({k: v for k, v in form.items() if isinstance(v, str)})
    field = "images" if many else "image"
    files = [f for f in form.getlist(field) if not isinstance(f, str)]
    if not files and many:
        files = [f for f in form.getlist("image") if not isinstance(f, str)]
    if not files:
        raise _HTTPError(422, "bad_request", f"multipart form without a {field!r} file")
    return [await f.read() for f in files]


def _json_inputs(data: bytes, many: bool, params: dict[str, Any], cfg: Any) -> list[Any]:
    """The base64 images or the URL of a JSON body (its other keys go into ``params``)."""
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
        return [_b64(x, f"images[{i}]") for i, x in enumerate(obj["images"])]
    if "image" in obj:
        return [_b64(obj["image"], "image")]
    if "url" in obj:
        if not cfg.allow_urls:
            raise _HTTPError(403, "urls_disabled", "URL inputs are off (start with --allow-urls)")
        url = obj["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _HTTPError(422, "bad_request", "'url' must be an http(s) URL")
        return [url]
    raise _HTTPError(422, "bad_request", "JSON body needs 'image' (base64) or 'url'")


async def _inputs(request: Request, many: bool, cfg: Any) -> tuple[list[Any], dict[str, Any]]:
    """(list of encoded images or URLs, parameters) from any supported request form."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params: dict[str, Any] = dict(request.query_params)
    if ctype == "multipart/form-data":
        await _body(request, cfg)  # size check before parsing
        return await _form_inputs(request, many, params), params
    data = await _body(request, cfg)
    if ctype == "application/json":
        return _json_inputs(data, many, params, cfg), params
    if not data:
        raise _HTTPError(422, "bad_request", "empty request body: send an image")
    return [data], params


# -- answers -------------------------------------------------------------------------------------
def _faces(res: Any, landmarks: bool) -> list[dict[str, Any]]:
    out = []
    for f in res.faces:
        d: dict[str, Any] = {"box": list(f.box), "score": f.score}
        if landmarks:
            d["keypoints"] = None if f.keypoints is None else [list(k) for k in f.keypoints]
        out.append(d)
    return out


class Service:
    """What the endpoints share: the detector, the settings (a ``ServeConfig``), the
    Prometheus metrics and, while the app runs, the :class:`DynamicBatcher`."""

    def __init__(self, detector: Any, cfg: Any, name: str) -> None:
        self.detector, self.cfg, self.name = detector, cfg, name
        (
            self.registry, self.m_requests, self.m_errors, self.m_batch, self.m_calls,
            self.m_images, self.m_latency,
        ) = _metrics()  # fmt: skip
        self.batcher: DynamicBatcher | None = None

    def _on_batch(self, st: BatchStats) -> None:
        self.m_batch.observe(st.size)
        self.m_calls.inc()
        self.m_images.inc(st.size)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        self.batcher = DynamicBatcher(
            self.detector,
            max_batch_size=self.cfg.max_batch_size,
            batch_timeout_ms=self.cfg.batch_timeout_ms,
            on_batch=self._on_batch,
        )
        yield
        # uvicorn has finished the in-flight requests; let the batcher drain, then stop
        batcher, self.batcher = self.batcher, None
        await run_in_threadpool(batcher.close)

    # -- detection -------------------------------------------------------------------------------
    def _decode(self, src: Any) -> Any:
        from damofd.inference.image_io import load_image

        cfg = self.cfg
        return load_image(src, timeout=cfg.url_timeout, max_pixels=cfg.max_image_pixels)

    async def _detect_one(self, src: Any, p: dict[str, Any]) -> tuple[Any, Any, dict[str, float]]:
        """(decoded image, result, timings) of one encoded image or URL."""
        t0 = time.perf_counter()
        try:
            img = await run_in_threadpool(self._decode, src)
        except InputError as e:
            msg = str(e).replace("<bytes>: ", "")
            kind = "too_large" if "above the limit" in msg else "bad_image"
            raise _HTTPError(413 if kind == "too_large" else 422, kind, msg) from None
        t1 = time.perf_counter()
        batcher = self.batcher
        if batcher is None or not batcher.alive:
            raise _HTTPError(503, "not_ready", "the model is not loaded")
        fut = batcher.submit(img, p["score_thr"], p["max_faces"])
        try:
            res = await asyncio.wait_for(asyncio.wrap_future(fut), self.cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPError(504, "timeout", "detection timed out") from None
        t2 = time.perf_counter()
        return img, res, {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}

    def _answer(self, res: Any, p: dict[str, Any], timings: dict[str, float], fmt: Any) -> Any:
        if fmt == "modelscope":
            return res.to_modelscope()
        h, w = res.image_size
        return {
            "faces": _faces(res, p["return_landmarks"]),
            "image_size": [w, h],
            "model": self.name,
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }

    def _error(self, e: _HTTPError) -> JSONResponse:
        self.m_errors.labels(e.kind).inc()
        return JSONResponse({"error": {"kind": e.kind, "message": e.message}}, e.status)

    async def guard(self, endpoint: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """``await fn()``, a rejected request answered as its JSON error; counted and timed."""
        t0 = time.perf_counter()
        try:
            resp = await fn()
        except _HTTPError as e:
            resp = self._error(e)
        status = getattr(resp, "status_code", 200)
        self.m_requests.labels(endpoint, str(status)).inc()
        self.m_latency.labels(endpoint).observe(time.perf_counter() - t0)
        return resp

    # -- endpoints -------------------------------------------------------------------------------
    async def detect(self, request: Request) -> Any:
        t0 = time.perf_counter()
        srcs, raw = await _inputs(request, False, self.cfg)
        p = _params(raw, self.cfg)
        _, res, tm = await self._detect_one(srcs[0], p)
        tm["total"] = (time.perf_counter() - t0) * 1e3
        return JSONResponse(self._answer(res, p, tm, request.query_params.get("format")))

    async def detect_batch(self, request: Request) -> Any:
        srcs, raw = await _inputs(request, True, self.cfg)
        p = _params(raw, self.cfg)

        async def one(src: Any) -> dict[str, Any]:
            try:
                _, res, tm = await self._detect_one(src, p)
            except _HTTPError as e:
                self.m_errors.labels(e.kind).inc()
                return {"error": {"kind": e.kind, "message": e.message}}
            return self._answer(res, p, tm, request.query_params.get("format"))

        results = await asyncio.gather(*(one(s) for s in srcs))
        return JSONResponse({"results": list(results), "model": self.name})

    async def draw(self, request: Request) -> Any:
        import cv2

        from damofd.inference.draw import draw_faces

        srcs, raw = await _inputs(request, False, self.cfg)
        p = _params(raw, self.cfg)
        image, res, _ = await self._detect_one(srcs[0], p)
        canvas = await run_in_threadpool(draw_faces, image, res)
        png = request.query_params.get("format") == "png"
        ok, buf = cv2.imencode(".png" if png else ".jpg", canvas)
        if not ok:
            raise _HTTPError(500, "encode", "could not encode the drawing")
        return Response(buf.tobytes(), media_type="image/png" if png else "image/jpeg")

    def readyz(self) -> Any:
        b = self.batcher
        if b is None or not b.alive:
            return JSONResponse({"status": "not ready"}, 503)
        return {"status": "ready", "model": self.name}

    def models(self) -> dict[str, Any]:
        cfg, detector = self.cfg, self.detector
        return {
            "models": [
                {
                    "name": self.name,
                    "use_kps": bool(getattr(detector, "use_kps", False)),
                    "protocol": detector.protocol.name,
                    "max_batch_size": cfg.max_batch_size,
                    "batch_timeout_ms": cfg.batch_timeout_ms,
                }
            ]
        }

    def metrics(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def add_routes(app: FastAPI, svc: Service) -> None:
    """Register the endpoints of ``svc`` on ``app`` (names and annotations make the schema)."""

    @app.post("/v1/detect", openapi_extra=BODY_DOC, summary="Detect faces in one image")
    async def detect(request: Request) -> Any:
        return await svc.guard("detect", lambda: svc.detect(request))

    @app.post("/v1/detect/batch", openapi_extra=BODY_DOC, summary="Detect faces in images")
    async def detect_batch(request: Request) -> Any:
        return await svc.guard("detect_batch", lambda: svc.detect_batch(request))

    @app.post("/v1/draw", openapi_extra=BODY_DOC, summary="Annotated image (JPEG or PNG)")
    async def draw(request: Request) -> Any:
        return await svc.guard("draw", lambda: svc.draw(request))

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded")
    async def readyz() -> Any:
        return svc.readyz()

    @app.get("/v1/models", summary="The served model")
    async def models() -> dict[str, Any]:
        return svc.models()

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return svc.metrics()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))
