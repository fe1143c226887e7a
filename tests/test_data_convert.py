"""Converters to labelv2 and the image-size reader, against the shipped WIDER FACE files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from damofd.cli.main import main as cli
from damofd.data.convert import convert, read_retinaface_txt, read_wider_txt
from damofd.data.imagesize import read_image_size
from damofd.data.labelv2 import format_labelv2, read_labelv2
from damofd.errors import InputError
from tests.conftest import require_asset

W = "widerface"


def _write_img(path: Path, w: int, h: int, ext: str = ".jpg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_image_size_from_header(tmp_path: Path, ext: str) -> None:
    p = _write_img(tmp_path / f"a{ext}", 37, 23, ext)
    assert read_image_size(p) == (37, 23)


def test_image_size_progressive_jpeg_and_errors(tmp_path: Path) -> None:
    img = np.zeros((31, 45, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    (tmp_path / "p.jpg").write_bytes(buf.tobytes())
    assert read_image_size(tmp_path / "p.jpg") == (45, 31)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        read_image_size(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"bad\.jpg"):
        read_image_size(tmp_path / "bad.jpg")


def test_wider_txt_subset_reproduces_shipped_train_labelv2(assets: Path) -> None:
    src = require_asset(assets, f"{W}/wider_face_split/wider_face_train_bbx_gt_subset.txt")
    shipped = require_asset(assets, f"{W}/labelv2/train/labelv2.txt")
    images = require_asset(assets, f"{W}/WIDER_train/images")
    result = convert("wider-txt", src, image_dir=images)
    # same images, boxes (x2 = x + w, the 18 invalid faces kept) and sizes read from the JPEGs
    assert format_labelv2(result.images) == shipped.read_text()


def test_wider_mat_matches_shipped_train_labelv2(assets: Path) -> None:
    src = require_asset(assets, f"{W}/wider_face_split/wider_face_train.mat")
    shipped = {i.name: i for i in read_labelv2(assets / f"{W}/labelv2/train/labelv2.txt")}
    result = convert(
        "wider-mat", src, image_dir=assets / f"{W}/WIDER_train/images", skip_missing=True
    )
    assert len(result.images) == len(shipped) == 1239
    assert len(result.skipped_missing) == 12880 - 1239
    for img in result.images:
        ref = shipped[img.name]
        assert (img.width, img.height) == (ref.width, ref.height)
        np.testing.assert_array_equal(img.bboxes, ref.bboxes)


def test_wider_txt_val_drop_empty_reproduces_shipped_val_boxes(assets: Path) -> None:
    src = require_asset(assets, f"{W}/wider_face_split/wider_face_val_bbx_gt.txt")
    shipped = read_labelv2(require_asset(assets, f"{W}/labelv2/val/labelv2.txt"))
    kept = read_wider_txt(src)
    dropped = read_wider_txt(src, drop_empty=True)
    assert sum(i.num_objects for i in kept) == 39708  # every WIDER val face
    assert sum(i.num_objects for i in dropped) == sum(i.num_objects for i in shipped) == 39697
    for a, b in zip(dropped, shipped):
        assert a.name == b.name
        np.testing.assert_array_equal(a.bboxes, b.bboxes)


def test_wider_txt_invalid_policy_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "gt.txt"
    src.write_text(
        "e/a.jpg\n2\n1 2 10 20 0 0 0 0 0 0\n5 5 4 4 0 0 0 1 0 0\ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    keep = read_wider_txt(src)
    assert [i.num_objects for i in keep] == [2, 0]
    np.testing.assert_array_equal(keep[0].bboxes, [[1, 2, 11, 22], [5, 5, 9, 9]])
    assert not keep[0].ignore.any()
    ign = read_wider_txt(src, invalid="ignore")
    np.testing.assert_array_equal(ign[0].ignore, [False, True])
    assert format_labelv2(ign).splitlines()[2] == "5 5 9 9 1"
    assert read_wider_txt(src, invalid="drop")[0].num_objects == 1
    src.write_text("e/a.jpg\n3\n1 2 10 20 0 0 0 0 0 0\n")
    with pytest.raises(InputError, match=r"gt\.txt:1: .*announces 3 faces"):
        read_wider_txt(src)
    src.write_text("e/a.jpg\nxx\n")
    with pytest.raises(InputError, match=r"gt\.txt:2: expected the face count"):
        read_wider_txt(src)


def test_wider_mat_synthetic(tmp_path: Path) -> None:
    ev = np.empty((1, 1), dtype=object)
    ev[0, 0] = np.array(["0--Parade"])
    files = np.empty((1, 1), dtype=object)
    fl = np.empty((2, 1), dtype=object)
    fl[0, 0], fl[1, 0] = np.array(["p_1"]), np.array(["p_2"])
    files[0, 0] = fl
    boxes = np.empty((1, 1), dtype=object)
    bl = np.empty((2, 1), dtype=object)
    bl[0, 0] = np.array([[1, 2, 3, 4], [10, 10, 5, 5]], dtype=np.int32)
    bl[1, 0] = np.zeros((0, 4), dtype=np.int32)
    boxes[0, 0] = bl
    inv = np.empty((1, 1), dtype=object)
    il = np.empty((2, 1), dtype=object)
    il[0, 0], il[1, 0] = np.array([[0], [1]]), np.zeros((0, 1))
    inv[0, 0] = il
    path = tmp_path / "w.mat"
    savemat(path, {"event_list": ev, "file_list": files, "face_bbx_list": boxes,
                   "invalid_label_list": inv})  # fmt: skip
    res = convert("wider-mat", path, invalid="ignore")
    assert [i.name for i in res.images] == ["0--Parade/p_1.jpg", "0--Parade/p_2.jpg"]
    np.testing.assert_array_equal(res.images[0].bboxes, [[1, 2, 4, 6], [10, 10, 15, 15]])
    np.testing.assert_array_equal(res.images[0].ignore, [False, True])
    savemat(path, {"event_list": ev})
    with pytest.raises(InputError, match="file_list"):
        convert("wider-mat", path)


def test_retinaface_keypoints_and_sizes(tmp_path: Path) -> None:
    src = tmp_path / "label.txt"
    kps = "12.5 30.0 0.0 40.0 30.0 1.0 28.0 45.0 0.0 18.0 58.0 0.0 38.0 58.0 0.0"
    src.write_text(
        f"# ./e/a.jpg\n10 20 40 50 {kps} 0.82\n1 1 5 5 " + " ".join(["-1.0"] * 15) + " -1.0\n"
        "# e/b.jpg\n3 4 5 6\n"
    )
    images_dir = tmp_path / "images"
    _write_img(images_dir / "e/a.jpg", 64, 48)
    res = convert("retinaface", src, image_dir=images_dir, skip_missing=True)
    assert res.skipped_missing == ["e/b.jpg"]
    (a,) = res.images
    assert (a.name, a.width, a.height) == ("e/a.jpg", 64, 48)
    np.testing.assert_array_equal(a.bboxes, [[10, 20, 50, 70], [1, 1, 6, 6]])
    np.testing.assert_array_equal(a.keypoint_weights(), [[1] * 5, [0] * 5])
    line = format_labelv2(res.images).splitlines()[1]
    assert line == "10 20 50 70 12.5 30 0 40 30 1 28 45 0 18 58 0 38 58 0"
    # the missing image is named in the error when not skipped
    with pytest.raises(InputError, match=r"e/b\.jpg"):
        convert("retinaface", src, image_dir=images_dir)
    src.write_text("# e/a.jpg\n1 2 3 4 5 6\n")
    with pytest.raises(InputError, match=r"label\.txt:2: .*got 6"):
        read_retinaface_txt(src)


def test_shipped_retinaface_val_matches_wider_val(assets: Path) -> None:
    src = require_asset(assets, f"{W}/retinaface_format/val/label.txt")
    ret = read_retinaface_txt(src)
    wid = {
        i.name: i
        for i in read_wider_txt(assets / f"{W}/wider_face_split/wider_face_val_bbx_gt.txt")
    }
    assert len(ret) == 3226
    for img in ret[:200]:
        np.testing.assert_array_equal(img.bboxes, wid[img.name].bboxes)


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "gt.txt"
    src.write_text("e/a.jpg\n1\n1 2 10 20 0 0 0 0 0 0\n")
    _write_img(tmp_path / "img/e/a.jpg", 50, 40)
    out = tmp_path / "labelv2.txt"
    rc = cli(["data", "convert", "--from", "wider-txt", str(src), "--out", str(out),
              "--images", str(tmp_path / "img")])  # fmt: skip
    assert rc == 0
    assert out.read_text() == "# e/a.jpg 50 40\n1 2 11 22\n"
    assert "1 images, 1 boxes" in capsys.readouterr().out
    rc = cli(["data", "convert", "--from", "wider-txt", str(tmp_path / "none.txt"),
              "--out", str(out)])  # fmt: skip
    assert rc == 2
    assert out.read_text() == "# e/a.jpg 50 40\n1 2 11 22\n"  # untouched on failure


def test_cli_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def error(*argv: str) -> str:
        assert cli(["data", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 or "missing under" in err, err
        return err

    # a .mat given to a text converter: named as such, with the converter that reads it
    mat = tmp_path / "wider_face_train.mat"
    savemat(mat, {"event_list": np.zeros((3, 1)), "x": np.arange(300.0)}, do_compression=True)
    for fmt in ("wider-txt", "retinaface"):
        err = error("convert", "--from", fmt, str(mat), "--out", str(tmp_path / "x.txt"))
        assert err.startswith("damofd data convert: error: ")  # the sub-command, not "data:"
        assert "MATLAB .mat file" in err and "--from wider-mat" in err
    assert "MATLAB .mat file" in error("check", str(mat))
    assert error("check", str(mat)).startswith("damofd data check: error: ")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not a UTF-8 text file" in error("convert", "--from", "wider-txt", str(binary),
                                            "--out", str(tmp_path / "x.txt"))  # fmt: skip
    # --out is checked before the conversion (here the source does not even exist)
    err = error(
        "convert", "--from", "wider-txt", str(tmp_path / "nope.txt"), "--out", str(tmp_path)
    )
    assert f"--out {str(tmp_path)!r} is a directory" in err
    # missing images: the remedy is the command-line flag, the API names its argument
    src = tmp_path / "gt.txt"
    src.write_text("e/a.jpg\n1\n1 2 10 20 0 0 0 0 0 0\n")
    (tmp_path / "img").mkdir()
    err = error("convert", "--from", "wider-txt", str(src), "--out", str(tmp_path / "l.txt"),
                "--images", str(tmp_path / "img"))  # fmt: skip
    assert "pass --skip-missing to drop them" in err and "skip_missing" not in err
    with pytest.raises(InputError, match=r"skip_missing=True"):
        convert("wider-txt", src, image_dir=tmp_path / "img")
