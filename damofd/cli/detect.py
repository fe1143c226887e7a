"""``damofd detect``: detect faces in images, folders, videos or a webcam.

Examples::

    damofd detect photo.jpg                       # the bundled default model, onnxruntime
    damofd detect photo.jpg --onnx det_500m.onnx
    damofd detect photos/ --onnx det_500m.onnx --json > faces.jsonl
    damofd detect photos/ clip.mp4 --model damofd-0.5g-kps --weights e640.pth --save-vis
    damofd detect --camera 0 --onnx det_500m.onnx --save-vis --max-frames 300

Folders are searched recursively for images and videos. Unreadable inputs (and folders holding no
image or video) are reported on stderr and skipped; the final summary (stderr) says how many
failed, and the exit status is 1 when any did (2 for a usage error). ``--json`` prints one JSON
object per image (or video frame) on stdout: ``{"path", "image_size", "scores", "boxes",
"keypoints"}`` (+ ``"frame"`` for videos, ``"error"`` for failures); boxes are
``[x1, y1, x2, y2]`` in original pixels.

Without a model option the bundled default detector (``damofd.models.bundled.DEFAULT_MODEL``,
trained by damofd and shipped in the package) runs on onnxruntime, offline; ``--model NAME``
of another model with bundled weights (``damofd zoo`` marks them) does the same. ``--onnx
FILE`` runs onnxruntime; ``--model``/``--weights`` run PyTorch (``--backend onnx`` exports the
model to a temporary ONNX file first, like ``damofd eval``).

INPUTs may also be glob patterns, text files listing paths or URIs (``.txt``/``.lst``) and
Parquet/CSV tables with a path column (``--path-column``). ``--engine ray`` runs the images on
the actors of a local Ray instance or of a cluster (``--ray-address``), with the same results,
resumable, written under ``--out DIR/detections/`` (:mod:`damofd.engine.ray`, docs/ray.md;
``pip install 'damofd[ray]'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from damofd.cli._types import (
    nms_threshold,
    non_negative_int,
    positive_int,
    positive_seconds,
    score_threshold,
)
from damofd.engine.build import build_detector
from damofd.engine.inputs import (
    DEFAULT_OUT,
    OutputNamer,
    detection_record,
    expand_inputs,
    recorded_paths,
)
from damofd.errors import ConfigError, InputError

HELP = "detect faces in images, folders, videos or a webcam"

DEFAULT_CLI_SCORE_THR = 0.5
JSONL_NAME = "detections.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders (recursive), video files, http(s) URLs, a camera index, glob "
        "patterns, .txt lists of paths/URIs or .parquet/.csv tables with a path column",
    )
    _add_model_args(parser)
    _add_output_args(parser)
    _add_input_args(parser)
    _add_engine_args(parser)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model (``--model``/``--weights`` or ``--onnx``), backend, thresholds, size, runtime."""
    src = parser.add_argument_group("model (one of; default: the bundled default model)")
    src.add_argument(
        "--model",
        help="zoo name (bundled weights, or with --weights), ModelScope id or folder, or a "
        ".pth/.onnx path",
    )
    src.add_argument("--weights", help=".pth checkpoint (or ONNX file) for --model")
    src.add_argument("--onnx", help="ONNX file: ours or an official SCRFD/insightface one")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        help="inference backend (default: onnx for an ONNX file, torch otherwise; onnx with a "
        "PyTorch model exports it to a temporary ONNX file first)",
    )
    parser.add_argument(
        "--score-thr",
        type=score_threshold,
        default=DEFAULT_CLI_SCORE_THR,
        help=f"score threshold in [0, 1] (default {DEFAULT_CLI_SCORE_THR}; WIDER evaluation "
        "uses 0.02)",
    )
    parser.add_argument(
        "--nms-thr",
        type=nms_threshold,
        help="NMS IoU threshold in (0, 1] (default: the protocol's, 0.45 / 0.4)",
    )
    parser.add_argument(
        "--max-faces",
        type=non_negative_int,
        default=0,
        help="keep at most N faces per image (0: all)",
    )
    parser.add_argument(
        "--protocol",
        default="vga",
        help="vga (default), original, insightface, or a size HxW such as 480x640",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per forward pass"
    )
    add_runtime_arguments(parser)
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        help="onnxruntime sessions sharing each batch (data parallel; default 2 on the CPU "
        "with ≥ 2 threads; 0: one session takes the whole batch)",
    )


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    """Where and how results go: ``--out``, drawings, resuming, JSON lines, verbosity."""
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"output folder: {JSONL_NAME} (written as each image finishes) and drawings "
        f"(default {DEFAULT_OUT} with --save-vis)",
    )
    parser.add_argument(
        "--save-vis", action="store_true", help="write annotated images/videos into --out"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"start {JSONL_NAME} afresh in --out (default: resume, skipping recorded images)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines on stdout")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print each face's box and score under its image (--json for everything)",
    )


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    """Videos/cameras (frames, tracking); input limits, URL timeout, progress bar, table column."""
    parser.add_argument("--camera", type=non_negative_int, help="read from this camera index")
    parser.add_argument(
        "--max-frames", type=positive_int, help="stop videos/cameras after N frames (N ≥ 1)"
    )
    parser.add_argument(
        "--track",
        action="store_true",
        help="videos/cameras: follow faces across frames; records get 'tracks' with ids",
    )
    parser.add_argument(
        "--keep-frames",
        type=non_negative_int,
        default=5,
        help="with --track: keep a lost face's track this many frames (5)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="refuse images larger than N pixels (width × height; default 178,956,970, PIL's "
        "decompression-bomb limit)",
    )
    parser.add_argument(
        "--url-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for an http(s) URL",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (images and videos)"
    )
    parser.add_argument(
        "--path-column",
        default="path",
        metavar="NAME",
        help="the column of paths/URIs in a Parquet/CSV INPUT table (default path)",
    )


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    """The ``engine`` group: this process, or actors on Ray Data (``--engine ray``)."""
    eng = parser.add_argument_group(
        "engine (--engine ray: many images on Ray Data, pip install 'damofd[ray]'; docs/ray.md)"
    )
    eng.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process; ray: actors of a local Ray instance or a cluster",
    )
    eng.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster (auto, HOST:PORT or ray://HOST:10001); default: "
        "$RAY_ADDRESS if set, else a local Ray instance sized to this machine",
    )
    eng.add_argument(
        "--num-actors",
        type=num_actors,
        metavar="N|MIN,MAX",
        help="detector actors: N, or an autoscaling pool MIN,MAX (default: one per "
        "--cpus-per-actor CPUs, or per --gpus-per-actor GPUs, of the cluster)",
    )
    eng.add_argument(
        "--cpus-per-actor",
        type=positive_float,
        default=1.0,
        metavar="C",
        help="CPUs reserved per actor (default 1); its onnxruntime session gets max(1, C) "
        "threads unless --threads says otherwise",
    )
    eng.add_argument(
        "--gpus-per-actor",
        type=non_negative_float,
        default=0.0,
        metavar="G",
        help="GPUs per actor (default 0: CPU actors); > 0 runs the model on CUDA (PyTorch, or "
        "onnxruntime-gpu when installed)",
    )
    eng.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        help="result files under --out/detections/ (default jsonl: the records of "
        f"{JSONL_NAME}; parquet: one row per image)",
    )


def num_actors(text: str) -> int | tuple[int, int]:
    """``--num-actors``: ``N`` (N ≥ 1) or ``MIN,MAX`` (1 ≤ MIN ≤ MAX)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1 and values[0] >= 1:
        return values[0]
    if len(values) == 2 and 1 <= values[0] <= values[1]:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(
        f"expected N (≥ 1) or MIN,MAX with 1 ≤ MIN ≤ MAX, got {text!r}"
    )


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return v


#: flags of one engine only: (dest, flag, default)
_RAY_ONLY = (
    ("ray_address", "--ray-address", None),
    ("num_actors", "--num-actors", None),
    ("cpus_per_actor", "--cpus-per-actor", 1.0),
    ("gpus_per_actor", "--gpus-per-actor", 0.0),
    ("format", "--format", None),
)
_LOCAL_ONLY = (
    ("json", "--json", False),
    ("verbose", "-v", False),
    ("camera", "--camera", None),
    ("max_frames", "--max-frames", None),
    ("track", "--track", False),
)


def _check_engine_flags(args: argparse.Namespace) -> None:
    """:class:`ConfigError` for flags of the other engine."""
    if args.engine == "ray":
        given = [flag for dest, flag, default in _LOCAL_ONLY if getattr(args, dest) != default]
        if given:
            raise ConfigError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --engine "
                f"local only (--engine ray writes its records under --out and detects images, "
                f"not videos or cameras)"
            )
    else:
        given = [flag for dest, flag, default in _RAY_ONLY if getattr(args, dest) != default]
        if given:
            raise ConfigError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --engine "
                f"ray only; add --engine ray"
            )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--fp16`` (torch backend) and ``--threads`` (onnxruntime), shared by
    ``damofd detect`` and ``damofd eval``; :func:`refuse_torch_flags` checks the first two."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when present, else CPU), cpu, cuda, cuda:1 ...; the torch "
        "device, or onnxruntime's CUDA provider when onnxruntime-gpu is installed",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="half precision (torch backend on CUDA)"
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        metavar="N",
        help="onnxruntime intra-op threads (default or 0: one per core)",
    )


class _Outputs:
    """Output naming (no collisions), drawings and the JSON-lines record.

    ``detections.jsonl`` is appended to as each image finishes (one ``write`` per line under an
    exclusive ``flock``, then flushed), so a run killed by SIGINT, SIGTERM or SIGKILL keeps every
    record it finished, and two runs writing into one folder at the same time interleave whole
    lines and lose none. A rerun into a folder that already holds records resumes: images whose
    path is recorded without an error are skipped (``--force`` starts the file afresh).
    """

    def __init__(
        self, out_dir: Path | None, save_vis: bool, to_stdout: bool, *, force: bool = False
    ) -> None:
        self.out_dir = out_dir
        self.save_vis = save_vis
        self.to_stdout = to_stdout
        self._namer = OutputNamer(out_dir) if out_dir is not None else None
        self.done: set[str] = set()
        self.path: Path | None = None
        self._fd: int | None = None
        if out_dir is not None:
            from damofd.io import remove_stale_tmp

            # drawings left half-written by a killed run (not those of a run writing now)
            remove_stale_tmp(out_dir, min_age_s=600, recursive=True)
            self.path = out_dir / JSONL_NAME
            if force:
                self.path.unlink(missing_ok=True)
            elif self.path.is_file():
                self.done = recorded_paths(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def name_for(self, source: str, base: Path | None, suffix: str | None = None) -> Path:
        assert self._namer is not None
        return self._namer.name_for(source, base, suffix)

    def image_name_for(self, source: str, base: Path | None) -> Path:
        assert self._namer is not None
        return self._namer.image_name_for(source, base)

    def emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        if self.to_stdout:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        if self._fd is not None:
            data = (line + "\n").encode("utf-8")
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def finish(self) -> Path | None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return self.path


@dataclasses.dataclass
class _Counts:
    images: int = 0
    failed: int = 0
    faces: int = 0
    frames: int = 0


def _report_error(msg: str) -> None:
    sys.stderr.write(f"damofd detect: skipped {msg}\n")


def _print_result(src: str, res: Any, rec: dict[str, Any], verbose: bool) -> None:
    drawn = f" -> {rec['vis']}" if "vis" in rec else ""
    sys.stdout.write(f"{src}: {len(res)} face{'s' if len(res) != 1 else ''}{drawn}\n")
    if verbose:
        for k, face in enumerate(res.faces):
            x1, y1, x2, y2 = face.box
            sys.stdout.write(
                f"  face {k}: box [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}] score {face.score:.3f}\n"
            )


def _run_images(
    args: argparse.Namespace, det: Any, items: list[Any], outs: _Outputs, n: _Counts, bar: bool
) -> None:
    """Images first, in batches (streamed): one record each, drawings, printed lines."""
    from damofd.inference.draw import draw_faces

    images = [(it.source, it.base) for it in items if it.kind == "image"]
    progress = None
    if bar and len(images) > 1:
        from tqdm import tqdm

        progress = tqdm(total=len(images), unit="img", leave=False)
    for (src, base), res in zip(images, det.iter_predict(s for s, _ in images)):
        n.images += 1
        if progress is not None:
            progress.update(1)
        if res.error is not None:
            n.failed += 1
            _report_error(res.error)
            outs.emit(detection_record(res, src))
            continue
        n.faces += len(res)
        rec = detection_record(res, src)
        if outs.save_vis and outs.out_dir is not None:
            vis = outs.image_name_for(src, base)
            try:
                draw_faces(src, res, vis)
                rec["vis"] = str(vis)
            except InputError as e:
                _report_error(str(e))
        outs.emit(rec)
        if not args.json:
            _print_result(src, res, rec, args.verbose)
    if progress is not None:
        progress.close()


def _run_videos(
    args: argparse.Namespace, det: Any, items: list[Any], outs: _Outputs, n: _Counts, bar: bool
) -> None:
    """Then videos and cameras one by one: a record per frame (with track ids for --track)."""
    from damofd.inference.video import process_video

    for kind, src, base, _note in items:
        if kind not in ("video", "camera"):
            continue
        source: str | int = int(src) if kind == "camera" else src
        label = f"camera {src}" if kind == "camera" else src
        out_video = None
        if outs.save_vis and outs.out_dir is not None:
            out_video = (
                outs.name_for(f"camera_{src}.mp4", None)
                if kind == "camera"
                else outs.name_for(src, base, suffix=".mp4")
            )
        tracker = None
        if args.track:
            from damofd.inference.anonymize import FaceTracker

            tracker = FaceTracker(keep_frames=args.keep_frames)

        def on_frame(i: int, res: Any, _label: str = label, _tracker: Any = tracker) -> None:
            rec = {**res.to_dict(), "path": _label, "frame": i}
            if _tracker is not None:
                rec["tracks"] = [
                    {"track": t.id, "box": t.box.tolist(), "score": t.score,
                     "predicted": t.misses > 0}
                    for t in _tracker.update(res.boxes, res.scores)
                ]  # fmt: skip
            outs.emit(rec)

        try:
            summary = process_video(
                det, source, out_video, max_frames=args.max_frames, progress=bar,
                on_frame=on_frame,
            )  # fmt: skip
        except InputError as e:
            n.failed += 1
            _report_error(str(e))
            continue
        except KeyboardInterrupt:
            sys.stderr.write(f"damofd detect: {label}: interrupted\n")
            break
        n.frames += summary.frames
        n.faces += summary.faces
        if not args.json:
            extra = f" -> {summary.output}" if summary.output else ""
            sys.stdout.write(f"{label}: {summary.frames} frames, {summary.faces} faces{extra}\n")


def _summary(n: _Counts, items: list[Any], dt: float, model: str, skipped: int, jsonl: Any) -> str:
    n_videos = sum(1 for it in items if it.kind in ("video", "camera"))
    parts = [f"{n.images} image{'s' if n.images != 1 else ''}"]
    if n_videos:
        parts.append(f"{n_videos} video{'s' if n_videos != 1 else ''} ({n.frames} frames)")
    line = (
        f"damofd detect: {', '.join(parts)}, {n.faces} face{'s' if n.faces != 1 else ''}, "
        f"{n.failed} failed, {dt:.1f} s; model {model}"
    )
    if skipped:
        line += f"; {skipped} skipped (done earlier)"
    if jsonl is not None:
        line += f"; results in {jsonl}"
    return line


def run(args: argparse.Namespace) -> int:
    from damofd.io import ensure_writable_dir

    inputs = list(args.inputs)
    if args.camera is not None:
        inputs.append(str(args.camera))
    if not inputs:
        raise ConfigError("no input: pass image files, folders, videos, URLs or --camera N")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    _check_engine_flags(args)
    items = list(expand_inputs(inputs, path_column=args.path_column))
    if args.engine == "ray":
        from damofd.engine.ray_cli import run_detect_cli

        return run_detect_cli(args, items)
    if args.save_vis or args.out:
        out_dir: Path | None = ensure_writable_dir(args.out or DEFAULT_OUT)
    else:
        out_dir = None
    det = build_detector(args)
    outs = _Outputs(out_dir, args.save_vis, args.json, force=args.force)
    n_skipped = 0
    if outs.done:
        before = len(items)
        items = [it for it in items if not (it[0] == "image" and it[1] in outs.done)]
        n_skipped = before - len(items)
        if n_skipped:
            sys.stderr.write(
                f"damofd detect: resuming: {n_skipped} image{'s' if n_skipped != 1 else ''} "
                f"already in {outs.path} (--force to redo them)\n"
            )
    n = _Counts()
    t0 = time.perf_counter()
    bar = not args.json and not args.no_progress and sys.stderr.isatty()
    for item in items:
        if item.kind == "empty":
            n.failed += 1
            sys.stderr.write(f"damofd detect: warning: {item.source}: {item.note}\n")
    _run_images(args, det, items, outs, n, bar)
    _run_videos(args, det, items, outs, n, bar)
    jsonl = outs.finish()
    line = _summary(n, items, time.perf_counter() - t0, det.model_label, n_skipped, jsonl)
    sys.stderr.write(line + "\n")
    return 1 if n.failed else 0


if __name__ == "__main__":  # pragma: no cover
    from damofd.cli.main import main

    sys.exit(main(["detect", *sys.argv[1:]]))
