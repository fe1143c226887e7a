"""``damofd info``: parameters and FLOPs of a detector, with the mmcv counting rules.

Examples::

    damofd info damofd-0.5g                       # 640x480 (HxW), as tools/get_flops.py
    damofd info scrfd-2.5g --input 640x640 --json
    damofd info scrfd-500m --gn-flops              # mmcv >= 1.3 rules (GroupNorm counted)
    damofd info "SuperConvK3BNRELU(3,32,2,1)..." --template damofd-0.5g

MODEL is a zoo name (``damofd zoo`` lists them) or a DamoFD structure string. By default
GroupNorm is counted for DamoFD models (how DamoFD's table was made) and not for SCRFD models
(mmcv 1.2.6, how SCRFD's numbers were made); ``--gn-flops`` / ``--no-gn-flops`` override.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from damofd.errors import InputError

HELP = "parameters and FLOPs of a detector (mmcv counting rules)"


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` → (640, 480) (H, W); ``"640"`` → (640, 640)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"--input {text!r}: expected HxW (e.g. 640x480) or one number") from None
    if h <= 0 or w <= 0:
        raise InputError(f"--input {text!r}: sides must be positive")
    return h, w


def _check_multiple(text: str, h: int, w: int, divisor: int) -> None:
    """``--input`` sides must be multiples of ``divisor``; the error suggests the nearest ones."""

    def nearest(v: int) -> str:
        lo = v // divisor * divisor
        return f"{lo} or {lo + divisor}" if lo > 0 else f"{divisor}"

    bad = [f"{name} {v} → {nearest(v)}" for name, v in (("height", h), ("width", w)) if v % divisor]
    if bad:
        raise InputError(
            f"--input {text!r}: both sides must be multiples of {divisor} ({'; '.join(bad)})"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="zoo name or DamoFD structure string")
    parser.add_argument(
        "--input",
        default="640x480",
        metavar="HxW",
        help="input size, multiples of 32 (default 640x480, the 'VGA' of tools/get_flops.py; "
        "FLOPs are the same for 480x640)",
    )
    parser.add_argument(
        "--gn-flops",
        dest="gn_flops",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count GroupNorm (mmcv >= 1.3); default: yes for DamoFD, no for SCRFD",
    )
    kps = parser.add_mutually_exclusive_group()
    kps.add_argument(
        "--kps", dest="use_kps", action="store_true", default=None, help="the keypoint variant"
    )
    kps.add_argument(
        "--no-kps", dest="use_kps", action="store_false", help="the variant without keypoints"
    )
    parser.add_argument(
        "--template",
        metavar="NAME",
        help="for a structure string: zoo model to copy the neck and head from "
        "(default: nearest backbone FLOPs)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="run one full-size forward pass instead of the (identical, faster) scaled count",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def model_info(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model named by ``args`` and count it; returns the JSON-able report."""
    from damofd.models.detector import SIZE_DIVISOR, check_input_size
    from damofd.models.factory import create_model
    from damofd.models.flops import get_model_complexity
    from damofd.models.zoo import get_model_info, resolve_name
    from damofd.ops.anchors import num_anchors_total
    from damofd.training.config_files import template_name

    h, w = parse_size(args.input)
    _check_multiple(args.input, h, w, SIZE_DIVISOR)
    check_input_size(h, w)
    template = None
    if "(" in args.model:
        model = create_model(args.template, structure=args.model, use_kps=args.use_kps, init=False)
        # the zoo model the neck and head come from: --template, else the one
        # `damofd train --structure` takes its recipe from (nearest backbone budget)
        template = resolve_name(args.template) if args.template else template_name(model.config)
    else:
        model = create_model(args.model, use_kps=args.use_kps, init=False)
    c = get_model_complexity(
        model, (h, w), count_gn=args.gn_flops, method="forward" if args.exact else "auto"
    )
    report: dict[str, Any] = {
        "model": model.name,
        "family": model.family,
        "use_kps": model.use_kps,
        "structure": getattr(model.config.backbone, "structure", None),
        "template": template,
        **c.to_dict(),
        "anchors": num_anchors_total(h, w, model.strides, model.num_anchors),
        "published": None,
    }
    if model.name is not None:
        info = get_model_info(model.name)
        if info.published is not None:
            p = info.published
            report["published"] = {
                "params_m": p.params_m,
                "flops": p.flops,
                "easy": p.easy,
                "medium": p.medium,
                "hard": p.hard,
                "source": p.source,
            }
    return report


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}"


def format_report(r: dict[str, Any]) -> str:
    h, w = r["input_size"]
    title = r["model"] or "custom structure"
    lines = [
        f"{title}  ({r['family']}, keypoints: {'yes' if r['use_kps'] else 'no'})",
        f"input 1x3x{h}x{w} (NCHW); FLOPs: mmcv get_model_complexity_info rules, GroupNorm "
        f"{'counted' if r['count_gn'] else 'not counted'}",
    ]
    if r["structure"] and not r["model"]:
        lines.append(f"structure {r['structure']}")
    if r.get("template"):
        lines.append(f"neck and head from the zoo model {r['template']}")
    lines.append(f"{'part':<10} {'params':>12} {'FLOPs':>17}")
    for name, part in r["parts"].items():
        lines.append(f"{name:<10} {part['params']:>12,} {part['flops']:>17,}")
    lines.append(f"{'total':<10} {r['params']:>12,} {r['flops']:>17,}")
    lines.append(f"{'':<10} {_human(r['params']):>12} {_human(r['flops'], 'FLOPs'):>17}")
    pub = r.get("published")
    if pub:
        lines.append(
            f"published  {pub['params_m']} M params, {pub['flops']} FLOPs at VGA; WIDER val AP "
            f"{pub['easy']}/{pub['medium']}/{pub['hard']} (Easy/Medium/Hard)"
        )
    lines.append(f"anchors    {r['anchors']:,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = model_info(args)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    return 0
