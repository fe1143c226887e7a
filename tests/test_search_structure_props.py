"""Property tests of structure strings (damofd.search.structure): round-trip, split, re-chain."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_search_helpers import RELEASED, structures

from damofd.search.cost import structure_cost, structure_keys
from damofd.search.evolution import _parse_keys_fast, format_keys
from damofd.search.structure import BlockKind, Structure


@settings(max_examples=80, deadline=None)
@given(structures(min_blocks=1, max_blocks=7, chained=False, tags=True))
def test_parse_format_round_trip(s: Structure) -> None:
    text = s.format()
    assert Structure.parse(text) == s
    assert Structure.parse(text).format() == text
    untagged = Structure(tuple(b.replace(tag=None) for b in s))
    assert format_keys(structure_keys(s)) == untagged.format()
    assert _parse_keys_fast(untagged.format()) == structure_keys(s)


@settings(max_examples=60, deadline=None)
@given(structures(min_blocks=1, max_blocks=6), st.integers(1, 9))
def test_split(s: Structure, threshold: int) -> None:
    out = s.split(threshold)
    assert out.is_chained() == s.is_chained()
    assert out.out_channels == s.out_channels
    half = threshold // 2
    n_split = sum(
        1 for b in s if b.kind is not BlockKind.CONV and b.sub_layers >= threshold and half >= 1
    )
    assert len(out) == len(s) + n_split
    assert out.num_layers == s.num_layers  # split keeps every layer (L = T//2 + (L - T//2))
    # the output resolution is unchanged: the second half always has stride 1
    assert structure_cost(out, 224).blocks[-1].out_resolution == (
        structure_cost(s, 224).blocks[-1].out_resolution
    )
    if n_split == 0:
        assert out is s


def test_split_released_34g() -> None:
    s = Structure.parse(RELEASED["34g"]).split(6)
    assert len(s) == 6  # the released 34G cannot come out of the 5-block search (spec §2.8)
    assert s[2].format() == "SuperResK1K3K1(224,488,2,40,3)"
    assert s[3].format() == "SuperResK1K3K1(488,488,1,40,3)"


@settings(max_examples=60, deadline=None)
@given(structures(min_blocks=2, max_blocks=6, chained=False))
def test_rechain(s: Structure) -> None:
    r = s.rechain()
    assert r.is_chained()
    assert r[0] == s[0]
    assert [b.out_channels for b in r] == [b.out_channels for b in s]
    assert r.rechain() is r
