"""FLOPs, parameters and layer count of a structure under the PlainNet search rules (spec §2.3).

These are the analytic counters the evolutionary search uses for its budgets (``--budget-flops``,
``--budget-params``, ``--max-layers``). They are *not* the mmcv counts of a built detector (see
``damofd info`` for those): they count multiply-accumulates of the convolutions plus one operation
per BatchNorm output element, ignore ReLU and additions, and follow the conventions of the
reference ``PlainNet`` code, including two bugs that the released search depends on.

How each super block expands (spec §2.2), with ``s_i = stride`` for the first sub-layer and 1
after, ``cin_0 = in`` and ``cin_i = out``:

* ``SuperConvK{k}BNRELU(in,out,s,L)``: L × [ConvKX(cin_i→out, k, s_i), BN(out)].
* ``SuperResK{k}K{k}(in,out,s,btn,L)``: L residual units [ConvKX(cin_i→btn, k, s_i), BN,
  ConvKX(btn→out, k, 1), BN].
* ``SuperResK1K{k}K1``: L × (unit A [1×1 cin_i→btn, BN, k×k btn→btn stride s_i, BN, 1×1 btn→out,
  BN], unit B = the same with input ``out`` and stride 1).
* ``SuperResIDWE{e}K{k}``: with ``dw1 = smart_round(e·btn, 8)`` and ``dw2 = smart_round(e·out, 8)``,
  L × (unit A [1×1 cin_i→dw1, BN, DW k×k stride s_i, BN, 1×1 dw1→btn, BN],
  unit B [1×1 btn→dw2, BN, DW k×k, BN, 1×1 dw2→out, BN]). Unit A outputs ``btn`` channels.
* The first unit (i = 0, unit A) of every residual block is a ``ResBlockProj``: it always has a
  projection shortcut ``Conv1×1(in→out, stride) + BN``. Every other unit has one only when its
  stride is 2 or its input and output widths differ.

Counting rules (``r`` = input resolution of the layer, an int; outputs are ``r // s``):

* ConvKX ``in·out·k²·r² // s² // groups`` FLOPs, ``in·out·k²/groups`` params.
* Depthwise conv ``c·k²·r² // s²`` FLOPs, ``c·k²`` params. BN ``r²·c`` FLOPs, ``c`` params.
* Projection shortcut: ``in·out·ρ² + ρ²·out`` FLOPs and ``in·out + out`` params.
* Model size adds the classifier of the DDSAR MasterNet, ``Linear(last_channels, num_classes)``
  (``num_classes = 1000`` in every DamoFD search script); FLOPs exclude it.
* Layers = Σ ``sub_layers`` over all blocks, stem included.

Reference quirks, selectable through :class:`CostOptions` and **on by default** so that budgets
accept and reject exactly the candidates the released search does:

1. ``proj_double_stride``: the projection is counted at ``ρ = r_out / stride`` where ``r_out`` is
   already the unit's output resolution, so a stride-2 shortcut is under-counted by 4× (and ``ρ``
   is a float: FLOPs can be fractional, e.g. ``7 / 2 = 3.5``). Off: ``ρ = r_out``.
2. ``linear_bias_as_one``: the classifier's bias is counted as one parameter instead of
   ``num_classes``.

Under the defaults the four released backbones give exactly 63,135,422 / 326,830,000 /
1,341,946,928 / 4,147,297,476 FLOPs at 224 (spec §2.8), 380,617 / 468,169 / 1,127,401 /
4,839,265 parameters and 6 / 19 / 17 / 20 layers (spec §9).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from damofd.errors import InputError
from damofd.search.structure import (
    BLOCK_TYPES,
    Block,
    BlockKind,
    BlockType,
    Structure,
    smart_round,
)

__all__ = [
    "BlockKey",
    "BlockCost",
    "CostModel",
    "CostOptions",
    "StructureCost",
    "block_cost",
    "block_key",
    "structure_cost",
    "structure_from_keys",
    "structure_keys",
]

BlockKey = tuple[str, int, int, int, int, int]
"""Compact, cheaply hashable form of a :class:`Block` used in hot loops:
``(type name, in, out, stride, bottleneck or 0, sub_layers)`` (the tag is dropped)."""


def block_key(block: Block) -> BlockKey:
    """The :data:`BlockKey` of ``block`` (bottleneck 0 for conv blocks)."""
    return (
        block.type.name,
        block.in_channels,
        block.out_channels,
        block.stride,
        block.bottleneck or 0,
        block.sub_layers,
    )


def structure_keys(structure: Structure) -> tuple[BlockKey, ...]:
    """The :data:`BlockKey` of every block of ``structure``."""
    return tuple(block_key(b) for b in structure)


def structure_from_keys(keys: Iterable[BlockKey]) -> Structure:
    """Inverse of :func:`structure_keys` (validates every block)."""
    blocks = []
    for name, cin, out, stride, btn, sub_layers in keys:
        blocks.append(Block(BLOCK_TYPES[name], cin, out, stride, btn or None, sub_layers))
    return Structure(tuple(blocks))


@dataclass(frozen=True, slots=True)
class CostOptions:
    """Counting options. The defaults reproduce the reference search exactly (spec §2.3, §10)."""

    proj_double_stride: bool = True
    """Quirk 1: count projection shortcuts at ``(r_out / stride)²`` instead of ``r_out²``."""
    linear_bias_as_one: bool = True
    """Quirk 2: count the classifier bias as 1 parameter instead of ``num_classes``."""
    num_classes: int = 1000
    """Width of the MasterNet classifier included in the model size (0: no classifier)."""

    def __post_init__(self) -> None:
        if self.num_classes < 0:
            raise InputError(f"num_classes must be >= 0, got {self.num_classes}")

    @classmethod
    def exact(cls, num_classes: int = 1000) -> CostOptions:
        """Both quirks off: what the built network really computes under the same conventions."""
        return cls(proj_double_stride=False, linear_bias_as_one=False, num_classes=num_classes)

    def classifier_params(self, last_channels: int) -> int:
        if self.num_classes == 0:
            return 0
        bias = 1 if self.linear_bias_as_one else self.num_classes
        return last_channels * self.num_classes + bias


@dataclass(frozen=True, slots=True)
class BlockCost:
    """Cost of one super block: ``flops`` (multiply-accumulates + BN elements, may be fractional
    under quirk 1), ``params`` and the output resolution (pixels, square)."""

    flops: float
    params: int
    out_resolution: int


@dataclass(frozen=True, slots=True)
class StructureCost:
    """Search-rule cost of a whole structure at a square input of ``resolution`` pixels."""

    flops: float
    """FLOPs of the backbone blocks (classifier excluded), as the reference ``get_FLOPs``."""
    params: int
    """Model size including the ``num_classes``-way classifier, as ``get_model_size``."""
    layers: int
    """Σ sub_layers, stem included (``get_num_layers``)."""
    resolution: int
    blocks: tuple[BlockCost, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form; integral FLOPs are written as ints."""
        return {
            "flops": _num(self.flops),
            "params": self.params,
            "layers": self.layers,
            "resolution": self.resolution,
            "blocks": [
                {"flops": _num(b.flops), "params": b.params, "out_resolution": b.out_resolution}
                for b in self.blocks
            ],
        }


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


# ---------------------------------------------------------------------------------------------
# Per-block counting on BlockKeys (pure functions of the key, resolution and options)
# ---------------------------------------------------------------------------------------------
def _unit(
    layers: Iterable[tuple[int, int, int, int, bool]],
    cin: int,
    cout: int,
    stride: int,
    r: int,
    has_proj: bool,
    double_stride: bool,
) -> tuple[float, int, int]:
    """One residual unit: ``layers`` are ``(in, out, k, stride, depthwise)`` each followed by BN."""
    flops: float = 0
    params = 0
    for a, b, k, s, dw in layers:
        if dw:
            flops += a * k * k * r * r // (s * s)
            params += a * k * k
        else:
            flops += a * b * k * k * r * r // (s * s)
            params += a * b * k * k
        r = r // s
        flops += r * r * b
        params += b
    if has_proj:
        if double_stride:
            rho = r / stride
            flops += cin * cout * rho**2 + rho**2 * cout
        else:
            flops += (cin * cout + cout) * r * r
        params += cin * cout + cout
    return flops, params, r


def _sub_layer(
    btype: BlockType, cin: int, out: int, btn: int, s: int, r: int, first: bool, dbl: bool
) -> tuple[float, int, int]:
    """Cost of sub-layer ``i`` of a block: input width ``cin``, stride ``s``, resolution ``r``;
    ``first`` marks ``i == 0`` (whose first unit is a ``ResBlockProj``)."""
    kind = btype.kind
    k = btype.kernel
    if kind is BlockKind.CONV:
        r2 = r // s
        return cin * out * k * k * r * r // (s * s) + r2 * r2 * out, cin * out * k * k + out, r2
    if kind is BlockKind.KXKX:
        ka, kb = btype.kernels
        return _unit(
            ((cin, btn, ka, s, False), (btn, out, kb, 1, False)),
            cin, out, s, r, first or s > 1 or cin != out, dbl,
        )  # fmt: skip
    if kind is BlockKind.K1KXK1:
        f, p, r = _unit(
            ((cin, btn, 1, 1, False), (btn, btn, k, s, False), (btn, out, 1, 1, False)),
            cin, out, s, r, first or s > 1 or cin != out, dbl,
        )  # fmt: skip
        f2, p2, r = _unit(
            ((out, btn, 1, 1, False), (btn, btn, k, 1, False), (btn, out, 1, 1, False)),
            out, out, 1, r, False, dbl,
        )  # fmt: skip
        return f + f2, p + p2, r
    e = float(btype.expansion or 1)  # IDWE
    dw1 = smart_round(btn * e, 8)
    dw2 = smart_round(out * e, 8)
    f, p, r = _unit(
        ((cin, dw1, 1, 1, False), (dw1, dw1, k, s, True), (dw1, btn, 1, 1, False)),
        cin, btn, s, r, first or s > 1 or cin != btn, dbl,
    )  # fmt: skip
    f2, p2, r = _unit(
        ((btn, dw2, 1, 1, False), (dw2, dw2, k, 1, True), (dw2, out, 1, 1, False)),
        btn, out, 1, r, btn != out, dbl,
    )  # fmt: skip
    return f + f2, p + p2, r


def _block_cost_key(key: BlockKey, r: int, opts: CostOptions) -> tuple[float, int, int]:
    """``(flops, params, out_resolution)`` of a block. Sub-layers 1..L−1 are identical (input
    width ``out``, stride 1, same resolution), so one of them is counted ``L − 1`` times."""
    name, cin, out, stride, btn, sub_layers = key
    btype = BLOCK_TYPES[name]
    dbl = opts.proj_double_stride
    flops, params, r = _sub_layer(btype, cin, out, btn, stride, r, True, dbl)
    if sub_layers > 1:
        f, p, _ = _sub_layer(btype, out, out, btn, 1, r, False, dbl)
        flops += (sub_layers - 1) * f
        params += (sub_layers - 1) * p
    return flops, params, r


class CostModel:
    """Memoised search-rule counter (one instance per :class:`CostOptions`).

    Per-block costs are cached by ``(BlockKey, input resolution)``; evaluating a structure is then
    a handful of dictionary look-ups, which is what lets the search run ~10⁵ candidates in seconds.
    """

    __slots__ = ("_cache", "options")

    def __init__(self, options: CostOptions | None = None) -> None:
        self.options = options or CostOptions()
        self._cache: dict[tuple[BlockKey, int], tuple[float, int, int]] = {}

    def block(self, key: BlockKey, resolution: int) -> tuple[float, int, int]:
        """``(flops, params, out_resolution)`` of one block given as a :data:`BlockKey`."""
        ck = (key, resolution)
        hit = self._cache.get(ck)
        if hit is None:
            hit = self._cache[ck] = _block_cost_key(key, resolution, self.options)
        return hit

    def totals(self, keys: tuple[BlockKey, ...], resolution: int) -> tuple[float, int, int]:
        """``(flops, params incl. classifier, layers)`` of a structure given as BlockKeys."""
        cache = self._cache
        opts = self.options
        r = resolution
        flops: float = 0
        params = 0
        layers = 0
        for key in keys:
            ck = (key, r)
            hit = cache.get(ck)
            if hit is None:
                hit = cache[ck] = _block_cost_key(key, r, opts)
            flops += hit[0]
            params += hit[1]
            r = hit[2]
            layers += key[5]
        return flops, params + opts.classifier_params(keys[-1][2]), layers

    def __len__(self) -> int:
        return len(self._cache)


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise InputError(f"resolution must be a positive integer (pixels), got {resolution!r}")
    return resolution


def block_cost(block: Block, resolution: int, options: CostOptions | None = None) -> BlockCost:
    """Search-rule cost of one super block at input ``resolution`` (pixels, square)."""
    f, p, r = _block_cost_key(
        block_key(block), _check_resolution(resolution), options or CostOptions()
    )
    return BlockCost(f, p, r)


def structure_cost(
    structure: Structure | str, resolution: int = 224, options: CostOptions | None = None
) -> StructureCost:
    """FLOPs, model size and layer count of ``structure`` at a ``resolution``² input.

    ``structure`` may be a :class:`Structure` or a structure string. Units: FLOPs are
    multiply-accumulates (+ BN elements) of the backbone, params count weights (+1 per BN channel)
    including the classifier of :attr:`CostOptions.num_classes` outputs.
    """
    s = Structure.of(structure)
    r = _check_resolution(resolution)
    opts = options or CostOptions()
    blocks: list[BlockCost] = []
    flops: float = 0
    params = 0
    for b in s:
        f, p, r = _block_cost_key(block_key(b), r, opts)
        blocks.append(BlockCost(f, p, r))
        flops += f
        params += p
    params += opts.classifier_params(s.out_channels)
    return StructureCost(flops, params, s.num_layers, resolution, tuple(blocks))
