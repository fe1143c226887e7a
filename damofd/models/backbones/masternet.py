"""MasterNet: the PlainNet backbone built from a structure string (reference spec §2.2, §8.4).

The module tree reproduces the reference ``MasterNet`` / PlainNet tree exactly, so official DamoFD
checkpoints load by key (with the detector's ``backbone.`` prefix)::

    module_list.{b}                                   super block b of the structure string
    module_list.{b}.module_list.{j}                   its layers / residual units
    ....{j}.netblock.weight                           ConvKX / ConvDW  (nn.Conv2d, bias=False)
    ....{j}.netblock.{weight,bias,running_mean,       BN               (nn.BatchNorm2d, eps 1e-3)
                       running_var,num_batches_tracked}
    ....{j}                                           ReLU             (functional, no keys)
    ....{u}.module_list.{k}.netblock.*                layers inside residual unit u
    ....{u}.proj.0.{weight,bias}                      projection shortcut conv 1x1 (bias=True)
    ....{u}.proj.1.*                                  projection shortcut BN
    fc_linear.netblock.{weight,bias}                  classifier (only when ``num_classes`` is set)

Super block expansion (``s_i`` = stride for i == 0 else 1, ``c_0 = in``, ``c_i = out``):

* ``SuperConvK{k}BNRELU(in,out,s,L)``: ``L`` × [ConvKX(c_i→out,k,s_i), BN, ReLU] at j = 3i..3i+2.
* ``SuperResK{a}K{b}(in,out,s,btn,L)``: unit ``i`` at j = 2i, its ReLU at 2i+1; unit body
  [ConvKX(c_i→btn,a,s_i), BN, ReLU, ConvKX(btn→out,b,1), BN].
* ``SuperResK1K{k}K1``: unit A at j = 4i [1×1(c_i→btn), BN, ReLU, K×K(btn→btn,s_i), BN, ReLU,
  1×1(btn→out), BN], ReLU at 4i+1; unit B at 4i+2 (input ``out``, stride 1), ReLU at 4i+3.
* ``SuperResIDWE{e}K{k}``: unit A [1×1(c_i→dw1), BN, ReLU, DW(dw1,k,s_i), BN, ReLU, 1×1(dw1→btn),
  BN] with ``dw1 = smart_round(e·btn, 8)`` (unit A outputs **btn** channels); unit B
  [1×1(btn→dw2), BN, ReLU, DW(dw2,k,1), BN, ReLU, 1×1(dw2→out), BN] with
  ``dw2 = smart_round(e·out, 8)``.

The first unit of every residual super block is a ``ResBlockProj`` (always ``body(x) + proj(x)``);
every other unit is a ``ResBlock`` (identity shortcut unless stride > 1 or in ≠ out). With
``no_reslink=True`` (used by the zero-shot proxies, as in the reference search) the unit bodies
and their ReLUs are flattened into the super block's ``module_list`` and there are no shortcuts;
the key grammar then differs from the checkpoints.

Tensors are NCHW float; the backbone input is the detector's normalised RGB image.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from damofd.constants import BACKBONE_INIT_SCHEMES
from damofd.errors import InputError
from damofd.models.fuse import fold_bn_into_conv
from damofd.search.structure import Block, BlockKind, Structure, smart_round

__all__ = [
    "BN",
    "ConvKX",
    "FCLinear",
    "INIT_GAIN",
    "MasterNet",
    "MasterReLU",
    "ResUnit",
    "SuperBlock",
    "stage_output_indices",
]

INIT_GAIN = 3.26033
"""Gain of the official ``xavier_normal_`` conv init (reference ``init_weights``)."""

BN_EPS = 1e-3
"""MasterNet sets every BatchNorm2d eps to 1e-3 after construction (spec §2.2, trap §10.12)."""


# ---------------------------------------------------------------------------------------------
# Basic blocks: thin wrappers whose only child is ``netblock``, so keys read ``….netblock.weight``
# ---------------------------------------------------------------------------------------------
class ConvKX(nn.Module):
    """PlainNet ``ConvKX`` / ``ConvDW``: ``nn.Conv2d`` without bias, padding ``(k−1)//2``.

    ``groups == in_channels == out_channels`` makes it the depthwise ``ConvDW``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1
    ) -> None:
        super().__init__()
        self.netblock = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            bias=False,
            groups=groups,
        )

    @property
    def in_channels(self) -> int:
        return self.netblock.in_channels

    @property
    def out_channels(self) -> int:
        return self.netblock.out_channels

    @property
    def stride(self) -> int:
        return int(self.netblock.stride[0])

    def forward(self, x: Tensor) -> Tensor:
        return self.netblock(x)


class BN(nn.Module):
    """PlainNet ``BN``: ``nn.BatchNorm2d`` (eps set to 1e-3 by :class:`MasterNet`)."""

    def __init__(self, channels: int, eps: float = BN_EPS, momentum: float = 0.1) -> None:
        super().__init__()
        self.netblock = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self.netblock(x)


class MasterReLU(nn.Module):
    """PlainNet ``RELU``: a parameter-free slot applying the *functional* ``F.relu``.

    It is a module only so that the indices of the reference ``module_list`` (and therefore the
    checkpoint keys) are preserved, and so that proxies can register forward hooks on it (NASWOT
    reads the sign pattern of its input). It is deliberately not an ``nn.ReLU``: mmcv-style FLOP
    counters ignore functional ReLUs, which the published FLOPs (spec §9) rely on.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class FCLinear(nn.Module):
    """PlainNet ``Linear`` used as the classifier ``fc_linear`` (keys ``fc_linear.netblock.*``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.netblock = nn.Linear(in_features, out_features, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.netblock(x)


# ---------------------------------------------------------------------------------------------
# Residual unit and super block
# ---------------------------------------------------------------------------------------------
class ResUnit(nn.Module):
    """PlainNet ``ResBlock`` / ``ResBlockProj``: ``body(x) + shortcut(x)`` (no activation).

    ``always_project=True`` is ``ResBlockProj`` (the first unit of a residual super block).
    Otherwise a projection ``Conv2d(in, out, 1, stride, bias=True) → BN`` is created only when
    ``stride > 1`` or ``in ≠ out``; the stride is the product of the body's conv strides (the
    reference infers it as ``1024 // out_res(1024)``, which is the same number).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        always_project: bool,
        bn_eps: float = BN_EPS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.module_list = nn.ModuleList(layers)
        convs = [m for m in layers if isinstance(m, ConvKX)]
        self.in_channels = convs[0].in_channels
        self.out_channels = convs[-1].out_channels
        self.stride = math.prod(c.stride for c in convs)
        self.always_project = always_project
        self.proj: nn.Sequential | None = None
        if always_project or self.stride > 1 or self.in_channels != self.out_channels:
            self.proj = nn.Sequential(
                nn.Conv2d(self.in_channels, self.out_channels, 1, self.stride, bias=True),
                nn.BatchNorm2d(self.out_channels, eps=bn_eps, momentum=bn_momentum),
            )

    def last_bn(self) -> nn.BatchNorm2d:
        """The body's last BatchNorm (its γ is zero-initialised by ``init_weights``)."""
        bns = [m for m in self.module_list if isinstance(m, BN)]
        return bns[-1].netblock

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.module_list:
            out = layer(out)
        return out + (self.proj(x) if self.proj is not None else x)


class SuperBlock(nn.Module):
    """One super block of the structure string, expanded as in spec §2.2."""

    def __init__(
        self,
        block: Block,
        *,
        no_reslink: bool = False,
        bn_eps: float = BN_EPS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.block = block
        self.no_reslink = no_reslink
        self._bn_eps = bn_eps
        self._bn_momentum = bn_momentum
        self.module_list = nn.ModuleList(self._expand(block))

    # -- expansion helpers ---------------------------------------------------------------------
    def _bn(self, c: int) -> BN:
        return BN(c, eps=self._bn_eps, momentum=self._bn_momentum)

    def _unit(self, body: list[nn.Module], first: bool) -> list[nn.Module]:
        """A residual unit followed by its trailing ReLU (flattened when ``no_reslink``)."""
        if self.no_reslink:
            return [*body, MasterReLU()]
        unit = ResUnit(
            body,
            always_project=first,
            bn_eps=self._bn_eps,
            bn_momentum=self._bn_momentum,
        )
        return [unit, MasterReLU()]

    def _expand(self, b: Block) -> list[nn.Module]:
        layers: list[nn.Module] = []
        cin = b.in_channels
        out = b.out_channels
        for i in range(b.sub_layers):
            s = b.stride if i == 0 else 1
            if b.kind is BlockKind.CONV:
                k = b.kernel
                layers += [ConvKX(cin, out, k, s), self._bn(out), MasterReLU()]
            elif b.kind is BlockKind.KXKX:
                k1, k2 = b.type.kernels
                btn = _btn(b)
                body = [ConvKX(cin, btn, k1, s), self._bn(btn), MasterReLU()]
                body += [ConvKX(btn, out, k2, 1), self._bn(out)]
                layers += self._unit(body, first=i == 0)
            elif b.kind is BlockKind.K1KXK1:
                k = b.kernel
                btn = _btn(b)
                layers += self._unit(self._bottleneck(cin, btn, out, k, s), first=i == 0)
                layers += self._unit(self._bottleneck(out, btn, out, k, 1), first=False)
            elif b.kind is BlockKind.IDWE:
                k = b.kernel
                btn = _btn(b)
                e = b.expansion
                assert e is not None
                dw1 = smart_round(e * btn, 8)
                dw2 = smart_round(e * out, 8)
                layers += self._unit(self._inverted(cin, dw1, btn, k, s), first=i == 0)
                layers += self._unit(self._inverted(btn, dw2, out, k, 1), first=False)
            else:  # pragma: no cover - BlockKind is closed
                raise AssertionError(b.kind)
            cin = out
        return layers

    def _bottleneck(self, cin: int, btn: int, out: int, k: int, s: int) -> list[nn.Module]:
        return [
            ConvKX(cin, btn, 1, 1),
            self._bn(btn),
            MasterReLU(),
            ConvKX(btn, btn, k, s),
            self._bn(btn),
            MasterReLU(),
            ConvKX(btn, out, 1, 1),
            self._bn(out),
        ]

    def _inverted(self, cin: int, dw: int, out: int, k: int, s: int) -> list[nn.Module]:
        return [
            ConvKX(cin, dw, 1, 1),
            self._bn(dw),
            MasterReLU(),
            ConvKX(dw, dw, k, s, groups=dw),
            self._bn(dw),
            MasterReLU(),
            ConvKX(dw, out, 1, 1),
            self._bn(out),
        ]

    # -- info ----------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.block.in_channels

    @property
    def out_channels(self) -> int:
        return self.block.out_channels

    @property
    def stride(self) -> int:
        return self.block.stride

    def res_units(self) -> Iterator[ResUnit]:
        for m in self.module_list:
            if isinstance(m, ResUnit):
                yield m

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.module_list:
            x = layer(x)
        return x


def _btn(b: Block) -> int:
    if b.bottleneck is None:  # pragma: no cover - Block validation guarantees it
        raise InputError(f"block {b.format()!r} needs a bottleneck width")
    return b.bottleneck


def _is_tracing() -> bool:
    """True while TorchScript tracing, torch.compile / torch.export or ONNX export runs."""
    if torch.jit.is_tracing():  # TorchScript tracing, including the legacy ONNX exporter
        return True
    # torch.compile / torch.export / the dynamo ONNX exporter import torch._dynamo; asking
    # torch.compiler would import it (seconds) on every first forward, so only ask when loaded
    return "torch._dynamo" in sys.modules and bool(torch.compiler.is_compiling())


def stage_output_indices(strides: Sequence[int], first_target: int = 4) -> tuple[int, ...]:
    """Indices of the blocks whose outputs the detector backbone returns.

    Reference rule (``mmdet/models/backbones/masternet.py``): after block ``b`` the cumulative
    down-sampling ratio is compared with ``target`` (starting at 4); on a match the output is
    taken and ``target`` doubles. For an input whose size is a multiple of the total stride this
    static rule gives exactly the reference's ``round(H_in / H_out)`` decisions.
    """
    out: list[int] = []
    ratio = 1
    target = first_target
    for i, s in enumerate(strides):
        ratio *= s
        if ratio == target:
            out.append(i)
            target *= 2
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# MasterNet
# ---------------------------------------------------------------------------------------------
class MasterNet(nn.Module):
    """PlainNet backbone of DamoFD, built from a :class:`Structure` (spec §2.2).

    Args:
        structure: a :class:`Structure` or a structure string (parsed).
        num_classes: when set, adds the proxy classifier ``GAP → fc_linear`` (keys
            ``fc_linear.netblock.{weight,bias}``); ``None`` (detector use) adds no keys.
        no_reslink: drop every residual shortcut (the reference search builds proxy models this
            way); changes the key grammar, so never use it for checkpoints.
        bn_eps: eps of every BatchNorm2d, projection BNs included (1e-3 in the reference).
        bn_momentum: BatchNorm2d momentum (PyTorch default 0.1).

    Attributes:
        module_list: ``nn.ModuleList`` of :class:`SuperBlock`, one per block of the string.
        out_indices: indices of the blocks returned by :meth:`forward`.
        out_strides: their strides in input pixels (``(4, 8, 16, 32)`` for DamoFD backbones).
        stage_channels: their channel counts (C2..C5 of spec §3.1).
        size_divisor: input H and W must be multiples of this (the total stride, 32).

    Weights are PyTorch's default init after construction; call :meth:`init_weights` for the
    official from-scratch init.
    """

    def __init__(
        self,
        structure: Structure | str,
        *,
        num_classes: int | None = None,
        no_reslink: bool = False,
        bn_eps: float = BN_EPS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.structure = Structure.of(structure)
        for i in range(1, len(self.structure)):
            prev, cur = self.structure[i - 1], self.structure[i]
            if cur.in_channels != prev.out_channels:
                raise InputError(
                    f"structure block {i} {cur.format()!r} takes {cur.in_channels} input "
                    f"channels but block {i - 1} {prev.format()!r} outputs {prev.out_channels}; "
                    "fix the string or call Structure.rechain()"
                )
        if num_classes is not None and num_classes < 1:
            raise InputError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.num_classes = num_classes
        self.no_reslink = no_reslink
        self.module_list = nn.ModuleList(
            SuperBlock(b, no_reslink=no_reslink, bn_eps=bn_eps, bn_momentum=bn_momentum)
            for b in self.structure
        )
        self.fc_linear: FCLinear | None = None
        if num_classes is not None:
            self.fc_linear = FCLinear(self.structure.out_channels, num_classes)

        strides = [b.stride for b in self.structure]
        self.out_indices: tuple[int, ...] = stage_output_indices(strides)
        cum = 1
        cum_strides: list[int] = []
        for s in strides:
            cum *= s
            cum_strides.append(cum)
        self.out_strides: tuple[int, ...] = tuple(cum_strides[i] for i in self.out_indices)
        self.stage_channels: tuple[int, ...] = tuple(
            self.structure[i].out_channels for i in self.out_indices
        )
        self.size_divisor: int = cum

    # -- info ----------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.structure[0].in_channels

    @property
    def out_channels(self) -> int:
        """Channels of the last block (the pre-GAP feature map)."""
        return self.structure.out_channels

    def relus(self) -> Iterator[MasterReLU]:
        """Every ReLU slot in forward order (NASWOT hooks these)."""
        for m in self.modules():
            if isinstance(m, MasterReLU):
                yield m

    def res_units(self) -> Iterator[ResUnit]:
        for sb in self.module_list:
            yield from sb.res_units()  # type: ignore[union-attr]

    def extra_repr(self) -> str:
        return f"structure={self.structure.format()!r}, no_reslink={self.no_reslink}"

    # -- init ----------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(
        self, generator: torch.Generator | None = None, *, scheme: str = "official"
    ) -> None:
        """From-scratch init; ``scheme`` picks the conv weights.

        ``official`` (``mmdet/models/backbones/masternet.py``): conv
        ``xavier_normal_(gain=3.26033)``. ``kaiming``: conv ``kaiming_normal_`` (fan_out, ReLU),
        the scale of SCRFD's backbones (the official gain starts DamoFD's convs at a median 2.5×
        that scale; on a short CPU schedule Kaiming trained no better, docs/model-card.md).
        Both: conv bias 0; BN γ = 1, β = 0; Linear
        N(0, 3.26033·√(2/(fan_in+fan_out))), bias 0; then the **last BN γ of every residual
        unit is set to 0** (so each unit starts as its shortcut). ``generator`` (optional, for
        reproducible draws) must live on the parameters' device.
        """
        if scheme not in BACKBONE_INIT_SCHEMES:
            raise InputError(f"init scheme must be one of {BACKBONE_INIT_SCHEMES}, got {scheme!r}")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if scheme == "kaiming":
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu", generator=generator
                    )
                else:
                    nn.init.xavier_normal_(m.weight, gain=INIT_GAIN, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                std = INIT_GAIN * math.sqrt(2.0 / (m.weight.shape[0] + m.weight.shape[1]))
                nn.init.normal_(m.weight, 0.0, std, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for unit in self.res_units():
            nn.init.zeros_(unit.last_bn().weight)

    # -- forward -------------------------------------------------------------------------------
    def _check_input(self, x: Tensor, *, need_multiple: bool) -> None:
        if _is_tracing():  # shapes are symbolic or recorded; checks would become constants
            return
        if x.dim() != 4:
            raise InputError(f"MasterNet input must be (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"MasterNet input has {x.shape[1]} channels, the structure's first block "
                f"{self.structure[0].format()!r} expects {self.in_channels}"
            )
        if not need_multiple:
            return
        d = self.size_divisor
        h, w = int(x.shape[2]), int(x.shape[3])
        for label, v in (("height", h), ("width", w)):
            if v % d != 0 or v == 0:
                lo = (v // d) * d
                hi = lo + d
                near = f"{lo} or {hi}" if lo > 0 else f"{hi}"
                raise InputError(
                    f"input {label} {v} is not a multiple of {d} (the backbone's total stride); "
                    f"the nearest valid {label}s are {near} — resize or pad the image"
                )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Detector forward: stage outputs at :attr:`out_strides` (strides 4, 8, 16, 32).

        ``x`` is (B, 3, H, W) with H and W multiples of :attr:`size_divisor` (else
        :class:`InputError`, which names the nearest valid sizes). Returns one (B, C_i, H/s_i,
        W/s_i) tensor per stage, channels :attr:`stage_channels`. The stem output is not
        returned.
        """
        self._check_input(x, need_multiple=True)
        outs: list[Tensor] = []
        want = self.out_indices
        for i, block in enumerate(self.module_list):
            x = block(x)
            if i in want:
                outs.append(x)
        return outs

    def forward_pre_gap(self, x: Tensor) -> Tensor:
        """Output of the last block (B, C_last, h, w) for any input size (used by Zen)."""
        self._check_input(x, need_multiple=False)
        for block in self.module_list:
            x = block(x)
        return x

    def forward_logits(self, x: Tensor) -> Tensor:
        """Classifier logits (B, num_classes): pre-GAP features → global average pool → fc."""
        if self.fc_linear is None:
            raise InputError(
                "this MasterNet has no classifier head; build it with num_classes=... "
                "(the proxies use 1000)"
            )
        feat = self.forward_pre_gap(x)
        feat = torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1)
        return self.fc_linear(feat)

    # -- inference helpers ---------------------------------------------------------------------
    @torch.no_grad()
    def fuse(self) -> MasterNet:
        """Fold every BatchNorm into the preceding conv for inference (in place; returns self).

        Only valid in eval mode (uses running statistics). Each folded ``BN.netblock`` and
        ``proj.1`` becomes ``nn.Identity`` and the conv gains a bias, so the state dict no longer
        follows the checkpoint grammar.
        """
        if self.training:
            raise InputError("MasterNet.fuse() needs eval mode (call .eval() first)")
        for m in list(self.modules()):
            if isinstance(m, nn.ModuleList):
                items = list(m)
                for a, b in itertools.pairwise(items):
                    if (
                        isinstance(a, ConvKX)
                        and isinstance(b, BN)
                        and isinstance(b.netblock, nn.BatchNorm2d)
                    ):
                        fold_bn_into_conv(a.netblock, b.netblock)
                        b.netblock = nn.Identity()  # type: ignore[assignment]
            elif isinstance(m, ResUnit) and m.proj is not None:
                conv, bn = m.proj[0], m.proj[1]
                if isinstance(bn, nn.BatchNorm2d):
                    fold_bn_into_conv(conv, bn)  # type: ignore[arg-type]
                    m.proj[1] = nn.Identity()
        return self
