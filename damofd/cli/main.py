"""``damofd`` command line: a thin dispatcher over one module per verb.

Each verb module in :mod:`damofd.cli` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their verb runs, so ``damofd eval-wider``
does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from damofd.errors import DamoFDError

# verb -> (module, one-line help). Kept here, not discovered, so `damofd --help` is instant.
VERBS: dict[str, tuple[str, str]] = {
    "score": ("damofd.cli.score", "zero-shot score (DDSAR or another proxy) of a structure"),
    "cost": ("damofd.cli.cost", "FLOPs / params / layers of a structure under the search rules"),
    "search": ("damofd.cli.search", "evolutionary backbone search with DDSAR"),
    "info": ("damofd.cli.info", "parameters and FLOPs of a detector (mmcv counting rules)"),
    "detect": ("damofd.cli.detect", "detect faces in images, folders, videos or a webcam"),
    "export": ("damofd.cli.export", "export a detector to ONNX"),
    "eval-wider": ("damofd.cli.eval_wider", "WIDER FACE AP of a folder of prediction files"),
    "eval": ("damofd.cli.eval", "run a detector over WIDER images and evaluate it"),
    "train": ("damofd.cli.train", "train a detector on WIDER FACE (CPU, GPU or torchrun DDP)"),
    "data": ("damofd.cli.data", "convert and check WIDER FACE annotations (labelv2)"),
    "zoo": ("damofd.cli.zoo", "list the model zoo"),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="damofd",
        description="DamoFD / SCRFD face detection toolkit (search, models, training, "
        "evaluation, export, inference).",
    )
    from damofd import __version__

    parser.add_argument("--version", action="version", version=f"damofd {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb is not None and verb not in VERBS:
        sys.stderr.write(f"damofd: unknown command {verb!r}; valid commands: {', '.join(VERBS)}\n")
        return 2
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args._run(args) or 0)
    except (DamoFDError, FileNotFoundError, PermissionError, NotADirectoryError) as e:
        if os.environ.get("DAMOFD_DEBUG"):
            raise
        sys.stderr.write(f"damofd {args.verb}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("damofd: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
