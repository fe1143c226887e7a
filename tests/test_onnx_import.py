"""Importing the official SCRFD ONNX weights (scrfd-spec §8): graph reading, config detection,
parity with onnxruntime on a real photo, and the safety checks that refuse a wrong load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from damofd.errors import ConfigError, InputError
from damofd.models.onnx_import import (
    _trace_model,
    detect_onnx_config,
    import_scrfd_onnx,
    read_scrfd_onnx,
)
from damofd.ops.anchors import anchor_centers_numpy
from damofd.ops.numpy_nms import nms_numpy
from tests.conftest import require_asset

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

pytestmark = pytest.mark.assets

# file -> (zoo config, unique convs, GroupNorm patterns, Scales, BN-fused values of scrfd-spec §7.1)
OFFICIAL = {
    "scrfd_500m.onnx": ("scrfd-500m", 45, 4, 3, 568_309),
    "scrfd_1g.onnx": ("scrfd-1g", 41, 4, 3, 631_237),
    "scrfd_2.5g.onnx": ("scrfd-2.5g", 46, 2, 3, 670_305),
    "det_500m.onnx": ("scrfd-500m-kps", 60, 0, 0, 626_354),
    "scrfd_500m_bnkps.onnx": ("scrfd-500m-kps", 60, 0, 0, 626_354),
    "det_2.5g.onnx": ("scrfd-2.5g-kps", 57, 0, 3, 817_969),
}
SIZES = ((640, 640), (640, 480))  # (W, H)
TOL = 1e-4  # max abs difference on scores, ltrb distances and keypoint offsets (stride units)


def _model_path(assets: Path, name: str) -> Path:
    return require_asset(assets, f"models/scrfd/{name}")


def letterbox(img_bgr: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """insightface ``SCRFD.detect`` preprocessing: int-truncated keep-ratio resize, top-left on
    a black canvas, RGB, (x − 127.5)/128, NCHW. Returns (blob, det_scale)."""
    h, w = img_bgr.shape[:2]
    if h / w > height / width:
        new_h, new_w = height, int(height / (h / w))
    else:
        new_w, new_h = width, int(width * (h / w))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img_bgr, (new_w, new_h))
    blob = (canvas[:, :, ::-1].astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None]), new_h / h


def decode(outputs: list[np.ndarray], width: int, height: int, det_scale: float, thr: float = 0.5):
    """insightface decoding: score ≥ thr, box = c ∓ d·s, kps = c + k·s, NMS 0.4 with +1 areas.
    Returns (boxes xyxy, scores, kps) in original-image pixels, sorted by score."""
    n = 3
    boxes, scores, kps = [], [], []
    for i, s in enumerate((8, 16, 32)):
        sc = outputs[i].reshape(-1)
        keep = np.flatnonzero(sc >= thr)
        c = anchor_centers_numpy(height // s, width // s, s, 2)[keep]
        d = outputs[n + i].reshape(-1, 4)[keep] * s
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        scores.append(sc[keep])
        if len(outputs) == 9:
            k = outputs[2 * n + i].reshape(-1, 10)[keep] * s
            kps.append((k.reshape(-1, 5, 2) + c[:, None, :]).reshape(-1, 10))
    b = np.concatenate(boxes) / det_scale
    sc = np.concatenate(scores)
    order = np.argsort(-sc, kind="stable")
    b, sc = b[order], sc[order]
    keep = nms_numpy(b, sc, 0.4, offset=1.0)
    k = np.concatenate(kps)[order][keep] / det_scale if kps else None
    return b[keep], sc[keep], k


@pytest.fixture(scope="module")
def photo(assets: Path) -> np.ndarray:
    img = cv2.imread(str(require_asset(assets, "images/t1.jpg")))
    assert img is not None
    return img


_IMPORTED: dict[str, nn.Module] = {}


def _imported(assets: Path, fname: str) -> nn.Module:
    """Canonical import of an official file, shared by the tests of this module."""
    if fname not in _IMPORTED:
        _IMPORTED[fname] = import_scrfd_onnx(_model_path(assets, fname))
    return _IMPORTED[fname]


def _session(path: Path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    so.log_severity_level = 3  # the old exports declare fixed output shapes; ORT warns
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("fname", sorted(OFFICIAL))
def test_graph_reading_and_cues(assets: Path, fname: str) -> None:
    _, n_convs, n_gn, n_scales, n_values = OFFICIAL[fname]
    g = read_scrfd_onnx(_model_path(assets, fname))
    assert g.opset == 11
    assert len(g.convs) == n_convs
    assert len(g.group_norms) == n_gn
    assert len(g.scales) == n_scales
    # every value the graph holds, counted once per conv (merged PAFPN biases twice)
    assert g.num_weight_values == n_values
    cues = g.cues()
    assert cues["kps"] == (g.num_outputs == 9) == ("kps" in OFFICIAL[fname][0])
    assert cues["gn_head"] == (n_gn > 0) == cues["shared_head"]
    assert cues["resnet_v1e"] == ("2.5g" in fname)
    assert cues["batched"] == (fname == "scrfd_500m_bnkps.onnx")
    assert all(gn.eps == pytest.approx(1e-5) and gn.uses == 3 for gn in g.group_norms)
    assert all(s.uses == 1 for s in g.scales)
    assert f"{n_convs} unique convs" in g.summary()


def test_merged_pafpn_biases_are_seen(assets: Path) -> None:
    # scrfd-spec §8.1: the summed fpn/downsample convs share one bias initializer
    g = read_scrfd_onnx(_model_path(assets, "scrfd_500m.onnx"))
    by_weight = {c.weight: c for c in g.convs}
    assert by_weight["neck.fpn_convs.1.conv.weight"].bias == "neck.downsample_convs.0.conv.bias"
    assert by_weight["neck.fpn_convs.2.conv.weight"].bias == "neck.downsample_convs.1.conv.bias"


# ------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("fname", sorted(OFFICIAL))
def test_official_weights_match_onnxruntime(assets: Path, photo: np.ndarray, fname: str) -> None:
    path = _model_path(assets, fname)
    model = _imported(assets, fname)  # config detected from the graph
    assert model.name == OFFICIAL[fname][0] and not model.training
    sess = _session(path)
    for width, height in SIZES:
        blob, det_scale = letterbox(photo, width, height)
        ref = sess.run(None, {sess.get_inputs()[0].name: blob})
        with torch.no_grad():
            ours = [t[0].numpy() for t in model.forward_export(torch.from_numpy(blob))]
        assert len(ref) == len(ours) == (9 if model.use_kps else 6)
        for r, o in zip(ref, ours):
            r = r.reshape(o.shape)  # (N, C) for the old exports, (1, N, C) for the batched one
            assert np.abs(r - o).max() <= TOL
        rb, rs, rk = decode(ref, width, height, det_scale)
        ob, os_, ok = decode(ours, width, height, det_scale)
        assert len(rb) == len(ob) == 6  # the six faces of the group photo (scrfd-spec §8.3)
        np.testing.assert_allclose(ob, rb, atol=1e-3)  # pixels
        np.testing.assert_allclose(os_, rs, atol=1e-4)
        if rk is not None:
            np.testing.assert_allclose(ok, rk, atol=1e-3)


def test_canonical_form_keeps_the_mmdet_tree(assets: Path) -> None:
    from damofd.models import create_model, load_checkpoint

    model = _imported(assets, "det_2.5g.onnx")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:  # identity BN carrying the folded bias
        assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
        torch.testing.assert_close(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps))
    # the state dict loads strictly into a freshly built zoo model (mmdet key layout)
    fresh = create_model("scrfd-2.5g-kps", init=False).eval()
    load_checkpoint(fresh, {"state_dict": model.state_dict()})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model.forward_export(x), fresh.forward_export(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the consumed count equals the BN-fused parameter count (scrfd-spec §7.1)
    assert _trace_model(model).fused_param_count(model) == 817_969


def test_fused_form(assets: Path, photo: np.ndarray) -> None:
    path = _model_path(assets, "det_500m.onnx")
    fused = import_scrfd_onnx(path, form="fused")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    blob, _ = letterbox(photo, 640, 480)
    sess = _session(path)
    ref = sess.run(None, {sess.get_inputs()[0].name: blob})
    with torch.no_grad():
        ours = [t[0].numpy() for t in fused.forward_export(torch.from_numpy(blob))]
    for r, o in zip(ref, ours):
        assert np.abs(r.reshape(o.shape) - o).max() <= TOL


# ------------------------------------------------------------------------------------ refusals


def _edited(assets: Path, fname: str, tmp_path: Path, edit) -> Path:
    model = onnx.load(str(_model_path(assets, fname)))
    edit(model.graph)
    out = tmp_path / f"edited_{fname}"
    onnx.save(model, str(out))
    return out


def _first_conv(graph):
    return next(n for n in graph.node if n.op_type == "Conv")


def test_unknown_graph_is_refused_with_a_summary(assets: Path, tmp_path: Path) -> None:
    def edit(graph) -> None:  # the stem conv becomes stride 1: no zoo config has that
        conv = _first_conv(graph)
        for a in conv.attribute:
            if a.name == "strides":
                a.ints[:] = [1, 1]

    path = _edited(assets, "scrfd_500m.onnx", tmp_path, edit)
    with pytest.raises(ConfigError, match="matches no damofd zoo config") as e:
        detect_onnx_config(path)
    msg = str(e.value)
    assert "45 unique convs" in msg and "GroupNorm head" in msg and "closest: scrfd-500m" in msg
    with pytest.raises(ConfigError, match="matches no damofd zoo config"):
        import_scrfd_onnx(path)


def test_wrong_explicit_config_is_refused(assets: Path) -> None:
    with pytest.raises(ConfigError, match="is not a 'scrfd-1g' graph"):
        import_scrfd_onnx(_model_path(assets, "scrfd_500m.onnx"), config="scrfd-1g")


def test_swapped_same_shape_convs_are_caught_by_names(assets: Path, tmp_path: Path) -> None:
    # fpn_convs.0 and .1 have identical shapes and strides: only the names can tell them apart
    def edit(graph) -> None:
        convs = [n for n in graph.node if n.op_type == "Conv"]
        a = next(n for n in convs if n.input[1] == "neck.fpn_convs.0.conv.weight")
        b = next(n for n in convs if n.input[1] == "neck.fpn_convs.1.conv.weight")
        a.input[1], b.input[1] = b.input[1], a.input[1]

    path = _edited(assets, "scrfd_2.5g.onnx", tmp_path, edit)
    assert detect_onnx_config(path) == "scrfd-2.5g"  # the fingerprint cannot see the swap
    msg = "'neck.fpn_convs.1.conv.weight' is paired with 'neck.fpn_convs.0.conv.weight'"
    with pytest.raises(InputError, match=re.escape(msg)):
        import_scrfd_onnx(path, config="scrfd-2.5g")


def test_malformed_group_norm_is_refused(assets: Path, tmp_path: Path) -> None:
    def edit(graph) -> None:
        inorm = next(n for n in graph.node if n.op_type == "InstanceNormalization")
        scale = next(t for t in graph.initializer if t.name == inorm.input[1])
        arr = onnx.numpy_helper.to_array(scale) * 2
        scale.CopyFrom(onnx.numpy_helper.from_array(arr, scale.name))

    path = _edited(assets, "scrfd_1g.onnx", tmp_path, edit)
    with pytest.raises(InputError, match="scale is not ones"):
        read_scrfd_onnx(path)


def test_unfolded_batchnorm_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv.weight")
    stats = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in "gbmv"]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, *stats],
    )
    path = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    with pytest.raises(InputError, match="BatchNormalization"):
        read_scrfd_onnx(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_scrfd_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(InputError, match="not a readable ONNX model"):
        read_scrfd_onnx(bad)
    with pytest.raises(ConfigError, match="form"):
        import_scrfd_onnx(bad, form="folded")  # type: ignore[arg-type]
