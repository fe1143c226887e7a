"""SCRFDHead forward (reference spec §4.2, scrfd-spec §3).

Per level l (strides 8, 16, 32, in that order)::

    feat = tower(x)                         stacked_convs × [Conv3×3 → norm → ReLU]
                                            (or depthwise-separable steps when dw_conv)
    cls  = stride_cls(feat)                 3×3, A·num_classes channels (logits)
    reg  = Scale_l(stride_reg(feat))        3×3, 4·A channels, ltrb distances in stride units
    kps  = stride_kps(feat)                 3×3, 2·K·A channels, offsets in stride units (no Scale)

Channels are anchor-major (channel = a·C + c). ``cls_reg_share`` is always on, so the regression
shares the classification tower and ``reg_stride_convs`` holds empty lists (kept for the official
key layout). With ``strides_share`` one set of modules (key ``'0'``) serves every level; otherwise
each stride has its own, under the keys ``'(8, 8)'``, ``'(16, 16)'``, ``'(32, 32)'``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from damofd.models.configs import SCRFDHeadConfig
from damofd.models.layers import ConvModule, DepthwiseSeparableConvModule, Integral, Scale

__all__ = ["SCRFDHead"]

CLS_PRIOR_BIAS = -4.595
"""Initial classification bias: ``-log((1 - 0.01) / 0.01)``, a prior probability of 0.01."""


def _stride_key(stride: int) -> str:
    # mmdet's AnchorGenerator stores strides as (w, h) pairs and the head uses str() of them
    return str((stride, stride))


class SCRFDHead(nn.Module):
    """Classification / box / keypoint predictor over the three PAFPN levels."""

    def __init__(self, config: SCRFDHeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        keys = ["0"] if c.strides_share else [_stride_key(s) for s in c.strides]
        self.level_keys: tuple[str, ...] = (
            tuple("0" for _ in c.strides) if c.strides_share else tuple(keys)
        )
        self.cls_stride_convs = nn.ModuleDict()
        self.reg_stride_convs = nn.ModuleDict()
        self.stride_cls = nn.ModuleDict()
        self.stride_reg = nn.ModuleDict()
        self.stride_kps: nn.ModuleDict | None = nn.ModuleDict() if c.use_kps else None
        A = c.num_anchors
        for key in keys:
            tower = nn.ModuleList()
            cin = c.in_channels
            for _ in range(c.stacked_convs):
                tower.append(self._tower_step(cin, c.feat_channels))
                cin = c.feat_channels
            self.cls_stride_convs[key] = tower
            self.reg_stride_convs[key] = nn.ModuleList()
            self.stride_cls[key] = nn.Conv2d(cin, c.num_classes * A, 3, padding=1)
            self.stride_reg[key] = nn.Conv2d(cin, 4 * A, 3, padding=1)
            if self.stride_kps is not None:
                self.stride_kps[key] = nn.Conv2d(cin, 2 * c.num_keypoints * A, 3, padding=1)
        self.scales: nn.ModuleList | None = (
            nn.ModuleList(Scale(1.0) for _ in c.strides) if c.use_scale else None
        )
        self.integral = Integral(c.reg_max)

    def _tower_step(self, cin: int, cout: int) -> nn.Module:
        c = self.config
        if c.dw_conv:
            return DepthwiseSeparableConvModule(
                cin, cout, 3, padding=1, norm=c.norm, num_groups=c.num_groups, norm_eps=c.norm_eps
            )
        return ConvModule(
            cin, cout, 3, padding=1, norm=c.norm, num_groups=c.num_groups, norm_eps=c.norm_eps
        )

    @property
    def use_kps(self) -> bool:
        return self.stride_kps is not None

    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Raw outputs of one level: ``cls`` (B, A·C, h, w) logits, ``bbox`` (B, 4A, h, w) ltrb
        distances in stride units with the level's Scale applied, ``kps`` (B, 2KA, h, w) or None.
        """
        key = self.level_keys[level]
        feat = x
        for step in self.cls_stride_convs[key]:
            feat = step(feat)
        cls = self.stride_cls[key](feat)
        bbox = self.stride_reg[key](feat)
        if self.scales is not None:
            bbox = self.scales[level](bbox)
        kps = self.stride_kps[key](feat) if self.stride_kps is not None else None
        return cls, bbox, kps

    def forward(
        self, feats: list[Tensor] | tuple[Tensor, ...]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """Apply :meth:`forward_single` to the levels in stride order (8 first)."""
        if len(feats) != len(self.config.strides):
            raise ValueError(f"SCRFDHead expects {len(self.config.strides)} maps, got {len(feats)}")
        cls_l: list[Tensor] = []
        bbox_l: list[Tensor] = []
        kps_l: list[Tensor] = []
        for level, x in enumerate(feats):
            cls, bbox, kps = self.forward_single(x, level)
            cls_l.append(cls)
            bbox_l.append(bbox)
            if kps is not None:
                kps_l.append(kps)
        return cls_l, bbox_l, (kps_l if self.use_kps else None)

    def init_weights(self) -> None:
        """Training init: every conv N(0, 0.01); cls bias −4.595, other biases 0; norms γ=1 β=0;
        Scales 1.0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for conv in self.stride_cls.values():
            nn.init.constant_(conv.bias, CLS_PRIOR_BIAS)
        if self.scales is not None:
            for s in self.scales:
                with torch.no_grad():
                    s.scale.fill_(1.0)
