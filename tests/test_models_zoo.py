"""Model zoo: names, metadata, create_model from names and from structure strings, CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest

from damofd.errors import ConfigError, InputError
from damofd.models import (
    PAFPNConfig,
    SCRFDHeadConfig,
    count_params,
    create_model,
    get_config,
    get_model_info,
    list_models,
    save_checkpoint,
)
from damofd.models.factory import nearest_damofd_template
from damofd.models.zoo import DAMOFD_STRUCTURES, resolve_name
from damofd.search.structure import Structure
from tests._spec import RELEASED_STRUCTURES

STRUCTURES = RELEASED_STRUCTURES  # reference spec §3.1


def test_names_and_filters() -> None:
    names = list_models()
    assert len(names) == len(set(names)) == 19
    assert list_models("damofd", use_kps=True) == [
        "damofd-0.5g-kps",
        "damofd-2.5g-kps",
        "damofd-10g-kps",
        "damofd-34g-kps",
        "damofd-0.5g-bnkps",
    ]
    assert list_models("scrfd", use_kps=True) == [
        "scrfd-500m-kps",
        "scrfd-2.5g-kps",
        "scrfd-10g-kps",
    ]
    unreleased = set(list_models()) - set(list_models(released_only=True))
    assert unreleased == {"scrfd-1g-bn", "scrfd-1.3g", "damofd-0.5g-bnkps"}


@pytest.mark.parametrize(
    "alias, name",
    [
        ("DamoFD_10G_KPS", "damofd-10g-kps"),
        ("damofd_0.5g_lms", "damofd-0.5g-kps"),
        ("scrfd_500m_bnkps", "scrfd-500m-kps"),
        ("SCRFD_2.5G", "scrfd-2.5g"),
        ("scrfd_1gbn", "scrfd-1g-bn"),
        (" scrfd-34g ", "scrfd-34g"),
    ],
)
def test_resolve_name(alias: str, name: str) -> None:
    assert resolve_name(alias) == name


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'damofd-05g'; did you mean damofd-0\.5g"):
        create_model("damofd-05g")
    with pytest.raises(ConfigError, match=r"scrfd-34g-kps.*valid:"):
        get_model_info("scrfd-34g-kps")  # SCRFD_34G has no official keypoint model
    with pytest.raises(ConfigError, match="needs a zoo name or a structure"):
        create_model()


def test_metadata() -> None:
    for name in list_models():
        info = get_model_info(name)
        assert info.name == name and info.licence and info.reference_config
        assert info.to_dict()["config"] == info.config.to_dict()
        json.dumps(info.to_dict())
        if info.released:
            p = info.published
            assert p is not None and 60 < p.hard < p.medium < p.easy < 100
            assert "WIDER FACE val" in p.protocol and info.weights
        assert info.count_gn == (info.family == "damofd")
    for size, s in STRUCTURES.items():
        assert DAMOFD_STRUCTURES[size] == s
        for kps in ("", "-kps"):
            assert get_model_info(f"damofd-{size}{kps}").structure == s
    info = get_model_info("damofd-34g")
    assert (info.published.easy, info.published.hard) == (95.63, 85.08)
    assert [w.kind for w in get_model_info("damofd-10g-kps").weights] == ["modelscope"]
    assert get_model_info("damofd-10g-kps").weights[0].location == (
        "damo/cv_ddsar_face-detection_iclr23-damofd-10G"
    )
    onnx = [w.location for w in get_model_info("scrfd-500m-kps").weights if w.kind == "onnx"]
    assert onnx == ["det_500m.onnx", "scrfd_500m_bnkps.onnx"]
    assert "non-commercial" in get_model_info("scrfd-2.5g").licence


def test_use_kps_selects_the_official_sibling() -> None:
    m = create_model("scrfd-500m", use_kps=True, init=False)
    assert m.name == "scrfd-500m-kps" and m.config == get_config("scrfd-500m-kps")
    m = create_model("damofd-10g-kps", use_kps=False, init=False)
    assert m.name == "damofd-10g" and not m.use_kps
    m = create_model("scrfd-34g", use_kps=True, init=False)  # no official sibling
    assert m.name is None and m.use_kps and m.config.head.norm == "gn"


@pytest.mark.parametrize("size", list(STRUCTURES))
def test_create_from_structure_finds_the_template(size: str) -> None:
    model = create_model(structure=STRUCTURES[size], init=False)
    zoo = get_config(f"damofd-{size}")
    assert model.name is None
    assert model.config.head == zoo.head
    assert model.config.neck.out_channels == zoo.neck.out_channels
    assert model.config.neck.in_channels[1:] == zoo.neck.in_channels[1:]
    assert model.config.neck.in_channels == tuple(model.backbone.stage_channels)
    assert count_params(model) == count_params(create_model(f"damofd-{size}", init=False))


def test_create_from_structure_options(tmp_path) -> None:
    s = Structure.parse(STRUCTURES["0.5g"])
    m = create_model("damofd-2.5g", structure=s, use_kps=True, init=False)
    assert m.use_kps and m.config.head.feat_channels == 64 and m.config.neck.out_channels == 24
    head = SCRFDHeadConfig(in_channels=32, feat_channels=32, stacked_convs=1, num_groups=8)
    neck = PAFPNConfig(in_channels=(32, 64, 120, 160), out_channels=32)
    m = create_model(structure=s, neck=neck, head=head, init=False)
    assert m.config.neck == neck and m.config.head == head
    # split 34G: the 6-layer block becomes two; the first half's output is the stage (§2.2)
    split = Structure.parse(STRUCTURES["34g"]).split(6)
    assert len(split) == 6
    m = create_model(structure=split, init=False)
    assert tuple(m.backbone.stage_channels) == (224, 488, 624, 816)
    assert nearest_damofd_template(1) == "damofd-0.5g"
    with pytest.raises(InputError, match="block 2"):
        create_model(structure=STRUCTURES["0.5g"].replace("(32,64,2", "(48,64,2"))
    path = save_checkpoint(m, tmp_path / "split.pth")
    m2 = create_model(structure=split, checkpoint=path, init=False)
    assert m2.state_dict().keys() == m.state_dict().keys()


def test_custom_neck_head_on_a_name() -> None:
    cfg = get_config("scrfd-2.5g")
    head = dataclasses.replace(cfg.head, stacked_convs=1)
    m = create_model("scrfd-2.5g", head=head, init=False)
    assert m.name is None and len(m.bbox_head.cls_stride_convs["0"]) == 1


def test_cli_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    from damofd.cli.main import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "damofd-34g-kps" in out and "86.09" in out and "(not released)" in out
    assert main(["zoo", "DamoFD_0.5G", "--count"]) == 0
    out = capsys.readouterr().out
    assert "structure: " + STRUCTURES["0.5g"] in out
    assert "258,189 params, 519,864,600 FLOPs" in out
    assert main(["zoo", "--family", "scrfd", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models("scrfd")
    assert main(["zoo", "nope"]) == 2
