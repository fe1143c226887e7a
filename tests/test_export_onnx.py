"""ONNX export: graph interface, onnxruntime-vs-PyTorch parity, official-loader compatibility.

One dynamic export per model (random weights with random BatchNorm/GroupNorm statistics and
affines, so BN folding is exercised) is run at 640×640, 640(W)×480(H) and batch 3; plus a
fixed-shape export, an onnxslim export, a re-export of the official ``det_500m.onnx`` run through
:class:`FaceDetector` and the official wrapper, and the CLI.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from damofd.cli.main import main
from damofd.errors import ConfigError
from damofd.export import INPUT_NAME, export_onnx, export_onnx_detailed, output_names
from damofd.inference import FaceDetector
from damofd.models import create_model
from tests._reference_scrfd import ReferenceSCRFD
from tests.conftest import require_asset

MODELS = ["damofd-0.5g", "damofd-0.5g-kps", "scrfd-2.5g-kps"]
SHAPES = [(1, 640, 640), (1, 480, 640), (3, 640, 640)]  # (B, H, W)
ATOL = 1e-4


def randomise_norm_stats(model: nn.Module, seed: int) -> nn.Module:
    """Random BN running statistics and BN/GN affines (what a trained model has, not 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.6 + 0.7)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _torch_outputs(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        return [t.numpy() for t in model.forward_export(torch.from_numpy(x))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    """{name: (unfused eval model, dynamic ONNX export)}; the model is left in train mode
    before the export to check that the file is still the eval-mode function."""
    out = {}
    root = tmp_path_factory.mktemp("export")
    for i, name in enumerate(MODELS):
        torch.manual_seed(i)
        model = randomise_norm_stats(create_model(name), seed=100 + i)
        reference = copy.deepcopy(model).eval()
        model.train()
        path = export_onnx(model, root / f"{name}.onnx")
        # the caller's module is untouched: same mode, BN layers still there
        assert model.training
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        out[name] = (reference, path)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_graph_interface(exported: dict[str, tuple[nn.Module, Path]], name: str) -> None:
    reference, path = exported[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 11
    (inp,) = proto.graph.input
    assert inp.name == INPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    names = output_names((8, 16, 32), reference.use_kps)
    assert [o.name for o in proto.graph.output] == names
    for o in proto.graph.output:
        odims = o.type.tensor_type.shape.dim
        assert len(odims) == 3
        assert odims[0].dim_param == "batch" and odims[1].dim_param.startswith("anchors_")
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convs
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["producer"] == "damofd" and props["use_kps"] == str(reference.use_kps).lower()


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_matches_pytorch(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    reference, path = exported[name]
    sess = _session(path)
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(7)
    worst = 0.0
    for b, h, w in SHAPES:
        x = rng.uniform(-1, 1, size=(b, 3, h, w)).astype(np.float32)
        want = _torch_outputs(reference, x)
        got = sess.run(names, {INPUT_NAME: x})
        for n, g, r in zip(names, got, want):
            assert g.shape == r.shape, (n, g.shape, r.shape)
            assert r.shape[1] == (h // int(n.split("_")[1])) * (w // int(n.split("_")[1])) * 2
            worst = max(worst, float(np.abs(g - r).max()))
            np.testing.assert_allclose(g, r, rtol=0, atol=ATOL, err_msg=f"{name} {n} {b}x{h}x{w}")
    assert worst > 0  # really two different implementations


def test_fixed_shape_export(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = randomise_norm_stats(create_model("damofd-0.5g-kps"), seed=3)
    res = export_onnx_detailed(
        model, tmp_path / "fixed.onnx", dynamic=False, shape=(480, 640), batch=2
    )
    assert res.input_shape == (2, 3, 480, 640) and not res.dynamic
    assert res.max_abs_diff is not None and res.max_abs_diff < ATOL
    sess = _session(res.path)
    assert sess.get_inputs()[0].shape == [2, 3, 480, 640]
    assert [o.shape for o in sess.get_outputs()][:3] == [[2, 9600, 1], [2, 2400, 1], [2, 600, 1]]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 480, 640)).astype(np.float32)
    for g, r in zip(sess.run(None, {INPUT_NAME: x}), _torch_outputs(model, x)):
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL)
    det = FaceDetector.from_onnx(res.path, threads=2)
    assert det.layout.input_hw == (480, 640) and det.layout.max_batch == 2
    assert det.protocol.size == (480, 640)  # vga fitted into the fixed input


def test_simplified_export_matches(exported: dict[str, tuple[nn.Module, Path]], tmp_path: Path):
    pytest.importorskip("onnxslim")
    reference, _ = exported["damofd-0.5g"]
    path = export_onnx(reference, tmp_path / "slim.onnx", simplify=True, shape=(320, 320))
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == output_names((8, 16, 32), False)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 480, 640)).astype(np.float32)
    for g, r in zip(_session(path).run(None, {INPUT_NAME: x}), _torch_outputs(reference, x)):
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL)


def test_reexported_official_model_runs_like_the_official_file(
    assets: Path, tmp_path: Path
) -> None:
    """det_500m.onnx (2-D outputs, batch 1) → PyTorch → our batched export: the official wrapper
    and FaceDetector (ONNX and torch backends) find the same faces in a real photo."""
    official = require_asset(assets, "models/scrfd/det_500m.onnx")
    img = cv2.imread(str(require_asset(assets, "images/t1.jpg")))
    ours = export_onnx(official, tmp_path / "det_500m_batched.onnx")

    det_onnx = FaceDetector.from_onnx(ours, threads=2)
    assert det_onnx.layout.strides == (8, 16, 32) and det_onnx.layout.num_anchors == 2
    assert det_onnx.use_kps and det_onnx.backend.batched
    assert det_onnx.layout.max_batch is None and det_onnx.layout.input_hw is None
    det_torch = FaceDetector.from_zoo("scrfd-500m-kps", weights=official)
    for proto in ("vga", "insightface"):
        det_onnx.protocol = proto
        det_torch.protocol = proto
        a, b = det_onnx.predict(img)[0], det_torch.predict(img)[0]
        assert len(a) == len(b) >= 5, proto
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
    # batch of 3 through the batched file equals one by one
    batch = det_onnx.predict([img, img[:, ::-1].copy(), img[:300]], batch_size=3)
    single = [det_onnx.predict(i)[0] for i in (img, img[:, ::-1].copy(), img[:300])]
    for r, s in zip(batch, single):
        np.testing.assert_allclose(r.boxes, s.boxes, atol=1e-3)

    # the official insightface wrapper runs our file and finds what it finds in the original
    ref_ours, ref_official = ReferenceSCRFD(str(ours)), ReferenceSCRFD(str(official))
    assert ref_ours.batched and not ref_official.batched
    d1, k1 = ref_ours.detect(img, (640, 640))
    d2, k2 = ref_official.detect(img, (640, 640))
    assert len(d1) == len(d2) >= 5
    np.testing.assert_allclose(d1, d2, atol=1e-2)
    np.testing.assert_allclose(k1, k2, atol=1e-2)


def test_export_errors_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("damofd-0.5g")
    with pytest.raises(ConfigError, match="multiple of 32"):
        export_onnx(model, tmp_path / "a.onnx", shape=(100, 640))
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=9)
    with pytest.raises(ConfigError, match="no weights"):
        export_onnx("damofd-0.5g", tmp_path / "a.onnx")
    import damofd.export.onnx as mod

    def broken(*args: object, **kwargs: object) -> float:
        raise RuntimeError("onnxruntime and PyTorch disagree")

    monkeypatch.setattr(mod, "_smoke_run", broken)
    target = tmp_path / "out" / "b.onnx"
    with pytest.raises(RuntimeError, match="disagree"):
        export_onnx(model, target, shape=(64, 64))
    assert not target.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    argv = ["export", "damofd-0.5g", "--random-init", "--out", str(out), "--shape", "320", "320"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dynamic"] is False and summary["input_shape"] == [1, 3, 320, 320]
    assert summary["outputs"]["score_8"] == [1, 3200, 1]
    assert ort.InferenceSession(str(out)).get_inputs()[0].shape == [1, 3, 320, 320]

    assert main(["export", "damofd-0.5g", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--random-init" in capsys.readouterr().err
    assert main(["export", "nope-1g", "--random-init", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["export", "damofd-0.5g", "--random-init", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
