"""``damofd data``: convert, check and visualise WIDER FACE training annotations (labelv2).

Sub-commands::

    damofd data convert --from wider-txt|wider-mat|retinaface SRC --out FILE [--images DIR]
    damofd data check FILE [--images DIR]
    damofd data show LABELS [--images DIR] --out DIR [-n 8] [--seed S] [--model NAME]
    damofd data subset LABELS --out FILE [--events 1,4] [--include/--exclude LIST]
        [--fraction F --seed S] [--limit N] [--names-out FILE] [--rest-out FILE]

Examples::

    damofd data convert --from retinaface train/label.txt --images train/images --out labelv2.txt
    damofd data check labelv2.txt --images WIDER_train/images
    damofd data subset labelv2.txt --fraction 0.05 --seed 0 --out holdout.txt --rest-out train.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from damofd.cli._types import unit_fraction

HELP = "convert and check WIDER FACE annotations (labelv2), show augmented samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    sub.required = True
    _add_convert_parser(sub)
    _add_check_parser(sub)
    _add_show_parser(sub)
    _add_subset_parser(sub)
    _add_shrink_parser(sub)


def _add_convert_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``damofd data convert``: WIDER txt / .mat / RetinaFace label.txt → labelv2."""
    conv = sub.add_parser(
        "convert",
        help="convert WIDER txt / WIDER .mat / RetinaFace label.txt to labelv2",
        description="Convert an annotation file to labelv2 (boxes xyxy with x2 = x + w). "
        "Image sizes are read from the image files when --images is given.",
    )
    conv.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=("wider-txt", "wider-mat", "retinaface"),
        help="source format: WIDER wider_face_*_bbx_gt.txt, WIDER wider_face_*.mat, or a "
        "RetinaFace label.txt (keypoints kept)",
    )
    conv.add_argument("src", help="source annotation file")
    conv.add_argument(
        "--out", required=True, metavar="FILE", help="the labelv2 file to write (atomically)"
    )
    conv.add_argument("--images", help="image folder: read each image's size from its header")
    conv.add_argument(
        "--invalid",
        choices=("keep", "ignore", "drop"),
        default="keep",
        help="faces WIDER flags invalid: keep them as normal boxes (insightface, default), "
        "write them as ignore regions, or drop them",
    )
    conv.add_argument(
        "--drop-empty",
        action="store_true",
        help="drop zero-area boxes (w <= 0 or h <= 0), as insightface's val labelv2.txt",
    )
    conv.add_argument(
        "--skip-missing",
        action="store_true",
        help="with --images: drop images that are not on disk instead of failing",
    )
    conv.set_defaults(_data_run=_run_convert, _error_prefix="damofd data convert")


def _add_check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``damofd data check``: every malformed line and missing image of a labelv2 file."""
    chk = sub.add_parser(
        "check",
        help="report every malformed line and missing image of a labelv2 file",
        description="Parse a labelv2 file and report every problem with its line number; with "
        "--images also every missing, truncated or undecodable image and header sizes that "
        "differ from the files. "
        "Exit status 1 when there is any error.",
    )
    chk.add_argument("labels", help="labelv2 file (or a dataset folder holding labelv2.txt)")
    chk.add_argument("--images", help="image folder (default: images/ next to the file if any)")
    chk.add_argument(
        "--no-size-check", action="store_true", help="do not compare header sizes with the files"
    )
    chk.add_argument("-q", "--quiet", action="store_true", help="print errors only, no warnings")
    chk.add_argument(
        "--no-decode",
        action="store_true",
        help="check each image's structure only (truncation), without decoding its pixels",
    )
    chk.set_defaults(_data_run=_run_check, _error_prefix="damofd data check")


def _add_show_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``damofd data show``: augmented training samples with boxes and keypoints drawn."""
    show = sub.add_parser(
        "show",
        help="write augmented training samples with boxes and keypoints drawn",
        description="Run the training augmentation on a few images and write them (JPEG) with "
        "the resulting boxes (green), ignore boxes (grey) and keypoints drawn.",
    )
    show.add_argument("labels", help="labelv2 file, dataset folder or ModelScope split folder")
    show.add_argument("--images", help="image folder (default: images/ next to the labels)")
    show.add_argument(
        "--out", required=True, metavar="DIR", help="output folder for the sample images"
    )
    show.add_argument("-n", type=int, default=8, help="number of samples (default 8)")
    show.add_argument("--seed", type=int, default=0, help="seed of the selection and augmentation")
    show.add_argument(
        "--model",
        default="damofd-2.5g",
        help="augmentation recipe of this zoo model (default damofd-2.5g: crop choice "
        "0.3..2.0, no border clipping)",
    )
    show.add_argument("--no-photometric", action="store_true", help="skip colour distortion")
    show.set_defaults(_data_run=_run_show, _error_prefix="damofd data show")


def _add_subset_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``damofd data subset``: part of a labelv2 file (events, names, fraction, first N)."""
    sub_ = sub.add_parser(
        "subset",
        help="write part of a labelv2 file: events, a name list, a seeded fraction, the first N",
        description="Select images of a labelv2 file, in this order: --events, --include, "
        "--exclude, a seeded random --fraction, the first --limit. The selection keeps the file "
        "order; --rest-out writes the images not selected (e.g. a held-out split and the "
        "training set from one command).",
        epilog="examples:\n"
        "  damofd data subset labelv2.txt --events 1,4 --limit 200 --out small.txt\n"
        "  damofd data subset labelv2_kps.txt --fraction 0.05 --seed 0 --out holdout.txt "
        "--names-out holdout_names.txt --rest-out train_95.txt\n"
        "  damofd data subset labelv2.txt --exclude holdout_names.txt --out train_95.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub_.add_argument("labels", help="labelv2 file (or a dataset folder holding labelv2.txt)")
    sub_.add_argument("--out", required=True, metavar="FILE", help="labelv2 file to write")
    sub_.add_argument(
        "--events", metavar="E,E", help="WIDER event numbers to keep, comma-separated (1,4,13)"
    )
    sub_.add_argument("--include", metavar="LIST", help="file of image names to keep")
    sub_.add_argument("--exclude", metavar="LIST", help="file of image names to drop")
    sub_.add_argument(
        "--fraction", type=unit_fraction, metavar="F", help="seeded random fraction (0, 1]"
    )
    sub_.add_argument("--seed", type=int, default=0, help="seed of --fraction (default 0)")
    sub_.add_argument("--limit", type=int, metavar="N", help="keep at most the first N images")
    sub_.add_argument("--names-out", metavar="FILE", help="also write the selected image names")
    sub_.add_argument(
        "--rest-out", metavar="FILE", help="also write the images not selected (labelv2)"
    )
    sub_.add_argument("--force", action="store_true", help="replace existing output files")
    sub_.set_defaults(_data_run=_run_subset, _error_prefix="damofd data subset")


def run(args: argparse.Namespace) -> int:
    return int(args._data_run(args))


def _run_subset(args: argparse.Namespace) -> int:
    from damofd.data.labelv2 import format_labelv2, read_labelv2
    from damofd.data.subset import read_name_list, select_images
    from damofd.errors import ConfigError, InputError
    from damofd.io import atomic_write_text, ensure_writable_file

    labels = Path(args.labels)
    if labels.is_dir():
        labels = labels / "labelv2.txt"
    outs = [("--out", args.out), ("--names-out", args.names_out), ("--rest-out", args.rest_out)]
    for flag, path in outs:
        if path is None:
            continue
        ensure_writable_file(path, flag, "subset.txt")
        if Path(path).exists() and not args.force:
            raise InputError(f"{flag} {path} exists; pass --force to replace it")
        if Path(path).resolve() == labels.resolve():
            raise ConfigError(f"{flag} {path} is the input file")
    events = None
    if args.events:
        try:
            events = [int(e) for e in args.events.split(",") if e.strip()]
        except ValueError:
            raise ConfigError(
                f"--events: expected numbers such as 1,4,13, got {args.events!r}"
            ) from None
    images = read_labelv2(labels)
    sel = select_images(
        images,
        events=events,
        include=None if args.include is None else read_name_list(args.include),
        exclude=None if args.exclude is None else read_name_list(args.exclude),
        fraction=args.fraction,
        seed=args.seed,
        limit=args.limit,
    )
    if not sel.selected:
        raise InputError(f"{labels}: the selection is empty; nothing written")
    atomic_write_text(args.out, format_labelv2(sel.selected))
    faces = sum(i.num_objects for i in sel.selected)
    msg = f"wrote {args.out}: {len(sel.selected)} of {len(images)} images, {faces} boxes"
    if args.names_out:
        atomic_write_text(args.names_out, "".join(i.name + "\n" for i in sel.selected))
        msg += f"; names in {args.names_out}"
    if args.rest_out:
        atomic_write_text(args.rest_out, format_labelv2(sel.rest))
        msg += f"; the other {len(sel.rest)} images in {args.rest_out}"
    print(msg)
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    from damofd.data.convert import MissingImagesError, convert
    from damofd.data.labelv2 import write_labelv2
    from damofd.io import ensure_writable_file

    ensure_writable_file(args.out, "--out", "labelv2.txt")  # before reading every image header
    try:
        result = convert(
            args.source_format,
            args.src,
            image_dir=args.images,
            invalid=args.invalid,
            drop_empty=args.drop_empty,
            skip_missing=args.skip_missing,
        )
    except MissingImagesError as e:
        raise e.with_hint("pass --skip-missing to drop them") from None
    out = write_labelv2(args.out, result.images)
    n_boxes = sum(i.num_objects for i in result.images)
    n_kps = sum(int(i.has_keypoints.sum()) for i in result.images)
    n_ign = sum(int(i.ignore.sum()) for i in result.images)
    msg = (
        f"wrote {out}: {len(result.images)} images, {n_boxes} boxes "
        f"({n_ign} ignore, {n_kps} with keypoints)"
    )
    if result.skipped_missing:
        msg += f"; skipped {len(result.skipped_missing)} images missing under {args.images}"
    if args.images is None:
        msg += "; no image sizes in the headers (pass --images to add them)"
    print(msg)
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from damofd.data.check import check_labelv2

    labels = Path(args.labels)
    if labels.is_dir():
        labels = labels / "labelv2.txt"
    images = args.images
    if images is None and (labels.parent / "images").is_dir():
        images = labels.parent / "images"
    report = check_labelv2(
        labels, images, check_sizes=not args.no_size_check, decode=not args.no_decode
    )
    for issue in report.issues:
        if args.quiet and issue.severity != "error":
            continue
        print(issue)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


def _run_show(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from damofd.data.dataset import WiderFaceDataset
    from damofd.data.transforms import AugmentConfig
    from damofd.data.visualize import draw_sample
    from damofd.errors import InputError
    from damofd.io import atomic_write_bytes, ensure_writable_dir

    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    cfg = AugmentConfig.for_model(args.model, photometric=not args.no_photometric)
    ds = WiderFaceDataset(args.labels, args.images, config=cfg, seed=args.seed)
    ds.validate()
    out_dir = ensure_writable_dir(args.out)
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(ds), size=min(args.n, len(ds)), replace=False)
    for k, idx in enumerate(sorted(int(i) for i in picks)):
        s = ds.augment(idx, normalize=False)
        img = draw_sample(s.img, s.bboxes, s.keypoints, s.bboxes_ignore)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise InputError("JPEG encoding failed")
        stem = Path(ds.records[idx].name).stem
        path = out_dir / f"sample_{k:03d}_{stem}.jpg"
        atomic_write_bytes(path, buf.tobytes())
        print(
            f"{path}: {ds.records[idx].name} patch={s.patch} flipped={s.flipped} "
            f"boxes={len(s.bboxes)}"
        )
    return 0


def _add_shrink_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``damofd data shrink``: images scaled and re-encoded, labels scaled to match."""
    shr = sub.add_parser(
        "shrink",
        help="scale a labelv2 set's images and labels by one factor (JPEG) to carry it elsewhere",
        description="Write OUT/images/<name> (each image scaled by --scale, JPEG --quality) and "
        "OUT/labelv2.txt (boxes and keypoints scaled to match). The face sizes at the network's "
        "input stay the same (training crops are relative to the image); a rerun keeps images "
        "already written.",
        epilog="example:\n  damofd data shrink train_95.txt --images WIDER_train/images "
        "--scale 0.7 --quality 60 --out gpu_data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shr.add_argument("labels", help="labelv2 file (or a dataset folder holding labelv2.txt)")
    shr.add_argument("--images", help="image folder (default: images/ next to the file)")
    shr.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    shr.add_argument("--scale", type=float, default=0.75, help="size factor in (0, 1] (0.75)")
    shr.add_argument("--quality", type=int, default=80, help="JPEG quality 1..100 (80)")
    shr.add_argument("--force", action="store_true", help="replace an existing OUT/labelv2.txt")
    shr.set_defaults(_data_run=_run_shrink, _error_prefix="damofd data shrink")


def _run_shrink(args: argparse.Namespace) -> int:
    from damofd.data.labelv2 import read_labelv2
    from damofd.data.layout import resolve_dataset
    from damofd.data.shrink import shrink_dataset

    paths = resolve_dataset(args.labels, image_dir=args.images)
    report = shrink_dataset(
        read_labelv2(paths.labels), paths.images, args.out, scale=args.scale,
        quality=args.quality, force=args.force,
    )  # fmt: skip
    print(report)
    return 0
