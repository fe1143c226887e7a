"""Locating the research-use test assets (never shipped with the package).

Tests and benchmarks read real weights and WIDER FACE data from ``../shared/assets`` next to the
repository root, or from the folder named by the ``DAMOFD_ASSETS`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ASSETS_ENV", "assets_dir", "repo_root"]

ASSETS_ENV = "DAMOFD_ASSETS"


def repo_root() -> Path:
    """The source checkout root (the folder holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path | None:
    """Return the assets folder, or ``None`` when it is absent.

    Order: ``$DAMOFD_ASSETS``; ``<repo root>/../shared/assets``; ``<cwd>/../shared/assets``.
    """
    env = os.environ.get(ASSETS_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    for base in (repo_root(), Path.cwd()):
        p = (base / ".." / "shared" / "assets").resolve()
        if p.is_dir():
            return p
    return None
