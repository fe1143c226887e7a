"""PAFPN neck (reference spec §4.1; mmdet ``PAFPN`` with ``start_level=1``, ``num_outs=3``).

No norm and no activation; every conv has a bias. With inputs C2..C5 only C3..C5 are used::

    lat_i = lateral_convs[i](C_{i+3})                     1×1, i = 0, 1, 2
    lat_{i-1} += nearest_resize(lat_i, size(lat_{i-1}))   i = 2, 1  (top-down)
    m_i   = fpn_convs[i](lat_i)                           3×3
    m_{i+1} += downsample_convs[i](m_i)                   3×3 stride 2, i = 0, 1 (bottom-up)
    P3 = m_0,  P4 = pafpn_convs[0](m_1),  P5 = pafpn_convs[1](m_2)

Execution order of the convs (what the ONNX import pairs by): lateral 0-2, fpn 0-2,
downsample 0, downsample 1, pafpn 0-1. Keys: ``neck.lateral_convs.{i}.conv.{weight,bias}`` etc.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from damofd.models.configs import PAFPNConfig
from damofd.models.layers import ConvModule

__all__ = ["PAFPN"]


class PAFPN(nn.Module):
    """Path-aggregation FPN without norm or activation."""

    def __init__(self, config: PAFPNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.out_channels
        used = config.in_channels[config.start_level :]
        self.lateral_convs = nn.ModuleList(ConvModule(cin, c, 1, act=False) for cin in used)
        self.fpn_convs = nn.ModuleList(
            ConvModule(c, c, 3, padding=1, act=False) for _ in range(len(used))
        )
        self.downsample_convs = nn.ModuleList(
            ConvModule(c, c, 3, stride=2, padding=1, act=False) for _ in range(len(used) - 1)
        )
        self.pafpn_convs = nn.ModuleList(
            ConvModule(c, c, 3, padding=1, act=False) for _ in range(len(used) - 1)
        )

    def forward(self, inputs: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        """[C2, C3, C4, C5] → [P3, P4, P5] with ``out_channels`` each (strides 8, 16, 32)."""
        s = self.config.start_level
        if len(inputs) != len(self.config.in_channels):
            raise ValueError(
                f"PAFPN expects {len(self.config.in_channels)} backbone maps, got {len(inputs)}"
            )
        lat = [conv(inputs[i + s]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(
                lat[i], size=lat[i - 1].shape[2:], mode="nearest"
            )
        mid = [conv(x) for conv, x in zip(self.fpn_convs, lat)]
        for i in range(len(mid) - 1):
            mid[i + 1] = mid[i + 1] + self.downsample_convs[i](mid[i])
        return [mid[0], *(conv(x) for conv, x in zip(self.pafpn_convs, mid[1:]))]

    def init_weights(self) -> None:
        """xavier-uniform (gain 1) on every conv, bias 0 (mmdet ``FPN.init_weights``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
