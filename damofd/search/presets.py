"""The four official DamoFD search configurations (``DDSAR/scripts/DamoFd_*.sh``, spec §2.7).

Every script uses DDSAR at 224×224 with α = 0.005, population 512 and 96,000 iterations; the
FLOPs budget is the intended backbone budget at VGA rescaled by 224² / (640·480).

The official 2.5G and 34G seeds are already over their FLOPs budget (2.5G: 380,645,328 after
re-chaining vs 345e6, +10.3 %; 34G: 5,290,962,768 vs 4,375e6, +20.9 %). The reference search
copes because it only keeps mutants that fit; these presets therefore set
``allow_init_over_budget`` (a user-supplied ``--init`` over budget is an error unless the flag
is given explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass

from damofd.errors import ConfigError

__all__ = ["PRESETS", "SearchPreset", "get_preset"]


@dataclass(frozen=True, slots=True)
class SearchPreset:
    """One official search script. ``budget_flops`` is in search-rule FLOPs at ``resolution``."""

    name: str
    space: str
    budget_flops: float
    max_layers: int
    init: str
    vga_budget: str
    """The comment of the official script (the intended backbone budget at 640×480)."""
    allow_init_over_budget: bool = False
    resolution: int = 224
    population: int = 512
    iterations: int = 96_000
    alpha: float = 0.005
    proxy: str = "ddsar"


PRESETS: dict[str, SearchPreset] = {
    p.name: p
    for p in (
        SearchPreset(
            name="damofd-0.5g",
            space="idw",
            budget_flops=65e6,
            max_layers=14,
            init="SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(8,32,2,8,1)"
            "SuperResIDWE4K3(32,48,2,32,1)SuperResIDWE1K3(48,96,2,48,1)"
            "SuperResIDWE1K3(96,128,2,96,1)",
            vga_budget="403M",
        ),
        SearchPreset(
            name="damofd-2.5g",
            space="xxbl",
            budget_flops=345e6,
            max_layers=20,
            init="SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(32,32,2,32,3)"
            "SuperResK3K3(32,48,2,64,2)SuperResK3K3(48,64,2,128,2)SuperResK3K3(64,128,2,16,3)",
            vga_budget="2118M",
            allow_init_over_budget=True,
        ),
        SearchPreset(
            name="damofd-10g",
            space="xxbl",
            budget_flops=1414e6,
            max_layers=20,
            init="SuperConvK3BNRELU(3,24,2,1)SuperResK3K3(24,48,2,64,5)"
            "SuperResK3K3(48,64,2,64,5)SuperResK3K3(64,96,2,128,3)SuperResK3K3(96,128,2,16,1)",
            vga_budget="8659M",
        ),
        SearchPreset(
            name="damofd-34g",
            space="xxbl",
            budget_flops=4375e6,
            max_layers=20,
            init="SuperConvK3BNRELU(3,56,2,2)SuperResK3K3(56,112,2,96,5)"
            "SuperResK3K3(112,224,2,96,5)SuperResK3K3(224,448,2,128,3)"
            "SuperResK3K3(448,1024,2,16,1)",
            vga_budget="26787M",
            allow_init_over_budget=True,
        ),
    )
}


def get_preset(name: str) -> SearchPreset:
    """Return the preset called ``name`` (case-insensitive); the error lists the valid names."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None
