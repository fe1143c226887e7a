"""End-to-end WIDER FACE evaluation: run a detector over a WIDER split, write the per-image
prediction files, evaluate them (``damofd eval``).

This runner drives several stages (models, inference, export for ``backend="onnx"``,
evaluation), so it sits in the application layer :mod:`damofd.engine`; the metric itself is
:mod:`damofd.evaluation` (pure NumPy/SciPy).

::

    from damofd.engine.wider_eval import run_wider_eval
    run = run_wider_eval("det_500m.onnx", "WIDER_val", protocol="insightface", subset=True)
    print(run.result.easy, run.result.medium, run.result.hard, run.images_per_s)

Inputs:

* ``wider_root``: a WIDER split folder holding ``images/<event>/<name>.jpg`` (``WIDER_val``);
  the ``images`` folder itself is accepted too;
* ground truth (:func:`damofd.evaluation.load_wider_gt`): ``--gt``, else
  ``<wider_root>/../ground_truth`` or ``<wider_root>/gt`` when one holds ``wider_face_val.mat``.

Detection follows the chosen test protocol of :mod:`damofd.inference.preprocess` (default
``vga``: reference spec §4.5 mode 0, keep-ratio into 640×640, score threshold 0.02, NMS 0.45) and
is batched. Every image's detections are written **atomically** to
``<work_dir>/<event>/<name>.txt`` in the layout of the reference ``tools/test_widerface.py``::

    <event>/<name>.jpg
    N
    x y w h score          (``%.5f %.5f %.5f %.5f %g``; pixels, xywh with w = x2 − x1, no +1)

so ``damofd eval-wider --pred <work_dir>`` gives the same numbers. The run is **resumable**: a
file that is present and complete (name line, count, that many well-formed rows, final newline)
is read back instead of recomputed. ``<work_dir>/run.json`` records the settings the files were
made with (model and its sha256, backend, protocol, thresholds); a later run with different
settings refuses to mix its detections with them unless ``fresh=True``. The evaluation reads
the values as written (the same rounding the files carry) and the summary goes to
``<work_dir>/results.json``.

The prediction files themselves (format, reading back, detecting into them) are
:mod:`damofd.engine.wider_predictions`; their public names are re-exported here.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from damofd.constants import WIDER_IMAGE_EXTENSIONS, WIDER_SCORE_THR
from damofd.engine.eval_model import (
    EvalModel,
    build_eval_model,
    model_label,
    remove_empty_dirs,
    to_onnx_model,
)
from damofd.engine.wider_predictions import (
    _detect,
    _read_predictions,
    _remove_stale_temporaries,
    format_prediction_txt,
    parse_prediction_txt,
)
from damofd.errors import ConfigError, DamoFDError, InputError
from damofd.evaluation.ground_truth import GT_FILES, WiderGroundTruth, load_wider_gt
from damofd.evaluation.wider_images import WiderImage
from damofd.evaluation.wider_images import list_wider_images as _list_wider_images
from damofd.evaluation.widerface import WiderResult, evaluate_wider

__all__ = [
    "DEFAULT_EVAL_SCORE_THR",
    "EvalRun",
    "WiderImage",
    "default_work_dir",
    "find_ground_truth",
    "format_prediction_txt",
    "list_wider_images",
    "parse_prediction_txt",
    "run_wider_eval",
]

#: Score threshold of the WIDER protocol (reference ``tools/test_widerface.py --thr``).
DEFAULT_EVAL_SCORE_THR = WIDER_SCORE_THR
_IMAGE_EXTS = WIDER_IMAGE_EXTENSIONS
_MANIFEST = "run.json"
_RESULTS = "results.json"
_MANIFEST_VERSION = 1

# Options named in error advice: (Python argument, command-line flag of ``damofd eval``).
_OPTIONS = {
    "wider_root": ("wider_root", "--wider-root"),
    "gt": ("gt", "--gt"),
    "subset": ("subset=True", "--subset"),
    "fresh": ("fresh=True", "--fresh"),
    "work_dir": ("work_dir", "--work-dir"),
    "weights": ("weights", "--weights"),
}
_E = TypeVar("_E", bound=DamoFDError)


def _option_error(cls: type[_E], message: Callable[[Callable[[str], str]], str]) -> _E:
    """An error whose advice names options: ``message(name)`` builds the text from a function
    that words an option. ``str(error)`` names the Python argument and the flag
    (``subset=True (--subset)``); ``error.cli_message`` names only the flag, and is what
    ``damofd eval`` prints."""
    err = cls(message(lambda k: f"{_OPTIONS[k][0]} ({_OPTIONS[k][1]})"))
    err.cli_message = message(lambda k: _OPTIONS[k][1])  # type: ignore[attr-defined]
    return err


# ----------------------------------------------------------------------------------------------
# inputs


def list_wider_images(wider_root: str | os.PathLike[str]) -> list[WiderImage]:
    """Every image under ``<wider_root>/images/<event>/`` (or ``<wider_root>/<event>/``), sorted
    by event and file name (:func:`damofd.evaluation.wider_images.list_wider_images`, the one
    listing that training's validation uses too). Raises :class:`InputError` when there is
    none."""
    root = Path(wider_root)
    if not root.is_dir():
        raise _option_error(
            InputError, lambda o: f"{o('wider_root')} {str(root)!r} is not a folder"
        )
    return _list_wider_images(root)


def find_ground_truth(
    wider_root: str | os.PathLike[str], gt: str | os.PathLike[str] | None = None
) -> Path:
    """``gt`` if given, else ``<wider_root>/../ground_truth`` or ``<wider_root>/gt`` when it holds
    ``wider_face_val.mat``; otherwise :class:`InputError` asking for ``--gt``."""
    if gt is not None:
        return Path(gt)
    root = Path(wider_root)
    candidates = [root.parent / "ground_truth", root / "gt"]
    for c in candidates:
        if (c / GT_FILES["face"]).is_file():
            return c
    looked = " and ".join(repr(str(c / GT_FILES["face"])) for c in candidates)
    raise _option_error(
        InputError,
        lambda o: (
            f"no ground truth found for {o('wider_root')} {str(root)!r} (looked for "
            f"{looked}); pass {o('gt')} DIR, the folder with wider_face_val.mat and "
            f"wider_{{easy,medium,hard}}_val.mat"
        ),
    )


def default_work_dir(model_label: str, protocol: str) -> Path:
    """``./runs/eval/<model>-<protocol>`` (characters unsafe in a folder name replaced)."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in f"{model_label}-{protocol}")
    return Path("runs") / "eval" / safe


# ----------------------------------------------------------------------------------------------
# result


@dataclass
class EvalRun:
    """Outcome of :func:`run_wider_eval`.

    Attributes:
        result: the :class:`~damofd.evaluation.WiderResult` (``.easy`` etc. in [0, 1]).
        work_dir: folder holding ``<event>/<name>.txt``, ``run.json`` and ``results.json``.
        gt: ground-truth folder used.
        settings: what the detections depend on (model identity, backend, protocol, thresholds).
        images: images evaluated.
        detected: keys (``event/name``) detected in this run.
        reused: keys whose complete prediction file was kept from an earlier run.
        timings: seconds: ``read_gt``, ``load_model``, ``detect`` (reading images, network,
            decoding, writing files), ``evaluate`` (the protocol), ``total``.
    """

    result: WiderResult
    work_dir: Path
    gt: Path
    settings: dict[str, Any]
    images: int
    detected: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1

    @property
    def images_per_s(self) -> float | None:
        """Detection throughput of this run (None when nothing was detected)."""
        t = self.timings.get("detect", 0.0)
        return len(self.detected) / t if self.detected and t > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The ``eval-wider`` JSON summary plus the run settings, timing and throughput."""
        out = self.result.to_dict()
        out["pred"] = str(self.work_dir)
        out["gt"] = str(self.gt)
        out.update(
            model=self.settings["model"],
            backend=self.settings["backend"],
            protocol=self.settings["protocol"],
            score_thr=self.settings["score_thr"],
            nms_thr=self.settings["nms_thr"],
            work_dir=str(self.work_dir),
            detection={
                "images": self.images,
                "detected": len(self.detected),
                "reused": len(self.reused),
                "batch_size": self.batch_size,
                "seconds": round(self.timings.get("detect", 0.0), 3),
                "images_per_s": None if self.images_per_s is None else round(self.images_per_s, 3),
            },
        )
        out["timings"] = {
            **out.get("timings", {}),
            **{k: round(v, 3) for k, v in self.timings.items()},
        }
        return out


# ----------------------------------------------------------------------------------------------
# driver


def _check_against_gt(
    images: Sequence[WiderImage], gt: WiderGroundTruth, subset: bool, gt_dir: Path
) -> None:
    unknown = [im for im in images if gt.index_of(im.name) is None]
    if unknown:
        ex = ", ".join(str(im.path) for im in unknown[:3])
        more = ", …" if len(unknown) > 3 else ""
        raise _option_error(
            InputError,
            lambda o: (
                f"{len(unknown)} image(s) are not in the ground truth {str(gt_dir)!r}: "
                f"{ex}{more} (wrong {o('gt')} or split?)"
            ),
        )
    wrong = [im for im in images if gt.events[gt.index_of(im.name)] != im.event]  # type: ignore[index]
    if wrong:
        im = wrong[0]
        raise InputError(
            f"{im.path}: sits in event folder {im.event!r}, the ground truth puts it in "
            f"{gt.events[gt.index_of(im.name)]!r}"  # type: ignore[index]
        )
    if not subset and len(images) < len(gt):
        have = {im.name for im in images}
        missing = [k for k, n in zip(gt.keys, gt.names) if n not in have]
        raise _option_error(
            InputError,
            lambda o: (
                f"{len(missing)} of {len(gt)} ground-truth images are not under the wider "
                f"root (e.g. {', '.join(missing[:3])}); pass {o('subset')} to evaluate only the "
                f"{len(images)} images present"
            ),
        )


def _check_options(
    batch_size: int, limit: int | None, threads: int | None, score_thr: float, nms_thr: float | None
) -> tuple[float, float | None]:
    """:class:`ConfigError` for bad numbers; the checked thresholds."""
    from damofd.inference.detector import check_nms_thr, check_score_thr

    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be ≥ 1, got {limit}")
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be ≥ 0 (0: one per core), got {threads}")
    return check_score_thr(score_thr), None if nms_thr is None else check_nms_thr(nms_thr)


def _run_settings(
    built: EvalModel, kind: str, fp16: bool, score_thr: float, nms_thr: float | None
) -> dict[str, Any]:
    """The run record (``run.json``): what makes two runs' prediction files interchangeable."""
    proto = built.detector.protocol
    return {
        "version": _MANIFEST_VERSION,
        "model": built.label,
        "model_id": built.identity,
        "backend": kind,
        "fp16": bool(fp16) and kind == "torch",
        "protocol": proto.name,
        "protocol_size": list(proto.size) if proto.size else None,
        "score_thr": float(score_thr),
        "nms_thr": float(nms_thr) if nms_thr is not None else proto.nms_thr,
    }


def _check_manifest(manifest: Path, settings: dict[str, Any], wd: Path) -> None:
    """:class:`InputError` when the work dir's run record differs from ``settings``."""
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        raise _option_error(
            InputError,
            lambda o: f"{manifest}: unreadable run record; use {o('fresh')} to start over",
        )
    diff = [k for k in settings if old.get(k) != settings[k]]
    if diff:
        desc = "; ".join(f"{k}: {old.get(k)!r} → {settings[k]!r}" for k in diff)
        raise _option_error(
            InputError,
            lambda o: (
                f"work dir {str(wd)!r} holds predictions made with other settings "
                f"({desc}); use another {o('work_dir')}, or {o('fresh')} to recompute them"
            ),
        )


def _load_split(
    wider_root: str | os.PathLike[str],
    gt: str | os.PathLike[str] | None,
    limit: int | None,
    subset: bool,
) -> tuple[list[WiderImage], bool, Path, WiderGroundTruth, float]:
    """(images, subset, ground-truth folder, ground truth, seconds reading it): the split's
    images (the first ``limit``, which implies ``subset``), checked against the ground truth."""
    images = list_wider_images(wider_root)
    if limit is not None:
        images = images[:limit]
        subset = True
    gt_dir = find_ground_truth(wider_root, gt)
    t0 = time.perf_counter()
    gt_all = load_wider_gt(gt_dir)
    t_gt = time.perf_counter() - t0
    _check_against_gt(images, gt_all, subset, gt_dir)
    return images, subset, gt_dir, gt_all, t_gt


def _work_dir(work_dir: str | os.PathLike[str] | None, model: Any, protocol: str) -> Path:
    """The absolute work dir (``work_dir``, else :func:`default_work_dir`); not created yet."""
    wd = Path(work_dir) if work_dir is not None else default_work_dir(model_label(model), protocol)
    wd = wd.absolute()
    if wd.exists() and not wd.is_dir():
        raise NotADirectoryError(f"work dir {str(wd)!r} exists and is not a directory")
    return wd


def _load_model(
    model: Any,
    wd: Path,
    common: dict[str, Any],
    *,
    backend: str | None,
    weights: str | os.PathLike[str] | None,
    device: str,
    fp16: bool,
    threads: int | None,
    fresh: bool,
) -> tuple[EvalModel, dict[str, Any], bool]:
    """(model, run settings, whether ``wd`` had a run record): build the detector, then make the
    work dir, check its run record (unless ``fresh``) and export to ONNX if ``backend`` asks."""
    from damofd.io import ensure_writable_dir, remove_stale_tmp

    built = build_eval_model(
        model,
        backend=backend,
        weights=weights,
        common=common,
        device=device,
        fp16=fp16,
        threads=threads,
    )
    # the work dir is made only now that the model has loaded (a failed load leaves nothing)
    created = [d for d in (wd, *wd.parents) if not d.exists()]
    ensure_writable_dir(wd, "work dir")
    remove_stale_tmp(wd, min_age_s=600, recursive=True)  # left by a killed run
    kind = "onnx" if backend == "onnx" else built.backend
    settings = _run_settings(built, kind, fp16, common["score_thr"], common["nms_thr"])
    manifest = wd / _MANIFEST
    had_manifest = manifest.is_file()
    if had_manifest and not fresh:
        _check_manifest(manifest, settings, wd)
    if kind != built.backend:
        try:
            built = to_onnx_model(built, wd / "model.onnx", threads)
        except BaseException:
            remove_empty_dirs(created)
            raise
    return built, settings, had_manifest


def _reusable_predictions(
    images: Sequence[WiderImage], wd: Path, fresh: bool, had_manifest: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rows of the complete prediction files a resumed run keeps (none when ``fresh``), and
    their image keys; warns when they have no run record to vouch for them."""
    events = sorted({im.event for im in images})
    _remove_stale_temporaries(wd / e for e in events)
    rows, reused = ({}, []) if fresh else _read_predictions(images, wd)
    if reused and not had_manifest:
        warnings.warn(
            f"reusing {len(reused)} prediction files found in {str(wd)!r} without a run record "
            f"({_MANIFEST}); they are assumed to come from this model and these settings (use "
            f"--fresh to recompute them)",
            RuntimeWarning,
            stacklevel=3,  # the caller of run_wider_eval
        )
    return rows, reused


def _detect_missing(
    built: EvalModel,
    images: Sequence[WiderImage],
    wd: Path,
    rows: dict[str, np.ndarray],
    progress: bool,
) -> list[str]:
    """Detect the images without rows, writing their prediction files; the keys detected.
    :class:`InputError` when some could not be read (after the others are saved)."""
    todo = [im for im in images if im.key not in rows]
    det = built.detector
    desc = f"{built.label} [{det.protocol.name}]"
    detected, failed = _detect(det, todo, wd, rows, desc, progress)
    if failed:
        raise InputError(
            f"{len(failed)} image(s) could not be read (the other predictions are saved in "
            f"{str(wd)!r}; fix or remove them and re-run): {'; '.join(failed[:3])}"
        )
    return detected


def run_wider_eval(
    model: Any,
    wider_root: str | os.PathLike[str],
    gt: str | os.PathLike[str] | None = None,
    *,
    protocol: str = "vga",
    score_thr: float = DEFAULT_EVAL_SCORE_THR,
    nms_thr: float | None = None,
    subset: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    backend: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    fp16: bool = False,
    threads: int | None = None,
    limit: int | None = None,
    fresh: bool = False,
    progress: bool = False,
) -> EvalRun:
    """Detect faces in every image of a WIDER split, write the prediction files, evaluate.

    Args:
        model: an ONNX file (official SCRFD/insightface or ours), a ``.pth`` checkpoint, a zoo
            name (with ``weights``; DamoFD names without weights go through ModelScope), a
            ModelScope id or folder, an :class:`~damofd.models.SCRFD` module or a
            :class:`~damofd.inference.FaceDetector` (its backend is reused).
        wider_root: split folder with ``images/<event>/<name>.jpg``.
        gt: ground-truth folder; default :func:`find_ground_truth`.
        protocol: ``vga`` (default, published-AP protocol), ``original``, ``insightface``
            (official ONNX wrapper) or ``HxW``.
        score_thr: keep detections above this (protocol: 0.02).
        nms_thr: NMS IoU threshold; None = the protocol's (0.45, insightface 0.4).
        subset: evaluate only the ground-truth images present under ``wider_root`` (default:
            every ground-truth image must be there, checked before any detection).
        work_dir: where the prediction files go; default ``./runs/eval/<model>-<protocol>``.
        batch_size: images per forward pass.
        backend: ``"onnx"`` or ``"torch"``; default onnx for an ONNX file, torch otherwise (a
            PyTorch model with ``"onnx"`` is exported to ``<work_dir>/model.onnx`` first).
        weights: ``.pth`` or ONNX weights for a zoo name.
        device, fp16: PyTorch device and half precision (CUDA only).
        threads: onnxruntime intra-op threads (default: one per core).
        limit: only the first ``limit`` images (sorted by event and name); implies ``subset``.
        fresh: ignore (and overwrite) existing prediction files, even made with other settings.
        progress: show a tqdm progress bar on stderr.

    Returns:
        :class:`EvalRun`; ``run.to_dict()`` is what ``damofd eval --json`` prints.

    Raises:
        InputError: missing folders/files, images not in the ground truth, missing images in
            strict mode, a work dir holding predictions made with other settings, images that
            cannot be read (after the others are done and saved).
        ConfigError: bad option combination.
    """
    from damofd.inference.preprocess import get_protocol
    from damofd.io import atomic_write_json

    t_start = time.perf_counter()
    score_thr, nms_thr = _check_options(batch_size, limit, threads, score_thr, nms_thr)
    proto = get_protocol(protocol)
    images, subset, gt_dir, gt_all, t_gt = _load_split(wider_root, gt, limit, subset)

    common = {
        "protocol": proto,
        "score_thr": float(score_thr),
        "nms_thr": nms_thr,
        "batch_size": int(batch_size),
    }
    wd = _work_dir(work_dir, model, proto.name)
    t0 = time.perf_counter()
    built, settings, had_manifest = _load_model(
        model,
        wd,
        common,
        backend=backend,
        weights=weights,
        device=device,
        fp16=fp16,
        threads=threads,
        fresh=fresh,
    )
    t_load = time.perf_counter() - t0
    atomic_write_json(wd / _MANIFEST, settings)

    rows, reused = _reusable_predictions(images, wd, fresh, had_manifest)
    t0 = time.perf_counter()
    detected = _detect_missing(built, images, wd, rows, progress)
    t_detect = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = evaluate_wider({im.key: rows[im.key] for im in images}, gt_all, subset=subset)
    t_eval = time.perf_counter() - t0
    run = EvalRun(
        result=result,
        work_dir=wd,
        gt=gt_dir,
        settings=settings,
        images=len(images),
        detected=detected,
        reused=reused,
        batch_size=int(batch_size),
        timings={
            "read_gt": t_gt,
            "load_model": t_load,
            "detect": t_detect,
            "evaluate": t_eval,
            "total": time.perf_counter() - t_start,
        },
    )
    atomic_write_json(wd / _RESULTS, run.to_dict())
    return run
