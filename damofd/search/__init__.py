"""The search stage: structure strings, search-rule costs, DDSAR and other zero-shot proxies,
search spaces, the evolutionary search and its presets.

Everything analytic (costs, DDSAR, the search itself) is pure Python and never imports torch;
the torch parts (:func:`compute_torch_proxy`, and :class:`MasterNet`, re-exported from
:mod:`damofd.models.backbones.masternet` where it lives) are imported on first use::

    from damofd.search import ddsar, structure_cost, EvolutionSearch, SearchConfig

    ddsar("SuperConvK3BNRELU(3,32,2,1)...", resolution=224).score
    EvolutionSearch(SearchConfig.from_preset("damofd-0.5g", seed=0)).run().best
"""

from __future__ import annotations

from damofd._lazy import lazy_attributes
from damofd.search.cost import (
    BlockCost,
    CostModel,
    CostOptions,
    StructureCost,
    block_cost,
    structure_cost,
)
from damofd.search.ddsar import (
    DEFAULT_ALPHA,
    DEFAULT_STAGE_WEIGHTS,
    README_ALPHA,
    DDSARResult,
    SARModel,
    ddsar,
    sar_terms,
)
from damofd.search.evolution import (
    Candidate,
    EvolutionSearch,
    SearchConfig,
    SearchResult,
    measure_latency_ms,
)
from damofd.search.presets import PRESETS, SearchPreset, get_preset
from damofd.search.scoring import PROXIES, ProxyScore, check_proxy, score_structure
from damofd.search.space import IDW, SEARCH_SPACES, XXBL, SearchSpace, get_search_space
from damofd.search.structure import (
    BLOCK_TYPES,
    Block,
    BlockKind,
    BlockType,
    Structure,
    StructureError,
    smart_round,
)

# torch-backed names, resolved on first access (MasterNet: a downward re-export from models)
_LAZY: dict[str, str] = {
    "MasterNet": "damofd.models.backbones.masternet",
    "compute_torch_proxy": "damofd.search.proxies",
}

__all__ = [
    "BLOCK_TYPES",
    "DEFAULT_ALPHA",
    "DEFAULT_STAGE_WEIGHTS",
    "IDW",
    "PRESETS",
    "PROXIES",
    "README_ALPHA",
    "SEARCH_SPACES",
    "XXBL",
    "Block",
    "BlockCost",
    "BlockKind",
    "BlockType",
    "Candidate",
    "CostModel",
    "CostOptions",
    "DDSARResult",
    "EvolutionSearch",
    "ProxyScore",
    "SARModel",
    "SearchConfig",
    "SearchPreset",
    "SearchResult",
    "SearchSpace",
    "Structure",
    "StructureCost",
    "StructureError",
    "block_cost",
    "check_proxy",
    "ddsar",
    "get_preset",
    "get_search_space",
    "measure_latency_ms",
    "sar_terms",
    "score_structure",
    "smart_round",
    "structure_cost",
    *_LAZY,
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), __all__)
