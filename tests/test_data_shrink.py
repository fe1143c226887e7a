"""``damofd data shrink``: images and labels scaled together, reruns keep work, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.cli.main import main as cli
from damofd.data.labelv2 import parse_labelv2_text, read_labelv2
from damofd.data.shrink import scale_annotation, shrink_dataset
from damofd.errors import InputError

LABELS = """# e/a.jpg 200 100
20 10 60 50 30 20 0 50 20 0 40 30 0 32 40 0 48 40 0
100 40 140 90 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
150 5 160 15 1
# e/b.jpg 80 120
10 10 30 40
"""


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, (w, h) in {"e/a.jpg": (200, 100), "e/b.jpg": (80, 120)}.items():
        p = root / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[10:50, 20:60] = 255  # a white square where the first face is
        assert cv2.imwrite(str(p), img)
    (root / "labelv2.txt").write_text(LABELS)
    return root / "labelv2.txt"


def test_scale_annotation_keeps_absent_keypoints_and_flags() -> None:
    ann = parse_labelv2_text(LABELS)[0][0]
    out = scale_annotation(ann, 0.5, 0.25)
    np.testing.assert_allclose(out.bboxes[0], [10, 2.5, 30, 12.5])
    np.testing.assert_allclose(out.keypoints[0, 0], [15, 5, 0])
    assert np.all(out.keypoints[1] == -1)  # absent stays -1, not -0.5
    np.testing.assert_array_equal(out.ignore, ann.ignore)


def test_shrink_writes_scaled_images_and_labels(tmp_path: Path) -> None:
    labels = _dataset(tmp_path / "src")
    out = tmp_path / "small"
    argv = ["data", "shrink", str(labels), "--scale", "0.5", "--quality", "90", "--out", str(out)]
    assert cli(argv) == 0
    small = read_labelv2(out / "labelv2.txt")
    sizes = [(a.name, a.width, a.height) for a in small]
    assert sizes == [("e/a.jpg", 100, 50), ("e/b.jpg", 40, 60)]
    img = cv2.imread(str(out / "images/e/a.jpg"))
    assert img.shape == (50, 100, 3)
    x1, y1, x2, y2 = small[0].bboxes[0].astype(int)
    assert img[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 200  # the box still frames the square
    src_kps = read_labelv2(labels)[0].keypoints[0, :, :2]
    np.testing.assert_allclose(small[0].keypoints[0, :, :2], src_kps / 2)
    assert small[0].ignore.tolist() == [False, False, True]

    # the label file is not replaced without --force; a forced rerun keeps the written images
    with pytest.raises(InputError, match="--force"):
        shrink_dataset(read_labelv2(labels), tmp_path / "src/images", out, scale=0.5)
    src = tmp_path / "src/images"
    report = shrink_dataset(read_labelv2(labels), src, out, scale=0.5, force=True)
    assert report.skipped == 2 and report.images == 2
    # another scale rewrites them
    report = shrink_dataset(read_labelv2(labels), src, out, scale=0.25, force=True)
    assert report.skipped == 0 and cv2.imread(str(out / "images/e/a.jpg")).shape == (25, 50, 3)


def test_shrink_names_the_missing_image_and_bad_arguments(tmp_path: Path) -> None:
    labels = _dataset(tmp_path / "src")
    (tmp_path / "src/images/e/b.jpg").unlink()
    with pytest.raises(InputError, match=r"e/b\.jpg.*line 5"):
        shrink_dataset(read_labelv2(labels), tmp_path / "src/images", tmp_path / "o", scale=0.5)
    assert not (tmp_path / "o/labelv2.txt").exists()  # labels only after every image
    with pytest.raises(InputError, match="overwrite the source images"):
        shrink_dataset(read_labelv2(labels), tmp_path / "src/images", tmp_path / "src", force=True)
    with pytest.raises(InputError, match="--scale"):
        shrink_dataset([], tmp_path, tmp_path / "o", scale=1.5)
    with pytest.raises(InputError, match="--quality"):
        shrink_dataset([], tmp_path, tmp_path / "o", quality=0)
