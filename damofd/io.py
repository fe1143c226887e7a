"""Crash-safe file writes shared by every stage.

Everything the toolkit writes that a user would be sorry to lose (checkpoints, search state,
results, prediction files) goes through these helpers: the data is written to a temporary file in
the destination folder, flushed and fsync'ed, then renamed over the target with ``os.replace``.
A crash or SIGKILL leaves either the old file or the new one, never a truncated file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from damofd.errors import InputError

__all__ = [
    "remove_stale_tmp",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_torch_save",
    "ensure_writable_dir",
    "ensure_writable_file",
]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode(target: Path) -> int:
    """Mode for the new file: the old file's mode if it exists, else 0o666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _reason(e: OSError) -> str:
    """``"permission denied"`` for an OSError with an errno, else its text."""
    return e.strerror[0].lower() + e.strerror[1:] if e.strerror else str(e)


def _write_error(target: Path, e: OSError) -> InputError:
    return InputError(f"cannot write {str(target)!r}: {_reason(e)}")


def remove_stale_tmp(
    folder: str | os.PathLike[str], *, min_age_s: float = 0.0, recursive: bool = False
) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files :func:`atomic_write` left in ``folder`` when
    its process was killed (SIGKILL skips every cleanup). Only files at least ``min_age_s``
    seconds old are removed, so a writer running beside us keeps its file. Returns the paths
    removed."""
    import time

    root = Path(folder)
    if not root.is_dir():
        return []
    now = time.time()
    removed = []
    for tmp in root.rglob(".*.tmp") if recursive else root.glob(".*.tmp"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a temporary file, then atomically move it to ``path``.

    The file gets the usual permissions (those of the file it replaces, or 0o666 minus the
    umask), not the 0o600 of a raw ``mkstemp`` file. A ``path`` that is a directory, and an
    ``OSError`` while creating the folder or creating, writing or renaming the temporary file
    (permission denied, disk full...), raise :class:`~damofd.errors.InputError` naming ``path``
    (not the temporary file) and the reason; no temporary file is left behind.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"cannot write {str(target)!r}: it is a directory (give a file path)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot write {str(target)!r}: cannot create its folder {str(target.parent)!r} "
            f"({_reason(e)})"
        ) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _write_error(target, e) from None
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, _default_mode(target))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(target, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda f: f.write(text.encode(encoding)))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json_object(
    path: str | os.PathLike[str], error: type[Exception] = ValueError
) -> dict[str, Any]:
    """Read a JSON file holding an object; ``error`` is raised naming the file (and the line of
    a syntax error) when it is not valid JSON or not an object."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected a JSON object, got {type(data).__name__}")
    return data


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` through a temporary file and an atomic rename."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def _probe_dir(p: Path) -> None:
    """Create folder ``p`` if needed and write and delete a probe file in it (raises OSError)."""
    p.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
    os.close(fd)
    os.unlink(probe)


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``path`` if needed and prove it is writable, *before* a long job starts.

    Raises ``PermissionError``/``NotADirectoryError`` with a message naming the path.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {str(p)!r} exists and is not a directory")
    try:
        _probe_dir(p)
    except OSError as e:
        raise PermissionError(f"{what} {str(p)!r} is not writable: {e.strerror or e}") from None
    return p


def ensure_writable_file(
    path: str | os.PathLike[str], what: str = "output file", example: str = "out.json"
) -> Path:
    """Prove, *before* a long job starts, that :func:`atomic_write` will be able to write ``path``.

    Creates the file's folder if needed and writes (and deletes) a probe file in it; the file
    itself is not touched. Raises :class:`~damofd.errors.InputError` naming ``what`` and the path
    when ``path`` is a directory (suggesting ``path/example``) or its folder cannot be created or
    written (with the reason, e.g. "permission denied").
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(
            f"{what} {str(p)!r} is a directory; give a file path such as {str(p / example)!r}"
        )
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{what} {str(p)!r}: {str(parent)!r} is not a directory")
    try:
        _probe_dir(parent)
    except OSError as e:
        raise InputError(
            f"{what} {str(p)!r} cannot be written: {_reason(e)} (folder {str(parent)!r})"
        ) from None
    return p
