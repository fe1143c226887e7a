"""SCRFD MobileNetV1 backbone (scrfd-spec §2.1; ``mmdet/models/backbones/mobilenet.py``).

Module tree (and so the state-dict keys ``backbone.stem.0.0.weight`` …)::

    stem   = Sequential[conv_bn(3, p0, s2), conv_dw(p0, p1, s1)]
    layerK = Sequential[conv_dw(pK, pK+1, s2), conv_dw(pK+1, pK+1, s1) × (bK − 1)]   K = 1..4

with ``conv_bn`` = [Conv3×3, BN, ReLU] and ``conv_dw`` = [DWConv3×3, BN, ReLU, Conv1×1, BN, ReLU].
Convs have no bias, BatchNorm eps 1e-5, ReLUs are ``nn.ReLU(inplace=True)`` modules.
``forward`` returns the four layer outputs C2..C5 (strides 4, 8, 16, 32; channels p2..p5).
Every stride-2 conv gives ``ceil(H/2)``.
"""

from __future__ import annotations

from torch import Tensor, nn

from damofd.models.configs import MobileNetV1Config
from damofd.models.layers import kaiming_init_

__all__ = ["MobileNetV1"]


def _conv_bn(cin: int, cout: int, stride: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    )


def _conv_dw(cin: int, cout: int, stride: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin, eps=eps),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 as used by SCRFD-500M and SCRFD-1G."""

    def __init__(self, config: MobileNetV1Config) -> None:
        super().__init__()
        self.config = config
        p, b, eps = config.stage_planes, config.stage_blocks, config.bn_eps
        self.stem = nn.Sequential(_conv_bn(3, p[0], 2, eps), _conv_dw(p[0], p[1], 1, eps))
        for k, n in enumerate(b):
            units = [_conv_dw(p[k + 1], p[k + 2], 2, eps)]
            units += [_conv_dw(p[k + 2], p[k + 2], 1, eps) for _ in range(n - 1)]
            self.add_module(f"layer{k + 1}", nn.Sequential(*units))
        self.stage_channels: tuple[int, ...] = config.out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) → [C2, C3, C4, C5] at strides 4, 8, 16, 32."""
        x = self.stem(x)
        outs = []
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
            outs.append(x)
        return outs

    def init_weights(self) -> None:
        """mmcv ``kaiming_init`` on convs (fan_out, ReLU, normal, bias 0); BN γ=1, β=0."""
        kaiming_init_(self)
