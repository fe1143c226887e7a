"""Helpers for the training tests: small datasets generated from the shared WIDER train images.

The images are downscaled copies written to a temporary folder (never into the repository), with
a labelv2 file whose boxes are scaled to match, so each training step costs milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import pytest

from damofd.data.labelv2 import read_labelv2, write_labelv2
from damofd.data.shrink import scale_annotation

WIDER_TRAIN_LABELS = "widerface/labelv2/train/labelv2.txt"
WIDER_TRAIN_IMAGES = "widerface/WIDER_train/images"

# large faces (0.3-0.5 of the short side): learnable in a few hundred tiny iterations
OVERFIT_IMAGES = (
    "13--Interview/13_Interview_Interview_Sequences_13_705.jpg",  # 2 faces
    "1--Handshaking/1_Handshaking_Handshaking_1_429.jpg",
    "13--Interview/13_Interview_Interview_On_Location_13_573.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_707.jpg",
)
# six landscape images (one aspect group) for the mechanics tests
MECHANICS_IMAGES = (
    "13--Interview/13_Interview_Interview_Sequences_13_705.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_429.jpg",
    "13--Interview/13_Interview_Interview_On_Location_13_573.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_707.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_389.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_288.jpg",
)


def make_small_dataset(
    assets: Path, dst: Path, names: tuple[str, ...], short_side: int, *, square: bool = False
) -> Path:
    """Write downscaled copies of ``names`` (short side ``short_side`` px; squashed to
    ``short_side`` × ``short_side`` when ``square``) and their labelv2 file to ``dst``
    (``dst/labelv2.txt`` + ``dst/images/``); returns ``dst``."""
    labels = assets / WIDER_TRAIN_LABELS
    images = assets / WIDER_TRAIN_IMAGES
    if not labels.is_file() or not images.is_dir():
        pytest.skip(f"WIDER train subset missing under {assets}")
    by_name = {r.name: r for r in read_labelv2(labels)}
    out = []
    for name in names:
        rec = by_name.get(name)
        src = images / name
        if rec is None or not src.is_file():
            pytest.skip(f"asset missing: {src}")
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        f = short_side / min(h, w)
        nh, nw = round(h * f), round(w * f)
        if square:
            nh = nw = short_side
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        target = dst / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rec = scale_annotation(rec, nw / w, nh / h)  # boxes and any keypoints
        rec.width, rec.height = nw, nh
        out.append(rec)
    write_labelv2(dst / "labelv2.txt", out)
    return dst


def tiny_settings(**extra: Any) -> dict[str, Any]:
    """Dotted config keys for a fast CPU run on a dataset from :func:`make_small_dataset`."""
    base: dict[str, Any] = {
        "data.img_size": 64,
        "data.samples_per_gpu": 2,
        "data.workers_per_gpu": 0,
        "cpu_threads": 1,
        "log_config.interval": 1,
        "log_config.progress": False,
        "checkpoint_config.interval": 0,
        "evaluation.interval": 0,
        "lr_config.warmup_iters": 3,
    }
    base.update(extra)
    return base


def read_log(work_dir: Path, mode: str | None = "train") -> list[dict[str, Any]]:
    lines = (work_dir / "log.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines if line.strip()]
    return [r for r in recs if mode is None or r["mode"] == mode]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_python(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (1 thread) and return the completed process."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
