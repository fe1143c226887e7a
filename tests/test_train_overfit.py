"""Overfit: DamoFD-0.5G learns four real WIDER train images (5 faces) on the CPU.

Four images with large faces are downscaled to a short side of 128 px and trained on at 128×128
(square crop of the short side, no flip or colour jitter) for 200 iterations of batch 4, lr 0.01
with a 20-iteration warm-up and cosine decay. The in-training validation then runs the WIDER
protocol on the same images (labelv2 ground truth, every face kept, ``original`` test protocol so
faces have the training scale).

Why this schedule, three seeds and a median: a run this short follows one exact float trajectory,
and convolution kernels round differently on different CPUs (AMD vs Intel AVX-512/AMX) and
memory formats (NHWC vs NCHW). The earlier schedule (lr 0.02, ×0.1 at iteration 160) landed in a
poor basin for some seeds: AP 0.22 at seed 0 on an Intel Xeon with channels-last, and on an AMD
EPYC (Zen 4, AVX-512, no AMX) with channels-last AP 0.94 / 0.86 / 0.22 at seeds 0 / 1 / 2
(NCHW: 1.0 at all three). With the cosine schedule every run reached AP 1.0 on that AMD EPYC,
seeds 0–2, NHWC and NCHW alike (docs/training.md, "Tests and CPUs"). The test asserts on the
median of seeds 0–2 (AP ≥ 0.6, loss at most half its start) and that every run's loss falls,
which one unlucky trajectory cannot break and an untrained or broken detector (AP ≈ 0.01)
cannot pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from damofd.training.api import build_trainer
from tests._train_util import OVERFIT_IMAGES, make_small_dataset, read_log, tiny_settings

ITERS = 200
SEEDS = (0, 1, 2)


def _overfit_run(data: Path, work: Path, seed: int) -> tuple[Any, np.ndarray]:
    settings = tiny_settings(
        **{
            "data.img_size": 128,
            "data.samples_per_gpu": 4,
            "data.crop_choice": (1.0,),
            "data.flip_ratio": 0.0,
            "data.photometric": False,
            "optimizer.lr": 0.01,
            "lr_config.warmup_iters": 20,
            "lr_config.policy": "cosine",
            "evaluation.interval": ITERS,
            "evaluation.protocol": "original",
            "log_config.interval": 10,
        }
    )
    trainer = build_trainer(
        "damofd-0.5g",
        work,
        train_root=data,
        val_root=data,
        total_epochs=ITERS,  # one iteration per epoch (4 images, batch 4)
        overrides=settings,
        seed=seed,
    )
    result = trainer.train()
    assert result.iters == ITERS and result.stopped == "completed"
    losses = np.array([r["loss"] for r in read_log(work)])
    assert losses.size == ITERS // 10
    ev = result.last_eval
    assert ev is not None and ev["images"] == 4
    assert ev["easy"] == ev["medium"] == ev["hard"]  # labelv2 ground truth: every face kept
    assert result.best is not None and result.best.is_file()
    assert result.best_metric == pytest.approx(ev["hard"])
    return result, losses


@pytest.mark.assets
@pytest.mark.slow
def test_overfit_four_images(assets, tmp_path: Path) -> None:
    data = make_small_dataset(assets, tmp_path / "data", OVERFIT_IMAGES, 128)
    aps, ratios = [], []
    for seed in SEEDS:
        result, losses = _overfit_run(data, tmp_path / f"work{seed}", seed)
        first, last = losses[:2].mean(), losses[-2:].mean()
        # every trajectory must learn something, whatever basin it lands in
        assert last < 0.8 * first, f"seed {seed}: loss did not fall: {first:.3f} -> {last:.3f}"
        aps.append(result.last_eval["hard"])
        ratios.append(last / first)
    shown = ", ".join(f"seed {s}: AP {a:.3f}, loss ×{r:.2f}" for s, a, r in zip(SEEDS, aps, ratios))
    assert float(np.median(aps)) >= 0.6, f"median AP below 0.6 after {ITERS} iterations ({shown})"
    assert float(np.median(ratios)) < 0.5, f"median loss did not halve ({shown})"
