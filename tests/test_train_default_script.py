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
