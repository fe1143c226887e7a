"""Losses of the SCRFD head (reference spec §5.3), with mmdet's weighting and reduction rules.

* :func:`quality_focal_loss` — QFL (Generalized Focal Loss), sigmoid, β = 2:
  ``BCE(x, y) · |y − σ(x)|^β`` with ``y`` the IoU quality on the positive class, 0 elsewhere.
  The modulating factor is *not* detached (as mmdet).
* :func:`diou_loss` — ``1 − IoU + ρ²/c²`` of ``xyxy`` boxes (any consistent unit), with
  ``eps`` added to the union and to ``c²`` (``DIoULoss`` passes eps = 1e-6).
* :func:`smooth_l1_loss` — elementwise ``0.5·d²/β`` if ``d < β`` else ``d − 0.5·β`` (β = 1/9).
* :func:`weight_reduce_loss` — mmdet's rule: multiply by ``weight``; with ``avg_factor`` the
  ``"mean"`` reduction is ``sum / avg_factor``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Reduction",
    "diou_loss",
    "quality_focal_loss",
    "smooth_l1_loss",
    "weight_reduce_loss",
]

Reduction = Literal["none", "mean", "sum"]


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Apply an elementwise ``weight`` (broadcast) and reduce (mmdet ``weight_reduce_loss``).

    ``avg_factor`` replaces the element count of ``"mean"``; it cannot be combined with
    ``"sum"``.
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / avg_factor
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


def quality_focal_loss(
    logits: Tensor,
    score: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 2.0,
) -> Tensor:
    """Per-anchor QFL, summed over classes.

    Args:
        logits: (N, C) or (N,) raw class logits.
        score: (N,) quality target (IoU in [0, 1]) of each anchor; with ``labels`` only the
            positives' entries are used.
        labels: (N,) long class of each anchor, any value outside [0, C) (mmdet uses C) for
            background. ``None``: single-class form, ``score`` is then the full target of every
            anchor (0 on negatives) and is applied to all C columns.
        beta: focusing exponent.

    Returns:
        (N,) loss per anchor (unreduced, unweighted).
    """
    if logits.dim() == 1:
        logits = logits[:, None]
    n, c = logits.shape
    if labels is None:
        target = score.to(logits.dtype)[:, None].expand(n, c)
    else:
        pos = (labels >= 0) & (labels < c)
        target = logits.new_zeros((n, c))
        rows = pos.nonzero(as_tuple=True)[0]
        target[rows, labels[rows].long()] = score[rows].to(logits.dtype)
    sigma = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = loss * (target - sigma).abs().pow(beta)
    return loss.sum(dim=1)


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-box DIoU loss of ``xyxy`` boxes ``pred``, ``target`` (N, 4) → (N,).

    ``IoU = inter / (area_p + area_t − inter + eps)``, ``ρ²`` = squared centre distance,
    ``c²`` = squared diagonal of the smallest enclosing box ``+ eps``; loss ``1 − IoU + ρ²/c²``.
    """
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    ap = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    ag = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = ap + ag - overlap + eps
    ious = overlap / union
    enc_lt = torch.minimum(pred[:, :2], target[:, :2])
    enc_rb = torch.maximum(pred[:, 2:], target[:, 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    c2 = enc_wh[:, 0] ** 2 + enc_wh[:, 1] ** 2 + eps
    dx = (target[:, 0] + target[:, 2]) - (pred[:, 0] + pred[:, 2])
    dy = (target[:, 1] + target[:, 3]) - (pred[:, 1] + pred[:, 3])
    rho2 = (dx**2 + dy**2) / 4
    return 1 - (ious - rho2 / c2)


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0 / 9.0) -> Tensor:
    """Elementwise smooth-L1 (mmdet form): ``0.5·d²/β`` if ``d < β`` else ``d − 0.5·β``."""
    if beta <= 0:
        raise ValueError(f"smooth_l1_loss: beta must be > 0, got {beta}")
    if pred.shape != target.shape:
        raise ValueError(f"smooth_l1_loss: shapes differ {tuple(pred.shape)} vs {target.shape}")
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
