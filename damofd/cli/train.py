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
    g = parser.add_argument_group("data")
    g.add_argument(
        "--train",
        metavar="DIR",
        help="training set: folder with labelv2.txt + images/ (or a ModelScope split folder, "
        "or a labelv2 file)",
    )
    g.add_argument("--train-labels", metavar="FILE", help="labelv2 annotation file")
    g.add_argument("--train-images", metavar="DIR", help="image folder of --train-labels")
    g.add_argument(
        "--val",
        metavar="DIR",
        help="validation folder: WIDER split (images/<event>/*.jpg) with --val-gt, or a "
        "labelv2.txt + images/ folder",
    )
    g.add_argument("--val-gt", metavar="DIR", help="folder with the wider_*_val.mat files")
    g.add_argument("--batch-size", type=int, metavar="N", help="images per GPU/process")
    g.add_argument("--workers", type=int, metavar="N", help="data loader workers per process")
    g.add_argument("--img-size", type=int, metavar="PX", help="training input side (640)")
    g.add_argument(
        "--patch-size",
        type=int,
        metavar="PX",
        help="patch training: PX×PX crops with the same face scales as the recipe's img_size "
        "(crop scales × PX/img_size), about 4× cheaper per sample at 320; fine-tune at the "
        "full size afterwards (docs/training.md)",
    )
    o = parser.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, metavar="N", help="total epochs (recipe: 640)")
    o.add_argument("--lr", type=positive_float, metavar="LR", help="learning rate (see below)")
    o.add_argument("--auto-scale-lr", action="store_true", help="linear lr scaling rule")
    o.add_argument("--warmup-iters", type=int, metavar="N", help="linear warm-up iterations")
    o.add_argument(
        "--lr-policy",
        choices=("step", "cosine"),
        help="step decay (the recipes) or cosine annealing by iteration (short runs)",
    )
    o.add_argument("--max-iters", type=int, metavar="N", help="stop after N iterations")
    o.add_argument(
        "--time-limit",
        type=positive_float,
        metavar="MIN",
        help="stop (saving latest.pth) after MIN minutes",
    )
    r = parser.add_argument_group("run")
    r.add_argument("--work-dir", required=True, metavar="DIR", help="output folder")
    r.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda or cuda:N")
    r.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    r.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    r.add_argument("--seed", type=int, metavar="S")
    r.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    r.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        help="continue from FILE, or from WORK_DIR/latest.pth when it exists",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="start over in a work dir that already holds a run (its checkpoints are replaced)",
    )
    r.add_argument(
        "--load-from",
        metavar="W",
        help="fine-tune from weights: .pth, official .onnx, ModelScope folder or id",
    )
    r.add_argument("--no-strict", action="store_true", help="non-strict key matching for W")
    r.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics frozen")
    r.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")
    r.add_argument("--eval-every", type=int, metavar="N", help="validate every N epochs (0=off)")
    r.add_argument(
        "--eval-metric", choices=("easy", "medium", "hard", "mean"), help="metric for best.pth"
    )
    r.add_argument("--eval-max-images", type=int, metavar="N", help="validate on N images")
    r.add_argument("--checkpoint-every", type=int, metavar="N", help="epoch_{n}.pth every N")
    r.add_argument(
        "--checkpoint-every-iters",
        type=int,
        metavar="N",
        help="refresh latest.pth every N iterations",
    )
    r.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optimizer.lr=0.02 (repeatable)",
    )
    r.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )


def build_config(args: argparse.Namespace):  # -> TrainConfig
    """The :class:`~damofd.training.config.TrainConfig` described by the parsed arguments."""
    from damofd.errors import ConfigError
    from damofd.training.api import resolve_config
    from damofd.training.config import apply_overrides

    if args.model is None and not args.structure:
        raise ConfigError("give a model name or config file (MODEL_OR_CONFIG) or --structure")
    cfg = resolve_config(args.model, structure=args.structure)
    if args.train and args.train_labels:
        raise ConfigError("give either --train or --train-labels, not both")
    d = cfg.data
    if args.train:
        d.train = args.train
    if args.train_labels:
        d.train = args.train_labels
    if args.train_images:
        d.train_images = args.train_images
    if args.val:
        d.val = args.val
    if args.val_gt:
        d.val_gt = args.val_gt
    simple = {
        "batch_size": ("data", "samples_per_gpu"),
        "workers": ("data", "workers_per_gpu"),
        "img_size": ("data", "img_size"),
        "lr": ("optimizer", "lr"),
        "warmup_iters": ("lr_config", "warmup_iters"),
        "lr_policy": ("lr_config", "policy"),
        "eval_every": ("evaluation", "interval"),
        "eval_metric": ("evaluation", "metric"),
        "eval_max_images": ("evaluation", "max_images"),
        "checkpoint_every": ("checkpoint_config", "interval"),
        "checkpoint_every_iters": ("checkpoint_config", "every_iters"),
    }
    for arg, (section, key) in simple.items():
        value = getattr(args, arg)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if args.epochs is not None:
        cfg.total_epochs = args.epochs
    if args.patch_size is not None:
        from damofd.training.config import patch_config

        patch_config(cfg, args.patch_size)
    if args.auto_scale_lr:
        cfg.optimizer.auto_scale_lr = True
    if args.max_iters is not None:
        cfg.max_iters = args.max_iters
    if args.time_limit is not None:
        cfg.time_limit = args.time_limit * 60.0
    if args.device:
        cfg.device = args.device
    if args.amp:
        cfg.amp = True
    if args.threads is not None:
        cfg.cpu_threads = args.threads
    if args.seed is not None:
        cfg.seed = args.seed
    if args.deterministic:
        cfg.deterministic = True
    if args.load_from:
        cfg.load_from = args.load_from
    if args.no_strict:
        cfg.load_strict = False
    if args.freeze_bn:
        cfg.freeze_bn = True
    if args.sync_bn:
        cfg.sync_bn = True
    if args.no_progress:
        cfg.log_config.progress = False
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
