"""Typed training configs: recipes, schedule, overrides, config files, the ModelScope-style API
and the ``damofd train`` argument handling (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from damofd.cli.main import main as cli_main
from damofd.errors import ConfigError
from damofd.training.api import build_trainer, resolve_config
from damofd.training.config import (
    TrainConfig,
    apply_overrides,
    list_recipes,
    recipe,
    scaled_steps,
)
from damofd.training.config_files import load_config_file
from damofd.training.schedule import lr_at

# ---------------------------------------------------------------------------------------------
# recipes (reference spec §5.4, scrfd-spec §4)


@pytest.mark.parametrize(
    ("name", "lr", "warmup", "spg", "workers", "crop0", "clip", "ckpt", "ev"),
    [
        ("damofd-0.5g", 0.01, 5000, 8, 3, 1.0, True, 10, 80),
        ("damofd-0.5g-kps", 0.01, 5000, 8, 3, 1.0, True, 10, 80),
        ("damofd-2.5g", 0.01, 1500, 8, 4, 0.3, False, 80, 80),
        ("damofd-10g-kps", 0.01, 1500, 8, 3, 0.3, False, 80, 80),
        ("damofd-34g", 0.02, 1500, 8, 3, 0.3, True, 80, 80),
        ("scrfd-500m", 0.01, 1500, 8, 3, 0.3, True, 80, 80),
        ("scrfd-500m-kps", 0.01, 1500, 16, 3, 0.3, True, 80, 80),
        ("scrfd-1g", 0.01, 1500, 8, 3, 0.3, True, 320, 160),
        ("scrfd-2.5g", 0.01, 1500, 8, 3, 0.3, False, 640, 80),
        ("scrfd-10g", 0.01, 1500, 8, 3, 0.3, False, 80, 80),
        ("scrfd-34g", 0.02, 1500, 8, 3, 0.3, True, 80, 80),
    ],
)
def test_recipes(name, lr, warmup, spg, workers, crop0, clip, ckpt, ev) -> None:
    c = recipe(name)
    assert (c.optimizer.lr, c.optimizer.momentum, c.optimizer.weight_decay) == (lr, 0.9, 5e-4)
    assert c.optimizer.base_batch_size == 4 * spg and not c.optimizer.auto_scale_lr
    assert (c.lr_config.warmup_iters, c.lr_config.warmup_ratio) == (warmup, 0.001)
    assert c.lr_config.step == (440, 544) and c.total_epochs == 640
    assert (c.data.samples_per_gpu, c.data.workers_per_gpu) == (spg, workers)
    assert c.data.crop_choice[0] == crop0 and c.data.crop_choice[-1] == 2.0
    assert c.data.bbox_clip_border is clip and c.data.img_size == 640
    assert (c.checkpoint_config.interval, c.evaluation.interval) == (ckpt, ev)


def test_every_zoo_model_has_a_recipe() -> None:
    from damofd.models.zoo import list_models

    assert list_recipes() == list_models()
    assert recipe("DamoFD_10G_lms").model == "damofd-10g-kps"
    assert resolve_config("damo/cv_ddsar_face-detection_iclr23-damofd-10G").model == (
        "damofd-10g-kps"
    )
    with pytest.raises(ConfigError, match="unknown model"):
        recipe("damofd-1g")


def test_steps_scale_with_epochs() -> None:
    assert scaled_steps((440, 544), 640, 640) == (440, 544)
    assert scaled_steps((440, 544), 10, 640) == (7, 9)
    assert scaled_steps((440, 544), 100, 640) == (69, 85)
    assert scaled_steps((5, 8), 3, 0) == (5, 8)  # 0: verbatim
    c = recipe("damofd-0.5g")
    c.total_epochs = 20
    assert c.effective_steps() == (14, 17)


def test_lr_schedule_warmup_and_steps() -> None:
    kw = dict(base_lr=0.01, steps=(2, 4), gamma=0.1, warmup_iters=10, warmup_ratio=0.001)
    assert lr_at(0, 0, **kw) == pytest.approx(1e-5)
    assert lr_at(5, 0, **kw) == pytest.approx(0.01 * (1 - 0.5 * 0.999))
    assert lr_at(10, 0, **kw) == pytest.approx(0.01)
    assert lr_at(50, 1, **kw) == pytest.approx(0.01)
    assert lr_at(50, 2, **kw) == pytest.approx(0.001)
    assert lr_at(50, 4, **kw) == pytest.approx(0.0001)
    # warm-up applies to the decayed rate when a step comes first
    assert lr_at(5, 2, **kw) == pytest.approx(0.001 * (1 - 0.5 * 0.999))


def test_linear_scaling_rule() -> None:
    c = recipe("damofd-10g")
    assert c.effective_lr(world_size=8) == 0.01  # verbatim by default (official semantics)
    c.optimizer.auto_scale_lr = True
    assert c.effective_lr(world_size=8) == pytest.approx(0.02)  # 8 x 8 = 64 = 2 x 32
    c.data.samples_per_gpu = 4
    assert c.effective_lr(world_size=1) == pytest.approx(0.01 * 4 / 32)


# ---------------------------------------------------------------------------------------------
# overrides


def test_overrides_convert_types() -> None:
    c = apply_overrides(
        recipe("damofd-0.5g"),
        [
            "optimizer.lr=0.02",
            "total_epochs=12",
            "data.crop_choice=1,1.5",
            "data.photometric=false",
            "lr_config.step=[3, 6]",
            "load_from=none",
            "device=cuda:1",
        ],
    )
    assert c.optimizer.lr == 0.02 and c.total_epochs == 12
    assert c.data.crop_choice == (1.0, 1.5) and c.data.photometric is False
    assert c.lr_config.step == (3, 6) and c.load_from is None and c.device == "cuda:1"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lrr=1", r"unknown config key 'optimizer.lrr'; did you mean optimizer.lr"),
        ("optimizer.lr=fast", r"'optimizer.lr' expects a number, got 'fast'"),
        ("data.samples_per_gpu=2.5", r"'data.samples_per_gpu' expects an integer"),
        ("deterministic=maybe", r"'deterministic' expects a boolean"),
        ("data=3", r"'data' is a section"),
        ("seed.x=1", r"'seed' is not a section"),
        ("evaluation.metric=ap50", r"'evaluation.metric': must be one of"),
        ("data.img_size=100", r"'data.img_size': must be a positive multiple of 32"),
        ("lr_config.step=9,3", r"'lr_config.step': must be non-negative and increasing"),
        ("noequals", r"expects key=value"),
        ("backbone_init=he", r"'backbone_init': must be one of official, kaiming, got 'he'"),
    ],
)
def test_override_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(recipe("damofd-0.5g"), [override])


def test_validate_catches_attribute_edits() -> None:
    c = recipe("damofd-0.5g")
    c.data.samples_per_gpu = "4"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"'data\.samples_per_gpu' expects int"):
        c.validate()
    c = recipe("damofd-0.5g")
    c.optimizer.lr = 1  # an int where a float is expected is converted
    assert isinstance(c.validate().optimizer.lr, float)
    c.data.crop_choice = [1, 2]  # type: ignore[assignment]
    assert c.validate().data.crop_choice == (1.0, 2.0)


def test_round_trip_through_dict() -> None:
    c = apply_overrides(recipe("scrfd-2.5g-kps"), ["data.train=/x", "seed=5"])
    again = TrainConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


# ---------------------------------------------------------------------------------------------
# files


def test_json_file_nested_and_dotted(tmp_path: Path) -> None:
    p = tmp_path / "cfg.json"
    p.write_text(
        json.dumps({"model": "damofd-2.5g", "optimizer": {"lr": 0.005}, "data.samples_per_gpu": 4})
    )
    c = load_config_file(p)
    assert c.model == "damofd-2.5g" and c.optimizer.lr == 0.005
    assert c.data.samples_per_gpu == 4 and c.data.workers_per_gpu == 4  # rest of the recipe
    p.write_text(json.dumps({"model": "damofd-2.5g", "optimizer": {"lr": "x"}}))
    with pytest.raises(ConfigError, match=r"cfg\.json: config key 'optimizer.lr' expects"):
        load_config_file(p)
    p.write_text('{"model": "damofd-2.5g",\n "data": {"sampels_per_gpu": 4}}')
    with pytest.raises(ConfigError, match=r"cfg\.json: unknown config key 'data.sampels_per_gpu'"):
        load_config_file(p)
    p.write_text('{"model": "damofd-2.5g",\n "data": }')
    with pytest.raises(ConfigError, match=r"cfg\.json:2: invalid JSON"):
        load_config_file(p)


def test_python_file(tmp_path: Path) -> None:
    p = tmp_path / "cfg.py"
    p.write_text(
        "import os  # never executed\n"
        "model = 'scrfd-500m'\n"
        "_base_lr = 0.01\n"
        "optimizer = dict(lr=_base_lr * 2)\n"
        "total_epochs = 80\n"
        "evaluation = dict(interval=10, metric='mean')\n"
    )
    c = load_config_file(p)
    assert c.model == "scrfd-500m" and c.optimizer.lr == 0.02 and c.total_epochs == 80
    assert c.evaluation.metric == "mean" and c.effective_steps() == (55, 68)
    p.write_text("model = 'scrfd-500m'\nlog_config = dict(intervall=5)\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'log_config.intervall'"):
        load_config_file(p)


_MMCV_TRAINING = """
lr_mult = 8
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optimizer_config = dict(grad_clip=None)
lr_config = dict(policy='step', warmup='linear', warmup_iters=5000, warmup_ratio=0.001,
                 step=[55 * lr_mult, 68 * lr_mult])
total_epochs = 80 * lr_mult
checkpoint_config = dict(interval=10)
log_config = dict(interval=100, hooks=[dict(type='TextLoggerHook')])
evaluation = dict(interval=80, metric='mAP')
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotationsV2', with_bbox=True, with_keypoints=True),
    dict(type='RandomSquareCrop', crop_choice=[1.0, 1.2, 1.4, 1.6, 1.8, 2.0]),
    dict(type='Resize', img_scale=(640, 640), keep_ratio=False),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='DefaultFormatBundleV2'),
]
data = dict(samples_per_gpu=8, workers_per_gpu=3,
            train=dict(type='RetinaFaceDataset', ann_file='data/retinaface/train/labelv2.txt',
                       img_prefix='data/retinaface/train/images/', pipeline=train_pipeline))
"""


def test_modelscope_mmcv_config(tmp_path: Path) -> None:
    from damofd.models.modelscope import mmcv_config_text
    from damofd.models.zoo import get_config

    p = tmp_path / "DamoFD_lms.py"
    p.write_text(mmcv_config_text(get_config("damofd-0.5g-kps")) + _MMCV_TRAINING)
    c = load_config_file(p)
    assert c.model == "damofd-0.5g-kps" and c.detector is not None
    assert c.total_epochs == 640 and c.lr_config.step == (440, 544)
    assert c.lr_config.warmup_iters == 5000 and c.optimizer.lr == 0.01
    assert c.data.crop_choice == (1.0, 1.2, 1.4, 1.6, 1.8, 2.0) and c.data.img_size == 640
    assert (c.checkpoint_config.interval, c.evaluation.interval, c.log_config.interval) == (
        10,
        80,
        100,
    )
    # the seed's ModelScope example, verbatim names
    seen = {}

    def _cfg_modify_fn(cfg):
        cfg.checkpoint_config.interval = 1
        cfg.log_config.interval = 10
        cfg.evaluation.interval = 1
        cfg.data.workers_per_gpu = 1
        cfg.data.samples_per_gpu = 4
        seen["called"] = True
        return cfg

    t = build_trainer(
        cfg_file=str(p),
        work_dir=str(tmp_path / "wd"),
        train_root=str(tmp_path / "train"),
        val_root=str(tmp_path / "val"),
        total_epochs=1,
        cfg_modify_fn=_cfg_modify_fn,
    )
    assert seen["called"] and t.cfg.total_epochs == 1 and t.cfg.effective_steps() == (1, 1)
    assert (t.cfg.data.samples_per_gpu, t.cfg.data.workers_per_gpu) == (4, 1)
    assert t.cfg.data.train == str(tmp_path / "train") and t.cfg.data.val == str(tmp_path / "val")

    def bad(cfg):
        cfg.evaluation.interval = "often"

    with pytest.raises(ConfigError, match=r"'evaluation\.interval' expects an integer"):
        build_trainer(str(p), tmp_path / "wd", cfg_modify_fn=bad)


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_print_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "train",
            "damofd-10g",
            "--train-labels",
            "labels.txt",
            "--train-images",
            "imgs",
            "--work-dir",
            str(tmp_path),
            "--epochs",
            "20",
            "--batch-size",
            "4",
            "--lr",
            "0.005",
            "--eval-every",
            "5",
            "--checkpoint-every-iters",
            "100",
            "--set",
            "data.flip_ratio=0",
            "--print-config",
        ]
    )
    assert rc == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"] == "damofd-10g" and cfg["total_epochs"] == 20
    assert cfg["data"]["train"] == "labels.txt" and cfg["data"]["train_images"] == "imgs"
    assert cfg["data"]["samples_per_gpu"] == 4 and cfg["optimizer"]["lr"] == 0.005
    assert cfg["evaluation"]["interval"] == 5 and cfg["data"]["flip_ratio"] == 0.0
    assert cfg["checkpoint_config"]["every_iters"] == 100


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["train", "damofd-0.5g", "--work-dir", str(tmp_path), "--set", "optimizer.x=1"])
    assert rc == 2
    assert "unknown config key 'optimizer.x'" in capsys.readouterr().err
    rc = cli_main(["train", "damofd-0.5g", "--work-dir", str(tmp_path)])
    assert rc == 2
    assert "no training set given (--train)" in capsys.readouterr().err
    rc = cli_main(["train", "--work-dir", str(tmp_path), "--train", "x"])
    assert rc == 2
    assert "MODEL_OR_CONFIG" in capsys.readouterr().err


def test_structure_string_uses_the_nearest_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from damofd.models.zoo import get_config
    from damofd.training.trainer import build_model

    s = get_config("damofd-2.5g").backbone.structure  # a "searched" backbone of that budget
    rc = cli_main(["train", "--structure", s, "--work-dir", str(tmp_path), "--print-config"])
    assert rc == 0
    cfg = TrainConfig.from_dict(json.loads(capsys.readouterr().out))
    assert cfg.model == "damofd-2.5g" and cfg.structure == s
    assert cfg.data.workers_per_gpu == 4 and cfg.data.bbox_clip_border is False
    model = build_model(cfg)
    assert model.config.backbone.structure == s and model.config.head.feat_channels == 64


def test_backbone_init_redraws_masternet_convs_only() -> None:
    """``backbone_init=kaiming`` shrinks a DamoFD backbone's convs to Kaiming scale (same seed →
    same weights); the neck and head, and SCRFD's backbones, are untouched."""
    import torch

    from damofd.training.builders import build_model

    def convs(cfg_overrides: list[str], model: str) -> tuple[dict, dict]:
        m = build_model(apply_overrides(recipe(model), cfg_overrides))
        sd = {k: v for k, v in m.state_dict().items() if v.dim() == 4}
        back = {k: v for k, v in sd.items() if k.startswith("backbone.")}
        return back, {k: v for k, v in sd.items() if k not in back}

    off_b, off_rest = convs([], "damofd-0.5g")
    kai_b, kai_rest = convs(["backbone_init=kaiming"], "damofd-0.5g")
    again_b, _ = convs(["backbone_init=kaiming"], "damofd-0.5g")
    assert all(torch.equal(kai_b[k], again_b[k]) for k in kai_b)
    assert all(torch.equal(off_rest[k], kai_rest[k]) for k in off_rest)
    big = [k for k, v in off_b.items() if v.numel() > 64]
    ratio = sorted(off_b[k].std().item() / kai_b[k].std().item() for k in big)
    assert ratio[len(ratio) // 2] > 2.0
    s_off, _ = convs([], "scrfd-500m")
    s_kai, _ = convs(["backbone_init=kaiming"], "scrfd-500m")
    assert all(torch.equal(s_off[k], s_kai[k]) for k in s_off)
