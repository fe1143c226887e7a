"""``damofd eval``: run a detector over WIDER FACE images and evaluate it (Easy/Medium/Hard AP).

Examples::

    damofd eval --wider-root WIDER_val --subset      # the bundled default model (onnxruntime)
    damofd eval det_500m.onnx --wider-root WIDER_val --gt ground_truth --protocol insightface
    damofd eval damofd-0.5g-kps --weights epoch_640.pth --wider-root WIDER_val --json
    damofd eval work_dirs/run1/latest.pth --wider-root WIDER_val --backend onnx --batch-size 16

Prediction files go to ``--work-dir`` (default ``runs/eval/<model>-<protocol>``) as
``<event>/<name>.txt``; an interrupted run continues where it stopped. ``--json`` prints the
``eval-wider`` summary plus the settings, timing and throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from damofd.cli.detect import (
    add_runtime_arguments,
    nms_threshold,
    positive_int,
    score_threshold,
)
from damofd.cli.eval_wider import add_size_arguments
from damofd.constants import WIDER_SCORE_THR
from damofd.engine.build import refuse_torch_flags
from damofd.errors import ConfigError, DamoFDError

HELP = "run a detector over WIDER images and evaluate it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL_OR_ONNX",
        help="ONNX file (official SCRFD/insightface or `damofd export`), .pth checkpoint, zoo "
        "name (bundled weights, or with --weights), ModelScope id or folder (default: the "
        "bundled default model)",
    )
    parser.add_argument(
        "--wider-root",
        required=True,
        metavar="DIR",
        help="WIDER split folder with images/<event>/<name>.jpg (e.g. WIDER_val)",
    )
    parser.add_argument(
        "--gt",
        metavar="DIR",
        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (default: "
        "<wider-root>/../ground_truth or <wider-root>/gt)",
    )
    parser.add_argument(
        "--protocol",
        default="vga",
        help="test protocol: vga (default; keep-ratio into 640x640, the published-AP protocol), "
        "original, insightface (official ONNX wrapper) or HxW",
    )
    parser.add_argument(
        "--score-thr",
        type=score_threshold,
        default=WIDER_SCORE_THR,
        metavar="T",
        help="score threshold in [0, 1] (protocol: 0.02)",
    )
    parser.add_argument(
        "--nms-thr",
        type=nms_threshold,
        metavar="T",
        help="NMS IoU threshold in (0, 1] (default: the protocol's, 0.45; insightface 0.4)",
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="evaluate only the ground-truth images present under --wider-root",
    )
    parser.add_argument(
        "--work-dir", metavar="DIR", help="prediction files (default runs/eval/<model>-<protocol>)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N", help="images per forward pass"
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        help="default: onnx for an ONNX file, torch otherwise (onnx exports a PyTorch model "
        "to <work-dir>/model.onnx first)",
    )
    parser.add_argument("--weights", metavar="FILE", help=".pth or ONNX weights for a zoo name")
    add_runtime_arguments(parser)
    parser.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="only the first N images (by event and name; implies --subset), for a quick check",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every prediction file, even those kept from an earlier run",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    add_size_arguments(parser)


def _by_size(args: argparse.Namespace, ev: Any) -> Any:
    """Recall per face size of the images this run evaluated (their prediction files)."""
    from damofd.evaluation.predictions import read_predictions
    from damofd.evaluation.size_recall import recall_by_size

    keys = set(ev.detected) | set(ev.reused)
    preds = read_predictions(ev.work_dir, allow_inverted=True).as_dict()
    rows = {k: v for k, v in preds.items() if k in keys}
    return recall_by_size(
        rows, ev.gt, setting=args.by_size, score_thr=args.size_score_thr, subset=True
    )


def run(args: argparse.Namespace) -> int:
    from damofd.engine.wider_eval import run_wider_eval
    from damofd.models.bundled import DEFAULT_MODEL

    if args.model is None:
        if args.weights:
            raise ConfigError("--weights needs a zoo name (MODEL_OR_ONNX) to load them into")
        args.model = DEFAULT_MODEL

    if args.backend == "onnx" or (
        args.backend is None and str(args.model).lower().endswith(".onnx")
    ):
        refuse_torch_flags(args)
    try:
        ev = run_wider_eval(
            args.model,
            args.wider_root,
            args.gt,
            protocol=args.protocol,
            score_thr=args.score_thr,
            nms_thr=args.nms_thr,
            subset=args.subset,
            work_dir=args.work_dir,
            batch_size=args.batch_size,
            backend=args.backend,
            weights=args.weights,
            device=args.device,
            fp16=args.fp16,
            threads=args.threads,
            limit=args.limit,
            fresh=args.fresh,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except DamoFDError as e:
        # run_wider_eval words some advice with its Python arguments; say the flags instead
        cli = getattr(e, "cli_message", None)
        if cli is None:
            raise
        raise type(e)(cli) from None
    by_size = _by_size(args, ev) if args.by_size else None
    if args.json:
        out = ev.to_dict()
        if by_size is not None:
            out["by_size"] = by_size.to_dict()
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    s = ev.settings
    t = ev.timings
    rate = ev.images_per_s
    lines = [
        f"model {s['model']}{' (bundled)' if s['model_id'].startswith('bundled:') else ''} "
        f"({s['backend']}), protocol {s['protocol']}, score > "
        f"{s['score_thr']:g}, NMS {s['nms_thr']:g}",
        ev.result.table(),
        f"detected {len(ev.detected)} images"
        + (f" ({rate:.2f} images/s)" if rate else "")
        + f", reused {len(ev.reused)}; time: model {t['load_model']:.1f} s, detection "
        f"{t['detect']:.1f} s, evaluation {t['evaluate']:.1f} s, total {t['total']:.1f} s",
        f"predictions: {ev.work_dir}",
        *([by_size.table()] if by_size is not None else []),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
