"""Load (and write) DamoFD models in the ModelScope model-repository layout.

A ModelScope DamoFD repository (reference spec §8.1–8.3), e.g.
``damo/cv_ddsar_face-detection_iclr23-damofd`` (0.5G), ``…-damofd-2.5G``, ``…-damofd-10G``,
``…-damofd-34G`` (all with keypoints), holds three files:

* ``configuration.json`` — ModelScope metadata; ``model.type`` must be ``"damofd"``
  (task ``face-detection``);
* ``DamoFD_lms.py`` — an mmcv config (a Python file of dict literals). It is **never executed**:
  :func:`damofd.models.mmcv_config.read_mmcv_config` evaluates the top-level assignments with a
  small ``ast`` interpreter (the mmcv reader and translator live in
  :mod:`damofd.models.mmcv_config` and are re-exported here);
* ``pytorch_model.pt`` — an mmcv checkpoint ``{'meta', 'state_dict'[, 'optimizer']}`` with the
  mmdet key names (reference spec §8.4), loaded strictly.

:func:`load_modelscope` accepts a directory or a model id. Ids are looked up in the damofd cache
(``$DAMOFD_CACHE/modelscope`` or ``~/.cache/damofd/modelscope``) and otherwise fetched with the
official client (``modelscope.hub.snapshot_download``, install ``damofd[hub]``). Without the client
or the network the error says which files to download from where and where to put them.

:func:`save_modelscope_dir` writes the same layout from a damofd model, so that our models can
be published to (or tested against) the ModelScope layout. The official ids are
:data:`MODELSCOPE_MODELS` (the one table, kept by :mod:`damofd.models.zoo`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from damofd.errors import ConfigError, DamoFDError, InputError
from damofd.io import read_json_object
from damofd.models.configs import DetectorConfig

# the mmcv config reader/translator, re-exported: this module's API before the split
from damofd.models.mmcv_config import (
    config_from_mmcv,
    mmcv_config_text,
    mmcv_model_dict,
    read_mmcv_config,
)

# the one table of official ModelScope ids lives with the zoo's other weight sources
from damofd.models.zoo import MODELSCOPE_MODELS, get_config, list_models

if TYPE_CHECKING:
    from damofd.models.detector import SCRFD

__all__ = [
    "CACHE_ENV",
    "CONFIG_FILE",
    "CONFIGURATION_FILE",
    "HubDownloadError",
    "MODELSCOPE_FILES",
    "MODELSCOPE_MODELS",
    "MODEL_FILE",
    "config_from_mmcv",
    "download_modelscope",
    "is_modelscope_dir",
    "load_modelscope",
    "load_modelscope_dir",
    "load_weights",
    "match_zoo_config",
    "mmcv_config_text",
    "mmcv_model_dict",
    "modelscope_cache_dir",
    "read_mmcv_config",
    "save_modelscope_dir",
]

CONFIGURATION_FILE = "configuration.json"
CONFIG_FILE = "DamoFD_lms.py"
MODEL_FILE = "pytorch_model.pt"
MODELSCOPE_FILES = (CONFIGURATION_FILE, CONFIG_FILE, MODEL_FILE)
CACHE_ENV = "DAMOFD_CACHE"
MODELSCOPE_URL = "https://modelscope.cn/models/{id}/files"


# --------------------------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------------------------


class HubDownloadError(DamoFDError, RuntimeError):
    """A ModelScope model could not be fetched; the message says what to download and where."""


def match_zoo_config(cfg: DetectorConfig) -> str | None:
    """The zoo name whose config equals ``cfg`` (neck ``in_channels`` below ``start_level`` are
    ignored: they are unused, and DamoFD-34G's config writes 192 for a 224-channel C2), or None."""

    def norm(c: DetectorConfig) -> DetectorConfig:
        s = c.neck.start_level
        neck = dataclasses.replace(c.neck, in_channels=(1,) * s + tuple(c.neck.in_channels[s:]))
        return dataclasses.replace(c, neck=neck)

    target = norm(cfg)
    for name in list_models():
        if norm(get_config(name)) == target:
            return name
    return None


def is_modelscope_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory holding ``configuration.json``."""
    p = Path(path)
    return p.is_dir() and (p / CONFIGURATION_FILE).is_file()


def _read_configuration(path: Path) -> dict[str, Any]:
    data = read_json_object(path, InputError)
    model = data.get("model")
    mtype = model.get("type") if isinstance(model, dict) else None
    if not isinstance(mtype, str) or mtype.lower() != "damofd":
        raise ConfigError(
            f"{path}: model type {mtype!r} is not a DamoFD model (expected "
            'configuration.json to contain "model": {"type": "damofd"})'
        )
    return data


def load_modelscope_dir(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> SCRFD:
    """Build and load the detector of a ModelScope DamoFD model directory.

    The architecture comes from ``DamoFD_lms.py`` (read with :func:`read_mmcv_config`, never
    executed); when it equals a zoo config the model carries the zoo name. ``pytorch_model.pt``
    (mmcv checkpoint, optional ``module.`` prefix) is loaded with strict key matching; only
    tensors and plain containers are unpickled unless ``trust_pickle``.

    Returns the :class:`~damofd.models.SCRFD` in eval mode.
    """
    from damofd.models.detector import SCRFD
    from damofd.models.factory import load_checkpoint

    d = Path(path)
    if not d.is_dir():
        raise InputError(f"{d}: ModelScope model directory not found")
    missing = [f for f in MODELSCOPE_FILES if not (d / f).is_file()]
    if missing:
        raise InputError(
            f"{d}: not a complete ModelScope DamoFD directory, missing {', '.join(missing)} "
            f"(expected {', '.join(MODELSCOPE_FILES)})"
        )
    _read_configuration(d / CONFIGURATION_FILE)
    cfg = config_from_mmcv(read_mmcv_config(d / CONFIG_FILE), where=str(d / CONFIG_FILE))
    name = match_zoo_config(cfg)
    model = SCRFD(cfg, init=False, name=name)
    load_checkpoint(model, d / MODEL_FILE, strict=True, trust_pickle=trust_pickle)
    return model.eval()


def save_modelscope_dir(
    model: SCRFD,
    path: str | os.PathLike[str],
    *,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a ModelScope DamoFD directory (the three files of the official
    repositories): ``configuration.json`` (``model.type = damofd``, task ``face-detection``),
    ``DamoFD_lms.py`` (mmcv config generated from ``model.config``) and ``pytorch_model.pt``
    (mmcv checkpoint in the mmdet key layout). Each file is written atomically.

    The model must have the canonical (unfused) module tree, so that the checkpoint loads into
    the reference code. Returns the directory.
    """
    from damofd.io import atomic_write_json, atomic_write_text
    from damofd.models.checkpoint import save_checkpoint
    from damofd.models.detector import SCRFD

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, DetectorConfig):
        raise ConfigError("save_modelscope_dir needs a damofd SCRFD model (with .config)")
    expected = set(SCRFD(cfg, init=False).state_dict())
    have = set(model.state_dict())
    if have != expected:
        raise ConfigError(
            "save_modelscope_dir: the model's state dict does not have the mmdet layout "
            f"({len(expected - have)} keys missing, {len(have - expected)} unexpected); "
            "a fused model (model.fuse()) cannot be saved, save the unfused one"
        )
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    name = getattr(model, "name", None) or match_zoo_config(cfg)
    configuration = {
        "framework": "pytorch",
        "task": "face-detection",
        "model": {"type": "damofd"},
        "pipeline": {"type": "resnet-face-detection-scrfd10gkps"},
        "damofd": {"model_name": name, "config_file": CONFIG_FILE, "model_file": MODEL_FILE},
    }
    atomic_write_json(d / CONFIGURATION_FILE, configuration)
    header = f"DamoFD detector{f' {name}' if name else ''}: mmcv config written by damofd"
    atomic_write_text(d / CONFIG_FILE, mmcv_config_text(cfg, header=header))
    save_checkpoint(model, d / MODEL_FILE, meta=dict(meta or {}))
    return d


# --------------------------------------------------------------------------------------------
# Model ids and the hub
# --------------------------------------------------------------------------------------------

_FILE_SUFFIXES = (".pth", ".pt", ".onnx", ".json", ".py", ".bin", ".ckpt")
_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def modelscope_cache_dir() -> Path:
    """Where model ids are cached: ``$DAMOFD_CACHE/modelscope``, else
    ``~/.cache/damofd/modelscope``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "damofd"
    return base / "modelscope"


def _id_dir(model_id: str, cache_dir: Path) -> Path:
    return cache_dir.joinpath(*model_id.split("/"))


def _canonical_id(model_id: str) -> str:
    key = model_id.strip().strip("/")
    for known in MODELSCOPE_MODELS:
        if known.lower() == key.lower():
            return known
    return key


def _instructions(model_id: str, target: Path, reason: str, *, client: bool = False) -> str:
    how = (
        ""
        if client
        else "; to download automatically install the hub client: pip install 'damofd[hub]'"
    )
    return (
        f"cannot fetch ModelScope model {model_id!r}: {reason}. Download "
        f"{', '.join(MODELSCOPE_FILES)} from {MODELSCOPE_URL.format(id=model_id)} and put them "
        f"in {target} (or pass that directory instead of the id){how}"
    )


#: seconds a hub download may take before damofd gives up (``$DAMOFD_HUB_TIMEOUT``)
HUB_TIMEOUT_ENV = "DAMOFD_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 20.0


def hub_timeout() -> float:
    """The download budget: ``$DAMOFD_HUB_TIMEOUT`` seconds, default 20."""
    raw = os.environ.get(HUB_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${HUB_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"${HUB_TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def download_modelscope(
    model_id: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Fetch a ModelScope model repository with the official client and return its directory.

    Uses ``modelscope.hub.snapshot_download.snapshot_download(model_id, cache_dir=…)`` (the
    optional extra ``damofd[hub]``; imported only here). The client retries unreachable hosts
    for a long time on its own; damofd waits at most ``timeout`` seconds (default
    :func:`hub_timeout`, ``$DAMOFD_HUB_TIMEOUT``) and then gives up, the download left running
    in a background thread. Raises :class:`HubDownloadError` — saying whether the client is
    missing or the hub unreachable, which files to download from where and where to put them.
    """
    import concurrent.futures

    model_id = _canonical_id(model_id)
    cache = Path(cache_dir) if cache_dir is not None else modelscope_cache_dir()
    target = _id_dir(model_id, cache)
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise HubDownloadError(
            _instructions(model_id, target, f"the modelscope client is not installed ({exc})")
        ) from None
    kwargs: dict[str, Any] = {"cache_dir": str(cache)}
    if revision is not None:
        kwargs["revision"] = revision
    budget = hub_timeout() if timeout is None else float(timeout)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="damofd-hub")
    future = pool.submit(snapshot_download, model_id, **kwargs)
    pool.shutdown(wait=False)
    try:
        local = future.result(timeout=budget)
    except concurrent.futures.TimeoutError:
        raise HubDownloadError(
            _instructions(
                model_id,
                target,
                f"the ModelScope hub did not answer within {budget:g} s (offline? raise "
                f"${HUB_TIMEOUT_ENV} to wait longer)",
                client=True,
            )
        ) from None
    except Exception as exc:  # network errors, missing repos, ... (client-specific types)
        raise HubDownloadError(
            _instructions(
                model_id,
                target,
                f"the ModelScope hub is unreachable or refused the download "
                f"({type(exc).__name__}: {exc})",
                client=True,
            )
        ) from None
    local_dir = Path(str(local))
    missing = [f for f in MODELSCOPE_FILES if not (local_dir / f).is_file()]
    if missing:
        raise HubDownloadError(
            _instructions(
                model_id,
                target,
                f"the download in {local_dir} lacks {', '.join(missing)}",
                client=True,
            )
        )
    return local_dir


def load_modelscope(
    source: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    download: bool = True,
    trust_pickle: bool = False,
) -> SCRFD:
    """Load a DamoFD model from a ModelScope directory or model id.

    ``source`` is a directory (``configuration.json``, ``DamoFD_lms.py``, ``pytorch_model.pt``)
    or an id such as ``damo/cv_ddsar_face-detection_iclr23-damofd-10G``. An id is looked up in
    ``cache_dir`` (default :func:`modelscope_cache_dir`, at ``<cache>/<owner>/<name>``) and, if
    absent and ``download``, fetched with :func:`download_modelscope`.
    """
    p = Path(source)
    if p.is_dir():
        return load_modelscope_dir(p, trust_pickle=trust_pickle)
    if p.is_file() and p.name in MODELSCOPE_FILES:
        return load_modelscope_dir(p.parent, trust_pickle=trust_pickle)
    model_id = _canonical_id(str(source))
    if not _ID_RE.match(model_id):
        raise InputError(
            f"{source!s}: neither a ModelScope model directory nor a model id "
            "('owner/name', e.g. damo/cv_ddsar_face-detection_iclr23-damofd)"
        )
    cache = Path(cache_dir) if cache_dir is not None else modelscope_cache_dir()
    local = _id_dir(model_id, cache)
    if all((local / f).is_file() for f in MODELSCOPE_FILES):
        return load_modelscope_dir(local, trust_pickle=trust_pickle)
    if not download:
        raise HubDownloadError(_instructions(model_id, local, "not in the cache (download=False)"))
    return load_modelscope_dir(
        download_modelscope(model_id, cache_dir=cache, revision=revision), trust_pickle=trust_pickle
    )


def load_weights(
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    form: Literal["canonical", "fused"] = "canonical",
    trust_pickle: bool = False,
) -> SCRFD:
    """Build a detector with pretrained weights from any supported source (eval mode):

    * ``*.onnx`` — an official SCRFD (or damofd) ONNX export, imported with
      :func:`damofd.models.onnx_import.import_scrfd_onnx` (``name`` verifies the config);
    * a ModelScope directory or model id — :func:`load_modelscope`;
    * an mmdet/damofd checkpoint (``.pth``/``.pt``) — :func:`damofd.models.load_model`
      (``name`` gives the architecture of official checkpoints).

    ``form="fused"`` folds BatchNorm into the convs afterwards (inference only).
    """
    p = Path(source)
    if p.suffix.lower() == ".onnx":
        from damofd.models.onnx_import import import_scrfd_onnx

        return import_scrfd_onnx(p, config=name, form=form)
    if p.is_dir() or (p.is_file() and p.name in MODELSCOPE_FILES and is_modelscope_dir(p.parent)):
        model = load_modelscope(p, trust_pickle=trust_pickle)
    elif p.is_file():
        from damofd.models.factory import load_model

        model = load_model(p, name=name, trust_pickle=trust_pickle).eval()
    elif _ID_RE.match(_canonical_id(str(source))) and p.suffix.lower() not in _FILE_SUFFIXES:
        model = load_modelscope(str(source), trust_pickle=trust_pickle)
    else:
        raise InputError(f"{source!s}: no such weights file, directory or ModelScope id")
    if form == "fused":
        model.fuse()
    elif form != "canonical":
        raise ConfigError(f"form must be 'canonical' or 'fused', got {form!r}")
    return model.eval()
