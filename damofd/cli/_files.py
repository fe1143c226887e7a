"""Input files of the batch verbs (``align``, ``anonymize``): files as given, folders searched."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["collect_files"]


def collect_files(
    inputs: Iterable[str], extensions: Iterable[str]
) -> list[tuple[Path, Path, Path | None]]:
    """``(path, relative output path, folder)`` per input: a file is taken as given (a missing
    or unreadable one is reported by its loader), a folder is searched recursively for files with
    one of ``extensions``; the relative path keeps the folder structure under the folder."""
    exts = frozenset(e.lower() for e in extensions)
    out: list[tuple[Path, Path, Path | None]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += [
                (f, f.relative_to(p), p) for f in sorted(p.rglob("*")) if f.suffix.lower() in exts
            ]
        else:
            out.append((p, Path(p.name), None))
    return out
