"""QFL, DIoU, smooth-L1 and mmdet-style weighting, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from damofd.training.losses import (
    diou_loss,
    quality_focal_loss,
    smooth_l1_loss,
    weight_reduce_loss,
)


def _bce(x: float, y: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


def test_qfl_hand_computed() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    score = torch.tensor([0.6, 0.0, 0.9, 0.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])  # class 0 positive, 1 (= C) background
    out = quality_focal_loss(logits[:, None], score, labels, beta=2.0)
    sig = [1 / (1 + math.exp(-x)) for x in logits.tolist()]
    expect = [
        _bce(0.0, 0.6) * abs(0.6 - sig[0]) ** 2,  # = ln 2 · 0.01
        _bce(2.0, 0.0) * sig[1] ** 2,  # negatives: BCE(x, 0) · σ²
        _bce(-1.0, 0.9) * abs(0.9 - sig[2]) ** 2,
        _bce(0.5, 0.0) * sig[3] ** 2,
    ]
    torch.testing.assert_close(out, torch.tensor(expect, dtype=torch.float64))
    assert math.isclose(expect[0], math.log(2) * 0.01, rel_tol=1e-12)
    # single-class form (labels=None): the score is the full target
    torch.testing.assert_close(
        quality_focal_loss(logits, torch.tensor([0.6, 0.0, 0.9, 0.0], dtype=torch.float64)),
        out,
    )


def test_qfl_multiclass_and_gradient_through_modulating_factor() -> None:
    logits = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64, requires_grad=True)
    out = quality_focal_loss(logits, torch.tensor([0.7], dtype=torch.float64), torch.tensor([2]))
    s = torch.sigmoid(logits.detach())[0].tolist()
    expect = (
        _bce(0.3, 0) * s[0] ** 2 + _bce(-0.2, 0) * s[1] ** 2 + _bce(1.0, 0.7) * (0.7 - s[2]) ** 2
    )
    assert math.isclose(float(out.detach()), expect, rel_tol=1e-12)
    # gradient includes d|y - σ|^β/dx (mmdet does not detach it): compare with finite differences
    out.sum().backward()
    h = 1e-6
    for j in range(3):
        lp = logits.detach().clone()
        lm = logits.detach().clone()
        lp[0, j] += h
        lm[0, j] -= h
        fp = quality_focal_loss(lp, torch.tensor([0.7], dtype=torch.float64), torch.tensor([2]))
        fm = quality_focal_loss(lm, torch.tensor([0.7], dtype=torch.float64), torch.tensor([2]))
        assert math.isclose(float(logits.grad[0, j]), float((fp - fm) / (2 * h)), rel_tol=1e-5)


def test_diou_hand_computed() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    eps = 1e-6
    out = diou_loss(pred, target, eps=eps)
    # box 0: inter 1, union 7, enclosing 3x3 → c² = 18, centres (1,1)-(2,2) → ρ² = 2
    expect0 = 1 - (1 / (7 + eps) - 2 / (18 + eps))
    assert math.isclose(float(out[0]), expect0, rel_tol=1e-12)
    assert math.isclose(float(out[1]), 1 - 4 / (4 + eps), abs_tol=1e-12)  # identical boxes
    # disjoint boxes: IoU 0, loss > 1
    far = diou_loss(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[3.0, 0, 4, 1]]))
    assert math.isclose(float(far), 1 + 9 / (17 + 1e-6), rel_tol=1e-6)


def test_smooth_l1_hand_computed_and_errors() -> None:
    beta = 1 / 9
    pred = torch.tensor([0.0, 0.05, -1.0, 2.0], dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.float64)
    out = smooth_l1_loss(pred, target, beta)
    expect = [0.0, 0.5 * 0.05**2 / beta, 1 - 0.5 * beta, 2 - 0.5 * beta]
    torch.testing.assert_close(out, torch.tensor(expect, dtype=torch.float64))
    # continuous at |d| = β
    at = smooth_l1_loss(torch.tensor([beta]), torch.tensor([0.0]), beta)
    assert math.isclose(float(at), 0.5 * beta, rel_tol=1e-6)
    with pytest.raises(ValueError):
        smooth_l1_loss(pred, target, 0.0)
    with pytest.raises(ValueError):
        smooth_l1_loss(pred, target[:2], beta)


def test_weight_reduce_loss_mmdet_rules() -> None:
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.tensor([1.0, 0.0, 0.5, 2.0])
    assert float(weight_reduce_loss(loss, w, "sum")) == 1 + 1.5 + 8
    assert float(weight_reduce_loss(loss, w, "mean")) == (1 + 1.5 + 8) / 4
    assert float(weight_reduce_loss(loss, w, "mean", avg_factor=2.0)) == (1 + 1.5 + 8) / 2
    torch.testing.assert_close(weight_reduce_loss(loss, w, "none"), loss * w)
    with pytest.raises(ValueError):
        weight_reduce_loss(loss, w, "sum", avg_factor=2.0)
