"""The one weights resolver (damofd.models.sources): every spec kind, every error, every caller."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from damofd.errors import ConfigError, InputError
from damofd.models import create_model, save_checkpoint
from damofd.models.bundled import DEFAULT_MODEL
from damofd.models.modelscope import save_modelscope_dir
from damofd.models.sources import (
    ModelSource,
    UnknownModelError,
    load_source,
    resolve_source,
)


def test_each_kind_of_spec(tmp_path: Path) -> None:
    default = resolve_source(None)
    assert (default.kind, default.name) == ("bundled", DEFAULT_MODEL)
    assert DEFAULT_MODEL == "damofd-0.5g-bnkps"
    # the first default (DamoFD's own GN head) stays bundled, under every name of its zoo entry
    assert resolve_source("DamoFD_0.5G_KPS") == ModelSource(
        "DamoFD_0.5G_KPS", "bundled", "damofd-0.5g-kps"
    )
    assert resolve_source("damofd-500m-bnkps") == ModelSource(
        "damofd-500m-bnkps", "bundled", DEFAULT_MODEL
    )
    assert resolve_source("scrfd-1g").kind == "zoo" and resolve_source("scrfd-1g").model_id is None
    hub = resolve_source("damofd-10g-kps")
    assert hub.kind == "zoo" and hub.model_id == "damo/cv_ddsar_face-detection_iclr23-damofd-10G"
    ms = resolve_source("damo/cv_ddsar_face-detection_iclr23-damofd-2.5G")
    assert (ms.kind, ms.name) == ("modelscope", "damofd-2.5g-kps")
    anyid = resolve_source("modelscope:someone/their-model")
    assert (anyid.kind, anyid.model_id, anyid.name) == ("modelscope", "someone/their-model", None)

    model = create_model("scrfd-500m")
    ckpt = save_checkpoint(model, tmp_path / "m.pth")
    assert resolve_source(ckpt) == ModelSource(str(ckpt), "checkpoint", path=ckpt)
    named = resolve_source("scrfd-500m", ckpt)
    assert (named.kind, named.name, named.path) == ("checkpoint", "scrfd-500m", ckpt)
    folder = save_modelscope_dir(create_model("damofd-0.5g-kps"), tmp_path / "ms")
    assert resolve_source(folder).kind == "modelscope"
    inner = resolve_source(folder / "pytorch_model.pt")
    assert (inner.kind, inner.path) == ("modelscope", folder)
    # an official id with explicit weights: that id's architecture
    w = save_checkpoint(create_model("damofd-0.5g-kps"), tmp_path / "k.pth")
    by_id = resolve_source("damo/cv_ddsar_face-detection_iclr23-damofd", w)
    assert (by_id.kind, by_id.name) == ("checkpoint", "damofd-0.5g-kps")


def test_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^--load-from missing\.onnx: no such file"):
        resolve_source("missing.onnx", model_opt="--load-from")
    with pytest.raises(UnknownModelError, match=r"nor a zoo model: unknown model 'damofd-05g'"):
        resolve_source("damofd-05g")
    with pytest.raises(InputError, match=r"not a file, a ModelScope folder or a ModelScope id"):
        resolve_source("someone/their-model")  # a bare unknown id is most often a bad path
    with pytest.raises(InputError, match=r"--weights nope\.pth: weights file not found"):
        resolve_source("scrfd-500m", "nope.pth", weights_opt="--weights")
    ckpt = save_checkpoint(create_model("scrfd-500m"), tmp_path / "m.pth")
    with pytest.raises(ConfigError, match=r"m\.pth is a weights file; --weights is for a zoo"):
        resolve_source(ckpt, ckpt, weights_opt="--weights")
    with pytest.raises(ConfigError, match="is a ModelScope id; it holds its own weights"):
        resolve_source("modelscope:a/b", ckpt)
    with pytest.raises(ConfigError, match=r"no weights were released .* --weights FILE"):
        load_source(resolve_source("scrfd-1g-bn"))
    with pytest.raises(ConfigError, match=r"ModelScope download .* not attempted.*--random-init"):
        load_source(resolve_source("damofd-10g-kps"), download=False, hint="; or --random-init")
    with pytest.raises(ConfigError, match="has no onnx file"):
        resolve_source(ckpt).file("onnx")


def test_load_source_builds_the_weights(tmp_path: Path) -> None:
    model = create_model("scrfd-500m").eval()
    ckpt = save_checkpoint(model, tmp_path / "m.pth")
    loaded = load_source(resolve_source(ckpt))
    assert loaded.name == "scrfd-500m" and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    fused = load_source(resolve_source("scrfd-500m", ckpt), form="fused")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    bundled = load_source(resolve_source(None))
    assert bundled.name == DEFAULT_MODEL


def test_every_entry_point_calls_the_resolver() -> None:
    """The five places that once each decided what a model string means now ask one function."""
    from damofd.engine.build import build_detector
    from damofd.engine.eval_model import build_eval_model
    from damofd.export.onnx import resolve_model
    from damofd.inference import FaceDetector
    from damofd.training.builders import load_pretrained

    for fn in (
        FaceDetector.from_pretrained,
        build_detector,
        build_eval_model,
        resolve_model,
        load_pretrained,
    ):
        assert "resolve_source(" in inspect.getsource(fn), fn.__qualname__
    # from_zoo is from_pretrained restricted to zoo names
    assert "cls.from_pretrained(" in inspect.getsource(FaceDetector.from_zoo)
