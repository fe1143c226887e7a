"""``damofd detect --engine ray``: the command-line runner of :mod:`damofd.engine.ray`.

It starts (or joins) Ray, expands the inputs, skips the images already recorded under
``--out DIR/detections/`` (resuming), runs :func:`damofd.engine.ray.detect_dataset` with a pool
of detector actors, writes the result files as blocks finish, and prints the same summary as
the local engine. See docs/ray.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from damofd.engine.ray import (
    RESULTS_DIR,
    DetectorConfig,
    _jsonl_table,
    _pool,
    _prepare_out,
    _read_parquet_file,
    _result_files,
    detect_dataset,
    import_ray,
    restore_signal_handlers,
    signal_handlers,
    write_results,
)
from damofd.errors import ConfigError, DamoFDError

if TYPE_CHECKING:
    from damofd.engine.inputs import InputItem

__all__ = ["run_detect_cli"]


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _start_ray(ray: Any, address: str | None) -> tuple[bool, float, str]:
    """(started here, seconds, where): join ``address`` (or ``$RAY_ADDRESS``), else start a
    local instance with this machine's CPUs; an initialised Ray (a caller's) is used as is."""
    if ray.is_initialized():
        return False, 0.0, "the running Ray instance"
    t0 = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **common)
            where = f"the Ray cluster at {address}"
        else:
            # "local": a new instance, not the cluster a `ray start` on this machine left behind.
            # Keep a few worker processes beyond one per CPU: the actors fill the CPUs, and Ray
            # would otherwise kill the idle write worker after each block and start a new one
            # for the next (1-2 CPU-s each: +29 % CPU per image with 2 actors on 2 cores)
            cpus = _local_cpus()
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                _system_config={"num_workers_soft_limit": cpus + 4},
                **common,
            )
            where = "a local Ray instance"
    except (ConnectionError, RuntimeError, ValueError) as e:
        target = address or "a local instance"
        hint = ""
        if address and address != "auto" and not os.environ.get("RAY_AUTH_MODE"):
            hint = (
                " (a cluster with token authentication, Ray's default, also needs "
                "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN; "
                "see docs/ray.md)"
            )
        raise ConfigError(f"cannot start or join Ray ({target}): {e}{hint}") from None
    return True, time.perf_counter() - t0, where


class _NoCpuNotice(logging.Filter):
    """Drops Ray Data's "no available CPUs, the job will hang" notice: its check runs again when
    the write has finished, while the actor pool still holds the CPUs, and the write tasks here
    reserve none, so it is a false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


def _quiet_cpu_notice() -> None:
    log = logging.getLogger("ray.data.dataset")
    if not any(isinstance(f, _NoCpuNotice) for f in log.filters):
        log.addFilter(_NoCpuNotice())


def _blocks(n: int, batch_size: int, actors: int) -> int:
    """Input blocks: each becomes one result file (the unit a rerun resumes at), at most 256
    images, and at least 4 per actor so the pool stays busy to the end."""
    rows = max(batch_size, min(256, -(-n // (4 * max(1, actors)))))
    return max(1, -(-n // rows))


def _read_new(files: list[Path], fmt: str) -> list[tuple[str, str | None, int]]:
    """(path, error, faces) of the records in the files this run wrote."""
    out: list[tuple[str, str | None, int]] = []
    if fmt == "parquet":
        for f in files:
            t = _read_parquet_file(f, ["path", "error", "scores"])
            if t is None:
                continue
            for p, e, s in zip(*(t.column(c).to_pylist() for c in ("path", "error", "scores"))):
                out.append((p, e, len(s or [])))
    else:
        for row in _jsonl_table(files).select(["path", "error", "scores"]).to_pylist():
            out.append((row["path"], row["error"], len(row["scores"] or [])))
    return out


@dataclasses.dataclass
class _RayRun:
    """How a job ran on Ray: for the summary line."""

    started: bool = False  # a Ray instance started (or joined) here
    startup_s: float = 0.0
    where: str = ""
    actors_desc: str = ""


def _probe_model_label(config: DetectorConfig, gpus: float) -> str:
    """Build the detector once on the driver and return its label: fails fast (bad model options,
    missing files) before Ray starts; GPU actors' options are checked on the CPU here (the driver
    may have no GPU)."""
    probe_config = dataclasses.replace(config, threads=1, workers=0)
    if gpus > 0:
        probe_config = dataclasses.replace(probe_config, device="cpu", fp16=False)
    probe = probe_config.build()
    model_label = probe.model_label
    del probe
    return model_label


def _report_non_images(items: list[InputItem]) -> int:
    """Warn about the empty inputs and videos (not for this engine); how many there were."""
    n_failed = 0
    for it in items:
        if it.kind == "empty":
            n_failed += 1
            sys.stderr.write(f"damofd detect: warning: {it.source}: {it.note}\n")
        elif it.kind == "video":
            n_failed += 1
            sys.stderr.write(
                f"damofd detect: skipped {it.source}: a video (--engine ray detects images; "
                f"run videos with --engine local)\n"
            )
    return n_failed


def _rows_to_do(
    items: list[InputItem], done: set[str], out_dir: Path, save_vis: bool
) -> tuple[list[dict[str, Any]], int]:
    """The dataset rows (``path``, ``vis``) of the images not done yet, and how many images are
    skipped as done earlier (said on stderr)."""
    from damofd.engine.inputs import OutputNamer

    images = [it for it in items if it.kind == "image"]
    todo = [it for it in images if it.source not in done]
    n_skipped = len(images) - len(todo)
    if n_skipped:
        sys.stderr.write(
            f"damofd detect: resuming: {n_skipped} image{'s' if n_skipped != 1 else ''} "
            f"already in {out_dir} (--force to redo them)\n"
        )
    namer = OutputNamer(out_dir) if save_vis else None
    rows = [
        {
            "path": it.source,
            "vis": None if namer is None else str(namer.image_name_for(it.source, it.base)),
        }
        for it in todo
    ]
    return rows, n_skipped


def _check_local_cpus(args: argparse.Namespace) -> None:
    """:class:`ConfigError` when a local Ray instance lacks the CPUs of ``--num-actors`` ×
    ``--cpus-per-actor``."""
    if args.num_actors is None:
        return
    lo = args.num_actors if isinstance(args.num_actors, int) else args.num_actors[0]
    need = lo * float(args.cpus_per_actor)
    if need > _local_cpus() + 1e-9:
        raise ConfigError(
            f"--num-actors {lo} × --cpus-per-actor {args.cpus_per_actor:g} needs "
            f"{need:g} CPUs, the local Ray instance has {_local_cpus()}; lower "
            f"--cpus-per-actor (e.g. {_local_cpus() / lo:g}) or join a cluster "
            f"with --ray-address"
        )


def _check_local_gpus(ray: Any, gpus: float) -> None:
    """:class:`ConfigError` when a local Ray instance lacks the GPUs of ``--gpus-per-actor``."""
    have = ray.cluster_resources().get("GPU", 0.0)
    if have < gpus:
        raise ConfigError(
            f"--gpus-per-actor {gpus:g}: the local Ray instance sees {have:g} GPUs; "
            f"drop the option or join a cluster with GPU nodes (--ray-address)"
        )


def _configure_ray_data(ray: Any, args: argparse.Namespace) -> None:
    """Ray Data's progress bars (only on a terminal, not with ``--no-progress``) and logging."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not args.no_progress and sys.stderr.isatty()
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # not the "Progress bars disabled" notice: --no-progress or no terminal asked for it
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    _quiet_cpu_notice()


def _actor_pool(
    ray: Any, args: argparse.Namespace, n_rows: int, batch_size: int, gpus: float
) -> tuple[int | tuple[int, int], int, int, str]:
    """(actors (a number or a min-max range), most actors, input blocks, its description)."""
    _, max_actors = _pool(ray, args.num_actors, float(args.cpus_per_actor), gpus)
    blocks = _blocks(n_rows, batch_size, max_actors)
    # no more actors than blocks (a small job): the others would have nothing to do
    na: int | tuple[int, int] = args.num_actors or max_actors
    na = min(na, blocks) if isinstance(na, int) else (min(na[0], blocks), min(na[1], blocks))
    max_actors = na if isinstance(na, int) else na[1]
    actors_desc = (
        f"{na} actor{'s' if na != 1 else ''}" if isinstance(na, int) else f"{na[0]}-{na[1]} actors"
    )
    return na, max_actors, blocks, actors_desc


def _run_on_ray(
    ray: Any,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    config: DetectorConfig,
    gpus: float,
    results_dir: Path,
    fmt: str,
) -> _RayRun:
    """Start (or join) Ray, detect ``rows`` with a pool of actors and write the result files
    under ``results_dir``; a Ray instance started here is shut down again."""
    handlers = signal_handlers()  # the CLI can run in-process: leave its handlers as found
    started, startup_s, where = _start_ray(ray, args.ray_address)
    try:
        local = args.ray_address is None and started  # the local instance started here
        if local:
            _check_local_cpus(args)
        _configure_ray_data(ray, args)
        if gpus > 0 and local:
            _check_local_gpus(ray, gpus)
        na, max_actors, blocks, actors_desc = _actor_pool(
            ray, args, len(rows), config.batch_size, gpus
        )
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        found = detect_dataset(
            ds,
            config=config,
            num_actors=na,
            cpus_per_actor=float(args.cpus_per_actor),
            gpus_per_actor=gpus,
            vis_column="vis",
        )
        try:
            write_results(
                found, str(results_dir), fmt, concurrency=max(1, min(4, max_actors, blocks))
            )
        except ray.exceptions.RayError as e:
            raise DamoFDError(
                f"the Ray job failed ({str(e).splitlines()[0]}); the blocks it finished are "
                f"kept in {results_dir}: run the same command again to resume"
            ) from None
    finally:
        if started:
            ray.shutdown()
            restore_signal_handlers(handlers)
    return _RayRun(started, startup_s, where, actors_desc)


def _summarize(
    records: list[tuple[str, str | None, int]],
    n_failed: int,
    n_sent: int,
    n_skipped: int,
    dt: float,
    model_label: str,
    run: _RayRun,
    results_dir: Path,
    fmt: str,
) -> int:
    """Say the failed images and the summary line on stderr; the exit status."""
    n_faces = 0
    for _path, error, faces in records:
        if error is not None:
            n_failed += 1
            sys.stderr.write(f"damofd detect: skipped {error}\n")
        else:
            n_faces += faces
    n_images = len(records)
    line = (
        f"damofd detect: {n_images} image{'s' if n_images != 1 else ''}, {n_faces} "
        f"face{'s' if n_faces != 1 else ''}, {n_failed} failed, {dt:.1f} s; model {model_label}"
    )
    if n_sent:
        line += f"; engine ray ({run.actors_desc} on {run.where}"
        line += f", Ray start-up {run.startup_s:.1f} s)" if run.started else ")"
    if n_skipped:
        line += f"; {n_skipped} skipped (done earlier)"
    line += f"; results in {results_dir}/ ({fmt})"
    sys.stderr.write(line + "\n")
    if n_images != n_sent:
        sys.stderr.write(
            f"damofd detect: warning: {n_sent} images were sent, {n_images} recorded\n"
        )
        return 1
    return 1 if n_failed else 0


def run_detect_cli(args: argparse.Namespace, items: list[InputItem]) -> int:
    """``damofd detect --engine ray``: ``items`` (from
    :func:`damofd.engine.inputs.expand_inputs`) through :func:`detect_dataset` on a local Ray
    instance or the cluster of ``--ray-address``, results written under ``--out/detections/``
    with Ray's writers; resumable, with the summary and exit status of the local engine."""
    ray = import_ray()
    from damofd.engine.inputs import DEFAULT_OUT
    from damofd.io import ensure_writable_dir, remove_stale_tmp

    if any(it.kind == "camera" for it in items):
        raise ConfigError("--engine ray detects images; run cameras with --engine local")
    fmt = args.format or "jsonl"
    out_dir = ensure_writable_dir(args.out or DEFAULT_OUT)
    # drawings left half-written by a killed run (not those of a run writing now)
    remove_stale_tmp(out_dir, min_age_s=600, recursive=True)
    results_dir = out_dir / RESULTS_DIR
    config = DetectorConfig.from_args(args)
    gpus = float(args.gpus_per_actor)
    model_label = _probe_model_label(config, gpus)
    done, before = _prepare_out(out_dir, fmt, args.force)
    n_failed = _report_non_images(items)
    rows, n_skipped = _rows_to_do(items, done, out_dir, args.save_vis)

    t0 = time.perf_counter()
    run = _RayRun()
    new_files: list[Path] = []
    if rows:
        run = _run_on_ray(ray, args, rows, config, gpus, results_dir, fmt)
        after = set(_result_files(out_dir)[fmt])
        new_files = sorted(after - before)
    dt = time.perf_counter() - t0

    records = sorted(_read_new(new_files, fmt), key=lambda r: r[0])
    return _summarize(
        records, n_failed, len(rows), n_skipped, dt, model_label, run, results_dir, fmt
    )
