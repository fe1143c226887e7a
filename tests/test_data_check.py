"""``damofd data check`` and dataset layout resolution."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.cli.main import main as cli
from damofd.data.check import check_labelv2
from damofd.data.layout import resolve_dataset
from damofd.errors import InputError


def _img(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    _img(tmp_path / "images/e/a.jpg")
    _img(tmp_path / "images/e/b.jpg", 50, 30)
    (tmp_path / "labelv2.txt").write_text(
        "\n".join(
            [
                "# e/a.jpg 40 30",  # 1
                "1 2 10 20",  # 2
                "1 2 10",  # 3 malformed
                "# e/missing1.jpg 40 30",  # 4 missing
                "1 2 10 20",  # 5
                "1 2 x 20",  # 6 malformed
                "# e/b.jpg 40 30",  # 7 size differs from the file (50x30)
                "5 5 5 9",  # 8 degenerate (warning)
                "30 5 45 9",  # 9 extends past the 40-px header width (warning)
                "# e/missing2.jpg",  # 10 missing, no size
                "",
            ]
        )
    )
    return tmp_path


def test_check_reports_every_error_with_line_numbers(dataset: Path) -> None:
    rep = check_labelv2(dataset / "labelv2.txt", dataset / "images")
    errors = [(i.line, i.message.split(":")[0]) for i in rep.errors]
    assert [e[0] for e in errors] == [3, 4, 6, 10]
    assert rep.missing_images == ["e/missing1.jpg", "e/missing2.jpg"]
    warn_lines = sorted(i.line for i in rep.warnings)
    assert 7 in warn_lines  # header 40x30 but file is 50x30
    assert 8 in warn_lines  # degenerate box
    assert 10 in warn_lines  # no size in the header
    assert not rep.ok
    assert "4 errors (2 missing images)" in rep.summary()


def test_check_without_images_and_clean_file(tmp_path: Path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("# a.jpg 10 10\n1 1 5 5\n")
    rep = check_labelv2(p)
    assert rep.ok and rep.issues == []


def test_cli_check_exit_status_and_output(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli(["data", "check", str(dataset / "labelv2.txt"), "--images", str(dataset / "images")])
    out = capsys.readouterr()
    assert rc == 1
    for n in (3, 4, 6, 10):
        assert f"labelv2.txt:{n}: error" in out.out
    assert "missing1.jpg" in out.out and "missing2.jpg" in out.out
    assert "2 missing images" in out.err
    # a dataset folder is accepted too (images/ found next to the file); -q drops warnings
    rc = cli(["data", "check", str(dataset), "-q"])
    out = capsys.readouterr()
    assert rc == 1 and "warning" not in out.out
    good = dataset / "good.txt"
    good.write_text("# e/a.jpg 40 30\n1 2 10 20\n")
    assert cli(["data", "check", str(good), "--images", str(dataset / "images")]) == 0


def test_resolve_dataset_layouts(tmp_path: Path) -> None:
    # plain folder: labelv2.txt + images/
    plain = tmp_path / "train"
    (plain / "images").mkdir(parents=True)
    (plain / "labelv2.txt").write_text("")
    p = resolve_dataset(plain)
    assert (p.labels, p.images) == (plain / "labelv2.txt", plain / "images")
    assert resolve_dataset(plain / "labelv2.txt") == p
    # ModelScope split folder: one sub-folder not starting with "_"
    ms = tmp_path / "ms_split"
    (ms / "_cache").mkdir(parents=True)
    (ms / "_cache" / "labelv2.txt").write_text("")
    (ms / "WIDER_FACE_mini" / "images").mkdir(parents=True)
    (ms / "WIDER_FACE_mini" / "labelv2.txt").write_text("")
    p = resolve_dataset(ms)
    assert p.labels == ms / "WIDER_FACE_mini" / "labelv2.txt"
    assert p.images == ms / "WIDER_FACE_mini" / "images"
    # explicit image folder wins
    other = tmp_path / "imgs"
    other.mkdir()
    assert resolve_dataset(plain, image_dir=other).images == other
    # errors name what is wrong
    (ms / "second" / "images").mkdir(parents=True)
    (ms / "second" / "labelv2.txt").write_text("")
    with pytest.raises(InputError, match="several sub-folders"):
        resolve_dataset(ms)
    with pytest.raises(InputError, match="neither"):
        resolve_dataset(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_dataset(tmp_path / "nothing")
    (tmp_path / "lonely.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="image folder"):
        resolve_dataset(tmp_path / "lonely.txt")
