"""Typed configuration of a SCRFD-style detector: backbone + PAFPN neck + SCRFDHead.

Every released DamoFD and SCRFD model is one :class:`DetectorConfig` (see :mod:`damofd.models.zoo`).
Configs are frozen dataclasses: build a variant with :func:`dataclasses.replace` or the helpers
(:meth:`DetectorConfig.with_kps`). They serialise to plain dicts (:meth:`DetectorConfig.to_dict`)
so that a checkpoint can record the exact architecture it was trained with.

Backbones (reference spec §2.2, scrfd-spec §2):

* :class:`MasterNetConfig` — a DamoFD structure string, built by
  :class:`damofd.models.backbones.masternet.MasterNet` (BatchNorm eps 1e-3);
* :class:`MobileNetV1Config` — SCRFD 500M / 1G (BatchNorm eps 1e-5);
* :class:`ResNetV1eConfig` — SCRFD 1.3G / 2.5G / 10G (BasicBlock) and 34G (Bottleneck), eps 1e-5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from damofd.errors import ConfigError

__all__ = [
    "BackboneConfig",
    "DetectorConfig",
    "MasterNetConfig",
    "MobileNetV1Config",
    "PAFPNConfig",
    "ResNetV1eConfig",
    "SCRFDHeadConfig",
]


def _check(cond: bool, what: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{what}: {msg}")


def _ints(values: Any, what: str, length: int | None = None) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a sequence of integers, got {values!r}") from None
    if length is not None:
        _check(len(out) == length, what, f"expected {length} values, got {len(out)}: {out}")
    _check(all(v >= 1 for v in out), what, f"values must be >= 1, got {out}")
    return out


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MasterNetConfig:
    """DamoFD backbone: a PlainNet structure string (reference spec §2.1–2.2).

    ``bn_eps`` is 1e-3 in the reference (MasterNet overrides the PyTorch default after
    construction; a state dict does not carry it).
    """

    structure: str
    bn_eps: float = 1e-3
    type: Literal["MasterNet"] = field(default="MasterNet", init=False)

    def __post_init__(self) -> None:
        from damofd.search.structure import Structure

        s = Structure.parse(self.structure)  # raises StructureError naming the block
        object.__setattr__(self, "structure", s.format())
        _check(self.bn_eps > 0, "MasterNetConfig.bn_eps", f"must be > 0, got {self.bn_eps}")

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the stage outputs C2..C5 (strides 4, 8, 16, 32), as MasterNet picks them
        (the first block reaching each stride; for a split stage, its first half)."""
        from damofd.models.backbones.masternet import stage_output_indices
        from damofd.search.structure import Structure

        s = Structure.parse(self.structure)
        return tuple(s[i].out_channels for i in stage_output_indices([b.stride for b in s]))


@dataclass(frozen=True)
class MobileNetV1Config:
    """SCRFD MobileNetV1 (scrfd-spec §2.1): ``stage_planes`` p0..p5, ``stage_blocks`` b1..b4."""

    stage_planes: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    bn_eps: float = 1e-5
    type: Literal["MobileNetV1"] = field(default="MobileNetV1", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "stage_planes", _ints(self.stage_planes, "MobileNetV1Config.stage_planes", 6)
        )
        object.__setattr__(
            self, "stage_blocks", _ints(self.stage_blocks, "MobileNetV1Config.stage_blocks", 4)
        )

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of C2..C5 = p2..p5."""
        return self.stage_planes[2:]


@dataclass(frozen=True)
class ResNetV1eConfig:
    """SCRFD ResNetV1e (deep stem, 2×2 max-pool, avg-down shortcuts; scrfd-spec §2.2).

    ``block`` is ``"basic"`` (expansion 1) or ``"bottleneck"`` (expansion 4, stride on the 3×3).
    ``base_channels`` B gives the stem widths B/2, B/2, B.
    """

    block: Literal["basic", "bottleneck"]
    stage_blocks: tuple[int, ...]
    stage_planes: tuple[int, ...]
    base_channels: int
    bn_eps: float = 1e-5
    type: Literal["ResNetV1e"] = field(default="ResNetV1e", init=False)

    def __post_init__(self) -> None:
        _check(
            self.block in ("basic", "bottleneck"),
            "ResNetV1eConfig.block",
            f"must be 'basic' or 'bottleneck', got {self.block!r}",
        )
        object.__setattr__(
            self, "stage_blocks", _ints(self.stage_blocks, "ResNetV1eConfig.stage_blocks", 4)
        )
        object.__setattr__(
            self, "stage_planes", _ints(self.stage_planes, "ResNetV1eConfig.stage_planes", 4)
        )
        _check(
            self.base_channels >= 2 and self.base_channels % 2 == 0,
            "ResNetV1eConfig.base_channels",
            f"must be an even integer >= 2 (the stem uses B/2), got {self.base_channels}",
        )

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(p * self.expansion for p in self.stage_planes)


BackboneConfig = MasterNetConfig | MobileNetV1Config | ResNetV1eConfig
_BACKBONES: dict[str, type] = {
    "MasterNet": MasterNetConfig,
    "MobileNetV1": MobileNetV1Config,
    "ResNetV1e": ResNetV1eConfig,
}


# --------------------------------------------------------------------------------------------
# neck and head
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PAFPNConfig:
    """PAFPN (reference spec §4.1): no norm, no activation, every conv has a bias.

    ``in_channels`` lists all four backbone stages C2..C5 as the reference configs do; entries
    below ``start_level`` are not used (DamoFD-34G's config writes 192 for C2, whose true width
    is 224 — harmless, reference spec §10.6).
    """

    in_channels: tuple[int, ...]
    out_channels: int
    start_level: int = 1
    num_outs: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_channels", _ints(self.in_channels, "PAFPNConfig.in_channels"))
        _check(self.out_channels >= 1, "PAFPNConfig.out_channels", f"got {self.out_channels}")
        n_used = len(self.in_channels) - self.start_level
        _check(
            0 <= self.start_level < len(self.in_channels),
            "PAFPNConfig.start_level",
            f"must index in_channels (len {len(self.in_channels)}), got {self.start_level}",
        )
        _check(
            self.num_outs == n_used,
            "PAFPNConfig.num_outs",
            f"extra output levels are not supported: num_outs must equal "
            f"len(in_channels) - start_level = {n_used}, got {self.num_outs}",
        )


@dataclass(frozen=True)
class SCRFDHeadConfig:
    """SCRFDHead options (reference spec §3.2 / §4.2, scrfd-spec §3).

    * ``norm``: ``"gn"`` (GroupNorm with ``num_groups``) or ``"bn"`` (BatchNorm), eps 1e-5;
    * ``dw_conv``: tower steps are depthwise-separable (mmcv DepthwiseSeparableConvModule);
    * ``strides_share``: one tower/predictor set (key ``'0'``) shared by all levels, else one per
      stride (keys ``'(8, 8)'``, ``'(16, 16)'``, ``'(32, 32)'``);
    * ``scale_mode``: a learnable per-level ``Scale`` multiplies the box output iff
      ``scale_mode > 0 and (strides_share or scale_mode == 2)``;
    * ``use_kps``: add the 5-keypoint branch (10 values per anchor).
    """

    in_channels: int
    feat_channels: int
    stacked_convs: int
    norm: Literal["gn", "bn"] = "gn"
    num_groups: int = 16
    dw_conv: bool = False
    strides_share: bool = True
    scale_mode: int = 2
    use_kps: bool = False
    num_classes: int = 1
    num_anchors: int = 2
    strides: tuple[int, ...] = (8, 16, 32)
    reg_max: int = 8
    num_keypoints: int = 5
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check(self.norm in ("gn", "bn"), "SCRFDHeadConfig.norm", f"got {self.norm!r}")
        for name in ("in_channels", "feat_channels", "num_classes", "num_anchors", "num_keypoints"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"SCRFDHeadConfig.{name}", f"got {v!r}")
        _check(self.stacked_convs >= 0, "SCRFDHeadConfig.stacked_convs", "must be >= 0")
        object.__setattr__(self, "strides", _ints(self.strides, "SCRFDHeadConfig.strides"))
        if self.norm == "gn":
            chans = [self.feat_channels]
            if self.stacked_convs > 0:
                chans.append(self.in_channels if self.dw_conv else self.feat_channels)
            for c in chans:
                _check(
                    c % self.num_groups == 0,
                    "SCRFDHeadConfig.num_groups",
                    f"GroupNorm({self.num_groups}) needs channels divisible by it, got {c}",
                )

    @property
    def use_scale(self) -> bool:
        return self.scale_mode > 0 and (self.strides_share or self.scale_mode == 2)


@dataclass(frozen=True)
class DetectorConfig:
    """A complete SCRFD-style detector."""

    backbone: BackboneConfig
    neck: PAFPNConfig
    head: SCRFDHeadConfig

    def __post_init__(self) -> None:
        _check(
            self.head.in_channels == self.neck.out_channels,
            "DetectorConfig",
            f"head in_channels {self.head.in_channels} != neck out_channels "
            f"{self.neck.out_channels}",
        )
        _check(
            len(self.head.strides) == self.neck.num_outs,
            "DetectorConfig",
            f"head has {len(self.head.strides)} strides but the neck gives {self.neck.num_outs} "
            "maps",
        )

    @property
    def family(self) -> Literal["damofd", "scrfd"]:
        """``"damofd"`` for MasterNet backbones, ``"scrfd"`` otherwise."""
        return "damofd" if isinstance(self.backbone, MasterNetConfig) else "scrfd"

    @property
    def use_kps(self) -> bool:
        return self.head.use_kps

    def with_kps(self, use_kps: bool) -> DetectorConfig:
        """The same detector with the keypoint branch switched on or off (nothing else changes)."""
        if use_kps == self.head.use_kps:
            return self
        return dataclasses.replace(self, head=dataclasses.replace(self.head, use_kps=use_kps))

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; the backbone carries its ``type``."""

        def conv(obj: Any) -> dict[str, Any]:
            d = dataclasses.asdict(obj)
            return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

        return {"backbone": conv(self.backbone), "neck": conv(self.neck), "head": conv(self.head)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on unknown or missing fields."""
        try:
            bb = dict(d["backbone"])
            kind = bb.pop("type")
            bcls = _BACKBONES[kind]
            backbone = bcls(**bb)
            neck = PAFPNConfig(**d["neck"])
            head = SCRFDHeadConfig(**d["head"])
        except KeyError as e:
            raise ConfigError(f"detector config: missing or unknown entry {e}") from None
        except TypeError as e:
            raise ConfigError(f"detector config: {e}") from None
        return cls(backbone, neck, head)
