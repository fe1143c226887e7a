"""The public inference API: :class:`FaceDetector`.

>>> det = FaceDetector()             # the bundled default model, ONNX Runtime, offline
>>> det = FaceDetector.from_onnx("det_500m.onnx")                    # doctest: +SKIP
>>> faces = det.detect("group.jpg")                                   # doctest: +SKIP
>>> faces[0].box, faces[0].score, faces[0].keypoints                 # doctest: +SKIP
>>> det.detect_modelscope(bgr_array)   # {"scores", "boxes", "keypoints"}  # doctest: +SKIP

Inputs may be file paths, http(s) URLs, encoded bytes, ``PIL.Image`` objects or numpy **BGR**
arrays, alone or in a list (true batching: images sharing a canvas size are resized and padded
into one ``(B, 3, H, W)`` tensor per forward pass; with worker sessions each worker takes a
contiguous share of the batch). Outputs are in original-image pixels.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from damofd.device import check_device
from damofd.errors import ConfigError, DamoFDError, InputError

from .backends import Backend, OnnxBackend, TorchBackend
from .batching import DecodeSettings, LaneSet, Member, as_items, is_single
from .image_io import DEFAULT_MAX_PIXELS, ImageInput, describe_input, load_image
from .postprocess import MAX_FACES_METRICS
from .preprocess import Protocol, get_protocol
from .results import Face, ImageResult

if TYPE_CHECKING:
    from damofd.models.sources import ModelSource

from .settings import (
    DEFAULT_SCORE_THR,
    check_nms_thr,
    check_score_thr,
    choose_backend,
    modelscope_model_ids,
)

__all__ = [
    "DEFAULT_SCORE_THR",
    "FaceDetector",
    "check_nms_thr",
    "choose_backend",
    "check_score_thr",
    "modelscope_model_ids",
    "resolve_modelscope_id",
]


def resolve_modelscope_id(model_id: str) -> str | None:
    """Zoo name of an official ModelScope id (case-insensitive), or ``None``."""
    from damofd.models.sources import resolve_modelscope_id as resolve

    return resolve(model_id)


class FaceDetector:
    """Face detector over an ONNX or PyTorch backend, with a fixed test-time protocol.

    Args:
        backend: an :class:`OnnxBackend`, a :class:`TorchBackend` or anything following
            :class:`~damofd.inference.backends.Backend`. Use the ``from_*`` constructors.
        protocol: ``"vga"`` (default; the published-AP protocol), ``"original"``,
            ``"insightface"`` (parity with the official ONNX wrapper) or ``"HxW"``; see
            :mod:`damofd.inference.preprocess`. A model with a fixed input size makes ``vga`` and
            ``insightface`` fit into that size.
        score_thr: keep faces scoring above this, in [0, 1] (0.5 by default; 0.02 for WIDER
            evaluation).
        nms_thr: NMS IoU threshold in (0, 1]; ``None`` → the protocol's (0.45, insightface 0.4).
        max_faces: keep at most this many faces per image (0 = all), ranked by
            ``max_faces_metric``: ``"default"`` (insightface: area − 2·centre offset²), ``"max"``
            (area) or ``"score"``. The kept faces stay sorted by score.
        batch_size: images read and processed together (and the largest forward pass; split
            between the workers if any; ONNX files with 2-D outputs run one image per pass, files
            with a fixed batch axis N run N images per pass, zero-padded).
        max_pixels: refuse image files larger than this many pixels (``None``: no limit).
        url_timeout: seconds to wait when fetching an http(s) URL.
        workers: extra backends (e.g. single-threaded onnxruntime sessions) that share a batch:
            a group of images is split between them and they run concurrently, each doing its
            own preprocessing, forward pass and decoding (see :meth:`from_onnx`). Empty: the
            main backend runs every batch.

    Without ``backend`` the bundled default model (:data:`damofd.models.bundled.DEFAULT_MODEL`,
    trained by damofd itself and shipped in the package) runs on onnxruntime, offline.

    A detector is not thread-safe (it reuses its input buffers); use one per thread.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        protocol: str | Protocol = "vga",
        score_thr: float = DEFAULT_SCORE_THR,
        nms_thr: float | None = None,
        max_faces: int = 0,
        max_faces_metric: str = "default",
        batch_size: int = 8,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        url_timeout: float = 10.0,
        workers: Sequence[Backend] = (),
    ) -> None:
        if backend is None:
            from damofd.models.bundled import DEFAULT_MODEL, bundled_file

            backend = OnnxBackend(bundled_file(DEFAULT_MODEL, "onnx"))
            backend.model_name, backend.bundled = DEFAULT_MODEL, True
        self.backend = backend
        self.layout = backend.layout
        self.protocol = protocol  # type: ignore[assignment]  # resolved by the setter
        self.score_thr = score_thr
        self.nms_thr = nms_thr
        if max_faces < 0:
            raise ConfigError(f"max_faces must be ≥ 0, got {max_faces}")
        if max_faces_metric not in MAX_FACES_METRICS:
            raise ConfigError(
                f"unknown max_faces_metric {max_faces_metric!r}; use one of "
                f"{', '.join(MAX_FACES_METRICS)}"
            )
        self.max_faces = int(max_faces)
        self.max_faces_metric = max_faces_metric
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.max_pixels = max_pixels
        self.url_timeout = float(url_timeout)
        self._lanes = LaneSet(backend, workers)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        workers: int | None = None,
        **kwargs: Any,
    ) -> FaceDetector:
        """From an ONNX file: ours (``damofd export``) or an official SCRFD/insightface one.

        Args:
            threads: onnxruntime intra-op threads of the main session (default: one per core).
                Single images run there, using every thread.
            workers: number of extra sessions that split each batch between them and run
                concurrently (data parallelism), each with ``threads // workers`` intra-op
                threads and its own preprocessing and decoding. Default (``None``): 2 on the
                CPU provider with at least 2 threads, else 0. Two single-threaded sessions
                process a batch of 8 small-model images 1.4–1.8× faster than single-image calls
                on a 2-core machine shared with other jobs, where intra-op threads stall on
                each other (see docs/inference.md). 0: batches run on the main session as one
                ``(B, 3, H, W)`` tensor.
            providers: onnxruntime execution providers (default CPU).
        """
        if workers is not None and int(workers) < 0:
            raise ConfigError(f"workers must be ≥ 0, got {workers}")
        main = OnnxBackend(path, threads=threads, providers=providers)
        nthreads = int(threads or os.cpu_count() or 1)
        if workers is None:
            cpu_only = all(p == "CPUExecutionProvider" for p in providers or [])
            workers = 2 if cpu_only and nthreads >= 2 else 0
        workers = int(workers)
        extra: list[Backend] = []
        if workers > 1:
            per = max(1, nthreads // workers)
            extra = [OnnxBackend(path, threads=per, providers=providers) for _ in range(workers)]
        return cls(main, workers=extra, **kwargs)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        device: str = "cpu",
        fp16: bool = False,
        fuse: bool = True,
        copy_model: bool = True,
        channels_last: bool | None = None,
        **kwargs: Any,
    ) -> FaceDetector:
        """From a :class:`damofd.models.SCRFD` module (BN fused, moved to ``device``, NHWC on
        the CPU unless ``channels_last=False``; on a copy unless ``copy_model=False``)."""
        backend = TorchBackend(
            model,
            device=device,
            fp16=fp16,
            fuse=fuse,
            copy_model=copy_model,
            channels_last=channels_last,
        )
        return cls(backend, **kwargs)

    @classmethod
    def from_zoo(
        cls,
        name: str,
        *,
        weights: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> FaceDetector:
        """From a zoo name (``damofd-0.5g-kps``, ``scrfd-500m``...) and a weights file.

        ``weights``: a ``.pth`` checkpoint (mmcv/damofd, strict key match) or an official SCRFD /
        damofd ONNX file of the same architecture. Without ``weights``, a model with bundled
        weights (``damofd zoo`` marks them) loads them from the package, DamoFD models load
        through their ModelScope id, and other names raise a
        :class:`~damofd.errors.ConfigError` asking for weights. The other arguments are those
        of :meth:`from_pretrained`.
        """
        from damofd.models.zoo import resolve_name

        resolve_name(name)  # a zoo name, not a path: ConfigError naming the valid ones
        return cls.from_pretrained(name, weights=weights, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        device: str = "cpu",
        fp16: bool = False,
        **kwargs: Any,
    ) -> FaceDetector:
        """From a ``.pth`` checkpoint (mmdet or damofd layout, strict key match).

        ``name`` is the zoo architecture; without it the checkpoint's own record of its
        architecture (written by ``damofd train``) is used.
        """
        from damofd.models.factory import load_model

        check_device(device)
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: checkpoint not found")
        model = load_model(p, name=name)
        return cls.from_model(
            model, device=device, fp16=fp16, fuse=True, copy_model=False, **kwargs
        )

    @classmethod
    def from_modelscope(
        cls,
        model: str | os.PathLike[str],
        *,
        device: str = "cpu",
        fp16: bool = False,
        **kwargs: Any,
    ) -> FaceDetector:
        """From a ModelScope model id (e.g. ``damo/cv_ddsar_face-detection_iclr23-damofd``) or a
        downloaded ModelScope model folder (``configuration.json``, ``pytorch_model.pt``).

        The loading (cache lookup, download with the optional ``modelscope`` client, strict
        checkpoint loading) is done by :func:`damofd.models.modelscope.load_modelscope`.
        """
        from damofd.models.modelscope import load_modelscope

        check_device(device)
        mdl = load_modelscope(os.fspath(model))
        return cls.from_model(mdl, device=device, fp16=fp16, fuse=True, copy_model=False, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike[str] | ModelSource | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        backend: str | None = None,
        device: str = "cpu",
        fp16: bool = False,
        threads: int | None = None,
        workers: int | None = None,
        providers: list[str] | None = None,
        **kwargs: Any,
    ) -> FaceDetector:
        """From any model spec: an ``.onnx`` file, a ``.pth``/``.pt`` checkpoint, a ModelScope
        folder or id (``modelscope:owner/name`` for one the zoo does not list), or a zoo name
        with ``weights`` or with bundled weights. ``None``: the bundled default model
        (:data:`damofd.models.bundled.DEFAULT_MODEL`). The spec is resolved by
        :func:`damofd.models.sources.resolve_source`.

        ``backend`` (``"onnx"``/``"torch"``, default :func:`choose_backend`): sources with an
        ONNX file (ONNX files, bundled weights) run on onnxruntime unless ``fp16`` or a CUDA
        ``device`` that the ``providers`` cannot serve asks for PyTorch; the others run on
        PyTorch (export them with :func:`damofd.export.export_detector` for onnxruntime).
        ``threads``, ``workers`` and ``providers`` are the onnxruntime settings of
        :meth:`from_onnx`; ``device="auto"`` means CUDA when present.
        """
        from damofd.models.sources import load_source, resolve_source

        src = resolve_source(spec, weights)
        use = choose_backend(src, backend, device=device, fp16=fp16, providers=providers)
        if use == "onnx":
            if not src.has_onnx:
                raise ConfigError(
                    f"{src.describe()} has no ONNX file; export it first "
                    "(damofd.export.export_detector, or `damofd export`) or use backend='torch'"
                )
            det = cls.from_onnx(
                src.file("onnx"), threads=threads, workers=workers, providers=providers, **kwargs
            )
        else:
            device = str(check_device(device))
            model = load_source(src, form="fused" if src.kind == "onnx" else "canonical")
            det = cls.from_model(
                model, device=device, fp16=fp16, fuse=True, copy_model=False, **kwargs
            )
        if src.kind == "bundled":
            det.backend.model_name, det.backend.bundled = src.name, True
        return det

    # ------------------------------------------------------------------ settings
    @property
    def score_thr(self) -> float:
        """Score threshold in [0, 1] (faces scoring above it are kept)."""
        return self._score_thr

    @score_thr.setter
    def score_thr(self, value: float) -> None:
        self._score_thr = check_score_thr(value)

    @property
    def nms_thr(self) -> float | None:
        """NMS IoU threshold in (0, 1], or ``None`` for the protocol's."""
        return self._nms_thr_value

    @nms_thr.setter
    def nms_thr(self, value: float | None) -> None:
        self._nms_thr_value = None if value is None else check_nms_thr(value)

    @property
    def protocol(self) -> Protocol:
        return self._protocol

    @protocol.setter
    def protocol(self, value: str | Protocol) -> None:
        proto = get_protocol(value)
        fixed = self.layout.input_hw
        if fixed is not None and proto.size != fixed:
            if proto.name not in ("vga", "insightface"):
                raise ConfigError(
                    f"protocol {proto.name!r} does not fit this model's fixed input size "
                    f"{fixed[0]}x{fixed[1]}; use 'vga', 'insightface' or '{fixed[0]}x{fixed[1]}'"
                )
            proto = proto.with_size(fixed)
        top = max(self.layout.strides)
        if proto.size_divisor % top:
            # 5-level files need canvases divisible by 128
            proto = dataclasses.replace(proto, size_divisor=top)
        self._protocol = proto

    @property
    def use_kps(self) -> bool:
        return self.layout.use_kps

    @property
    def model_name(self) -> str | None:
        """Zoo name of the model when known (the bundled default, a zoo name, a checkpoint that
        records its architecture), else ``None``."""
        name = getattr(self.backend, "model_name", None)
        if name is None:
            name = getattr(getattr(self.backend, "model", None), "name", None)
        return name if isinstance(name, str) else None

    @property
    def model_label(self) -> str:
        """What reports name as the model: ``damofd-0.5g-bnkps (bundled)``, a zoo name or the
        backend description."""
        name = self.model_name
        path = getattr(self.backend, "path", None)
        if name is not None and getattr(self.backend, "bundled", False):
            return f"{name} (bundled)"
        if name is not None:
            return name
        return path.name if isinstance(path, Path) else self.backend.description

    def __repr__(self) -> str:
        return (
            f"FaceDetector({self.backend.description}, protocol={self.protocol.name!r}, "
            f"score_thr={self.score_thr}, nms_thr={self._nms_thr(None)}, "
            f"max_faces={self.max_faces})"
        )

    def _nms_thr(self, override: float | None) -> float:
        if override is not None:
            return check_nms_thr(override)
        return float(self.nms_thr) if self.nms_thr is not None else self.protocol.nms_thr

    # ------------------------------------------------------------------ core
    def _effective_batch(self, batch_size: int | None) -> int:
        """Images read per chunk; backends with a batch limit loop inside a chunk."""
        b = int(batch_size or self.batch_size)
        if b < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {b}")
        return b

    def iter_predict(
        self,
        inputs: Iterable[ImageInput],
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_faces: int | None = None,
        batch_size: int | None = None,
    ) -> Iterator[ImageResult]:
        """Stream results for an iterable of inputs, in input order.

        Inputs are read ``batch_size`` at a time; images sharing a canvas size go through the
        network together. An input that cannot be read gives an :class:`ImageResult` with
        ``error`` set instead of stopping the stream.
        """
        thr = self.score_thr if score_thr is None else check_score_thr(score_thr)
        nthr = self._nms_thr(nms_thr)
        mf = self.max_faces if max_faces is None else int(max_faces)
        if mf < 0:
            raise ConfigError(f"max_faces must be ≥ 0, got {max_faces}")
        bsz = self._effective_batch(batch_size)
        chunk: list[ImageInput] = []
        for item in inputs:
            chunk.append(item)
            if len(chunk) >= bsz:
                yield from self._predict_chunk(chunk, thr, nthr, mf, bsz)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, thr, nthr, mf, bsz)

    def _predict_chunk(
        self, chunk: list[ImageInput], thr: float, nthr: float, mf: int, bsz: int
    ) -> list[ImageResult]:
        results: list[ImageResult | None] = [None] * len(chunk)
        groups: dict[tuple[int, int], list[Member]] = {}
        for i, item in enumerate(chunk):
            label = describe_input(item)
            try:
                img = load_image(item, timeout=self.url_timeout, max_pixels=self.max_pixels)
            except DamoFDError as e:
                results[i] = ImageResult.failed(label, str(e), self.use_kps)
                continue
            plan = self.protocol.plan(img.shape[0], img.shape[1])
            groups.setdefault(plan.canvas, []).append((i, img, plan))
        settings = DecodeSettings(self.layout, self.protocol, thr, nthr, mf, self.max_faces_metric)
        for members in groups.values():
            decoded = self._lanes.run_group(members, bsz, settings)
            for (i, _img, plan), (boxes, scores, kps) in zip(members, decoded):
                results[i] = ImageResult(
                    boxes=boxes,
                    scores=scores,
                    keypoints=kps,
                    image_size=(plan.height, plan.width),
                    source=describe_input(chunk[i]),
                )
        return results  # type: ignore[return-value]

    def predict(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_faces: int | None = None,
        batch_size: int | None = None,
    ) -> list[ImageResult]:
        """Detect faces in one input or a list; always returns a list of :class:`ImageResult`.

        Per-input failures (missing file, corrupt image, URL timeout, too large) are reported in
        ``result.error``; the other inputs are processed normally.
        """
        items = as_items(inputs)
        return list(
            self.iter_predict(
                items,
                score_thr=score_thr,
                nms_thr=nms_thr,
                max_faces=max_faces,
                batch_size=batch_size,
            )
        )

    def _strict(self, inputs: Any, **kw: Any) -> tuple[list[ImageResult], bool]:
        single = is_single(inputs)
        results = self.predict(inputs, **kw)
        for r in results:
            if r.error is not None:
                raise InputError(r.error)
        return results, single

    def detect(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_faces: int | None = None,
        batch_size: int | None = None,
    ) -> list[Face] | list[list[Face]]:
        """Faces of one image (``list[Face]``) or of each image of a list (``list[list[Face]]``).

        Raises :class:`~damofd.errors.InputError` naming the first input that could not be read
        (use :meth:`predict` to collect per-input errors instead).
        """
        results, single = self._strict(
            inputs, score_thr=score_thr, nms_thr=nms_thr, max_faces=max_faces, batch_size=batch_size
        )
        return results[0].faces if single else [r.faces for r in results]

    __call__ = detect

    def detect_modelscope(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_faces: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """The ModelScope output dict ``{"scores", "boxes", "keypoints"}`` (one per image for a
        list); see :meth:`ImageResult.to_modelscope`."""
        results, single = self._strict(
            inputs, score_thr=score_thr, nms_thr=nms_thr, max_faces=max_faces, batch_size=batch_size
        )
        return results[0].to_modelscope() if single else [r.to_modelscope() for r in results]

    def warmup(self, height: int = 480, width: int = 640) -> None:
        """Run blank images through the network and every worker (first-run allocations)."""
        blank = np.zeros((height, width, 3), np.uint8)
        self.predict(blank)
        workers = self._lanes.workers
        if workers:
            n = len(workers) * (workers[0].backend.layout.max_batch or 1)
            self.predict([blank] * n, batch_size=n)
