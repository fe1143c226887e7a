"""Face detection over many images on Ray Data: :func:`detect_dataset` and
``damofd detect --engine ray``.

>>> import ray, ray.data                                                    # doctest: +SKIP
>>> from damofd.engine.ray import detect_dataset
>>> ds = ray.data.from_items([{"path": p} for p in paths])                 # doctest: +SKIP
>>> faces = detect_dataset(ds, num_actors=2)           # lazy ray.data.Dataset, one row per image
>>> faces.filter(lambda r: r["error"] is None).write_parquet("out/")       # doctest: +SKIP

Built on Ray Data's own primitives only: a dataset of paths (or of bytes from
``ray.data.read_binary_files``), ``map_batches`` with a callable class that holds one
:class:`~damofd.inference.FaceDetector` per actor (an actor pool sized with
``ActorPoolStrategy``; ``num_gpus`` for GPU actors), and Ray's file writers (``write_parquet``, or
Ray's block-based file datasink writing the JSON records of ``damofd detect``). Images are
decoded inside the actors by damofd's own loader (:func:`~damofd.inference.image_io.load_image`,
the function single-process ``damofd detect`` uses), so results equal the single-process ones and
an unreadable file becomes a row with an ``error`` instead of failing the job.

Ray is an optional dependency (``pip install 'damofd[ray]'``) and is imported only when a
function here runs; ``import damofd`` never needs it. See docs/ray.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from damofd.errors import ConfigError, DamoFDError, InputError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import ray.data

    from damofd.inference.detector import FaceDetector
    from damofd.inference.results import ImageResult

__all__ = [
    "FORMATS",
    "RESULTS_DIR",
    "RESULT_COLUMNS",
    "DetectorConfig",
    "detect_dataset",
    "read_results",
    "result_schema",
    "restore_signal_handlers",
    "signal_handlers",
    "write_results",
]

#: Folder under ``--out`` that holds the result files of ``--engine ray``.
RESULTS_DIR = "detections"
#: Result file formats of ``--engine ray``.
FORMATS = ("jsonl", "parquet")
#: The result columns :func:`detect_dataset` adds, in order (the keys of a ``damofd detect``
#: record; ``error`` and ``vis`` are null when they do not apply).
RESULT_COLUMNS = ("path", "image_size", "error", "scores", "boxes", "keypoints", "vis")
_LOCAL_JSONL = "detections.jsonl"  # damofd detect --engine local's record file
_INSTALL = "pip install 'damofd[ray]'"


def import_ray() -> Any:
    """``ray`` with Ray Data, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError(f"--engine ray needs Ray Data ({e}): {_INSTALL}") from None
    return ray


def result_schema() -> pa.Schema:
    """The Arrow schema of the result columns (Parquet files hold exactly these).

    ============ ======================= ===============================================
    column       type                    value
    ============ ======================= ===============================================
    path         string                  the input's path or URI, as given
    image_size   list<int32>             ``[height, width]``; ``[0, 0]`` when it failed
    error        string (nullable)       why the image was skipped; null when it was not
    scores       list<float32>           one per face, sorted descending
    boxes        list<list<float32>>     ``[x1, y1, x2, y2]`` per face, original pixels
    keypoints    list<list<float32>>     10 values (x, y × 5) per face; null for models
                 (nullable)              without keypoints
    vis          string (nullable)       the drawing written with ``--save-vis``
    ============ ======================= ===============================================
    """
    import pyarrow as pa

    f32 = pa.float32()
    return pa.schema(
        [
            pa.field("path", pa.string()),
            pa.field("image_size", pa.list_(pa.int32())),
            pa.field("error", pa.string()),
            pa.field("scores", pa.list_(f32)),
            pa.field("boxes", pa.list_(pa.list_(f32))),
            pa.field("keypoints", pa.list_(pa.list_(f32))),
            pa.field("vis", pa.string()),
        ]
    )


# --------------------------------------------------------------------------- the detector


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """How each actor builds its :class:`~damofd.inference.FaceDetector`: the options of
    ``damofd detect`` (same meanings and defaults), resolved by the same code
    (:func:`damofd.engine.build.build_detector`), so an actor's detector is the one the
    single-process command builds.

    ``model=None`` (and no ``onnx``/``weights``) is the bundled default model on
    onnxruntime. ``threads=None`` lets :func:`detect_dataset` give each actor
    ``max(1, cpus_per_actor)`` onnxruntime threads. ``max_pixels=None`` keeps the default
    decompression-bomb limit.
    """

    model: str | None = None
    weights: str | None = None
    onnx: str | None = None
    backend: str | None = None
    device: str = "auto"
    fp16: bool = False
    threads: int | None = None
    workers: int | None = None
    protocol: str = "vga"
    score_thr: float = 0.5
    nms_thr: float | None = None
    max_faces: int = 0
    batch_size: int = 8
    max_pixels: int | None = None
    url_timeout: float = 10.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DetectorConfig:
        """The configuration of ``damofd detect``'s options."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def build(self) -> FaceDetector:
        """The detector (what ``damofd detect`` with these options runs)."""
        from damofd.engine.build import build_detector

        return build_detector(argparse.Namespace(**dataclasses.asdict(self)))


def _read_uri(uri: str) -> bytes:
    """The bytes of a file behind a pyarrow file-system URI (``s3://``, ``gs://``, ``hdfs://``,
    ``file://`` ...)."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as f:
            return bytes(f.read())
    except Exception as e:  # pyarrow raises OSError, ArrowInvalid, ArrowNotImplementedError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{uri}: cannot read ({msg})") from None


class _DetectBatch:
    """The ``map_batches`` callable class: one detector per actor, built once in the actor."""

    def __init__(
        self,
        config: DetectorConfig,
        path_column: str,
        bytes_column: str | None,
        vis_column: str | None,
    ) -> None:
        self.det = config.build()
        self.path_column = path_column
        self.bytes_column = bytes_column
        self.vis_column = vis_column
        self.schema = result_schema()

    def _load(self, path: Any, blob: Any) -> tuple[np.ndarray | None, str, str | None]:
        """(image, label, error): decoded exactly as single-process ``damofd detect`` does."""
        from damofd.engine.inputs import _has_scheme, _is_url
        from damofd.inference.image_io import decode_image, load_image

        label = path if isinstance(path, str) and path else "<bytes>"
        max_pixels = self.det.max_pixels
        try:
            if blob is not None:
                return decode_image(blob, label, max_pixels), label, None
            if not isinstance(path, str) or not path:
                raise InputError(f"<row>: no {self.path_column!r} value")
            if _has_scheme(path) and not _is_url(path):
                return decode_image(_read_uri(path), label, max_pixels), label, None
            img = load_image(path, timeout=self.det.url_timeout, max_pixels=max_pixels)
            return img, label, None
        except DamoFDError as e:
            return None, label, str(e)

    def _predict(self, images: list[np.ndarray], labels: list[str]) -> list[ImageResult]:
        """True batching; should a batch raise (a backend error), each image alone, so that only
        the image at fault becomes an error row."""
        from damofd.inference.results import ImageResult

        try:
            return self.det.predict(images)
        except Exception:
            out = []
            for img, label in zip(images, labels):
                try:
                    out.append(self.det.predict(img)[0])
                except Exception as e:
                    msg = f"{label}: detection failed ({type(e).__name__}: {e})"
                    out.append(ImageResult.failed(label, msg, self.det.use_kps))
            return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        from damofd.engine.inputs import detection_record
        from damofd.inference.draw import draw_faces
        from damofd.inference.results import ImageResult

        names = batch.column_names
        n = batch.num_rows
        paths = (
            batch.column(self.path_column).to_pylist() if self.path_column in names else [None] * n
        )
        blobs = (
            batch.column(self.bytes_column).to_pylist()
            if self.bytes_column and self.bytes_column in names
            else [None] * n
        )
        targets = (
            batch.column(self.vis_column).to_pylist()
            if self.vis_column and self.vis_column in names
            else [None] * n
        )
        loaded = [self._load(p, b) for p, b in zip(paths, blobs)]
        good = [i for i, (img, _, _) in enumerate(loaded) if img is not None]
        found = self._predict([loaded[i][0] for i in good], [loaded[i][1] for i in good])
        results: dict[int, ImageResult] = dict(zip(good, found))
        records = []
        for i, (img, label, error) in enumerate(loaded):
            res = results.get(i)
            if res is None:
                res = ImageResult.failed(label, error or f"{label}: not read", self.det.use_kps)
            vis = None
            if res.error is None and targets[i]:
                try:
                    draw_faces(img, res, targets[i])
                    vis = str(targets[i])
                except DamoFDError as e:
                    sys.stderr.write(f"damofd detect: skipped drawing {e}\n")
            records.append(detection_record(res, label, vis))
        out = pa.Table.from_pylist(records, schema=self.schema)
        for name in names:  # the caller's own columns ride along (not the encoded bytes)
            if name not in RESULT_COLUMNS and name != self.bytes_column:
                out = out.append_column(batch.schema.field(name), batch.column(name))
        return out


def _pool(
    ray: Any, num_actors: int | tuple[int, int] | None, cpus: float, gpus: float
) -> tuple[Any, int]:
    """(``ActorPoolStrategy``, largest pool size) for ``num_actors`` (default: one actor per
    ``gpus`` GPUs, else per ``cpus`` CPUs, of the cluster)."""
    if num_actors is None:
        if not ray.is_initialized():
            ray.init()
        res = ray.cluster_resources()
        per, have = (gpus, res.get("GPU", 0.0)) if gpus > 0 else (cpus, res.get("CPU", 1.0))
        if have < per:
            kind = "GPUs" if gpus > 0 else "CPUs"
            raise ConfigError(
                f"the Ray cluster has {have:g} {kind} now, {per:g} needed per actor; pass the "
                f"number of actors (an autoscaling cluster adds nodes for num_actors=(MIN, MAX))"
            )
        size = max(1, int(have // per + 1e-9))
        return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2), size
    if isinstance(num_actors, int):
        if num_actors < 1:
            raise ConfigError(f"num_actors must be ≥ 1, got {num_actors}")
        strategy = ray.data.ActorPoolStrategy(size=num_actors, max_tasks_in_flight_per_actor=2)
        return strategy, num_actors
    lo, hi = (int(v) for v in num_actors)
    if not 1 <= lo <= hi:
        raise ConfigError(f"num_actors (MIN, MAX) needs 1 ≤ MIN ≤ MAX, got {num_actors}")
    strategy = ray.data.ActorPoolStrategy(min_size=lo, max_size=hi, max_tasks_in_flight_per_actor=2)
    return strategy, hi


def detect_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str] | None = None,
    *,
    config: DetectorConfig | None = None,
    weights: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    device: str = "auto",
    score_thr: float = 0.5,
    nms_thr: float | None = None,
    max_faces: int = 0,
    protocol: str = "vga",
    batch_size: int = 8,
    threads: int | None = None,
    max_pixels: int | None = None,
    url_timeout: float = 10.0,
    num_actors: int | tuple[int, int] | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    path_column: str = "path",
    bytes_column: str | None = "bytes",
    vis_column: str | None = None,
) -> ray.data.Dataset:
    """Detect faces in every row of ``ds``; a lazy :class:`ray.data.Dataset`, one row per input
    row, to chain with further Ray Data operations or write with Ray's writers.

    Args:
        ds: rows with a ``path_column`` (local/NFS paths, http(s) URLs or pyarrow file-system
            URIs such as ``s3://bucket/a.jpg``), and/or a ``bytes_column`` of encoded image files
            (what ``ray.data.read_binary_files(..., include_paths=True)`` gives). Other columns
            are kept (the bytes are dropped).
        model: as ``damofd detect --model``: a zoo name, ``.onnx``/``.pth`` file or ModelScope
            id; ``None``: the bundled default model on onnxruntime. Files must be readable
            where the actors run.
        config: a full :class:`DetectorConfig` instead of ``model`` and the detector keywords.
        weights, backend, device, score_thr, nms_thr, max_faces, protocol, batch_size, threads,
            max_pixels, url_timeout: as the ``damofd detect`` options. ``batch_size`` is also the
            ``map_batches`` batch size: each actor call runs that many images through the
            detector's true-batching path.
        num_actors: ``N`` actors, or ``(MIN, MAX)`` for an autoscaling pool; default one per
            ``gpus_per_actor`` GPUs (else per ``cpus_per_actor`` CPUs) of the cluster.
        cpus_per_actor: CPUs Ray reserves per actor; unless ``threads`` is given its
            onnxruntime session gets ``max(1, int(cpus_per_actor))`` intra-op threads, so
            actors do not oversubscribe the cores.
        gpus_per_actor: > 0 for GPU actors (``num_gpus``); the model then runs on CUDA
            (``device="auto"`` becomes ``"cuda"``).
        vis_column: a column of output paths: each row with a value there gets its drawing
            written to that path (on the actor's file system), and the ``vis`` result column
            says where it was written.

    Returns:
        The dataset with the :data:`RESULT_COLUMNS` (schema: :func:`result_schema`) followed by
        the other input columns. An image that cannot be read or decoded gives a row with
        ``error`` set (and no faces); it never fails the job.
    """
    ray = import_ray()
    if config is None:
        config = DetectorConfig(
            model=None if model is None else os.fspath(model),
            weights=None if weights is None else os.fspath(weights),
            backend=backend,
            device=device,
            threads=threads,
            protocol=protocol,
            score_thr=score_thr,
            nms_thr=nms_thr,
            max_faces=max_faces,
            batch_size=batch_size,
            max_pixels=max_pixels,
            url_timeout=url_timeout,
        )
    elif model is not None:
        raise ConfigError("pass either model= or config=, not both")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {config.batch_size}")
    if not cpus_per_actor > 0:
        raise ConfigError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    if not gpus_per_actor >= 0:
        raise ConfigError(f"gpus_per_actor must be ≥ 0, got {gpus_per_actor}")
    if config.threads is None and gpus_per_actor == 0:
        config = dataclasses.replace(config, threads=max(1, int(cpus_per_actor)))
    if gpus_per_actor > 0 and config.device == "auto":
        config = dataclasses.replace(config, device="cuda")
    strategy, _ = _pool(ray, num_actors, cpus_per_actor, gpus_per_actor)
    remote: dict[str, Any] = {"num_cpus": cpus_per_actor}
    if gpus_per_actor > 0:
        remote["num_gpus"] = gpus_per_actor
    return ds.map_batches(
        _DetectBatch,
        fn_constructor_kwargs={
            "config": config,
            "path_column": path_column,
            "bytes_column": bytes_column,
            "vis_column": vis_column,
        },
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=strategy,
        **remote,
    )


# --------------------------------------------------------------------------- result files


def _jsonl_datasink(path: str, filename_provider: Any) -> Any:
    """Ray's block-based file datasink writing one JSON record per line (the lines of
    ``damofd detect``'s ``detections.jsonl``: ``error``/``vis`` only when set), one file per
    write task. (``write_json`` goes through pandas, which rounds floats to 10 digits and writes
    ``null`` for absent keys.) The class is built here and pickled by value, with nothing of
    damofd in it, so that Ray's write workers do not import damofd (and onnxruntime, OpenCV).
    """
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonlDatasink(BlockBasedFileDatasink):
        def write_block_to_file(self, block: Any, file: Any) -> None:
            import json

            lines = [
                json.dumps(
                    {k: v for k, v in row.items() if v is not None or k not in ("error", "vis")}
                )
                + "\n"
                for row in block.to_arrow().to_pylist()
            ]
            file.write("".join(lines).encode("utf-8"))

    return JsonlDatasink(path, file_format="jsonl", filename_provider=filename_provider)


def _filename_provider(fmt: str) -> Any:
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{write_uuid}-{task_index:06d}.{fmt}"

    return PartNames(file_format=fmt)


def write_results(
    results: ray.data.Dataset, path: str, fmt: str = "parquet", *, concurrency: int = 4
) -> None:
    """Write :func:`detect_dataset` rows under ``path`` with Ray's writers, one file per write
    task as blocks finish (so a killed job keeps its finished blocks): ``write_parquet``, or
    the JSON records of ``damofd detect`` (one per line) for ``fmt="jsonl"``. The write tasks
    reserve no CPU (they would otherwise wait for the detector actors to release theirs, and
    nothing would be written before the end); at most ``concurrency`` run at once."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    remote = {"num_cpus": 0}
    names = _filename_provider(fmt)
    if fmt == "parquet":
        results.write_parquet(
            path, filename_provider=names, ray_remote_args=remote, concurrency=concurrency
        )
    else:
        results.write_datasink(
            _jsonl_datasink(path, names), ray_remote_args=remote, concurrency=concurrency
        )


def _result_files(out_dir: Path) -> dict[str, list[Path]]:
    d = out_dir / RESULTS_DIR
    found: dict[str, list[Path]] = {fmt: [] for fmt in FORMATS}
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.name.startswith(("_", ".")):
                ext = f.suffix.lower().lstrip(".")
                if ext in found:
                    found[ext].append(f)
    if (out_dir / _LOCAL_JSONL).is_file():
        found["jsonl"].append(out_dir / _LOCAL_JSONL)
    return found


def _read_parquet_file(f: Path, columns: list[str] | None = None) -> pa.Table | None:
    """The table in ``f``, or ``None`` for a file a killed run left unreadable (moved aside as
    ``_torn-<name>``, which readers of the folder ignore; its images are redone)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(f, columns=columns)
    except Exception as e:  # ArrowInvalid / OSError for a truncated file
        aside = f.with_name(f"_torn-{f.name}")
        os.replace(f, aside)
        sys.stderr.write(
            f"damofd detect: warning: {f} is unreadable ({str(e).splitlines()[0]}), probably "
            f"cut short by a killed run; moved it to {aside.name} (its images are redone)\n"
        )
        return None


def _jsonl_table(files: Iterable[Path]) -> pa.Table:
    import pyarrow as pa

    rows = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line of a killed run
                if isinstance(rec, dict) and "frame" not in rec and "path" in rec:
                    rows.append(rec)
    return pa.Table.from_pylist(rows, schema=result_schema())


def read_results(out: str | os.PathLike[str], fmt: str | None = None) -> pa.Table:
    """Every image record under ``out`` (``out/detections/`` files of ``--engine ray``, and
    ``out/detections.jsonl`` of ``--engine local``) as one Arrow table with
    :func:`result_schema`. A path may appear twice when a failed image was retried by a rerun.
    """
    import pyarrow as pa

    found = _result_files(Path(out))
    tables = []
    for f in found["parquet"] if fmt in (None, "parquet") else []:
        t = _read_parquet_file(f)
        if t is not None:
            tables.append(t.select(list(RESULT_COLUMNS)).cast(result_schema()))
    if fmt in (None, "jsonl") and found["jsonl"]:
        tables.append(_jsonl_table(found["jsonl"]))
    if not tables:
        return result_schema().empty_table()
    return pa.concat_tables(tables)


def _done_paths(found: dict[str, list[Path]]) -> set[str]:
    from damofd.engine.inputs import recorded_paths

    done: set[str] = set()
    for f in found["jsonl"]:
        done |= recorded_paths(f)
    for f in found["parquet"]:
        t = _read_parquet_file(f, ["path", "error"])
        if t is not None:
            for path, error in zip(t.column("path").to_pylist(), t.column("error").to_pylist()):
                if error is None and isinstance(path, str):
                    done.add(path)
    return done


def _prepare_out(out_dir: Path, fmt: str, force: bool) -> tuple[set[str], set[Path]]:
    """(paths done, result files present) after the format and ``--force`` checks."""
    found = _result_files(out_dir)
    if force:
        for files in found.values():
            for f in files:
                f.unlink(missing_ok=True)
        return set(), set()
    other = next((f for f in FORMATS if f != fmt and found[f]), None)
    if other is not None:
        n = len(found[other])
        raise ConfigError(
            f"--out {out_dir} already holds {other} results ({n} file{'s' if n != 1 else ''}, "
            f"e.g. {found[other][0]}); resume them with --format {other}, start afresh with "
            f"--force, or write to another --out (one format per folder)"
        )
    return _done_paths(found), set(found[fmt])


def signal_handlers() -> dict[int, Any]:
    """This process's SIGTERM/SIGINT handlers: ``ray.init`` installs its own in the driver and
    ``ray.shutdown`` leaves them; :func:`restore_signal_handlers` gives these back."""
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}


def restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
