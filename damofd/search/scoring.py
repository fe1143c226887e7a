"""Zero-shot proxies behind one interface: DDSAR (analytic), the torch proxies and trivial ones.

=========== ========================================================================== =========
name        what                                                                       needs
=========== ========================================================================== =========
``ddsar``   DDSAR, spec §1.2 (:mod:`damofd.search.ddsar`)                              —
``zen``     Zen-score of the MasterNet (spec §1.5)                                     torch
``naswot``  NASWOT log-determinant of the ReLU-pattern kernel                          torch
``synflow`` SynFlow, returned negated as in the reference                              torch
``gradnorm`` L2 norm of the gradients for a random soft-CE loss                         torch
``tenas``   TE-NAS NTK condition number, −λmax/λmin                                    torch
``flops``   search-rule FLOPs (:mod:`damofd.search.cost`)                               —
``params``  search-rule model size                                                     —
``random``  one N(0, 1) draw (a baseline)                                              —
=========== ========================================================================== =========

The torch proxies live in :mod:`damofd.search.proxies` and are imported only when used, so the
analytic path (and the whole DDSAR search) never imports torch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from damofd.errors import ConfigError
from damofd.search.cost import BlockKey, CostOptions, structure_cost, structure_from_keys
from damofd.search.ddsar import DEFAULT_ALPHA, DEFAULT_STAGE_WEIGHTS, SARModel, ddsar
from damofd.search.structure import Structure

__all__ = [
    "ANALYTIC_PROXIES",
    "PROXIES",
    "TORCH_PROXIES",
    "ProxyScore",
    "SearchScorer",
    "check_proxy",
    "score_structure",
]

TORCH_PROXIES: tuple[str, ...] = ("zen", "naswot", "synflow", "gradnorm", "tenas")
ANALYTIC_PROXIES: tuple[str, ...] = ("ddsar", "flops", "params", "random")
PROXIES: tuple[str, ...] = ("ddsar", *TORCH_PROXIES, "flops", "params", "random")


def check_proxy(name: str) -> str:
    """Normalise a proxy name; unknown names raise :class:`ConfigError` listing the valid ones."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"tenas": "tenas", "te": "tenas", "syncflow": "synflow", "ddsar": "ddsar"}
    key = aliases.get(key, key)
    if key not in PROXIES:
        raise ConfigError(f"unknown proxy {name!r}; valid proxies: {', '.join(PROXIES)}")
    return key


@dataclass(frozen=True, slots=True)
class ProxyScore:
    """A proxy's score for one structure; ``stages`` (per-block SAR) only for DDSAR."""

    proxy: str
    score: float
    resolution: int
    stages: tuple[float, ...] | None = None
    alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "proxy": self.proxy,
            "score": self.score,
            "resolution": self.resolution,
        }
        if self.stages is not None:
            d["stages"] = list(self.stages)
            d["alpha"] = self.alpha
        return d


def _torch_proxy(
    name: str, structure: Structure, resolution: int, batch_size: int, seed: int | None, device: str
) -> float:
    from damofd.search.proxies import compute_torch_proxy  # lazy: imports torch

    return float(
        compute_torch_proxy(
            name, structure, resolution=resolution, batch_size=batch_size, seed=seed, device=device
        )
    )


def score_structure(
    structure: Structure | str,
    proxy: str = "ddsar",
    *,
    resolution: int = 224,
    alpha: float = DEFAULT_ALPHA,
    weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
    seed: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    cost_options: CostOptions | None = None,
) -> ProxyScore:
    """Score one structure with ``proxy`` at a ``resolution``² input.

    ``seed`` makes the random and torch proxies reproducible; ``alpha``/``weights`` only affect
    DDSAR, ``cost_options`` only ``flops``/``params``.
    """
    name = check_proxy(proxy)
    s = Structure.of(structure)
    if name == "ddsar":
        r = ddsar(s, resolution, alpha, weights)
        return ProxyScore(name, r.score, resolution, r.stages, r.alpha)
    if name in ("flops", "params"):
        c = structure_cost(s, resolution, cost_options)
        return ProxyScore(name, float(c.flops if name == "flops" else c.params), resolution)
    if name == "random":
        return ProxyScore(name, random.Random(seed).gauss(0.0, 1.0), resolution)
    return ProxyScore(name, _torch_proxy(name, s, resolution, batch_size, seed, device), resolution)


class SearchScorer:
    """The search's scoring step: ``scorer(keys, flops, params, rng, iteration) -> score``.

    DDSAR uses a memoised :class:`~damofd.search.ddsar.SARModel`; ``flops``/``params`` reuse the
    costs the budget check already computed; ``random`` draws from the search RNG (so it is
    checkpointed with it); torch proxies build the MasterNet with a per-iteration seed derived
    from ``seed`` so that a resumed search scores exactly like an uninterrupted one.
    """

    def __init__(
        self,
        proxy: str,
        *,
        resolution: int,
        alpha: float = DEFAULT_ALPHA,
        weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
        batch_size: int = 16,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.proxy = check_proxy(proxy)
        self.resolution = resolution
        self.sar = SARModel(resolution, alpha, weights)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.is_torch = self.proxy in TORCH_PROXIES

    def stages(self, keys: tuple[BlockKey, ...]) -> tuple[float, ...] | None:
        """Per-block SAR for reports (DDSAR only)."""
        return self.sar.stages(keys) if self.proxy == "ddsar" else None

    def __call__(
        self,
        keys: tuple[BlockKey, ...],
        flops: float,
        params: int,
        rng: random.Random,
        iteration: int,
    ) -> float:
        p = self.proxy
        if p == "ddsar":
            s = self.sar.score(keys)
            assert s is not None  # the search checks the block count first
            return s
        if p == "flops":
            return float(flops)
        if p == "params":
            return float(params)
        if p == "random":
            return rng.gauss(0.0, 1.0)
        seed = (self.seed * 1_000_003 + iteration) % (2**31)
        return _torch_proxy(
            p, structure_from_keys(keys), self.resolution, self.batch_size, seed, self.device
        )
