"""Small building blocks shared by the neck and the head, with mmcv's module names.

The attribute names are those of ``mmcv.cnn.ConvModule`` / ``DepthwiseSeparableConvModule`` so
that state-dict keys match the official mmdet checkpoints (``….conv.weight``, ``….gn.weight``,
``….bn.running_var``, ``….depthwise_conv.conv.weight``). Convolutions are plain
:class:`torch.nn.Conv2d` attributes followed directly by their norm, which is what BN folding
(:mod:`damofd.models.fuse`) and the ONNX weight import rely on.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ConvModule", "DepthwiseSeparableConvModule", "Integral", "Scale", "build_norm"]

Norm = Literal["gn", "bn"] | None


def build_norm(norm: Norm, channels: int, num_groups: int = 16, eps: float = 1e-5) -> nn.Module:
    """GroupNorm(num_groups, C) or BatchNorm2d(C), both with ``eps`` (mmcv default 1e-5)."""
    if norm == "gn":
        return nn.GroupNorm(num_groups, channels, eps=eps)
    if norm == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    raise ValueError(f"unknown norm {norm!r}")


def kaiming_init_(module: nn.Module) -> None:
    """mmcv ``kaiming_init`` on every conv (fan_out, ReLU, normal, bias 0) and γ=1, β=0 on every
    BatchNorm / GroupNorm below ``module`` (the SCRFD backbones' ``init_weights``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvModule(nn.Module):
    """conv → [norm] → [ReLU], as ``mmcv.cnn.ConvModule`` (order conv-norm-act).

    The conv has a bias exactly when there is no norm (mmcv ``bias='auto'``). The norm is stored
    as ``gn`` or ``bn`` and the activation as ``activate`` (an ``nn.ReLU`` module, which the
    mmcv FLOPs rules count).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        norm: Norm = None,
        num_groups: int = 16,
        norm_eps: float = 1e-5,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=norm is None,
        )
        self.norm_name: str | None = norm
        if norm is not None:
            self.add_module(norm, build_norm(norm, out_channels, num_groups, norm_eps))
        self.activate: nn.Module | None = nn.ReLU(inplace=True) if act else None

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """``depthwise_conv`` (k×k, groups=C, norm, ReLU) → ``pointwise_conv`` (1×1, norm, ReLU).

    Both norms use the same ``num_groups`` (mmcv ``dw_norm_cfg = pw_norm_cfg``), so e.g. the
    first depthwise GroupNorm of DamoFD-0.5G is GN(16 groups, 16 channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 1,
        norm: Norm = "gn",
        num_groups: int = 16,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=in_channels,
            norm=norm,
            num_groups=num_groups,
            norm_eps=norm_eps,
        )
        self.pointwise_conv = ConvModule(
            in_channels, out_channels, 1, norm=norm, num_groups=num_groups, norm_eps=norm_eps
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class Scale(nn.Module):
    """Multiply by a learnable scalar (``scale``, a 0-d parameter, init 1.0) as mmcv ``Scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class Integral(nn.Module):
    """Holds the (unused) DFL projection buffer ``project = linspace(0, reg_max, reg_max + 1)``.

    SCRFD configs set ``loss_dfl=False``, so the buffer is never used for inference, but it is a
    persistent buffer of every official checkpoint (``bbox_head.integral.project``).
    """

    def __init__(self, reg_max: int = 8) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: Tensor) -> Tensor:
        """Expected distance per side from (…, 4·(reg_max+1)) logits (distribution focal loss)."""
        x = torch.softmax(x.reshape(*x.shape[:-1], 4, self.reg_max + 1), dim=-1)
        return (x * self.project.to(x)).sum(-1)
