"""DDP: ``torchrun`` with 2 CPU processes (gloo) equals one process with the same global batch.

Both runs see the same 4 images per iteration (2 per rank vs 4 in one process; square images,
no random augmentation, no shuffling, so every sample is identical). BatchNorm statistics are
per process in DDP (as in the official recipe), so BN is frozen (``--freeze-bn``) to make the
two runs comparable; everything else — the ATSS normalisers averaged over ranks (spec §5.3),
the gradient all-reduce, the logged losses averaged over ranks — must agree to float rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from damofd.training.api import build_trainer
from tests._train_util import (
    MECHANICS_IMAGES,
    make_small_dataset,
    read_log,
    subprocess_env,
    tiny_settings,
)


@pytest.mark.assets
@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(assets, tmp_path: Path) -> None:
    data = make_small_dataset(assets, tmp_path / "data", MECHANICS_IMAGES[:4], 64, square=True)
    settings = {
        "model": "damofd-0.5g",
        "total_epochs": 2,
        "seed": 3,
        "freeze_bn": True,
        "optimizer.lr": 0.05,
        "data.train": str(data),
        "data.crop_choice": [1.0],
        "data.flip_ratio": 0.0,
        "data.photometric": False,
        "data.shuffle": False,
        **tiny_settings(**{"lr_config.warmup_iters": 0}),
    }
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(settings))

    ddp_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "damofd",
        "train",
        str(cfg_path),
        "--work-dir",
        str(ddp_dir),
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no deprecated DDP argument: torch 2.13 warns about `broadcast_buffers` on every rank
    assert "broadcast_buffers" not in proc.stderr, proc.stderr[-3000:]

    single_dir = tmp_path / "single"
    result = build_trainer(
        cfg_path, single_dir, overrides={"data.samples_per_gpu": 4}, device="cpu"
    ).train()
    assert result.iters == 2

    start = read_log(ddp_dir, "start")[0]
    assert start["world_size"] == 2 and start["global_batch"] == 4
    ddp_log, single_log = read_log(ddp_dir), read_log(single_dir)
    assert [r["iter"] for r in ddp_log] == [r["iter"] for r in single_log] == [1, 2]
    for a, b in zip(ddp_log, single_log):
        for key in ("loss", "loss_cls", "loss_bbox"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["iter"], key)
    # the second loss depends on the first update, so the gradients agreed as well
    w_ddp = torch.load(ddp_dir / "latest.pth", map_location="cpu", weights_only=True)
    w_one = torch.load(single_dir / "latest.pth", map_location="cpu", weights_only=True)
    assert w_ddp["meta"]["world_size"] == 2 and len(w_ddp["rng"]) == 2
    for k, v in w_one["state_dict"].items():
        torch.testing.assert_close(w_ddp["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)
