"""The code base stays ruff-clean (the linter is part of the test command)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from damofd.testing import repo_root


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    root = repo_root()
    proc = subprocess.run(
        [ruff, "check", "--no-cache", "damofd", "tests", "benchmarks"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
