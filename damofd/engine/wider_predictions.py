"""The prediction files of a ``damofd eval`` run (:func:`damofd.engine.wider_eval.run_wider_eval`):
their format (the reference ``tools/test_widerface.py`` layout), reading back the complete ones a
resumed run keeps, and detecting the other images into them, each file written atomically.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from damofd.evaluation.predictions import image_name
from damofd.evaluation.wider_images import WiderImage

__all__ = ["format_prediction_txt", "parse_prediction_txt"]

_ROW_FMT = "%.5f %.5f %.5f %.5f %g"


def format_prediction_txt(event: str, file: str, boxes: np.ndarray, scores: np.ndarray) -> str:
    """The reference prediction file of one image.

    ``boxes``: (N, 4) ``xyxy`` in original-image pixels (float32 as the detector returns them;
    ``w = x2 − x1`` is computed in that precision, like the reference); ``scores``: (N,) sorted
    descending. Line 1 ``<event>/<file>``, line 2 ``N``, then ``x y w h score`` rows.
    """
    b = np.asarray(boxes)
    s = np.asarray(scores)
    rows = np.empty((b.shape[0], 5), dtype=np.float64)
    rows[:, 0:2] = b[:, 0:2]
    rows[:, 2:4] = b[:, 2:4] - b[:, 0:2]
    rows[:, 4] = s
    buf = io.StringIO()
    buf.write(f"{event}/{file}\n{b.shape[0]}\n")
    if b.shape[0]:
        np.savetxt(buf, rows, fmt=_ROW_FMT)
    return buf.getvalue()


def parse_prediction_txt(data: bytes, expected_name: str) -> np.ndarray | None:
    """(N, 5) float64 ``[x, y, w, h, score]`` rows of a complete prediction file, else None.

    Complete means: UTF-8, ends with a newline, line 1 names ``expected_name`` (with or without
    event and extension), line 2 is a count N ≥ 0, and exactly N non-blank rows of five finite
    numbers follow. A truncated or foreign file gives None (it is then recomputed).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\n"):
        return None
    lines = text.splitlines()
    if len(lines) < 2 or image_name(lines[0]) != expected_name:
        return None
    try:
        n = int(lines[1])
    except ValueError:
        return None
    body = [ln for ln in lines[2:] if ln.strip()]
    if n < 0 or len(body) != n:
        return None
    if n == 0:
        return np.zeros((0, 5), dtype=np.float64)
    tokens = " ".join(body).split()
    if len(tokens) != 5 * n:
        return None
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    return values.reshape(n, 5)


def _remove_stale_temporaries(event_dirs: Iterable[Path]) -> int:
    """Delete ``.<name>.txt.*.tmp`` files left by a killed run (damofd.io's temporary names)."""
    n = 0
    for d in event_dirs:
        if d.is_dir():
            for p in d.glob(".*.txt.*.tmp"):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
    return n


def _prefetch(paths: Sequence[Path], ahead: int) -> Iterator[Any]:
    """Decode images in a background thread, ``ahead`` images in advance (cv2 releases the GIL,
    so decoding overlaps the network). Yields BGR arrays, or the path when it cannot be read
    (the detector then reports the error for that input)."""
    from damofd.errors import DamoFDError
    from damofd.inference.image_io import load_image

    def load(p: Path) -> Any:
        try:
            return load_image(str(p))
        except DamoFDError:
            return str(p)

    if ahead <= 0:
        yield from (load(p) for p in paths)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="damofd-eval-read") as pool:
        pending: list[Future[Any]] = []
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(load, p))
            if len(pending) > ahead:
                break
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield fut.result()


def _read_predictions(
    images: Sequence[WiderImage], wd: Path
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rows of the complete prediction files already in ``wd``, and their image keys."""
    rows: dict[str, np.ndarray] = {}
    reused: list[str] = []
    for im in images:
        try:
            data = (wd / im.event / f"{im.name}.txt").read_bytes()
        except OSError:
            continue
        r = parse_prediction_txt(data, im.name)
        if r is not None:
            rows[im.key] = r
            reused.append(im.key)
    return rows, reused


def _detect(
    det: Any,
    todo: Sequence[WiderImage],
    wd: Path,
    rows: dict[str, np.ndarray],
    desc: str,
    progress: bool,
) -> tuple[list[str], list[str]]:
    """Detect ``todo``, writing each prediction file atomically as it is done and its rows into
    ``rows``; returns the keys detected and the unreadable images' messages."""
    from damofd.io import atomic_write_text

    detected: list[str] = []
    failed: list[str] = []
    if not todo:
        return detected, failed
    from tqdm import tqdm

    bar = tqdm(
        total=len(todo), desc=desc, unit="img", disable=not progress, file=sys.stderr,
        dynamic_ncols=True,
    )  # fmt: skip
    try:
        inputs = _prefetch([im.path for im in todo], ahead=2 * det.batch_size)
        for im, res in zip(todo, det.iter_predict(inputs)):
            bar.update(1)
            if res.error is not None:
                failed.append(f"{im.path}: {res.error}")
                continue
            text = format_prediction_txt(im.event, im.file, res.boxes, res.scores)
            atomic_write_text(wd / im.event / f"{im.name}.txt", text)
            parsed = parse_prediction_txt(text.encode("utf-8"), im.name)
            assert parsed is not None  # our own format
            rows[im.key] = parsed
            detected.append(im.key)
    finally:
        bar.close()
    return detected, failed
