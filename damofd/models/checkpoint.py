"""Read and write checkpoints in the official mmdet/mmcv layout.

An mmcv checkpoint is ``{'meta': {...}, 'state_dict': {...}[, 'optimizer': {...}]}``; a bare
state dict is accepted too, and a ``module.`` prefix (DataParallel/DDP) is stripped. The detector's
module tree reproduces the reference key names (``backbone.…``, ``neck.…``, ``bbox_head.…``;
reference spec §8.4, scrfd-spec §5), so official checkpoints load with **strict** key matching
and no converter. A mismatch raises :class:`CheckpointError` listing the missing and unexpected
keys grouped by prefix (``backbone.module_list.3.* (42 keys)``) and every wrong-shaped tensor
with both shapes.

BatchNorm eps is not stored in a state dict; the modules set it per family (MasterNet 1e-3,
SCRFD 1e-5). A BN-fused model (:meth:`SCRFD.fuse`) has a different key set and is for inference.

This module is a leaf of :mod:`damofd.models` (it imports no other model module): building a
detector *and* loading it (:func:`damofd.models.factory.load_model`), and the key-mismatch hints
that name zoo models (:func:`damofd.models.factory.load_checkpoint`), sit with
:func:`~damofd.models.factory.create_model`.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from damofd.errors import InputError

__all__ = [
    "ArchitectureNotRecordedError",
    "CheckpointError",
    "KeyReport",
    "compare_state_dict",
    "extract_state_dict",
    "group_keys",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CheckpointSource = str | os.PathLike[str] | Mapping[str, Any]

#: ``(zoo name, use_kps) -> the zoo name of the same model with (without) keypoints, or None``;
#: the factory passes one (:func:`damofd.models.factory.load_checkpoint`) so hints name zoo models.
KpsSibling = Callable[[str, bool], str | None]


class CheckpointError(InputError):
    """A checkpoint does not fit the model (or cannot be read). The message says why."""


class ArchitectureNotRecordedError(CheckpointError):
    """A checkpoint without ``meta['damofd_config']`` was loaded without a zoo name.

    ``source`` is the checkpoint as given; :meth:`with_hint` rewords the remedy for a caller
    (the command line names its own syntax instead of the ``name=`` argument).
    """

    def __init__(self, source: str, hint: str = "pass the zoo name, e.g. name='damofd-10g'"):
        self.source, self.hint = source, hint
        super().__init__(
            f"checkpoint {source!r} does not record its architecture (no "
            f"meta['damofd_config']); {hint}"
        )

    def with_hint(self, hint: str) -> ArchitectureNotRecordedError:
        return ArchitectureNotRecordedError(self.source, hint)


@dataclass(frozen=True)
class KeyReport:
    """Differences between a model's state dict and a checkpoint's."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, max_groups: int = 12) -> str:
        """Human-readable summary, keys grouped by prefix."""
        parts = []
        if self.missing:
            parts.append(
                f"missing keys ({len(self.missing)}): "
                + ", ".join(group_keys(self.missing, max_groups=max_groups))
            )
        if self.unexpected:
            parts.append(
                f"unexpected keys ({len(self.unexpected)}): "
                + ", ".join(group_keys(self.unexpected, max_groups=max_groups))
            )
        if self.mismatched:
            shown = [
                f"{k} (checkpoint {list(a)} vs model {list(b)})"
                for k, a, b in self.mismatched[:max_groups]
            ]
            more = len(self.mismatched) - len(shown)
            parts.append(
                f"shape mismatches ({len(self.mismatched)}): "
                + ", ".join(shown)
                + (f", … {more} more" if more > 0 else "")
            )
        return "; ".join(parts) if parts else "state dicts match"


def group_keys(keys: Iterable[str], depth: int = 3, max_groups: int = 12) -> list[str]:
    """Group dotted keys by their first ``depth`` components, in first-seen order.

    A group of one key is shown as the key itself, larger groups as ``prefix.* (N keys)``;
    e.g. ``["backbone.module_list.3.* (42 keys)", "bbox_head.scales.0.scale"]``.
    """
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:depth]) if len(parts) > depth else k
        groups.setdefault(prefix, []).append(k)
    out = []
    for prefix, members in groups.items():
        if len(members) == 1:
            out.append(members[0])
        else:
            out.append(f"{prefix}.* ({len(members)} keys)")
    if len(out) > max_groups:
        rest = sum(1 for _ in out[max_groups:])
        out = [*out[:max_groups], f"… {rest} more groups"]
    return out


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
# what a few common non-checkpoint files start with, to say what was given instead
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"MATLAB", "a MATLAB .mat file"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x1f\x8b", "a gzip file"),
    (b"%PDF", "a PDF file"),
)
# legacy (pre-1.6) torch.save: a pickle whose first object is this magic number
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Reads plain values only: any class or function reference is refused (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name}")


def _first_pickled(p: Path) -> Any:
    """The first object pickled in ``p`` if it is a plain value, else ``None``."""
    try:
        with open(p, "rb") as f:
            return _NoGlobalsUnpickler(f).load()
    except Exception:  # any malformed or non-plain pickle
        return None


def _unpickling_detail(e: Exception) -> str:
    """The useful part of torch's weights-only error: the refused class, else its first line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"e.g. an object of type {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    return m.group(1).strip() if m else text.strip().splitlines()[0]


def _not_a_torch_file(p: Path) -> str | None:
    """``None`` when ``p`` looks like a ``torch.save`` file (a zip archive holding a
    ``data.pkl`` record, or a legacy torch pickle); else what it is instead (for messages)."""
    import zipfile

    with open(p, "rb") as f:
        head = f.read(16)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(p) as z:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                    return None
        except zipfile.BadZipFile:
            return "a damaged zip archive"
        return "a zip archive without the data.pkl record of torch.save"
    if head.startswith(b"\x80"):  # a pickle: legacy torch.save starts with its magic number
        return (
            None
            if _first_pickled(p) == _LEGACY_MAGIC
            else "a Python pickle not written by torch.save"
        )
    if p.suffix.lower() == ".onnx":
        return "an ONNX model"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return "unknown binary or text content"


def read_checkpoint(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict[str, Any]:
    """``torch.load`` a checkpoint onto the CPU.

    By default only tensors and plain containers are unpickled (``weights_only=True``); mmcv
    checkpoints normally pass. ``trust_pickle=True`` allows arbitrary objects — only for files
    from a source you trust.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    problem = _not_a_torch_file(p)
    if problem is not None:
        raise CheckpointError(
            f"{str(p)!r} is not a PyTorch checkpoint ({problem}); expected a .pth/.pt file "
            "written by torch.save (an mmdet/damofd checkpoint or a state dict)"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds objects other than tensors and plain containers "
            f"({_unpickling_detail(e)}); if you trust the file, load it with "
            "trust_pickle=True"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {e}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds a {type(obj).__name__}, expected a dict "
            "(an mmcv checkpoint or a state dict)"
        )
    return dict(obj)


def extract_state_dict(obj: Mapping[str, Any], where: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict of an mmcv checkpoint dict (or of a bare state dict), ``module.`` stripped."""
    sd: Any = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{where}: 'state_dict' is a {type(sd).__name__}, expected a dict")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state dict — non-tensor entries "
            + ", ".join(group_keys(map(str, bad), max_groups=5))
        )
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> KeyReport:
    """Key and shape differences between ``model.state_dict()`` and ``state_dict``."""
    own = model.state_dict()
    missing = tuple(k for k in own if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in own)
    mismatched = tuple(
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    return KeyReport(missing, unexpected, mismatched)


def _hints(
    report: KeyReport, name: str | None = None, kps_sibling: KpsSibling | None = None
) -> str:
    """Remedies for a key mismatch; ``name`` is the zoo model the caller built and
    ``kps_sibling`` finds its keypoint / plain sibling (so the hint can name the matching zoo
    model instead of the ``use_kps`` argument)."""

    def sibling(use_kps: bool) -> str | None:
        return kps_sibling(name, use_kps) if name is not None and kps_sibling else None

    hints = []
    if any(".stride_kps." in k for k in report.unexpected):
        other = sibling(True)
        hints.append(
            f"the checkpoint has keypoint weights: use the zoo model {other!r}"
            if other
            else "the checkpoint has keypoint weights: build the model with use_kps=True"
        )
    if any(".stride_kps." in k for k in report.missing):
        other = sibling(False)
        hints.append(
            f"the checkpoint has no keypoint weights: use the zoo model {other!r}"
            if other
            else "the checkpoint has no keypoint weights: build the model with use_kps=False"
        )
    if any("(8, 8)" in k for k in report.unexpected) or any("(8, 8)" in k for k in report.missing):
        hints.append(
            "one side has per-stride head weights ('(8, 8)' keys): official SCRFD *_bnkps "
            "models are the '-kps' zoo names"
        )
    return ("; hint: " + "; ".join(hints)) if hints else ""


def load_checkpoint(
    model: nn.Module,
    source: CheckpointSource,
    *,
    strict: bool = True,
    trust_pickle: bool = False,
    kps_sibling: KpsSibling | None = None,
) -> dict[str, Any]:
    """Load weights from an mmdet/damofd checkpoint (path or already-loaded dict) into ``model``.

    With ``strict`` (default) every key must match in name and shape, else
    :class:`CheckpointError` (nothing is loaded). With ``strict=False`` the keys present on both
    sides with equal shapes are loaded and the rest is reported in the returned meta under
    ``'_load_report'``. Returns the checkpoint's ``meta`` dict (empty for a bare state dict).
    ``kps_sibling`` lets the error hint name the zoo model with (without) keypoints; the public
    :func:`damofd.models.load_checkpoint` (:func:`damofd.models.factory.load_checkpoint`) passes
    it.
    """
    where = f"checkpoint {str(source)!r}" if not isinstance(source, Mapping) else "checkpoint"
    obj = (
        dict(source)
        if isinstance(source, Mapping)
        else read_checkpoint(source, trust_pickle=trust_pickle)
    )
    sd = extract_state_dict(obj, where)
    report = compare_state_dict(model, sd)
    if strict and not report.ok:
        name = getattr(model, "name", None)
        raise CheckpointError(
            f"{where} does not fit the model: {report.describe()}"
            f"{_hints(report, name if isinstance(name, str) else None, kps_sibling)}"
        )
    if not report.ok:
        bad = {k for k, _, _ in report.mismatched}
        sd = {k: v for k, v in sd.items() if k not in bad and k not in report.unexpected}
    model.load_state_dict(sd, strict=strict)
    meta = obj.get("meta") if "state_dict" in obj else None
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    if not report.ok:
        meta["_load_report"] = report
    return meta


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    meta: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{'meta': {...}, 'state_dict': ...[, 'optimizer': ...]}`` atomically.

    Tensors are moved to the CPU (and the ``module.`` wrapper of DDP models is removed). The meta
    records the damofd version, the time, the zoo name and the typed config (so
    :func:`damofd.models.factory.load_model` can rebuild the detector), ``CLASSES = ('FG',)`` as
    mmdet does, plus whatever ``meta`` adds (e.g. ``epoch``, ``iter``).
    """
    from damofd._version import __version__
    from damofd.io import atomic_torch_save

    inner = (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )
    if getattr(inner, "fused", False):
        raise InputError(
            f"cannot save {str(path)!r}: the model is BatchNorm-fused (SCRFD.fuse()), so its "
            "weights no longer fit the architecture and the checkpoint could not be loaded; "
            "save it before fusing, or export the fused model with `damofd export` (ONNX)"
        )
    state_dict = OrderedDict((k, v.detach().cpu()) for k, v in inner.state_dict().items())
    full_meta: dict[str, Any] = {
        "damofd_version": __version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "CLASSES": ("FG",),
    }
    config = getattr(inner, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        full_meta["damofd_config"] = config.to_dict()
    name = getattr(inner, "name", None)
    if isinstance(name, str):
        full_meta["model_name"] = name
    if meta:
        full_meta.update(meta)
    ckpt: dict[str, Any] = {"meta": full_meta, "state_dict": state_dict}
    if optimizer is not None:
        ckpt["optimizer"] = (
            optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
        )
    return atomic_torch_save(path, ckpt)
