"""SCRFDCriterion (reference spec §5.3): hand-computed cases, a literal per-level
transcription of the reference head loss, gradients, zero-GT batches, no-kps mode, DDP means."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from damofd.training.assigner import ATSSAssigner
from damofd.training.criterion import CriterionConfig, SCRFDCriterion, _flatten
from damofd.training.losses import diou_loss, quality_focal_loss, smooth_l1_loss

STRIDES = (8, 16, 32)
BASES = (16, 64, 256)


def _outputs(bsz: int, size: int, seed: int, kps: bool = True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(bsz, 2, size // s, size // s, generator=g, dtype=dtype) - 2 for s in STRIDES]
    box = [torch.rand(bsz, 8, size // s, size // s, generator=g, dtype=dtype) * 4 for s in STRIDES]
    kp = [torch.randn(bsz, 20, size // s, size // s, generator=g, dtype=dtype) for s in STRIDES]
    for t in (*cls, *box, *kp):
        t.requires_grad_(True)
    return cls, box, (kp if kps else None)


def _targets(counts: list[int], size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    boxes, kpss = [], []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * size * 0.8
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 6
        b = torch.cat((xy, xy + wh), dim=1)
        k = torch.rand(n, 5, 3, generator=g)
        k[..., 0] = b[:, None, 0] + k[..., 0] * wh[:, None, 0]
        k[..., 1] = b[:, None, 1] + k[..., 1] * wh[:, None, 1]
        k[..., 2] = (torch.rand(n, 1, generator=g) > 0.3).float()  # some faces without kps
        boxes.append(b)
        kpss.append(k)
    return boxes, kpss


def _mmdet_anchors(h: int, w: int, stride: int, base: int) -> torch.Tensor:
    """mmdet AnchorGenerator (ratios [1], scales [1, 2], center_offset 0), written anew."""
    sides = torch.tensor([base * 1.0, base * 2.0])
    base_anchors = torch.stack((-sides / 2, -sides / 2, sides / 2, sides / 2), dim=1)  # (A, 4)
    sx = torch.arange(w) * stride
    sy = torch.arange(h) * stride
    xx = sx.repeat(h)
    yy = sy.view(-1, 1).repeat(1, w).view(-1)
    shifts = torch.stack((xx, yy, xx, yy), dim=1).float()
    return (base_anchors[None] + shifts[:, None]).reshape(-1, 4)


def _reference_losses(cls, box, kps, gt_boxes, gt_kps, use_kps=True):
    """Per-image targets, then per-level ``loss_single`` exactly as the reference head."""
    bsz = cls[0].shape[0]
    anchors_lvl = [
        _mmdet_anchors(c.shape[2], c.shape[3], s, b) for c, s, b in zip(cls, STRIDES, BASES)
    ]
    counts = [a.shape[0] for a in anchors_lvl]
    flat = torch.cat(anchors_lvl)
    assigner = ATSSAssigner(topk=9)
    labels, bbox_t, kps_t, kps_w, npos = [], [], [], [], []
    for i in range(bsz):
        inds = assigner.assign(flat, counts, gt_boxes[i]).gt_inds
        pos = inds > 0
        lab = torch.ones(flat.shape[0], dtype=torch.long)  # background = num_classes = 1
        lab[pos] = 0
        bt = torch.zeros(flat.shape[0], 4)
        kt = torch.zeros(flat.shape[0], 10)
        kw = torch.zeros(flat.shape[0], 10)
        if pos.any():
            bt[pos] = gt_boxes[i][inds[pos] - 1]
            kt[pos] = gt_kps[i][inds[pos] - 1, :, :2].reshape(-1, 10)
            kw[pos] = gt_kps[i][inds[pos] - 1, :, 2].mean(dim=1, keepdim=True)
        labels.append(lab)
        bbox_t.append(bt)
        kps_t.append(kt)
        kps_w.append(kw)
        npos.append(max(int(pos.sum()), 1))
    num_total = max(float(sum(npos)), 1.0)

    def levels(ts):
        return torch.stack(ts).split(counts, dim=1)

    out_cls, out_box, out_kps, wsum = [], [], [], []
    for lvl, s in enumerate(STRIDES):
        anc = anchors_lvl[lvl].repeat(bsz, 1)
        c = cls[lvl].permute(0, 2, 3, 1).reshape(-1, 1)
        b = box[lvl].permute(0, 2, 3, 1).reshape(-1, 4)
        k = kps[lvl].permute(0, 2, 3, 1).reshape(-1, 10) if use_kps else None
        lab = levels(labels)[lvl].reshape(-1)
        bt = levels(bbox_t)[lvl].reshape(-1, 4)
        kt = levels(kps_t)[lvl].reshape(-1, 10)
        kw = levels(kps_w)[lvl].reshape(-1, 10)
        pos = (lab == 0).nonzero().squeeze(1)
        score = torch.zeros(lab.shape)
        if len(pos):
            ctr = ((anc[pos, :2] + anc[pos, 2:]) / 2) / s
            w = c.detach().sigmoid().max(dim=1)[0][pos]
            pred = torch.stack(
                (ctr[:, 0] - b[pos, 0], ctr[:, 1] - b[pos, 1], ctr[:, 0] + b[pos, 2],
                 ctr[:, 1] + b[pos, 3]), dim=1)  # fmt: skip
            target = bt[pos] / s
            lt = torch.maximum(pred.detach()[:, :2], target[:, :2])
            rb = torch.minimum(pred.detach()[:, 2:], target[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(dim=1)
            area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
            union = (area(pred.detach()) + area(target) - inter).clamp(min=1e-6)
            score[pos] = inter / union
            lb = 2.0 * (diou_loss(pred, target, eps=1e-6) * w).sum()
            if use_kps:
                kpt = kt[pos] / s - ctr.repeat(1, 5)
                kweight = kw.max(dim=1)[0][pos] * w
                lk = 0.1 * (smooth_l1_loss(k[pos], kpt, 1 / 9) * kweight[:, None]).sum()
            else:
                lk = torch.zeros(())
            wsum.append(w.sum())
        else:
            lb = b.sum() * 0
            lk = k.sum() * 0 if use_kps else torch.zeros(())
            wsum.append(torch.zeros(()))
        out_cls.append(quality_focal_loss(c, score, lab).sum() / num_total)
        out_box.append(lb)
        out_kps.append(lk)
    avg = float(sum(wsum))
    res = {"loss_cls": sum(out_cls), "loss_bbox": sum(x / avg for x in out_box)}
    if use_kps:
        res["loss_kps"] = sum(x / avg for x in out_kps)
    return res


def test_matches_literal_reference_head_loss() -> None:
    cls, box, kps = _outputs(3, 128, seed=0)
    boxes, kpss = _targets([4, 0, 9], 128, seed=1)
    got = SCRFDCriterion(use_kps=True)(cls, box, kps, boxes, kpss, img_size=(128, 128))
    want = _reference_losses(cls, box, kps, boxes, kpss)
    assert set(got) == {"loss_cls", "loss_bbox", "loss_kps"}
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    # gradients agree too
    ga = torch.autograd.grad(sum(got.values()), [*cls, *box, *kps])
    gb = torch.autograd.grad(sum(want.values()), [*cls, *box, *kps])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_hand_computed_perfect_boxes() -> None:
    """Every anchor predicts the GT box exactly and sigmoid(cls) = 0.5 everywhere."""
    size = 64
    gt = torch.tensor([[18.0, 14.0, 50.0, 54.0]])
    kp_xy = torch.tensor([[[26.0, 28], [42, 28], [34, 36], [28, 46], [40, 46]]])
    gt_kps = torch.cat((kp_xy, torch.ones(1, 5, 1)), dim=-1)
    cls, box, kps = [], [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n) * s, torch.arange(n) * s, indexing="ij")
        d = torch.stack((xs - gt[0, 0], ys - gt[0, 1], gt[0, 2] - xs, gt[0, 3] - ys)) / s
        box.append(d.repeat(2, 1, 1)[None].float().requires_grad_())  # both anchors
        off = (kp_xy[0][:, :, None, None] - torch.stack((xs, ys))[None]) / s  # (5, 2, n, n)
        kps.append((off.reshape(10, n, n).repeat(2, 1, 1)[None] + 1.0).float())  # +1 error
        cls.append(torch.zeros(1, 2, n, n, requires_grad=True))
    crit = SCRFDCriterion(use_kps=True)
    losses, stats = crit(cls, box, kps, [gt], [gt_kps], return_stats=True)
    npos = stats.num_pos
    assert npos > 0
    n_anchors = sum((size // s) ** 2 * 2 for s in STRIDES)
    # QFL: positives BCE(0, 1)·0.5², negatives BCE(0, 0)·0.5² — both ln2/4; divided by #pos
    expected_cls = n_anchors * math.log(2) / 4 / npos
    assert math.isclose(float(losses["loss_cls"].detach()), expected_cls, rel_tol=1e-5)
    assert float(losses["loss_bbox"].detach()) < 1e-5  # DIoU of identical boxes (eps only)
    # kps: every offset wrong by 1 stride unit: 10·SmoothL1(1)·0.1·w / Σw = 10·(1 − β/2)·0.1
    assert math.isclose(float(losses["loss_kps"].detach()), 10 * (1 - 0.5 / 9) * 0.1, rel_tol=1e-5)
    assert math.isclose(stats.weight_avg, 0.5 * npos, rel_tol=1e-6)
    assert stats.num_pos_avg == npos and sum(stats.num_pos_per_level) == npos


def test_flatten_is_anchor_major() -> None:
    # channel a·C + c at (y, x) must land on row (y·W + x)·A + a, column c
    t = torch.zeros(1, 2 * 4, 2, 3)
    for a in range(2):
        for c in range(4):
            for y in range(2):
                for x in range(3):
                    t[0, a * 4 + c, y, x] = 1000 * a + 100 * c + 10 * y + x
    flat = _flatten([t], 4)[0]
    for row in range(flat.shape[0]):
        loc, a = divmod(row, 2)
        y, x = divmod(loc, 3)
        for c in range(4):
            assert flat[row, c] == 1000 * a + 100 * c + 10 * y + x


def test_gradients_zero_gt_and_no_kps_mode() -> None:
    cls, box, _ = _outputs(2, 64, seed=3, kps=False)
    crit = SCRFDCriterion()  # use_kps False by default
    losses = crit(cls, box, None, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert set(losses) == {"loss_cls", "loss_bbox"}
    assert float(losses["loss_bbox"].detach()) == 0.0
    sum(losses.values()).backward()
    for t in box:  # still part of the graph (DDP), exact zero gradient
        assert t.grad is not None and float(t.grad.abs().sum()) == 0.0
    assert all(float(t.grad.abs().sum()) > 0 for t in cls)
    # QFL with no positive anywhere: Σ BCE(x, 0)·σ² / (B images · 1)
    x = torch.cat([c.detach().flatten() for c in cls])
    expect = (torch.nn.functional.softplus(x) * torch.sigmoid(x) ** 2).sum() / 2
    torch.testing.assert_close(losses["loss_cls"], expect, rtol=1e-5, atol=0)
    # kps requested but absent
    with pytest.raises(ValueError, match="keypoint"):
        SCRFDCriterion(use_kps=True)(cls, box, None, [torch.zeros(0, 4)] * 2)
    with pytest.raises(ValueError, match="does not match input"):
        crit(cls, box, None, [torch.zeros(0, 4)] * 2, img_size=(96, 64))


def test_positive_gradients_and_kps_without_annotation() -> None:
    cls, box, kps = _outputs(2, 64, seed=4)
    boxes, kpss = _targets([3, 2], 64, seed=5)
    kpss[1][..., 2] = 0  # second image: faces without keypoints
    losses = SCRFDCriterion(use_kps=True)(cls, box, kps, boxes, kpss)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert sum(float(t.grad.abs().sum()) for t in box) > 0
    assert float(sum(t.grad[1].abs().sum() for t in kps)) == 0.0  # weight 0 → no gradient
    assert float(sum(t.grad[0].abs().sum() for t in kps)) > 0
    # gt_keypoints=None: keypoint loss exactly zero
    cls, box, kps = _outputs(2, 64, seed=4)
    losses = SCRFDCriterion(use_kps=True)(cls, box, kps, boxes, None)
    assert float(losses["loss_kps"].detach()) == 0.0


def test_config_and_half_precision_inputs() -> None:
    cfg = CriterionConfig(loss_bbox_weight=1.0)
    crit = SCRFDCriterion(cfg, use_kps=True)
    assert crit.config.use_kps and crit.config.loss_bbox_weight == 1.0
    cls, box, kps = _outputs(1, 64, seed=6, dtype=torch.float16)
    boxes, kpss = _targets([2], 64, seed=7)
    out = crit(cls, box, kps, boxes, kpss)
    assert all(v.dtype == torch.float32 for v in out.values())
    with pytest.raises(ValueError, match="one anchor base size"):
        CriterionConfig(strides=(8, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    cls, box, kps = _outputs(2, 128, seed=8)
    boxes, kpss = _targets([5, 1], 128, seed=9)
    crit = SCRFDCriterion(use_kps=True)
    cpu = crit(cls, box, kps, boxes, kpss)
    cuda = crit(
        [c.detach().cuda() for c in cls],
        [b.detach().cuda() for b in box],
        [k.detach().cuda() for k in kps],
        [b.cuda() for b in boxes],
        [k.cuda() for k in kpss],
    )
    for key in cpu:
        torch.testing.assert_close(cuda[key].cpu(), cpu[key].detach(), rtol=1e-4, atol=1e-5)


def _ddp_worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    cls, box, kps = _outputs(1, 64, seed=10 + rank)
    boxes, kpss = _targets([3] if rank == 0 else [0], 64, seed=20 + rank)
    _, stats = SCRFDCriterion(use_kps=True)(cls, box, kps, boxes, kpss, return_stats=True)
    torch.save({"num_pos": stats.num_pos, "avg": stats.num_pos_avg, "w": stats.weight_avg},
               f"{out_file}.{rank}")  # fmt: skip
    torch.distributed.destroy_process_group()


def test_distributed_means() -> None:
    with tempfile.TemporaryDirectory() as d:
        init, out = os.path.join(d, "init"), os.path.join(d, "out")
        # fork: no re-import of torch in the children (keeps the test fast)
        mp.start_processes(_ddp_worker, args=(init, out), nprocs=2, start_method="fork")
        r0, r1 = (torch.load(f"{out}.{r}") for r in range(2))
    assert r1["num_pos"] == 0 and r0["num_pos"] > 0
    # mean over ranks of Σ_images max(#pos, 1): rank 1 contributes 1
    assert r0["avg"] == r1["avg"] == (r0["num_pos"] + 1) / 2
    assert r0["w"] == r1["w"] > 0


def test_mismatched_keypoints_rejected() -> None:
    cls, box, kps = _outputs(1, 64, seed=11)
    with pytest.raises(ValueError, match="do not match 2 boxes"):
        SCRFDCriterion(use_kps=True)(cls, box, kps, [torch.zeros(2, 4)], [torch.zeros(3, 5, 3)])
