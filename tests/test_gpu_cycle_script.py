"""``benchmarks/gpu_cycle.sh`` end to end on the CPU: smoke run, a cycle sized to the budget,
the logs and checkpoints packed into OUT (a dry run of what the GPU machine runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._train_util import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _dataset(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        name = f"e/{i}.jpg"
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        (root / "images/e").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "images" / name), img)
        lines += [f"# {name} 128 96", "30 20 70 70", "80 30 110 64"]
    (root / "labelv2.txt").write_text("\n".join(lines) + "\n")
    return root


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script on a tiny synthetic set, on the CPU, in ``tmp_path``, with ``env`` on top."""
    base = {
        "OUT": str(tmp_path / "out"), "PY": sys.executable, "BATCH": "2",
        "DATA": str(_dataset(tmp_path / "data")), "WORK": str(tmp_path / "work"),
        "PATH": os.environ.get("PATH", ""),
    }  # fmt: skip
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_cycle.sh")], env={**subprocess_env(), **base, **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_gpu_cycle_dry_run_on_cpu(tmp_path: Path) -> None:
    proc = _run(
        tmp_path, BUDGET="30", RESERVE="5", SMOKE_ITERS="4",
        EXTRA="--device cpu --workers 0 --set data.img_size=128",
    )  # fmt: skip
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sized = [x for x in proc.stdout.splitlines() if x.startswith("smoke:")]
    assert sized, proc.stdout[-2000:]
    iters = int(sized[0].split("cycle: ")[1].split()[0])
    assert iters >= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_iters"] == iters and cfg["data"]["img_size"] == 128
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    stop = [r for r in recs if r.get("mode") == "stop"][-1]
    assert stop["reason"] in ("max_iters", "time_limit")
    assert (out / "latest.pth").is_file() and (out / "smoke_log.jsonl").is_file()
    with tarfile.open(out / "epochs.tar") as t:  # slim epoch checkpoints (maybe none this short)
        assert all(m.name.startswith("epoch_") for m in t.getmembers())
    assert f"--max-iters {iters}" in (out / "run.log").read_text()


def test_gpu_cycle_stops_when_the_budget_is_spent(tmp_path: Path) -> None:
    proc = _run(
        tmp_path, BUDGET="1", RESERVE="0", SMOKE_ITERS="2",
        EXTRA="--device cpu --workers 0 --set data.img_size=64",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no time left for the cycle" in proc.stderr
