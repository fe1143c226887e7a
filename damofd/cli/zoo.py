"""``damofd zoo``: list the model zoo, or show one entry in full.

Examples::

    damofd zoo                       # every model: published AP and cost, where weights are
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
    from damofd.models.factory import create_model
    from damofd.models.flops import get_model_complexity

    c = get_model_complexity(create_model(name, init=False), (640, 480))
    return {"params": c.params, "flops": c.flops}


def _row(info: Any, count: bool) -> dict[str, Any]:
    d = info.to_dict()
    if count:
        d["counted"] = _counted(info.name)
    return d


def giga(printed: str) -> float:
    """A published FLOPs figure as printed (``520M``, ``2.46G``, ``34.13G``) in GFLOPs."""
    unit = printed.strip()[-1].upper()
    scale = {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}.get(unit)
    if scale is None:
        return float(printed)
    return float(printed.strip()[:-1]) * scale


def _table(rows: list[dict[str, Any]], count: bool) -> str:
    w = max([16, *(len(r["name"]) for r in rows)])
    head = f"{'name':<{w}} {'kps':<4} {'Easy':>6} {'Medium':>6} {'Hard':>6}"
    head += f" {'GFLOPs':>7} {'Params':>7}"
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
        cost = (
            f"{giga(p['flops']):>7.2f} {str(p['params_m']) + 'M':>7}" if p else f"{'-':>7} {'-':>7}"
        )
        line = f"{r['name']:<{w}} {'yes' if r['use_kps'] else 'no':<4} {ap} {cost}"
        if count:
            line += f" {r['counted']['params']:>13,} {r['counted']['flops']:>15,}"
        kinds = sorted({w["kind"] for w in r["weights"]})
        if r.get("bundled"):
            kinds.insert(0, "BUNDLED")
        line += "  " + (", ".join(kinds) if kinds else "(not released)")
        lines.append(line)
    lines.append(
        "AP: WIDER FACE val (%), VGA protocol, as published; GFLOPs/params as published "
        "(DamoFD counts GroupNorm, SCRFD does not)."
        + ("" if count else " '-': none published; `--count` counts every entry here.")
    )
    from damofd.models.bundled import DEFAULT_MODEL

    bundled = [r for r in rows if r.get("bundled")]
    for r in bundled:
        a = r["bundled"]["ap"]
        default = " The default model of every command." if r["name"] == DEFAULT_MODEL else ""
        lines.append(
            f"BUNDLED: {r['name']} ships with damofd (trained by damofd on the WIDER train "
            f"subset; val subset AP {a['easy']:.3f}/{a['medium']:.3f}/{a['hard']:.3f}); "
            f"`damofd zoo {r['name']}` for details.{default}"
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
    b = r.get("bundled")
    if b:
        a = b["ap"]
        lines.append(
            f"bundled weights (trained by damofd): {b['files']['onnx']['path']} and "
            f"{b['files']['pth']['name']}; WIDER val subset AP Easy {a['easy']:.4f} / Medium "
            f"{a['medium']:.4f} / Hard {a['hard']:.4f} ({a['protocol']}, score > {a['score_thr']})"
        )
        lines.append(f"bundled data: {b['data']}")
        lines.append(f"bundled recipe: {b['recipe']}")
        lines.append(f"bundled command: {b['command']}")
        lines.append(f"bundled CPU-hours: {b['cpu_hours']}")
        lines.append(f"bundled licence: {b['licence']}")
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
