"""``damofd cost STRUCT``: FLOPs / params / layers under the search (PlainNet) rules.

These are the numbers the search budgets use (see :mod:`damofd.search.cost`); for the mmcv-style
count of a whole detector use ``damofd info``.

Examples::

    damofd cost "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)..." --resolution 640
    damofd cost runs/search-0.5g/best_structure.txt --json
    damofd cost @structure.txt --no-quirks
"""

from __future__ import annotations

import argparse
import json

from damofd.cli.score import read_structure_arg
from damofd.errors import InputError

HELP = "FLOPs / params / layers of a structure under the search rules"

__all__ = ["HELP", "add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "structure", metavar="STRUCT", help="structure string, @FILE, or a file holding the string"
    )
    p.add_argument(
        "--resolution", type=int, default=224, help="square input size in pixels (default 224)"
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help="classifier width included in params (default 1000 as the search; 0 = none)",
    )
    p.add_argument(
        "--no-quirks",
        action="store_true",
        help="count projections at the true output size and the classifier bias in full "
        "(the search uses the reference's quirks)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from damofd.search.cost import CostOptions, structure_cost

    if args.resolution < 1:
        raise InputError(f"--resolution must be a positive integer, got {args.resolution}")
    if args.num_classes < 0:
        raise InputError(f"--num-classes must be >= 0, got {args.num_classes}")
    structure = read_structure_arg(args.structure)
    problem = structure.build_problem(args.resolution)
    if problem is not None:
        raise InputError(f"STRUCT cannot be built: {problem}")
    opts = (
        CostOptions.exact(args.num_classes)
        if args.no_quirks
        else CostOptions(num_classes=args.num_classes)
    )
    c = structure_cost(structure, args.resolution, opts)
    if args.json:
        d = {"structure": structure.format(), **c.to_dict()}
        d["options"] = {
            "proj_double_stride": opts.proj_double_stride,
            "linear_bias_as_one": opts.linear_bias_as_one,
            "num_classes": opts.num_classes,
        }
        print(json.dumps(d))
        return 0
    quirks = "exact counting" if args.no_quirks else "search rules with reference quirks"
    print(f"resolution {args.resolution}x{args.resolution} ({quirks})")
    print(f"FLOPs  {c.flops:,.0f}  ({c.flops / 1e6:.2f} M)")
    print(f"params {c.params:,}  (incl. a {opts.num_classes}-way classifier)")
    print(f"layers {c.layers}")
    for i, (b, bc) in enumerate(zip(structure, c.blocks)):
        print(
            f"  {i}  {bc.flops:>16,.0f} FLOPs {bc.params:>11,} params  out {bc.out_resolution:>4}px"
            f"  {b.format()}"
        )
    return 0
