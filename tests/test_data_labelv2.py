"""labelv2 parsing and writing (reference spec §5.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from damofd.data.labelv2 import (
    KEYPOINT_FLIP_ORDER,
    format_labelv2,
    parse_labelv2_text,
    read_labelv2,
    scan_labelv2,
    write_labelv2,
)
from damofd.errors import InputError
from tests.conftest import require_asset

KPS_LINE = "10 20 50 70 15 30 0 40 30 0.0 28 45 1 18 58 0 38 58 0 0.9"


def test_value_counts_and_flags() -> None:
    text = "\n".join(
        [
            "# a/one.jpg 100 80",
            "1 2 30 40",  # box only
            "5 5 20 20 1",  # ignore
            "5 5 20 20 0",  # explicit not-ignore
            KPS_LINE,  # keypoints (+ trailing extra value)
            "0 0 9 9 " + " ".join(["-1"] * 15),  # all keypoints absent
            "0 0 9 9 " + " ".join(["-1"] * 6) + " 1 2 0.5" + " 3 4 0" + " -1 -1 -1",
        ]
    )
    images, issues = parse_labelv2_text(text)
    assert issues == []
    (img,) = images
    assert (img.name, img.width, img.height) == ("a/one.jpg", 100, 80)
    assert img.num_objects == 6
    np.testing.assert_array_equal(img.ignore, [False, True, False, False, False, False])
    np.testing.assert_array_equal(img.has_keypoints, [False, False, False, True, True, True])
    w = img.keypoint_weights()
    np.testing.assert_array_equal(w[0], 0)  # box-only lines: weight 0
    np.testing.assert_array_equal(w[3], 1)  # flags 0 and 1 both mean "annotated"
    np.testing.assert_array_equal(w[4], 0)
    np.testing.assert_array_equal(w[5], [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(img.box_lines, [2, 3, 4, 5, 6, 7])
    # training views: ignore boxes split off, keypoints as (x, y, weight)
    assert img.gt_bboxes.shape == (5, 4) and img.gt_bboxes_ignore.shape == (1, 4)
    np.testing.assert_array_equal(img.gt_bboxes_ignore[0], [5, 5, 20, 20])
    gk = img.gt_keypoints
    assert gk.shape == (5, 5, 3) and gk.dtype == np.float32
    np.testing.assert_array_equal(gk[2, :, :2], [[15, 30], [40, 30], [28, 45], [18, 58], [38, 58]])
    np.testing.assert_array_equal(gk[2, :, 2], 1)
    np.testing.assert_array_equal(gk[0], 0)


def test_min_size_marks_ignore_and_header_without_size() -> None:
    images, issues = parse_labelv2_text("# x.jpg\n0 0 5 50\n0 0 50 50\n", min_size=10)
    assert issues == []
    assert images[0].width is None and images[0].height is None
    np.testing.assert_array_equal(images[0].ignore, [True, False])


def test_every_malformed_line_is_reported_with_its_number() -> None:
    text = "\n".join(
        [
            "1 2 3 4",  # 1: before any header
            "# a.jpg 10 10",
            "1 2 3",  # 3: too few values
            "1 2 3 4 5 6 7",  # 4: 7 values (between 5 and 19)
            "1 2 3 4 5 6 -2 " + " ".join(["1"] * 12),  # 5: negative keypoint flag
            "1 2 x 4",  # 6: not a number
            "1 2 3 inf",  # 7: not finite
            "1 2 3 4",  # 8: fine
            "# a.jpg",  # 9: duplicate image
            "# b.jpg 10",  # 10: size with one value
            "# c.jpg 0 5",  # 11: non-positive size
        ]
    )
    images, issues = parse_labelv2_text(text, source="lab.txt")
    assert [i.line for i in issues] == [1, 3, 4, 5, 6, 7, 9, 10, 11]
    assert all(i.severity == "error" for i in issues)
    assert str(issues[3]).startswith("lab.txt:5: error: keypoint 0 has flag -2")
    assert "got 7" in issues[2].message
    assert [im.name for im in images] == ["a.jpg"]
    assert images[0].num_objects == 1  # only the valid line survives


def test_read_raises_naming_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "labelv2.txt"
    p.write_text("# a.jpg 10 10\n1 2 3 4\n1 2 3\n1 2\n")
    with pytest.raises(InputError, match=r"labelv2\.txt:3: .*got 3.*and 1 more"):
        read_labelv2(p)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_labelv2(tmp_path / "nope.txt")
    _, issues = scan_labelv2(p)
    assert [i.line for i in issues] == [3, 4]


def test_write_round_trip(tmp_path: Path) -> None:
    text = (
        "# e/1.jpg 640 480\n1 2 30.5 40.25\n5 5 20 20 1\n"
        + KPS_LINE
        + "\n0 0 9 9 "
        + " ".join(["-1"] * 15)
        + "\n# e/2.jpg\n"
    )
    images, issues = parse_labelv2_text(text)
    assert not issues
    out = write_labelv2(tmp_path / "sub" / "out.txt", images)
    again = read_labelv2(out)
    assert format_labelv2(again) == format_labelv2(images)
    for a, b in zip(images, again):
        assert (a.name, a.width, a.height) == (b.name, b.width, b.height)
        np.testing.assert_array_equal(a.bboxes, b.bboxes)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.ignore, b.ignore)
    lines = out.read_text().splitlines()
    assert lines[1] == "1 2 30.5 40.25"  # shortest float text, integers without ".0"
    assert lines[2] == "5 5 20 20 1"
    assert lines[3] == "10 20 50 70 15 30 0 40 30 0 28 45 1 18 58 0 38 58 0"
    assert lines[-1] == "# e/2.jpg"


def test_flip_order_is_an_involution_swapping_eyes_and_mouth() -> None:
    order = np.asarray(KEYPOINT_FLIP_ORDER)
    np.testing.assert_array_equal(order[order], np.arange(5))
    assert list(order) == [1, 0, 2, 4, 3]


def test_shipped_files_parse(assets: Path) -> None:
    train = read_labelv2(require_asset(assets, "widerface/labelv2/train/labelv2.txt"))
    assert len(train) == 1239
    assert sum(i.num_objects for i in train) == 6590
    assert all(i.width and i.height for i in train)
    val = read_labelv2(require_asset(assets, "widerface/labelv2/val/labelv2.txt"))
    assert len(val) == 3226
