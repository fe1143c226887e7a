"""ModelScope model directories and ids (reference spec §8.1–8.3): the mmcv config reader (never
executes the file), config translation, the directory round trip, and the hub path with a fake
``modelscope`` client."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from damofd.errors import ConfigError, InputError
from damofd.models import SCRFD, create_model, get_config, list_models, save_checkpoint
from damofd.models.checkpoint import CheckpointError
from damofd.models.modelscope import (
    CONFIG_FILE,
    CONFIGURATION_FILE,
    MODEL_FILE,
    MODELSCOPE_FILES,
    MODELSCOPE_MODELS,
    HubDownloadError,
    config_from_mmcv,
    download_modelscope,
    load_modelscope,
    load_modelscope_dir,
    load_weights,
    match_zoo_config,
    mmcv_config_text,
    modelscope_cache_dir,
    read_mmcv_config,
    save_modelscope_dir,
)

ID_05G = "damo/cv_ddsar_face-detection_iclr23-damofd"

# An mmcv-style config in the layout of the DamoFD_lmks configs: arithmetic on earlier names,
# dict(...) calls, comments, an import and statements that must never run.
MMCV_CONFIG = """\
import os
lr_mult = 8
lr_config = dict(policy='step', warmup='linear', step=[55 * lr_mult, 68 * lr_mult])
total_epochs = 80 * lr_mult
side_effect = open({sentinel!r}, 'w')
img_norm_cfg = dict(mean=[127.5] * 3, std=[128.0, 128.0, 128.0], to_rgb=True)
model = dict(
    type='SCRFD',
    backbone=dict(
        type='MasterNet',
        plainnet_struct='{structure}'),
    neck=dict(
        type='PAFPN',
        in_channels=[32, 64, 120, 160],
        out_channels=16,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=3),
    bbox_head=dict(
        type='SCRFDHead',
        num_classes=1,
        in_channels=16,
        stacked_convs=2,
        feat_channels=64,
        # norm_cfg=dict(type='BN', requires_grad=True),
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        cls_reg_share=True,
        strides_share=True,
        dw_conv=True,
        scale_mode=2,
        anchor_generator=dict(
            type='AnchorGenerator', ratios=[1.0], scales=[1, 2],
            base_sizes=[16, 64, 256], strides=[8, 16, 32]),
        loss_dfl=False,
        reg_max=8,
        use_kps=True,
        loss_kps=dict(type='SmoothL1Loss', beta=1 / 9, loss_weight=0.1)))
evaluation = dict(interval=80, metric='mAP')
"""


def _write_config(tmp_path: Path) -> tuple[Path, Path]:
    sentinel = tmp_path / "executed"
    structure = get_config("damofd-0.5g-kps").backbone.structure
    cfg = tmp_path / CONFIG_FILE
    cfg.write_text(MMCV_CONFIG.format(sentinel=str(sentinel), structure=structure))
    return cfg, sentinel


# ------------------------------------------------------------------------------ config files


def test_mmcv_config_is_read_without_executing_it(tmp_path: Path) -> None:
    path, sentinel = _write_config(tmp_path)
    cfg = read_mmcv_config(path)
    assert not sentinel.exists()
    assert cfg["lr_config"]["step"] == [440, 544] and cfg["total_epochs"] == 640
    assert cfg["img_norm_cfg"]["mean"] == [127.5, 127.5, 127.5]
    assert "side_effect" not in cfg and "side_effect" in cfg["__skipped__"]
    assert f"{path}:5" in cfg["__skipped__"]["side_effect"]
    det = config_from_mmcv(cfg, where=str(path))
    assert det == get_config("damofd-0.5g-kps")
    assert match_zoo_config(det) == "damofd-0.5g-kps"


def test_base_inheritance_and_errors(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text(
        "model = dict(type='SCRFD', neck=dict(out_channels=16, num_outs=3), x=dict(a=1))\n"
        "epochs = 10\n"
    )
    (tmp_path / "child.py").write_text(
        "_base_ = './base.py'\n"
        "model = dict(neck=dict(out_channels=24), x=dict(_delete_=True, b=2))\n"
    )
    cfg = read_mmcv_config(tmp_path / "child.py")
    assert cfg["model"]["neck"] == {"out_channels": 24, "num_outs": 3}
    assert cfg["model"]["x"] == {"b": 2} and cfg["epochs"] == 10
    (tmp_path / "broken.py").write_text("model = dict(\n")
    with pytest.raises(InputError, match=r"broken\.py:\d+: not a valid Python config"):
        read_mmcv_config(tmp_path / "broken.py")
    with pytest.raises(InputError, match="not found"):
        read_mmcv_config(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="no 'model' dict"):
        config_from_mmcv({"epochs": 3}, where="x.py")
    bad = {"model": {"type": "SCRFD", "backbone": {"type": "VGG"}, "neck": {}, "bbox_head": {}}}
    with pytest.raises(ConfigError, match="backbone type 'VGG'"):
        config_from_mmcv(bad)


@pytest.mark.parametrize("name", list_models())
def test_generated_config_round_trips(tmp_path: Path, name: str) -> None:
    cfg = get_config(name)
    path = tmp_path / CONFIG_FILE
    path.write_text(mmcv_config_text(cfg))
    back = config_from_mmcv(read_mmcv_config(path))
    assert back == cfg
    assert match_zoo_config(back) == name


# ------------------------------------------------------------------------------ directories


def _randomized(name: str) -> SCRFD:
    model = create_model(name)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point() and "running_var" not in k and "integral" not in k:
                v.add_(0.05 * torch.randn(v.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", ["damofd-0.5g-kps", "scrfd-2.5g-kps"])
def test_directory_round_trip(tmp_path: Path, name: str) -> None:
    model = _randomized(name)
    d = save_modelscope_dir(model, tmp_path / "repo", meta={"epoch": 640})
    assert sorted(p.name for p in d.iterdir()) == sorted(MODELSCOPE_FILES)
    ckpt = torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"meta", "state_dict"} and ckpt["meta"]["epoch"] == 640
    assert next(iter(ckpt["state_dict"])).startswith("backbone.")
    loaded = load_modelscope(d)
    assert loaded.name == name and not loaded.training
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model.forward_export(x), loaded.forward_export(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a DDP-style checkpoint (``module.`` prefix, optimizer state) loads too
    ckpt["state_dict"] = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(ckpt, d / MODEL_FILE)
    again = load_modelscope_dir(d)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_directory_errors(tmp_path: Path) -> None:
    model = create_model("damofd-0.5g-kps").eval()
    d = save_modelscope_dir(model, tmp_path / "repo")
    with pytest.raises(InputError, match="ModelScope model directory not found"):
        load_modelscope_dir(tmp_path / "absent")
    # a checkpoint that does not fit the config is refused (strict), naming the keys
    save_checkpoint(create_model("damofd-0.5g"), d / MODEL_FILE)
    with pytest.raises(CheckpointError, match="stride_kps"):
        load_modelscope_dir(d)
    (d / CONFIGURATION_FILE).write_text('{"model": {"type": "scrfd"}}')
    with pytest.raises(ConfigError, match="not a DamoFD model"):
        load_modelscope_dir(d)
    (d / CONFIG_FILE).unlink()
    with pytest.raises(InputError, match=f"missing {CONFIG_FILE}"):
        load_modelscope_dir(d)
    with pytest.raises(ConfigError, match="fused model"):
        save_modelscope_dir(create_model("scrfd-500m").eval().fuse(), tmp_path / "fused")


def test_custom_structure_is_built_from_the_config(tmp_path: Path) -> None:
    structure = (
        "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,24,2,16,1)SuperResK3K3(24,32,2,16,1)"
        "SuperResK3K3(32,48,2,16,1)SuperResK3K3(48,64,2,16,1)"
    )
    model = create_model("damofd-0.5g", structure=structure, use_kps=True).eval()
    loaded = load_modelscope(save_modelscope_dir(model, tmp_path / "repo"))
    assert loaded.name is None and loaded.config == model.config


# ------------------------------------------------------------------------------ hub


def _fake_client(monkeypatch: pytest.MonkeyPatch, source: Path | None, calls: list) -> None:
    """Install a fake ``modelscope.hub.snapshot_download`` that copies ``source`` (or fails)."""

    def snapshot_download(model_id: str, cache_dir: str | None = None, revision=None) -> str:
        calls.append((model_id, cache_dir, revision))
        if source is None:
            raise ConnectionError("modelscope.cn unreachable")
        dst = Path(cache_dir or ".").joinpath(*model_id.split("/"))
        shutil.copytree(source, dst, dirs_exist_ok=True)
        return str(dst)

    pkg = types.ModuleType("modelscope")
    hub = types.ModuleType("modelscope.hub")
    mod = types.ModuleType("modelscope.hub.snapshot_download")
    mod.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    pkg.hub = hub  # type: ignore[attr-defined]
    hub.snapshot_download = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope", pkg)
    monkeypatch.setitem(sys.modules, "modelscope.hub", hub)
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", mod)


def test_hub_download_with_a_fake_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MODELSCOPE_MODELS[ID_05G] == "damofd-0.5g-kps"
    model = _randomized("damofd-0.5g-kps")
    source = save_modelscope_dir(model, tmp_path / "published")
    calls: list = []
    _fake_client(monkeypatch, source, calls)
    monkeypatch.setenv("DAMOFD_CACHE", str(tmp_path / "cache"))
    assert modelscope_cache_dir() == tmp_path / "cache" / "modelscope"
    loaded = load_modelscope(ID_05G.upper(), revision="v1.0")  # ids are case-insensitive
    assert loaded.name == "damofd-0.5g-kps"
    assert calls == [(ID_05G, str(tmp_path / "cache" / "modelscope"), "v1.0")]
    assert (
        tmp_path / "cache" / "modelscope" / "damo" / ID_05G.split("/")[1] / MODEL_FILE
    ).is_file()
    # second time from the cache, without the client
    again = load_weights(ID_05G)
    assert len(calls) == 1
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_hub_errors_say_what_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_id = "damo/cv_ddsar_face-detection_iclr23-damofd-10G"
    target = tmp_path / "damo" / "cv_ddsar_face-detection_iclr23-damofd-10G"
    monkeypatch.setitem(sys.modules, "modelscope", None)  # client not installed
    with pytest.raises(HubDownloadError) as e:
        download_modelscope(model_id, cache_dir=tmp_path)
    msg = str(e.value)
    for needle in (
        model_id,
        *MODELSCOPE_FILES,
        f"https://modelscope.cn/models/{model_id}/files",
        str(target),
        "not installed",
        "damofd[hub]",
    ):
        assert needle in msg
    calls: list = []
    _fake_client(monkeypatch, None, calls)  # network failure
    with pytest.raises(HubDownloadError, match=r"hub is unreachable.*ConnectionError") as e:
        load_modelscope(model_id, cache_dir=tmp_path)
    assert str(target) in str(e.value) and len(calls) == 1
    assert "pip install" not in str(e.value)  # the client is installed: no advice to install it
    with pytest.raises(HubDownloadError, match="download=False"):
        load_modelscope(model_id, cache_dir=tmp_path, download=False)
    with pytest.raises(InputError, match="neither a ModelScope model directory nor a model id"):
        load_modelscope("no id here")


def test_load_weights_dispatch(tmp_path: Path) -> None:
    model = _randomized("scrfd-500m")
    ckpt = save_checkpoint(model, tmp_path / "model.pth")
    loaded = load_weights(ckpt)
    assert loaded.name == "scrfd-500m" and not loaded.training
    fused = load_weights(ckpt, form="fused")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.forward_export(x), fused.forward_export(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="no such weights file"):
        load_weights(tmp_path / "missing.pth")


def test_unanswering_hub_gives_up_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    release = threading.Event()

    def snapshot_download(model_id: str, cache_dir: str | None = None, revision=None) -> str:
        release.wait(30)  # a client retrying an unreachable host
        raise ConnectionError("gave up")

    _fake_client(monkeypatch, None, [])
    monkeypatch.setattr(
        sys.modules["modelscope.hub.snapshot_download"], "snapshot_download", snapshot_download
    )
    monkeypatch.setenv("DAMOFD_HUB_TIMEOUT", "0.5")
    t0 = time.monotonic()
    try:
        with pytest.raises(HubDownloadError, match=r"did not answer within 0\.5 s.*HUB_TIMEOUT"):
            download_modelscope("damo/cv_ddsar_face-detection_iclr23-damofd", cache_dir=tmp_path)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
    monkeypatch.setenv("DAMOFD_HUB_TIMEOUT", "soon")
    with pytest.raises(Exception, match="DAMOFD_HUB_TIMEOUT must be a number"):
        download_modelscope("damo/cv_ddsar_face-detection_iclr23-damofd", cache_dir=tmp_path)
