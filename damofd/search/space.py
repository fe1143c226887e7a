"""Search spaces of the DamoFD search (spec §2.5): ``IDW`` (500M) and ``XXBL`` (2.5G/10G/34G).

A search space proposes replacements for one block. Every candidate keeps the block's ``in`` and
``stride``; for every block type of the space it takes the cartesian product of

* ``out`` ∈ ``smart_round(clip(out·m), 8)`` for the out multipliers ``m``,
* ``btn`` ∈ ``smart_round(clip(btn·m), 8)`` for the bottleneck multipliers,
* ``L`` ∈ {L, L+1, L+2, L−1, L−2} (non-positive values dropped),

each list deduplicated. ``SuperConvK{k}BNRELU`` blocks only change ``out`` and force ``L = 1``
(IDW additionally freezes kernel-1 "fc" blocks). The stem (index 0) is never mutated by the search.

**Sampling weights (reference quirk).** The reference ``gen_search_space`` builds, for each type
``t_j`` of a group, ``lst = list(set(lst))`` after appending ``t_j``'s candidates and appends
``lst`` to its result; the next type's candidates are then appended to that *same* list object.
List ``j`` (0-based) of a group of ``n`` types therefore ends up holding the candidates of types
``t_1 .. t_min(j+2, n)``, and the caller draws uniformly from all lists concatenated. Type ``i``
(1-based) is thus drawn with weight ``#{j : min(j+2, n) >= i}``: in IDW (one group of 12) the
weights are 12, 12, 11, 10, …, 2 (``IDWE1K3`` and ``IDWE2K3`` are 6× as likely as ``IDWE6K7``);
in XXBL (two groups of 3) they are 3, 3, 2 per group. :meth:`SearchSpace.candidate_lists`
returns these lists exactly (first-appearance order where the reference iterates a ``set``,
which makes runs reproducible without changing the distribution), and
:class:`CandidateSampler` draws from them with a single ``randbelow`` call, consuming the RNG
exactly like ``random.choice`` on the concatenation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from damofd.errors import ConfigError
from damofd.search.cost import BlockKey
from damofd.search.structure import BLOCK_TYPES, Block, BlockKind, smart_round

__all__ = [
    "IDW",
    "SEARCH_SPACES",
    "XXBL",
    "CandidateSampler",
    "SearchSpace",
    "get_search_space",
    "make_randbelow",
    "randbelow",
]

Proposal = tuple[str, int, int, int, int]
"""A candidate without its input width: ``(type name, out, stride, btn or 0, sub_layers)``."""


def _dedup_desc(values: list[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values), reverse=True))


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """A block-replacement search space (one of the reference ``SearchSpace/*.py`` files)."""

    name: str
    type_groups: tuple[tuple[str, ...], ...]
    """Residual block types, grouped as in the reference (the grouping sets the draw weights)."""
    out_multipliers: tuple[float, ...]
    out_max: int | None
    btn_multipliers: tuple[float, ...]
    btn_max: int | None
    freeze_fc: bool
    """Conv blocks with kernel 1 keep their width (IDW's "fixfc")."""
    min_channels: int = 8
    round_base: int = 8

    def __post_init__(self) -> None:
        for group in self.type_groups:
            for t in group:
                if t not in BLOCK_TYPES or BLOCK_TYPES[t].kind is BlockKind.CONV:
                    raise ConfigError(f"search space {self.name!r}: bad residual type {t!r}")

    # -- value lists (reference get_select_student_*_list) ----------------------------------
    def out_channel_choices(self, out: int) -> tuple[int, ...]:
        """Candidate output widths for a block whose width is ``out`` (descending)."""
        lo, hi = self.min_channels, self.out_max
        vals = [max(lo, out * m) for m in self.out_multipliers]
        if hi is not None:
            vals = [min(hi, v) for v in vals]
        return _dedup_desc([smart_round(v, self.round_base) for v in vals])

    def bottleneck_choices(self, btn: int) -> tuple[int, ...]:
        """Candidate bottleneck widths for a block whose bottleneck is ``btn`` (descending)."""
        lo, hi = self.min_channels, self.btn_max
        vals = [max(lo, btn * m) for m in self.btn_multipliers]
        if hi is not None:
            vals = [min(hi, v) for v in vals]
        return _dedup_desc([smart_round(v, self.round_base) for v in vals])

    @staticmethod
    def sublayer_choices(sub_layers: int) -> tuple[int, ...]:
        """Candidate ``L`` values (descending, all ≥ 1)."""
        vals = [sub_layers, sub_layers + 1, sub_layers + 2, sub_layers - 1, sub_layers - 2]
        return tuple(v for v in _dedup_desc([max(0, round(v)) for v in vals]) if v > 0)

    @property
    def type_sequence(self) -> tuple[str, ...]:
        """Residual type of each length-M segment of the flattened candidate list."""
        seq: list[str] = []
        for group in self.type_groups:
            for j in range(len(group)):
                seq.extend(group[: min(j + 2, len(group))])
        return tuple(seq)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t for g in self.type_groups for t in g)

    def type_weights(self) -> dict[str, float]:
        """Probability of drawing each residual type (the aliased-list quirk, see module doc)."""
        seq = self.type_sequence
        return {t: seq.count(t) / len(seq) for t in self.types}

    # -- candidates ------------------------------------------------------------------------------
    def _conv_outs(self, block_type: str, out: int) -> tuple[int, ...]:
        if self.freeze_fc and BLOCK_TYPES[block_type].kernel == 1:
            return (out,)
        return self.out_channel_choices(out)

    def candidate_lists(self, block: Block) -> list[list[Block]]:
        """The reference ``gen_search_space(block_list, id)`` output for ``block``.

        One list per (group, type prefix); the search draws uniformly from the concatenation.
        """
        cin, stride = block.in_channels, block.stride
        if block.kind is BlockKind.CONV:
            return [
                [
                    block.replace(out_channels=o, sub_layers=1, tag=None)
                    for o in self._conv_outs(block.name, block.out_channels)
                ]
            ]
        outs = self.out_channel_choices(block.out_channels)
        layers = self.sublayer_choices(block.sub_layers)
        btns = self.bottleneck_choices(block.bottleneck or 0)
        per_type = {
            t: [
                Block(BLOCK_TYPES[t], cin, o, stride, b, n)
                for o in outs
                for n in layers
                for b in btns
            ]
            for t in self.types
        }
        lists: list[list[Block]] = []
        for group in self.type_groups:
            for j in range(len(group)):
                lists.append([b for t in group[: min(j + 2, len(group))] for b in per_type[t]])
        return lists

    def candidates(self, block: Block) -> list[Block]:
        """Distinct candidates for ``block`` (each once, no sampling weights)."""
        return list(dict.fromkeys(b for lst in self.candidate_lists(block) for b in lst))

    def sampler(self) -> CandidateSampler:
        return CandidateSampler(self)


def randbelow(rng: random.Random, n: int) -> int:
    """Uniform int in ``[0, n)`` drawing exactly like CPython's ``Random._randbelow`` (and hence
    like ``randrange(n)``, ``randint(a, a+n-1)`` and ``choice`` on a length-``n`` sequence), but
    through the public ``getrandbits``. Hot loops inline this via :func:`make_randbelow`."""
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


def make_randbelow(rng: random.Random) -> Callable[[int], int]:
    """A fast bound version of :func:`randbelow` for ``rng``."""
    getrandbits = rng.getrandbits

    def _randbelow(n: int) -> int:
        k = n.bit_length()
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return r

    return _randbelow


class CandidateSampler:
    """Draws a random replacement for a block, memoising the per-block candidate tables.

    ``propose(key, randbelow)`` returns a :data:`Proposal` (the candidate without its input
    width); the draw is uniform over the flattened :meth:`SearchSpace.candidate_lists` of that
    block and uses exactly one ``randbelow`` call (like ``random.choice`` on that list). Pass
    ``make_randbelow(rng)`` as ``randbelow``.
    """

    __slots__ = ("_by_key", "_seq", "_tables", "space")

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._seq = space.type_sequence
        self._tables: dict[tuple[str, int, int, int, int], tuple] = {}
        self._by_key: dict[BlockKey, tuple] = {}

    def _table(self, key: BlockKey) -> tuple:
        tab = self._by_key.get(key)
        if tab is not None:
            return tab
        name, _cin, out, stride, btn, sub_layers = key
        kind = BLOCK_TYPES[name].kind
        tkey = (name if kind is BlockKind.CONV else "", out, stride, btn, sub_layers)
        tab = self._tables.get(tkey)
        if tab is None:
            sp = self.space
            if kind is BlockKind.CONV:
                outs = sp._conv_outs(name, out)
                tab = (True, len(outs), name, outs, stride)
            else:
                outs = sp.out_channel_choices(out)
                layers = sp.sublayer_choices(sub_layers)
                btns = sp.bottleneck_choices(btn)
                m = len(outs) * len(layers) * len(btns)
                tab = (False, m * len(self._seq), m, outs, layers, btns, len(layers) * len(btns))
            self._tables[tkey] = tab
        self._by_key[key] = tab
        return tab

    def num_candidates(self, key: BlockKey) -> int:
        """Length of the flattened candidate list (with the reference's repetitions)."""
        return self._table(key)[1]

    def propose(self, key: BlockKey, randbelow: Callable[[int], int]) -> Proposal:
        tab = self._by_key.get(key) or self._table(key)
        if tab[0]:
            _, n, name, outs, stride = tab
            return (name, outs[randbelow(n)], stride, 0, 1)
        _, total, m, outs, layers, btns, nlb = tab
        q, rem = divmod(randbelow(total), m)
        oi, rem = divmod(rem, nlb)
        li, bi = divmod(rem, len(btns))
        return (self._seq[q], outs[oi], key[3], btns[bi], layers[li])


_IDWE_TYPES = tuple(f"SuperResIDWE{e}K{k}" for k in (3, 5, 7) for e in (1, 2, 4, 6))
_BTN_MULT = (2.5, 2, 1.5, 1.25, 1, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)

IDW = SearchSpace(
    name="idw",
    type_groups=(_IDWE_TYPES,),
    out_multipliers=(2.5, 2, 1.5, 1.25, 1),
    out_max=128,
    btn_multipliers=_BTN_MULT,
    btn_max=None,
    freeze_fc=True,
)
"""``search_space_IDW_fixfc.py``: inverted-residual depthwise blocks, outputs clipped at 128."""

XXBL = SearchSpace(
    name="xxbl",
    type_groups=(
        ("SuperResK1K3K1", "SuperResK1K5K1", "SuperResK1K7K1"),
        ("SuperResK3K3", "SuperResK5K5", "SuperResK7K7"),
    ),
    out_multipliers=(1.75, 2, 1.5, 1.25, 1, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5),
    out_max=1024,
    btn_multipliers=_BTN_MULT,
    btn_max=256,
    freeze_fc=False,
)
"""``search_space_XXBL.py``: bottleneck and basic residual blocks, out ≤ 1024, btn ≤ 256."""

SEARCH_SPACES: dict[str, SearchSpace] = {"idw": IDW, "xxbl": XXBL}


def get_search_space(name: str | SearchSpace) -> SearchSpace:
    """Look a space up by name (``idw`` / ``xxbl``, case-insensitive)."""
    if isinstance(name, SearchSpace):
        return name
    try:
        return SEARCH_SPACES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown search space {name!r}; valid names: {', '.join(SEARCH_SPACES)}"
        ) from None
