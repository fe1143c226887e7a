"""Checkpoints in the official mmdet layout: key grammar and counts, strict loading, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from damofd.models import create_model, load_checkpoint, load_model, save_checkpoint
from damofd.models.checkpoint import CheckpointError, group_keys, read_checkpoint
from damofd.models.zoo import list_models
from tests._models_util import zoo_model

# reference spec §8.4 and scrfd-spec §5 (num_batches_tracked and integral.project included)
KEY_COUNTS = {
    "damofd-0.5g": 296,
    "damofd-0.5g-kps": 298,
    "damofd-2.5g": 374,
    "damofd-2.5g-kps": 376,
    "damofd-10g": 593,
    "damofd-10g-kps": 595,
    "damofd-34g": 722,
    "damofd-34g-kps": 724,
    "scrfd-500m": 214,
    "scrfd-500m-kps": 285,
    "scrfd-1g": 190,
    "scrfd-1g-bn": 258,
    "scrfd-1.3g": 226,
    "scrfd-2.5g": 226,
    "scrfd-2.5g-kps": 270,
    "scrfd-10g": 217,
    "scrfd-10g-kps": 276,
    "scrfd-34g": 850,
    # damofd's variant (not in the specs): damofd-0.5g-kps's body, scrfd-500m-kps's head
    "damofd-0.5g-bnkps": 367,
}


def test_every_zoo_model_has_the_official_key_count() -> None:
    assert set(KEY_COUNTS) == set(list_models())
    assert {n: len(zoo_model(n).state_dict()) for n in KEY_COUNTS} == KEY_COUNTS


def test_bnkps_variant_is_damofd_body_with_scrfd_head() -> None:
    """damofd-0.5g-bnkps: every backbone/neck key (and shape) of damofd-0.5g-kps, every head key
    of scrfd-500m-kps, nothing else; official damofd-0.5g-kps bodies load into it."""

    def shapes(name: str, head: bool) -> dict[str, tuple[int, ...]]:
        sd = zoo_model(name).state_dict()
        return {k: tuple(v.shape) for k, v in sd.items() if k.startswith("bbox_head.") == head}

    bnkps = zoo_model("damofd-0.5g-bnkps").state_dict()
    want = {**shapes("damofd-0.5g-kps", head=False), **shapes("scrfd-500m-kps", head=True)}
    assert {k: tuple(v.shape) for k, v in bnkps.items()} == want


@pytest.mark.parametrize(
    "name, keys",
    [
        (
            "damofd-0.5g-kps",
            [
                "backbone.module_list.0.module_list.0.netblock.weight",
                "backbone.module_list.0.module_list.1.netblock.num_batches_tracked",
                "backbone.module_list.1.module_list.0.module_list.3.netblock.weight",
                "backbone.module_list.1.module_list.0.proj.0.bias",
                "backbone.module_list.1.module_list.0.proj.1.running_var",
                "neck.lateral_convs.0.conv.weight",
                "neck.downsample_convs.1.conv.bias",
                "neck.pafpn_convs.1.conv.weight",
                "bbox_head.cls_stride_convs.0.0.depthwise_conv.conv.weight",
                "bbox_head.cls_stride_convs.0.1.pointwise_conv.gn.bias",
                "bbox_head.stride_cls.0.weight",
                "bbox_head.stride_reg.0.bias",
                "bbox_head.stride_kps.0.weight",
                "bbox_head.scales.2.scale",
                "bbox_head.integral.project",
            ],
        ),
        (
            "damofd-10g",
            [
                "backbone.module_list.1.module_list.2.module_list.7.netblock.running_mean",
                "backbone.module_list.4.module_list.0.module_list.4.netblock.weight",
                "bbox_head.cls_stride_convs.0.2.conv.weight",
                "bbox_head.cls_stride_convs.0.2.gn.weight",
            ],
        ),
        (
            "scrfd-500m-kps",
            [
                "backbone.stem.0.0.weight",
                "backbone.stem.1.4.running_var",
                "backbone.layer4.5.3.weight",
                "bbox_head.cls_stride_convs.(8, 8).0.depthwise_conv.bn.running_var",
                "bbox_head.cls_stride_convs.(16, 16).1.pointwise_conv.bn.weight",
                "bbox_head.stride_kps.(32, 32).weight",
                "bbox_head.stride_kps.(16, 16).bias",
            ],
        ),
        (
            "scrfd-2.5g-kps",
            [
                "backbone.layer2.0.downsample.1.weight",
                "backbone.layer3.0.downsample.2.running_var",
                "bbox_head.cls_stride_convs.(8, 8).0.bn.running_var",
                "bbox_head.stride_reg.(32, 32).weight",
                "bbox_head.scales.1.scale",
            ],
        ),
        (
            "scrfd-34g",
            [
                "backbone.stem.6.weight",
                "backbone.stem.7.num_batches_tracked",
                "backbone.layer1.0.downsample.1.weight",
                "backbone.layer1.0.downsample.2.running_mean",
                "backbone.layer1.16.conv3.weight",
                "backbone.layer4.7.bn3.bias",
                "bbox_head.cls_stride_convs.0.1.gn.weight",
                "bbox_head.scales.0.scale",
            ],
        ),
    ],
)
def test_official_key_names(name: str, keys: list[str]) -> None:
    sd = zoo_model(name).state_dict()
    missing = [k for k in keys if k not in sd]
    assert not missing
    if name == "scrfd-500m-kps":
        assert not any(k.startswith("bbox_head.scales") for k in sd)  # scale_mode 0
    if name == "scrfd-34g":
        assert "backbone.layer1.0.downsample.1.bias" not in sd  # shortcut conv has no bias
        assert not any(k.startswith(("backbone.conv1", "backbone.bn1")) for k in sd)
    assert not any(".reg_stride_convs." in k for k in sd)  # empty lists (cls_reg_share)
    assert sd["bbox_head.integral.project"].tolist() == [float(i) for i in range(9)]
    assert sd["bbox_head.integral.project"].ndim == 1


@pytest.mark.parametrize("name", list_models("damofd"))
def test_damofd_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    src = zoo_model(name)
    path = save_checkpoint(src, tmp_path / "ckpt" / "epoch_1.pth", meta={"epoch": 1, "iter": 7})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    assert len(raw["state_dict"]) == KEY_COUNTS[name]
    assert raw["meta"]["epoch"] == 1 and raw["meta"]["model_name"] == name
    dst = create_model(name, init=False)
    with torch.no_grad():
        for p in dst.parameters():
            p.zero_()
    meta = load_checkpoint(dst, path)
    assert meta["iter"] == 7
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    again = load_model(path)  # architecture from meta['damofd_config']
    assert again.config == src.config and again.name == name


def test_mmdet_layout_variants(tmp_path: Path) -> None:
    src = zoo_model("scrfd-2.5g-kps")
    sd = src.state_dict()
    variants = {
        "full.pth": {
            "meta": {"epoch": 640, "mmdet_version": "2.7.0", "CLASSES": ("FG",)},
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        },
        "ddp.pth": {"meta": {}, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "bare.pth": dict(sd),
    }
    for fname, obj in variants.items():
        torch.save(obj, tmp_path / fname)
        dst = create_model("scrfd-2.5g-kps", init=False)
        meta = load_checkpoint(dst, tmp_path / fname)
        assert torch.equal(
            dst.state_dict()["bbox_head.stride_kps.(8, 8).weight"],
            sd["bbox_head.stride_kps.(8, 8).weight"],
        )
        assert meta.get("epoch") == (640 if fname == "full.pth" else None)
    with pytest.raises(CheckpointError, match="does not record its architecture"):
        load_model(tmp_path / "bare.pth")
    assert load_model(tmp_path / "bare.pth", name="scrfd-2.5g-kps").use_kps


def test_mismatch_reports_grouped_keys(tmp_path: Path) -> None:
    path = save_checkpoint(zoo_model("damofd-2.5g"), tmp_path / "d25.pth")
    dst = create_model("damofd-0.5g", init=False)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(dst, path)
    msg = str(err.value)
    assert "d25.pth" in msg and "does not fit the model" in msg
    assert "missing keys (" in msg and "unexpected keys (" in msg
    assert "backbone.module_list.1.* (" in msg
    assert "shape mismatches" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing loaded


def test_kps_mismatch_hint_and_shape_message() -> None:
    sd = zoo_model("damofd-0.5g-kps").state_dict()
    with pytest.raises(CheckpointError, match=r"bbox_head\.stride_kps\.0\.\* \(2 keys\).*"
                       r"keypoint weights: use the zoo model 'damofd-0\.5g-kps'"):  # fmt: skip
        load_checkpoint(create_model("damofd-0.5g", init=False), {"state_dict": sd})
    # a model without a zoo name (e.g. a searched structure) gets the use_kps hint
    custom = create_model("damofd-0.5g", init=False)
    custom.name = None
    with pytest.raises(CheckpointError, match=r"build the model with use_kps=True"):
        load_checkpoint(custom, {"state_dict": sd})
    bad = dict(sd)
    bad["bbox_head.stride_cls.0.weight"] = torch.zeros(4, 64, 3, 3)
    with pytest.raises(
        CheckpointError,
        match=r"bbox_head\.stride_cls\.0\.weight \(checkpoint \[4, 64, 3, 3\] vs model "
        r"\[2, 64, 3, 3\]\)",
    ):
        load_checkpoint(create_model("damofd-0.5g-kps", init=False), bad)


def test_non_strict_load_reports() -> None:
    sd = zoo_model("damofd-0.5g-kps").state_dict()
    dst = create_model("damofd-0.5g", init=False)
    meta = load_checkpoint(dst, {"state_dict": sd}, strict=False)
    report = meta["_load_report"]
    assert report.unexpected == ("bbox_head.stride_kps.0.weight", "bbox_head.stride_kps.0.bias")
    assert torch.equal(
        dst.state_dict()["neck.fpn_convs.0.conv.weight"], sd["neck.fpn_convs.0.conv.weight"]
    )


def test_group_keys() -> None:
    keys = [f"backbone.module_list.3.module_list.{i}.netblock.weight" for i in range(42)]
    keys += ["bbox_head.scales.0.scale", "neck.a", "neck.b"]
    assert group_keys(keys) == [
        "backbone.module_list.3.* (42 keys)",
        "bbox_head.scales.0.scale",
        "neck.a",
        "neck.b",
    ]
    many = [f"p{i}.x.y.z" for i in range(20)]
    out = group_keys(many, max_groups=5)
    assert len(out) == 6 and out[-1] == "… 15 more groups"


class _Arbitrary:
    pass


def test_read_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        read_checkpoint(tmp_path / "junk.pth")
    # a genuine torch.save file with arbitrary objects: only that one suggests trust_pickle
    torch.save({"state_dict": {}, "meta": _Arbitrary()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match=r"type \S*test_models_checkpoint\._Arbitrary\)"
                       r"; if you trust the file, load it with trust_pickle=True"):  # fmt: skip
        read_checkpoint(tmp_path / "obj.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "nontensor.pth")
    with pytest.raises(CheckpointError, match="non-tensor entries a"):
        load_checkpoint(create_model("scrfd-500m", init=False), tmp_path / "nontensor.pth")


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    """Anything torch.save did not write is named as such, never "trust_pickle=True"."""
    import zipfile

    rng = torch.Generator().manual_seed(0)
    files = {
        "photo.pth": (b"\xff\xd8\xff\xe0" + bytes(60), "a JPEG image"),
        "random.pth": (bytes(torch.randint(0, 256, (4096,), generator=rng).tolist()), "unknown"),
        "empty.pth": (b"", "the file is empty"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"w": [1.0, 2.0]}, f, protocol=2)
    files["plain.pkl"] = (b"", "a Python pickle not written by torch.save")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    files["other.zip"] = (b"", "a zip archive without the data.pkl record")
    for name, (_, what) in files.items():
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as e:
            read_checkpoint(tmp_path / name)
        assert what in str(e.value) and "trust_pickle" not in str(e.value), name
    # the legacy (pre-1.6) torch.save format is still a checkpoint
    sd = {"w": torch.arange(3.0)}
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(tmp_path / "legacy.pth")["w"], sd["w"])


def test_hints_name_zoo_models(tmp_path: Path) -> None:
    from damofd.models.checkpoint import ArchitectureNotRecordedError

    plain = tmp_path / "plain.pth"
    torch.save(zoo_model("damofd-0.5g").state_dict(), plain)
    # a checkpoint without keypoints for the -kps model: the hint names the matching zoo model
    with pytest.raises(CheckpointError, match=r"no keypoint weights: use the zoo model "
                       r"'damofd-0\.5g'") as e:  # fmt: skip
        load_model(plain, name="damofd-0.5g-kps")
    assert "use_kps" not in str(e.value)
    kps = tmp_path / "kps.pth"
    torch.save(zoo_model("damofd-0.5g-kps").state_dict(), kps)
    with pytest.raises(CheckpointError, match=r"has keypoint weights: use the zoo model "
                       r"'damofd-0\.5g-kps'"):  # fmt: skip
        load_model(kps, name="damofd-0.5g")
    # no recorded architecture and no name: the API error names the name= argument
    with pytest.raises(ArchitectureNotRecordedError, match=r"name='damofd-10g'") as e2:
        load_model(plain)
    assert e2.value.source == str(plain)
    assert "`damofd export" in str(e2.value.with_hint("`damofd export ...`"))
