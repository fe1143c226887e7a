"""ATSS label assignment of the SCRFD head (reference spec §5.3, mmdet ``ATSSAssigner`` mode 0).

Per image, for anchor boxes ``A`` (all levels concatenated, ``xyxy`` pixels) and GT boxes ``G``:

1. IoU between anchors and GT (no +1; union clamped to ≥ 1e-6 as mmdet) — computed only for
   the candidates, which is all the rule needs.
2. On each level, for each GT, the ``topk`` (9) anchors whose centres are closest (Euclidean) to
   the GT centre are candidates (all anchors of a level with fewer than ``topk``).
3. Per GT: threshold = mean + unbiased std of the candidates' IoUs.
4. A candidate is positive when its IoU >= threshold **and** its centre is inside the GT by the
   normalised margin ``min(l, t, r, b) / sqrt(max(w·h, 1e-4)) > 0.001``.
5. An anchor that is positive for several GTs takes the one with the highest IoU.

Ties in step 2 (e.g. the two anchors sharing a location) are broken by the lower anchor index,
deterministically on CPU and GPU (``torch.topk`` leaves ties unspecified). Everything is
vectorised over GTs; only the level loop (3 levels) is in Python. Memory is O(G·N_level) for the
distances and O(G·K) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ATSSAssigner", "AssignResult"]

_INF = 100000000.0


@dataclass(frozen=True)
class AssignResult:
    """Assignment of one image.

    Attributes:
        gt_inds: (N,) long — 0 negative, ``k + 1`` positive for GT ``k``, −1 ignored (only with
            ``ignore_iof_thr > 0``).
        max_overlaps: (N,) float — IoU with the assigned GT, 0 for others.
        num_gts: number of GT boxes.
    """

    gt_inds: Tensor
    max_overlaps: Tensor
    num_gts: int

    @property
    def pos_mask(self) -> Tensor:
        return self.gt_inds > 0


def _iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corresponding ``xyxy`` boxes (..., 4) without +1, union clamped to 1e-6
    (mmdet ``bbox_overlaps``)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter).clamp(min=1e-6)


def _iof(anchors: Tensor, boxes: Tensor) -> Tensor:
    """(N, K) intersection over the anchor's area."""
    lt = torch.maximum(anchors[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(anchors[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return inter / area_a.clamp(min=1e-6)[:, None]


_TIE_WINDOW = 16  # extra candidates fetched so that ties at the k-th distance can be resolved


def _k_nearest(dist: Tensor, k: int) -> Tensor:
    """(G, k) column indices of the ``k`` smallest entries of each row of ``dist`` (G, n).

    Deterministic: ties are broken by the lower index (``torch.topk`` leaves them unspecified).
    """
    n = dist.shape[1]
    kk = min(n, k + _TIE_WINDOW)
    vals, idx = dist.topk(kk, dim=1, largest=False)
    # lexicographic (value, index) order inside the window: sort by index, then stable by value
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, stable=True)
    idx = idx.gather(1, order)
    out = idx[:, :k]
    if kk < n:
        # rows where the window may have cut a run of values equal to the k-th: exact fallback
        unsure = vals[:, kk - 1] == vals[:, k - 1]
        if bool(unsure.any()):
            rows = unsure.nonzero(as_tuple=True)[0]
            d = dist[rows]
            kth = vals[rows, k - 1 : k]
            less = d < kth
            equal = d == kth
            need = k - less.sum(dim=1, keepdim=True)
            sel = less | (equal & (equal.cumsum(dim=1) <= need))
            out = out.clone()
            out[rows] = sel.nonzero(as_tuple=True)[1].view(-1, k)
    return out


@dataclass(frozen=True)
class ATSSAssigner:
    """Adaptive Training Sample Selection (``topk`` candidates per level, mode 0).

    ``ignore_iof_thr > 0`` excludes anchors that overlap an ignore box by more than that
    fraction of their area (gt_inds −1); the reference recipe uses −1 (ignore boxes unused).
    """

    topk: int = 9
    ignore_iof_thr: float = -1.0

    def assign(
        self,
        anchors: Tensor,
        num_level_anchors: Sequence[int],
        gt_bboxes: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``anchors`` (N, 4 xyxy px; levels concatenated, sizes ``num_level_anchors``)
        to ``gt_bboxes`` (G, 4 xyxy px)."""
        n = anchors.shape[0]
        g = gt_bboxes.shape[0]
        if sum(num_level_anchors) != n:
            raise ValueError(f"num_level_anchors sums to {sum(num_level_anchors)}, not {n}")
        gt_inds = torch.zeros(n, dtype=torch.long, device=anchors.device)
        max_overlaps = anchors.new_zeros(n)
        if g == 0 or n == 0:
            return AssignResult(gt_inds, max_overlaps, g)
        # at least float32 (half/bfloat16 boxes lose pixels), float64 kept when given
        dtype = torch.promote_types(
            torch.promote_types(anchors.dtype, gt_bboxes.dtype), torch.float32
        )
        anchors = anchors.to(dtype)
        gts = gt_bboxes.to(dtype)
        a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2.0
        g_ctr = (gts[:, :2] + gts[:, 2:]) / 2.0
        device = anchors.device

        ignored: Tensor | None = None
        if (
            self.ignore_iof_thr > 0
            and gt_bboxes_ignore is not None
            and gt_bboxes_ignore.numel() > 0
        ):
            ignored = _iof(anchors, gt_bboxes_ignore.to(dtype)).max(dim=1).values
            ignored = ignored > self.ignore_iof_thr
            gt_inds[ignored] = -1

        # candidates: per level the topk anchors closest to each GT centre. Squared distances
        # order exactly like the reference's Euclidean distances (sqrt is monotonic).
        cands = []
        start = 0
        for count in num_level_anchors:
            if count > 0:
                c = a_ctr[start : start + count]
                dist = (g_ctr[:, None, 0] - c[None, :, 0]).square_()
                dist += (g_ctr[:, None, 1] - c[None, :, 1]).square_()  # (G, count)
                if ignored is not None:
                    dist[:, ignored[start : start + count]] = _INF
                cands.append(_k_nearest(dist, min(self.topk, count)) + start)
            start += count
        cand_idx = torch.cat(cands, dim=1)  # (G, K)
        num_cand = cand_idx.shape[1]

        cand_iou = _iou_pairs(anchors[cand_idx], gts[:, None, :])  # (G, K)
        mean = cand_iou.mean(dim=1)
        std = cand_iou.std(dim=1) if num_cand > 1 else torch.zeros_like(mean)
        is_pos = cand_iou >= (mean + std)[:, None]

        # centre inside the GT by a size-normalised margin (mode 0)
        cx = a_ctr[cand_idx, 0]
        cy = a_ctr[cand_idx, 1]
        margin = torch.minimum(
            torch.minimum(cx - gts[:, 0:1], cy - gts[:, 1:2]),
            torch.minimum(gts[:, 2:3] - cx, gts[:, 3:4] - cy),
        )  # (G, K)
        wh = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
        is_pos &= margin / wh.clamp(min=1e-4).sqrt()[:, None] > 0.001

        # an anchor positive for several GTs keeps the highest IoU (lowest GT index on ties)
        gt_of = torch.arange(g, device=device)[:, None].expand_as(cand_idx)[is_pos]
        anchor_of = cand_idx[is_pos]
        iou_of = cand_iou[is_pos]
        if anchor_of.numel() == 0:
            return AssignResult(gt_inds, max_overlaps, g)
        best = torch.full((n,), -_INF, dtype=iou_of.dtype, device=device)
        best = best.scatter_reduce(0, anchor_of, iou_of, reduce="amax")
        winner = iou_of == best[anchor_of]
        first_gt = torch.full((n,), g, dtype=torch.long, device=device)
        first_gt = first_gt.scatter_reduce(0, anchor_of[winner], gt_of[winner], reduce="amin")
        hit = first_gt < g
        gt_inds[hit] = first_gt[hit] + 1
        max_overlaps[hit] = best[hit].to(max_overlaps.dtype)
        return AssignResult(gt_inds, max_overlaps, g)

    __call__ = assign
