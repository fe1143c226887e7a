"""Face detection over video files and cameras (OpenCV ``VideoCapture``/``VideoWriter``).

Frames are decoded with OpenCV (BGR), sent through the detector ``batch_size`` frames at a time
and, when an output path is given, drawn (see :mod:`damofd.inference.draw`) and written to a new
video with the source's frame rate and size. The output is written under a temporary name and
renamed when complete, so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from damofd.errors import InputError

from .detector import FaceDetector
from .draw import draw_faces
from .results import ImageResult

__all__ = ["VIDEO_EXTENSIONS", "VideoSummary", "is_video_file", "iter_video", "process_video"]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def is_video_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(slots=True)
class VideoSummary:
    """What :func:`process_video` did: frames read, faces found, output path (if any)."""

    source: str
    frames: int
    faces: int
    fps: float
    size: tuple[int, int]  # (height, width)
    output: Path | None


def _open(source: str | int) -> cv2.VideoCapture:
    # OpenCV's backends print their own warnings (e.g. "can't open camera by index") to the
    # console; the error below says it once, in our words
    try:
        from cv2.utils import logging as cv_log
    except ImportError:  # an OpenCV build without the logging utilities
        cv_log = None
    previous = cv_log.getLogLevel() if cv_log is not None else None
    if cv_log is not None:
        cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    try:
        cap = cv2.VideoCapture(source)
    finally:
        if cv_log is not None and previous is not None:
            cv_log.setLogLevel(previous)
    if not cap.isOpened():
        what = f"camera {source}" if isinstance(source, int) else str(source)
        raise InputError(f"{what}: cannot open video")
    return cap


def iter_video(source: str | os.PathLike[str] | int) -> Iterator[np.ndarray]:
    """BGR uint8 frames of a video file or camera index, until the stream ends."""
    src = source if isinstance(source, int) else os.fspath(source)
    if isinstance(src, str) and not Path(src).exists():
        raise InputError(f"{src}: no such file")
    cap = _open(src)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def _rate_and_length(
    cap: cv2.VideoCapture, src: str | int, max_frames: int | None
) -> tuple[float, int]:
    """The stream's frame rate (25 when unknown) and the frames to expect (0: unknown)."""
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not (fps > 0 and np.isfinite(fps)):
        fps = 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if isinstance(src, str) else 0
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    return fps, total


def _new_writer(out_path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    """A writer for ``out_path`` under its temporary name (the caller checks it opened)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    fourcc = cv2.VideoWriter_fourcc(*_FOURCC.get(out_path.suffix.lower(), "mp4v"))
    return cv2.VideoWriter(str(tmp), fourcc, fps, (size[1], size[0])), tmp


def process_video(
    detector: FaceDetector,
    source: str | os.PathLike[str] | int,
    output: str | os.PathLike[str] | None = None,
    *,
    max_frames: int | None = None,
    progress: bool = True,
    on_frame: Callable[[int, ImageResult], None] | None = None,
    render: Callable[[np.ndarray, ImageResult], np.ndarray] | None = None,
) -> VideoSummary:
    """Detect faces in every frame of ``source`` (a video file or a camera index).

    Args:
        detector: the :class:`FaceDetector` (its batch size, thresholds and protocol apply).
        source: video file path or camera index.
        output: write the annotated video there (codec from the extension: ``mp4v`` for
            .mp4/.mov/.m4v, ``MJPG`` for .avi/.mkv).
        max_frames: stop after this many frames (cameras run until interrupted otherwise).
        progress: show a tqdm progress bar on stderr.
        on_frame: called with ``(frame_index, result)`` for every frame, in order.
        render: ``(frame, result) -> image`` written to ``output`` (default: the detections
            drawn); called right after ``on_frame`` for the same frame.
    """
    src = source if isinstance(source, int) else os.fspath(source)
    if isinstance(src, str) and not Path(src).exists():
        raise InputError(f"{src}: no such file")
    cap = _open(src)
    fps, total = _rate_and_length(cap, src, max_frames)
    writer: cv2.VideoWriter | None = None
    tmp: Path | None = None
    out_path = Path(output) if output is not None else None
    frames = faces = 0
    size = (0, 0)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total or None, unit="frame", desc=Path(str(src)).name, leave=False)

    def frame_source() -> Iterator[np.ndarray]:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                return
            n += 1
            yield frame

    completed = False
    try:
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal writer, tmp, frames, faces, size
            results = detector.predict(batch)
            for frame, res in zip(batch, results):
                if res.error is not None:  # cannot happen for decoded frames; keep the contract
                    raise InputError(f"{src}: frame {frames}: {res.error}")
                if on_frame is not None:
                    on_frame(frames, res)
                faces += len(res)
                size = (frame.shape[0], frame.shape[1])
                if out_path is not None:
                    if writer is None:
                        writer, tmp = _new_writer(out_path, fps, size)
                        if not writer.isOpened():
                            raise InputError(f"{out_path}: cannot open a video writer")
                    writer.write((render or draw_faces)(frame, res))
                frames += 1
                if bar is not None:
                    bar.update(1)
            batch.clear()

        for frame in frame_source():
            batch.append(frame)
            if len(batch) >= detector.batch_size:
                flush()
        if batch:
            flush()
        completed = frames > 0
    finally:
        cap.release()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.release()
        if tmp is not None and not completed:
            with contextlib.suppress(OSError):
                tmp.unlink()
    if frames == 0:
        raise InputError(f"{src}: no frames could be read")
    if out_path is not None and tmp is not None:
        os.replace(tmp, out_path)
    return VideoSummary(str(src), frames, faces, float(fps), size, out_path)
