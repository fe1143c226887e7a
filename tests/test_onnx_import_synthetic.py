"""ONNX import round trips for configs without official weights (scrfd-spec §8.3, last part):
random BN/GN statistics → TorchScript export (opset 11, eval, BN folded) → import → compare."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from damofd.errors import ConfigError, InputError
from damofd.models import create_model
from damofd.models.onnx_import import _trace_model, import_scrfd_onnx, read_scrfd_onnx

pytest.importorskip("onnx")

SIDE = 64  # smallest input for which every GroupNorm sees more than one value per group


class _Export(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.forward_export(x))


def _randomize(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics/affines, GN affines and Scales (the init leaves them at 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
            scale = m._parameters.get("scale")
            if scale is not None:
                scale.uniform_(0.5, 2.0, generator=g)


def _export(model: nn.Module, path: Path, *, training: bool = False) -> None:
    wrapper = _Export(model)
    wrapper.train(training)  # scrfd-spec §8.4: the exporter restores the wrapper's mode
    x = torch.zeros(1, 3, SIDE, SIDE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (x,),
            str(path),
            opset_version=11,
            input_names=["input.1"],
            do_constant_folding=not training,
            training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )


# (zoo name, BN-fused parameter count of scrfd-spec §7.1 or None where the spec has none)
CASES = [
    ("scrfd-10g-kps", 4_225_937),  # 3-conv BN towers per stride, Scale, ResNetV1e Basic
    ("scrfd-34g", 9_779_217),  # Bottleneck with the 1×1 AvgPool shortcut, GN(32) shared head
    ("damofd-0.5g-kps", None),  # MasterNet (conv-with-bias projections + BN), dw GN head
]


@pytest.mark.parametrize(("name", "fused_count"), CASES)
def test_round_trip(tmp_path: Path, name: str, fused_count: int | None) -> None:
    model = create_model(name)
    _randomize(model, seed=len(name))
    model.eval()
    path = tmp_path / f"{name}.onnx"
    _export(model, path)
    assert not model.training
    graph = read_scrfd_onnx(path)
    if fused_count is not None:
        assert graph.num_weight_values == fused_count
    imported = import_scrfd_onnx(path)  # config detected from the conv fingerprint
    assert imported.name == name
    assert _trace_model(imported).fused_param_count(imported) == graph.num_weight_values
    x = torch.randn(1, 3, SIDE, 2 * SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.forward_export(x)
        got = imported.forward_export(x)
    assert len(got) == len(want) == (9 if model.use_kps else 6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the import is an inference function: BN statistics are not the original ones
    bn = next(m for m in imported.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.all(bn.running_mean == 0)


def test_train_mode_export_is_refused(tmp_path: Path) -> None:
    # a graph exported in training mode keeps BatchNormalization nodes (nothing is folded):
    # refused with a message that says how to re-export, never silently mis-loaded
    model = create_model("scrfd-500m-kps")
    path = tmp_path / "train.onnx"
    _export(model, path, training=True)
    with pytest.raises(InputError, match="BatchNormalization nodes"):
        import_scrfd_onnx(path)


def test_model_outside_the_zoo_needs_its_config(tmp_path: Path) -> None:
    # a searched DamoFD backbone: no zoo config matches, the typed config makes it importable
    structure = (
        "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,24,2,16,1)SuperResK1K3K1(24,32,2,16,1)"
        "SuperResK3K3(32,48,2,16,1)SuperResK3K3(48,64,2,16,1)"
    )
    model = create_model("damofd-0.5g", structure=structure)
    _randomize(model, seed=5)
    model.eval()
    path = tmp_path / "searched.onnx"
    _export(model, path)
    with pytest.raises(ConfigError, match="matches no damofd zoo config"):
        import_scrfd_onnx(path)
    imported = import_scrfd_onnx(path, config=model.config)
    x = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for a, b in zip(imported.forward_export(x), model.forward_export(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
