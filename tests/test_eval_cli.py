"""``damofd eval-wider`` and the PR-curve plot."""

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
