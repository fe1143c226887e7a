"""Structure strings of the PlainNet / Zen-NAS grammar used by DamoFD (reference spec §2.1–2.4).

A structure string is a concatenation of super blocks ``Name(args)`` with no separators, e.g.::

    SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)...

Arguments are ``(in, out, stride, L)`` for ``SuperConvK{k}BNRELU`` and
``(in, out, stride, btn, L)`` for the residual blocks, where ``btn`` is the bottleneck width and
``L`` the number of ``sub_layers``. An optional ``tag|`` prefix inside the parentheses names the
block; it does not change the network and is kept so that parsing and formatting round-trip.

:class:`Structure` is an immutable, hashable value object (a tuple of :class:`Block`). Parse a
string once with :meth:`Structure.parse` and work on the object; never re-parse in hot loops.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache, lru_cache

from damofd.errors import InputError

__all__ = [
    "BLOCK_TYPES",
    "Block",
    "BlockKind",
    "BlockType",
    "Structure",
    "StructureError",
    "smart_round",
]


class StructureError(InputError):
    """A structure string or block is malformed. The message names the block index and text."""


class BlockKind(str, Enum):
    """Family of a super block; decides its arguments, expansion and DDSAR terms."""

    CONV = "conv"  # SuperConvK{k}BNRELU: L plain conv layers
    KXKX = "kxkx"  # SuperResK{a}K{b}: L basic residual units
    K1KXK1 = "k1kxk1"  # SuperResK1K{k}K1: L pairs of bottleneck units
    IDWE = "idwe"  # SuperResIDWE{e}K{k}: L pairs of inverted-residual depthwise units


@dataclass(frozen=True, slots=True)
class BlockType:
    """A registered super-block name and what it means.

    ``kernels`` lists the kernel sizes in the order the name writes them
    (``SuperResK1K5K1`` → ``(1, 5, 1)``); ``kernel`` is the main (spatial) kernel.
    """

    name: str
    kind: BlockKind
    kernels: tuple[int, ...]
    expansion: int | None = None

    @property
    def kernel(self) -> int:
        if self.kind is BlockKind.K1KXK1:
            return self.kernels[1]
        if self.kind is BlockKind.IDWE:
            return self.kernels[0]
        return self.kernels[0]

    @property
    def is_residual(self) -> bool:
        return self.kind is not BlockKind.CONV

    @property
    def num_args(self) -> int:
        return 4 if self.kind is BlockKind.CONV else 5


def _build_registry() -> dict[str, BlockType]:
    reg: dict[str, BlockType] = {}
    for k in (1, 3, 5, 7):
        n = f"SuperConvK{k}BNRELU"
        reg[n] = BlockType(n, BlockKind.CONV, (k,))
    # The reference registers only K3K3/K5K5/K7K7; the grammar (and DDSAR) define all nine.
    for a in (3, 5, 7):
        for b in (3, 5, 7):
            n = f"SuperResK{a}K{b}"
            reg[n] = BlockType(n, BlockKind.KXKX, (a, b))
    for k in (3, 5, 7):
        n = f"SuperResK1K{k}K1"
        reg[n] = BlockType(n, BlockKind.K1KXK1, (1, k, 1))
    for e in (1, 2, 4, 6):
        for k in (3, 5, 7):
            n = f"SuperResIDWE{e}K{k}"
            reg[n] = BlockType(n, BlockKind.IDWE, (k,), expansion=e)
    return reg


BLOCK_TYPES: dict[str, BlockType] = _build_registry()
"""Every super block the spec lists, by name."""


def smart_round(x: float, base: int | None = None) -> int:
    """Round ``x`` to a multiple of ``base`` (at least ``base``), as PlainNet's ``smart_round``.

    Python's ``round`` (banker's rounding) is used on purpose. With ``base=None`` the base is 32 if
    ``x > 256``, 16 if ``x > 128``, else 8.
    """
    if base is None:
        base = 32 if x > 256 else 16 if x > 128 else 8
    return max(base, round(x / base) * base)


@dataclass(frozen=True, slots=True)
class Block:
    """One super block. ``bottleneck`` is ``None`` exactly for ``SuperConvK{k}BNRELU`` blocks."""

    type: BlockType
    in_channels: int
    out_channels: int
    stride: int
    bottleneck: int | None
    sub_layers: int
    tag: str | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise StructureError(f"block {self.format()!r}: {problem}")

    def _problem(self) -> str | None:
        t = self.type
        if t.kind is BlockKind.CONV and self.bottleneck is not None:
            return f"{t.name} takes (in,out,stride,L) and has no bottleneck width"
        if t.kind is not BlockKind.CONV and self.bottleneck is None:
            return f"{t.name} takes (in,out,stride,btn,L) and needs a bottleneck width"
        for label, v in (
            ("in channels", self.in_channels),
            ("out channels", self.out_channels),
            ("stride", self.stride),
            ("sub_layers", self.sub_layers),
        ):
            if v < 1:
                return f"{label} must be >= 1, got {v}"
        if self.bottleneck is not None and self.bottleneck < 1:
            return f"bottleneck width must be >= 1, got {self.bottleneck}"
        if self.stride not in (1, 2):
            return f"stride must be 1 or 2, got {self.stride}"
        return None

    # -- convenience -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.type.name

    @property
    def kind(self) -> BlockKind:
        return self.type.kind

    @property
    def kernel(self) -> int:
        return self.type.kernel

    @property
    def expansion(self) -> int | None:
        return self.type.expansion

    @property
    def args(self) -> tuple[int, ...]:
        if self.bottleneck is None:
            return (self.in_channels, self.out_channels, self.stride, self.sub_layers)
        return (self.in_channels, self.out_channels, self.stride, self.bottleneck, self.sub_layers)

    def replace(self, **changes: object) -> Block:
        """Return a copy with some fields changed (validated)."""
        fields = {
            "type": self.type,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "bottleneck": self.bottleneck,
            "sub_layers": self.sub_layers,
            "tag": self.tag,
        }
        fields.update(changes)
        if isinstance(fields["type"], str):
            fields["type"] = _lookup_type(fields["type"])  # type: ignore[arg-type]
        return Block(**fields)  # type: ignore[arg-type]

    def format(self) -> str:
        args = ",".join(str(a) for a in self.args)
        if self.tag is not None:
            args = f"{self.tag}|{args}"
        return f"{self.type.name}({args})"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, text: str) -> Block:
        """Parse exactly one block, e.g. ``"SuperResK3K3(32,32,2,32,3)"``."""
        s = Structure.parse(text)
        if len(s) != 1:
            raise StructureError(f"expected exactly one block, got {len(s)} in {text!r}")
        return s[0]


_BLOCK_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*\(([^()]*)\)\s*")


@cache
def _lookup_type(name: str) -> BlockType:
    try:
        return BLOCK_TYPES[name]
    except KeyError:
        raise StructureError(
            f"unknown block type {name!r}; known: SuperConvK{{1,3,5,7}}BNRELU, "
            "SuperResK{3,5,7}K{3,5,7}, SuperResK1K{3,5,7}K1, SuperResIDWE{1,2,4,6}K{3,5,7}"
        ) from None


def _parse_block(index: int, name: str, body: str, text: str) -> Block:
    where = f"block {index} {text!r}"
    try:
        btype = BLOCK_TYPES[name]
    except KeyError:
        try:
            _lookup_type(name)
        except StructureError as e:
            raise StructureError(f"{where}: {e}") from None
        raise AssertionError("unreachable") from None
    tag: str | None = None
    if "|" in body:
        tag, _, body = body.partition("|")
        tag = tag.strip()
        if not tag:
            raise StructureError(f"{where}: empty block tag before '|'")
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != btype.num_args:
        want = "(in,out,stride,L)" if btype.num_args == 4 else "(in,out,stride,btn,L)"
        raise StructureError(
            f"{where}: {name} takes {btype.num_args} arguments {want}, got {len(parts)}"
        )
    values: list[int] = []
    for p in parts:
        if not re.fullmatch(r"[+-]?\d+", p):
            raise StructureError(f"{where}: argument {p!r} is not an integer")
        values.append(int(p))
    if btype.num_args == 4:
        cin, cout, stride, layers = values
        btn = None
    else:
        cin, cout, stride, btn, layers = values
    try:
        return Block(btype, cin, cout, stride, btn, layers, tag)
    except StructureError as e:
        msg = str(e).split(": ", 1)[-1]
        raise StructureError(f"{where}: {msg}") from None


@dataclass(frozen=True, slots=True)
class Structure(Sequence[Block]):
    """An immutable sequence of super blocks (hashable; equal iff the blocks are equal)."""

    blocks: tuple[Block, ...]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Structure:
        """Parse a structure string; raises :class:`StructureError` naming the bad block."""
        if not isinstance(text, str):
            raise StructureError(f"structure must be a string, got {type(text).__name__}")
        return _parse_cached(text)

    @classmethod
    def of(cls, blocks: Sequence[Block] | Structure | str) -> Structure:
        if isinstance(blocks, Structure):
            return blocks
        if isinstance(blocks, str):
            return cls.parse(blocks)
        return cls(tuple(blocks))

    # -- sequence protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Structure(self.blocks[i])
        return self.blocks[i]

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    # -- formatting ------------------------------------------------------------------------------
    def format(self) -> str:
        return "".join(b.format() for b in self.blocks)

    def __str__(self) -> str:
        return self.format()

    # -- derived quantities --------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Σ sub_layers over all blocks, stem included (the search's ``max_layers`` measure)."""
        return sum(b.sub_layers for b in self.blocks)

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].out_channels

    def is_chained(self) -> bool:
        """True when every block's ``in`` equals its predecessor's ``out``."""
        return all(
            self.blocks[i].in_channels == self.blocks[i - 1].out_channels
            for i in range(1, len(self.blocks))
        )

    def build_problem(self, resolution: int | None = None) -> str | None:
        """Why this structure cannot be built as a network (``None`` when it can): the first
        block must take 3 (RGB) channels, every block's ``in`` must equal its predecessor's
        ``out``, and at ``resolution`` no feature map may shrink to 0 px (``r // stride``, the
        cost model's rule)."""
        first = self.blocks[0]
        if first.in_channels != 3:
            return f"block 0 ({first.format()}) takes {first.in_channels} channels; an image has 3"
        for i in range(1, len(self.blocks)):
            prev, b = self.blocks[i - 1], self.blocks[i]
            if b.in_channels != prev.out_channels:
                return (
                    f"channel chain broken at block {i}: {b.format()} takes {b.in_channels} "
                    f"channels but block {i - 1} gives {prev.out_channels}"
                )
        if resolution is not None:
            r = int(resolution)
            for i, b in enumerate(self.blocks):
                r //= b.stride
                if r < 1:
                    return (
                        f"the feature map shrinks to 0 px at block {i} ({b.format()}) for a "
                        f"{resolution}x{resolution} input; use a larger --resolution or fewer "
                        "stride-2 blocks"
                    )
        return None

    # -- transformations -----------------------------------------------------------------------
    def replace_block(self, index: int, block: Block) -> Structure:
        blocks = list(self.blocks)
        blocks[index] = block
        return Structure(tuple(blocks))

    def rechain(self) -> Structure:
        """Set every block's ``in`` to its predecessor's ``out`` (the first block is kept)."""
        if self.is_chained():
            return self
        blocks = [self.blocks[0]]
        for b in self.blocks[1:]:
            prev = blocks[-1].out_channels
            blocks.append(b if b.in_channels == prev else b.replace(in_channels=prev))
        return Structure(tuple(blocks))

    def split(self, threshold: int = 6) -> Structure:
        """PlainNet ``split(split_layer_threshold)`` (spec §2.4).

        A residual block with ``L >= threshold`` becomes ``(in,out,s,btn,T//2)`` followed by
        ``(out,out,1,btn,L-T//2)`` of the same type; conv blocks never split.
        """
        if threshold < 1:
            raise StructureError(f"split threshold must be >= 1, got {threshold}")
        out: list[Block] = []
        changed = False
        half = threshold // 2
        for b in self.blocks:
            if b.kind is not BlockKind.CONV and b.sub_layers >= threshold and half >= 1:
                changed = True
                out.append(b.replace(sub_layers=half))
                out.append(
                    b.replace(in_channels=b.out_channels, stride=1, sub_layers=b.sub_layers - half)
                )
            else:
                out.append(b)
        return Structure(tuple(out)) if changed else self


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Structure:
    blocks: list[Block] = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].strip() == "":
            break
        m = _BLOCK_RE.match(text, pos)
        if m is None:
            snippet = text[pos : pos + 40]
            raise StructureError(
                f"block {len(blocks)}: cannot parse {snippet!r} at character {pos}; "
                "expected Name(args)"
            )
        blocks.append(_parse_block(len(blocks), m.group(1), m.group(2), m.group(0).strip()))
        pos = m.end()
    if not blocks:
        raise StructureError("empty structure string")
    return Structure(tuple(blocks))
