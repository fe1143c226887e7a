"""Shared fixtures. Real data comes from ../shared/assets (or $DAMOFD_ASSETS), read in place."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from damofd.testing import ASSETS_ENV, assets_dir

# One intra-op thread per test process: the suite is many small ops, where a second thread
# only adds synchronisation; parallelism comes from pytest-xdist workers (-n).
os.environ.setdefault("OMP_NUM_THREADS", "1")
_OMP = os.environ["OMP_NUM_THREADS"]
_TORCH_THREADS = int(_OMP) if _OMP.isdigit() and int(_OMP) > 0 else 1


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test (or module fixture) that changes torch's thread count must not leak it: with two
    xdist workers on two cores, two threads per worker made later tests ~10× slower (OpenMP
    threads spinning against each other)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder; the test is skipped (with the reason) when it is absent."""
    p = assets_dir()
    if p is None:
        pytest.skip(
            f"shared assets not found: put them at ../shared/assets next to the repository "
            f"or set {ASSETS_ENV}"
        )
    return p


def require_asset(root: Path, rel: str) -> Path:
    """Return ``root/rel`` or skip the test naming the missing file."""
    p = root / rel
    if not p.exists():
        pytest.skip(f"asset missing: {p}")
    return p


@pytest.fixture
def one_torch_thread():
    """One torch intra-op thread for the test (restored after): tiny networks run as fast and
    do not oversubscribe the shared CI cores, even when OMP_NUM_THREADS was set higher."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
