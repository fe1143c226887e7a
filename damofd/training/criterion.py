"""Training loss of the SCRFD head: ATSS targets + QFL + DIoU + keypoint smooth-L1 (spec §5.3).

:class:`SCRFDCriterion` consumes the raw model outputs of the shared model contract::

    cls[l]   (B, A·C, H/s, W/s)   logits (C = 1 class)
    bbox[l]  (B, 4·A, H/s, W/s)   ltrb distances in STRIDE units, Scale already applied
    kps[l]   (B, 10·A, H/s, W/s)  keypoint offsets in stride units (or ``kps is None``)

for levels ``l`` over strides (8, 16, 32); channels are anchor-major (channel = a·C + c) and rows
after ``permute(0, 2, 3, 1)`` follow :func:`damofd.ops.anchors.anchor_centers`. Targets are per
image: ``gt_bboxes[i]`` (N_i, 4) ``xyxy`` pixels of the network input, ``gt_keypoints[i]``
(N_i, 5, 3) ``(x, y, weight)`` pixels.

For each positive anchor (centre c, stride s) — all in stride units:

* ``B̂ = (c/s − d_l, c/s − d_t, c/s + d_r, c/s + d_b)``, target ``B = GT / s``;
* ``w = max_c sigmoid(cls)`` (detached), quality ``q = IoU(B̂.detach(), B)`` (aligned, no +1);
* ``loss_cls = Σ_all QFL(cls, y) / N_pos_avg`` with ``y = q`` on positives, 0 elsewhere, and
  ``N_pos_avg = max(mean over ranks of Σ_images max(#pos, 1), 1)``;
* ``loss_bbox = Σ_pos 2.0 · w · DIoU(B̂, B) / W_avg``;
* ``loss_kps = Σ_pos 0.1 · (mean keypoint weight · w) · Σ_10 SmoothL1_{1/9}(k̂, kp/s − c/s)
  / W_avg``; ``W_avg = mean over ranks of Σ_pos w``.

Means over ranks use ``torch.distributed.all_reduce`` when a process group is initialised.
Differences from the reference (bugs §10.8): a level (or batch) without positives works on CPU
and contributes an exact zero that still touches every prediction tensor (no unused-parameter
errors in DDP); when no rank has any positive, ``W_avg`` would be 0 and the reference divides
0 by 0 — here the (zero) box and keypoint losses are divided by 1 instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from damofd.ops.anchors import (
    SCRFD_ANCHOR_BASE_SIZES,
    SCRFD_ANCHOR_SCALES,
    SCRFD_STRIDES,
    anchor_boxes,
)
from damofd.ops.boxes import box_iou_aligned, distance2bbox, kps2distance
from damofd.training.assigner import ATSSAssigner
from damofd.training.losses import diou_loss, quality_focal_loss, smooth_l1_loss

if TYPE_CHECKING:
    from damofd.models.configs import SCRFDHeadConfig

__all__ = ["CriterionConfig", "LossStats", "SCRFDCriterion", "reduce_mean"]


@dataclass(frozen=True)
class CriterionConfig:
    """Loss and assignment settings (defaults = every DamoFD/SCRFD config)."""

    strides: tuple[int, ...] = SCRFD_STRIDES
    anchor_base_sizes: tuple[int, ...] = SCRFD_ANCHOR_BASE_SIZES
    anchor_scales: tuple[float, ...] = SCRFD_ANCHOR_SCALES
    topk: int = 9
    ignore_iof_thr: float = -1.0
    qfl_beta: float = 2.0
    loss_cls_weight: float = 1.0
    loss_bbox_weight: float = 2.0
    loss_kps_weight: float = 0.1
    kps_beta: float = 1.0 / 9.0
    diou_eps: float = 1e-6
    use_kps: bool = False

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.anchor_base_sizes):
            raise ValueError("CriterionConfig: one anchor base size per stride is required")

    @classmethod
    def from_head(cls, head: SCRFDHeadConfig, **overrides: Any) -> CriterionConfig:
        """The settings for a detector with this head config: its ``strides`` and ``use_kps``;
        its anchors per location (``head.num_anchors``) must match ``anchor_scales``.
        ``overrides`` set other fields."""
        kw: dict[str, Any] = {"strides": tuple(head.strides), "use_kps": bool(head.use_kps)}
        kw.update(overrides)
        cfg = cls(**kw)
        if int(head.num_anchors) != len(cfg.anchor_scales):
            raise ValueError(
                f"CriterionConfig: the head predicts {head.num_anchors} anchors per location, "
                f"anchor_scales {cfg.anchor_scales} give {len(cfg.anchor_scales)}"
            )
        return cfg


@dataclass(frozen=True)
class LossStats:
    """Diagnostics of one :meth:`SCRFDCriterion.forward` call (plain floats, this rank)."""

    num_pos: int
    num_pos_per_level: tuple[int, ...]
    num_pos_avg: float
    weight_avg: float


def reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over the ranks of the default process group (identity when not
    distributed)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return t


def _flatten(levels: Sequence[Tensor], channels: int) -> Tensor:
    """[(B, A·ch, h, w)] → (B, Σ h·w·A, ch) float32, rows location-major, anchor-minor."""
    b = levels[0].shape[0]
    return torch.cat(
        [x.permute(0, 2, 3, 1).reshape(b, -1, channels).float() for x in levels], dim=1
    )


def _loss_stats(pos: Tensor, counts: list[int], num_pos_avg: float, weight_avg: float) -> LossStats:
    """:class:`LossStats` from the ``(B, N)`` positive mask and the anchors per level."""
    per_level = torch.stack([p.sum() for p in pos.split(counts, dim=1)]).tolist()
    return LossStats(
        num_pos=int(pos.sum()),
        num_pos_per_level=tuple(int(v) for v in per_level),
        num_pos_avg=float(num_pos_avg),
        weight_avg=float(weight_avg),
    )


class SCRFDCriterion(nn.Module):
    """Loss of the SCRFD/DamoFD head (no parameters; put it on any device).

    ``criterion(cls, bbox, kps, gt_bboxes, gt_keypoints)`` returns
    ``{"loss_cls", "loss_bbox"[, "loss_kps"]}`` (scalar tensors, each already summed over the
    levels); the training loss is their sum. ``return_stats=True`` also returns
    :class:`LossStats`.
    """

    def __init__(self, config: CriterionConfig | None = None, *, use_kps: bool | None = None):
        super().__init__()
        cfg = config or CriterionConfig()
        if use_kps is not None and use_kps != cfg.use_kps:
            cfg = CriterionConfig(**{**cfg.__dict__, "use_kps": use_kps})
        self.config = cfg
        self.assigner = ATSSAssigner(topk=cfg.topk, ignore_iof_thr=cfg.ignore_iof_thr)
        self._anchor_cache: dict[tuple, tuple[Tensor, Tensor, Tensor, list[int]]] = {}

    @property
    def num_anchors(self) -> int:
        return len(self.config.anchor_scales)

    def anchors(
        self, sizes: Sequence[tuple[int, int]], device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """``(boxes (N, 4) xyxy px, centres (N, 2) px, strides (N,), anchors per level)`` for
        feature maps of ``sizes`` [(h, w)] (cached per sizes and device)."""
        key = (tuple(sizes), str(device))
        hit = self._anchor_cache.get(key)
        if hit is not None:
            return hit
        cfg = self.config
        boxes, strides, counts = [], [], []
        for (h, w), s, base in zip(sizes, cfg.strides, cfg.anchor_base_sizes):
            b = anchor_boxes(h, w, s, base, cfg.anchor_scales, device=device)
            boxes.append(b)
            strides.append(torch.full((b.shape[0],), float(s), device=device))
            counts.append(int(b.shape[0]))
        all_boxes = torch.cat(boxes)
        centres = (all_boxes[:, :2] + all_boxes[:, 2:]) / 2
        out = (all_boxes, centres, torch.cat(strides), counts)
        if len(self._anchor_cache) > 16:
            self._anchor_cache.clear()
        self._anchor_cache[key] = out
        return out

    def forward(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        kps_preds: Sequence[Tensor] | None,
        gt_bboxes: Sequence[Tensor],
        gt_keypoints: Sequence[Tensor] | None = None,
        gt_bboxes_ignore: Sequence[Tensor] | None = None,
        *,
        img_size: tuple[int, int] | None = None,
        return_stats: bool = False,
    ) -> dict[str, Tensor] | tuple[dict[str, Tensor], LossStats]:
        """Compute the losses (see the module docstring for formats and formulas).

        ``img_size`` (H, W) of the network input, when given, is checked against the feature
        map sizes (``h_l · s_l == H``). ``gt_keypoints=None`` means no keypoint annotation
        (keypoint loss 0).
        """
        cfg = self.config
        bsz, ncls, sizes = self._check_outputs(
            cls_scores, bbox_preds, kps_preds, gt_bboxes, img_size
        )
        device = cls_scores[0].device
        anchors, centres, strides, counts = self.anchors(sizes, device)
        cls_flat = _flatten(cls_scores, ncls)  # (B, N, C)
        bbox_flat = _flatten(bbox_preds, 4)  # (B, N, 4)
        kps_flat = _flatten(kps_preds, 10) if cfg.use_kps and kps_preds is not None else None

        # ---- ATSS per image --------------------------------------------------------------
        gts, gt_inds = self._assign(anchors, counts, gt_bboxes, gt_keypoints, gt_bboxes_ignore)
        pos = gt_inds > 0
        pos_img, pos_anchor = pos.nonzero(as_tuple=True)
        num_pos_img = pos.sum(dim=1)
        offsets = torch.zeros(bsz, dtype=torch.long, device=device)
        if bsz > 1:
            offsets[1:] = torch.tensor([g.shape[0] for g in gts[:-1]], device=device).cumsum(0)
        flat_gt_index = offsets[pos_img] + gt_inds[pos_img, pos_anchor] - 1

        # ---- positives, in stride units ----------------------------------------------------
        s_pos = strides[pos_anchor][:, None]
        c_pos = centres[pos_anchor] / s_pos
        pred_box = distance2bbox(c_pos, bbox_flat[pos_img, pos_anchor])
        if flat_gt_index.numel():
            target_box = torch.cat(gts)[flat_gt_index] / s_pos
        else:
            target_box = pred_box.new_zeros((0, 4))
        weight = cls_flat[pos_img, pos_anchor].detach().sigmoid().amax(dim=-1)  # (P,)
        quality = box_iou_aligned(pred_box.detach(), target_box, eps=1e-6)

        # ---- normalisers (means over ranks) ------------------------------------------------
        local = torch.stack((num_pos_img.clamp(min=1).sum().float(), weight.sum().float()))
        num_pos_avg_t, weight_avg_t = reduce_mean(local).tolist()
        num_pos_avg = max(num_pos_avg_t, 1.0)
        weight_avg = weight_avg_t if weight_avg_t > 0 else 1.0

        # ---- QFL over every anchor ---------------------------------------------------------
        score = cls_flat.new_zeros(pos.shape)
        score[pos_img, pos_anchor] = quality.to(score.dtype)
        labels = torch.full(pos.shape, ncls, dtype=torch.long, device=device)
        labels[pos] = 0
        qfl = quality_focal_loss(
            cls_flat.reshape(-1, ncls), score.reshape(-1), labels.reshape(-1), beta=cfg.qfl_beta
        )
        label_weight = (gt_inds >= 0).reshape(-1).to(qfl.dtype)
        loss_cls = cfg.loss_cls_weight * (qfl * label_weight).sum() / num_pos_avg

        # ---- DIoU and keypoints on positives -----------------------------------------------
        # "+ 0 · sum" keeps every prediction in the graph when there is no positive
        diou = diou_loss(pred_box, target_box, eps=cfg.diou_eps)
        loss_bbox = cfg.loss_bbox_weight * (diou * weight).sum() + 0.0 * bbox_flat.sum()
        losses = {"loss_cls": loss_cls, "loss_bbox": loss_bbox / weight_avg}
        if cfg.use_kps:
            assert kps_flat is not None
            kps_pred = kps_flat[pos_img, pos_anchor]  # (P, 10)
            loss_kps = self._kps_loss(kps_pred, gt_keypoints, flat_gt_index, c_pos, s_pos, weight)
            losses["loss_kps"] = (loss_kps + 0.0 * kps_flat.sum()) / weight_avg
        if not return_stats:
            return losses
        return losses, _loss_stats(pos, counts, num_pos_avg, weight_avg_t)

    def _check_outputs(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        kps_preds: Sequence[Tensor] | None,
        gt_bboxes: Sequence[Tensor],
        img_size: tuple[int, int] | None,
    ) -> tuple[int, int, list[tuple[int, ...]]]:
        """Check the shapes of the model outputs; returns ``(batch, classes, [(h, w)] per
        level)``."""
        cfg = self.config
        n_lvl = len(cfg.strides)
        if len(cls_scores) != n_lvl or len(bbox_preds) != n_lvl:
            raise ValueError(f"expected {n_lvl} levels of cls/bbox outputs")
        if cfg.use_kps and (kps_preds is None or len(kps_preds) != n_lvl):
            raise ValueError("use_kps=True needs the keypoint outputs of every level")
        bsz = cls_scores[0].shape[0]
        if len(gt_bboxes) != bsz:
            raise ValueError(f"{len(gt_bboxes)} target images for a batch of {bsz}")
        na = self.num_anchors
        ncls = cls_scores[0].shape[1] // na
        sizes = [tuple(int(v) for v in x.shape[-2:]) for x in cls_scores]
        for lvl, (c, b, (h, w), s) in enumerate(zip(cls_scores, bbox_preds, sizes, cfg.strides)):
            if c.shape[1] != ncls * na or b.shape[1] != 4 * na or tuple(b.shape[-2:]) != (h, w):
                raise ValueError(
                    f"level {lvl}: cls {tuple(c.shape)} / bbox {tuple(b.shape)} do not match "
                    f"{na} anchors per location"
                )
            if cfg.use_kps and kps_preds is not None and kps_preds[lvl].shape[1] != 10 * na:
                raise ValueError(f"level {lvl}: kps has {kps_preds[lvl].shape[1]} channels")
            if img_size is not None and (h * s, w * s) != tuple(img_size):
                raise ValueError(
                    f"level {lvl}: feature map {h}x{w} at stride {s} does not match input "
                    f"{img_size[0]}x{img_size[1]}"
                )
        return bsz, ncls, sizes

    def _assign(
        self,
        anchors: Tensor,
        counts: list[int],
        gt_bboxes: Sequence[Tensor],
        gt_keypoints: Sequence[Tensor] | None,
        gt_bboxes_ignore: Sequence[Tensor] | None,
    ) -> tuple[list[Tensor], Tensor]:
        """ATSS per image: the float32 ``(N_i, 4)`` boxes and the ``(B, N)`` assigned indices
        (1-based GT index, 0 negative, -1 ignored)."""
        device = anchors.device
        gts = [g.to(device=device, dtype=torch.float32).reshape(-1, 4) for g in gt_bboxes]
        if gt_keypoints is not None:
            for i, (g, k) in enumerate(zip(gts, gt_keypoints)):
                if k.numel() != g.shape[0] * 15:
                    raise ValueError(
                        f"image {i}: gt_keypoints {tuple(k.shape)} do not match "
                        f"{g.shape[0]} boxes (expected ({g.shape[0]}, 5, 3))"
                    )
        gt_inds = torch.stack(
            [
                self.assigner.assign(
                    anchors,
                    counts,
                    gts[i],
                    None if gt_bboxes_ignore is None else gt_bboxes_ignore[i].to(device),
                ).gt_inds
                for i in range(len(gts))
            ]
        )  # (B, N)
        return gts, gt_inds

    def _kps_loss(
        self,
        kps_pred: Tensor,
        gt_keypoints: Sequence[Tensor] | None,
        flat_gt_index: Tensor,
        c_pos: Tensor,
        s_pos: Tensor,
        weight: Tensor,
    ) -> Tensor:
        """The weighted keypoint smooth-L1 sum over the positives (before ``/ W_avg``)."""
        cfg = self.config
        if gt_keypoints is not None and flat_gt_index.numel():
            kp = torch.cat(
                [
                    k.to(device=kps_pred.device, dtype=torch.float32).reshape(-1, 5, 3)
                    for k in gt_keypoints
                ]
            )[flat_gt_index]
            kps_target = kps2distance(c_pos, kp[..., :2].reshape(-1, 10) / s_pos)
            kps_weight = kp[..., 2].mean(dim=1) * weight
        else:
            kps_target = torch.zeros_like(kps_pred)
            kps_weight = torch.zeros_like(weight)
        sl1 = smooth_l1_loss(kps_pred, kps_target, beta=cfg.kps_beta).sum(dim=1)
        return cfg.loss_kps_weight * (sl1 * kps_weight).sum()
