"""``damofd export``: export a detector to ONNX (official batched SCRFD layout).

Examples::

    damofd export --out damofd_0.5g_kps_480x640.onnx --shape 480 640   # the bundled model
    damofd export damofd-0.5g-kps --weights epoch_640.pth --out damofd_0.5g_kps.onnx
    damofd export work_dirs/run1/latest.pth --out run1.onnx --simplify
    damofd export scrfd-2.5g-kps --weights det_2.5g.onnx --out det_2.5g_batched.onnx
    damofd export damofd-0.5g --weights e.pth --out d05_480x640.onnx --shape 480 640 --batch 4

Without ``--shape`` the file has dynamic batch, height and width (traced at 640×640); with
``--shape H W`` every axis is fixed (add ``--dynamic`` to keep them free and only trace at H×W).
"""

from __future__ import annotations

import argparse
import json
import sys

from damofd.errors import ConfigError

HELP = "export a detector to ONNX (input input.1, outputs score_8 … kps_32, (B, N, C))"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="zoo name (bundled weights, or with --weights), damofd .pth checkpoint, ONNX file "
        "(re-export) or ModelScope folder (default: the bundled default model)",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help=".pth checkpoint or ONNX file for a zoo name"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch/height/width axes (the default without --shape)",
    )
    parser.add_argument(
        "--shape",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="input height and width, multiples of 32 (fixes the axes unless --dynamic)",
    )
    parser.add_argument(
        "--batch", type=int, default=1, metavar="N", help="batch of the (fixed) input (default 1)"
    )
    parser.add_argument("--opset", type=int, default=11, metavar="N", help="ONNX opset (≥ 11)")
    parser.add_argument(
        "--simplify", action="store_true", help="simplify with onnxslim (damofd[simplify])"
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="allow a zoo name without --weights (untrained weights; for timing and tests)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the onnxruntime-vs-PyTorch check before writing",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 model (static QDQ quantisation, ONNX Runtime), calibrated on --calib",
    )
    parser.add_argument("--calib", metavar="DIR", help="folder of calibration photos (--int8)")
    parser.add_argument(
        "--calib-images",
        type=int,
        default=64,
        metavar="N",
        help="photos used for calibration, evenly spaced over --calib (64)",
    )
    parser.add_argument(
        "--int8-activations",
        choices=("u8", "s8"),
        default="u8",
        help="activation type of --int8: u8 (default; the fast u8×s8 path of x86 CPUs) or s8",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def _run_int8(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from damofd.export.onnx import export_onnx_detailed
    from damofd.export.quantize import calibration_images, quantize_int8

    if not args.calib:
        raise ConfigError("--int8 needs --calib DIR, a folder of photos like those you will detect")
    if args.calib_images < 1:
        raise ConfigError(f"--calib-images must be >= 1, got {args.calib_images}")
    images = calibration_images(args.calib, args.calib_images)
    src = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if src.suffix.lower() == ".onnx" and src.is_file() and args.weights is None:
            fp32 = src  # quantise an existing float ONNX file as it is
        else:
            fp32 = Path(tmp) / "fp32.onnx"
            export_onnx_detailed(
                args.model,
                fp32,
                weights=args.weights,
                dynamic=bool(args.dynamic or args.shape is None),
                shape=args.shape,
                batch=args.batch,
                opset=max(args.opset, 13),  # per-channel QDQ needs opset 13
                verify=not args.no_verify,
                allow_random=args.random_init,
            )
        out = quantize_int8(fp32, args.out, images, activations=args.int8_activations)
    size = out.stat().st_size / 1e6
    sys.stdout.write(
        f"wrote {out} ({size:.2f} MB, int8 QDQ, {args.int8_activations} activations, calibrated "
        f"on {len(images)} images from {args.calib})\n"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from damofd.export.onnx import export_onnx_detailed
    from damofd.io import ensure_writable_file
    from damofd.models.bundled import DEFAULT_MODEL
    from damofd.models.checkpoint import ArchitectureNotRecordedError

    ensure_writable_file(args.out, "--out", "model.onnx")  # before loading and tracing
    if args.model is None:
        args.model = DEFAULT_MODEL
    if args.int8:
        return _run_int8(args)
    if args.calib:
        raise ConfigError("--calib is for --int8")
    dynamic = bool(args.dynamic or args.shape is None)
    try:
        res = export_onnx_detailed(
            args.model,
            args.out,
            weights=args.weights,
            dynamic=dynamic,
            shape=args.shape,
            batch=args.batch,
            opset=args.opset,
            simplify=args.simplify,
            verify=not args.no_verify,
            allow_random=args.random_init,
        )
    except ArchitectureNotRecordedError as e:
        raise e.with_hint(
            f"name its zoo architecture, e.g. `damofd export damofd-10g --weights {e.source}`"
        ) from None
    if args.json:
        sys.stdout.write(json.dumps(res.to_dict(), indent=2) + "\n")
        return 0
    b, _, h, w = res.input_shape
    axes = "dynamic batch/height/width" if res.dynamic else f"fixed {b}x3x{h}x{w}"
    from damofd.models.zoo import bundled_name

    lines = []
    if args.weights is None and not args.random_init and bundled_name(args.model):
        lines.append(f"model {bundled_name(args.model)} (bundled weights)")
    lines += [
        f"wrote {res.path} ({res.num_bytes / 1e6:.2f} MB, opset {res.opset}, {axes}"
        f"{', simplified' if res.simplified else ''}, {res.seconds:.1f} s)",
        f"input  input.1 {b}x3x{h}x{w} (traced)",
    ]
    lines += [
        f"output {n} {'x'.join(str(d) for d in s)}"
        for n, s in zip(res.output_names, res.output_shapes)
    ]
    if res.max_abs_diff is not None:
        lines.append(f"onnxruntime vs PyTorch: max |diff| {res.max_abs_diff:.2e}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
