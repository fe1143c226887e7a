"""``damofd eval-wider`` and the PR-curve plot; ``damofd eval`` option checks and messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_eval_support import write_gt_mats, write_pred_dir

from damofd.cli.main import main
from damofd.evaluation import SETTINGS, PlotUnavailableError, evaluate_wider, plot_pr_curves

IMAGES = [
    ("0--E", "a", np.array([[0, 0, 10, 10], [50, 50, 10, 10]]), {s: [1, 2] for s in SETTINGS}),
    ("1--F", "b", np.array([[5, 5, 20, 20]]), {"easy": [], "medium": [1], "hard": [1]}),
]
PREDS = {
    "0--E/a": np.array([[0, 0, 10, 10, 0.9], [300, 300, 5, 5, 0.8], [50, 50, 10, 10, 0.5]]),
    "1--F/b": np.array([[5, 5, 20, 20, 0.7]]),
}


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return write_pred_dir(tmp_path / "pred", PREDS), write_gt_mats(tmp_path / "gt", IMAGES)


def test_json_output_and_out_file(data: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    pred, gt = data
    out = tmp_path / "res" / "ap.json"
    rc = main(["eval-wider", "--pred", str(pred), "--gt", str(gt), "--json", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_wider(pred, gt)
    for s in SETTINGS:
        assert printed[s] == expected.settings[s].ap and 0 <= printed[s] <= 1
    assert printed["images"] == 2
    assert set(printed["timings"]) == {"read_gt", "read_predictions", "evaluate"}
    saved = json.loads(out.read_text())
    assert saved["easy"] == printed["easy"] and len(saved["curves"]["hard"]["recall"]) == 1000


def test_table_output_and_subset(data: tuple[Path, Path], capsys) -> None:
    pred, gt = data
    (pred / "1--F" / "b.txt").unlink()
    assert main(["eval-wider", "--pred", str(pred), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("damofd eval-wider: error: predictions missing for 1 of 2")
    assert err.count("\n") == 1
    assert main(["eval-wider", "--pred", str(pred), "--gt", str(gt), "--subset"]) == 0
    out = capsys.readouterr().out
    assert "Easy" in out and "images: 1 of 2 (subset mode)" in out and "evaluate" in out


def test_plot_without_matplotlib_fails_early_and_clearly(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    pred, gt = data
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    png = tmp_path / "pr.png"
    rc = main(["eval-wider", "--pred", str(pred), "--gt", str(gt), "--plot", str(png)])
    assert rc == 2
    assert "pip install 'damofd[plot]'" in capsys.readouterr().err
    assert not png.exists()
    with pytest.raises(PlotUnavailableError):
        plot_pr_curves(evaluate_wider(pred, gt), png)


def test_plot_writes_a_png(data: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pred, gt = data
    png = tmp_path / "pr.png"
    assert main(["eval-wider", "--pred", str(pred), "--gt", str(gt), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = evaluate_wider(pred, gt)
    plot_pr_curves({"one": res, "two": res}, tmp_path / "two.png", title="overlay")
    assert (tmp_path / "two.png").stat().st_size > 1000


@pytest.fixture
def wider_one(data: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A WIDER root holding one of the two ground-truth images (0--E/a), and the GT folder."""
    import cv2

    root = tmp_path / "WIDER_val"
    (root / "images" / "0--E").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "0--E" / "a.jpg"), np.full((64, 96, 3), 127, np.uint8))
    return root, data[1]


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_eval_option_ranges(wider_one: tuple[Path, Path], capsys) -> None:
    root, gt = wider_one
    base = ["eval", "m.onnx", "--wider-root", str(root), "--gt", str(gt)]
    for flag, value, what in (
        ("--score-thr", "1.5", "in [0, 1]"),
        ("--score-thr", "-1", "in [0, 1]"),
        ("--nms-thr", "0", "in (0, 1]"),
        ("--threads", "-1", "≥ 0"),
        ("--batch-size", "0", "≥ 1"),
        ("--limit", "0", "≥ 1"),
    ):
        err = _usage_error(capsys, [*base, flag, value])
        assert f"argument {flag}: must be {what}, got {value}" in err, err
    assert main([*base, "--device", "cuda"]) == 2
    assert "--device cuda applies to the torch backend" in capsys.readouterr().err


def test_eval_failures_leave_no_work_dir(
    wider_one: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    root, gt = wider_one
    monkeypatch.chdir(tmp_path)
    base = ["--wider-root", str(root), "--gt", str(gt), "--subset"]
    assert main(["eval", "missing.pth", *base]) == 2
    assert "missing.pth: no such file" in capsys.readouterr().err
    assert main(["eval", "scrfd-500m", *base]) == 2
    assert "--weights FILE" in capsys.readouterr().err
    (tmp_path / "some.pth").write_bytes(b"not read: the device is checked first")
    assert main(["eval", "some.pth", *base, "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert "device 'foo' is not a torch device" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_eval_messages_name_flags(wider_one: tuple[Path, Path], capsys) -> None:
    from damofd.engine.wider_eval import run_wider_eval
    from damofd.errors import ConfigError, InputError

    root, gt = wider_one
    assert main(["eval", "m.onnx", "--wider-root", str(root), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 ground-truth images are not under" in err
    assert "pass --subset to evaluate only the 1 images present" in err and "subset=" not in err
    assert main(["eval", "m.onnx", "--wider-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"no ground truth found for --wider-root {str(root)!r}" in err
    assert "pass --gt DIR" in err
    # the Python API names its arguments (and the flag)
    with pytest.raises(InputError, match=r"pass subset=True \(--subset\) to evaluate"):
        run_wider_eval("m.onnx", root, gt)
    with pytest.raises(ConfigError, match=r"score_thr must be in \[0, 1\]"):
        run_wider_eval("m.onnx", root, gt, score_thr=1.5)
