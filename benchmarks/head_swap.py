"""Is it DamoFD's backbone or its head? Two experiments on the default's patch recipe.

DamoFD-0.5G-KPS and SCRFD-500M-KPS differ in two places: the backbone (DDSAR-searched MasterNet
vs MobileNetV1) and the head (DamoFD: one GroupNorm head shared by the three levels with a
learned Scale per level; SCRFD's KPS models: one BatchNorm head per level, no Scale). Both
experiments keep everything else identical (recipe, seed, data, crop scales)::

    python benchmarks/head_swap.py swap --arm runs/arm-damofd-0.5g-kps-e80   # ~25 min
    python benchmarks/head_swap.py scratch [--epochs 160] [--minutes M]       # resumable
    python benchmarks/head_swap.py report

The DamoFD backbone with SCRFD-500M-KPS's head is the zoo model ``damofd-0.5g-bnkps``, so
``scratch`` is ``python benchmarks/train_default.py patch --model damofd-0.5g-bnkps`` (work dir
``runs/arm-damofd-0.5g-bnkps``), and that model's 640-px fine-tune and bundle are the same
script's ``finetune`` / ``bundle`` stages with ``--model damofd-0.5g-bnkps``.

``swap`` takes the trained backbone and neck of a DamoFD arm (its ``latest.pth`` without the
head), puts a fresh head of each kind on it and trains both for ``--swap-epochs`` (12) epochs of
320-px patches (lr 0.01 cosine, 100 warm-up iterations): with the body fixed at the start, the
difference is the head's. ``scratch`` trains DamoFD's backbone with SCRFD-500M-KPS's head from
scratch on the default's patch schedule, so its in-training AP curve sits beside the DamoFD and
SCRFD arms of the same schedule. ``report`` writes ``benchmarks/results/head_swap.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from train_default import (
    CROP_320,
    NAME,
    PATCH_EPOCHS,
    RESULTS,
    RUNS,
    SETTINGS,
    WEIGHTS,
    _assets,
    _damofd,
    _dirs,
    _resume_flag,
    _train_common,
    _val_curve,
    stage_patch,
    write_result,
)

from damofd.models.zoo import BNKPS_HEAD_FROM as BN_HEAD_FROM

CFG = RUNS / "cfg"
BNKPS = "damofd-0.5g-bnkps"  # damofd-0.5g-kps's backbone and neck, scrfd-500m-kps's head
SWAP_ARGS = [
    "--patch-size", "320", "--lr-policy", "cosine", "--lr", "0.01", "--warmup-iters", "100",
    "--batch-size", "8", "--workers", "1", "--threads", "2", "--device", "cpu", "--seed", "0",
    "--checkpoint-every-iters", "200", "--no-progress",
]  # fmt: skip


def _scratch_dir(epochs: int) -> Path:
    return _dirs(BNKPS, epochs)[0]


def _body(arm: Path) -> Path:
    """The arm's latest.pth without the head: ``runs/cfg/<arm>-body.pth``."""
    from damofd.io import atomic_torch_save
    from damofd.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(arm / "latest.pth")
    sd = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("bbox_head.")}
    out = CFG / f"{arm.resolve().name}-body.pth"
    CFG.mkdir(parents=True, exist_ok=True)
    meta = {k: ckpt["meta"][k] for k in ("epoch", "iter") if k in ckpt.get("meta", {})}
    atomic_torch_save(out, {"meta": meta, "state_dict": sd})
    return out


def stage_swap(args: argparse.Namespace) -> int:
    a = _assets()
    arm = Path(args.arm)
    body = _body(arm)
    models = {"gn": NAME, "bn": BNKPS}
    for head, model in models.items():
        wd = RUNS / f"swap-{arm.resolve().name}-{head}"
        epochs = ["--epochs", str(args.swap_epochs), "--eval-every", str(args.swap_epochs)]
        pin = ["--set", f"data.crop_choice={CROP_320}"]
        start = _resume_flag(wd) or ["--load-from", str(body), "--no-strict"]
        rc = _damofd(_train_common(a, wd, model) + SWAP_ARGS + epochs + pin + start)
        if rc:
            return rc
    return 0


def stage_scratch(args: argparse.Namespace) -> int:
    """``train_default.py patch --model damofd-0.5g-bnkps``: the default's patch recipe."""
    return stage_patch(
        argparse.Namespace(model=BNKPS, epochs=args.epochs, init="official", minutes=args.minutes)
    )


def _last_val(wd: Path) -> dict[str, float] | None:
    curve = _val_curve(wd)
    return {k: curve[-1][k] for k in ("epoch", *SETTINGS)} if curve else None


def _arms_160() -> dict[str, dict[int, dict[str, float]]]:
    """In-training curves of the two arms of the 160-epoch patch schedule: the bundled default's
    run (DamoFD, GN head; damofd/weights/bundled.json) and the SCRFD arm
    (benchmarks/results/damofd_vs_scrfd-500m-kps.json)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    bundled = json.loads((WEIGHTS / "bundled.json").read_text())[NAME]
    out[f"{NAME} (GN head)"] = {r["epoch"]: r for r in bundled["val_curve"].get("patch", [])}
    cmp_file = RESULTS / f"damofd_vs_{BN_HEAD_FROM}.json"
    if cmp_file.is_file():
        rows = json.loads(cmp_file.read_text())["curve"]
        out[BN_HEAD_FROM] = {r["epoch"]: r[BN_HEAD_FROM] for r in rows if r["stage"] == "patch"}
    return out


def _ap(r: dict[str, float]) -> str:
    return " / ".join(f"{r[k]:.3f}" for k in SETTINGS)


def _scratch_table(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scratch arm beside the 160-epoch arms at the epochs all of them validated."""
    arms = _arms_160()
    rows = []
    print(f"| epoch | {NAME} + BN head | " + " | ".join(arms) + " |")
    print("| --- | --- |" + " --- |" * len(arms))
    for r in curve:
        n = r["epoch"]
        if all(n in a for a in arms.values()):
            rows.append({"epoch": n, "bn_head": r, **{k: a[n] for k, a in arms.items()}})
            print(f"| {n} | {_ap(r)} | " + " | ".join(_ap(a[n]) for a in arms.values()) + " |")
    return rows


def stage_report(args: argparse.Namespace) -> int:
    swaps = {}
    for wd in sorted(RUNS.glob("swap-*-gn")):
        stem = wd.name[: -len("-gn")]
        swaps[stem.removeprefix("swap-")] = {
            h: _last_val(RUNS / f"{stem}-{h}") for h in ("gn", "bn")
        }
    for arm, r in swaps.items():
        print(f"body of {arm}:")
        for h, v in r.items():
            if v:
                print(f"  {h} head, {v['epoch']} epochs: {_ap(v)}")
    curve = _val_curve(_scratch_dir(PATCH_EPOCHS))
    print(f"\n{_scratch_dir(PATCH_EPOCHS)} (160-epoch patch schedule), in-training validation:")
    result = {
        "protocol": "val subset (358 images), vga, score 0.02 (in-training validation)",
        "bn_head": f"{BN_HEAD_FROM}'s head (BatchNorm, one per level, no Scale)",
        "gn_head": f"{NAME}'s head (GroupNorm(16), shared by the levels, Scale per level)",
        "swap": swaps,
        "scratch": {"work_dir": str(_scratch_dir(PATCH_EPOCHS)), "curve": curve},
        "scratch_vs_160_epoch_arms": _scratch_table(curve),
    }
    write_result("head_swap.json", result)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("swap", help="fresh GN and BN heads on one trained DamoFD body")
    s.add_argument("--arm", required=True, help="work dir of a trained DamoFD arm (latest.pth)")
    s.add_argument("--swap-epochs", type=int, default=12, help="epochs of each head (12)")
    sc = sub.add_parser("scratch", help="DamoFD backbone + BN head from scratch (resumable)")
    sc.add_argument("--epochs", type=int, default=PATCH_EPOCHS, help="patch epochs (160)")
    sc.add_argument("--minutes", type=float, help="time limit of this session")
    sub.add_parser("report", help="write benchmarks/results/head_swap.json")
    args = ap.parse_args(argv)
    return {"swap": stage_swap, "scratch": stage_scratch, "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
