"""Reproduce the bundled detectors from the shared WIDER FACE subsets.

The bundled default is ``damofd-0.5g-bnkps`` (DamoFD-0.5G-KPS's backbone and neck with
SCRFD-500M-KPS's BatchNorm head); ``damofd-0.5g-kps`` (DamoFD's own GroupNorm head, the first
default) stays bundled. ``patch``, ``finetune``, ``bundle`` and ``card`` take ``--model``
(default ``damofd-0.5g-bnkps``). Every stage is a plain ``damofd`` command, printed before it
runs, so the model card can quote them and anyone can run them by hand::

    python benchmarks/train_default.py data                 # held-out 5 % split (seed 0)
    python benchmarks/train_default.py patch    [--minutes M]   # 320-px patch training, resumable
    python benchmarks/train_default.py finetune [--minutes M]   # short 640-px fine-tune, resumable
    python benchmarks/train_default.py bundle               # strip, export, evaluate, index
    python benchmarks/train_default.py restart  [--minutes M]   # second 320-px cycle, resumable
    python benchmarks/train_default.py finetune --after-restart # stage 2 again, from its end
    python benchmarks/train_default.py bundle --after-restart
    python benchmarks/train_default.py restart --cycle 2        # a third cycle, from that end
    python benchmarks/train_default.py finetune --after-restart 2 && ... bundle --after-restart 2
    python benchmarks/train_default.py shrink               # the training set, 51 MiB, to carry
    python benchmarks/train_default.py gpu [--start W] [--max-iters N]   # 640-px cycle, one GPU
    python benchmarks/train_default.py gpu-curve            # score the GPU checkpoints (CPU)
    python benchmarks/train_default.py cpu640 [--minutes M]  # the GPU recipe on the CPU after it
    python benchmarks/train_default.py bundle --after-restart --gpu-after 1 --cpu640  # shipped
    python benchmarks/train_default.py card   [--bench bench_infer.json]  # docs/model-card.md
    python benchmarks/train_default.py wide [--minutes M]   # damofd-0.5g-kps: 640 px, wide crops
    python benchmarks/train_default.py compare [--model scrfd-500m-kps]   # DamoFD vs SCRFD arm

The SCRFD arm of the comparison (issue 10 item 3) runs the identical recipe, seed, data and
sample count on another architecture: ``patch --model scrfd-500m-kps`` and ``finetune --model
scrfd-500m-kps`` (work dirs ``runs/arm-scrfd-500m-kps[-640]``); both stages pin the crop scales
(0.5G recipe: 1.0…2.0 at 640, 0.5…1.0 in 320 patches), so the recipes differ in nothing.

The shipped default ran the GPU cycle after cycle 1's fine-tune: ``gpu`` on a CUDA machine (via
``benchmarks/gpu_cycle.sh``, which sizes ``--max-iters`` to the time it has) from that
fine-tune's ``latest.pth``, over the ``shrink`` copy of the training set; it has no validation
there, so ``gpu-curve`` scores its checkpoints back on the CPU. Then ``cpu640`` ran the same
640-px cycle on the CPU from the GPU cycle's end (batch 8, lr scaled to the batch, 40 epochs,
validated every 8): the shipped weights are its last iteration.

``compare`` evaluates the arm's last checkpoint like ``bundle`` evaluates the default, sets its
in-training AP curve beside damofd-0.5g-kps's (same iterations of the same schedule), prints the
deltas beside the published ones and writes ``benchmarks/results/damofd_vs_<arm>.json``.

``patch`` and ``finetune`` resume from their work dir when run again (``--resume``), so a run cut
by a session's end continues where it stopped. ``bundle`` strips the optimizer state, exports
ONNX, evaluates both WIDER protocols on the val subset and the landmark error on the held-out
split (beside ``det_500m.onnx`` when it is present), and writes ``damofd/weights/`` and the
``bundled.json`` entry (sha256, AP, commands, CPU-hours).

The shared assets are found as the tests find them (``DAMOFD_ASSETS`` or ``../shared/assets``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from damofd.constants import BACKBONE_INIT_SCHEMES as INIT_SCHEMES
from damofd.testing import assets_dir

NAME = "damofd-0.5g-kps"
"""The DamoFD arm of the SCRFD comparison and the first bundled default (GroupNorm head)."""
DEFAULT = "damofd-0.5g-bnkps"
"""The bundled default since 2026-12 (DamoFD-0.5G-KPS with SCRFD-500M-KPS's BN head): the model
``patch``, ``finetune``, ``bundle`` and ``card`` train and describe when no ``--model`` is given."""
RUNS = Path("runs")
DATA = RUNS / "data"
PATCH_DIR = RUNS / "default-0.5g-kps"
FINETUNE_DIR = RUNS / "default-0.5g-kps-640"
WEIGHTS = Path(__file__).resolve().parents[1] / "damofd" / "weights"
HOLDOUT_NAMES = WEIGHTS / "holdout_train.txt"
SETTINGS = ("easy", "medium", "hard")


def _cpu_args(seed: int, every: int, every_iters: int) -> list[str]:
    """What every CPU stage shares: batch 8, one loader worker, 2 threads, ``seed``; validation
    and epoch checkpoints every ``every`` epochs, ``latest.pth`` every ``every_iters``."""
    return [
        "--batch-size", "8", "--workers", "1", "--threads", "2", "--device", "cpu",
        "--seed", str(seed), "--eval-every", str(every), "--checkpoint-every", str(every),
        "--checkpoint-every-iters", str(every_iters), "--no-progress",
    ]  # fmt: skip


# the recipe of the bundled model (docs/model-card.md); only --time-limit differs between sessions
PATCH_ARGS = [
    "--patch-size", "320", "--lr-policy", "cosine", "--lr", "0.01", "--warmup-iters", "300",
    *_cpu_args(seed=0, every=10, every_iters=200),
]  # fmt: skip
PATCH_EPOCHS = 160
"""Patch epochs of the first bundled default; ``patch --epochs`` shortens the cosine schedule."""
# the 0.5G recipe's RandomSquareCrop scales, pinned so every architecture trains identically
CROP_640 = "[1.0,1.2,1.4,1.6,1.8,2.0]"
CROP_320 = "[0.5,0.6,0.7,0.8,0.9,1.0]"
# SCRFD's wider range: crops down to 0.3 of the short side enlarge faces up to 3x, so the model
# also sees the large faces that 320-px patches cannot hold (close-up portraits)
CROP_WIDE = "[0.3,0.45,0.6,0.8,1.0,1.2,1.4,1.6,1.8,2.0]"
WIDE_DIR = RUNS / "default-0.5g-kps-640w"


def _fine_args(warmup: int, epochs: int) -> list[str]:
    """A 640-px fine-tune: lr 0.001 with a cosine decay (the 640-px stages differ only in
    warm-up and length)."""
    lr = ["--lr-policy", "cosine", "--lr", "0.001", "--warmup-iters", str(warmup)]
    return [*lr, "--epochs", str(epochs), *_cpu_args(seed=0, every=2, every_iters=50)]


FINETUNE_ARGS = _fine_args(warmup=50, epochs=6)
WIDE_ARGS = _fine_args(warmup=30, epochs=4)
# stage 3: a second 320-px cosine cycle (warm restart) from the fine-tuned model, with a new seed
# for a new sample order; then ``finetune --after-restart`` repeats stage 2 from its end. Cycle N
# (``restart --cycle N``) starts from the fine-tune after cycle N - 1 and uses seed N.
RESTART_EPOCHS = 60


RESTART_LR = 0.005


def _restart_args(cycle: int, epochs: int = RESTART_EPOCHS, lr: float = RESTART_LR) -> list[str]:
    return [
        "--patch-size", "320", "--lr-policy", "cosine", "--lr", str(lr), "--warmup-iters", "100",
        *_cpu_args(seed=cycle, every=10, every_iters=200), "--epochs", str(epochs),
    ]  # fmt: skip


def _assets() -> dict[str, Path]:
    root = assets_dir()
    if root is None:
        raise SystemExit("shared assets not found (set DAMOFD_ASSETS)")
    w = root / "widerface"
    return {
        "kps": w / "labelv2/train/labelv2_kps.txt",
        "images": w / "WIDER_train/images",
        "val": w / "WIDER_val",
        "gt": w / "ground_truth",
        "det_500m": root / "models/scrfd/det_500m.onnx",
    }


def _damofd(argv: list[str]) -> int:
    from damofd.cli.main import main

    print("$ damofd " + shlex.join(argv), flush=True)
    return int(main(argv) or 0)


def _dirs(model: str, epochs: int = PATCH_EPOCHS, init: str = "official") -> tuple[Path, Path]:
    """Work dirs of the patch and fine-tune stages for ``model`` (``epochs`` of patches, backbone
    conv ``init``)."""
    if model == NAME and epochs == PATCH_EPOCHS and init == "official":
        return PATCH_DIR, FINETUNE_DIR
    tag = "" if epochs == PATCH_EPOCHS else f"-e{epochs}"
    tag += "" if init == "official" else f"-{init}"
    return RUNS / f"arm-{model}{tag}", RUNS / f"arm-{model}{tag}-640"


def _restart_dirs(
    model: str, epochs: int = PATCH_EPOCHS, init: str = "official", cycle: int = 1
) -> tuple[Path, Path]:
    """Work dirs of warm-restart ``cycle`` (1, 2, ...) and of the fine-tune after it."""
    if cycle < 1:
        raise ValueError(f"restart cycle must be >= 1, got {cycle}")
    patch_dir, _ = _dirs(model, epochs, init)
    tag = _restart_stages(cycle)[0]
    return Path(f"{patch_dir}-{tag}"), Path(f"{patch_dir}-{tag}-640")


def _restart_stages(cycle: int) -> tuple[str, str]:
    """Names of restart ``cycle``'s two stages in bundled.json: restart/finetune2 for the first,
    restart2/finetune3 for the second, ..."""
    return ("restart" if cycle == 1 else f"restart{cycle}"), f"finetune{cycle + 1}"


CYCLES = range(1, 10)
"""The warm-restart cycles ``--cycle`` and ``--after-restart`` accept."""


def _cycle_flag(flag: str, cycle: int) -> str:
    """`` --cycle N`` / `` --after-restart [N]`` as the reproduce command writes it (cycle 1 is
    the flags' default: ``--cycle`` omitted, ``--after-restart`` bare)."""
    if flag == "--cycle":
        return "" if cycle == 1 else f" --cycle {cycle}"
    return " --after-restart" + ("" if cycle == 1 else f" {cycle}")


def _add_after_restart(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--after-restart", type=int, nargs="?", const=1, default=0, metavar="N",
        choices=CYCLES, help=help,
    )  # fmt: skip


def _stage_label(stage: str) -> str:
    fixed = {
        "patch": "320-px patches",
        "finetune": "640-px fine-tune",
        "wide": "640-px, wide crops",
    }
    if stage in fixed:
        return fixed[stage]
    if stage == "gpu":
        return "640-px GPU cycle"
    if stage == "cpu640":
        return "640-px CPU cycle"
    if stage.startswith("restart"):
        return f"320-px warm restart {stage.removeprefix('restart') or '1'}"
    return f"640-px fine-tune {stage.removeprefix('finetune')}"


def _stage_dirs(
    model: str, epochs: int, init: str, restarts: int, gpu_after: int = 0, cpu640: bool = False
) -> dict[str, Path | None]:
    """Work dir of every stage of ``model``'s run, in order, through ``restarts`` warm-restart
    cycles (and the GPU cycle ``gpu`` after cycle ``gpu_after``'s fine-tune, when > 0, with the
    CPU cycle ``cpu640`` right after it when ``cpu640``); ``None`` for a stage that is not part
    of it (``wide`` exists only for the damofd-0.5g-kps run)."""
    patch_dir, finetune_dir = _dirs(model, epochs, init)
    dirs: dict[str, Path | None] = {
        "patch": patch_dir,
        "finetune": finetune_dir,
        "wide": WIDE_DIR if (model, epochs, init) == (NAME, PATCH_EPOCHS, "official") else None,
    }
    for cycle in range(1, restarts + 1):
        stages = _restart_stages(cycle)
        dirs.update(zip(stages, _restart_dirs(model, epochs, init, cycle)))
        if cycle == gpu_after:
            dirs["gpu"] = GPU_DIR
            if cpu640:
                dirs["cpu640"] = CPU640_DIR
    return dirs


def _train_common(a: dict[str, Path], work_dir: Path, model: str = NAME) -> list[str]:
    return [
        "train", model, "--train-labels", str(DATA / "train95_kps.txt"),
        "--train-images", str(a["images"]), "--val", str(a["val"]), "--val-gt", str(a["gt"]),
        "--work-dir", str(work_dir),
    ]  # fmt: skip


def stage_data(args: argparse.Namespace) -> int:
    a = _assets()
    DATA.mkdir(parents=True, exist_ok=True)
    argv = [
        "data", "subset", str(a["kps"]), "--fraction", "0.05", "--seed", "0", "--force",
        "--out", str(DATA / "holdout_kps.txt"), "--names-out", str(DATA / "holdout.txt"),
        "--rest-out", str(DATA / "train95_kps.txt"),
    ]  # fmt: skip
    rc = _damofd(argv)
    committed = [x for x in HOLDOUT_NAMES.read_text().splitlines() if x and x[0] != "#"]
    if (DATA / "holdout.txt").read_text().split() != committed:
        raise SystemExit(f"the held-out split differs from the committed {HOLDOUT_NAMES}")
    return rc


def _resume_flag(work_dir: Path) -> list[str]:
    return ["--resume"] if (work_dir / "latest.pth").is_file() else []


def stage_patch(args: argparse.Namespace) -> int:
    a = _assets()
    patch_dir, _ = _dirs(args.model, args.epochs, args.init)
    limit = ["--time-limit", str(args.minutes)] if args.minutes else []
    pin = ["--set", f"data.crop_choice={CROP_320}", "--set", f"backbone_init={args.init}"]
    epochs = ["--epochs", str(args.epochs)]
    argv = _train_common(a, patch_dir, args.model) + PATCH_ARGS + epochs + pin
    return _damofd(argv + _resume_flag(patch_dir) + limit)


def _fine_tune(
    args: argparse.Namespace, work_dir: Path, start: Path, run_args: list[str], crops: str
) -> int:
    """A 640-px stage in ``work_dir``: resumes it, else starts from ``--start`` or ``start``."""
    a = _assets()
    limit = ["--time-limit", str(args.minutes)] if args.minutes else []
    begin = ["--load-from", str(args.start or start)]
    pin = ["--set", f"data.crop_choice={crops}"]
    argv = _train_common(a, work_dir, getattr(args, "model", NAME)) + run_args + pin
    return _damofd(argv + (_resume_flag(work_dir) or begin) + limit)


def stage_finetune(args: argparse.Namespace) -> int:
    patch_dir, finetune_dir = _dirs(args.model, args.epochs, args.init)
    if args.after_restart:  # stage 4: the same fine-tune from the end of a warm restart
        patch_dir, finetune_dir = _restart_dirs(
            args.model, args.epochs, args.init, args.after_restart
        )
    run_args = FINETUNE_ARGS
    if args.fine_epochs is not None:  # a shorter fine-tune, validated once at its end
        run_args = _fine_args(warmup=50, epochs=args.fine_epochs)
        run_args[run_args.index("--eval-every") + 1] = str(args.fine_epochs)
    return _fine_tune(args, finetune_dir, patch_dir / "latest.pth", run_args, CROP_640)


def stage_restart(args: argparse.Namespace) -> int:
    """Stage 3: another 320-px cosine cycle (lr 0.005, 60 epochs, seed = cycle) from the
    fine-tuned model: cycle 1 from the first fine-tune, cycle N from the fine-tune after N - 1."""
    cycle = args.cycle
    if cycle == 1:
        _, finetune_dir = _dirs(args.model, args.epochs, args.init)
    else:
        _, finetune_dir = _restart_dirs(args.model, args.epochs, args.init, cycle - 1)
    restart_dir, _ = _restart_dirs(args.model, args.epochs, args.init, cycle)
    run_args = _restart_args(cycle, args.restart_epochs, args.lr)
    return _fine_tune(args, restart_dir, finetune_dir / "latest.pth", run_args, CROP_320)


def stage_wide(args: argparse.Namespace) -> int:
    """Stage 3: a short 640-px fine-tune with SCRFD's wide crop range (large faces)."""
    return _fine_tune(args, WIDE_DIR, FINETUNE_DIR / "latest.pth", WIDE_ARGS, CROP_WIDE)


GPU_DATA = RUNS / "gpu_data"
"""The training set shrunk to travel to a GPU machine (``shrink``): 0.7x images, JPEG 60."""
GPU_DIR = RUNS / "default-gpu"
GPU_ARGS = [
    "--device", "cuda", "--batch-size", "64", "--workers", "14", "--threads", "2",
    "--lr-policy", "cosine", "--lr", "0.03", "--warmup-iters", "200", "--seed", "0",
    "--eval-every", "0", "--checkpoint-every", "10", "--checkpoint-every-iters", "100",
    "--no-progress",
]  # fmt: skip
"""The GPU cycle's recipe: full-resolution 640-px crops (the 0.5G recipe's 1.0-2.0 scales),
batch 64 on one GPU, a cosine cycle; no validation there (the val images stay behind)."""


CPU640_DIR = RUNS / "default-gpu-cpu640"
CPU640_LR = 0.004
CPU640_EPOCHS = 40
CPU640_ARGS = [
    "--lr-policy", "cosine", "--lr", str(CPU640_LR), "--warmup-iters", "200",
    *_cpu_args(seed=1, every=8, every_iters=100), "--epochs", str(CPU640_EPOCHS),
]  # fmt: skip
"""The CPU cycle after the GPU cycle: the GPU recipe (640-px crops, scales 1.0-2.0, cosine,
200 warm-up iterations) at batch 8 on the full-resolution images, its lr 0.03 scaled linearly
to the batch (0.03 x 8 / 64 = 0.00375, rounded to 0.004); validated every 8 epochs."""


def stage_cpu640(args: argparse.Namespace) -> int:
    """A 640-px cosine cycle on the CPU from the GPU cycle's end (``CPU640_ARGS``)."""
    return _fine_tune(args, CPU640_DIR, GPU_DIR / "latest.pth", CPU640_ARGS, CROP_640)


def stage_shrink(args: argparse.Namespace) -> int:
    """The training images scaled by 0.7 and re-encoded (JPEG 60) with their labels, ~51 MiB
    instead of ~119: small enough to carry to a GPU machine (``damofd data shrink``)."""
    a = _assets()
    argv = [
        "data", "shrink", str(DATA / "train95_kps.txt"), "--images", str(a["images"]),
        "--scale", "0.7", "--quality", "60", "--out", str(args.out), "--force",
    ]  # fmt: skip
    return _damofd(argv)


def stage_gpu(args: argparse.Namespace) -> int:
    """A 640-px cosine cycle on one CUDA GPU from ``--start`` (default: the bundled default
    after its CPU cycles), on the ``shrink`` folder. Needs no shared assets: the folder and the
    start weights travel with the repository."""
    start = args.start or str(WEIGHTS / f"{args.model}.pth")
    argv = [
        "train", args.model, "--train", str(args.train), "--work-dir", str(args.work_dir),
        *GPU_ARGS, "--epochs", str(args.epochs), "--set", f"data.crop_choice={CROP_640}",
    ]  # fmt: skip
    for flag in ("--checkpoint-every", "--device", "--batch-size", "--workers"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv[argv.index(flag) + 1] = str(value)
    if args.max_iters:
        argv += ["--max-iters", str(args.max_iters)]
    for kv in args.set or []:
        argv += ["--set", kv]
    if args.minutes:
        argv += ["--time-limit", str(args.minutes)]
    if args.force:
        argv += ["--force"]
    return _damofd(argv + (_resume_flag(Path(args.work_dir)) or ["--load-from", start]))


def _log_records(work_dir: Path | None, mode: str | None = None) -> list[dict[str, Any]]:
    """The records of ``work_dir/log.jsonl`` (those of one ``mode`` when given); none when the
    run or its log is absent."""
    log = None if work_dir is None else work_dir / "log.jsonl"
    if log is None or not log.is_file():
        return []
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return [r for r in recs if mode is None or r.get("mode") == mode]


def _run_config(work_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.json``; empty when the run or the file is absent."""
    cfg = None if work_dir is None else work_dir / "config.json"
    return json.loads(cfg.read_text()) if cfg is not None and cfg.is_file() else {}


def _train_hours(work_dir: Path | None) -> float:
    stops = _log_records(work_dir, "stop")
    return sum(float(r.get("session_s", 0.0)) for r in stops) / 3600


def _run_epochs(work_dir: Path | None) -> int | None:
    """``total_epochs`` of the run in ``work_dir`` (its config.json), if any."""
    epochs = _run_config(work_dir).get("total_epochs")
    return None if epochs is None else int(epochs)


def _val_curve(work_dir: Path | None) -> list[dict[str, Any]]:
    """The run's in-training validations, else ``val_curve.json`` (``gpu-curve``: checkpoints of
    a run without validation, scored afterwards)."""
    if work_dir is None:
        return []
    curve = [
        {k: r[k] for k in ("epoch", "iter", "easy", "medium", "hard") if k in r}
        for r in _log_records(work_dir, "val")
    ]
    scored = work_dir / "val_curve.json"
    if not curve and scored.is_file():
        curve = json.loads(scored.read_text())
    return curve


def stage_gpu_curve(args: argparse.Namespace) -> int:
    """Score the GPU cycle's checkpoints (epoch_N.pth, latest.pth) on the val subset (vga, score
    0.02, as the CPU stages validate) and write ``<work dir>/val_curve.json``."""
    import torch

    a = _assets()
    work = Path(args.work_dir)
    ckpts = sorted(work.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    curve = []
    for ckpt in [*ckpts, work / "latest.pth"]:
        meta = torch.load(ckpt, map_location="cpu", weights_only=False)["meta"]
        rec = {"epoch": meta.get("epoch"), "iter": meta.get("iter"), "checkpoint": ckpt.name}
        rec.update(_score_checkpoint(ckpt, a))
        print(rec, flush=True)
        if curve and curve[-1]["iter"] == rec["iter"]:
            continue  # latest.pth is the last epoch_N.pth
        curve.append(rec)
    from damofd.io import atomic_write_text

    atomic_write_text(work / "val_curve.json", json.dumps(curve, indent=1) + "\n")
    return 0


def _landmarks(detector: Any, a: dict[str, Path]) -> dict[str, Any]:
    from damofd.data.labelv2 import read_labelv2
    from damofd.data.subset import read_name_list, select_images
    from damofd.evaluation.landmarks import landmark_nme

    anns = select_images(read_labelv2(a["kps"]), include=read_name_list(HOLDOUT_NAMES)).selected
    preds = {}
    for ann, res in zip(anns, detector.predict([str(a["images"] / x.name) for x in anns])):
        preds[ann.name] = (res.boxes, res.scores, res.keypoints)
    return landmark_nme(preds, anns).to_dict()


def _evaluate_onnx(onnx: Path, a: dict[str, Path], tag: str) -> dict[str, dict[str, Any]]:
    """AP of ``onnx`` on the val subset with both protocols (score 0.02), images and seconds."""
    from damofd.engine.wider_eval import run_wider_eval

    results: dict[str, dict[str, Any]] = {}
    for protocol in ("vga", "original"):
        t0 = time.perf_counter()
        ev = run_wider_eval(
            str(onnx), str(a["val"]), str(a["gt"]), protocol=protocol, score_thr=0.02,
            subset=True, work_dir=str(RUNS / f"eval-{tag}-{protocol}"), fresh=True, threads=2,
            progress=False,
        )  # fmt: skip
        results[protocol] = {
            **{k: getattr(ev.result, k) for k in SETTINGS},
            "images": len(ev.detected) + len(ev.reused),
            "seconds": time.perf_counter() - t0,
        }
        print(tag, protocol, results[protocol], flush=True)
    return results


def stage_bundle(args: argparse.Namespace) -> int:
    import torch

    from damofd.export.onnx import export_onnx_detailed
    from damofd.inference import FaceDetector
    from damofd.models.bundled import sha256_file
    from damofd.models.checkpoint import save_checkpoint
    from damofd.models.factory import load_model
    from damofd.models.zoo import get_config, get_model_info

    a = _assets()
    name, epochs = args.model, args.epochs
    if args.cpu640 and not (args.gpu_after and args.gpu_after == args.after_restart):
        raise SystemExit("--cpu640 follows the GPU cycle: give --gpu-after N = --after-restart N")
    dirs = _stage_dirs(name, epochs, args.init, args.after_restart, args.gpu_after, args.cpu640)
    last = dirs[_restart_stages(args.after_restart)[1] if args.after_restart else "finetune"]
    if args.gpu_after and args.gpu_after == args.after_restart:
        last = dirs["cpu640" if args.cpu640 else "gpu"]  # the GPU cycle (and its CPU cycle)
    assert last is not None
    ckpt = Path(args.checkpoint) if args.checkpoint else last / "latest.pth"
    meta = torch.load(ckpt, map_location="cpu", weights_only=False)["meta"]
    model = load_model(ckpt)
    if model.config != get_config(name):  # by architecture: a config-file run records no name
        raise SystemExit(f"{ckpt} holds a {model.name or 'different'} model, not --model {name}")
    model.name = name
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    pth = WEIGHTS / f"{name}.pth"
    onnx = WEIGHTS / f"{name}.onnx"
    keep = {k: meta[k] for k in ("epoch", "iter", "train_config") if k in meta}
    save_checkpoint(model, pth, meta={**keep, "source": ckpt.name})
    export_onnx_detailed(str(pth), str(onnx), dynamic=True, verify=True)
    print(f"wrote {pth} and {onnx}", flush=True)

    results = _evaluate_onnx(onnx, a, "bundle")
    lm = {name: _landmarks(FaceDetector.from_onnx(onnx, score_thr=0.5), a)}
    if a["det_500m"].is_file():
        lm["det_500m.onnx"] = _landmarks(FaceDetector.from_onnx(a["det_500m"], score_thr=0.5), a)
    print("landmarks", lm, flush=True)

    index_path = WEIGHTS / "bundled.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    prev = index.get(name, {})
    cpu_dirs = {k: d for k, d in dirs.items() if k != "gpu"}
    hours = {stage: _train_hours(d) for stage, d in cpu_dirs.items()}
    curves = {stage: _val_curve(d) for stage, d in dirs.items()}
    for stage in cpu_dirs:  # stages whose work dir is gone: as the last bundle recorded them
        if not hours[stage] and prev.get("wall_hours_2_threads", {}).get(stage):
            hours[stage] = float(prev["wall_hours_2_threads"][stage])
            curves[stage] = curves[stage] or prev.get("val_curve", {}).get(stage, [])
    gpu = _gpu_record(dirs.get("gpu")) if "gpu" in dirs else None
    cmd = "python benchmarks/train_default.py"
    sel = f" --model {name}" + ("" if epochs == PATCH_EPOCHS else f" --epochs {epochs}")
    fine_epochs = _run_epochs(dirs["finetune"]) or 6
    fine_sel = "" if fine_epochs == 6 else f" --fine-epochs {fine_epochs}"
    ran = [k for k in dirs if hours.get(k, 0) > 0 or (k == "gpu" and gpu)]
    stage_cmd = {"finetune": f"finetune{sel}{fine_sel}"}
    cycle_recipe = {}
    for cycle in range(1, args.after_restart + 1):
        restart, finetune = _restart_stages(cycle)
        cfg = _run_config(dirs[restart])
        r_epochs = cfg.get("total_epochs", RESTART_EPOCHS)
        r_lr = cfg.get("optimizer", {}).get("lr", RESTART_LR)
        from_gpu = bool(args.gpu_after) and cycle - 1 == args.gpu_after
        extra = "" if r_epochs == RESTART_EPOCHS else f" --restart-epochs {r_epochs}"
        extra += "" if r_lr == RESTART_LR else f" --lr {r_lr}"
        extra += f" --start {dirs['gpu']}/latest.pth" if from_gpu else ""
        stage_cmd[restart] = f"restart{sel}{_cycle_flag('--cycle', cycle)}{extra}"
        stage_cmd[finetune] = f"finetune{sel}{_cycle_flag('--after-restart', cycle)}"
        cycle_recipe[restart] = (r_epochs, r_lr, from_gpu)
    if gpu:  # from the fine-tune before it (the gpu stage's default start is the bundled .pth)
        before = dirs[_restart_stages(args.gpu_after)[1]]
        stage_cmd["gpu"] = (
            f"shrink && {cmd} gpu{sel} --start {before}/latest.pth --epochs {gpu['epochs_arg']} "
            f"--max-iters {gpu['iterations']} --checkpoint-every {gpu['checkpoint_every']}"
        )
    if "cpu640" in ran:
        stage_cmd["cpu640"] = f"cpu640{sel} --start {GPU_DIR}/latest.pth"
    stages = " && ".join(f"{cmd} {stage_cmd.get(k, k + sel)}" for k in ran)
    after = _cycle_flag("--after-restart", args.after_restart) if args.after_restart else ""
    after += f" --gpu-after {args.gpu_after}" if args.gpu_after else ""
    after += " --cpu640" if "cpu640" in ran else ""
    entry = {
        "files": {
            "pth": {"name": pth.name, "sha256": sha256_file(pth), "bytes": pth.stat().st_size},
            "onnx": {"name": onnx.name, "sha256": sha256_file(onnx), "bytes": onnx.stat().st_size},
        },
        "ap": {
            "easy": results["vga"]["easy"],
            "medium": results["vga"]["medium"],
            "hard": results["vga"]["hard"],
            "protocol": "vga",
            "score_thr": 0.02,
            "data": "WIDER FACE val subset in ../shared/assets (358 images, events 0/4/13/20), "
            "official ground truth, damofd eval --subset",
            "original_protocol": {k: results["original"][k] for k in SETTINGS},
        },
        "landmarks": {
            "metric": "mean NME (point error / GT box diagonal) of faces matched at IoU >= 0.5, "
            "score > 0.5, on the 62 held-out train images (damofd/weights/holdout_train.txt)",
            **lm,
        },
        "data": "WIDER FACE train subset (../shared/assets/widerface/labelv2/train/"
        "labelv2_kps.txt: 1,239 images of events 1/4/13/19/20 with RetinaFace 5-point "
        "landmarks), less the 62 held-out images of damofd/weights/holdout_train.txt",
        "recipe": "320-px patch training (crop scales 0.5-1.0 = the 640 recipe's 1.0-2.0 "
        "halved), SGD lr 0.01 momentum 0.9 wd 5e-4, batch 8, 300 warm-up iterations, cosine "
        f"to 1 %, {epochs} epochs; then 640-px "
        f"fine-tune, lr 0.001 cosine, {fine_epochs} epochs"
        + (
            "; then 640-px with SCRFD's wide crop scales 0.3-2.0 (large faces), lr 0.001 "
            f"cosine, {WIDE_ARGS[WIDE_ARGS.index('--epochs') + 1]} epochs"
            if "wide" in ran
            else ""
        )
        + "".join(
            (
                f"; then a 640-px cycle on one GPU ({gpu['summary']})"
                + (
                    "; then the same 640-px cycle on the CPU at batch 8 from its end, on the "
                    f"full-resolution images (lr {CPU640_LR} = the GPU's lr scaled to the batch, "
                    f"cosine, 200 warm-up iterations, {CPU640_EPOCHS} epochs, seed 1)"
                    if "cpu640" in ran
                    else ""
                )
                if stage == "gpu" and gpu
                else f"; then 320-px cosine cycle {cycle + 1} from the "
                f"{'GPU cycle' if cycle_recipe[stage][2] else 'fine-tuned model'} (warm restart: "
                f"lr {cycle_recipe[stage][1]}, 100 warm-up iterations, {cycle_recipe[stage][0]} "
                f"epochs, seed {cycle}) and the same 640-px fine-tune again"
            )
            for cycle, stage in _cycle_stages(ran)
        )
        + f" (stages run: {', '.join(ran)}); QFL + DIoU + keypoint loss; seed 0",
        "command": f"{cmd} data && {stages} && {cmd} bundle{sel}{after} --checkpoint {ckpt}",
        "cpu_hours": round(2 * sum(hours.values()), 2),
        "wall_hours_2_threads": {k: round(v, 2) for k, v in hours.items()},
        **({"gpu": {k: v for k, v in gpu.items() if k != "epochs_arg"}} if gpu else {}),
        "val_curve": curves,
        "licence": "weights: Apache-2.0, as damofd's code. They were trained on WIDER FACE, whose "
        "images and annotations are released for non-commercial research (CC BY-NC-ND); "
        "whether a model trained on them may be used commercially is not settled by that "
        "licence: check with your counsel before commercial use.",
        "notes": [
            f"architecture: {get_model_info(name).description}",
            "trained by damofd's own trainer from the labels only (no distillation from "
            "insightface weights)",
            "5 training events only: small, crowded and unusual faces are its weak point "
            "(docs/model-card.md)",
        ],
    }
    index[name] = entry
    from damofd.io import atomic_write_text

    atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    print(f"updated {index_path}", flush=True)
    return 0


def _cycle_stages(ran: list[str]) -> list[tuple[int, str]]:
    """``(cycle, stage)`` of the restart stages and the GPU cycle in ``ran``, in order."""
    out = []
    for stage in ran:
        if stage == "gpu":
            out.append((0, stage))
        elif stage.startswith("restart"):
            out.append((int(stage.removeprefix("restart") or 1), stage))
    return out


def _gpu_record(work_dir: Path | None) -> dict[str, Any] | None:
    """The GPU cycle as bundled.json records it: device, iterations, images/s, hours, the mean
    GPU utilisation ``nvidia-smi dmon`` logged (runs/gpu_out/dmon.log, gpu_cycle.sh)."""
    stops = _log_records(work_dir, "stop")
    if work_dir is None or not stops:
        return None
    cfg = _run_config(work_dir)
    seconds = sum(float(r["session_s"]) for r in stops)
    iters = int(cfg.get("max_iters") or stops[-1]["iter"])
    batch = int(cfg["data"]["samples_per_gpu"])
    rec: dict[str, Any] = {
        "iterations": iters,
        "batch": batch,
        "samples": iters * batch,
        "lr": cfg["optimizer"]["lr"],
        "hours": round(seconds / 3600, 3),
        "images_per_s": round(stops[-1]["iter"] * batch / seconds, 1),
        "epochs_arg": cfg.get("total_epochs"),
        "checkpoint_every": cfg.get("checkpoint_config", {}).get("interval"),
    }
    out = work_dir.parent / "gpu_out"
    if (out / "gpu.txt").is_file():
        rec["device"] = (out / "gpu.txt").read_text().splitlines()[1].split(",")[0].strip()
    if (out / "dmon.log").is_file():
        rows = [x.split() for x in (out / "dmon.log").read_text().splitlines()]
        sm = [int(r[1]) for r in rows if len(r) > 2 and r[0].isdigit() and r[1].isdigit()]
        busy = [v for v in sm if v > 0]
        if busy:
            rec["gpu_util_percent_mean"] = round(sum(busy) / len(busy), 1)
    rec["summary"] = (
        f"{rec.get('device', 'CUDA GPU')}, batch {batch}, lr {rec['lr']} cosine, 200 warm-up "
        f"iterations, {iters} iterations = {iters * batch:,} samples, crop scales 1.0-2.0, "
        f"from the model of the CPU stages before it; {rec['images_per_s']} images/s"
    )
    return rec


def _curve_png(
    out: Path,
    curves: dict[str, list[dict[str, Any]]],
    dirs: dict[str, Path | None],
    batches: dict[str, int],
) -> bool:
    """Draw the training loss (stages whose logs are here) and the val AP ``curves`` of the
    stages end to end over the samples seen; False (``out`` untouched) without matplotlib or
    without any curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not any(curves.values()):
        print(f"no validation curve recorded: {out} left as it is")
        return False
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0.0
    points: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in SETTINGS}
    spans: list[tuple[float, float, str]] = []
    for stage, val in curves.items():
        label, k = _stage_label(stage), batches.get(stage, 8) / 1000
        train = _log_records(dirs.get(stage), "train")
        if train:
            ax[0].plot([offset + r["iter"] * k for r in train], [r["loss"] for r in train],
                       lw=0.6, label=label)  # fmt: skip
        for key in SETTINGS:
            points[key][0].extend(offset + r["iter"] * k for r in val)
            points[key][1].extend(r[key] for r in val)
        last = max([r["iter"] for r in train[-1:]] + [r["iter"] for r in val[-1:]] + [0])
        spans.append((offset, offset + last * k, label))
        offset += last * k
    # one line per setting across the stages; the stages are shaded bands
    for n, (start, end, label) in enumerate(spans):
        ax[1].axvspan(start, end, color="0.92" if n % 2 else "white", zorder=0)
        ax[1].text(
            (start + end) / 2, 0.01, label.replace(" ", "\n", 2), ha="center", va="bottom",
            fontsize=6, transform=ax[1].get_xaxis_transform(),
        )  # fmt: skip
    for key, style in zip(SETTINGS, ("-o", "-s", "-^")):
        ax[1].plot(*points[key], style, ms=3, label=key.capitalize())
    xlabel = "training samples (thousands; 320-px patches or 640-px crops)"
    ax[0].set_xlabel(xlabel)
    ax[0].set_ylabel("training loss (10-iteration mean)")
    ax[0].grid(alpha=0.3)
    if ax[0].lines:
        ax[0].legend(fontsize=7)
    ax[1].set_xlabel(xlabel)
    ax[1].set_ylabel("AP, WIDER val subset (vga)")
    ax[1].grid(alpha=0.3)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def stage_card(args: argparse.Namespace) -> int:
    """Print the measured tables of docs/model-card.md (curve, AP, landmarks, speed) and draw
    the curve figure; the prose around them is written by hand."""
    index = json.loads((WEIGHTS / "bundled.json").read_text())[args.model]
    docs = Path(__file__).resolve().parents[1] / "docs"
    # the stages the bundled entry was built from: those with a recorded curve
    stages = list(index["val_curve"])
    cycles = sum(1 for k in stages if k.startswith("restart"))
    gpu_after = (
        sum(1 for k in stages[: stages.index("gpu")] if k.startswith("restart"))
        if "gpu" in stages
        else 0
    )
    dirs = _stage_dirs(args.model, args.epochs, args.init, cycles, gpu_after, "cpu640" in stages)
    curves = {k: v for k, v in index["val_curve"].items() if v}
    batches = {"gpu": int(index["gpu"]["batch"])} if "gpu" in index else {}
    png = docs / ("model_card_curve.png" if args.model == NAME else f"curve_{args.model}.png")
    if _curve_png(png, curves, dirs, batches):
        print(f"wrote {png}")
    a = index["ap"]
    o = a["original_protocol"]
    print("| protocol | Easy | Medium | Hard |\n| --- | --- | --- | --- |")
    print(f"| vga (published protocol) | {a['easy']:.4f} | {a['medium']:.4f} | {a['hard']:.4f} |")
    print(f"| original (full resolution) | {o['easy']:.4f} | {o['medium']:.4f} | {o['hard']:.4f} |")
    print("\n| stage | epoch | iteration | Easy | Medium | Hard |")
    print("| --- | --- | --- | --- | --- | --- |")
    for stage, rows in index["val_curve"].items():
        for r in rows:
            print(
                f"| {stage} | {r['epoch']} | {r['iter']} | {r['easy']:.4f} | {r['medium']:.4f} "
                f"| {r['hard']:.4f} |"
            )
    print(
        "\n| model | mean NME | median NME | faces matched / annotated |\n| --- | --- | --- | --- |"
    )
    for model, r in index["landmarks"].items():
        if isinstance(r, dict):
            print(
                f"| {model} | {r['nme']:.4f} | {r['median_nme']:.4f} | {r['matched']} / "
                f"{r['faces']} |"
            )
    if args.bench:
        rows = json.loads(Path(args.bench).read_text())["rows"]
        print("\n| model | model only (ms) | end to end (ms) |\n| --- | --- | --- |")
        for r in rows:
            if "e2e_ms" in r:
                mo = f"{r['model_only_ms']:.1f}" if "model_only_ms" in r else "–"
                print(f"| {r['model']} | {mo} | {r['e2e_ms']:.1f} |")
    print(f"\nCPU-hours: {index['cpu_hours']} ({index['wall_hours_2_threads']})")
    return 0


# DamoFD paper, Table 3 (WIDER FACE val, AP %): DamoFD-0.5G minus SCRFD-0.5G, and the KPS variants
PUBLISHED_DELTAS = {
    "damofd-0.5g vs scrfd-500m": (-0.25, 0.24, 2.52),
    "damofd-0.5g-kps vs scrfd-500m-kps": (-0.56, 0.01, 0.48),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _evaluate_checkpoint(ckpt: Path, a: dict[str, Path], tag: str) -> dict[str, Any]:
    """Export ``ckpt`` to ONNX and score it as ``bundle`` scores the default."""
    from damofd.export.onnx import export_onnx_detailed

    onnx = RUNS / f"{tag}.onnx"
    export_onnx_detailed(str(ckpt), str(onnx), dynamic=True, verify=True)
    return {p: {k: r[k] for k in SETTINGS} for p, r in _evaluate_onnx(onnx, a, tag).items()}


def stage_compare(args: argparse.Namespace) -> int:
    """DamoFD arm (the bundled default's run, from bundled.json) vs the ``--model`` arm."""

    a = _assets()
    default = json.loads((WEIGHTS / "bundled.json").read_text())[NAME]
    patch_dir, finetune_dir = _dirs(args.model, args.epochs, args.init)
    arm_curve = {"patch": _val_curve(patch_dir), "finetune": _val_curve(finetune_dir)}
    found = [d / "latest.pth" for d in (finetune_dir, patch_dir) if (d / "latest.pth").is_file()]
    ckpt = found[0] if found else None
    if ckpt is None:
        raise SystemExit(f"no checkpoint of the {args.model} arm in {patch_dir} or {finetune_dir}")
    final = _evaluate_checkpoint(ckpt, a, f"arm-{args.model}")
    rows = []
    for stage in ("patch", "finetune"):
        mine = {r["iter"]: r for r in default["val_curve"].get(stage, [])}
        for r in arm_curve[stage]:
            d = mine.get(r["iter"])
            if d is not None:
                rows.append(
                    {"stage": stage, "epoch": r["epoch"], "iter": r["iter"],
                     NAME: {k: d[k] for k in SETTINGS}, args.model: {k: r[k] for k in SETTINGS}}
                )  # fmt: skip
    complete = len(arm_curve["finetune"]) == len(default["val_curve"].get("finetune", [])) > 0
    result = {
        "arms": [NAME, args.model],
        "recipe": default["recipe"],
        "identical": (
            "recipe, seed 0, data (1,177 train images), schedule and sample count; the "
            "arms ran on different CPUs, so float rounding (not the recipe) differs"
            if args.epochs == PATCH_EPOCHS
            else f"recipe, seed 0 and data (1,177 train images); the {args.model} arm's patch "
            f"stage ran {args.epochs} of the {PATCH_EPOCHS} epochs of the DamoFD arm (cosine "
            "over its own length: half the samples), then the same 640-px fine-tune; the "
            "in-training curves are therefore matched by iteration only in lr-independent terms"
        ),
        "arm_patch_epochs": args.epochs,
        "cpu_of_this_arm": _cpu_model(),
        "arm_checkpoint": str(ckpt),
        "arm_complete": complete,
        "arm_cpu_hours": round(2 * (_train_hours(patch_dir) + _train_hours(finetune_dir)), 2),
        "final": {
            NAME: {
                "vga": {k: default["ap"][k] for k in SETTINGS},
                "original": default["ap"]["original_protocol"],
            },
            args.model: final,
        },
        "curve": rows,
        "published_deltas_ap_percent": PUBLISHED_DELTAS,
    }
    print(f"\n| checkpoint | {NAME} E / M / H | {args.model} E / M / H | DamoFD − SCRFD (points) |")
    print("| --- | --- | --- | --- |")

    def line(label: str, d: dict[str, float], s: dict[str, float]) -> None:
        print(f"| {label} | {' / '.join(f'{d[x]:.3f}' for x in SETTINGS)} | "
              f"{' / '.join(f'{s[x]:.3f}' for x in SETTINGS)} | "
              f"{' / '.join(f'{100 * (d[x] - s[x]):+.1f}' for x in SETTINGS)} |")  # fmt: skip

    for r in rows:
        line(f"{r['stage']} {r['epoch']} (it {r['iter']})", r[NAME], r[args.model])
    for protocol in ("vga", "original"):
        label = f"final ({protocol}{'' if complete else ', arm incomplete'})"
        line(label, result["final"][NAME][protocol], final[protocol])
    for k, v in PUBLISHED_DELTAS.items():
        print(f"published {k}: {v[0]:+.2f} / {v[1]:+.2f} / {v[2]:+.2f} AP points (full val set)")
    tag = "" if args.epochs == PATCH_EPOCHS else f"-e{args.epochs}"
    write_result(f"damofd_vs_{args.model}{tag}.json", result)
    return 0


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>`` (JSON, atomically) and say so."""
    from damofd.io import atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / name
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def _score_checkpoint(ckpt: Path, a: dict[str, Path]) -> dict[str, float]:
    """vga AP of ``ckpt`` as the in-training validation scores it (the val subset, score 0.02),
    its detections in ``runs/eval/<run dir>-<checkpoint name>``."""
    from damofd.engine.wider_eval import run_wider_eval

    run = run_wider_eval(
        str(ckpt), a["val"], a["gt"], subset=True, threads=2,
        work_dir=RUNS / "eval" / f"{ckpt.parent.name}-{ckpt.stem}",
    )  # fmt: skip
    return {k: float(getattr(run.result, k)) for k in SETTINGS}


def _checkpoint_curve(work_dir: Path, epochs: list[int], a: dict[str, Path]) -> dict[int, Any]:
    """vga AP of ``work_dir/epoch_N.pth`` for each N, for epochs an arm's log has no validation
    of."""
    out = {}
    for n in epochs:
        ckpt = work_dir / f"epoch_{n}.pth"
        if ckpt.is_file():
            out[n] = _score_checkpoint(ckpt, a)
    return out


def stage_pair(args: argparse.Namespace) -> int:
    """Two arms of the same ``--epochs`` patch schedule side by side, epoch by epoch, from their
    in-training validations; ``--fill`` scores saved checkpoints where one arm has none."""

    arms = ((NAME, args.init), (args.model, "official"))
    dirs = {m: _dirs(m, args.epochs, init)[0] for m, init in arms}
    curves = {m: {r["epoch"]: r for r in _val_curve(d)} for m, d in dirs.items()}
    epochs = sorted(set().union(*curves.values()))
    if args.fill:
        a = _assets()
        for m, d in dirs.items():
            missing = [n for n in epochs if n not in curves[m]]
            for n, ap in _checkpoint_curve(d, missing, a).items():
                curves[m][n] = {"epoch": n, **ap, "source": f"epoch_{n}.pth, damofd eval"}
    rows = []
    print(f"\n| epoch | {NAME} E / M / H | {args.model} E / M / H | DamoFD − SCRFD (points) |")
    print("| --- | --- | --- | --- |")
    for n in epochs:
        if all(n in c for c in curves.values()):
            d, o = curves[NAME][n], curves[args.model][n]
            rows.append({"epoch": n, NAME: {k: d[k] for k in SETTINGS},
                         args.model: {k: o[k] for k in SETTINGS}})  # fmt: skip
            print(f"| {n} | {' / '.join(f'{d[x]:.3f}' for x in SETTINGS)} | "
                  f"{' / '.join(f'{o[x]:.3f}' for x in SETTINGS)} | "
                  f"{' / '.join(f'{100 * (d[x] - o[x]):+.1f}' for x in SETTINGS)} |")  # fmt: skip
    result = {
        "arms": {m: str(d) for m, d in dirs.items()},
        "patch_epochs": args.epochs,
        "damofd_backbone_init": args.init,
        "protocol": "val subset (358 images), vga, score 0.02",
        "identical": "recipe, seed 0, data (1,177 train images), schedule and sample count",
        "curve": rows,
        "published_deltas_ap_percent": PUBLISHED_DELTAS,
    }
    write_result(f"pair_{NAME}_vs_{args.model}-e{args.epochs}.json", result)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    sub.add_parser("data", help="write the held-out split and the training labels")
    for name in ("patch", "finetune", "restart"):
        p = sub.add_parser(name, help=f"{name} stage (resumable)")
        p.add_argument("--minutes", type=float, help="time limit of this session")
        p.add_argument("--model", default=DEFAULT, help=f"architecture (default {DEFAULT})")
        p.add_argument(
            "--epochs", type=int, default=PATCH_EPOCHS,
            help=f"patch epochs of the cosine schedule (default {PATCH_EPOCHS})",
        )  # fmt: skip
        if name == "restart":
            p.add_argument(
                "--start", help="checkpoint to start from (default: the latest.pth of the "
                "fine-tune before this cycle)",
            )  # fmt: skip
            p.add_argument(
                "--restart-epochs", type=int, default=RESTART_EPOCHS,
                help=f"320-px epochs of this cycle's cosine (default {RESTART_EPOCHS})",
            )  # fmt: skip
            p.add_argument(
                "--lr", type=float, default=RESTART_LR, help=f"peak lr (default {RESTART_LR})"
            )
            p.add_argument(
                "--cycle", type=int, default=1, choices=CYCLES, metavar="N",
                help="warm-restart cycle (default 1; N starts from the fine-tune after N - 1)",
            )  # fmt: skip
        if name == "finetune":
            p.add_argument(
                "--start", help="checkpoint to start from (default: the latest.pth of the patch "
                "stage, or of the restart stage with --after-restart)",
            )  # fmt: skip
            p.add_argument(
                "--fine-epochs", type=int, help="640-px epochs (default 6, validated every 2)"
            )
            _add_after_restart(
                p, "fine-tune the end of warm-restart cycle N (default 1; work dir "
                "<patch dir>-restart-640, -restart2-640, ...)",
            )  # fmt: skip
    shr = sub.add_parser("shrink", help="the training set at 0.7x, JPEG 60, for a GPU machine")
    shr.add_argument("--out", default=str(GPU_DATA), help=f"output folder (default {GPU_DATA})")
    g = sub.add_parser("gpu", help="640-px cosine cycle on one CUDA GPU (resumable)")
    g.add_argument("--train", default=str(GPU_DATA), help="shrink folder (labelv2.txt, images/)")
    g.add_argument("--work-dir", default=str(GPU_DIR), help=f"work dir (default {GPU_DIR})")
    g.add_argument("--model", default=DEFAULT, help=f"architecture (default {DEFAULT})")
    g.add_argument("--start", help="weights to start from (default: the bundled .pth)")
    g.add_argument("--epochs", type=int, default=150, help="epochs of the cosine cycle (150)")
    g.add_argument("--minutes", type=float, help="time limit of this session")
    g.add_argument(
        "--max-iters", type=int, help="iterations of the cycle (sets the cosine's length)"
    )
    g.add_argument("--checkpoint-every", type=int, help="epoch_N.pth every N epochs (10)")
    g.add_argument("--device", help="cuda (default), cuda:N; cpu for a dry run")
    g.add_argument("--batch-size", type=int, help="images per iteration (64)")
    g.add_argument("--workers", type=int, help="data loader workers (14)")
    g.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="more damofd train --set overrides"
    )
    g.add_argument("--force", action="store_true", help="start over in a used work dir")
    c640 = sub.add_parser("cpu640", help="the GPU cycle's 640-px recipe on the CPU after it")
    c640.add_argument("--minutes", type=float, help="time limit of this session")
    c640.add_argument("--model", default=DEFAULT, help=f"architecture (default {DEFAULT})")
    c640.add_argument("--start", help=f"checkpoint to start from (default {GPU_DIR}/latest.pth)")
    gc = sub.add_parser("gpu-curve", help="score the GPU cycle's checkpoints (val_curve.json)")
    gc.add_argument("--work-dir", default=str(GPU_DIR), help=f"work dir (default {GPU_DIR})")
    wide = sub.add_parser("wide", help="640-px fine-tune with wide crop scales (resumable)")
    wide.add_argument("--minutes", type=float, help="time limit of this session")
    wide.add_argument("--start", help="checkpoint to start from (default: finetune latest)")
    b = sub.add_parser("bundle", help="strip, export, evaluate, write damofd/weights/")
    b.add_argument("--checkpoint", help="default: the fine-tune stage's latest.pth")
    b.add_argument("--model", default=DEFAULT, help=f"architecture (default {DEFAULT})")
    b.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs of the run")
    _add_after_restart(b, "bundle the fine-tune after warm-restart cycle N (default 1)")
    b.add_argument(
        "--gpu-after", type=int, default=0, metavar="N",
        help="a GPU cycle (gpu) ran after cycle N's fine-tune (0: none); with N equal to "
        "--after-restart it is the last stage",
    )  # fmt: skip
    b.add_argument(
        "--cpu640", action="store_true",
        help="the CPU cycle (cpu640) ran after the GPU cycle and is the last stage",
    )  # fmt: skip
    c = sub.add_parser("card", help="print the model card's measured tables, draw its curve")
    c.add_argument("--bench", help="JSON written by benchmarks/bench_infer.py --json")
    c.add_argument("--model", default=DEFAULT, help=f"bundled model (default {DEFAULT})")
    c.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs of its run")
    cmp_ = sub.add_parser("compare", help="DamoFD (the default's run) vs another arm, same recipe")
    cmp_.add_argument("--model", default="scrfd-500m-kps", help="the other arm (scrfd-500m-kps)")
    cmp_.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs of the arm")
    pair = sub.add_parser("pair", help="two arms of one --epochs schedule, epoch by epoch")
    pair.add_argument("--model", default="scrfd-500m-kps", help="the other arm (scrfd-500m-kps)")
    pair.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs of both arms")
    pair.add_argument("--fill", action="store_true", help="score checkpoints missing a validation")
    init_help = "backbone conv init of the run: official (xavier gain 3.26) or kaiming"
    trained = [sub.choices[k] for k in ("patch", "finetune", "restart")]
    for p in (*trained, b, c, cmp_, pair):
        p.add_argument("--init", choices=INIT_SCHEMES, default="official", help=init_help)
    args = ap.parse_args(argv)
    return {
        "data": stage_data,
        "patch": stage_patch,
        "finetune": stage_finetune,
        "restart": stage_restart,
        "wide": stage_wide,
        "shrink": stage_shrink,
        "gpu": stage_gpu,
        "cpu640": stage_cpu640,
        "gpu-curve": stage_gpu_curve,
        "bundle": stage_bundle,
        "card": stage_card,
        "compare": stage_compare,
        "pair": stage_pair,
    }[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
