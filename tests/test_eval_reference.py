"""The vectorised evaluator against a plain loop port of the reference (tests/test_eval_support):
equal to 1e-12 (in practice bit-identical) on random corner-case data and on real predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_asset
from test_eval_support import (
    GT_DIR,
    PRED_TAR,
    random_case,
    real_gt,
    real_predictions,
    reference_eval,
)

from damofd.evaluation import (
    SETTINGS,
    WiderGroundTruth,
    evaluate_wider,
)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_loop_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt_images, preds = random_case(rng, n_images=24)
    expected = reference_eval(preds, gt_images)
    res = evaluate_wider(preds, WiderGroundTruth.from_images(gt_images))
    for s in SETTINGS:
        assert res.settings[s].ap == pytest.approx(expected[s], abs=1e-12), s


def test_matches_loop_reference_at_other_iou_and_threshold_count() -> None:
    rng = np.random.default_rng(7)
    gt_images, preds = random_case(rng, n_images=16)
    expected = reference_eval(preds, gt_images, iou_thresh=0.3, thresh_num=97)
    res = evaluate_wider(
        preds, WiderGroundTruth.from_images(gt_images), iou_thresh=0.3, thresh_num=97
    )
    for s in SETTINGS:
        assert res.settings[s].ap == pytest.approx(expected[s], abs=1e-12), s


def test_unsorted_input_equals_reference_on_sorted_rows() -> None:
    rng = np.random.default_rng(11)
    gt_images, preds = random_case(rng, n_images=16)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in preds.items()}
    res = evaluate_wider(shuffled, WiderGroundTruth.from_images(gt_images))
    expected = reference_eval(preds, gt_images)  # preds are stably sorted already
    assert res.resorted_images > 0
    for s in SETTINGS:
        assert res.settings[s].ap == pytest.approx(expected[s], abs=1e-12), s


@pytest.mark.assets
def test_matches_loop_reference_on_real_predictions(assets: Path) -> None:
    gt = real_gt(require_asset(assets, GT_DIR))
    preds = real_predictions(require_asset(assets, PRED_TAR))
    # every 96th val image: 34 images across the events, with ignore faces in every setting
    picked = list(range(0, len(gt), 96))
    sub_gt = gt.select(picked)
    sub_preds = {name: preds[name] for name in sub_gt.names}
    gt_images = [
        (
            sub_gt.events[i],
            sub_gt.names[i],
            sub_gt.image_boxes(i),
            {
                s: np.flatnonzero(sub_gt.keep[s][sub_gt.offsets[i] : sub_gt.offsets[i + 1]]) + 1
                for s in SETTINGS
            },
        )
        for i in range(len(sub_gt))
    ]
    expected = reference_eval(sub_preds, gt_images)
    res = evaluate_wider(sub_preds, gt, subset=True)
    assert res.images == len(picked)
    for s in SETTINGS:
        assert res.settings[s].ap == pytest.approx(expected[s], abs=1e-12), s
