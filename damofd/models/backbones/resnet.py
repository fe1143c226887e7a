"""SCRFD ResNetV1e backbone (scrfd-spec §2.2; mmdet ``ResNet`` with ``deep_stem=True``,
``avg_down=True``, ``no_pool33=True`` and a ``block_cfg``).

Module tree (state-dict keys ``backbone.stem.0.weight``, ``backbone.layer1.0.conv1.weight``,
``backbone.layer2.0.downsample.1.weight`` …)::

    stem    = Sequential[Conv3×3(3→B/2, s2), BN, ReLU, Conv3×3(B/2→B/2), BN, ReLU,
                         Conv3×3(B/2→B), BN, ReLU]
    maxpool = MaxPool2d(2, 2)                       (floor mode; net stride 4)
    layerK  = Sequential of blocks; the first has stride (1, 2, 2, 2)[K−1] and, if the stride is
              not 1 or the width changes, a shortcut
              downsample = Sequential[AvgPool2d(s, s, ceil_mode=True, count_include_pad=False),
                                      Conv1×1(no bias), BN]
              (the AvgPool is present even for s = 1, so the conv is always index 1).

Blocks run the main path first and the shortcut after it, like mmdet; this order is what the
ONNX import pairs convolutions by. BatchNorm eps 1e-5; each block uses one ``relu`` module several
times (the mmcv FLOPs rules count every call).
"""

from __future__ import annotations

from torch import Tensor, nn

from damofd.models.configs import ResNetV1eConfig
from damofd.models.layers import kaiming_init_

__all__ = ["BasicBlock", "Bottleneck", "ResNetV1e"]


def _shortcut(cin: int, cout: int, stride: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(cin, cout, 1, 1, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convs (stride on the first) + shortcut, ReLU after the addition. Expansion 1."""

    expansion = 1

    def __init__(
        self, cin: int, planes: int, stride: int, downsample: nn.Module | None, eps: float
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, 'pytorch' style) → 1×1 (×4) + shortcut, ReLU after the add."""

    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int, downsample: nn.Module | None, eps: float
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out = out + identity
        return self.relu(out)


class ResNetV1e(nn.Module):
    """ResNetV1e as used by SCRFD-1.3G/2.5G/10G (BasicBlock) and SCRFD-34G (Bottleneck)."""

    STRIDES: tuple[int, ...] = (1, 2, 2, 2)

    def __init__(self, config: ResNetV1eConfig) -> None:
        super().__init__()
        self.config = config
        eps, base = config.bn_eps, config.base_channels
        half = base // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, 2, 1, bias=False),
            nn.BatchNorm2d(half, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, 1, 1, bias=False),
            nn.BatchNorm2d(half, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, base, 3, 1, 1, bias=False),
            nn.BatchNorm2d(base, eps=eps),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
        block: type[BasicBlock] | type[Bottleneck] = (
            BasicBlock if config.block == "basic" else Bottleneck
        )
        cin = base
        for k, (n, planes) in enumerate(zip(config.stage_blocks, config.stage_planes)):
            stride = self.STRIDES[k]
            cout = planes * block.expansion
            down = _shortcut(cin, cout, stride, eps) if stride != 1 or cin != cout else None
            blocks = [block(cin, planes, stride, down, eps)]
            blocks += [block(cout, planes, 1, None, eps) for _ in range(n - 1)]
            self.add_module(f"layer{k + 1}", nn.Sequential(*blocks))
            cin = cout
        self.stage_channels: tuple[int, ...] = config.out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) → [C2, C3, C4, C5] at strides 4, 8, 16, 32."""
        x = self.maxpool(self.stem(x))
        outs = []
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
            outs.append(x)
        return outs

    def init_weights(self) -> None:
        """kaiming on convs (fan_out, ReLU, normal); BN γ=1 β=0; last BN of each block γ=0."""
        kaiming_init_(self)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)
