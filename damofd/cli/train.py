"""``damofd train``: train a detector (CPU, one GPU, or torchrun DDP on one or many nodes).

Examples::

    damofd train damofd-0.5g --train data/retinaface/train --val data/retinaface/val \\
        --work-dir runs/damofd_0.5g
    damofd train damofd-0.5g --train-labels labelv2/train/labelv2.txt \\
        --train-images WIDER_train/images --val WIDER_val --val-gt ground_truth \\
        --work-dir runs/r1 --epochs 20 --set data.img_size=480 --resume
    torchrun --nproc_per_node 4 -m damofd train damofd-10g --train ... --work-dir runs/10g
    damofd train --structure "$(cat best_structure.txt)" --train ... --work-dir runs/searched

The first argument is a zoo name, a config file (``.json``, ``.py``, or an official
``DamoFD_lms.py``) or a ModelScope model folder. Options are applied in this order: the recipe or
file, then the common flags, then ``--set key=value`` (dotted config keys, type-checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from damofd.cli._types import positive_float

HELP = "train a detector on WIDER FACE (CPU, GPU or torchrun DDP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "lr semantics: --lr is the rate for optimizer.base_batch_size images (the official 4 GPUs\n"
        "x 8); --auto-scale-lr rescales it linearly to world_size x batch-size. Fewer --epochs\n"
        "keep the lr steps at 440/640 and 544/640 of the run. Short CPU runs: --patch-size 320\n"
        "--lr-policy cosine. See docs/training.md."
    )
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL_OR_CONFIG",
        help="zoo name (damofd-0.5g, scrfd-2.5g-kps, ...), config file (.json/.py, "
        "DamoFD_lms.py) or ModelScope model folder",
    )
    parser.add_argument(
        "--structure",
        metavar="STR",
        help="DamoFD backbone structure string (a searched backbone); neck and head from "
        "MODEL, or from the DamoFD model of the nearest budget when MODEL is omitted",
    )
    add_option_arguments(parser)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`damofd.training.options.OPTIONS`, in table order and help groups."""
    from damofd.training.options import OPTIONS

    types = {"str": None, "int": int, "positive_float": positive_float}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in OPTIONS:
        if opt.flag is None:
            continue
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group)
        kw: dict[str, Any] = {"help": opt.help}
        if not opt.store_true:
            kw.update(type=types[opt.type], metavar=opt.metavar, choices=opt.choices)
        kw = {k: v for k, v in kw.items() if v is not None}
        if opt.store_true:  # absent: None, so the recipe's value stays
            kw.update(action="store_true", default=None)
        kw.update(opt.argparse)
        groups[opt.group].add_argument(opt.flag, **kw)


def build_config(args: argparse.Namespace):  # -> TrainConfig
    """The :class:`~damofd.training.config.TrainConfig` described by the parsed arguments."""
    from damofd.errors import ConfigError
    from damofd.training.api import resolve_config
    from damofd.training.config import apply_overrides
    from damofd.training.options import apply_options, cli_values

    if args.model is None and not args.structure:
        raise ConfigError("give a model name or config file (MODEL_OR_CONFIG) or --structure")
    cfg = resolve_config(args.model, structure=args.structure)
    if args.train and args.train_labels:
        raise ConfigError("give either --train or --train-labels, not both")
    apply_options(cfg, cli_values(args), names="cli")
    cfg.validate()
    return apply_overrides(cfg, args.overrides)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if args.print_config:
        sys.stdout.write(json.dumps(cfg.to_dict(), indent=2) + "\n")
        return 0
    from damofd.errors import ConfigError
    from damofd.training.trainer import Trainer

    if args.force and args.resume:
        raise ConfigError("--force starts over and --resume continues: give one of them")
    trainer = Trainer(cfg, args.work_dir, resume=args.resume, overwrite=args.force)
    result = trainer.train()
    if trainer.dist.is_main:
        summary = {
            "stopped": result.stopped,
            "epochs": result.epochs,
            "iters": result.iters,
            "latest": None if result.latest is None else str(result.latest),
            "best": None if result.best is None else str(result.best),
            "best_metric": result.best_metric,
            "last_eval": result.last_eval,
            "images_per_s": result.images_per_s,
        }
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0
