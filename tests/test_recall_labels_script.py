"""``benchmarks/recall_labels.py``: recall by face size on labelv2 data."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.inference import Face

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
recall_labels = pytest.importorskip("recall_labels")


class _Fixed:
    """A detector that returns the same boxes for every image."""

    def __init__(self, boxes: list[tuple[float, float, float, float]]) -> None:
        self.boxes = boxes
        self.calls: list[str] = []

    def detect(self, image: str) -> list[Face]:
        self.calls.append(Path(image).name)
        return [Face(box=b, score=0.9) for b in self.boxes]


def _data(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(images / name), np.zeros((64, 64, 3), np.uint8))
    labels = tmp_path / "labels.txt"
    labels.write_text(
        "# a.jpg 64 64\n"
        "0 0 10 10\n"  # 10 px: the 8-16 bin
        "20 20 60 60\n"  # 40 px: the 32-48 bin
        "1 1 5 5 1\n"  # an ignore box: not counted
        "# b.jpg 64 64\n"
        "20 20 60 60\n"
    )
    return labels, images


def test_bins_count_faces_and_matches(tmp_path: Path) -> None:
    labels, images = _data(tmp_path)
    det = _Fixed([(21, 21, 60, 60)])  # IoU 0.95 with the 40-px faces, 0 with the 10-px one
    rows = {r["lo"]: r for r in recall_labels.size_recall(det, labels, images)}
    assert (rows[8.0]["faces"], rows[8.0]["found"]) == (1, 0)
    assert (rows[32.0]["faces"], rows[32.0]["found"], rows[32.0]["recall"]) == (2, 2, 1.0)
    assert rows[0.0]["faces"] == 0 and rows[0.0]["recall"] is None
    assert rows[256.0]["hi"] is None
    assert sum(r["faces"] for r in rows.values()) == 3
    assert det.calls == ["a.jpg", "b.jpg"]


def test_every_and_iou(tmp_path: Path) -> None:
    labels, images = _data(tmp_path)
    det = _Fixed([(30, 30, 60, 60)])  # IoU 0.5625 with the 40-px faces
    rows = {r["lo"]: r for r in recall_labels.size_recall(det, labels, images, every=2, iou=0.6)}
    assert det.calls == ["a.jpg"]
    assert (rows[32.0]["faces"], rows[32.0]["found"]) == (1, 0)


def test_missing_image_names_the_label_line(tmp_path: Path) -> None:
    labels, images = _data(tmp_path)
    (images / "b.jpg").unlink()
    with pytest.raises(SystemExit, match=r"labels\.txt:5: image .*b\.jpg not found"):
        recall_labels.size_recall(_Fixed([]), labels, images)
