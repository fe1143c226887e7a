"""Search spaces IDW / XXBL (spec §2.5) and the candidate sampler."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from damofd.errors import ConfigError
from damofd.search.cost import block_key
from damofd.search.space import IDW, XXBL, get_search_space, make_randbelow, randbelow
from damofd.search.structure import BLOCK_TYPES, Block, BlockKind


def test_value_lists() -> None:
    # IDW out: 32 * {2.5, 2, 1.5, 1.25, 1}, clipped to [8, 128]
    assert IDW.out_channel_choices(32) == (80, 64, 48, 40, 32)
    assert IDW.out_channel_choices(96) == (128, 120, 96)
    # btn 8: {20, 16, 12, 10, 8, 8, ...} -> smart_round(·, 8) uses banker's rounding: 20 -> 16
    assert IDW.bottleneck_choices(8) == (16, 8)
    assert IDW.bottleneck_choices(512) == (1280, 1024, 768, 640, 512, 408, 344, 256, 208)
    assert XXBL.bottleneck_choices(512) == (256, 208)
    assert XXBL.out_channel_choices(1024) == (1024, 816, 680, 512, 408)
    assert IDW.sublayer_choices(1) == (3, 2, 1)
    assert IDW.sublayer_choices(4) == (6, 5, 4, 3, 2)


def test_type_weights_follow_the_aliased_lists() -> None:
    # list j of a group holds types t1..t_min(j+2, n): IDW weights 12, 12, 11, ..., 2 (of 89)
    w = IDW.type_weights()
    assert [round(w[t] * 89) for t in IDW.types] == [12, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2]
    assert [round(XXBL.type_weights()[t] * 16) for t in XXBL.types] == [3, 3, 2, 3, 3, 2]
    b = Block.parse("SuperResIDWE1K3(32,32,2,8,1)")
    lists = IDW.candidate_lists(b)
    assert [len({c.name for c in lst}) for lst in lists] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12]
    m = 5 * 3 * 2  # outs x layers x btns
    assert sum(len(lst) for lst in lists) == 89 * m
    assert len(IDW.candidates(b)) == 12 * m


def test_conv_blocks() -> None:
    fc = Block.parse("SuperConvK1BNRELU(128,256,1,1)")
    assert [c.format() for c in IDW.candidates(fc)] == ["SuperConvK1BNRELU(128,256,1,1)"]
    k3 = Block.parse("SuperConvK3BNRELU(3,32,2,2)")
    outs = [c.out_channels for c in XXBL.candidates(k3)]
    assert outs == list(XXBL.out_channel_choices(32))
    assert all(c.sub_layers == 1 and c.in_channels == 3 for c in XXBL.candidates(k3))


def test_unknown_space() -> None:
    with pytest.raises(ConfigError, match="idw, xxbl"):
        get_search_space("nope")
    assert get_search_space("XXBL") is XXBL


_res_blocks = st.builds(
    lambda name, cin, out, stride, btn, n: Block(BLOCK_TYPES[name], cin, out, stride, btn, n),
    st.sampled_from(sorted(t for t, bt in BLOCK_TYPES.items() if bt.kind is not BlockKind.CONV)),
    st.integers(3, 1024),
    st.integers(8, 1024),
    st.sampled_from((1, 2)),
    st.integers(8, 512),
    st.integers(1, 7),
)


@settings(max_examples=40, deadline=None)
@given(_res_blocks, st.sampled_from(("idw", "xxbl")))
def test_candidates_keep_in_and_stride(block: Block, space_name: str) -> None:
    space = get_search_space(space_name)
    cands = space.candidates(block)
    assert cands
    for c in cands:
        assert c.in_channels == block.in_channels and c.stride == block.stride
        assert c.name in space.types
        assert c.sub_layers >= 1 and abs(c.sub_layers - block.sub_layers) <= 2
        assert c.out_channels % 8 == 0 and c.out_channels >= 8
        assert c.bottleneck is not None and c.bottleneck % 8 == 0 and c.bottleneck >= 8
        assert c.out_channels <= space.out_max
        if space.btn_max is not None:
            assert c.bottleneck <= space.btn_max


@settings(max_examples=25, deadline=None)
@given(_res_blocks, st.sampled_from(("idw", "xxbl")), st.integers(0, 2**32))
def test_sampler_equals_random_choice(block: Block, space_name: str, seed: int) -> None:
    """propose() draws like random.choice over the reference's flattened candidate lists."""
    space = get_search_space(space_name)
    flat = [c for lst in space.candidate_lists(block) for c in lst]
    sampler = space.sampler()
    assert sampler.num_candidates(block_key(block)) == len(flat)
    ref, fast = random.Random(seed), random.Random(seed)
    draw = make_randbelow(fast)
    for _ in range(5):
        want = ref.choice(flat)
        name, out, stride, btn, n = sampler.propose(block_key(block), draw)
        assert (name, out, stride, btn, n) == (
            want.name,
            want.out_channels,
            want.stride,
            want.bottleneck,
            want.sub_layers,
        )
    assert ref.getstate() == fast.getstate()


def test_randbelow_matches_randrange() -> None:
    a, b = random.Random(7), random.Random(7)
    for n in (1, 2, 3, 5, 17, 1000, 2**40 + 3):
        assert randbelow(a, n) == b.randrange(n)
        assert randbelow(a, n) == b.randint(0, n - 1)
