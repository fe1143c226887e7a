"""Evolutionary search: budgets, mutation invariants, determinism, checkpoints, proxies."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_search_helpers import RELEASED, SEEDS

from damofd.errors import ConfigError
from damofd.search.cost import structure_cost, structure_from_keys, structure_keys
from damofd.search.evolution import STATE_FILE, EvolutionSearch, SearchConfig
from damofd.search.space import get_search_space, make_randbelow
from damofd.search.structure import Structure


class RecordingScorer:
    """Wraps the search's scorer and records every structure it scores."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.scored: list = []

    def __call__(self, keys, flops, params, rng, iteration):
        self.scored.append(keys)
        return self.inner(keys, flops, params, rng, iteration)

    def stages(self, keys):
        return self.inner.stages(keys)


def _check_budgets(cfg: SearchConfig, keys) -> None:
    s = structure_from_keys(keys)
    init = Structure.parse(cfg.init)
    c = structure_cost(s, cfg.resolution, cfg.cost_options)
    assert len(s) == 5
    assert s.is_chained()
    assert s[0] == init[0]  # the stem is never mutated
    assert all(b.stride == ib.stride for b, ib in zip(s, init))
    assert c.flops <= cfg.budget_flops
    assert c.layers <= cfg.max_layers
    if cfg.budget_params is not None:
        assert c.params <= cfg.budget_params


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("damofd-0.5g", {}),
        ("damofd-0.5g", {"dedup": False, "proposals": 1, "budget_params": 370_000}),
        ("damofd-2.5g", {"budget_flops": 250e6}),
        ("damofd-34g", {"max_layers": 16}),
    ],
)
def test_every_accepted_candidate_respects_the_budgets(preset: str, overrides: dict) -> None:
    cfg = SearchConfig.from_preset(preset, iterations=1500, population=64, seed=1, **overrides)
    search = EvolutionSearch(cfg)
    rec = search.scorer = RecordingScorer(search.scorer)
    res = search.run()
    assert res.accepted == len(rec.scored) > 50
    for keys in rec.scored:
        _check_budgets(cfg, keys)
    assert len({k for k in rec.scored}) == len(rec.scored) or not cfg.dedup
    scores = [c.score for c in res.top_k]
    assert scores == sorted(scores, reverse=True)
    assert len({c.structure for c in res.top_k}) == len(res.top_k) == cfg.top_k
    assert res.best is not None and res.best.score == max(search.pop_scores)
    assert res.best.stages is not None and len(res.best.stages) == 5


def test_faithful_mode_counts_rejections_as_iterations() -> None:
    cfg = SearchConfig.from_preset("damofd-0.5g", iterations=800, dedup=False, proposals=1)
    res = EvolutionSearch(cfg).run()
    rejected = sum(v for k, v in res.stats.items() if k.startswith("rejected_"))
    assert res.accepted + rejected == 800
    assert res.stats["exhausted"] == rejected


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(("0.5g", "2.5g", "10g")), st.integers(0, 2**31), st.sampled_from((1, 2)))
def test_mutation_invariants(name: str, seed: int, replaces: int) -> None:
    preset = {"0.5g": "damofd-0.5g", "2.5g": "damofd-2.5g", "10g": "damofd-10g"}[name]
    cfg = SearchConfig.from_preset(preset, allow_init_over_budget=True)
    search = EvolutionSearch(cfg)
    space = get_search_space(cfg.space)
    parent = structure_keys(Structure.parse(RELEASED[name]))
    child = search._mutate(parent, replaces, make_randbelow(random.Random(seed)))
    assert len(child) == len(parent) == 5
    assert child[0] == parent[0]  # stem untouched
    s = structure_from_keys(child)
    assert s.is_chained()
    changed = [
        i for i in range(5) if (child[i][0], *child[i][2:]) != (parent[i][0], *parent[i][2:])
    ]
    assert 1 <= len(changed) <= replaces or changed == []
    for i in changed:
        assert child[i][0] in space.types
        assert child[i][3] == parent[i][3]  # stride kept


def test_seeded_and_no_global_random_state() -> None:
    cfg = SearchConfig.from_preset("damofd-0.5g", iterations=1200, population=64, seed=5)
    random.seed(123)
    before = random.getstate()
    a = EvolutionSearch(cfg).run()
    assert random.getstate() == before
    b = EvolutionSearch(cfg).run()
    c = EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", iterations=1200, seed=6)).run()
    key = lambda r: ([x.to_dict() for x in r.top_k], r.stats, r.history)  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_init_checks() -> None:
    with pytest.raises(ConfigError, match=r"over budget: FLOPs@224 380,645,328 > budget 300,000,000"
                       r" \(over by 80,645,328, \+26\.9%\)"):  # fmt: skip
        EvolutionSearch(SearchConfig.from_preset("damofd-2.5g", budget_flops=300e6,
                                                 allow_init_over_budget=False))  # fmt: skip
    with pytest.raises(ConfigError, match=r"layers 5 > budget 4 \(over by 1, \+25\.0%\)"):
        EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", max_layers=4))
    # the official 2.5G/34G seeds are over budget: allowed for the presets only
    EvolutionSearch(SearchConfig.from_preset("damofd-34g"))
    with pytest.raises(ConfigError, match="over budget"):
        EvolutionSearch(SearchConfig.from_preset("damofd-34g", init=SEEDS["34g"]))
    four = Structure.parse(SEEDS["0.5g"])[:4].format()
    with pytest.raises(ConfigError, match=r"has 4 blocks.*exactly 5"):
        EvolutionSearch(SearchConfig(init=four))
    with pytest.raises(ConfigError, match=r"valid presets: damofd-0\.5g, damofd-2\.5g"):
        SearchConfig.from_preset("damofd-1g")
    with pytest.raises(ConfigError, match="valid proxies: ddsar, zen"):
        SearchConfig(init=SEEDS["0.5g"], proxy="nope")
    with pytest.raises(ConfigError, match="population"):
        SearchConfig(init=SEEDS["0.5g"], population=0)


def test_checkpoint_resume_in_process(tmp_path: Path) -> None:
    cfg = SearchConfig.from_preset("damofd-0.5g", iterations=3000, population=128, seed=2)
    full = EvolutionSearch(cfg, tmp_path / "a", checkpoint_every=400).run()
    part = EvolutionSearch(cfg, tmp_path / "b", checkpoint_every=400)
    part.run(until=1700)  # stops after a checkpoint at 1600 and writes one at 1700
    state = json.loads((tmp_path / "b" / STATE_FILE).read_text())
    assert state["iteration"] == 1700
    resumed = EvolutionSearch.resume(tmp_path / "b", checkpoint_every=400)
    assert resumed.iteration == 1700 and len(resumed.seen) == len(part.seen)
    res = resumed.run()
    for r in (full, res):
        assert r.finished and r.iterations_done == 3000
    assert [c.to_dict() for c in res.top_k] == [c.to_dict() for c in full.top_k]
    assert res.stats == full.stats and res.history == full.history
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["best"]["structure"] == full.best.structure.format()
    assert (tmp_path / "b" / "best_structure.txt").read_text().strip() == report["best"][
        "structure"
    ]
    # extending a finished search continues it
    more = EvolutionSearch.resume(tmp_path / "b", iterations=3500).run()
    assert more.iterations_done == 3500 and more.accepted > res.accepted


def test_latency_budget_with_injected_timer() -> None:
    cfg = SearchConfig.from_preset("damofd-0.5g", iterations=600, budget_latency_ms=55.0)

    def fake_latency(s: Structure) -> float:  # deterministic stand-in: 1 ms per MFLOP
        return structure_cost(s).flops / 1e6

    search = EvolutionSearch(cfg, latency_fn=fake_latency)
    rec = search.scorer = RecordingScorer(search.scorer)
    res = search.run()
    assert res.stats["rejected_latency"] > 0
    assert all(fake_latency(structure_from_keys(k)) <= 55.0 for k in rec.scored)


def test_measured_latency_and_torch_proxy_search() -> None:
    pytest.importorskip("torch")
    from damofd.search.evolution import measure_latency_ms

    ms = measure_latency_ms(RELEASED["0.5g"], 64, warmup=1, repeats=1, num_threads=1)
    assert ms > 0 and math.isfinite(ms)
    cfg = SearchConfig.from_preset(
        "damofd-0.5g", proxy="synflow", resolution=64, population=2, iterations=2, seed=0,
        budget_flops=65e6 * (64 / 224) ** 2 * 1.1,
    )  # fmt: skip
    res = EvolutionSearch(cfg).run()
    assert res.accepted >= 1 and res.stats["failed"] == 0
    assert all(math.isfinite(c.score) for c in res.top_k)
    assert res.best is not None and res.best.stages is None


class FailingScorer:
    """A scorer that raises for its first ``fail_first`` calls (all calls when None)."""

    def __init__(self, inner, fail_first: int | None = None) -> None:
        self.inner, self.fail_first, self.calls = inner, fail_first, 0

    def __call__(self, keys, flops, params, rng, iteration):
        self.calls += 1
        if self.fail_first is None or self.calls <= self.fail_first:
            raise RuntimeError("proxy exploded")
        return self.inner(keys, flops, params, rng, iteration)

    def stages(self, keys):
        return self.inner.stages(keys)


def test_search_aborts_when_the_proxy_never_scores(tmp_path: Path) -> None:
    from damofd.search.evolution import LOG_FILE, MAX_INITIAL_FAILURES

    cfg = SearchConfig.from_preset("damofd-0.5g", iterations=100, population=16)
    search = EvolutionSearch(cfg, tmp_path / "s")
    search.scorer = FailingScorer(search.scorer)
    with pytest.raises(ConfigError, match=r"ddsar proxy failed on all of the first 8 candidates "
                       r"\(last: RuntimeError: proxy exploded\)"):  # fmt: skip
        search.run()
    assert search.scorer.calls == MAX_INITIAL_FAILURES == 8  # stopped at once, not at -9999
    assert "search aborted" in (tmp_path / "s" / LOG_FILE).read_text()
    # a search shorter than that fails at its end too instead of reporting a -9999 "best"
    short = EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", iterations=3))
    short.scorer = FailingScorer(short.scorer)
    with pytest.raises(ConfigError, match="first 3 candidates"):
        short.run()
    # failures after (or between) successes keep the reference behaviour: score -9999, go on
    late = EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", iterations=40, population=16))
    late.scorer = FailingScorer(late.scorer, fail_first=MAX_INITIAL_FAILURES - 1)
    res = late.run()
    assert res.stats["failed"] == MAX_INITIAL_FAILURES - 1 and res.best.score > 0


def test_unusable_device_fails_before_the_search() -> None:
    with pytest.raises(ConfigError, match="device 'foo' is not a torch device"):
        EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", proxy="zen", device="foo"))
    # DDSAR never touches the device
    EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", device="foo"))
