"""``benchmarks/head_swap.py``: the BN-head DamoFD config it trains and the head-less body it
starts the swap arms from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from damofd.cli.main import main
from damofd.models.checkpoint import save_checkpoint
from damofd.models.configs import DetectorConfig
from damofd.models.detector import SCRFD
from damofd.models.factory import create_model, load_checkpoint
from damofd.models.zoo import get_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
head_swap = pytest.importorskip("head_swap")


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(head_swap, "CFG", tmp_path / "cfg")
    return tmp_path / "cfg"


def test_bn_head_config_is_damofd_with_scrfd_kps_head(cfg_dir: Path, tmp_path: Path, capsys):
    path = head_swap.bn_head_config()
    assert path.parent == cfg_dir
    det = DetectorConfig.from_dict(json.loads(path.read_text())["detector"])
    damofd, scrfd = get_config("damofd-0.5g-kps"), get_config("scrfd-500m-kps")
    assert det.backbone == damofd.backbone and det.neck == damofd.neck
    assert det.head == scrfd.head and det.head.norm == "bn" and not det.head.strides_share
    # damofd train takes the file as a config
    assert main(["train", str(path), "--work-dir", str(tmp_path / "w"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "damofd-0.5g-kps"
    assert printed["detector"]["head"]["norm"] == "bn"


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
    bn = SCRFD(
        DetectorConfig.from_dict(json.loads(head_swap.bn_head_config().read_text())["detector"])
    )
    load_checkpoint(bn, body, strict=False)
    for k in keys:
        assert torch.equal(bn.state_dict()[k], ckpt["state_dict"][k])
