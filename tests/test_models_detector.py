"""SCRFD detector contract: shapes, anchors, export layout, input checks, init, BN folding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from damofd.errors import ConfigError, InputError
from damofd.models import (
    SCRFD,
    DetectorConfig,
    count_params,
    create_model,
    get_config,
    pad_to_multiple,
)
from damofd.models.heads.scrfd_head import CLS_PRIOR_BIAS
from damofd.models.zoo import list_models
from damofd.ops.anchors import anchor_centers, num_anchors_total
from tests._models_util import zoo_model

ALL = list_models()

# reference spec §3.1 and scrfd-spec §2: backbone stage channels C2..C5
STAGE_CHANNELS = {
    "damofd-0.5g": (32, 64, 120, 160),
    "damofd-2.5g": (32, 56, 88, 128),
    "damofd-10g": (80, 112, 168, 256),
    "damofd-34g": (224, 488, 624, 816),
    "scrfd-500m": (40, 72, 152, 288),
    "scrfd-1g": (48, 160, 216, 312),
    "scrfd-1.3g": (16, 32, 40, 72),
    "scrfd-2.5g": (24, 48, 48, 80),
    "scrfd-10g": (56, 88, 88, 224),
    "scrfd-34g": (224, 224, 576, 736),
}

# scrfd-spec §7.1: BN-fused parameter counts (= the weight values an ONNX export holds)
SCRFD_FUSED_PARAMS = {
    "scrfd-500m": 568_309,
    "scrfd-500m-kps": 626_354,
    "scrfd-1g": 631_237,
    "scrfd-2.5g": 670_305,
    "scrfd-2.5g-kps": 817_969,
    "scrfd-10g": 3_856_977,
    "scrfd-10g-kps": 4_225_937,
    "scrfd-34g": 9_779_217,
}


def _base(name: str) -> str:
    return name.removesuffix("-bnkps").removesuffix("-kps").removesuffix("-bn")


@pytest.mark.parametrize("name", ALL)
def test_output_shapes(name: str) -> None:
    model = zoo_model(name)
    h, w = 64, 96
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        feats = model.backbone(x)
        assert len(feats) == 4
        assert tuple(f.shape[1] for f in feats) == STAGE_CHANNELS[_base(name)]
        assert [tuple(f.shape[2:]) for f in feats] == [(h // s, w // s) for s in (4, 8, 16, 32)]
        cls, bbox, kps = model(x)
    assert model.strides == (8, 16, 32) and model.num_anchors == 2
    assert model.use_kps == name.endswith("kps")
    for level, s in enumerate(model.strides):
        assert cls[level].shape == (2, 2, h // s, w // s)
        assert bbox[level].shape == (2, 8, h // s, w // s)
        if model.use_kps:
            assert kps is not None and kps[level].shape == (2, 20, h // s, w // s)
    if not model.use_kps:
        assert kps is None


@pytest.mark.parametrize("name", ["damofd-0.5g-kps", "scrfd-500m-kps"])
def test_full_size_shapes_and_anchor_counts(name: str) -> None:
    """Reference spec §9 shapes at 640x640; §4.3 anchor counts 16,800 and 12,600."""
    model = zoo_model(name)
    c = model.neck.config.out_channels
    for (h, w), n_anchors in (((640, 640), 16_800), ((640, 480), 12_600)):
        x = torch.zeros(1, 3, h, w)
        with torch.no_grad():
            feats = model.backbone(x)
            neck = model.neck(feats)
            cls, bbox, kps = model(x)
            export = model.forward_export(x)
        assert [tuple(f.shape[2:]) for f in feats] == [(h // s, w // s) for s in (4, 8, 16, 32)]
        assert [tuple(f.shape[1:]) for f in neck] == [(c, h // s, w // s) for s in (8, 16, 32)]
        assert sum(t.shape[2] * t.shape[3] * 2 for t in cls) == n_anchors
        assert num_anchors_total(h, w) == n_anchors
        assert len(export) == 9
        assert sum(t.shape[1] for t in export[:3]) == n_anchors
        for level, s in enumerate((8, 16, 32)):
            rows = anchor_centers(h // s, w // s, s, 2).shape[0]
            assert [t.shape for t in export[level::3]] == [
                (1, rows, 1),
                (1, rows, 4),
                (1, rows, 10),
            ]
        if (h, w) == (640, 640):
            assert [tuple(t.shape[2:]) for t in bbox] == [(80, 80), (40, 40), (20, 20)]
            assert kps is not None


def test_forward_export_layout() -> None:
    """Row r of level l = anchor_centers row r: location-major, anchor-minor; channel a*C + c."""
    model = zoo_model("scrfd-2.5g-kps")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        cls, bbox, kps = model(x)
        out = model.forward_export(x)
    assert kps is not None
    for level in range(3):
        score, box, kp = out[level], out[3 + level], out[6 + level]
        _, _, h, w = cls[level].shape
        yx = [(0, 0), (1, 2), (h - 1, w - 1)]
        for y, xx in yx:
            for a in range(2):
                r = (y * w + xx) * 2 + a
                assert torch.allclose(score[1, r, 0], cls[level][1, a, y, xx].sigmoid())
                assert torch.equal(box[1, r], bbox[level][1, 4 * a : 4 * a + 4, y, xx])
                assert torch.equal(kp[1, r], kps[level][1, 10 * a : 10 * a + 10, y, xx])
    no_kps = zoo_model("damofd-0.5g")
    with torch.no_grad():
        assert len(no_kps.forward_export(torch.zeros(1, 3, 64, 64))) == 6


@pytest.mark.parametrize("name", ["damofd-0.5g", "scrfd-500m", "scrfd-2.5g"])
def test_input_size_must_be_multiple_of_32(name: str) -> None:
    model = zoo_model(name)
    with pytest.raises(InputError, match=r"650x480.*height 650 → 640 or 672"):
        model(torch.zeros(1, 3, 650, 480))
    with pytest.raises(InputError, match=r"width 20 → 32"):
        model(torch.zeros(1, 3, 64, 20))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64))


def test_pad_to_multiple() -> None:
    x = torch.ones(1, 3, 650, 470)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 3, 672, 480)
    assert torch.equal(y[..., :650, :470], x) and y[..., 650:, :].abs().sum() == 0
    assert pad_to_multiple(y) is y
    with torch.no_grad():
        cls, _, _ = zoo_model("scrfd-500m")(y)
    assert cls[0].shape[2:] == (84, 60)


def test_forward_unchecked_odd_size_matches_resnet_rules() -> None:
    """scrfd-spec §2.2: 377x501 gives C2..C5 94x125, 47x63, 24x32, 12x16 (ResNetV1e)."""
    model = zoo_model("scrfd-2.5g")
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 377, 501))
        cls, _, _ = model.forward_unchecked(torch.zeros(1, 3, 377, 501))
    assert [tuple(f.shape[2:]) for f in feats] == [(94, 125), (47, 63), (24, 32), (12, 16)]
    assert [tuple(c.shape[2:]) for c in cls] == [(47, 63), (24, 32), (12, 16)]
    with torch.no_grad():
        feats = zoo_model("scrfd-500m").backbone(torch.zeros(1, 3, 377, 501))
    assert [tuple(f.shape[2:]) for f in feats] == [(95, 126), (48, 63), (24, 32), (12, 16)]


def _conv_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(names[id(mod)]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return order


def test_execution_order_for_onnx_pairing() -> None:
    """scrfd-spec §8.2 rule 3: shortcut after the main path; neck and head orders."""
    order = _conv_order(zoo_model("scrfd-2.5g-kps"), torch.zeros(1, 3, 64, 64))
    i = order.index("backbone.layer2.0.conv1")
    assert order[i : i + 3] == [
        "backbone.layer2.0.conv1",
        "backbone.layer2.0.conv2",
        "backbone.layer2.0.downsample.1",
    ]
    neck = [n for n in order if n.startswith("neck.")]
    assert neck == [
        *(f"neck.lateral_convs.{i}.conv" for i in range(3)),
        *(f"neck.fpn_convs.{i}.conv" for i in range(3)),
        "neck.downsample_convs.0.conv",
        "neck.downsample_convs.1.conv",
        "neck.pafpn_convs.0.conv",
        "neck.pafpn_convs.1.conv",
    ]
    head = [n for n in order if n.startswith("bbox_head.")]
    expected = []
    for key in ("(8, 8)", "(16, 16)", "(32, 32)"):
        expected += [f"bbox_head.cls_stride_convs.{key}.{j}.conv" for j in range(2)]
        expected += [f"bbox_head.stride_{p}.{key}" for p in ("cls", "reg", "kps")]
    assert head == expected
    order = _conv_order(zoo_model("scrfd-34g"), torch.zeros(1, 3, 64, 64))
    i = order.index("backbone.layer1.0.conv1")
    assert order[i + 3] == "backbone.layer1.0.downsample.1"  # after conv1..conv3


def test_family_settings_bn_eps_and_head_variants() -> None:
    damo = zoo_model("damofd-10g")
    bb_eps = {m.eps for m in damo.backbone.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bb_eps == {1e-3}
    for name in ("scrfd-500m-kps", "scrfd-34g"):
        model = zoo_model(name)
        assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)} == {
            1e-5
        }
    assert isinstance(zoo_model("scrfd-34g").backbone.layer1[0].downsample[0], nn.AvgPool2d)
    # scale_mode 0 + per-stride head: no Scale at all (scrfd-spec §3)
    assert zoo_model("scrfd-500m-kps").bbox_head.scales is None
    assert len(zoo_model("scrfd-2.5g-kps").bbox_head.scales) == 3
    gn = zoo_model("damofd-0.5g").bbox_head.cls_stride_convs["0"][0].depthwise_conv.gn
    assert (gn.num_groups, gn.num_channels) == (16, 16)
    gn = zoo_model("scrfd-1g").bbox_head.cls_stride_convs["0"][0].depthwise_conv.gn
    assert (gn.num_groups, gn.num_channels) == (8, 24)
    assert len(zoo_model("damofd-0.5g").bbox_head.reg_stride_convs["0"]) == 0


def test_training_init() -> None:
    torch.manual_seed(1)
    model = create_model("scrfd-10g-kps")
    head = model.bbox_head
    for key in ("(8, 8)", "(32, 32)"):
        assert torch.all(head.stride_cls[key].bias == CLS_PRIOR_BIAS)
        assert torch.all(head.stride_reg[key].bias == 0)
        assert abs(head.stride_reg[key].weight.std().item() - 0.01) < 0.002
        assert abs(head.cls_stride_convs[key][0].conv.weight.std().item() - 0.01) < 0.001
    assert torch.equal(head.integral.project, torch.linspace(0, 8, 9))
    assert all(s.scale.item() == 1.0 for s in head.scales)
    bb = model.backbone
    assert torch.all(bb.layer1[0].bn2.weight == 0) and torch.all(bb.layer1[0].bn1.weight == 1)
    conv = bb.layer3[1].conv1  # kaiming normal, fan_out, relu
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05
    lat = model.neck.lateral_convs[2].conv  # xavier uniform
    bound = (6 / (lat.in_channels + lat.out_channels)) ** 0.5
    assert lat.weight.abs().max() <= bound and torch.all(lat.bias == 0)
    damo = create_model("damofd-0.5g")
    unit = damo.backbone.module_list[1].module_list[0]
    assert torch.all(unit.last_bn().weight == 0)


def _randomise_norms(model: nn.Module, calib: torch.Tensor, seed: int) -> None:
    """Random but well-conditioned BatchNorm statistics and norm affines.

    Random affines first; then the running statistics are set to the statistics of the random
    batch ``calib`` (so activations stay O(1) through the deep backbones; big enough that even
    the per-stride BN heads at stride 32 see many values per channel), and finally the
    statistics are perturbed.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                n = m.weight.numel()
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: running stats = this batch's statistics
    model.train()
    with torch.no_grad():
        model(calib)
    model.eval()
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.running_mean += 0.05 * torch.randn(n, generator=g) * bn.running_var.sqrt()
            bn.running_var *= 0.9 + 0.2 * torch.rand(n, generator=g)


# the SCRFD models with official ONNX weights: their fused fp32 form is what gets deployed
FP32_FUSE_CHECK = ["scrfd-500m", "scrfd-500m-kps", "scrfd-1g", "scrfd-2.5g", "scrfd-2.5g-kps"]


@pytest.mark.parametrize("name", ALL)
def test_fuse_matches_unfused(name: str) -> None:
    """BN folding is exact: fused vs unfused in float64 agree to 1e-9 on every zoo model, and in
    float32 to 1e-4 on the models with official ONNX weights.

    (On random deep nets fp32 itself is the limit: the unfused fp32 34G models already differ
    from their float64 run by up to ~1e-3, so an fp32 1e-4 check there would test rounding.)
    """
    g = torch.Generator().manual_seed(3)
    model32 = copy.deepcopy(zoo_model(name))
    _randomise_norms(model32, torch.randn(2, 3, 96, 96, generator=g), seed=len(name))
    model = copy.deepcopy(model32).double()
    x = torch.randn(2, 3, 32, 64, generator=g, dtype=torch.float64)
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in model.modules())
    with torch.no_grad():
        ref = model.forward_export(x)
        assert model.fuse() is model and not model.training
        out = model.forward_export(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == n_gn
    for a, b in zip(ref, out):
        assert a.abs().max() > 1e-3  # a real signal, not a vanished network
        assert (a - b).abs().max().item() <= 1e-9
    if name in SCRFD_FUSED_PARAMS:
        assert count_params(model) == SCRFD_FUSED_PARAMS[name]
    if name in FP32_FUSE_CHECK:
        with torch.no_grad():
            ref32 = model32.forward_export(x.float())
            out32 = model32.fuse().forward_export(x.float())
        for a, b in zip(ref32, out32):
            assert (a - b).abs().max().item() <= 1e-4


def test_config_round_trip_and_validation() -> None:
    for name in ALL:
        cfg = get_config(name)
        assert DetectorConfig.from_dict(cfg.to_dict()) == cfg
        assert zoo_model(name).config == cfg
    cfg = get_config("damofd-34g")
    assert cfg.neck.in_channels == (192, 488, 624, 816)  # reference quirk, unused level
    with pytest.raises(ConfigError, match="head in_channels"):
        DetectorConfig(cfg.backbone, cfg.neck, get_config("damofd-0.5g").head)
    with pytest.raises(ConfigError, match="missing or unknown"):
        DetectorConfig.from_dict({"neck": {}, "head": {}})
    bad = DetectorConfig(get_config("scrfd-2.5g").backbone, cfg.neck, cfg.head)
    with pytest.raises(ConfigError, match="do not match the backbone stage channels"):
        SCRFD(bad, init=False)
