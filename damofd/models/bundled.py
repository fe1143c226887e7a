"""Weights trained by damofd's own trainer and shipped inside the package (``damofd/weights/``).

The default detector of every entry point — ``damofd detect photo.jpg`` with no model,
``FaceDetector()``, ``pipeline("face-detection")``, ``damofd eval`` and ``damofd export`` with no
model — is :data:`DEFAULT_MODEL`, loaded from these files, offline.

``damofd/weights/bundled.json`` describes each bundled model: its files with their sha256
(checked on every load: a corrupted or replaced file is refused), the data and recipe it was
trained with, the exact command that reproduces it, its CPU-hours, its AP on the WIDER FACE val
subset, and its licence situation. docs/model-card.md is the long form.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from damofd.errors import ConfigError, InputError

__all__ = [
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "BundledModel",
    "bundled_file",
    "bundled_models",
    "get_bundled",
    "sha256_file",
]

#: The zoo name of the default detector (its weights ship in the package).
DEFAULT_MODEL = "damofd-0.5g-bnkps"
#: Folder of the bundled weight files (package data).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_INDEX = "bundled.json"

Format = Literal["onnx", "pth"]


@dataclass(frozen=True)
class BundledFile:
    """One weight file: name inside :data:`WEIGHTS_DIR`, sha256, size in bytes."""

    name: str
    sha256: str
    bytes: int

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.name


@dataclass(frozen=True)
class BundledModel:
    """Metadata of a bundled model (one entry of ``bundled.json``)."""

    name: str
    files: dict[str, BundledFile]
    ap: dict[str, Any]
    data: str
    recipe: str
    command: str
    cpu_hours: float
    licence: str
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line for reports, e.g. ``damofd-0.5g-bnkps (bundled weights, WIDER val subset AP
        0.805/0.746/0.356 Easy/Medium/Hard)``."""
        a = self.ap
        return (
            f"{self.name} (bundled weights, WIDER val subset AP "
            f"{a['easy']:.3f}/{a['medium']:.3f}/{a['hard']:.3f} Easy/Medium/Hard)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "files": {k: vars(f) | {"path": str(f.path)} for k, f in self.files.items()},
            "ap": self.ap,
            "data": self.data,
            "recipe": self.recipe,
            "command": self.command,
            "cpu_hours": self.cpu_hours,
            "licence": self.licence,
            "notes": list(self.notes),
        }


@lru_cache(maxsize=1)
def _index() -> dict[str, BundledModel]:
    path = WEIGHTS_DIR / _INDEX
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for name, e in raw.items():
            files = {k: BundledFile(**f) for k, f in e["files"].items()}
            out[name] = BundledModel(
                name=name,
                files=files,
                ap=dict(e["ap"]),
                data=e["data"],
                recipe=e["recipe"],
                command=e["command"],
                cpu_hours=float(e["cpu_hours"]),
                licence=e["licence"],
                notes=tuple(e.get("notes", ())),
            )
        return out
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: malformed bundled-weights index ({err})") from None


def bundled_models() -> list[str]:
    """Zoo names that have bundled weights."""
    return list(_index())


def get_bundled(name: str) -> BundledModel | None:
    """The :class:`BundledModel` of a (canonical) zoo name, or ``None``."""
    return _index().get(name)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=8)
def _verified(path: str, sha256: str, mtime_ns: int) -> bool:
    return sha256_file(path) == sha256


def bundled_file(name: str, fmt: Format = "onnx") -> Path:
    """Path of the bundled ``fmt`` file of zoo model ``name``, after checking its sha256.

    Raises :class:`ConfigError` when the model has no bundled weights and :class:`InputError`
    when the file is missing or its checksum differs (a damaged installation).
    """
    entry = get_bundled(name)
    if entry is None:
        have = ", ".join(bundled_models()) or "none"
        raise ConfigError(f"model {name!r} has no bundled weights (bundled: {have})")
    f = entry.files.get(fmt)
    if f is None:
        raise ConfigError(f"model {name!r} has no bundled {fmt} file ({', '.join(entry.files)})")
    p = f.path
    if not p.is_file():
        raise InputError(f"{p}: bundled weights missing; reinstall damofd")
    if not _verified(str(p), f.sha256, p.stat().st_mtime_ns):
        raise InputError(
            f"{p}: sha256 differs from the one recorded in {_INDEX} (damaged or replaced "
            f"file); reinstall damofd"
        )
    return p
