"""Evolutionary architecture search of DamoFD (spec §2.6), fast, seeded and resumable.

The algorithm is the released ``evolution_search.py``::

    population = []                                   # (structure, score), at most P (+1)
    repeat `iterations` times:
        while |population| > P: drop the first member with the lowest score
        if |population| <= 10: cand = mutate(init, 1 replacement)
        else:                  cand = mutate(random member, 2 replacements)
        cand = split(split(cand, 6), 6)
        reject if layers > max_layers, params > budget, FLOPs > budget,
                  the net does not have exactly 5 blocks, latency > budget
        append (cand, proxy score)
    best = the highest score ever appended

``mutate`` draws ``randint(1, n−1)`` per replacement (the stem is never mutated; a repeated
index is skipped, so two replacements may be one), replaces the block by a candidate of the
search space (:mod:`damofd.search.space`) whose ``in`` is the previous block's ``out``, then
re-chains every ``in`` to its predecessor's ``out``. A rejected candidate still uses up an
iteration.

Two changes to the reference are on by default (``SearchConfig(dedup=False, proposals=1)``,
CLI ``--faithful``, switches both off; the search is then draw-for-draw the algorithm of the
independent re-implementation ``benchmarks/reference_search.py``):

* **Up to ``proposals`` (8) mutants per iteration.** The reference spends 85–90 % of its 0.5G
  iterations on mutants that fail the FLOPs budget (the population sits at the budget edge).
  Here an iteration draws mutants until one passes the cheap checks (budgets, block count, not
  seen before), at most ``proposals`` of them, and scores that one. With DDSAR a check costs
  microseconds, so 96,000 iterations then score ~24,000 (0.5G) to ~88,000 (34G) candidates
  instead of ~6,000 to ~31,000, for ~5× the CPU time (still seconds).
* **De-duplication**: a candidate that was already scored is neither scored nor added again
  (with ``proposals`` > 1 another mutant is drawn instead). Without it the population fills
  with copies of the best few structures.

With both, every seed tried reaches DDSAR ≥ 9.65 on the 0.5G preset, where the faithful
algorithm ends between 9.60 and 9.65 (see ``docs/search.md``).

Beyond the reference in every mode: the RNG is a private ``random.Random(seed)`` (reproducible
runs), the top-k distinct structures are kept, the whole state is check-pointed atomically and a
killed run resumes exactly where its last checkpoint left it (the resumed run ends with the same
result as an uninterrupted one), and every cost and SAR term is memoised per (block, input
resolution) so that 96,000 DDSAR iterations take seconds instead of the reference's 75 minutes.

Files written to ``out_dir``: ``search_state.json`` (the state, atomically replaced),
``search_seen.txt`` (append-only log of scored structures; the state records how many lines are
committed), ``report.json``, ``best_structure.txt`` and ``search.log``.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from damofd.errors import ConfigError
from damofd.io import ensure_writable_dir
from damofd.search.cost import (
    BlockKey,
    CostModel,
    structure_cost,
    structure_from_keys,
    structure_keys,
)
from damofd.search.latency import measure_latency_ms
from damofd.search.scoring import TORCH_PROXIES, SearchScorer
from damofd.search.search_config import Candidate, SearchConfig, SearchResult

# `X as X`: names of search_state re-exported from here, where they were defined before
from damofd.search.search_state import BEST_FILE as BEST_FILE
from damofd.search.search_state import LOG_FILE, STATE_FILE, SearchCheckpoint, format_keys
from damofd.search.search_state import REPORT_FILE as REPORT_FILE
from damofd.search.search_state import SEEN_FILE as SEEN_FILE
from damofd.search.search_state import _parse_keys_fast as _parse_keys_fast
from damofd.search.space import get_search_space, make_randbelow
from damofd.search.structure import BLOCK_TYPES, BlockKind, Structure

__all__ = [
    "MAX_INITIAL_FAILURES",
    "STATE_FILE",
    "Candidate",
    "EvolutionSearch",
    "SearchConfig",
    "SearchResult",
    "format_keys",
    "measure_latency_ms",
]

MAX_INITIAL_FAILURES = 8
"""Abort a search whose first this-many scored candidates all failed to score (a broken proxy
setting such as an unusable device, not an unlucky mutant)."""

_CONV_NAMES = frozenset(n for n, t in BLOCK_TYPES.items() if t.kind is BlockKind.CONV)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _over_budget(what: str, value: float, budget: float) -> str:
    over = value - budget
    pct = 100 * over / budget
    return f"{what} {value:,.0f} > budget {budget:,.0f} (over by {over:,.0f}, +{pct:.1f}%)"


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
class EvolutionSearch(SearchCheckpoint):
    """A (resumable) evolutionary search. Create it with a :class:`SearchConfig` (fresh) or
    with :meth:`resume` (from ``out_dir/search_state.json``), then call :meth:`run`.

    ``checkpoint_every`` iterations the state is written to ``out_dir`` (if given);
    ``progress`` shows a tqdm bar (iterations, accepted candidates, best score).
    """

    def __init__(
        self,
        config: SearchConfig,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        checkpoint_every: int = 2000,
        progress: bool = False,
        log_every: int = 500,
        latency_fn: Callable[[Structure], float] | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.log_every = max(1, log_every)
        self._latency_fn = latency_fn

        self.space = get_search_space(config.space)
        self.sampler = self.space.sampler()
        self.cost = CostModel(config.cost_options)
        self.scorer = SearchScorer(
            config.proxy,
            resolution=config.resolution,
            alpha=config.alpha,
            weights=config.stage_weights,
            batch_size=config.proxy_batch_size,
            device=config.device,
            seed=config.seed,
        )
        if config.proxy in TORCH_PROXIES or (
            config.budget_latency_ms is not None and latency_fn is None
        ):
            from damofd.device import check_device  # imports torch

            check_device(config.device)  # fail now, not as -9999 scores in search.log
        self.num_blocks = len(config.stage_weights)
        init = Structure.parse(config.init)
        self.init_structure = init
        self.init_keys = structure_keys(init)
        self._check_init()

        # --- state (everything below is check-pointed) ---
        self.iteration = 0
        self.rng = random.Random(config.seed)
        self.pop_keys: list[tuple[BlockKey, ...]] = []
        self.pop_scores: list[float] = []
        self.seen: set[tuple[BlockKey, ...]] = set()
        self.seen_committed = 0
        self._seen_pending: list[tuple[BlockKey, ...]] = []
        self.topk: list[tuple[float, int, tuple[BlockKey, ...]]] = []  # (-score, order, keys)
        self._topk_set: set[tuple[BlockKey, ...]] = set()
        self._order = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "proposals",
                "rejected_layers",
                "rejected_params",
                "rejected_flops",
                "rejected_blocks",
                "rejected_latency",
                "duplicates",
                "exhausted",
                "failed",
            ),
            0,
        )
        self.history: list[tuple[int, int, float | None]] = []
        self.elapsed_before = 0.0
        self._t_start: float | None = None
        self._latency_cache: dict[tuple[BlockKey, ...], float] = {}
        self._stop = False
        self._last_failure: BaseException | None = None

    # -- validation -------------------------------------------------------------------------------
    def _check_init(self) -> None:
        cfg = self.config
        init = self.init_structure
        if len(init) != self.num_blocks:
            raise ConfigError(
                f"initial structure has {len(init)} blocks; the search keeps only structures with "
                f"exactly {self.num_blocks} (stem + {self.num_blocks - 1} stages) and mutation "
                f"never changes the block count: {init.format()}"
            )
        if cfg.allow_init_over_budget:
            return
        flops, params, layers = self.cost.totals(structure_keys(init.rechain()), cfg.resolution)
        problems = []
        if cfg.max_layers is not None and layers > cfg.max_layers:
            problems.append(_over_budget("layers", layers, cfg.max_layers))
        if cfg.budget_params is not None and params > cfg.budget_params:
            problems.append(_over_budget("params", params, cfg.budget_params))
        if cfg.budget_flops is not None and flops > cfg.budget_flops:
            problems.append(_over_budget(f"FLOPs@{cfg.resolution}", flops, cfg.budget_flops))
        if problems:
            raise ConfigError(
                "initial structure is already over budget: "
                + "; ".join(problems)
                + " (costs of the re-chained init under the search rules; pass "
                "--allow-init-over-budget to search anyway, keeping only mutants that fit)"
            )

    # -- mutation ---------------------------------------------------------------------------------
    def _mutate(
        self, parent: tuple[BlockKey, ...], num_replaces: int, randbelow: Callable[[int], int]
    ) -> tuple[BlockKey, ...]:
        """Replace ``num_replaces`` random non-stem blocks (repeats skipped), then re-chain.

        RNG use per replacement: ``randint(1, n-1)`` (drawn as ``1 + randbelow(n-1)``, the same
        draw) and, unless the index repeats, one ``randbelow`` for the candidate.
        """
        blocks = list(parent)
        n = len(blocks)
        propose = self.sampler.propose
        chosen: list[int] = []
        for _ in range(num_replaces):
            i = 1 + randbelow(n - 1)
            if i in chosen:
                continue
            chosen.append(i)
            name, out, stride, btn, sub_layers = propose(blocks[i], randbelow)
            blocks[i] = (name, blocks[i - 1][2], out, stride, btn, sub_layers)
        prev = blocks[0][2]
        for j in range(1, n):
            b = blocks[j]
            if b[1] != prev:
                blocks[j] = (b[0], prev, b[2], b[3], b[4], b[5])
            prev = b[2]
        return tuple(blocks)

    def _split(self, keys: tuple[BlockKey, ...]) -> tuple[BlockKey, ...]:
        t = self.config.split_threshold
        for k in keys:
            if k[5] >= t and k[0] not in _CONV_NAMES:
                break
        else:
            return keys
        half = t // 2
        out: list[BlockKey] = []
        for k in keys:
            if k[5] >= t and k[0] not in _CONV_NAMES and half >= 1:
                out.append((k[0], k[1], k[2], k[3], k[4], half))
                out.append((k[0], k[2], k[2], 1, k[4], k[5] - half))
            else:
                out.append(k)
        return tuple(out)

    # -- latency ----------------------------------------------------------------------------------
    def _latency(self, keys: tuple[BlockKey, ...]) -> float:
        hit = self._latency_cache.get(keys)
        if hit is None:
            s = structure_from_keys(keys)
            if self._latency_fn is not None:
                hit = float(self._latency_fn(s))
            else:
                cfg = self.config
                hit = measure_latency_ms(
                    s,
                    cfg.resolution,
                    batch_size=cfg.latency_batch_size,
                    num_classes=cfg.num_classes,
                    device=cfg.device,
                    num_threads=cfg.latency_threads,
                )
            self._latency_cache[keys] = hit
        return hit

    # -- the loop ---------------------------------------------------------------------------------
    def _run_chunk(self, start: int, stop: int) -> None:
        """Iterations ``start .. stop-1`` (no bookkeeping in between)."""
        cfg = self.config
        rng = self.rng
        randbelow = make_randbelow(rng)
        mutate = self._mutate
        split = self._split
        totals = self.cost.totals
        res = cfg.resolution
        pop_keys = self.pop_keys
        pop_scores = self.pop_scores
        pop_size = cfg.population
        init_keys = self.init_keys
        proposals = cfg.proposals
        inf = math.inf
        max_layers = inf if cfg.max_layers is None else cfg.max_layers
        budget_params = inf if cfg.budget_params is None else cfg.budget_params
        budget_flops = inf if cfg.budget_flops is None else cfg.budget_flops
        budget_latency = cfg.budget_latency_ms
        nblocks = self.num_blocks
        dedup = cfg.dedup
        seen = self.seen
        pending = self._seen_pending
        stats = self.stats
        n_proposals = 0
        for it in range(start, stop):
            while len(pop_scores) > pop_size:
                i = pop_scores.index(min(pop_scores))
                del pop_scores[i]
                del pop_keys[i]
            # Up to `proposals` mutants per iteration; the first one that passes the cheap checks
            # (budgets, block count, not seen before) is scored. proposals=1: the reference.
            for _ in range(proposals):
                n_proposals += 1
                if len(pop_scores) <= 10:
                    cand = mutate(init_keys, 1, randbelow)
                else:
                    cand = mutate(pop_keys[randbelow(len(pop_keys))], 2, randbelow)
                split_cand = split(cand)  # split twice, as the reference
                cand = split_cand if split_cand is cand else split(split_cand)
                flops, params, layers = totals(cand, res)
                if layers > max_layers:
                    stats["rejected_layers"] += 1
                elif params > budget_params:
                    stats["rejected_params"] += 1
                elif flops > budget_flops:
                    stats["rejected_flops"] += 1
                elif len(cand) != nblocks:
                    stats["rejected_blocks"] += 1
                elif dedup and cand in seen:
                    stats["duplicates"] += 1
                else:
                    break
            else:
                stats["exhausted"] += 1
                continue
            if dedup:
                seen.add(cand)
                pending.append(cand)
            if budget_latency is not None and self._latency(cand) > budget_latency:
                stats["rejected_latency"] += 1
                continue
            self._accept(cand, self._score(cand, flops, params, it))
        stats["proposals"] += n_proposals

    def _score(self, cand: tuple[BlockKey, ...], flops: float, params: float, it: int) -> float:
        """The proxy score of ``cand``, drawing from the search RNG. A failing net scores -9999
        (as in the reference) unless every candidate so far failed (then the search aborts)."""
        try:
            return self.scorer(cand, flops, params, self.rng, it)
        except Exception as e:  # the reference scores a failing net -9999 and goes on
            self._log(f"iteration {it}: scoring failed ({type(e).__name__}: {e}); score -9999")
            stats = self.stats
            stats["failed"] += 1
            self._last_failure = e
            if stats["failed"] >= MAX_INITIAL_FAILURES and self._never_scored(True):
                raise self._scoring_broken() from e
            return -9999.0

    def _accept(self, cand: tuple[BlockKey, ...], score: float) -> None:
        """Append a scored candidate to the population and, if it ranks, to the top-k."""
        self.pop_keys.append(cand)
        self.pop_scores.append(score)
        self.stats["accepted"] += 1
        topk = self.topk
        top_k = self.config.top_k
        if (len(topk) < top_k or -score < topk[-1][0]) and cand not in self._topk_set:
            self._order += 1
            bisect.insort(topk, (-score, self._order, cand))
            self._topk_set.add(cand)
            if len(topk) > top_k:
                self._topk_set.discard(topk.pop()[2])

    def run(self, until: int | None = None) -> SearchResult:
        """Run up to iteration ``until`` (default: ``config.iterations``) and return the result.

        Check-points every ``checkpoint_every`` iterations and at the end. On SIGINT the search
        stops at the next iteration boundary, check-points and raises ``KeyboardInterrupt``.
        """
        cfg = self.config
        end = cfg.iterations if until is None else min(until, cfg.iterations)
        if self.out_dir is not None:
            ensure_writable_dir(self.out_dir, "search output directory")
            if self.iteration == 0 and not self.history:
                self._log(f"search started: {json.dumps(cfg.to_dict())}")
        slow = cfg.proxy in TORCH_PROXIES or cfg.budget_latency_ms is not None
        chunk = 1 if slow else 256
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.iterations,
                initial=self.iteration,
                unit="it",
                desc=f"search {cfg.preset or cfg.space}",
                dynamic_ncols=True,
                mininterval=0.5,
            )
        old_handler = None
        if threading.current_thread() is threading.main_thread():

            def _on_sigint(signum: int, frame: object) -> None:
                self._stop = True

            old_handler = signal.signal(signal.SIGINT, _on_sigint)
        self._t_start = time.perf_counter()
        try:
            while self.iteration < end and not self._stop:
                stop = min(
                    end,
                    self.iteration + chunk,
                    _next_multiple(self.iteration, self.checkpoint_every),
                    _next_multiple(self.iteration, self.log_every),
                )
                self._run_chunk(self.iteration, stop)
                done = stop - self.iteration
                self.iteration = stop
                if bar is not None:
                    bar.update(done)
                    best = -self.topk[0][0] if self.topk else float("nan")
                    bar.set_postfix(
                        accepted=self.stats["accepted"], best=f"{best:.6f}", refresh=False
                    )
                if self.iteration % self.log_every == 0:
                    self._record_progress()
                if self.iteration % self.checkpoint_every == 0 and self.iteration < end:
                    self.checkpoint()
            if self.iteration >= cfg.iterations and self._never_scored():
                raise self._scoring_broken() from self._last_failure
            if self.iteration >= cfg.iterations:
                self._record_progress()
            self.checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.elapsed_before = self.elapsed()
            self._t_start = None
        if self._stop:
            self._stop = False
            self._log(f"interrupted at iteration {self.iteration}; state saved")
            raise KeyboardInterrupt
        return self.result()

    # -- bookkeeping ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Search wall time in seconds, summed over resumed sessions."""
        if self._t_start is None:
            return self.elapsed_before
        return self.elapsed_before + time.perf_counter() - self._t_start

    def _record_progress(self) -> None:
        if self.history and self.history[-1][0] == self.iteration:
            return
        best = -self.topk[0][0] if self.topk else None
        self.history.append((self.iteration, self.stats["accepted"], best))
        if self.pop_scores:
            self._log(
                f"iteration={self.iteration}/{self.config.iterations} accepted="
                f"{self.stats['accepted']} max_score={max(self.pop_scores):.6f} "
                f"min_score={min(self.pop_scores):.6f} time={self.elapsed():.1f}s "
                f"best={format_keys(self.topk[0][2])}"
            )

    def _never_scored(self, in_step: bool = False) -> bool:
        """Every candidate sent to the proxy so far failed to score (and there was one).
        ``in_step``: called in the scoring step, before the failed candidate counts as accepted."""
        failed = self.stats["failed"]
        return failed > 0 and self.stats["accepted"] + int(in_step) == failed

    def _scoring_broken(self) -> ConfigError:
        """The error that aborts a search whose proxy fails on every candidate (logged too)."""
        e = self._last_failure
        what = f"{type(e).__name__}: {e}" if e is not None else "unknown error"
        msg = (
            f"search aborted: the {self.config.proxy} proxy failed on all of the first "
            f"{self.stats['failed']} candidates (last: {what}); check the proxy settings "
            f"(device {self.config.device!r}, batch size {self.config.proxy_batch_size}, "
            f"resolution {self.config.resolution})"
        )
        self._log(msg)
        return ConfigError(msg)

    def _log(self, line: str) -> None:
        if self.out_dir is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")

    def _candidate(self, keys: tuple[BlockKey, ...], score: float) -> Candidate:
        s = structure_from_keys(keys)
        return Candidate(
            s,
            score,
            structure_cost(s, self.config.resolution, self.config.cost_options),
            self.scorer.stages(keys),
        )

    def result(self) -> SearchResult:
        """The current result (best, top-k with costs, counters)."""
        top = tuple(self._candidate(k, -ns) for ns, _, k in self.topk)
        return SearchResult(
            config=self.config,
            best=top[0] if top else None,
            top_k=top,
            iterations_done=self.iteration,
            accepted=self.stats["accepted"],
            stats=dict(self.stats),
            wall_time_s=self.elapsed(),
            finished=self.iteration >= self.config.iterations,
            history=tuple(self.history),
        )


def _next_multiple(i: int, n: int) -> int:
    return (i // n + 1) * n
