"""DDSAR against the reference values of spec §1.4 (α = 0.005, 0.25, 0)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from test_search_helpers import RELEASED, SEEDS, structures

from damofd.errors import InputError
from damofd.search.cost import structure_keys
from damofd.search.ddsar import (
    DEFAULT_STAGE_WEIGHTS,
    README_ALPHA,
    SARModel,
    ddsar,
    sar_terms,
)
from damofd.search.structure import Structure

# spec §1.4: (structure, R) -> (DDSAR, SAR stage 0..4), printed with 6 decimals
TABLE = [
    ("0.5g", RELEASED, 224, 9.335759, (2.493377, 12.050961, 11.260682, 10.461053, 8.851641)),
    ("2.5g", RELEASED, 224, 11.132108, (11.297862, 12.436394, 11.099835, 10.032554, 9.338911)),
    ("10g", RELEASED, 224, 12.041123, (11.639607, 14.012801, 12.719794, 10.887201, 7.901008)),
    ("34g", RELEASED, 224, 12.436183, (11.639607, 14.235946, 13.027277, 11.348477, 9.650107)),
    ("0.5g", RELEASED, 640, 11.047753, (2.655595, 14.150550, 13.360217, 12.560473, 10.950466)),
    ("2.5g", RELEASED, 640, 13.231554, (13.397376, 14.535998, 13.199347, 12.131828, 11.437934)),
    ("10g", RELEASED, 640, 14.140499, (13.739159, 16.112435, 14.819405, 12.986695, 9.998529)),
    ("34g", RELEASED, 640, 14.535739, (13.739159, 16.335583, 15.126899, 13.448027, 11.749301)),
    ("0.5g", SEEDS, 224, 9.176269, (2.493377, 11.664961, 11.453588, 9.931812, 8.769307)),
    ("2.5g", SEEDS, 224, 10.804943, (11.297862, 12.298268, 10.733496, 9.512686, 8.291809)),
    ("10g", SEEDS, 224, 9.414525, (2.493377, 12.846361, 11.567223, 9.882682, 7.766440)),
    ("34g", SEEDS, 224, 11.440296, (11.639607, 13.072451, 11.806152, 10.118371, 8.099682)),
]
ALPHA_025 = {"0.5g": 13.177359, "2.5g": 18.060708, "10g": 22.037123, "34g": 22.799683}
ALPHA_0 = {"0.5g": 9.257359, "2.5g": 10.990708, "10g": 11.837123, "34g": 12.224683}
HALF_ULP_6 = 5e-7 + 1e-12  # the table's values are rounded to 6 decimals


@pytest.mark.parametrize(("name", "table", "res", "score", "stages"), TABLE)
def test_reference_table(name: str, table: dict, res: int, score: float, stages: tuple) -> None:
    r = ddsar(table[name], res)
    assert abs(r.score - score) <= HALF_ULP_6
    assert len(r.stages) == 5
    for got, want in zip(r.stages, stages):
        assert abs(got - want) <= HALF_ULP_6
    assert math.isclose(r.score, sum(w * s for w, s in zip(DEFAULT_STAGE_WEIGHTS, r.stages)))


@pytest.mark.parametrize("name", sorted(ALPHA_025))
def test_alpha_rows(name: str) -> None:
    s = RELEASED[name]
    assert abs(ddsar(s, 224, alpha=README_ALPHA).score - ALPHA_025[name]) <= HALF_ULP_6
    assert abs(ddsar(s, 224, alpha=0.0).score - ALPHA_0[name]) <= HALF_ULP_6
    # α enters linearly through the kernel sums T3: exact to 1e-9 between all three α
    t3 = [t.kernel_sum for t in sar_terms(s, 224)]
    k = sum(w * t for w, t in zip(DEFAULT_STAGE_WEIGHTS, t3))
    base = ddsar(s, 224, alpha=0.0).score
    for a in (0.005, 0.25):
        assert abs(ddsar(s, 224, alpha=a).score - (base + a * k)) < 1e-9


def test_kernel_sums_and_stem() -> None:
    assert [t.kernel_sum for t in sar_terms(RELEASED["0.5g"])] == [3, 10, 18, 36, 14]
    # a 1-layer stem contributes E(3) = 0: SAR_0 = ln(ln(3 R^2)) + 3α
    for r in (224, 640):
        sar0 = ddsar(RELEASED["0.5g"], r).stages[0]
        assert abs(sar0 - (math.log(math.log(3 * r * r)) + 3 * 0.005)) < 1e-12
    hs = [t.h_out for t in sar_terms(RELEASED["0.5g"], 224)]
    assert hs == [112.0, 56.0, 28.0, 14.0, 7.0]


def test_resolution_shift() -> None:
    # spec §1.2: 2.5G at 640 vs 224 differs by 2.099446 (not exactly 2 ln(640/224))
    d = ddsar(RELEASED["2.5g"], 640).score - ddsar(RELEASED["2.5g"], 224).score
    assert abs(d - 2.099446) <= 1e-6  # difference of two 6-decimal values
    assert abs(2 * math.log(640 / 224) - 2.099644) <= HALF_ULP_6


def test_block_count_rules() -> None:
    four = Structure.parse(RELEASED["0.5g"])[:4]
    with pytest.raises(InputError, match=r"at least 5 blocks.*has 4"):
        ddsar(four)
    six = Structure((*Structure.parse(RELEASED["0.5g"]).blocks, four[1].replace(in_channels=160)))
    assert ddsar(six).score == ddsar(RELEASED["0.5g"]).score  # blocks after the 5th are ignored
    assert SARModel().score(structure_keys(six)) is None  # the search rejects ≠ 5 blocks


def test_weights_are_parameters() -> None:
    s = RELEASED["10g"]
    r = ddsar(s, weights=(1, 0, 0, 0, 0))
    assert r.score == r.stages[0]
    r3 = ddsar(s, weights=(0.5, 0.5, 0.0))
    assert len(r3.stages) == 3
    with pytest.raises(InputError):
        ddsar(s, weights=())
    with pytest.raises(InputError):
        ddsar(s, resolution=0)


@settings(max_examples=60, deadline=None)
@given(structures(min_blocks=5, max_blocks=5, min_channels=3))
def test_sar_model_matches_ddsar(s: Structure) -> None:
    for alpha in (0.005, 0.25):
        model = SARModel(160, alpha)
        r = ddsar(s, 160, alpha)
        assert model.score(structure_keys(s)) == r.score
        assert model.stages(structure_keys(s)) == r.stages


def test_undefined_for_tiny_widths() -> None:
    bad = "SuperConvK3BNRELU(3,1,2,1)SuperConvK3BNRELU(1,1,2,3)" + RELEASED["0.5g"][27:].replace(
        "(32,32,2,8,1)", "(1,32,2,8,1)", 1
    )
    with pytest.raises(InputError, match=r"undefined.*below d0 = 3"):
        ddsar(bad)
