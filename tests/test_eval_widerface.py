"""WIDER evaluation protocol on hand-made cases with hand-computed answers (reference-spec §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from damofd.errors import InputError
from damofd.evaluation import (
    SETTINGS,
    WiderGroundTruth,
    evaluate_wider,
    match_predictions,
    normalise_scores,
    pr_thresholds,
    voc_ap,
)

A = [0, 0, 10, 10]  # xywh
B = [100, 100, 10, 10]
C = [200, 0, 20, 20]
ALL = {s: [1, 2] for s in SETTINGS}


def gt_of(*images: tuple[str, list[list[float]], dict[str, list[int]]]) -> WiderGroundTruth:
    """Ground truth of images ``(name, boxes, keep)``, all in event ``0--E``."""
    return WiderGroundTruth.from_images(("0--E", n, b, k) for n, b, k in images)


def rows(*r: list[float]) -> np.ndarray:
    return np.array(r, dtype=np.float64).reshape(-1, 5)


# ----------------------------------------------------------------------------------------------
# pieces


def test_thresholds_are_the_reference_loop_values() -> None:
    t = pr_thresholds(1000)
    assert t.shape == (1000,)
    assert all(t[k] == 1 - (k + 1) / 1000 for k in range(1000))  # bit-identical
    assert t[0] == 0.999 and t[-1] == 0.0


def test_voc_ap_known_values() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # envelope: the dip at recall 0.5 is lifted to the later 0.8
    assert voc_ap(np.array([0.25, 0.5, 1.0]), np.array([1.0, 0.2, 0.8])) == pytest.approx(
        0.25 + 0.75 * 0.8
    )
    # NaN precision (0/0) at recall 0 is harmless, as in the reference
    assert voc_ap(np.array([0.0, 1.0]), np.array([np.nan, 1.0])) == 1.0


def test_normalise_scores_reference_start_values() -> None:
    s, lo, hi = normalise_scores(np.array([0.2, 0.6, 1.0]))
    np.testing.assert_allclose(s, [0, 0.5, 1])
    # the reference starts from min = 2 and max = -1: scores above 2 are not min-shifted to 0
    s, lo, hi = normalise_scores(np.array([3.0, 4.0]))
    assert (lo, hi) == (2.0, 4.0)
    np.testing.assert_allclose(s, [0.5, 1.0])


def test_match_takes_the_single_max_iou_gt_and_first_on_ties() -> None:
    gt = np.array([A, A, [0, 0, 12, 12]], dtype=np.float64)  # 0 and 1 identical
    pred = np.array([[0, 0, 10, 10], [0, 0, 12, 12], [50, 50, 5, 5]], dtype=np.float64)
    pi, gi = match_predictions(pred, np.array([0, 3]), gt, np.array([0, 3]))
    assert pi.tolist() == [0, 1] and gi.tolist() == [0, 2]


def test_iou_uses_the_plus_one_convention() -> None:
    # GT xywh [0,0,2,2] vs prediction [1,0,2,2]: with +1 the overlap is 2×3 = 6 and the union
    # 9 + 9 − 6 = 12 → IoU 0.5, a match; the plain IoU would be 2/6.
    one = np.array([0, 1])
    pi, _ = match_predictions(
        np.array([[1, 0, 2, 2]], dtype=np.float64), one, np.array([[0, 0, 2, 2.0]]), one
    )
    assert pi.tolist() == [0]
    # a 0×0 GT box (area 1 under +1) is matched by the same 0×0 prediction (IoU 1)
    pi, _ = match_predictions(
        np.array([[5, 5, 0, 0]], dtype=np.float64), one, np.array([[5, 5, 0, 0.0]]), one
    )
    assert pi.tolist() == [0]


# ----------------------------------------------------------------------------------------------
# whole protocol, hand-computed


def test_tiny_hand_computed_ap() -> None:
    # hit A (0.9), far false positive (0.8), hit B (0.5) → normalised 1, 0.75, 0.
    # t in (0.75, 1]: P=1, R=1/2; t in (0, 0.75]: P=1/2, R=1/2; t = 0: P=2/3, R=1.
    # AP = 1/2·1 + 1/2·2/3.
    gt = gt_of(("x", [A, B], ALL))
    res = evaluate_wider({"x": rows([*A, 0.9], [300, 300, 5, 5, 0.8], [*B, 0.5])}, gt)
    for s in SETTINGS:
        assert res.settings[s].ap == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    r = res.settings["easy"]
    assert r.proposals[0] == 1 and r.recalled[0] == 1  # t = 0.999
    assert r.proposals[-1] == 3 and r.recalled[-1] == 2  # t = 0
    assert res.images == 1 and res.predictions == 3 and res.resorted_images == 0


def test_ignore_faces_duplicates_and_per_setting_keep_lists() -> None:
    # GT: A (kept everywhere), C (ignore in easy, kept in hard). Rows (score order):
    #   p1 → C 0.9, p3 → C 0.7, p4 → A 0.6, p2 → A 0.5  (normalised 1, .5, .25, 0)
    # easy: p1 and p3 hit the ignore face → not proposals (both, not only the first);
    #   p4 recalls A; p2 is a duplicate on A → stays a proposal (false positive).
    #   t > .25: 0/0 → NaN; (0, .25]: P=1, R=1; t=0: P=1/2, R=1 → AP = 1.
    # hard: p1 recalls C; p3 duplicate → FP; p4 recalls A; p2 FP.
    #   (.5,1]: P=1,R=1/2; (.25,.5]: P=1/2,R=1/2; (0,.25]: P=2/3,R=1; 0: P=1/2,R=1
    #   → AP = 1/2·1 + 1/2·2/3.
    keep = {"easy": [1], "medium": [1], "hard": [1, 2]}
    gt = gt_of(("x", [A, C], keep))
    preds = {"x": rows([*C, 0.9], [*C, 0.7], [*A, 0.6], [*A, 0.5])}
    res = evaluate_wider(preds, gt)
    assert res.easy == 1.0 and res.medium == 1.0
    assert res.hard == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    e = res.settings["easy"]
    assert e.proposals[-1] == 2 and e.recalled[-1] == 1
    assert math.isnan(e.precision[0])  # no proposal above 0.999: the reference's 0/0
    h = res.settings["hard"]
    assert h.proposals[-1] == 4 and h.recalled[-1] == 2


def test_a_prediction_goes_to_its_max_iou_gt_even_if_that_one_is_ignored() -> None:
    # the row overlaps kept A with IoU 110/132 and ignore A' (A shifted by 1 px) with IoU 1
    # → it takes A', is not a proposal, and A is not recalled.
    a_shift = [1, 0, 10, 10]
    keep = {s: [1] for s in SETTINGS}
    gt = gt_of(("x", [A, a_shift], keep))
    res = evaluate_wider({"x": rows([*a_shift, 0.9], [300, 300, 4, 4, 0.1])}, gt)
    r = res.settings["easy"]
    assert r.recalled[-1] == 0 and r.proposals[-1] == 1  # only the background box
    assert res.easy == 0.0


def test_unsorted_rows_are_stably_sorted() -> None:
    gt = gt_of(("x", [A, B], ALL))
    good = rows([*A, 0.9], [300, 300, 5, 5, 0.8], [*B, 0.5])
    shuffled = good[[2, 0, 1]]
    ref = evaluate_wider({"x": good}, gt)
    res = evaluate_wider({"x": shuffled}, gt)
    assert res.resorted_images == 1 and ref.resorted_images == 0
    assert res.aps == ref.aps
    # ties keep the given order: the first of two equal-score rows on A recalls it
    tie = evaluate_wider({"x": rows([*A, 0.5], [300, 300, 5, 5, 0.9], [*A, 0.5])}, gt)
    assert tie.resorted_images == 1


def test_images_without_predictions_still_count_their_faces() -> None:
    gt = gt_of(("x", [A, B], ALL), ("y", [A, B], ALL))
    preds = {"x": rows([*A, 0.9], [300, 300, 5, 5, 0.8], [*B, 0.5]), "y": np.zeros((0, 5))}
    res = evaluate_wider(preds, gt)
    assert res.settings["easy"].count_face == 4
    assert res.easy == pytest.approx(0.25 * 1 + 0.25 * 2 / 3, abs=1e-12)
    assert res.images == 2 and res.images_matched == 1


def test_images_without_gt_are_skipped_but_enter_the_normalisation() -> None:
    base = {"x": rows([*A, 0.9], [300, 300, 5, 5, 0.8], [*B, 0.5])}
    gt = gt_of(("x", [A, B], ALL), ("empty", [], {s: [] for s in SETTINGS}))
    ref = evaluate_wider({**base, "empty": np.zeros((0, 5))}, gt).easy
    # high-scoring rows in a GT-less image are not false positives ...
    inside = evaluate_wider({**base, "empty": rows([0, 0, 5, 5, 0.85], [1, 1, 5, 5, 0.6])}, gt)
    assert inside.easy == ref
    # ... but a score outside [min, max] rescales everything (s_max 1.7): A → 1/3, FP → 1/4,
    # B → 0, so no threshold above 1/3 has a proposal (precision 0/0) and the top recall point
    # moves down; the AP is unchanged here because the envelope is the same
    outside = evaluate_wider({**base, "empty": rows([0, 0, 5, 5, 1.7])}, gt)
    assert outside.score_range == (0.5, 1.7)
    r = outside.settings["easy"]
    assert r.proposals[665] == 0 and r.proposals[667] == 1  # t = 0.334 and 0.332
    assert outside.easy == pytest.approx(ref, abs=1e-12)


def test_all_equal_scores_mirror_the_reference_zero_division() -> None:
    gt = gt_of(("x", [A, B], ALL))
    with pytest.warns(RuntimeWarning, match="all prediction scores are equal"):
        res = evaluate_wider({"x": rows([*A, 0.7], [*B, 0.7])}, gt)
    assert res.aps == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    assert (res.settings["hard"].proposals == 0).all()
    # the reference's start values (min 2, max -1) make equal scores above 2 work: all → 1.0
    res = evaluate_wider({"x": rows([*A, 3.0], [*B, 3.0])}, gt)
    assert res.aps == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_setting_without_kept_faces_gives_nan_with_a_warning() -> None:
    gt = gt_of(("x", [A, B], {"easy": [], "medium": [1], "hard": [1, 2]}))
    with pytest.warns(RuntimeWarning, match="easy: no kept faces"):
        res = evaluate_wider({"x": rows([*A, 0.9], [*B, 0.2])}, gt)
    assert math.isnan(res.easy) and res.to_dict()["easy"] is None
    assert res.medium == pytest.approx(1.0) and res.hard == pytest.approx(1.0)


def test_inputs_are_not_modified() -> None:
    gt = gt_of(("x", [A, B], ALL))
    a = rows([*B, 0.5], [*A, 0.9])
    before = a.copy()
    evaluate_wider({"x": a}, gt)
    np.testing.assert_array_equal(a, before)


def test_mapping_keys_and_event_check() -> None:
    gt = gt_of(("x", [A, B], ALL))
    good = rows([*A, 0.9], [*B, 0.5])
    keys = ("x", "x.jpg", "0--E/x", "0--E/x.jpg", "/data/WIDER_val/images/0--E/x.jpg", "flat/x")
    for key in keys:
        assert evaluate_wider({key: good}, gt).easy == 1.0
    with pytest.raises(InputError, match="wrong event folder"):
        evaluate_wider({"9--Other/x": good}, gt)
    with pytest.raises(InputError, match=r"shape \(2, 4\)"):
        evaluate_wider({"x": good[:, :4]}, gt)
    with pytest.raises(InputError, match="not finite"):
        evaluate_wider({"x": rows([*A, np.nan])}, gt)
    with pytest.raises(InputError, match="iou_thresh"):
        evaluate_wider({"x": good}, gt, iou_thresh=0)


def test_strict_and_subset_modes() -> None:
    gt = gt_of(("x", [A, B], ALL), ("y", [A], {s: [1] for s in SETTINGS}))
    preds = {"x": rows([*A, 0.9], [*B, 0.5])}
    with pytest.raises(InputError, match=r"missing for 1 of 2 .*0--E/y.*--subset"):
        evaluate_wider(preds, gt)
    res = evaluate_wider(preds, gt, subset=True)
    assert res.images == 1 and res.images_total == 2 and res.subset
    assert res.settings["easy"].count_face == 2 and res.easy == 1.0
    with pytest.raises(InputError, match="not in the ground truth"):
        evaluate_wider({**preds, "zzz": rows([*A, 0.3])}, gt, subset=True)


def test_result_serialisation() -> None:
    gt = gt_of(("x", [A, B], ALL))
    res = evaluate_wider({"x": rows([*A, 0.9], [*B, 0.5])}, gt)
    d = res.to_dict(curves=True)
    assert {"easy", "medium", "hard", "images", "timings"} <= d.keys()
    assert set(d["timings"]) == {"read_gt", "read_predictions", "evaluate"}
    assert len(d["curves"]["thresholds"]) == 1000
    assert d["curves"]["easy"]["precision"][-1] == 1.0
    assert "Easy" in res.table() and "100.00" in res.table()
    assert "lowest score is 0.5" in res.table()  # a high inference threshold is flagged
