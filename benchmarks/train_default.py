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
    python benchmarks/train_default.py card   [--bench bench_infer.json]  # docs/model-card.md
    python benchmarks/train_default.py wide [--minutes M]   # damofd-0.5g-kps: 640 px, wide crops
    python benchmarks/train_default.py compare [--model scrfd-500m-kps]   # DamoFD vs SCRFD arm

The SCRFD arm of the comparison (issue 10 item 3) runs the identical recipe, seed, data and
sample count on another architecture: ``patch --model scrfd-500m-kps`` and ``finetune --model
scrfd-500m-kps`` (work dirs ``runs/arm-scrfd-500m-kps[-640]``); both stages pin the crop scales
(0.5G recipe: 1.0…2.0 at 640, 0.5…1.0 in 320 patches), so the recipes differ in nothing.

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

# the recipe of the bundled model (docs/model-card.md); only --time-limit differs between sessions
PATCH_ARGS = [
    "--patch-size", "320", "--lr-policy", "cosine", "--lr", "0.01", "--warmup-iters", "300",
    "--batch-size", "8", "--workers", "1", "--threads", "2",
    "--device", "cpu", "--seed", "0", "--eval-every", "10", "--checkpoint-every", "10",
    "--checkpoint-every-iters", "200", "--no-progress",
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
# the 640-px stages differ only in warm-up and length
_FINE_COMMON = [
    "--batch-size", "8", "--workers", "1", "--threads", "2", "--device", "cpu", "--seed", "0",
    "--eval-every", "2", "--checkpoint-every", "2", "--checkpoint-every-iters", "50",
    "--no-progress",
]  # fmt: skip


def _fine_args(warmup: int, epochs: int) -> list[str]:
    """A 640-px fine-tune: lr 0.001 with a cosine decay."""
    lr = ["--lr-policy", "cosine", "--lr", "0.001", "--warmup-iters", str(warmup)]
    return [*lr, "--epochs", str(epochs), *_FINE_COMMON]


FINETUNE_ARGS = _fine_args(warmup=50, epochs=6)
WIDE_ARGS = _fine_args(warmup=30, epochs=4)
# stage 3: a second 320-px cosine cycle (warm restart) from the fine-tuned model, with a new seed
# for a new sample order; then ``finetune --after-restart`` repeats stage 2 from its end. Cycle N
# (``restart --cycle N``) starts from the fine-tune after cycle N - 1 and uses seed N.
RESTART_EPOCHS = 60


def _restart_args(cycle: int) -> list[str]:
    return [
        "--patch-size", "320", "--lr-policy", "cosine", "--lr", "0.005", "--warmup-iters", "100",
        "--batch-size", "8", "--workers", "1", "--threads", "2", "--device", "cpu",
        "--seed", str(cycle), "--eval-every", "10", "--checkpoint-every", "10",
        "--checkpoint-every-iters", "200", "--no-progress", "--epochs", str(RESTART_EPOCHS),
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
    if stage.startswith("restart"):
        return f"320-px warm restart {stage.removeprefix('restart') or '1'}"
    return f"640-px fine-tune {stage.removeprefix('finetune')}"


def _stage_dirs(model: str, epochs: int, init: str, restarts: int) -> dict[str, Path | None]:
    """Work dir of every stage of ``model``'s run, in order, through ``restarts`` warm-restart
    cycles; ``None`` for a stage that is not part of it (``wide`` exists only for the
    damofd-0.5g-kps run)."""
    patch_dir, finetune_dir = _dirs(model, epochs, init)
    dirs: dict[str, Path | None] = {
        "patch": patch_dir,
        "finetune": finetune_dir,
        "wide": WIDE_DIR if (model, epochs, init) == (NAME, PATCH_EPOCHS, "official") else None,
    }
    for cycle in range(1, restarts + 1):
        stages = _restart_stages(cycle)
        dirs.update(zip(stages, _restart_dirs(model, epochs, init, cycle)))
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
    run_args = _restart_args(cycle)
    return _fine_tune(args, restart_dir, finetune_dir / "latest.pth", run_args, CROP_320)


def stage_wide(args: argparse.Namespace) -> int:
    """Stage 3: a short 640-px fine-tune with SCRFD's wide crop range (large faces)."""
    return _fine_tune(args, WIDE_DIR, FINETUNE_DIR / "latest.pth", WIDE_ARGS, CROP_WIDE)


def _train_hours(work_dir: Path | None) -> float:
    if work_dir is None:
        return 0.0
    log = work_dir / "log.jsonl"
    if not log.is_file():
        return 0.0
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return sum(float(r.get("session_s", 0.0)) for r in recs if r.get("mode") == "stop") / 3600


def _run_epochs(work_dir: Path) -> int | None:
    """``total_epochs`` of the run in ``work_dir`` (its config.json), if any."""
    cfg = work_dir / "config.json"
    return int(json.loads(cfg.read_text())["total_epochs"]) if cfg.is_file() else None


def _val_curve(work_dir: Path | None) -> list[dict[str, Any]]:
    if work_dir is None:
        return []
    log = work_dir / "log.jsonl"
    if not log.is_file():
        return []
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return [
        {k: r[k] for k in ("epoch", "iter", "easy", "medium", "hard") if k in r}
        for r in recs
        if r.get("mode") == "val"
    ]


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
    dirs = _stage_dirs(name, epochs, args.init, args.after_restart)
    last = dirs[_restart_stages(args.after_restart)[1] if args.after_restart else "finetune"]
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

    hours = {stage: _train_hours(d) for stage, d in dirs.items()}
    cmd = "python benchmarks/train_default.py"
    sel = f" --model {name}" + ("" if epochs == PATCH_EPOCHS else f" --epochs {epochs}")
    fine_epochs = _run_epochs(dirs["finetune"]) if dirs["finetune"] else None
    fine_sel = "" if fine_epochs in (None, 6) else f" --fine-epochs {fine_epochs}"
    ran = [k for k, v in hours.items() if v > 0]
    stage_cmd = {"finetune": f"finetune{sel}{fine_sel}"}
    for cycle in range(1, args.after_restart + 1):
        restart, finetune = _restart_stages(cycle)
        stage_cmd[restart] = f"restart{sel}{_cycle_flag('--cycle', cycle)}"
        stage_cmd[finetune] = f"finetune{sel}{_cycle_flag('--after-restart', cycle)}"
    stages = " && ".join(f"{cmd} {stage_cmd.get(k, k + sel)}" for k in ran)
    after = _cycle_flag("--after-restart", args.after_restart) if args.after_restart else ""
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
            f"; then 320-px cosine cycle {cycle + 1} from the fine-tuned model (warm restart: lr "
            f"0.005, 100 warm-up iterations, {RESTART_EPOCHS} epochs, seed {cycle}) and the same "
            "640-px fine-tune again"
            for cycle in range(1, args.after_restart + 1)
            if _restart_stages(cycle)[0] in ran
        )
        + f" (stages run: {', '.join(ran)}); QFL + DIoU + keypoint loss; seed 0",
        "command": f"{cmd} data && {stages} && {cmd} bundle{sel}{after} --checkpoint {ckpt}",
        "cpu_hours": round(2 * sum(hours.values()), 2),
        "wall_hours_2_threads": {k: round(v, 2) for k, v in hours.items()},
        "val_curve": {stage: _val_curve(d) for stage, d in dirs.items()},
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
    index_path = WEIGHTS / "bundled.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[name] = entry
    from damofd.io import atomic_write_text

    atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    print(f"updated {index_path}", flush=True)
    return 0


def _curve_png(out: Path, dirs: dict[str, Path | None]) -> bool:
    """Draw the loss and the val AP of the stages in ``dirs`` end to end; False (and ``out``
    untouched) without matplotlib or without any of the stages' logs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    logs = [d / "log.jsonl" for d in dirs.values() if d is not None]
    if not any(log.is_file() for log in logs):
        print(f"no training log of {', '.join(map(str, logs))}: {out} left as it is")
        return False
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    points: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in SETTINGS}
    spans: list[tuple[int, int, str]] = []
    for stage, wd in dirs.items():
        label = _stage_label(stage)
        log = wd / "log.jsonl" if wd is not None else None
        if log is None or not log.is_file():
            continue
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        train = [r for r in recs if r.get("mode") == "train"]
        val = [r for r in recs if r.get("mode") == "val"]
        if train:
            it = [offset + r["iter"] for r in train]
            ax[0].plot(it, [r["loss"] for r in train], lw=0.6, label=label)
        for key in SETTINGS:
            points[key][0].extend(offset + r["iter"] for r in val)
            points[key][1].extend(r[key] for r in val)
        end = offset + (train[-1]["iter"] if train else 0)
        spans.append((offset, end, label))
        offset = end
    # one line per setting across the stages; the stages are shaded bands
    for n, (start, end, label) in enumerate(spans):
        ax[1].axvspan(start, end, color="0.92" if n % 2 else "white", zorder=0)
        ax[1].text(
            (start + end) / 2, 0.01, label.replace(" ", "\n", 1), ha="center", va="bottom",
            fontsize=6, transform=ax[1].get_xaxis_transform(),
        )  # fmt: skip
    for key, style in zip(SETTINGS, ("-o", "-s", "-^")):
        ax[1].plot(*points[key], style, ms=3, label=key.capitalize())
    ax[0].set_xlabel("iteration (batch 8)")
    ax[0].set_ylabel("training loss (10-iteration mean)")
    ax[0].grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    ax[1].set_xlabel("iteration (batch 8)")
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
    cycles = sum(1 for k in index["val_curve"] if k.startswith("restart"))
    dirs = _stage_dirs(args.model, args.epochs, args.init, restarts=cycles)
    dirs = {k: v for k, v in dirs.items() if index["val_curve"].get(k)}
    png = docs / ("model_card_curve.png" if args.model == NAME else f"curve_{args.model}.png")
    if _curve_png(png, dirs):
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


def _checkpoint_curve(work_dir: Path, epochs: list[int], a: dict[str, Path]) -> dict[int, Any]:
    """vga AP of ``work_dir/epoch_N.pth`` for each N (the in-training validation's protocol:
    the val subset, score 0.02), for epochs an arm's log has no validation of."""
    from damofd.engine.wider_eval import run_wider_eval

    out = {}
    for n in epochs:
        ckpt = work_dir / f"epoch_{n}.pth"
        if ckpt.is_file():
            run = run_wider_eval(
                str(ckpt), a["val"], a["gt"], subset=True, threads=2,
                work_dir=RUNS / "eval" / f"{work_dir.name}-epoch_{n}",
            )  # fmt: skip
            out[n] = {k: float(getattr(run.result, k)) for k in SETTINGS}
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
    wide = sub.add_parser("wide", help="640-px fine-tune with wide crop scales (resumable)")
    wide.add_argument("--minutes", type=float, help="time limit of this session")
    wide.add_argument("--start", help="checkpoint to start from (default: finetune latest)")
    b = sub.add_parser("bundle", help="strip, export, evaluate, write damofd/weights/")
    b.add_argument("--checkpoint", help="default: the fine-tune stage's latest.pth")
    b.add_argument("--model", default=DEFAULT, help=f"architecture (default {DEFAULT})")
    b.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs of the run")
    _add_after_restart(b, "bundle the fine-tune after warm-restart cycle N (default 1)")
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
        "bundle": stage_bundle,
        "card": stage_card,
        "compare": stage_compare,
        "pair": stage_pair,
    }[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
