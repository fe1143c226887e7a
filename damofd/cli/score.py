"""``damofd score STRUCT``: zero-shot score of a structure (DDSAR by default).

``STRUCT`` is a structure string, ``@FILE`` or the path of a file holding the string (e.g. the
``best_structure.txt`` written by ``damofd search``). Examples::

    damofd score "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)..." --json
    damofd score @runs/search/best_structure.txt --resolution 640
    damofd score best_structure.txt --proxy zen --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from damofd.cli._types import finite_float
from damofd.errors import InputError

HELP = "zero-shot score (DDSAR or another proxy) of a structure"

__all__ = ["HELP", "add_arguments", "parse_float_list", "read_structure_arg", "run"]


def read_structure_arg(text: str, what: str = "STRUCT"):  # -> Structure
    """A structure from a CLI argument: the string itself, ``@FILE`` or an existing file path.

    A file may hold the string on one or several lines (joined; blank lines and lines starting
    with ``#`` are ignored). Errors name the file and the block at fault.
    """
    from damofd.search.structure import Structure, StructureError

    path: Path | None = None
    if text.startswith("@"):
        path = Path(text[1:])
        if path.is_dir():
            raise InputError(f"{what}: {str(path)!r} is a directory, not a structure file")
        if not path.is_file():
            raise InputError(f"{what}: file {str(path)!r} does not exist")
    elif "(" not in text:
        if os.path.isdir(text):
            raise InputError(
                f"{what}: {text!r} is a directory; give a structure string or the file holding "
                f"one (e.g. {os.path.join(text, 'best_structure.txt')!r})"
            )
        if not os.path.isfile(text):
            raise InputError(
                f"{what}: {text!r} is neither a structure string (Name(args)...) nor an "
                "existing file"
            )
        path = Path(text)
    if path is None:
        return Structure.parse(text)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what}: cannot read {str(path)!r}: {e}") from None
    lines = [ln.strip() for ln in raw.splitlines()]
    body = "".join(ln for ln in lines if ln and not ln.startswith("#"))
    if not body:
        raise InputError(f"{what}: file {str(path)!r} holds no structure string")
    try:
        return Structure.parse(body)
    except StructureError as e:
        raise StructureError(f"{str(path)!r}: {e}") from None


def parse_float_list(text: str, what: str) -> tuple[float, ...]:
    """``"0.2,0.27,0.25"`` → floats; the error names the argument."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{what}: every value must be a finite number, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    from damofd.search.ddsar import DEFAULT_ALPHA
    from damofd.search.scoring import PROXIES

    p.add_argument(
        "structure", metavar="STRUCT", help="structure string, @FILE, or a file holding the string"
    )
    p.add_argument(
        "--proxy", default="ddsar", help=f"zero-shot proxy: {', '.join(PROXIES)} (default ddsar)"
    )
    p.add_argument(
        "--resolution", type=int, default=224, help="square input size in pixels (default 224)"
    )
    p.add_argument(
        "--alpha",
        type=finite_float,
        default=None,
        help=f"DDSAR kernel-size weight α (default {DEFAULT_ALPHA:g} as released; the README "
        "quotes 0.25)",
    )
    p.add_argument(
        "--stage-weights",
        default=None,
        metavar="W0,W1,...",
        help="DDSAR stage weights β, one per block of STRUCT (default 0.2,0.27,0.25,0.18,0.1 for "
        "blocks 0..4, later blocks ignored, as released)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the random and torch proxies")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the torch proxies")
    p.add_argument("--device", default="cpu", help="torch device for the torch proxies")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from damofd.search.ddsar import DEFAULT_ALPHA, DEFAULT_STAGE_WEIGHTS
    from damofd.search.scoring import check_proxy, score_structure

    proxy = check_proxy(args.proxy)
    if args.resolution < 1:
        raise InputError(f"--resolution must be a positive integer, got {args.resolution}")
    for flag, value in (("--alpha", args.alpha), ("--stage-weights", args.stage_weights)):
        if value is not None and proxy != "ddsar":
            raise InputError(f"{flag} applies to --proxy ddsar, not {proxy}")
    structure = read_structure_arg(args.structure)
    problem = structure.build_problem(args.resolution)
    if problem is not None:
        raise InputError(f"STRUCT cannot be built: {problem}")
    weights = DEFAULT_STAGE_WEIGHTS
    if args.stage_weights is not None:
        weights = parse_float_list(args.stage_weights, "--stage-weights")
        if len(weights) != len(structure):
            raise InputError(
                f"--stage-weights gives {len(weights)} weight{'s' if len(weights) != 1 else ''} "
                f"for a structure of {len(structure)} blocks: give one weight per block (without "
                f"--stage-weights the released {len(DEFAULT_STAGE_WEIGHTS)} weights apply to "
                f"blocks 0..{len(DEFAULT_STAGE_WEIGHTS) - 1} and later blocks are ignored)"
            )
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    res = score_structure(
        structure,
        proxy,
        resolution=args.resolution,
        alpha=alpha,
        weights=weights,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
    )
    if args.json:
        d = {"structure": structure.format(), **res.to_dict()}
        if res.stages is not None:
            d["weights"] = list(weights)
        print(json.dumps(d))
        return 0
    print(f"{proxy} = {res.score:.6f}  (resolution {args.resolution})")
    if res.stages is not None:
        print(f"alpha {alpha:g}; per-block SAR and stage weight:")
        for i, (b, sar, w) in enumerate(zip(structure, res.stages, weights)):
            print(f"  {i}  {sar:10.6f}  x {w:<5g} {b.format()}")
        for i in range(len(res.stages), len(structure)):
            print(f"  {i}  (ignored: no stage weight) {structure[i].format()}")
    return 0
