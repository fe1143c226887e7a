"""``damofd anonymize``: hide faces in photos and videos (videos with face tracking).

Examples::

    damofd anonymize photo.jpg --out hidden                    # Gaussian blur, bundled model
    damofd anonymize photos/ clip.mp4 --out hidden --mode pixelate --box-scale 1.4
    damofd anonymize dashcam.mp4 --out hidden --mode solid --keep-frames 10 --score-thr 0.3

Images are written under OUT with their names (folder structure kept); videos as OUT/<name>.mp4
(same fps and size, no audio). ``OUT/anonymized.jsonl`` lists every image and video frame with
the hidden boxes; for videos each box carries its track id, and a face missed by the detector is
kept hidden for ``--keep-frames`` frames at its predicted position.
"""

from __future__ import annotations

import argparse
import json
import sys

from damofd.cli._types import non_negative_int, positive_float, score_threshold
from damofd.engine.inputs import collect_files

HELP = "hide faces in photos and videos (blur, pixelate, solid, mask; video face tracking)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from damofd.inference.anonymize import MODES

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, videos or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--mode", choices=MODES, default="blur", help="how faces are hidden")
    parser.add_argument(
        "--box-scale", type=positive_float, default=1.3, help="enlarge each box (1.3)"
    )
    parser.add_argument(
        "--score-thr", type=score_threshold, default=0.4,
        help="score threshold (0.4: hiding a non-face costs less than missing a face)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-frames", type=non_negative_int, default=5,
        help="video: keep a lost face hidden this many frames (5)",
    )  # fmt: skip
    parser.add_argument("--model", help="model (default: the bundled default model)")
    parser.add_argument("--onnx", metavar="FILE", help="an ONNX detector file")


def run(args: argparse.Namespace) -> int:
    from damofd.errors import ConfigError, InputError
    from damofd.inference import FaceDetector
    from damofd.inference.anonymize import anonymize_image, anonymize_video
    from damofd.inference.draw import write_image
    from damofd.inference.image_io import IMAGE_EXTENSIONS, load_image
    from damofd.inference.video import VIDEO_EXTENSIONS
    from damofd.io import atomic_write_text, ensure_writable_dir

    if args.onnx and args.model:
        raise ConfigError("give --model or --onnx, not both")
    out = ensure_writable_dir(args.out, "--out")
    det = FaceDetector.from_pretrained(args.onnx or args.model, score_thr=args.score_thr)
    items = collect_files(args.inputs, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    records: list[str] = []
    n_images = n_videos = n_faces = n_failed = 0
    for path, rel, _ in items:
        if path.suffix.lower() in VIDEO_EXTENSIONS:

            def on_frame(i: int, shown, _path=path) -> None:
                boxes = [{"track": t.id, "box": t.box.tolist(), "score": t.score,
                          "predicted": t.misses > 0} for t in shown]  # fmt: skip
                records.append(json.dumps({"path": str(_path), "frame": i, "faces": boxes}))

            try:
                summary = anonymize_video(
                    det, path, out / rel.with_suffix(".mp4"), mode=args.mode,
                    box_scale=args.box_scale, keep_frames=args.keep_frames, on_frame=on_frame,
                )  # fmt: skip
            except InputError as e:
                n_failed += 1
                sys.stderr.write(f"damofd anonymize: skipped {e}\n")
                continue
            n_videos += 1
            n_faces += summary.faces
            sys.stdout.write(f"{path}: {summary.frames} frames -> {summary.output}\n")
            continue
        try:
            img = load_image(path)
        except InputError as e:
            n_failed += 1
            sys.stderr.write(f"damofd anonymize: skipped {e}\n")
            continue
        res = det.predict(img)[0]
        target = out / rel
        write_image(target, anonymize_image(img, res.boxes, mode=args.mode,
                                            box_scale=args.box_scale))  # fmt: skip
        records.append(json.dumps({"path": str(path), "output": str(target),
                                   "boxes": res.boxes.astype(float).tolist()}))  # fmt: skip
        n_images += 1
        n_faces += len(res)
        sys.stdout.write(f"{path}: {len(res)} face{'s' if len(res) != 1 else ''} hidden\n")
    atomic_write_text(out / "anonymized.jsonl", "".join(r + "\n" for r in records))
    sys.stderr.write(
        f"damofd anonymize: {n_images} images, {n_videos} videos, {n_faces} faces, {n_failed} "
        f"failed ({args.mode}); model {det.model_label}\n"
    )
    return 1 if n_failed else 0
