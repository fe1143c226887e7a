"""``damofd align``: aligned face crops (ArcFace 112×112 convention) from the 5 keypoints.

Examples::

    damofd align photo.jpg --out crops                 # bundled model, 112×112 crops
    damofd align photos/ --out crops --size 128 --margin 0.2
    damofd align photos/ --out crops --onnx det_500m.onnx --score-thr 0.6

Writes ``OUT/<image stem>_face<k>.jpg`` (k = the face's rank by score, folder structure kept) and
``OUT/alignments.jsonl``: one line per crop with the source, the face index, score, box and the
2×3 matrix mapping source pixels to crop pixels. Faces without keypoints (a model without a
keypoint branch) are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import sys

from damofd.cli._types import positive_int, score_threshold
from damofd.engine.inputs import collect_files

HELP = "aligned face crops (ArcFace 112x112) from the five keypoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the crops")
    parser.add_argument("--size", type=positive_int, default=112, help="crop side in px (112)")
    parser.add_argument(
        "--margin", type=float, default=0.0, help="extra context, fraction of the crop (0)"
    )
    parser.add_argument("--model", help="model (default: the bundled default model)")
    parser.add_argument("--onnx", metavar="FILE", help="an ONNX detector file")
    parser.add_argument(
        "--score-thr", type=score_threshold, default=0.5, help="score threshold (0.5)"
    )
    parser.add_argument("--max-faces", type=positive_int, help="at most N faces per image")


def run(args: argparse.Namespace) -> int:
    from damofd.errors import ConfigError, InputError
    from damofd.inference import FaceDetector
    from damofd.inference.align import align_faces
    from damofd.inference.draw import write_image
    from damofd.inference.image_io import IMAGE_EXTENSIONS, load_image
    from damofd.io import ensure_writable_dir

    if not 0.0 <= args.margin < 1.0:
        raise ConfigError(f"--margin must be in [0, 1), got {args.margin}")
    if args.onnx and args.model:
        raise ConfigError("give --model or --onnx, not both")
    out = ensure_writable_dir(args.out, "--out")
    det = FaceDetector.from_pretrained(
        args.onnx or args.model, score_thr=args.score_thr, max_faces=args.max_faces or 0
    )
    items = collect_files(args.inputs, IMAGE_EXTENSIONS)
    n_crops = n_skipped = n_failed = 0
    lines = []
    for path, rel, _ in items:
        try:
            img = load_image(path)
        except InputError as e:
            n_failed += 1
            sys.stderr.write(f"damofd align: skipped {e}\n")
            continue
        res = det.predict(img)[0]
        crops = align_faces(img, res, size=args.size, margin=args.margin)
        n_skipped += len(res) - len(crops)
        for c in crops:
            name = out / rel.parent / f"{rel.stem}_face{c.index}.jpg"
            write_image(name, c.image)
            lines.append(
                json.dumps(
                    {
                        "source": str(path),
                        "crop": str(name),
                        "face": c.index,
                        "score": c.score,
                        "box": res.boxes[c.index].astype(float).tolist(),
                        "matrix": c.matrix.tolist(),
                        "size": args.size,
                    }
                )
            )
            n_crops += 1
        sys.stdout.write(f"{path}: {len(crops)} aligned face{'s' if len(crops) != 1 else ''}\n")
    from damofd.io import atomic_write_text

    atomic_write_text(out / "alignments.jsonl", "".join(x + "\n" for x in lines))
    sys.stderr.write(
        f"damofd align: {len(items)} images, {n_crops} crops, {n_skipped} faces without "
        f"keypoints skipped, {n_failed} failed; model {det.model_label}; "
        f"{out / 'alignments.jsonl'}\n"
    )
    return 1 if n_failed else 0
