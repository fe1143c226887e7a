"""Search-rule FLOPs / params / layers (spec §2.3, §2.8, §9)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from test_search_helpers import RELEASED, structures

from damofd.errors import InputError
from damofd.search.cost import (
    CostModel,
    CostOptions,
    block_cost,
    structure_cost,
    structure_from_keys,
    structure_keys,
)
from damofd.search.structure import Block, Structure

# spec §2.8 (FLOPs at 224), §9 (FLOPs at 640, model size incl. 1000-way fc, num_layers)
EXPECTED = {
    "0.5g": (63_135_422, 515_391_200, 380_617, 6),
    "2.5g": (326_830_000, 2_668_000_000, 468_169, 19),
    "10g": (1_341_946_928, 10_954_668_800, 1_127_401, 17),
    "34g": (4_147_297_476, 33_855_489_600, 4_839_265, 20),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_released_backbones_exact(name: str) -> None:
    flops224, flops640, params, layers = EXPECTED[name]
    c = structure_cost(RELEASED[name], 224)
    assert c.flops == flops224
    assert c.params == params
    assert c.layers == layers
    assert structure_cost(RELEASED[name], 640).flops == flops640
    assert sum(b.flops for b in c.blocks) == c.flops
    assert [b.out_resolution for b in c.blocks] == [112, 56, 28, 14, 7]


def test_conv_block_by_hand() -> None:
    # ConvKX 3->8 k3 s2 at 32px: 3*8*9*32*32//4 = 55296; BN at 16px: 16*16*8 = 2048
    b = Block.parse("SuperConvK3BNRELU(3,8,2,1)")
    c = block_cost(b, 32)
    assert (c.flops, c.params, c.out_resolution) == (57_344, 3 * 8 * 9 + 8, 16)
    s = structure_cost("SuperConvK3BNRELU(3,8,2,2)", 32)
    # second layer: 8*8*9*16*16 + 16*16*8
    assert s.flops == 57_344 + 8 * 8 * 9 * 256 + 256 * 8
    assert s.params == 224 + 8 * 8 * 9 + 8 + 8 * 1000 + 1  # classifier bias counted as 1


def test_projection_quirk_by_hand() -> None:
    # SuperResK3K3(8,16,2,8,1) at 16px: conv 8*8*9*256//4 + BN 64*8 + conv 8*16*9*64 + BN 64*16
    body = 36_864 + 512 + 73_728 + 1_024
    b = Block.parse("SuperResK3K3(8,16,2,8,1)")
    quirk = block_cost(b, 16)
    exact = block_cost(b, 16, CostOptions.exact())
    assert quirk.flops == body + 8 * 16 * 4**2 + 4**2 * 16  # ρ = (16/2)/2 = 4: under-counted
    assert exact.flops == body + (8 * 16 + 16) * 8**2  # ρ = 8
    assert quirk.params == exact.params == 8 * 8 * 9 + 8 + 8 * 16 * 9 + 16 + 8 * 16 + 16


def test_fractional_flops_under_quirk() -> None:
    # at 7px a stride-2 projection is counted at (3/2)^2 = 2.25: (2*1 + 1) * 2.25 = 6.75
    c = block_cost(Block.parse("SuperResK3K3(2,1,2,8,1)"), 7)
    assert c.flops - int(c.flops) == 0.75
    assert structure_cost("SuperResK3K3(2,1,2,8,1)", 7).to_dict()["flops"] == c.flops


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quirks_off(name: str) -> None:
    q = structure_cost(RELEASED[name], 224)
    e = structure_cost(RELEASED[name], 224, CostOptions.exact())
    assert e.flops > q.flops  # stride-2 projections are 4x under-counted by the quirk
    assert e.params == q.params + 999  # classifier bias: 1000 instead of 1
    assert structure_cost(RELEASED[name], 224, CostOptions(num_classes=0)).params == (
        q.params - (1000 * q_last(name) + 1)
    )


def q_last(name: str) -> int:
    return Structure.parse(RELEASED[name]).out_channels


def test_bad_resolution() -> None:
    with pytest.raises(InputError, match="resolution"):
        structure_cost(RELEASED["0.5g"], 0)
    with pytest.raises(InputError, match="num_classes"):
        CostOptions(num_classes=-1)


@settings(max_examples=60, deadline=None)
@given(structures(min_blocks=1, max_blocks=6))
def test_cost_model_matches_structure_cost(s: Structure) -> None:
    model = CostModel()
    for r in (224, 97):
        c = structure_cost(s, r)
        assert model.totals(structure_keys(s), r) == (c.flops, c.params, c.layers)
    assert structure_from_keys(structure_keys(s)) == Structure(
        tuple(b.replace(tag=None) for b in s)
    )
