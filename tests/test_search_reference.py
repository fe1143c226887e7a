"""damofd's search against the independent literal re-implementation in benchmarks/.

``benchmarks/reference_search.py`` expands every super block into PlainNet basic layers, scores
DDSAR from the block strings with regular expressions and runs the released evolution loop on
strings with ``random.choice``/``randint``; it shares no code with damofd.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
from hypothesis import given, settings
from test_search_helpers import RELEASED, SEEDS, structures

from damofd.search.cost import structure_cost
from damofd.search.ddsar import ddsar
from damofd.search.evolution import EvolutionSearch, SearchConfig, format_keys
from damofd.search.structure import Structure
from damofd.testing import repo_root


@pytest.fixture(scope="module")
def ref():
    path = repo_root() / "benchmarks" / "reference_search.py"
    if not path.exists():
        pytest.skip(f"{path} not found")
    spec = importlib.util.spec_from_file_location("reference_search", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text", [*RELEASED.values(), *SEEDS.values()])
def test_costs_and_ddsar_match(ref, text: str) -> None:
    net = ref.RefMasterNet(text)
    for r in (224, 640):
        c = structure_cost(text, r)
        assert (c.flops, c.params, c.layers) == (net.get_FLOPs(r), net.get_model_size(),
                                                 net.get_num_layers())  # fmt: skip
        d = ddsar(text, r)
        assert d.score == net.forward_ddsar_score(r)
        assert list(d.stages) == net.compute_sar_score(r)


@settings(max_examples=30, deadline=None)
@given(structures(min_blocks=5, max_blocks=5, min_channels=3))
def test_random_structures_match(ref, s: Structure) -> None:
    text = s.format()
    net = ref.RefMasterNet(text)
    c = structure_cost(s, 160)
    assert (c.flops, c.params, c.layers) == (net.get_FLOPs(160), net.get_model_size(),
                                             net.get_num_layers())  # fmt: skip
    d = ddsar(s, 160, alpha=0.25)
    ref_stages = net.compute_sar_score(160, 0.25)
    assert all(math.isclose(a, b, rel_tol=0, abs_tol=1e-12) for a, b in zip(d.stages, ref_stages))
    assert net.split(6) == s.split(6).format()


@pytest.mark.parametrize(("preset", "iterations"), [("damofd-0.5g", 300), ("damofd-2.5g", 120)])
def test_faithful_mode_is_the_reference_algorithm(ref, preset: str, iterations: int) -> None:
    """Draw for draw: same population (order included) and scores after the same iterations."""
    space, budget, layers, init = ref.PRESETS[preset]
    structures_, scores = ref.evolution_search(
        init, space, budget_flops=budget, max_layers=layers, iterations=iterations,
        population_size=12, seed=11,
    )  # fmt: skip
    cfg = SearchConfig.from_preset(
        preset, iterations=iterations, population=12, seed=11, dedup=False, proposals=1
    )
    search = EvolutionSearch(cfg)
    res = search.run()
    assert res.accepted > cfg.population + 5  # past the init phase, population trimmed
    assert [format_keys(k) for k in search.pop_keys] == structures_
    assert search.pop_scores == scores
