"""WiderFaceDataset, collate, GroupSampler and ``damofd data show``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from damofd.cli.main import main as cli
from damofd.data.dataset import WiderFaceDataset, collate_batch
from damofd.data.sampler import GroupSampler
from damofd.data.transforms import AugmentConfig
from damofd.errors import InputError
from tests.conftest import require_asset


def _img(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture
def small(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    _img(root / "images/a.png", 120, 80, 1)
    _img(root / "images/b.png", 60, 90, 2)
    _img(root / "images/tiny.png", 40, 20, 3)
    kps = "30 30 0 50 30 0 40 40 0 32 50 0 48 50 0"
    (root / "labelv2.txt").write_text(
        "\n".join(
            [
                "# a.png 120 80",
                f"20 20 60 60 {kps}",
                "70 10 100 40",
                "0 0 10 10 1",
                "# b.png",  # size read from the file
                "10 10 50 60",
                "# empty.png 100 100",  # no boxes: dropped
                "# tiny.png 40 20",  # min side < 32: dropped
                "1 1 10 10",
            ]
        )
        + "\n"
    )
    return root


def test_dataset_filters_sizes_and_flags(small: Path) -> None:
    ds = WiderFaceDataset(small, config=AugmentConfig(size=64), seed=3)
    assert [r.name for r in ds.records] == ["a.png", "b.png"]
    assert (ds.num_dropped_empty, ds.num_dropped_small) == (1, 1)
    assert (ds.records[1].width, ds.records[1].height) == (60, 90)
    np.testing.assert_array_equal(ds.flag, [1, 0])  # w / h > 1
    ds.validate()


def test_sample_contract_and_determinism(small: Path) -> None:
    ds = WiderFaceDataset(small / "labelv2.txt", config=AugmentConfig(size=64), seed=3)
    s = ds[0]
    assert s["img"].shape == (3, 64, 64) and s["img"].dtype == torch.float32
    assert s["gt_bboxes"].dtype == torch.float32 and s["gt_bboxes"].shape[1] == 4
    assert s["gt_keypoints"].shape == (s["gt_bboxes"].shape[0], 5, 3)
    assert s["gt_bboxes_ignore"].shape[1] == 4
    assert s["meta"]["name"] == "a.png" and s["meta"]["ori_shape"] == (80, 120)
    assert float(s["img"].abs().max()) < 3.0  # normalised, not raw pixels
    # keypoint weights per face: all 1 (face with keypoints) or all 0 (box-only face)
    for k in s["gt_keypoints"]:
        assert k[:, 2].tolist() in ([1.0] * 5, [0.0] * 5)
    again = WiderFaceDataset(small, config=AugmentConfig(size=64), seed=3)
    for i in range(len(ds)):
        a, b = ds[i], again[i]
        assert torch.equal(a["img"], b["img"]) and torch.equal(a["gt_bboxes"], b["gt_bboxes"])
    patches = set()
    for e in range(6):
        ds.set_epoch(e)
        patches.add((ds[0]["meta"]["patch"], ds[0]["meta"]["flipped"]))
    assert len(patches) > 1  # epochs draw different augmentations


def test_dataloader_workers_reproduce_single_process(small: Path) -> None:
    ds = WiderFaceDataset(small, config=AugmentConfig(size=64), seed=5)
    ds.set_epoch(2)
    direct = collate_batch([ds[0], ds[1]])
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_batch)
    (batch,) = list(loader)
    assert batch["img"].shape == (2, 3, 64, 64)
    assert torch.equal(batch["img"], direct["img"])
    for a, b in zip(batch["gt_bboxes"], direct["gt_bboxes"]):
        assert torch.equal(a, b)
    assert [m["name"] for m in batch["metas"]] == ["a.png", "b.png"]
    with pytest.raises(ValueError):
        collate_batch([])


def test_validate_lists_every_missing_image(small: Path) -> None:
    text = (small / "labelv2.txt").read_text()
    (small / "labelv2.txt").write_text(
        text + "# gone1.png 50 50\n1 1 9 9\n# sub/gone2.png 50 50\n1 1 9 9\n"
    )
    ds = WiderFaceDataset(small, config=AugmentConfig(size=64))
    assert ds.missing_images() == ["gone1.png", "sub/gone2.png"]
    with pytest.raises(InputError, match=r"(?s)2 images .*\n  gone1\.png\n  sub/gone2\.png") as ei:
        ds.validate()
    assert ei.value.missing == ["gone1.png", "sub/gone2.png"]  # type: ignore[attr-defined]
    # a missing image whose size is not in the header is reported at construction
    (small / "labelv2.txt").write_text(text + "# gone3.png\n1 1 9 9\n")
    with pytest.raises(InputError, match=r"gone3\.png"):
        WiderFaceDataset(small)
    # a file that exists but cannot be decoded is named
    (small / "images/a.png").write_bytes(b"garbage")
    (small / "labelv2.txt").write_text(text)
    with pytest.raises(InputError, match=r"a\.png"):
        WiderFaceDataset(small, config=AugmentConfig(size=64))[0]


def test_group_sampler_partitions_and_groups() -> None:
    flags = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1])
    ranks = [GroupSampler(flags, 2, num_replicas=2, rank=r, seed=1) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    idx = [s.indices() for s in ranks]
    assert len(idx[0]) == len(idx[1]) == len(ranks[0])
    # group 0 (4 items) pads to 4, group 1 (7 items) pads to 8: 12 = 2 ranks x 6
    assert len(ranks[0]) == 6
    assert set(idx[0]) | set(idx[1]) == set(range(len(flags)))
    for order in idx:  # every per-GPU batch is aspect-homogeneous
        for k in range(0, len(order), 2):
            assert flags[order[k]] == flags[order[k + 1]]
    again = GroupSampler(flags, 2, num_replicas=2, rank=0, seed=1)
    again.set_epoch(3)
    assert again.indices() == idx[0]
    again.set_epoch(4)
    assert again.indices() != idx[0]
    again.set_epoch(3, skip=4)
    assert list(again) == idx[0][4:] and len(again) == 2
    plain = GroupSampler(flags, 1, shuffle=False)
    assert sorted(plain.indices()) == list(range(len(flags)))


def test_real_subset_sample(assets: Path) -> None:
    labels = require_asset(assets, "widerface/labelv2/train/labelv2.txt")
    images = require_asset(assets, "widerface/WIDER_train/images")
    ds = WiderFaceDataset(labels, images, config=AugmentConfig.for_model("damofd-0.5g"))
    assert len(ds) == 1239
    ds.validate()
    s = ds[10]
    assert s["img"].shape == (3, 640, 640)
    b = s["gt_bboxes"]
    assert len(b) >= 1 and float(b.min()) >= 0 and float(b.max()) <= 640  # clip_border
    assert torch.all(s["gt_keypoints"][..., 2] == 0)  # the shipped subset has no keypoints


def test_cli_show_writes_samples(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "show"
    rc = cli(["data", "show", str(small), "--out", str(out), "-n", "2", "--seed", "1"])
    assert rc == 0
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 2
    img = cv2.imread(str(files[0]))
    assert img is not None and img.shape == (640, 640, 3)
