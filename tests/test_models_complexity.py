"""Params and FLOPs with the mmcv rules: reference spec §9 and scrfd-spec §7, to the unit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from damofd.cli.main import main
from damofd.models import get_model_complexity
from damofd.models.flops import count_params
from damofd.models.zoo import list_models
from tests._models_util import zoo_model

VGA = (640, 480)  # (H, W) as tools/get_flops.py

# reference spec §9: params, FLOPs, backbone/neck/head params, backbone FLOPs (GN counted)
DAMOFD_TABLE = {
    "damofd-0.5g": (258_189, 519_864_600, 224_368, 21_792, 12_029, 413_126_400),
    "damofd-0.5g-kps": (269_729, 592_566_600, 224_368, 21_792, 23_569, 413_126_400),
    "damofd-2.5g": (442_741, 2_455_200_600, 342_968, 43_056, 56_717, 2_038_603_200),
    "damofd-2.5g-kps": (454_281, 2_527_902_600, 342_968, 43_056, 68_257, 2_038_603_200),
    "damofd-10g": (1_269_325, 9_737_227_800, 877_968, 228_144, 163_213, 8_398_440_000),
    "damofd-10g-kps": (1_283_745, 9_828_073_800, 877_968, 228_144, 177_633, 8_398_440_000),
    "damofd-34g": (6_238_733, 34_033_915_800, 4_049_664, 1_280_256, 908_813, 26_504_841_600),
    "damofd-34g-kps": (6_284_833, 34_324_345_800, 4_049_664, 1_280_256, 954_913, 26_504_841_600),
}

# scrfd-spec §7.1 / §7.2: params, bb/neck/head params, FLOPs without GN, FLOPs with GN
SCRFD_TABLE = {
    "scrfd-500m": (572_741, 536_232, 24_480, 12_029, 508_747_800, 511_368_600),
    "scrfd-500m-kps": (631_410, 536_232, 24_480, 70_698, 584_070_600, 584_070_600),
    "scrfd-1g": (635_565, 560_648, 53_040, 21_877, 982_342_200, 986_273_400),
    "scrfd-1g-bn": (679_313, 560_648, 53_040, 65_625, 986_273_400, 986_273_400),
    "scrfd-1.3g": (435_253, 359_640, 39_984, 35_629, 1_288_416_600, 1_289_626_200),
    "scrfd-2.5g": (671_761, 574_292, 40_752, 56_717, 2_530_565_400, 2_532_178_200),
    "scrfd-2.5g-kps": (819_809, 574_292, 40_752, 204_765, 2_604_880_200, 2_604_880_200),
    "scrfd-10g": (3_860_225, 3_476_484, 220_528, 163_213, 9_982_109_400, 9_985_133_400),
    "scrfd-10g-kps": (4_229_905, 3_476_484, 220_528, 532_893, 10_075_979_400, 10_075_979_400),
    "scrfd-34g": (9_802_737, 7_663_844, 1_230_080, 908_813, 34_136_931_000, 34_143_382_200),
}


def test_zoo_covers_every_table_row() -> None:
    assert set(list_models("damofd")) == set(DAMOFD_TABLE) | {"damofd-0.5g-bnkps"}
    assert set(list_models("scrfd")) == set(SCRFD_TABLE)


def test_bnkps_variant_costs() -> None:
    """damofd-0.5g-bnkps = damofd-0.5g-kps's backbone + neck and scrfd-500m-kps's head: the
    parts' params and FLOPs come from the two reference tables; same FLOPs as damofd-0.5g-kps
    (the per-level heads cost what the shared one costs), more params."""
    params, flops, bb_p, neck_p, _, bb_flops = DAMOFD_TABLE["damofd-0.5g-kps"]
    head_p = SCRFD_TABLE["scrfd-500m-kps"][3]
    c = get_model_complexity(zoo_model("damofd-0.5g-bnkps"), VGA)
    assert c.count_gn  # a DamoFD-family model; its head has no GN, so it makes no difference
    assert [c.parts[k].params for k in ("backbone", "neck", "bbox_head")] == [bb_p, neck_p, head_p]
    assert c.params == bb_p + neck_p + head_p == 316_858 > params
    assert c.flops == flops and c.parts["backbone"].flops == bb_flops


@pytest.mark.parametrize("name", list(DAMOFD_TABLE))
def test_damofd_reference_table(name: str) -> None:
    params, flops, bb_p, neck_p, head_p, bb_flops = DAMOFD_TABLE[name]
    c = get_model_complexity(zoo_model(name), VGA)  # DamoFD default: GN counted
    assert c.count_gn
    assert (c.params, c.flops) == (params, flops)
    assert c.parts["backbone"].params == bb_p
    assert c.parts["neck"].params == neck_p
    assert c.parts["bbox_head"].params == head_p
    assert c.parts["backbone"].flops == bb_flops
    assert sum(p.flops for p in c.parts.values()) == flops


@pytest.mark.parametrize("name", list(SCRFD_TABLE))
def test_scrfd_reference_table(name: str) -> None:
    params, bb_p, neck_p, head_p, flops_no_gn, flops_gn = SCRFD_TABLE[name]
    model = zoo_model(name)
    c = get_model_complexity(model, VGA)  # SCRFD default: mmcv 1.2.6, GN not counted
    assert not c.count_gn
    assert (c.params, c.flops) == (params, flops_no_gn)
    assert [c.parts[k].params for k in ("backbone", "neck", "bbox_head")] == [bb_p, neck_p, head_p]
    assert get_model_complexity(model, VGA, count_gn=True).flops == flops_gn


# one model per backbone block type and head variant (IDW / KXKX / K1KXK1 MasterNet, MobileNetV1,
# Basic and Bottleneck ResNetV1e with 1x1 AvgPool shortcuts; GN shared / BN per-stride heads)
ARCH_COVER = ["damofd-0.5g-kps", "damofd-2.5g", "damofd-10g", "scrfd-500m-kps", "scrfd-34g"]


@pytest.mark.parametrize("name", ARCH_COVER)
def test_scaled_count_equals_forward_count(name: str) -> None:
    """The fast "scaled" count is exactly a real forward count (checked at 96x128)."""
    model = zoo_model(name)
    fwd = get_model_complexity(model, (96, 128), count_gn=True, method="forward")
    fast = get_model_complexity(model, (96, 128), count_gn=True, method="scaled")
    assert fwd.method == "forward" and fast.method == "scaled"
    assert fwd.flops == fast.flops
    assert {k: v.flops for k, v in fwd.parts.items()} == {k: v.flops for k, v in fast.parts.items()}


def test_full_size_forward_count_matches_table() -> None:
    c = get_model_complexity(zoo_model("damofd-0.5g"), VGA, method="forward")
    assert (c.params, c.flops) == DAMOFD_TABLE["damofd-0.5g"][:2]
    c = get_model_complexity(zoo_model("scrfd-500m"), (480, 640), method="forward")
    assert c.flops == SCRFD_TABLE["scrfd-500m"][4]  # FLOPs do not depend on orientation


def test_counting_rules_on_a_toy_module() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)  # 3*9*4 MACs + 4 bias per position
            self.gn = nn.GroupNorm(2, 4)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.gn(self.conv(x)))
            x = self.relu(x)  # counted again (per call)
            x = torch.relu(x)  # functional: not counted
            return self.pool(x) + 1  # addition: not counted

    toy = Toy()
    n = 8 * 8
    base = (3 * 9 * 4 + 4) * n + 2 * (4 * n) + 4 * n
    assert get_model_complexity(toy, (8, 8), count_gn=False).flops == base
    assert get_model_complexity(toy, (8, 8), count_gn=True).flops == base + 2 * 4 * n
    assert get_model_complexity(toy, (8, 8), count_gn=True).method == "forward"
    with pytest.raises(ValueError, match="size_divisor"):
        get_model_complexity(toy, (8, 8), method="scaled")
    assert count_params(toy) == 3 * 9 * 4 + 4 + 8


def test_training_mode_is_restored() -> None:
    model = zoo_model("damofd-0.5g")
    model.train()
    try:
        get_model_complexity(model, (64, 64))
        assert model.training
    finally:
        model.eval()


def test_cli_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "damofd-34g-kps", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["params"], r["flops"]) == (6_284_833, 34_324_345_800)
    assert r["parts"]["bbox_head"] == {"params": 954_913, "flops": r["parts"]["bbox_head"]["flops"]}
    assert r["input_size"] == [640, 480] and r["count_gn"] is True
    assert r["anchors"] == 12_600
    assert r["published"]["flops"] == "34.32G"


def test_cli_info_text_and_gn_switch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "scrfd-500m", "--gn-flops", "--exact"]) == 0
    out = capsys.readouterr().out
    assert "511,368,600" in out and "GroupNorm counted" in out
    assert main(["info", "scrfd-500m", "--input", "640x640", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["flops"] * 3 == 508_747_800 * 4  # 640x640 = 4/3 of VGA (fully convolutional)
    assert r["anchors"] == 16_800


def test_cli_info_structure_string(capsys: pytest.CaptureFixture[str]) -> None:
    from damofd.models.zoo import DAMOFD_STRUCTURES

    assert main(["info", DAMOFD_STRUCTURES["0.5g"], "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["params"], r["flops"]) == DAMOFD_TABLE["damofd-0.5g"][:2]  # template found


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "damofd-0.5g", "--input", "650x480"], "multiples of 32"),
        (["info", "damofd-0.5g", "--input", "big"], "HxW"),
        (["info", "damofd-05g"], "unknown model"),
    ],
)
def test_cli_info_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
