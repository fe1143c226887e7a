"""``benchmarks/head_swap.py``: the BN-head DamoFD config it trains and the head-less body it
starts the swap arms from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from damofd.models.checkpoint import save_checkpoint
from damofd.models.factory import create_model, load_checkpoint
from damofd.models.zoo import get_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
head_swap = pytest.importorskip("head_swap")


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(head_swap, "CFG", tmp_path / "cfg")
    return tmp_path / "cfg"


def test_scratch_is_the_patch_stage_of_the_bnkps_zoo_model(tmp_path: Path, monkeypatch):
    """``scratch`` runs the default's patch recipe on ``damofd-0.5g-bnkps`` (DamoFD's backbone
    and neck, SCRFD-500M-KPS's head) in ``runs/arm-damofd-0.5g-bnkps``, resuming when it can."""
    calls: list[list[str]] = []
    train_default = sys.modules["train_default"]
    monkeypatch.setattr(train_default, "_damofd", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(train_default, "_assets", lambda: dict.fromkeys(
        ("kps", "images", "val", "gt", "det_500m"), tmp_path))  # fmt: skip
    monkeypatch.setattr(train_default, "RUNS", tmp_path / "runs")
    assert head_swap.main(["scratch", "--minutes", "5"]) == 0
    argv = calls[-1]
    assert argv[:2] == ["train", "damofd-0.5g-bnkps"]
    assert argv[argv.index("--work-dir") + 1] == str(tmp_path / "runs/arm-damofd-0.5g-bnkps")
    assert argv[argv.index("--epochs") + 1] == "160" and "--resume" not in argv
    assert argv[-2:] == ["--time-limit", "5.0"]
    assert f"data.crop_choice={train_default.CROP_320}" in argv
    det = get_config("damofd-0.5g-bnkps")
    damofd, scrfd = get_config("damofd-0.5g-kps"), get_config("scrfd-500m-kps")
    assert det.backbone == damofd.backbone and det.neck == damofd.neck
    assert det.head == scrfd.head and det.head.norm == "bn" and not det.head.strides_share


def test_body_drops_the_head_and_loads_under_either_head(cfg_dir: Path, tmp_path: Path):
    arm = tmp_path / "arm-x"
    arm.mkdir()
    model = create_model("damofd-0.5g-kps")
    save_checkpoint(model, arm / "latest.pth", meta={"epoch": 3, "iter": 42})
    body = head_swap._body(arm)
    assert body == cfg_dir / "arm-x-body.pth"
    ckpt = torch.load(body, map_location="cpu", weights_only=False)
    assert ckpt["meta"] == {"epoch": 3, "iter": 42}
    keys = set(ckpt["state_dict"])
    assert keys and not any(k.startswith("bbox_head.") for k in keys)
    assert keys == {k for k in model.state_dict() if not k.startswith("bbox_head.")}
    bn = create_model("damofd-0.5g-bnkps")
    load_checkpoint(bn, body, strict=False)
    for k in keys:
        assert torch.equal(bn.state_dict()[k], ckpt["state_dict"][k])
