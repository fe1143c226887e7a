"""Resume: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from damofd.training.api import build_trainer
from tests._train_util import (
    MECHANICS_IMAGES,
    make_small_dataset,
    read_log,
    run_python,
    tiny_settings,
)

# 6 images, 2 per batch -> 3 iterations per epoch; 3 epochs = 9 iterations. latest.pth every 2
# iterations; the run kills itself (SIGKILL) right after iteration 5, so the last checkpoint on
# disk is iteration 4 = epoch 2, batch 1 (mid-epoch resume through the sampler's skip).
KILL_AT = 5

_SCRIPT = """
import os, signal, sys
from damofd.training.api import build_trainer
from damofd.training.trainer import TrainerHook
cfg_file, work_dir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Kill(TrainerHook):
    def after_iter(self, trainer):
        if trainer.state.iter == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

hooks = [Kill()] if kill_at else []
build_trainer(cfg_file, work_dir, resume_from=True, hooks=hooks).train()
"""


@pytest.fixture(scope="module")
def resume_config(assets, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    data = make_small_dataset(assets, tmp / "data", MECHANICS_IMAGES, 64)
    cfg = {
        "model": "damofd-0.5g",
        "total_epochs": 3,
        "seed": 7,
        "deterministic": True,
        "data.train": str(data),
        "checkpoint_config.every_iters": 2,
        "optimizer.lr": 0.02,
        **tiny_settings(),
    }
    path = tmp / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.assets
def test_sigkill_then_resume_is_bitwise_identical(resume_config: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = run_python(_SCRIPT, str(resume_config), str(killed), str(KILL_AT))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = torch.load(killed / "latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 4 and ckpt["meta"]["epoch"] == 1
    assert ckpt["sampler"] == {
        "epoch": 1,
        "position": 1,
        "samples_per_gpu": 2,
        "world_size": 1,
        "seed": 7,
    }
    assert {"optimizer", "scheduler", "rng", "state_dict"} <= set(ckpt)

    proc = run_python(_SCRIPT, str(resume_config), str(killed), "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr
    # 1 epoch of 3 iterations done, then 1 iteration of the second: said in 1-based epochs
    assert "at iteration 4 (epoch 2, 1/3 iterations done)" in proc.stderr, proc.stderr[-2000:]

    reference = tmp_path / "reference"
    result = build_trainer(resume_config, reference).train()
    assert result.iters == 9 and result.stopped == "completed"

    a, b = _state(killed / "latest.pth"), _state(reference / "latest.pth")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"

    # the resumed log continues with the reference's losses, iteration by iteration
    ref = {r["iter"]: r["loss"] for r in read_log(reference)}
    res = {r["iter"]: r["loss"] for r in read_log(killed) if r["iter"] > 4}
    assert sorted(res) == [5, 6, 7, 8, 9]
    assert all(res[i] == ref[i] for i in res)
    # the killed session logged iteration 5 once before dying; the resumed one redid it
    starts = read_log(killed, "start")
    assert [s["iter"] for s in starts] == [0, 4]
