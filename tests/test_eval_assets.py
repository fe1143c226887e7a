"""The WIDER protocol on real data: published reference-port numbers and the real image subset."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_asset
from test_eval_support import GT_DIR, PRED_TAR, real_gt, real_predictions

from damofd.evaluation import evaluate_wider

pytestmark = pytest.mark.assets


def test_retinaface_mnet025_reference_aps(assets: Path) -> None:
    """The reference Python port gives 0.906958 / 0.881579 / 0.738286 on these files
    (read here straight from the archive and the .mat files, no cache)."""
    res = evaluate_wider(require_asset(assets, PRED_TAR), require_asset(assets, GT_DIR))
    assert res.easy == pytest.approx(0.906958, abs=1e-6)
    assert res.medium == pytest.approx(0.881579, abs=1e-6)
    assert res.hard == pytest.approx(0.738286, abs=1e-6)
    assert res.images == 3226 and res.predictions == 297333 and res.resorted_images == 0
    assert {s: r.count_face for s, r in res.settings.items()} == {
        "easy": 7211,
        "medium": 13319,
        "hard": 31958,
    }


def test_subset_mode_on_the_real_image_subset(assets: Path) -> None:
    """Only the 358 val images shipped in WIDER_val/images: absent images leave both sides."""
    images = require_asset(assets, "widerface/WIDER_val/images")
    present = {p.stem for p in images.glob("*/*.jpg")}
    gt = real_gt(require_asset(assets, GT_DIR))
    preds = real_predictions(require_asset(assets, PRED_TAR)).as_dict()
    sub = {k: v for k, v in preds.items() if k.split("/")[-1] in present}
    res = evaluate_wider(sub, gt, subset=True)
    assert res.images == len(present) == 358 and res.images_total == 3226
    used = [gt.index_of(n) for n in present]
    assert res.settings["hard"].count_face == int(gt.keep_counts["hard"][used].sum())
    # the four events are mid-difficulty: AP well inside (0, 1), and Easy ≥ Medium ≥ Hard
    assert 0.5 < res.hard < res.medium < res.easy < 1.0
