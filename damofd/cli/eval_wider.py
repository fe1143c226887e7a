"""``damofd eval-wider``: WIDER FACE Easy/Medium/Hard AP of a set of prediction files.

Examples::

    damofd eval-wider --pred widerface_txt.tar.gz --gt ground_truth/
    damofd eval-wider --pred preds/ --gt ground_truth/ --subset --json --out ap.json --plot pr.png
    damofd eval-wider --pred runs/eval/damofd-0.5g-kps-vga --gt ground_truth/ --subset --by-size
"""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "WIDER FACE AP of a folder or tar archive of prediction files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        required=True,
        metavar="DIR|TAR",
        help="folder or tar(.gz) archive of <event>/<image>.txt files: line 1 image name, line 2 "
        "N, then N lines 'x y w h score' (pixels, xywh with w = x2 - x1)",
    )
    parser.add_argument(
        "--gt",
        required=True,
        metavar="DIR",
        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (or the path "
        "of one of them)",
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="evaluate only the ground-truth images that have a prediction file (default: every "
        "image must have one)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of the table"
    )
    parser.add_argument(
        "--out", metavar="FILE.json", help="also write the JSON summary with the PR curves here"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the PR curves (needs the 'plot' extra)"
    )
    parser.add_argument(
        "--no-count-check",
        action="store_true",
        help="accept files whose line 2 disagrees with their number of rows",
    )
    parser.add_argument(
        "--iou",
        type=float,
        default=0.5,
        metavar="T",
        help="IoU threshold of a match (protocol: 0.5)",
    )
    parser.add_argument(
        "--allow-inverted",
        action="store_true",
        help="accept rows with a negative width or height (a detector's inverted boxes, as "
        "`damofd eval` writes them; the protocol counts them as false positives)",
    )
    add_size_arguments(parser)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--by-size [SETTING]`` and ``--size-score-thr`` (also used by ``damofd eval``)."""
    parser.add_argument(
        "--by-size",
        nargs="?",
        const="hard",
        choices=("easy", "medium", "hard"),
        metavar="SETTING",
        help="also print the recall of the setting's faces (default hard) per face size "
        "(sqrt(w*h) px), with the mean best IoU: where the detector fails",
    )
    parser.add_argument(
        "--size-score-thr",
        type=float,
        default=0.5,
        metavar="T",
        help="score a prediction needs to find a face in --by-size (default 0.5)",
    )


def run(args: argparse.Namespace) -> int:
    from damofd.evaluation.ground_truth import load_wider_gt
    from damofd.evaluation.plot import plot_pr_curves, require_matplotlib
    from damofd.evaluation.predictions import read_predictions
    from damofd.evaluation.size_recall import recall_by_size
    from damofd.evaluation.widerface import evaluate_wider
    from damofd.io import atomic_write_json, ensure_writable_file

    # fail before the work, not after it
    if args.out:
        ensure_writable_file(args.out, "--out", "ap.json")
    if args.plot:
        require_matplotlib()
        ensure_writable_file(args.plot, "--plot", "pr.png")
    t0 = time.perf_counter()
    gt = load_wider_gt(args.gt)  # read once for the AP and --by-size
    t1 = time.perf_counter()
    preds = read_predictions(
        args.pred, check_count=not args.no_count_check, allow_inverted=args.allow_inverted
    )
    t2 = time.perf_counter()
    result = evaluate_wider(preds, gt, subset=args.subset, iou_thresh=args.iou)
    result.timings.update(read_gt=t1 - t0, read_predictions=t2 - t1)
    by_size = None
    if args.by_size:
        by_size = recall_by_size(
            preds, gt, setting=args.by_size, score_thr=args.size_score_thr,
            iou_thresh=args.iou, subset=args.subset,
        )  # fmt: skip
    summary = result.to_dict()
    if by_size is not None:
        summary["by_size"] = by_size.to_dict()
    summary["pred"] = str(args.pred)
    summary["gt"] = str(args.gt)
    if args.out:
        full = result.to_dict(curves=True)
        full.update(pred=str(args.pred), gt=str(args.gt))
        if by_size is not None:
            full["by_size"] = by_size.to_dict()
        atomic_write_json(args.out, full)
    if args.plot:
        plot_pr_curves(result, args.plot, title=f"WIDER FACE val: {args.pred}")
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        t = result.timings
        sys.stdout.write(
            result.table() + f"\ntime: read ground truth {t['read_gt']:.2f} s, predictions "
            f"{t['read_predictions']:.2f} s, evaluate {t['evaluate']:.2f} s\n"
        )
        if by_size is not None:
            sys.stdout.write(by_size.table() + "\n")
        if args.out:
            sys.stdout.write(f"wrote {args.out}\n")
        if args.plot:
            sys.stdout.write(f"wrote {args.plot}\n")
    return 0
