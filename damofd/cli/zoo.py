"""``damofd zoo``: list the model zoo, or show one entry in full.

Examples::

    damofd zoo                       # table of every model with its published AP and cost
    damofd zoo --family scrfd --count    # plus params/FLOPs counted here (640x480)
    damofd zoo damofd-10g-kps        # structure, config, weight sources, licence, notes
    damofd zoo --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "list the model zoo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="show one model in full")
    parser.add_argument("--family", choices=("damofd", "scrfd"), help="only this family")
    parser.add_argument(
        "--count",
        action="store_true",
        help="also count params and FLOPs at 640x480 (mmcv rules, family default for GN)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _counted(name: str) -> dict[str, int]:
    from damofd.models.flops import get_model_complexity
    from damofd.models.zoo import create_model

    c = get_model_complexity(create_model(name, init=False), (640, 480))
    return {"params": c.params, "flops": c.flops}


def _row(info: Any, count: bool) -> dict[str, Any]:
    d = info.to_dict()
    if count:
        d["counted"] = _counted(info.name)
    return d


def _table(rows: list[dict[str, Any]], count: bool) -> str:
    head = (
        f"{'name':<16} {'kps':<4} {'Easy':>6} {'Medium':>6} {'Hard':>6} {'FLOPs':>7} {'Params':>7}"
    )
    if count:
        head += f" {'params (ours)':>13} {'FLOPs (ours)':>15}"
    head += "  weights"
    lines = [head]
    for r in rows:
        p = r["published"]
        ap = (
            f"{p['easy']:>6.2f} {p['medium']:>6.2f} {p['hard']:>6.2f}"
            if p
            else f"{'-':>6} {'-':>6} {'-':>6}"
        )
        cost = f"{p['flops']:>7} {str(p['params_m']) + 'M':>7}" if p else f"{'-':>7} {'-':>7}"
        line = f"{r['name']:<16} {'yes' if r['use_kps'] else 'no':<4} {ap} {cost}"
        if count:
            line += f" {r['counted']['params']:>13,} {r['counted']['flops']:>15,}"
        kinds = sorted({w["kind"] for w in r["weights"]})
        line += "  " + (", ".join(kinds) if kinds else "(not released)")
        lines.append(line)
    lines.append(
        "AP: WIDER FACE val (%), VGA protocol, as published; FLOPs/params as published "
        "(DamoFD counts GroupNorm, SCRFD does not)."
    )
    return "\n".join(lines)


def _detail(r: dict[str, Any]) -> str:
    lines = [f"{r['name']}: {r['description']}", f"released: {'yes' if r['released'] else 'no'}"]
    if r["structure"]:
        lines.append(f"structure: {r['structure']}")
    cfg = r["config"]
    lines.append(f"backbone: {json.dumps(cfg['backbone'])}")
    lines.append(f"neck: {json.dumps(cfg['neck'])}")
    lines.append(f"head: {json.dumps(cfg['head'])}")
    lines.append(f"reference config: {r['reference_config']}")
    p = r["published"]
    if p:
        lines.append(
            f"published: Easy {p['easy']} / Medium {p['medium']} / Hard {p['hard']}, "
            f"{p['flops']} FLOPs, {p['params_m']} M params — {p['source']}"
        )
        lines.append(f"protocol: {p['protocol']}")
    if "counted" in r:
        lines.append(
            f"counted here (640x480): {r['counted']['params']:,} params, "
            f"{r['counted']['flops']:,} FLOPs"
        )
    for w in r["weights"]:
        lines.append(
            f"weights ({w['kind']}): {w['location']}" + (f" — {w['note']}" if w["note"] else "")
        )
    lines.append(f"licence: {r['licence']}")
    for n in r["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from damofd.models.zoo import get_model_info, list_models

    if args.name:
        row = _row(get_model_info(args.name), args.count)
        out = json.dumps(row) if args.json else _detail(row)
    else:
        rows = [_row(get_model_info(n), args.count) for n in list_models(args.family)]
        out = json.dumps(rows) if args.json else _table(rows, args.count)
    sys.stdout.write(out + "\n")
    return 0
