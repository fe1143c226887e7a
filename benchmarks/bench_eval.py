"""Timing of the WIDER FACE evaluation: file reading and evaluation, measured separately.

    python benchmarks/bench_eval.py                       # the RetinaFace-MNet0.25 asset set
    python benchmarks/bench_eval.py --pred DIR|TAR --gt DIR --repeat 7

Prints the time to read the ground truth (.mat), to read the predictions (folder or tar, parsed
in one pass) and to evaluate all three settings (score normalisation, sorting check, matching,
PR curves and AP), each the best and the median of ``--repeat`` runs, plus the APs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from damofd.evaluation import evaluate_wider, load_wider_gt, read_predictions
from damofd.testing import assets_dir


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, list[float]]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def _fmt(times: list[float]) -> str:
    return f"best {min(times):7.3f} s   median {statistics.median(times):7.3f} s"


def main(argv: list[str] | None = None) -> int:
    assets = assets_dir()
    default_pred = default_gt = None
    if assets is not None:
        default_pred = assets / "widerface/predictions/retinaface_mnet025/widerface_txt.tar.gz"
        default_gt = assets / "widerface/ground_truth"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pred", type=Path, default=default_pred, help="folder or tar archive")
    ap.add_argument("--gt", type=Path, default=default_gt, help="folder of the four .mat files")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--subset", action="store_true")
    args = ap.parse_args(argv)
    if args.pred is None or args.gt is None:
        sys.stderr.write("no assets found: pass --pred and --gt\n")
        return 2

    gt, t_gt = _timed(lambda: load_wider_gt(args.gt), args.repeat)
    preds, t_pred = _timed(lambda: read_predictions(args.pred), args.repeat)
    res, t_eval = _timed(lambda: evaluate_wider(preds, gt, subset=args.subset), args.repeat)

    print(f"predictions: {args.pred}  ({len(preds)} images, {preds.num_boxes} rows)")
    print(f"ground truth: {args.gt}  ({len(gt)} images, {gt.num_boxes} faces)")
    print(f"read ground truth   {_fmt(t_gt)}")
    print(f"read predictions    {_fmt(t_pred)}")
    print(f"evaluate (3 sets)   {_fmt(t_eval)}")
    print(f"AP easy {res.easy:.6f}  medium {res.medium:.6f}  hard {res.hard:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
