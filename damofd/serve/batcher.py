"""Cross-request dynamic batching: many concurrent single-image requests, few model calls.

One thread owns the :class:`~damofd.inference.FaceDetector`. Requests put decoded images on a
queue; the thread takes the first waiting image, then keeps collecting until ``max_batch_size``
images are there or ``batch_timeout_ms`` has passed since that first one, and runs them as one
``predict`` call (true batching: one ``(B, 3, H, W)`` forward pass per canvas size). Each
request gets its own result, filtered by its own score threshold and face limit.

Why not a serving library's batcher: LitServe (the maintained library with ``max_batch_size`` /
``batch_timeout``) runs inference in separate worker processes fed through multiprocessing
queues, one model copy each, and pickles every decoded image across the process boundary; on the
2-core machines this toolkit targets, a thread in the server process keeps one onnxruntime session
with all its intra-op threads, and lets ``/v1/detect``, ``/v1/detect/batch`` and ``/v1/draw``
images share the same batches. The queue logic is ~60 lines and is tested on its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from damofd.inference.results import ImageResult

__all__ = ["BatchStats", "DynamicBatcher", "filter_result"]


def filter_result(res: ImageResult, score_thr: float, max_faces: int = 0) -> ImageResult:
    """``res`` restricted to scores ≥ ``score_thr`` and to the ``max_faces`` best (0 = all);
    detections are sorted by score, so the best are the first."""
    keep = res.scores >= score_thr
    idx = np.flatnonzero(keep)
    if max_faces:
        idx = idx[:max_faces]
    return ImageResult(
        boxes=res.boxes[idx],
        scores=res.scores[idx],
        keypoints=None if res.keypoints is None else res.keypoints[idx],
        image_size=res.image_size,
        source=res.source,
        error=res.error,
    )


@dataclass
class _Job:
    image: np.ndarray
    score_thr: float
    max_faces: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What one model call did: its size, queue wait of its oldest image, inference time."""

    size: int
    wait_s: float
    inference_s: float


class DynamicBatcher:
    """Collect images from many callers into batches for one detector (see the module doc).

    Args:
        detector: a :class:`~damofd.inference.FaceDetector` (used from the batcher thread only).
        max_batch_size: most images per model call (1 = no batching).
        batch_timeout_ms: how long the first image of a batch waits for company.
        on_batch: called with a :class:`BatchStats` after every model call (metrics).
    """

    def __init__(
        self,
        detector: Any,
        *,
        max_batch_size: int = 8,
        batch_timeout_ms: float = 10.0,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_timeout_ms < 0:
            raise ValueError(f"batch_timeout_ms must be >= 0, got {batch_timeout_ms}")
        self.detector = detector
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = float(batch_timeout_ms) / 1000.0
        self.on_batch = on_batch
        self.model_calls = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="damofd-batcher", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def submit(self, image: np.ndarray, score_thr: float, max_faces: int = 0) -> Future:
        """Queue one decoded BGR image; the future resolves to its :class:`ImageResult`."""
        if self._stopped.is_set():
            raise RuntimeError("the batcher is stopped")
        job = _Job(image, float(score_thr), int(max_faces))
        self._queue.put(job)
        return job.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued images, then stop the thread."""
        if not self._stopped.is_set():
            self._stopped.set()
            self._queue.put(None)
        self._thread.join(timeout)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        batch, stop = [first], False
        deadline = time.perf_counter() + self.timeout_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            self._run_safely(batch)
        # drain what arrived before the stop sentinel
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._run_safely([job])

    def _run_safely(self, batch: list[_Job]) -> None:
        """Run a batch; nothing may kill the thread (a dead batcher would fail every later
        request)."""
        # a request whose client went away cancels its future: drop it before the model call
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            self._run(live)
        except Exception as e:  # a bug in the metrics hook or result filtering
            for j in live:
                if not j.future.done():
                    j.future.set_exception(e)

    def _run(self, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        wait = t0 - min(j.queued_at for j in batch)
        try:
            results = self.detector.predict(
                [j.image for j in batch],
                score_thr=min(j.score_thr for j in batch),
                max_faces=0,
                batch_size=len(batch),
            )
        except Exception as e:  # a model failure fails this batch's requests, not the server
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        finally:
            self.model_calls += 1
        dt = time.perf_counter() - t0
        for j, r in zip(batch, results):
            if not j.future.done():
                j.future.set_result(filter_result(r, j.score_thr, j.max_faces))
        if self.on_batch is not None:
            self.on_batch(BatchStats(size=len(batch), wait_s=wait, inference_s=dt))
