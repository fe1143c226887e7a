"""``benchmarks/train_default.py``: the warm-restart cycles chain their work dirs and seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
train_default = pytest.importorskip("train_default")


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ``damofd`` argv each stage would run (nothing trains), with runs/ under tmp_path."""
    seen: list[list[str]] = []
    monkeypatch.setattr(train_default, "_damofd", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(
        train_default, "_assets", lambda: dict.fromkeys(("kps", "images", "val", "gt"), tmp_path)
    )
    monkeypatch.setattr(train_default, "RUNS", tmp_path / "runs")
    return seen


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_restart_cycles_start_from_the_previous_fine_tune(calls, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    arm = runs / "arm-damofd-0.5g-bnkps"
    assert train_default.main(["restart"]) == 0
    assert _opt(calls[-1], "--work-dir") == f"{arm}-restart"
    assert _opt(calls[-1], "--load-from") == str(runs / "arm-damofd-0.5g-bnkps-640/latest.pth")
    assert _opt(calls[-1], "--seed") == "1" and _opt(calls[-1], "--lr") == "0.005"

    assert train_default.main(["restart", "--cycle", "2"]) == 0
    assert _opt(calls[-1], "--work-dir") == f"{arm}-restart2"
    assert _opt(calls[-1], "--load-from") == f"{arm}-restart-640/latest.pth"
    assert _opt(calls[-1], "--seed") == "2"

    assert train_default.main(["finetune", "--after-restart", "2"]) == 0
    assert _opt(calls[-1], "--work-dir") == f"{arm}-restart2-640"
    assert _opt(calls[-1], "--load-from") == f"{arm}-restart2/latest.pth"
    assert f"data.crop_choice={train_default.CROP_640}" in calls[-1]

    # a stage with a checkpoint in its work dir resumes instead of starting over
    (Path(f"{arm}-restart2-640")).mkdir(parents=True)
    (Path(f"{arm}-restart2-640") / "latest.pth").write_bytes(b"")
    assert train_default.main(["finetune", "--after-restart", "2"]) == 0
    assert "--resume" in calls[-1] and "--load-from" not in calls[-1]


def test_stage_dirs_and_labels() -> None:
    dirs = train_default._stage_dirs("damofd-0.5g-bnkps", train_default.PATCH_EPOCHS, "official", 2)
    assert list(dirs) == [
        "patch",
        "finetune",
        "wide",
        "restart",
        "finetune2",
        "restart2",
        "finetune3",
    ]
    assert dirs["wide"] is None  # only the damofd-0.5g-kps run had a wide stage
    assert str(dirs["finetune3"]).endswith("arm-damofd-0.5g-bnkps-restart2-640")
    assert train_default._stage_label("restart2") == "320-px warm restart 2"
    assert train_default._stage_label("finetune3") == "640-px fine-tune 3"
    with pytest.raises(ValueError, match="cycle must be >= 1"):
        train_default._restart_dirs("damofd-0.5g-bnkps", cycle=0)


@pytest.mark.parametrize(
    "argv", [["finetune", "--after-restart", "0"], ["bundle", "--after-restart", "-1"]]
)
def test_bad_cycle_is_a_usage_error(argv: list[str], calls) -> None:
    with pytest.raises(SystemExit) as e:
        train_default.main(argv)
    assert e.value.code == 2 and not calls


def test_gpu_cycle_starts_from_the_bundled_weights_and_resumes(calls, tmp_path: Path) -> None:
    work = tmp_path / "runs/g"
    assert train_default.main(["gpu", "--work-dir", str(work), "--max-iters", "1116"]) == 0
    argv = calls[-1]
    assert _opt(argv, "--device") == "cuda" and _opt(argv, "--batch-size") == "64"
    assert _opt(argv, "--max-iters") == "1116" and _opt(argv, "--eval-every") == "0"
    assert _opt(argv, "--load-from") == str(train_default.WEIGHTS / "damofd-0.5g-bnkps.pth")
    assert f"data.crop_choice={train_default.CROP_640}" in argv
    work.mkdir(parents=True)
    (work / "latest.pth").write_bytes(b"")
    args = ["gpu", "--work-dir", str(work), "--device", "cpu", "--batch-size", "4"]
    assert train_default.main([*args, "--checkpoint-every", "12"]) == 0
    argv = calls[-1]
    assert "--resume" in argv and "--load-from" not in argv
    assert _opt(argv, "--device") == "cpu" and _opt(argv, "--batch-size") == "4"
    assert _opt(argv, "--checkpoint-every") == "12"


def test_shrink_stage_command(calls, tmp_path: Path) -> None:
    assert train_default.main(["shrink", "--out", str(tmp_path / "o")]) == 0
    argv = calls[-1]
    assert argv[:2] == ["data", "shrink"] and _opt(argv, "--scale") == "0.7"
    assert _opt(argv, "--quality") == "60" and _opt(argv, "--out") == str(tmp_path / "o")


def _write_jsonl(path: Path, recs: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_gpu_record_and_scored_curve(tmp_path: Path) -> None:
    import json

    work = tmp_path / "runs/default-gpu"
    _write_jsonl(work / "log.jsonl", [
        {"mode": "train", "iter": 10, "loss": 1.0},
        {"mode": "stop", "iter": 930, "session_s": 435.0},
        {"mode": "stop", "iter": 1116, "session_s": 90.0},
    ])  # fmt: skip
    (work / "config.json").write_text(json.dumps({
        "max_iters": 1116, "total_epochs": 100000, "data": {"samples_per_gpu": 64},
        "optimizer": {"lr": 0.03}, "checkpoint_config": {"interval": 12},
    }))  # fmt: skip
    out = tmp_path / "runs/gpu_out"
    out.mkdir()
    (out / "gpu.txt").write_text("name, memory.total [MiB]\nNVIDIA H200, 143771 MiB\n")
    (out / "dmon.log").write_text("# gpu sm mem\n# Idx % %\n 0 0 0\n 0 40 5\n 0 20 3\n")
    rec = train_default._gpu_record(work)
    assert rec is not None
    assert rec["samples"] == 1116 * 64 and rec["hours"] == round(525 / 3600, 3)
    assert rec["images_per_s"] == round(1116 * 64 / 525, 1)
    assert rec["device"] == "NVIDIA H200" and rec["gpu_util_percent_mean"] == 30.0  # idle rows out
    assert train_default._gpu_record(tmp_path / "nowhere") is None

    # no validation in the log: the checkpoints scored afterwards (gpu-curve) are the curve
    assert train_default._val_curve(work) == []
    scored = [{"epoch": 12, "iter": 228, "easy": 0.7, "medium": 0.6, "hard": 0.3}]
    (work / "val_curve.json").write_text(json.dumps(scored))
    assert train_default._val_curve(work) == scored


def test_stage_dirs_place_the_gpu_cycle() -> None:
    dirs = train_default._stage_dirs("damofd-0.5g-bnkps", train_default.PATCH_EPOCHS, "official",
                                     2, gpu_after=1)  # fmt: skip
    order = [k for k in dirs if k != "wide"]
    assert order == ["patch", "finetune", "restart", "finetune2", "gpu", "restart2", "finetune3"]
    assert train_default._cycle_stages(order) == [(1, "restart"), (0, "gpu"), (2, "restart2")]
    assert train_default._stage_label("gpu") == "640-px GPU cycle"


def test_restart_from_the_gpu_cycle_with_its_own_length_and_lr(calls, tmp_path: Path) -> None:
    argv = ["restart", "--cycle", "2", "--start", "runs/default-gpu/latest.pth"]
    assert train_default.main([*argv, "--restart-epochs", "30", "--lr", "0.003"]) == 0
    assert _opt(calls[-1], "--load-from") == "runs/default-gpu/latest.pth"
    assert _opt(calls[-1], "--epochs") == "30" and _opt(calls[-1], "--lr") == "0.003"
    assert _opt(calls[-1], "--seed") == "2"


def test_cpu_cycle_after_the_gpu_cycle(calls, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "runs/c640"
    monkeypatch.setattr(train_default, "CPU640_DIR", work)
    assert train_default.main(["cpu640", "--minutes", "100"]) == 0
    argv = calls[-1]
    assert argv[1] == "damofd-0.5g-bnkps" and _opt(argv, "--work-dir") == str(work)
    assert _opt(argv, "--device") == "cpu" and _opt(argv, "--batch-size") == "8"
    assert _opt(argv, "--lr") == "0.004" and _opt(argv, "--epochs") == "40"
    assert _opt(argv, "--load-from") == str(train_default.GPU_DIR / "latest.pth")
    assert f"data.crop_choice={train_default.CROP_640}" in argv
    assert _opt(argv, "--time-limit") == "100.0"
    work.mkdir(parents=True)
    (work / "latest.pth").write_bytes(b"")
    assert train_default.main(["cpu640"]) == 0
    assert "--resume" in calls[-1] and "--load-from" not in calls[-1]
    dirs = train_default._stage_dirs("damofd-0.5g-bnkps", train_default.PATCH_EPOCHS, "official",
                                     1, gpu_after=1, cpu640=True)  # fmt: skip
    assert [k for k in dirs if k != "wide"][-2:] == ["gpu", "cpu640"]
    assert train_default._stage_label("cpu640") == "640-px CPU cycle"
    # it follows the GPU cycle, which must be the last cycle's stage
    with pytest.raises(SystemExit, match="--cpu640 follows the GPU cycle"):
        train_default.main(["bundle", "--cpu640", "--after-restart", "2", "--gpu-after", "1"])
