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
    "align": ("damofd.cli.align", "aligned face crops (ArcFace 112x112) from the 5 keypoints"),
    "anonymize": ("damofd.cli.anonymize", "hide faces in photos and videos (with tracking)"),
    "serve": ("damofd.cli.serve", "HTTP face-detection service with batching and a web page"),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="damofd",
        description="DamoFD / SCRFD face detection toolkit (search, models, training, "
        "evaluation, export, inference). Flags mean the same in every verb: --out is a folder "
        "(DIR) where a verb writes several files and a file (FILE) where it writes one.",
    )
    from damofd._version import __version__

    parser.add_argument("--version", action="version", version=f"damofd {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            examples = examples_of(module.__doc__ or "")
            if examples:
                block = "examples:\n" + "\n".join(f"  {e}" for e in examples)
                p.epilog = f"{p.epilog}\n\n{block}" if p.epilog else block
                p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.set_defaults(_run=module.run)
    return parser


def examples_of(doc: str, limit: int = 3) -> list[str]:
    """The first ``limit`` commands of a verb module's ``Examples::`` block (shown at the end of
    its ``--help``); continuation lines (ending in a backslash) are joined."""
    lines = doc.splitlines()
    try:
        start = next(i for i, x in enumerate(lines) if x.rstrip().endswith("Examples::"))
    except StopIteration:
        return []
    out: list[str] = []
    pending = ""
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        text = line.strip().replace("\\\\", "\\")
        if pending:
            pending += " " + text.rstrip("\\").strip()
        elif text.startswith(("damofd", "torchrun")):
            pending = text.rstrip("\\").strip()
        if pending and not text.endswith("\\"):
            out.append(pending)
            pending = ""
        if len(out) == limit:
            break
    return out


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
    except BrokenPipeError:
        return 0
    except (DamoFDError, OSError) as e:
        if os.environ.get("DAMOFD_DEBUG"):
            raise
        # a verb with sub-commands may name the one that failed (e.g. "damofd data convert")
        prefix = getattr(args, "_error_prefix", None) or f"damofd {args.verb}"
        sys.stderr.write(f"{prefix}: error: {_one_line(e)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("damofd: interrupted\n")
        return 130


def _one_line(e: BaseException) -> str:
    """The message of a user error (its ``cli_message`` when it has one); an OSError from the
    system as "'path': reason"."""

    def name(f: object) -> str:
        return repr(os.fspath(f) if isinstance(f, (str, bytes, os.PathLike)) else f)

    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        where = name(e.filename)
        if e.filename2 is not None:
            where += f" -> {name(e.filename2)}"
        return f"{where}: {e.strerror[0].lower()}{e.strerror[1:]}"
    # an error may carry command-line wording of its advice (flags instead of API arguments)
    return str(getattr(e, "cli_message", None) or e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
