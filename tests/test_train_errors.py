"""Bad input and abnormal stops: missing images, malformed labels, NaN loss, signals, limits,
resume and fine-tuning sources."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from damofd.errors import ConfigError, InputError
from damofd.models.checkpoint import CheckpointError
from damofd.training.api import build_trainer
from damofd.training.trainer import TrainerHook, TrainingDivergedError, load_pretrained
from tests._train_util import MECHANICS_IMAGES, make_small_dataset, read_log, tiny_settings
from tests.conftest import require_asset


@pytest.fixture(scope="module")
def small_data(assets, tmp_path_factory) -> Path:
    return make_small_dataset(assets, tmp_path_factory.mktemp("err") / "d", MECHANICS_IMAGES, 64)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _trainer(data: Path, work: Path, *, build: dict | None = None, **extra):
    """A 3-epoch tiny run; ``extra`` are config keys, ``build`` more build_trainer arguments."""
    return build_trainer(
        "damofd-0.5g",
        work,
        train_root=data,
        total_epochs=3,
        overrides=tiny_settings(**extra),
        **(build or {}),
    )


@pytest.mark.assets
def test_missing_images_are_listed_before_training(small_data: Path, tmp_path: Path) -> None:
    data = _copy(small_data, tmp_path / "d")
    gone = [MECHANICS_IMAGES[1], MECHANICS_IMAGES[4]]
    for name in gone:
        (data / "images" / name).unlink()
    with pytest.raises(InputError) as exc:
        _trainer(data, tmp_path / "w").train()
    msg = str(exc.value)
    assert msg.startswith("2 images listed in the annotation but missing")
    assert all(name in msg for name in gone)
    assert not (tmp_path / "w" / "log.jsonl").exists()  # nothing trained, nothing logged


@pytest.mark.assets
def test_malformed_label_line_names_file_and_line(small_data: Path, tmp_path: Path) -> None:
    data = _copy(small_data, tmp_path / "d")
    lines = (data / "labelv2.txt").read_text().splitlines()
    lines[3] = "12 34 oops 56"
    (data / "labelv2.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"labelv2\.txt:4: .*'oops'"):
        _trainer(data, tmp_path / "w").train()


class _PoisonAt(TrainerHook):
    """Fill one weight with NaN before iteration ``at + 1``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_iter(self, trainer) -> None:
        if trainer.state.iter == self.at:
            w = trainer.model_without_ddp.bbox_head.stride_reg["0"].weight
            with torch.no_grad():
                w.fill_(float("nan"))


@pytest.mark.assets
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_data, tmp_path: Path) -> None:
    work = tmp_path / "w"
    t = _trainer(small_data, work, **{"checkpoint_config.every_iters": 2})
    t.register_hook(_PoisonAt(5))
    with pytest.raises(TrainingDivergedError) as exc:
        t.train()
    e = exc.value
    assert (e.iteration, e.epoch) == (6, 2)
    assert "non-finite loss at iteration 6 (epoch 2)" in str(e)
    assert "the last good checkpoint is" in str(e) and "(iteration 4)" in str(e)
    ckpt = torch.load(work / "latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 4
    weights = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    diverged = read_log(work, "diverged")
    assert len(diverged) == 1 and diverged[0]["iter"] == 6
    assert [r["iter"] for r in read_log(work)] == [1, 2, 3, 4, 5]


class _SignalAt(TrainerHook):
    def __init__(self, at: int) -> None:
        self.at = at

    def after_iter(self, trainer) -> None:
        if trainer.state.iter == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.assets
def test_sigterm_saves_and_stops(small_data: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or another library's (e.g. Ray's)
    t = _trainer(small_data, tmp_path / "w")
    t.register_hook(_SignalAt(2))
    result = t.train()
    # the flag is seen by the next iteration, which completes; then latest.pth is written
    assert result.stopped == "signal" and result.iters == 3
    ckpt = torch.load(tmp_path / "w" / "latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 3 and ckpt["meta"]["epoch"] == 1
    assert ckpt["sampler"]["position"] == 0
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


@pytest.mark.assets
def test_max_iters_stops_mid_epoch_and_resume_continues(small_data, tmp_path: Path) -> None:
    work = tmp_path / "w"
    r1 = _trainer(small_data, work, max_iters=4).train()
    assert (r1.stopped, r1.iters, r1.epochs) == ("max_iters", 4, 1)
    ckpt = torch.load(work / "latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["sampler"]["position"] == 1
    r2 = build_trainer(
        "damofd-0.5g",
        work,
        train_root=small_data,
        total_epochs=3,
        overrides=tiny_settings(),
        resume_from=True,
    ).train()
    assert (r2.stopped, r2.iters, r2.epochs) == ("completed", 9, 3)
    assert [r["iter"] for r in read_log(work)] == list(range(1, 10))


@pytest.mark.assets
def test_resume_from_missing_file(small_data: Path, tmp_path: Path) -> None:
    t = build_trainer(
        "damofd-0.5g",
        tmp_path / "w",
        train_root=small_data,
        overrides=tiny_settings(),
        resume_from=str(tmp_path / "nope.pth"),
    )
    with pytest.raises(InputError, match=r"--resume: checkpoint .*nope\.pth.* does not exist"):
        t.train()


def test_load_from_wrong_architecture(tmp_path: Path) -> None:
    from damofd.models import create_model, save_checkpoint

    path = save_checkpoint(create_model("scrfd-500m", init=False), tmp_path / "scrfd.pth")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_pretrained(create_model("damofd-0.5g", init=False), str(path))
    same = create_model("damofd-0.5g")
    path = save_checkpoint(same, tmp_path / "ok.pth", meta={"epoch": 640})
    target = create_model("damofd-0.5g")
    report = load_pretrained(target, str(path), log=lambda m: None)
    assert report["kind"] == "checkpoint" and report["meta"]["epoch"] == 640
    for k, v in same.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    with pytest.raises(InputError, match=r"--load-from .*missing\.pth: no such file"):
        load_pretrained(target, str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="not a file, a ModelScope folder or a ModelScope id"):
        load_pretrained(target, "no-such-thing")


@pytest.mark.assets
def test_load_from_official_onnx_warns_about_bn(assets: Path) -> None:
    from damofd.models import create_model

    onnx_path = require_asset(assets, "models/scrfd/scrfd_500m.onnx")
    messages: list[str] = []
    model = create_model("scrfd-500m")
    report = load_pretrained(model, str(onnx_path), log=messages.append)
    assert report["bn_folded"] and any("--freeze-bn" in m for m in messages)


def test_amp_without_cuda_is_a_warning_and_sync_bn_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_trainer("damofd-0.5g", tmp_path, train_root=tmp_path, device="cuda").setup()


def test_load_from_modelscope_folder(tmp_path: Path) -> None:
    from damofd.models import create_model
    from damofd.models.modelscope import save_modelscope_dir

    src = create_model("damofd-0.5g-kps")
    folder = save_modelscope_dir(src, tmp_path / "ms", meta={"epoch": 640})
    target = create_model("damofd-0.5g-kps")
    report = load_pretrained(target, str(folder), log=lambda m: None)
    assert report["kind"] == "modelscope"
    for k, v in src.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_pretrained(create_model("damofd-0.5g"), str(folder))  # no keypoint branch


@pytest.mark.assets
def test_existing_run_is_not_overwritten(small_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    first = _trainer(small_data, work, max_iters=2).train()
    before = (work / "latest.pth").read_bytes()
    (work / ".latest.pth.abc123.tmp").write_bytes(b"left by a SIGKILL")
    with pytest.raises(InputError, match=r"already holds a run .*--resume.*--force"):
        _trainer(small_data, work).train()
    assert (work / "latest.pth").read_bytes() == before  # untouched
    # --resume continues and removes the stale temporary file
    resumed = _trainer(small_data, work, max_iters=3, build={"resume_from": True}).train()
    assert resumed.iters == 3 and first.iters == 2
    assert not list(work.glob(".*.tmp"))
    # --force starts over
    again = _trainer(small_data, work, max_iters=1, build={"overwrite": True}).train()
    assert again.iters == 1


def test_train_cli_refuses_force_with_resume(tmp_path: Path, capsys) -> None:
    from damofd.cli.main import main

    rc = main(["train", "damofd-0.5g", "--train-labels", str(tmp_path / "x.txt"),
               "--work-dir", str(tmp_path / "w"), "--force", "--resume"])  # fmt: skip
    assert rc == 2
    assert "--force starts over and --resume continues" in capsys.readouterr().err


@pytest.mark.assets
def test_truncated_jpeg_named_by_check_and_refused_by_train(small_data: Path, tmp_path) -> None:
    from damofd.data.check import check_labelv2

    data = _copy(small_data, tmp_path / "d")
    bad = [MECHANICS_IMAGES[2], MECHANICS_IMAGES[5]]
    for name in bad:
        p = data / "images" / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # cut in the middle of the scan
    report = check_labelv2(data / "labelv2.txt", data / "images")
    assert not report.ok and sorted(report.bad_images) == sorted(bad)
    assert all("truncated JPEG" in str(i) for i in report.errors)
    with pytest.raises(InputError) as exc:
        _trainer(data, tmp_path / "w").train()
    msg = str(exc.value)
    assert msg.startswith("2 images of") and all(name in msg for name in bad)
    assert not (tmp_path / "w" / "log.jsonl").exists()
