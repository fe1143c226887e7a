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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def create_app(detector: Any, config: ServeConfig | None = None, *, model_name: str = ""):
    """A FastAPI application serving ``detector`` (see the module doc)."""
    from fastapi import FastAPI

    from damofd.serve.routes import Service, add_routes

    cfg = config or ServeConfig()
    name = model_name or getattr(detector, "model_label", None) or "face detector"
    svc = Service(detector, cfg, name)
    app = FastAPI(
        title="damofd face detection",
        version="1",
        description="Face detection with cross-request batching (damofd serve).",
        lifespan=svc.lifespan,
    )
    app.state.config = cfg
    app.state.metrics_registry = svc.registry
    add_routes(app, svc)
    return app
