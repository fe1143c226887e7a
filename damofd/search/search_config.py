"""What determines an evolutionary search (:class:`SearchConfig`) and what it returns
(:class:`Candidate`, :class:`SearchResult`); the search itself is
:class:`damofd.search.evolution.EvolutionSearch`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from damofd.errors import ConfigError
from damofd.search.cost import CostOptions, StructureCost
from damofd.search.ddsar import DEFAULT_ALPHA, DEFAULT_STAGE_WEIGHTS, check_weights
from damofd.search.presets import get_preset
from damofd.search.scoring import check_proxy
from damofd.search.space import get_search_space
from damofd.search.structure import Structure
from damofd.typed_config import typed_kwargs

__all__ = ["Candidate", "SearchConfig", "SearchResult"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search's result (run-time knobs such as the checkpoint
    interval or the progress bar are arguments of :class:`EvolutionSearch` instead).

    ``dedup`` and ``proposals`` select the improved default (True, 8) or the reference algorithm
    (False, 1); ``proj_double_stride``/``linear_bias_as_one`` are the cost quirks of
    :class:`~damofd.search.cost.CostOptions`; ``allow_init_over_budget`` lets the search start
    from an ``init`` that exceeds the budgets (the official 2.5G and 34G seeds do).

    Budgets are upper bounds under the search rules of :mod:`damofd.search.cost` at
    ``resolution`` (FLOPs, params incl. the ``num_classes``-way classifier, Σ sub_layers);
    ``budget_latency_ms`` is measured on the CPU (or ``device``) with the torch MasterNet.
    """

    init: str
    space: str = "idw"
    budget_flops: float | None = None
    budget_params: float | None = None
    max_layers: int | None = None
    budget_latency_ms: float | None = None
    resolution: int = 224
    population: int = 512
    iterations: int = 96_000
    seed: int = 0
    alpha: float = DEFAULT_ALPHA
    stage_weights: tuple[float, ...] = DEFAULT_STAGE_WEIGHTS
    proxy: str = "ddsar"
    top_k: int = 10
    dedup: bool = True
    proposals: int = 8
    split_threshold: int = 6
    num_classes: int = 1000
    proj_double_stride: bool = True
    linear_bias_as_one: bool = True
    allow_init_over_budget: bool = False
    latency_batch_size: int = 1
    latency_threads: int = 1
    proxy_batch_size: int = 16
    device: str = "cpu"
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", get_search_space(self.space).name)
        object.__setattr__(self, "proxy", check_proxy(self.proxy))
        object.__setattr__(self, "stage_weights", check_weights(self.stage_weights))
        for name in (
            "population",
            "iterations",
            "top_k",
            "split_threshold",
            "resolution",
            "proposals",
            "latency_batch_size",
            "latency_threads",
            "proxy_batch_size",
        ):
            v = getattr(self, name)
            lo = 0 if name == "iterations" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("budget_flops", "budget_params", "budget_latency_ms"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if self.max_layers is not None and self.max_layers < 1:
            raise ConfigError(f"max_layers must be >= 1, got {self.max_layers}")
        if not math.isfinite(self.alpha):
            raise ConfigError(f"alpha must be a finite number, got {self.alpha!r}")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SearchConfig:
        """The official script ``name`` (see :mod:`damofd.search.presets`) with overrides.

        Overriding ``init`` resets ``allow_init_over_budget`` to False unless it is overridden too.
        """
        p = get_preset(name)
        values: dict[str, Any] = {
            "init": p.init,
            "space": p.space,
            "budget_flops": p.budget_flops,
            "max_layers": p.max_layers,
            "resolution": p.resolution,
            "population": p.population,
            "iterations": p.iterations,
            "alpha": p.alpha,
            "proxy": p.proxy,
            "allow_init_over_budget": p.allow_init_over_budget,
            "preset": p.name,
        }
        if "init" in overrides and "allow_init_over_budget" not in overrides:
            values["allow_init_over_budget"] = False
        given = typed_kwargs(cls, overrides, what="search option")
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)

    @property
    def cost_options(self) -> CostOptions:
        return CostOptions(self.proj_double_stride, self.linear_bias_as_one, self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_weights"] = list(self.stage_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        """From :meth:`to_dict` output (or any mapping of option names to plain values)."""
        return cls(**typed_kwargs(cls, d, what="search option in the saved config"))


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A scored structure with its search-rule cost (and per-block SAR for DDSAR)."""

    structure: Structure
    score: float
    cost: StructureCost
    stages: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"structure": self.structure.format(), "score": self.score}
        if self.stages is not None:
            d["stages"] = list(self.stages)
        c = self.cost.to_dict()
        d.update(flops=c["flops"], params=c["params"], layers=c["layers"])
        return d


@dataclass(frozen=True)
class SearchResult:
    """Outcome (or current state) of a search."""

    config: SearchConfig
    best: Candidate | None
    top_k: tuple[Candidate, ...]
    iterations_done: int
    accepted: int
    stats: dict[str, int]
    wall_time_s: float
    finished: bool
    history: tuple[tuple[int, int, float | None], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        rate = self.iterations_done / self.wall_time_s if self.wall_time_s > 0 else None
        return {
            "finished": self.finished,
            "best": self.best.to_dict() if self.best else None,
            "top_k": [c.to_dict() for c in self.top_k],
            "iterations_done": self.iterations_done,
            "accepted": self.accepted,
            "stats": dict(self.stats),
            "wall_time_s": round(self.wall_time_s, 3),
            "iterations_per_s": round(rate, 1) if rate else None,
            "history": [list(h) for h in self.history],
            "config": self.config.to_dict(),
        }
