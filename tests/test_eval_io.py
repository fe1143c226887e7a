"""Reading WIDER prediction files and ground-truth .mat files: tolerance and strict errors."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_eval_support import format_rows, random_case, write_gt_mats, write_pred_dir

from damofd.errors import InputError
from damofd.evaluation import (
    GT_FILES,
    SETTINGS,
    evaluate_wider,
    load_wider_gt,
    read_predictions,
)

ROWS = np.array([[10, 20, 30, 40, 0.99], [1.5, 2.5, 3.5, 4.5, 0.125], [0, 0, 1, 1, 0.02]])


def write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def tar_dir(src: Path, dst: Path, fmt: int = tarfile.GNU_FORMAT, mode: str = "w:gz") -> Path:
    with tarfile.open(dst, mode, format=fmt) as tf:
        tf.add(src, arcname="preds")
    return dst


# ----------------------------------------------------------------------------------------------
# prediction files


def test_reads_the_official_layout(tmp_path: Path) -> None:
    write(tmp_path / "0--E/a.txt", f"a\n3\n{format_rows(ROWS)}")
    write(tmp_path / "0--E/b.txt", "0--E/b.jpg\n0\n")
    p = read_predictions(tmp_path)
    assert p.names == ("a", "b") and p.events == ("0--E", "0--E")
    np.testing.assert_array_equal(p["a"], ROWS)
    assert p["0--E/b.jpg"].shape == (0, 5)
    assert set(p.as_dict()) == {"0--E/a", "0--E/b"}


def test_tolerates_crlf_trailing_spaces_blank_lines_and_bom(tmp_path: Path) -> None:
    body = "".join(
        f"{r[0]} {r[1]}  {r[2]}\t{r[3]} {r[4]} \r\n" + ("\r\n" if i == 0 else "")
        for i, r in enumerate(ROWS)
    )
    write(tmp_path / "0--E/a.txt", b"\xef\xbb\xbf" + f"a \r\n 3 \r\n{body}\n\n".encode())
    write(tmp_path / "0--E/b.txt", "b\n0")  # no final newline, count 0
    p = read_predictions(tmp_path)
    np.testing.assert_array_equal(p["a"], ROWS)
    assert p["b"].shape == (0, 5)


def test_tar_archives_equal_the_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _, preds = random_case(rng, 12)
    # files hold no negative widths/heights (the reader refuses them; tested below)
    preds = {k: v[(v[:, 2] >= 0) & (v[:, 3] >= 0)] for k, v in preds.items()}
    src = write_pred_dir(tmp_path / "d", {f"{k[0]}--Ev{k[0]}/{k}": v for k, v in preds.items()})
    # a long name exercises GNU long-name records (fast reader) and pax headers (tarfile)
    long = "1_" + "x" * 150
    write(src / "1--Ev1" / f"{long}.txt", f"{long}.jpg\n1\n1 2 3 4 0.5\n")
    ref = read_predictions(src)
    for fmt, mode, suffix in [
        (tarfile.GNU_FORMAT, "w:gz", ".tar.gz"),
        (tarfile.PAX_FORMAT, "w:gz", ".tgz"),
        (tarfile.USTAR_FORMAT, "w:bz2", ".tar.bz2"),
        (tarfile.GNU_FORMAT, "w", ".tar"),
    ]:
        if fmt == tarfile.USTAR_FORMAT:  # ustar cannot store the long name
            (src / "1--Ev1" / f"{long}.txt").unlink(missing_ok=True)
            ref = read_predictions(src)
        p = read_predictions(tar_dir(src, tmp_path / f"p{suffix}", fmt, mode))
        assert p.as_dict().keys() == ref.as_dict().keys(), suffix
        for k, v in ref.as_dict().items():
            np.testing.assert_array_equal(p[k], v)
        assert p.sources[0].startswith(str(tmp_path / f"p{suffix}") + ":preds/")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("a\n2\n1 2 3 4 0.5\n1 2 3 0.5\n", r"a\.txt:4: expected 5 numbers .* found 4"),
        ("a\n1\n1 2 3 4 0.5 7\n", r"a\.txt:3: expected 5 numbers .* found 6"),
        ("a\n2\n1 2 3 4 0.5\n1 2 3 4 x5\n", r"a\.txt:4: 'x5' is not a number"),
        ("a\n1\n1,5 2 3 4 0.5\n", r"a\.txt:3: '1,5' is not a number"),
        ("a\n1\n1 2 3 4 nan\n", r"a\.txt:3: value nan is not finite"),
        ("a\n1\n1 2 3 inf 0.5\n", r"a\.txt:3: value inf is not finite"),
        ("a\n2\n1 2 3 4 0.5\n\n1 2 -3 4 0.4\n", r"a\.txt:5: negative width or height"),
        ("a\n3\n1 2 3 4 0.5\n", r"a\.txt:2: declares 3 boxes but holds 1 rows"),
        ("a\nthree\n", r"a\.txt:2: expected the number of boxes, found 'three'"),
        ("a\n-1\n", r"a\.txt:2: negative number"),
        ("a\n", r"a\.txt:2: expected the number of boxes, found nothing"),
        ("\n0\n", r"a\.txt:1: expected the image name"),
        ("b\n0\n", r"a\.txt:1: image name 'b' does not match the file name 'a\.txt'"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    write(tmp_path / "0--E/ok.txt", "ok\n1\n1 2 3 4 0.5\n")
    write(tmp_path / "0--E/a.txt", content)
    with pytest.raises(InputError, match=match):
        read_predictions(tmp_path)


def test_count_check_can_be_disabled(tmp_path: Path) -> None:
    write(tmp_path / "0--E/a.txt", "a\n5\n1 2 3 4 0.5\n")
    assert read_predictions(tmp_path, check_count=False)["a"].shape == (1, 5)


def test_duplicate_images_and_bad_paths(tmp_path: Path) -> None:
    write(tmp_path / "0--E/a.txt", "a\n0\n")
    write(tmp_path / "1--F/a.txt", "a\n0\n")
    with pytest.raises(InputError, match="two prediction entries for image 'a'"):
        read_predictions(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_predictions(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no prediction files \(\*\.txt\) found in"):
        read_predictions(tmp_path / "empty")
    with pytest.raises(InputError, match="neither a folder nor a tar archive"):
        read_predictions(write(tmp_path / "x.json", "{}"))
    with pytest.raises(InputError, match="cannot decompress"):
        read_predictions(write(tmp_path / "bad.tar.gz", b"\x1f\x8b" + b"junk" * 10))


def test_hidden_and_non_txt_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "0--E/a.txt", "a\n0\n")
    write(tmp_path / "0--E/._a.txt", b"\x00\x05\x16\x07 mac resource fork")
    write(tmp_path / "README.md", "notes")
    assert read_predictions(tmp_path).names == ("a",)


# ----------------------------------------------------------------------------------------------
# ground truth and the whole path through files


def _images() -> list:
    return [
        ("0--E", "a", np.array([[0, 0, 10, 10], [50, 50, 10, 10]]), {s: [1, 2] for s in SETTINGS}),
        ("0--E", "b", np.array([[5, 5, 20, 20]]), {"easy": [], "medium": [1], "hard": [1]}),
        ("1--F", "c", np.zeros((0, 4)), {s: [] for s in SETTINGS}),
    ]


def test_end_to_end_from_files_equals_in_memory(tmp_path: Path) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    preds = {
        "0--E/a": np.array([[0, 0, 10, 10, 0.9], [300, 300, 5, 5, 0.8], [50, 50, 10, 10, 0.5]]),
        "0--E/b": np.array([[5, 5, 20, 20, 0.7]]),
        "1--F/c": np.zeros((0, 5)),
    }
    pred_dir = write_pred_dir(tmp_path / "pred", preds)
    from_files = evaluate_wider(pred_dir, gt_dir)
    in_memory = evaluate_wider(preds, load_wider_gt(gt_dir))
    assert from_files.aps == in_memory.aps
    # a flat folder (not an event name) works too: images are matched by name
    flat = write_pred_dir(
        tmp_path / "flat", {f"all/{k.split('/')[1]}": v for k, v in preds.items()}
    )
    assert read_predictions(flat).events == (None, None, None)
    assert evaluate_wider(flat, gt_dir).aps == in_memory.aps
    assert from_files.images == 3 and from_files.settings["medium"].count_face == 3
    assert from_files.timings["read_predictions"] > 0


def test_missing_prediction_files_are_listed(tmp_path: Path) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    one = np.array([[0, 0, 10, 10, 0.9], [300, 300, 5, 5, 0.1]])
    pred_dir = write_pred_dir(tmp_path / "pred", {"0--E/a": one})
    with pytest.raises(InputError, match=r"missing for 2 of 3 .*0--E/b, 1--F/c"):
        evaluate_wider(pred_dir, gt_dir)
    res = evaluate_wider(pred_dir, gt_dir, subset=True)
    assert res.images == 1 and res.easy == pytest.approx(0.5)


def test_prediction_in_wrong_event_folder(tmp_path: Path) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    pred_dir = write_pred_dir(tmp_path / "pred", {"1--F/a": np.zeros((0, 5))})
    with pytest.raises(InputError, match=r"wrong event folder: .*1--F.a\.txt .*0--E/a"):
        evaluate_wider(pred_dir, gt_dir, subset=True)


@pytest.mark.parametrize("missing", sorted(GT_FILES.values()))
def test_missing_mat_file_is_named(tmp_path: Path, missing: str) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    (gt_dir / missing).unlink()
    with pytest.raises(InputError, match=rf"{missing}' not found"):
        load_wider_gt(gt_dir)


def test_inconsistent_ground_truth_files(tmp_path: Path) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    other = write_gt_mats(tmp_path / "other", _images()[:2])
    (gt_dir / "wider_hard_val.mat").write_bytes((other / "wider_hard_val.mat").read_bytes())
    with pytest.raises(InputError, match=r"wider_hard_val\.mat.*do not match wider_face_val\.mat"):
        load_wider_gt(gt_dir)
    bad = _images()
    bad[0][3]["easy"] = [3]
    with pytest.raises(InputError, match=r"keep index 3 out of range 1\.\.2 for 0--E/a"):
        load_wider_gt(write_gt_mats(tmp_path / "bad", bad))
    (tmp_path / "junk").mkdir()
    for name in GT_FILES.values():
        write(tmp_path / "junk" / name, "not a mat file")
    with pytest.raises(InputError, match=r"not a readable \.mat file"):
        load_wider_gt(tmp_path / "junk")
    with pytest.raises(InputError, match="does not exist"):
        load_wider_gt(tmp_path / "nowhere")


def test_ground_truth_given_as_one_of_its_files(tmp_path: Path) -> None:
    gt_dir = write_gt_mats(tmp_path / "gt", _images())
    whole = load_wider_gt(gt_dir)
    for name in GT_FILES.values():  # e.g. --gt .../wider_face_val.mat: its folder is read
        one = load_wider_gt(gt_dir / name)
        assert one.names == whole.names and np.array_equal(one.boxes, whole.boxes)
    other = write(tmp_path / "gt" / "notes.txt", "x")
    with pytest.raises(InputError, match=r"notes\.txt' is a file; pass the folder that holds "
                       r"wider_face_val\.mat"):  # fmt: skip
        load_wider_gt(other)
