"""Recall by face size (``recall_by_size``, ``damofd eval-wider --by-size``) and inverted boxes
(``--allow-inverted``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_eval_support import write_gt_mats, write_pred_dir

from damofd.cli.main import main
from damofd.errors import InputError
from damofd.evaluation import (
    SETTINGS,
    WiderGroundTruth,
    evaluate_wider,
    read_predictions,
    recall_by_size,
)

# faces of 10, 40, 100 and 300 px (sqrt(w*h)); the 300-px one is an ignore face in hard
IMAGES = [
    (
        "0--E", "a",
        np.array([[0, 0, 10, 10], [100, 100, 40, 40], [200, 200, 100, 100], [400, 0, 300, 300]]),
        {"easy": [3], "medium": [2, 3], "hard": [1, 2, 3]},
    ),
    ("1--F", "b", np.array([[10, 10, 50, 30]]), {s: [1] for s in SETTINGS}),
]  # fmt: skip
PREDS = {
    # the 10-px face found; the 40-px face hit but scored below 0.5; the 100-px face missed
    # (IoU < 0.5); a stray box
    "0--E/a": np.array(
        [
            [0, 0, 10, 10, 0.9],
            [100, 100, 40, 40, 0.3],
            [200, 200, 40, 40, 0.8],
            [900, 900, 5, 5, 0.7],
        ]
    ),
    "1--F/b": np.array([[10, 10, 50, 30, 0.6]]),  # sqrt(50*30) = 38.7 px: found
}


def _gt() -> WiderGroundTruth:
    return WiderGroundTruth.from_images(IMAGES)


def test_bins_count_the_settings_faces_by_size() -> None:
    r = recall_by_size(PREDS, _gt(), setting="hard", score_thr=0.5, edges=(0, 16, 64, 256))
    assert [(b.lo, b.hi, b.faces, b.found) for b in r.bins] == [
        (0, 16, 1, 1),  # 10 px
        (16, 64, 2, 1),  # 40 px (score 0.3: not found) and 38.7 px (found)
        (64, 256, 1, 0),  # 100 px, IoU 0.16
        (256, math.inf, 0, 0),  # the 300-px face is an ignore face in hard
    ]
    assert r.bins[0].recall == 1.0 and r.bins[1].recall == 0.5
    assert r.bins[0].mean_best_iou == pytest.approx(1.0)
    # the 40-px face's box is perfect but below the threshold: best IoU 0 among kept boxes
    assert r.bins[1].mean_best_iou == pytest.approx(0.5)
    assert r.bins[2].mean_best_iou == pytest.approx(0.16)
    assert math.isnan(r.bins[3].recall)
    d = r.to_dict()
    assert d["bins"][3] == {
        "lo": 256.0, "hi": None, "faces": 0, "found": 0, "recall": None, "mean_best_iou": None
    }  # fmt: skip
    table = r.table()
    assert "| 0–16 | 1 | 1 | 1.000 | 1.000 |" in table and "256–" not in table


def test_threshold_and_setting_change_the_count() -> None:
    low = recall_by_size(PREDS, _gt(), score_thr=0.2, edges=(0, 16, 64, 256))
    assert [b.found for b in low.bins] == [1, 2, 0, 0]
    easy = recall_by_size(PREDS, _gt(), setting="easy", edges=(0, 16, 64, 256))
    assert [b.faces for b in easy.bins] == [0, 1, 1, 0]  # 38.7-px face of b, 100-px face of a


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match="setting must be one of"):
        recall_by_size(PREDS, _gt(), setting="tiny")
    with pytest.raises(InputError, match="edges must be increasing"):
        recall_by_size(PREDS, _gt(), edges=(0, 32, 16))
    with pytest.raises(InputError, match="iou_thresh"):
        recall_by_size(PREDS, _gt(), iou_thresh=0)


def test_inverted_boxes_need_allow_inverted_and_count_as_false_positives(tmp_path: Path) -> None:
    preds = dict(PREDS)
    preds["1--F/b"] = np.array([[10, 10, 50, 30, 0.6], [70, 70, -20, 10, 0.95]])
    pred = write_pred_dir(tmp_path / "pred", preds)
    with pytest.raises(InputError, match=r"b\.txt:4: negative width.*--allow-inverted"):
        read_predictions(pred)
    got = evaluate_wider(pred, _gt(), allow_inverted=True)
    # the inverted box overlaps nothing: the same AP as a far-away false positive of that score
    far = dict(preds)
    far["1--F/b"] = np.array([[10, 10, 50, 30, 0.6], [900, 900, 20, 10, 0.95]])
    ref = evaluate_wider(far, _gt())
    for s in SETTINGS:
        assert got.settings[s].ap == ref.settings[s].ap


def test_cli_by_size_table_and_json(tmp_path: Path, capsys) -> None:
    pred = write_pred_dir(tmp_path / "pred", PREDS)
    gt = write_gt_mats(tmp_path / "gt", IMAGES)
    assert main(["eval-wider", "--pred", str(pred), "--gt", str(gt), "--by-size"]) == 0
    out = capsys.readouterr().out
    assert "hard faces by size" in out and "| 8–16 | 1 | 1 | 1.000 | 1.000 |" in out
    argv = ["eval-wider", "--pred", str(pred), "--gt", str(gt), "--json", "--by-size", "easy"]
    assert main([*argv, "--size-score-thr", "0.7"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["by_size"]["setting"] == "easy" and d["by_size"]["score_thr"] == 0.7
    assert sum(b["found"] for b in d["by_size"]["bins"]) == 0  # b's face scored 0.6
    assert d["timings"]["read_predictions"] > 0
