"""MasterNet backbone: module tree / key grammar (spec §8.4), counts (§9), expansion (§2.2)."""

from __future__ import annotations

import io
import math
import random
import re

import pytest
import torch
from torch import nn

from damofd.errors import InputError
from damofd.models.backbones.masternet import (
    BN,
    ConvKX,
    MasterNet,
    MasterReLU,
    ResUnit,
    stage_output_indices,
)
from damofd.search.structure import BLOCK_TYPES, Block, BlockKind, Structure, smart_round
from tests._spec import RELEASED_STRUCTURES

# tiny networks: one torch thread (see the fixture in conftest)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# spec §3.1
RELEASED = {k.upper(): v for k, v in RELEASED_STRUCTURES.items()}
# spec §3.1 stage channels, §9 backbone params
STAGE_CHANNELS = {
    "0.5G": (32, 64, 120, 160),
    "2.5G": (32, 56, 88, 128),
    "10G": (80, 112, 168, 256),
    "34G": (224, 488, 624, 816),
}
BACKBONE_PARAMS = {"0.5G": 224_368, "2.5G": 342_968, "10G": 877_968, "34G": 4_049_664}
# spec §8.4 full-detector key counts (with kps, without kps)
DETECTOR_KEYS = {"0.5G": (298, 296), "2.5G": (376, 374), "10G": (595, 593), "34G": (724, 722)}
# spec §3.2 head config: (stacked_convs, dw_conv)
HEAD_CFG = {"0.5G": (2, True), "2.5G": (2, False), "10G": (3, False), "34G": (2, False)}


def _neck_head_keys(stacked: int, dw_conv: bool, kps: bool) -> int:
    """Neck + head state-dict keys implied by spec §8.4 (no BN in neck/head, GN has 2 keys)."""
    neck = (3 + 3 + 2 + 2) * 2  # lateral, fpn, downsample, pafpn convs: weight + bias
    # tower: conv.weight + gn.{weight,bias}; dw_conv doubles it (depthwise + pointwise)
    tower = stacked * (6 if dw_conv else 3)
    head = tower + 2 + 2 + (2 if kps else 0)  # stride_cls.0, stride_reg.0, stride_kps.0
    head += 3 + 1  # scales.{0,1,2}.scale, integral.project
    return neck + head


# -- counts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(RELEASED))
def test_released_backbone_param_and_key_counts(name: str) -> None:
    with torch.device("meta"):
        net = MasterNet(RELEASED[name])
    assert sum(p.numel() for p in net.parameters()) == BACKBONE_PARAMS[name]
    n_keys = len(net.state_dict())
    stacked, dw = HEAD_CFG[name]
    with_kps, without_kps = DETECTOR_KEYS[name]
    assert n_keys + _neck_head_keys(stacked, dw, kps=True) == with_kps
    assert n_keys + _neck_head_keys(stacked, dw, kps=False) == without_kps
    assert net.stage_channels == STAGE_CHANNELS[name]
    assert net.out_strides == (4, 8, 16, 32)
    assert net.size_divisor == 32


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_output_shapes_640(name: str) -> None:
    with torch.device("meta"):
        net = MasterNet(RELEASED[name]).eval()
        outs = net(torch.empty(1, 3, 640, 640))
    got = [tuple(o.shape[1:]) for o in outs]
    c = STAGE_CHANNELS[name]
    assert got == [(c[0], 160, 160), (c[1], 80, 80), (c[2], 40, 40), (c[3], 20, 20)]


def test_real_forward_0_5g_640x480() -> None:
    net = MasterNet(RELEASED["0.5G"]).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 480, 640))
    assert [tuple(o.shape) for o in outs] == [
        (1, 32, 120, 160),
        (1, 64, 60, 80),
        (1, 120, 30, 40),
        (1, 160, 15, 20),
    ]
    assert all(torch.isfinite(o).all() for o in outs)


# -- key grammar ----------------------------------------------------------------------------------
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def test_stem_key_grammar() -> None:
    net = MasterNet("SuperConvK3BNRELU(3,24,2,3)SuperResK3K3(24,32,2,16,1)")
    keys = set(net.state_dict())
    for i in range(3):
        assert f"module_list.0.module_list.{3 * i}.netblock.weight" in keys
        for k in _BN_KEYS:
            assert f"module_list.0.module_list.{3 * i + 1}.netblock.{k}" in keys
        assert isinstance(net.module_list[0].module_list[3 * i + 2], MasterReLU)
    assert not any(k.startswith("module_list.0.module_list.2.") for k in keys)


def test_kxkx_key_grammar_and_projections() -> None:
    net = MasterNet("SuperConvK3BNRELU(3,8,2,1)SuperResK3K5(8,16,2,12,3)")
    sd = net.state_dict()
    sb = "module_list.1.module_list"
    for i in range(3):
        for j in (0, 3):
            assert f"{sb}.{2 * i}.module_list.{j}.netblock.weight" in sd
        for j in (1, 4):
            for k in _BN_KEYS:
                assert f"{sb}.{2 * i}.module_list.{j}.netblock.{k}" in sd
        assert isinstance(net.module_list[1].module_list[2 * i + 1], MasterReLU)
    # first conv kernel 3 stride 2, second conv kernel 5 stride 1
    assert sd[f"{sb}.0.module_list.0.netblock.weight"].shape == (12, 8, 3, 3)
    assert sd[f"{sb}.0.module_list.3.netblock.weight"].shape == (16, 12, 5, 5)
    assert net.module_list[1].module_list[0].module_list[0].netblock.stride == (2, 2)
    # ResBlockProj on unit 0 only: conv 1x1 with bias + BN
    assert sd[f"{sb}.0.proj.0.weight"].shape == (16, 8, 1, 1)
    assert sd[f"{sb}.0.proj.0.bias"].shape == (16,)
    for k in _BN_KEYS:
        assert f"{sb}.0.proj.1.{k}" in sd
    assert not any(k.startswith(f"{sb}.2.proj") or k.startswith(f"{sb}.4.proj") for k in sd)


def test_res_block_proj_always_projects_even_identity_shape() -> None:
    net = MasterNet("SuperResK3K3(16,16,1,8,2)")
    units = list(net.res_units())
    assert units[0].proj is not None and units[0].stride == 1  # ResBlockProj
    assert units[1].proj is None  # ResBlock, identity shortcut


def test_k1kxk1_key_grammar() -> None:
    net = MasterNet("SuperConvK3BNRELU(3,8,2,1)SuperResK1K5K1(8,24,2,6,2)")
    sd = net.state_dict()
    sb = "module_list.1.module_list"
    for i in range(2):
        for u in (4 * i, 4 * i + 2):
            for j in (0, 3, 6):
                assert f"{sb}.{u}.module_list.{j}.netblock.weight" in sd
            for j in (1, 4, 7):
                for k in _BN_KEYS:
                    assert f"{sb}.{u}.module_list.{j}.netblock.{k}" in sd
        assert isinstance(net.module_list[1].module_list[4 * i + 1], MasterReLU)
        assert isinstance(net.module_list[1].module_list[4 * i + 3], MasterReLU)
    assert sd[f"{sb}.0.module_list.3.netblock.weight"].shape == (6, 6, 5, 5)
    assert sd[f"{sb}.0.module_list.6.netblock.weight"].shape == (24, 6, 1, 1)
    assert f"{sb}.0.proj.0.bias" in sd  # unit A of i=0: ResBlockProj
    # every other unit maps 24 -> 24 at stride 1: identity shortcut
    assert not any(re.match(rf"{re.escape(sb)}\.[246]\.proj", k) for k in sd)


def test_idwe_expansion_and_key_grammar() -> None:
    # e=4, btn=10 -> dw1 = smart_round(40, 8) = 40; out=20 -> dw2 = smart_round(80, 8) = 80
    net = MasterNet("SuperConvK3BNRELU(3,8,2,1)SuperResIDWE4K7(8,20,2,10,2)")
    sd = net.state_dict()
    sb = "module_list.1.module_list"
    a0 = f"{sb}.0.module_list"
    assert sd[f"{a0}.0.netblock.weight"].shape == (40, 8, 1, 1)
    assert sd[f"{a0}.3.netblock.weight"].shape == (40, 1, 7, 7)  # depthwise
    assert sd[f"{a0}.6.netblock.weight"].shape == (10, 40, 1, 1)  # unit A outputs btn
    b0 = f"{sb}.2.module_list"
    assert sd[f"{b0}.0.netblock.weight"].shape == (80, 10, 1, 1)
    assert sd[f"{b0}.3.netblock.weight"].shape == (80, 1, 7, 7)
    assert sd[f"{b0}.6.netblock.weight"].shape == (20, 80, 1, 1)
    # unit A (i=0) ResBlockProj 8->10 stride 2, unit B ResBlock 10->20 needs proj,
    # unit A (i=1) 20->10 needs proj, unit B (i=1) 10->20 needs proj
    assert sd[f"{sb}.0.proj.0.weight"].shape == (10, 8, 1, 1)
    assert net.module_list[1].module_list[0].proj[0].stride == (2, 2)
    for u in (2, 4, 6):
        assert f"{sb}.{u}.proj.0.bias" in sd
        assert net.module_list[1].module_list[u].proj[0].stride == (1, 1)
    relus = [type(m) for m in net.module_list[1].module_list[1::2]]
    assert relus == [MasterReLU] * 4


def test_idwe_rounding_uses_smart_round_base8() -> None:
    # e=6, btn=12 -> 72; out=36 -> 216 (both multiples of 8); e=1, btn=13 -> 16
    net = MasterNet("SuperResIDWE6K3(8,36,1,12,1)SuperResIDWE1K3(36,36,1,13,1)")
    sd = net.state_dict()
    assert sd["module_list.0.module_list.0.module_list.0.netblock.weight"].shape[0] == 72
    assert sd["module_list.0.module_list.2.module_list.0.netblock.weight"].shape[0] == 216
    assert sd["module_list.1.module_list.0.module_list.0.netblock.weight"].shape[0] == 16
    assert smart_round(13, 8) == 16


def test_depthwise_groups() -> None:
    net = MasterNet("SuperResIDWE2K5(8,16,2,8,1)")
    dw = net.module_list[0].module_list[0].module_list[3].netblock
    assert dw.groups == dw.in_channels == dw.out_channels == 16


def test_classifier_head_keys_only_with_num_classes() -> None:
    s = "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)"
    assert not any("fc_linear" in k for k in MasterNet(s).state_dict())
    net = MasterNet(s, num_classes=10)
    sd = net.state_dict()
    assert sd["fc_linear.netblock.weight"].shape == (10, 16)
    assert sd["fc_linear.netblock.bias"].shape == (10,)
    logits = net.forward_logits(torch.randn(2, 3, 24, 24))
    assert logits.shape == (2, 10)
    with pytest.raises(InputError, match="num_classes"):
        MasterNet(s).forward_logits(torch.randn(2, 3, 24, 24))


def test_no_reslink_flattens_units() -> None:
    s = "SuperConvK3BNRELU(3,8,2,1)SuperResK1K3K1(8,16,2,4,2)"
    plain = MasterNet(s, no_reslink=True)
    res = MasterNet(s)
    assert not list(plain.res_units())
    assert not any(".proj." in k for k in plain.state_dict())
    # same convs and ReLUs, only the shortcuts are gone
    assert len(list(plain.relus())) == len(list(res.relus())) == 1 + 2 * 2 * 3
    n_conv = sum(isinstance(m, ConvKX) for m in plain.modules())
    assert n_conv == sum(isinstance(m, ConvKX) for m in res.modules()) == 1 + 2 * 2 * 3
    # flattened indices: 3 layers + ReLU ... inside the super block
    assert isinstance(plain.module_list[1].module_list[0], ConvKX)
    assert isinstance(plain.module_list[1].module_list[8], MasterReLU)
    out = plain.forward_pre_gap(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 16, 4, 4)


# -- BN / init ------------------------------------------------------------------------------------
def test_all_bn_eps_1e3_including_proj() -> None:
    net = MasterNet(RELEASED["2.5G"], bn_momentum=0.03)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    projs = [u.proj[1] for u in net.res_units() if u.proj is not None]
    assert projs and all(p.eps == 1e-3 for p in projs)


def test_init_weights_official() -> None:
    net = MasterNet(RELEASED["10G"], num_classes=7)
    for m in net.modules():  # scramble first so the test sees init_weights at work
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.5)
            nn.init.constant_(m.bias, 0.5)
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.constant_(m.bias, 0.5)
    net.init_weights(torch.Generator().manual_seed(0))
    last_bns = {id(u.last_bn()) for u in net.res_units()}
    assert len(last_bns) == sum(1 for _ in net.res_units()) > 0
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            want = 0.0 if id(m) in last_bns else 1.0
            assert torch.all(m.weight == want)
            assert torch.all(m.bias == 0)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            assert torch.all(m.bias == 0)
    # xavier_normal_ std = gain * sqrt(2 / (fan_in + fan_out)) on the largest conv
    conv = max(
        (m for m in net.modules() if isinstance(m, nn.Conv2d)), key=lambda c: c.weight.numel()
    )
    w = conv.weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    std = 3.26033 * math.sqrt(2.0 / (fan_in + fan_out))
    assert abs(w.std().item() / std - 1) < 0.05
    fc = net.fc_linear.netblock
    assert torch.all(fc.bias == 0)
    fc_std = 3.26033 * math.sqrt(2.0 / (7 + fc.weight.shape[1]))
    assert abs(fc.weight.std().item() / fc_std - 1) < 0.15
    # a freshly initialised residual unit is its shortcut (last gamma = 0): check one unit
    unit = next(u for u in net.res_units() if u.proj is None)
    unit.eval()
    x = torch.randn(1, unit.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.allclose(unit(x), x)


def test_init_weights_seeded_reproducible() -> None:
    a = MasterNet(RELEASED["0.5G"])
    b = MasterNet(RELEASED["0.5G"])
    a.init_weights(torch.Generator().manual_seed(3))
    b.init_weights(torch.Generator().manual_seed(3))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_init_weights_kaiming_scheme() -> None:
    """``scheme="kaiming"``: convs at Kaiming fan_out scale (the official gain starts them ~2.5x
    larger), residual units still start as their shortcut; an unknown scheme names the choices."""
    net = MasterNet(RELEASED["0.5G"])
    net.init_weights(torch.Generator().manual_seed(0), scheme="kaiming")
    conv = max(
        (m for m in net.modules() if isinstance(m, nn.Conv2d)), key=lambda c: c.weight.numel()
    )
    w = conv.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() / math.sqrt(2.0 / fan_out) - 1) < 0.05
    assert all(torch.all(u.last_bn().weight == 0) for u in net.res_units())
    official = MasterNet(RELEASED["0.5G"])
    official.init_weights(torch.Generator().manual_seed(0))
    ratio = [
        a.weight.std().item() / b.weight.std().item()
        for a, b in zip(official.modules(), net.modules(), strict=True)
        if isinstance(a, nn.Conv2d) and a.weight.numel() > 64
    ]
    assert sorted(ratio)[len(ratio) // 2] > 2.0
    with pytest.raises(InputError, match="official"):
        net.init_weights(scheme="he")


# -- forward rule / errors ------------------------------------------------------------------------
def _reference_stage_rule(net: MasterNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The reference loop: append when round(H_in / H_out) hits the target (4, 8, ...)."""
    outs, target, h = [], 4, x.shape[2]
    for block in net.module_list:
        x = block(x)
        if round(h / x.shape[2]) == target:
            outs.append(x)
            target *= 2
    return outs


def test_forward_matches_reference_rule_with_split_stage() -> None:
    s = Structure.parse(
        "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,8,2,8,1)SuperResK3K3(8,16,2,8,6)"
        "SuperResK3K3(16,16,2,8,1)SuperResK3K3(16,24,2,8,1)"
    ).split(6)
    assert len(s) == 6
    net = MasterNet(s).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = net(x)
        ref = _reference_stage_rule(net, x)
    assert net.out_indices == (1, 2, 4, 5)  # the split stage contributes its first half
    assert len(ours) == len(ref) == 4
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    assert stage_output_indices([2, 2, 2, 1, 2, 2]) == (1, 2, 4, 5)


@pytest.mark.parametrize(("h", "w", "msg"), [(500, 640, "480 or 512"), (640, 650, "640 or 672")])
def test_non_multiple_of_32_raises_with_nearest_sizes(h: int, w: int, msg: str) -> None:
    net = MasterNet(RELEASED["0.5G"])
    with pytest.raises(InputError, match=msg):
        net(torch.zeros(1, 3, h, w))


def test_small_input_error_and_channel_error() -> None:
    net = MasterNet(RELEASED["0.5G"])
    with pytest.raises(InputError, match="32"):
        net(torch.zeros(1, 3, 16, 32))
    with pytest.raises(InputError, match="channels"):
        net(torch.zeros(1, 4, 32, 32))
    with pytest.raises(InputError, match="shape"):
        net(torch.zeros(3, 32, 32))


def test_unchained_structure_rejected() -> None:
    with pytest.raises(InputError, match="rechain"):
        MasterNet("SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(32,32,2,32,3)")


# -- random structures of every family ------------------------------------------------------------
def _random_block(rng: random.Random, type_name: str, cin: int, stride: int) -> Block:
    t = BLOCK_TYPES[type_name]
    out = rng.choice([8, 12, 16, 24])
    layers = rng.randint(1, 2)
    btn = None if t.kind is BlockKind.CONV else rng.choice([4, 8, 12])
    return Block(t, cin, out, stride, btn, layers)


FAMILIES = ["SuperConvK{k}BNRELU", "SuperResK{k}K{k2}", "SuperResK1K{k}K1", "SuperResIDWE{e}K{k}"]


@pytest.mark.parametrize("family", FAMILIES)
def test_random_structure_each_family_builds_and_runs(family: str) -> None:
    rng = random.Random(FAMILIES.index(family))
    blocks: list[Block] = [Block(BLOCK_TYPES["SuperConvK3BNRELU"], 3, 8, 2, None, 1)]
    for _ in range(4):
        name = family.format(
            k=rng.choice([3, 5, 7]), k2=rng.choice([3, 5, 7]), e=rng.choice([1, 2, 4, 6])
        )
        if family == "SuperConvK{k}BNRELU":
            name = f"SuperConvK{rng.choice([1, 3, 5, 7])}BNRELU"
        blocks.append(_random_block(rng, name, blocks[-1].out_channels, 2))
    s = Structure(tuple(blocks))
    net = MasterNet(s, num_classes=5)
    net.init_weights()
    outs = net(torch.randn(2, 3, 32, 64))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 16), (4, 8), (2, 4), (1, 2)]
    assert [o.shape[1] for o in outs] == list(net.stage_channels)
    assert net.forward_logits(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    # counts: parameters follow the expansion rules (convs + BN affine + projections)
    n = 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            n += m.weight.numel() + (m.out_channels if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            n += 2 * m.num_features
        elif isinstance(m, nn.Linear):
            n += m.weight.numel() + m.out_features
    assert n == sum(p.numel() for p in net.parameters())


# -- state dict round trip / fuse -----------------------------------------------------------------
def test_state_dict_round_trip_strict() -> None:
    s = RELEASED["0.5G"]
    a = MasterNet(s)
    a.init_weights()
    for m in a.modules():  # make BN stats and gammas non-trivial
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = MasterNet(s)
    missing = b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    a.eval()
    b.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))


def test_fuse_matches_unfused_in_eval() -> None:
    net = MasterNet(RELEASED["2.5G"])
    net.init_weights()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        with pytest.raises(InputError):
            MasterNet(RELEASED["0.5G"]).fuse()  # training mode
        net.fuse()
        got = net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    for r, g in zip(ref, got):
        assert torch.allclose(r, g, rtol=1e-3, atol=1e-3 * r.abs().max().item())


def test_module_types() -> None:
    net = MasterNet(RELEASED["34G"])
    assert all(not isinstance(m, nn.ReLU) for m in net.modules())
    assert isinstance(net.module_list[0].module_list[1], BN)
    assert isinstance(net.module_list[1].module_list[0], ResUnit)
