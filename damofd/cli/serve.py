"""``damofd serve``: an HTTP face-detection service with cross-request batching and a web page.

Examples::

    damofd serve                                   # the bundled default model on 127.0.0.1:8000
    damofd serve --onnx det_500m.onnx --port 9000 --max-batch-size 16 --batch-timeout-ms 5
    damofd serve damofd-0.5g-kps --host 0.0.0.0 --allow-urls --max-body-mb 10

Needs the optional extra: ``pip install 'damofd[serve]'`` (FastAPI, uvicorn, prometheus-client,
python-multipart). Endpoints and behaviour: docs/serve.md and ``/docs`` on the running server.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from damofd.cli._types import (
    nms_threshold,
    non_negative_int,
    positive_float,
    positive_int,
    score_threshold,
)
from damofd.errors import ConfigError

HELP = "HTTP face-detection service with cross-request batching and a web page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        help="zoo name (bundled weights), .pth checkpoint, ONNX file or ModelScope folder "
        "(default: the bundled default model)",
    )
    parser.add_argument("--onnx", metavar="FILE", help="ONNX file (same as giving it as MODEL)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port (8000)")
    parser.add_argument(
        "--max-batch-size", type=positive_int, default=8, metavar="N",
        help="most images per model call across concurrent requests (1: no batching)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-timeout-ms", type=positive_float, default=10.0, metavar="T",
        help="how long the first image of a batch waits for others (10 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--score-thr", type=score_threshold, default=0.5, help="default score threshold (0.5)"
    )
    parser.add_argument("--nms-thr", type=nms_threshold, help="NMS IoU threshold")
    parser.add_argument(
        "--max-faces", type=non_negative_int, default=0, help="default face limit (0: all)"
    )
    parser.add_argument("--protocol", default="vga", help="test protocol (vga)")
    parser.add_argument(
        "--threads", type=non_negative_int, metavar="N", help="onnxruntime intra-op threads"
    )
    parser.add_argument(
        "--max-image-pixels", type=positive_int, default=40_000_000, metavar="N",
        help="refuse images above N pixels (40 M)",
    )  # fmt: skip
    parser.add_argument(
        "--max-body-mb", type=positive_float, default=20.0, metavar="MB",
        help="refuse request bodies above MB megabytes (20)",
    )  # fmt: skip
    parser.add_argument(
        "--request-timeout", type=positive_float, default=30.0, metavar="S",
        help="seconds a request may wait for its detection (30)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-urls", action="store_true", help='accept {"url": ...} inputs (off by default)'
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1,
        help="server processes, each with its own model and batcher (1)",
    )  # fmt: skip


def build_app(args: argparse.Namespace):
    from damofd.inference import FaceDetector
    from damofd.models.bundled import DEFAULT_MODEL
    from damofd.serve.app import ServeConfig, create_app

    if args.onnx and args.model:
        raise ConfigError("give MODEL or --onnx, not both")
    spec = args.onnx or args.model or DEFAULT_MODEL
    det = FaceDetector.from_pretrained(
        spec,
        protocol=args.protocol,
        score_thr=0.02,  # the batcher applies each request's own threshold
        nms_thr=args.nms_thr,
        **({"threads": args.threads} if args.threads is not None else {}),
    )
    cfg = ServeConfig(
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        score_thr=args.score_thr,
        max_faces=args.max_faces,
        allow_urls=args.allow_urls,
        max_body_mb=args.max_body_mb,
        max_image_pixels=args.max_image_pixels,
        request_timeout_s=args.request_timeout,
    )
    return create_app(det, cfg, model_name=det.model_label)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            "damofd serve needs the serve extra: pip install 'damofd[serve]'"
        ) from None
    if args.workers > 1:
        # several processes: uvicorn imports the app in each through a factory, which rebuilds
        # it from the arguments passed in the environment
        import json
        import os

        os.environ[_ARGS_ENV] = json.dumps(vars(args), default=str)
        app: Any = "damofd.cli.serve:app_factory"
    else:
        app = build_app(args)
    sys.stderr.write(
        f"damofd serve: http://{args.host}:{args.port}/ (API docs at /docs), batches of up to "
        f"{args.max_batch_size} within {args.batch_timeout_ms:g} ms\n"
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=int(args.request_timeout) + 5,
        workers=args.workers,
        factory=args.workers > 1,
    )
    return 0


_ARGS_ENV = "DAMOFD_SERVE_ARGS"


def app_factory():
    """The app of one worker process of ``damofd serve --workers N``."""
    import json
    import os

    raw = json.loads(os.environ[_ARGS_ENV])
    return build_app(argparse.Namespace(**{k: v for k, v in raw.items() if not k.startswith("_")}))
