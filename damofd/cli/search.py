"""``damofd search``: evolutionary backbone search with DDSAR (or another proxy).

Examples::

    damofd search --preset damofd-0.5g --out runs/s05 --seed 0
    damofd search --preset damofd-0.5g --out runs/s05 --resume          # after a kill
    damofd search --preset damofd-2.5g --iterations 20000 --budget-flops 300e6 --out runs/s25
    damofd search --space idw --init @seed.txt --budget-flops 65e6 --max-layers 14 --out runs/x
    damofd search --preset damofd-0.5g --faithful --out runs/ref        # the reference algorithm

Writes ``OUT/best_structure.txt`` and ``OUT/report.json`` (also at every checkpoint), the
resumable state ``OUT/search_state.json`` + ``OUT/search_seen.txt`` and ``OUT/search.log``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from damofd.cli._types import finite_float
from damofd.errors import ConfigError, InputError

HELP = "evolutionary backbone search with DDSAR"

__all__ = ["HELP", "add_arguments", "run"]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (e.g. 65e6), got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from damofd.search.presets import PRESETS
    from damofd.search.scoring import PROXIES

    g = p.add_argument_group("what to search")
    g.add_argument("--preset", help=f"official search script: {', '.join(PRESETS)}")
    g.add_argument("--space", help="search space: idw | xxbl")
    g.add_argument("--init", metavar="STRUCT", help="initial structure (string, @FILE or a file)")
    g.add_argument("--proxy", help=f"score to maximise: {', '.join(PROXIES)} (default ddsar)")
    g.add_argument("--alpha", type=finite_float, help="DDSAR α (default 0.005)")
    g.add_argument("--stage-weights", metavar="W0,...", help="DDSAR stage weights")
    g.add_argument("--resolution", type=int, help="square input size for costs and score (224)")
    b = p.add_argument_group("budgets (search-rule costs at --resolution)")
    b.add_argument("--budget-flops", type=_float, metavar="F", help="max FLOPs, e.g. 65e6")
    b.add_argument(
        "--budget-params", type=_float, metavar="P", help="max params (incl. classifier)"
    )
    b.add_argument("--max-layers", type=int, metavar="L", help="max Σ sub_layers")
    b.add_argument(
        "--budget-latency", type=_float, metavar="MS", help="max measured latency in ms (torch)"
    )
    b.add_argument(
        "--allow-init-over-budget",
        action="store_true",
        default=None,
        help="accept an initial structure that is over budget (its mutants must still fit)",
    )
    e = p.add_argument_group("evolution")
    e.add_argument("--population", type=int, metavar="N", help="population size (512)")
    e.add_argument("--iterations", type=int, metavar="N", help="iterations (96000)")
    e.add_argument("--seed", type=int, help="RNG seed (0)")
    e.add_argument("--top-k", type=int, metavar="K", help="distinct best structures kept (10)")
    e.add_argument(
        "--proposals",
        type=int,
        metavar="N",
        help="mutants tried per iteration until one fits the budgets and is new (8; 1 = reference)",
    )
    e.add_argument(
        "--no-dedup", action="store_true", help="score and keep duplicate structures (reference)"
    )
    e.add_argument(
        "--faithful",
        action="store_true",
        help="the released algorithm exactly: --no-dedup --proposals 1",
    )
    e.add_argument("--no-quirks", action="store_true", help="exact FLOPs/params counting")
    e.add_argument("--num-classes", type=int, help="classifier width in params/latency (1000)")
    e.add_argument("--device", help="torch device for torch proxies / latency (cpu)")
    e.add_argument("--batch-size", type=int, help="batch size of the torch proxies (16)")
    e.add_argument("--latency-batch-size", type=int, help="batch size of the latency check (1)")
    e.add_argument("--latency-threads", type=int, help="torch threads for the latency check (1)")
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", default="damofd-search", metavar="DIR", help="output directory (./damofd-search)"
    )
    o.add_argument(
        "--checkpoint-every", type=int, default=2000, metavar="N", help="checkpoint interval (2000)"
    )
    o.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    o.add_argument("--force", action="store_true", help="discard a search already saved in --out")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--json", action="store_true", help="print the final report as one JSON object")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields given explicitly on the command line."""
    from damofd.cli.score import parse_float_list, read_structure_arg

    o: dict[str, Any] = {}
    simple = {
        "space": "space",
        "proxy": "proxy",
        "alpha": "alpha",
        "resolution": "resolution",
        "budget_flops": "budget_flops",
        "budget_params": "budget_params",
        "max_layers": "max_layers",
        "budget_latency": "budget_latency_ms",
        "population": "population",
        "iterations": "iterations",
        "seed": "seed",
        "top_k": "top_k",
        "proposals": "proposals",
        "num_classes": "num_classes",
        "device": "device",
        "batch_size": "proxy_batch_size",
        "latency_batch_size": "latency_batch_size",
        "latency_threads": "latency_threads",
        "allow_init_over_budget": "allow_init_over_budget",
    }
    for arg, key in simple.items():
        v = getattr(args, arg)
        if v is not None:
            o[key] = v
    if args.init is not None:
        o["init"] = read_structure_arg(args.init, "--init").format()
    if args.stage_weights is not None:
        o["stage_weights"] = parse_float_list(args.stage_weights, "--stage-weights")
    if args.no_dedup or args.faithful:
        o["dedup"] = False
    if args.faithful:
        if o.get("proposals", 1) != 1:
            raise ConfigError("--faithful runs one proposal per iteration; drop --proposals")
        o["proposals"] = 1
    if args.no_quirks:
        o["proj_double_stride"] = False
        o["linear_bias_as_one"] = False
    return o


def _build_config(args: argparse.Namespace, o: dict[str, Any]):  # -> SearchConfig
    from damofd.search.evolution import SearchConfig

    if args.preset:
        return SearchConfig.from_preset(args.preset, **o)
    if "init" not in o:
        raise ConfigError(
            "give --preset NAME or --init STRUCT (with --space and budgets); "
            "valid presets: damofd-0.5g, damofd-2.5g, damofd-10g, damofd-34g"
        )
    return SearchConfig(**o)


def _check_resume_compatible(saved, args: argparse.Namespace, o: dict[str, Any]) -> None:
    if args.preset and args.preset.lower() != (saved.preset or ""):
        raise ConfigError(
            f"--resume: the saved search used preset {saved.preset!r}, not {args.preset!r}"
        )
    diffs = []
    for key, value in o.items():
        if key == "iterations":
            continue
        old = getattr(saved, key)
        if isinstance(old, tuple):
            value = tuple(value)
        if old != value:
            diffs.append(f"{key}: saved {old!r}, given {value!r}")
    if diffs:
        raise ConfigError(
            "--resume: these options differ from the saved search (only --iterations may "
            "change): " + "; ".join(diffs)
        )


def _resume_search(args: argparse.Namespace, o: dict[str, Any], out: Path):  # -> EvolutionSearch
    """The search saved in ``out``, after checking that ``args`` agree with its config."""
    from damofd.io import ensure_writable_dir
    from damofd.search.evolution import STATE_FILE, EvolutionSearch, SearchConfig

    state_path = out / STATE_FILE
    try:
        saved = SearchConfig.from_dict(json.loads(state_path.read_text())["config"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read search state {str(state_path)!r}: {e}") from None
    _check_resume_compatible(saved, args, o)
    ensure_writable_dir(out, "--out")
    search = EvolutionSearch.resume(
        out,
        iterations=o.get("iterations"),
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
    )
    sys.stderr.write(
        f"damofd search: resuming {str(out)!r} at iteration {search.iteration}"
        f"/{search.config.iterations}\n"
    )
    return search


def _new_search(args: argparse.Namespace, o: dict[str, Any], out: Path):  # -> EvolutionSearch
    """A fresh search into ``out`` (whose old search files ``--force`` deletes)."""
    from damofd.io import ensure_writable_dir
    from damofd.search.evolution import (
        BEST_FILE,
        LOG_FILE,
        REPORT_FILE,
        SEEN_FILE,
        STATE_FILE,
        EvolutionSearch,
    )

    # validate the options and the initial structure before touching --out
    search = EvolutionSearch(
        _build_config(args, o),
        out,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
    )
    if (out / STATE_FILE).exists():
        if not args.force:
            raise ConfigError(
                f"{str(out)!r} already holds a search ({STATE_FILE}); pass --resume to "
                "continue it, --force to start over, or choose another --out"
            )
        for name in (STATE_FILE, SEEN_FILE, REPORT_FILE, BEST_FILE, LOG_FILE):
            (out / name).unlink(missing_ok=True)
    elif args.resume:
        sys.stderr.write(f"damofd search: nothing to resume in {str(out)!r}; starting\n")
    ensure_writable_dir(out, "--out")
    return search


def _print_result(result, out: Path, as_json: bool) -> int:  # result: SearchResult
    """Print the search result (one JSON object with ``as_json``); 1 if nothing was found."""
    from damofd.search.evolution import BEST_FILE, REPORT_FILE

    if as_json:
        print(json.dumps(result.to_dict()))
        return 0
    best = result.best
    if best is None:
        print(
            f"no candidate passed the budgets in {result.iterations_done} iterations "
            f"(rejections: {result.stats}); report: {out / REPORT_FILE}"
        )
        return 1
    print(f"best {result.config.proxy} {best.score:.6f}: {best.structure.format()}")
    if best.stages is not None:
        print("  per-block SAR: " + ", ".join(f"{s:.6f}" for s in best.stages))
    print(
        f"  FLOPs {best.cost.flops:,.0f} @{result.config.resolution}  params {best.cost.params:,}"
        f"  layers {best.cost.layers}"
    )
    print(
        f"{result.iterations_done} iterations, {result.accepted} accepted, "
        f"{result.wall_time_s:.1f} s; wrote {out / BEST_FILE} and {out / REPORT_FILE}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from damofd.io import remove_stale_tmp
    from damofd.search.evolution import STATE_FILE

    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.resume and args.force:
        raise ConfigError("--resume and --force contradict each other")
    if args.device is not None:
        from damofd.device import check_device

        check_device(args.device)  # before any work, as `damofd score` (not -9999 scores)
    o = _overrides(args)
    out = Path(args.out)
    if args.resume and (out / STATE_FILE).exists():
        search = _resume_search(args, o, out)
    else:
        search = _new_search(args, o, out)
    remove_stale_tmp(out)  # temporary files of a killed run (one search per folder)
    return _print_result(search.run(), out, args.json)
