"""The SCRFD detector: backbone → PAFPN → SCRFDHead (reference spec §4, scrfd-spec §1).

Input contract: a (B, 3, H, W) float32 RGB tensor normalised as ``(x − 127.5) / 128`` with H and
W multiples of 32 (pad with :func:`pad_to_multiple`; zero padding in normalised space is what
the reference test pipeline does). Outputs (see :meth:`SCRFD.forward`) are raw per-level maps in
stride units; decoding to pixels lives in :mod:`damofd.inference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from damofd.errors import ConfigError, InputError
from damofd.models.configs import (
    BackboneConfig,
    DetectorConfig,
    MasterNetConfig,
    MobileNetV1Config,
    ResNetV1eConfig,
)
from damofd.models.heads.scrfd_head import SCRFDHead
from damofd.models.necks.pafpn import PAFPN

__all__ = ["SCRFD", "build_backbone", "check_input_size", "pad_to_multiple"]

SIZE_DIVISOR = 32


def build_backbone(config: BackboneConfig) -> nn.Module:
    """Instantiate a backbone. It returns four maps C2..C5 and exposes ``stage_channels``."""
    if isinstance(config, MasterNetConfig):
        from damofd.models.backbones.masternet import MasterNet

        return MasterNet(config.structure, num_classes=None, bn_eps=config.bn_eps)
    if isinstance(config, MobileNetV1Config):
        from damofd.models.backbones.mobilenet import MobileNetV1

        return MobileNetV1(config)
    if isinstance(config, ResNetV1eConfig):
        from damofd.models.backbones.resnet import ResNetV1e

        return ResNetV1e(config)
    raise ConfigError(f"unknown backbone config {type(config).__name__}")


def _nearest_multiples(n: int, d: int = SIZE_DIVISOR) -> str:
    lo = (n // d) * d
    hi = lo + d
    return f"{lo} or {hi}" if lo > 0 else f"{hi}"


def check_input_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> None:
    """Raise :class:`InputError` unless both sides are positive multiples of ``divisor``."""
    bad = [(name, v) for name, v in (("height", height), ("width", width)) if v % divisor or v <= 0]
    if bad:
        hint = "; ".join(f"{name} {v} → {_nearest_multiples(v, divisor)}" for name, v in bad)
        raise InputError(
            f"input size {height}x{width} (HxW): both sides must be multiples of {divisor} "
            f"({hint}); pad with damofd.models.pad_to_multiple(x, {divisor})"
        )


def pad_to_multiple(x: Tensor, divisor: int = SIZE_DIVISOR, value: float = 0.0) -> Tensor:
    """Pad a (…, H, W) tensor at the bottom and right up to multiples of ``divisor``.

    ``value`` is in the tensor's own space (0 in normalised space = grey 127.5 in pixels, the
    reference test padding). Box coordinates are unaffected because padding is bottom/right.
    """
    h, w = x.shape[-2:]
    ph = (-h) % divisor
    pw = (-w) % divisor
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), value=value)


class SCRFD(nn.Module):
    """Single-stage face detector (mmdet ``SingleStageDetector``: backbone, neck, bbox_head).

    Attributes: ``config`` (the :class:`DetectorConfig` it was built from), ``strides`` (8, 16,
    32), ``num_anchors`` (2), ``use_kps``, ``name`` (zoo name or None), ``size_divisor`` (32:
    input sides must be multiples of it).
    """

    size_divisor: int = SIZE_DIVISOR

    def __init__(
        self,
        config: DetectorConfig,
        *,
        init: bool = True,
        name: str | None = None,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.name = name
        # ``backbone`` lets a caller reuse a module it already built from ``config.backbone``
        self.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        stage = tuple(int(c) for c in self.backbone.stage_channels)
        neck_in = config.neck.in_channels
        s = config.neck.start_level
        if len(stage) != len(neck_in) or stage[s:] != neck_in[s:]:
            raise ConfigError(
                f"neck in_channels {list(neck_in)} do not match the backbone stage channels "
                f"{list(stage)} (levels {s}.. are used)"
            )
        self.neck = PAFPN(config.neck)
        self.bbox_head = SCRFDHead(config.head)
        if init:
            self.init_weights()

    # -- contract attributes ------------------------------------------------------------------
    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.head.strides

    @property
    def num_anchors(self) -> int:
        return self.config.head.num_anchors

    @property
    def use_kps(self) -> bool:
        return self.config.head.use_kps

    @property
    def family(self) -> str:
        return self.config.family

    def init_weights(self) -> None:
        """Training-from-scratch init of every part (reference spec §2.2, §4.2; scrfd-spec §2)."""
        self.backbone.init_weights()
        self.neck.init_weights()
        self.bbox_head.init_weights()

    # -- forward ----------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InputError` for a non-(B, 3, H, W) input or H/W not multiples of 32."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        check_input_size(int(x.shape[2]), int(x.shape[3]))

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """Raw head outputs for a normalised RGB batch (B, 3, H, W), H and W multiples of 32.

        Returns ``cls, bbox, kps``, each a list over strides 8/16/32:

        * ``cls[l]``  (B, A·C, H/s, W/s) logits (C = 1 class);
        * ``bbox[l]`` (B, 4A, H/s, W/s) ltrb distances in stride units, Scale applied;
        * ``kps[l]``  (B, 10A, H/s, W/s) keypoint offsets in stride units, or ``kps is None``
          for a model without keypoints.

        Channels are anchor-major (channel = a·C + c).
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
        return self.forward_unchecked(x)

    def forward_unchecked(
        self, x: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """:meth:`forward` without the size check (for feature inspection at odd sizes).

        SCRFD's MobileNet/ResNet backbones accept any size (ceil/floor rules of scrfd-spec §2.2)
        but the anchor grid then no longer matches ``H // stride``; a MasterNet backbone may
        return fewer than four maps, which raises here.
        """
        feats = self.backbone(x)
        if len(feats) != len(self.config.neck.in_channels):
            raise InputError(
                f"backbone returned {len(feats)} feature maps for input "
                f"{tuple(x.shape[2:])}, expected {len(self.config.neck.in_channels)}; use an "
                f"input whose sides are multiples of {SIZE_DIVISOR}"
            )
        return self.bbox_head(self.neck(feats))

    def forward_export(self, x: Tensor) -> list[Tensor]:
        """Flattened outputs in the layout of the official batched ONNX export.

        ``[score_8, score_16, score_32, bbox_8, bbox_16, bbox_32(, kps_8, kps_16, kps_32)]``,
        each (B, H_l·W_l·A, C) with C = 1 (sigmoid score), 4 (ltrb, stride units), 10 (kps,
        stride units); row order = :func:`damofd.ops.anchor_centers` (location-major,
        anchor-minor).
        """
        cls, bbox, kps = self(x)

        def flat(t: Tensor, c: int) -> Tensor:
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, c)

        nc = self.config.head.num_classes
        out = [flat(t, nc).sigmoid() for t in cls] + [flat(t, 4) for t in bbox]
        if kps is not None:
            out += [flat(t, 2 * self.config.head.num_keypoints) for t in kps]
        return out

    # -- inference helpers ----------------------------------------------------------------------
    def fuse(self) -> SCRFD:
        """Fold every BatchNorm into the conv before it (eval mode; GroupNorm stays).

        Returns ``self`` (in eval mode). See :func:`damofd.models.fuse.fuse_conv_bn`.
        """
        from damofd.models.fuse import fuse_conv_bn

        p = next(self.parameters())
        example = torch.zeros(
            1, 3, 2 * SIZE_DIVISOR, 2 * SIZE_DIVISOR, device=p.device, dtype=p.dtype
        )
        fuse_conv_bn(self, example)
        self.fused = True  # checkpoints of a fused model would not load: save_checkpoint refuses
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}, use_kps={self.use_kps}"
