"""The files of an evolutionary search and its check-pointed state: :class:`SearchCheckpoint`
gives :class:`damofd.search.evolution.EvolutionSearch` its ``state_dict``, ``checkpoint``,
``write_report`` and ``resume``.

``search_state.json`` holds the whole state (atomically replaced); ``search_seen.txt`` is the
append-only log of scored structures, one :func:`format_keys` line each, of which the state
records how many are committed: lines appended after the last checkpoint are dropped on resume.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from damofd.errors import ConfigError, InputError
from damofd.io import atomic_write_json, atomic_write_text
from damofd.search.cost import BlockKey
from damofd.search.search_config import SearchConfig, SearchResult
from damofd.search.structure import Structure

__all__ = [
    "BEST_FILE",
    "LOG_FILE",
    "REPORT_FILE",
    "SEEN_FILE",
    "STATE_FILE",
    "SearchCheckpoint",
    "format_keys",
]

STATE_FILE = "search_state.json"
SEEN_FILE = "search_seen.txt"
REPORT_FILE = "report.json"
BEST_FILE = "best_structure.txt"
LOG_FILE = "search.log"
_STATE_FORMAT = "damofd-search-state"
_STATE_VERSION = 1

_KEY_RE = re.compile(r"([A-Za-z0-9]+)\(([0-9,]+)\)")

_S = TypeVar("_S", bound="SearchCheckpoint")


# ---------------------------------------------------------------------------------------------
# Structure keys as text
# ---------------------------------------------------------------------------------------------
def format_keys(keys: tuple[BlockKey, ...]) -> str:
    """Structure string of BlockKeys (no tags); equals ``structure_from_keys(keys).format()``."""
    parts = []
    for name, cin, out, s, btn, n in keys:
        if btn:
            parts.append(f"{name}({cin},{out},{s},{btn},{n})")
        else:
            parts.append(f"{name}({cin},{out},{s},{n})")
    return "".join(parts)


def _parse_keys_fast(text: str) -> tuple[BlockKey, ...]:
    """Parse a structure string written by :func:`format_keys` (no validation; own files only)."""
    out = []
    for name, args in _KEY_RE.findall(text):
        v = [int(x) for x in args.split(",")]
        if len(v) == 4:
            out.append((name, v[0], v[1], v[2], 0, v[3]))
        else:
            out.append((name, v[0], v[1], v[2], v[3], v[4]))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Reading the files back
# ---------------------------------------------------------------------------------------------
def _read_state(path: Path) -> dict[str, Any]:
    """The saved state at ``path`` (``InputError`` if missing, unreadable or not a state)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no search state to resume: {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read search state {str(path)!r}: {e}") from None
    if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
        raise InputError(f"{str(path)!r} is not a damofd search state (version {_STATE_VERSION})")
    return state


def _resumed_config(state: dict[str, Any], iterations: int | None) -> SearchConfig:
    """The saved config, with ``iterations`` extended (never below the iterations done)."""
    config = SearchConfig.from_dict(state["config"])
    if iterations is not None and iterations != config.iterations:
        if iterations < state["iteration"]:
            raise ConfigError(
                f"--iterations {iterations} is less than the {state['iteration']} iterations "
                "already done"
            )
        config = replace(config, iterations=iterations)
    return config


def _read_seen(seen_path: Path, n_seen: int) -> list[tuple[BlockKey, ...]]:
    """The first ``n_seen`` (committed) structures of the seen log; lines after them, appended
    after the last checkpoint, are cut off the file."""
    try:
        with open(seen_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise InputError(
            f"{str(seen_path)!r} is corrupted (not UTF-8 text at byte {e.start}); "
            "restart the search without --resume, or restore the file"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read {str(seen_path)!r}: {e.strerror or e}") from None
    if len(lines) < n_seen:
        raise InputError(f"{str(seen_path)!r} has {len(lines)} lines, the state expects {n_seen}")
    keys = []
    for i, t in enumerate(lines[:n_seen], 1):
        try:
            k = _parse_keys_fast(t)
        except (ValueError, IndexError):
            k = ()
        if not k:
            raise InputError(
                f"{str(seen_path)!r}:{i}: not a structure string ({t[:60]!r}); the file "
                "is corrupted: restart the search without --resume, or restore the file"
            )
        keys.append(k)
    if len(lines) > n_seen:  # lines appended after the last committed checkpoint
        atomic_write_text(seen_path, "".join(t + "\n" for t in lines[:n_seen]))
    return keys


# ---------------------------------------------------------------------------------------------
# Save and resume
# ---------------------------------------------------------------------------------------------
class SearchCheckpoint:
    """Save / resume of the search state; a base of :class:`EvolutionSearch`, whose attributes
    below (set in its ``__init__``) and ``result``, ``elapsed`` and ``_log`` it uses."""

    config: SearchConfig
    out_dir: Path | None
    iteration: int
    rng: random.Random
    pop_keys: list[tuple[BlockKey, ...]]
    pop_scores: list[float]
    seen: set[tuple[BlockKey, ...]]
    seen_committed: int
    _seen_pending: list[tuple[BlockKey, ...]]
    topk: list[tuple[float, int, tuple[BlockKey, ...]]]  # (-score, order, keys)
    _topk_set: set[tuple[BlockKey, ...]]
    _order: int
    stats: dict[str, int]
    history: list[tuple[int, int, float | None]]
    elapsed_before: float

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = self.rng.getstate()
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "population": [
                [format_keys(k), s] for k, s in zip(self.pop_keys, self.pop_scores, strict=True)
            ],
            "top_k": [[format_keys(k), -ns, order] for ns, order, k in self.topk],
            "topk_order": self._order,
            "rng_state": [version, list(internal), gauss_next],
            "seen_file": SEEN_FILE,
            "seen_count": self.seen_committed + len(self._seen_pending),
            "stats": dict(self.stats),
            "history": [list(h) for h in self.history],
            "elapsed_s": self.elapsed(),  # type: ignore[attr-defined]
        }

    def checkpoint(self) -> None:
        """Write the whole state atomically (no-op without ``out_dir``)."""
        if self.out_dir is None:
            return
        if self._seen_pending:
            with open(self.out_dir / SEEN_FILE, "a", encoding="utf-8") as f:
                f.write("".join(format_keys(k) + "\n" for k in self._seen_pending))
                f.flush()
                os.fsync(f.fileno())
        state = self.state_dict()  # seen_count includes the lines just made durable
        atomic_write_json(self.out_dir / STATE_FILE, state, indent=None)
        self.seen_committed += len(self._seen_pending)
        self._seen_pending.clear()
        self.write_report()

    def write_report(self) -> SearchResult:
        """Write ``report.json`` and ``best_structure.txt`` for the current state."""
        res: SearchResult = self.result()  # type: ignore[attr-defined]
        if self.out_dir is not None:
            if res.best is not None:
                atomic_write_text(self.out_dir / BEST_FILE, res.best.structure.format() + "\n")
            atomic_write_json(self.out_dir / REPORT_FILE, res.to_dict())
        return res

    @classmethod
    def resume(
        cls: type[_S],
        out_dir: str | os.PathLike[str],
        *,
        iterations: int | None = None,
        checkpoint_every: int = 2000,
        progress: bool = False,
        log_every: int = 500,
        latency_fn: Callable[[Structure], float] | None = None,
    ) -> _S:
        """Continue the search saved in ``out_dir``; ``iterations`` may extend (not shrink) it."""
        out = Path(out_dir)
        state = _read_state(out / STATE_FILE)
        self = cls(  # type: ignore[call-arg]
            _resumed_config(state, iterations),
            out,
            checkpoint_every=checkpoint_every,
            progress=progress,
            log_every=log_every,
            latency_fn=latency_fn,
        )
        self._load_state(state)
        self._load_seen(out, state)
        self._log(f"resumed at iteration {self.iteration}")  # type: ignore[attr-defined]
        return self

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore everything but the seen structures from a :meth:`state_dict`."""
        self.iteration = int(state["iteration"])
        for text, score in state["population"]:
            self.pop_keys.append(_parse_keys_fast(text))
            self.pop_scores.append(float(score))
        for text, score, order in state["top_k"]:
            keys = _parse_keys_fast(text)
            self.topk.append((-float(score), int(order), keys))
            self._topk_set.add(keys)
        self._order = int(state["topk_order"])
        version, internal, gauss_next = state["rng_state"]
        self.rng.setstate((version, tuple(internal), gauss_next))
        self.stats.update({k: int(v) for k, v in state["stats"].items()})
        self.history = [
            (int(a), int(b), None if c is None else float(c)) for a, b, c in state["history"]
        ]
        self.elapsed_before = float(state["elapsed_s"])

    def _load_seen(self, out: Path, state: dict[str, Any]) -> None:
        """Restore the seen structures from the committed lines of the seen log."""
        n_seen = int(state["seen_count"])
        seen_path = out / state.get("seen_file", SEEN_FILE)
        if n_seen:
            self.seen.update(_read_seen(seen_path, n_seen))
        elif seen_path.exists():
            seen_path.unlink()
        self.seen_committed = n_seen
