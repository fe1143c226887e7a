"""The PyTorch backend (damofd.models through ``forward_export``) against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.errors import ConfigError, DamoFDError, InputError
from damofd.inference import FaceDetector, Tasks, pipeline
from tests.conftest import require_asset

models = pytest.importorskip("damofd.models")


@pytest.fixture(scope="module")
def det_500m(assets: Path) -> Path:
    return require_asset(assets, "models/scrfd/det_500m.onnx")


@pytest.fixture(scope="module")
def photos(assets: Path) -> list[np.ndarray]:
    imgs = [
        cv2.imread(str(require_asset(assets, f"images/{n}"))) for n in ("t1.jpg", "bald_guys.jpg")
    ]
    assert all(i is not None for i in imgs)
    return imgs


@pytest.fixture(scope="module")
def torch_det(det_500m: Path) -> FaceDetector:
    return FaceDetector.from_zoo("scrfd-500m-kps", weights=det_500m)


def test_torch_matches_onnx(torch_det: FaceDetector, det_500m: Path, photos) -> None:
    ort_det = FaceDetector.from_onnx(det_500m)
    assert torch_det.layout.strides == (8, 16, 32) and torch_det.use_kps
    # a batch of two photos on the torch side, one by one on the 2-D-output ONNX file
    got = torch_det.predict(photos)
    for g, img in zip(got, photos):
        want = ort_det.predict(img)[0]
        assert len(g) == len(want) >= 6
        np.testing.assert_allclose(g.boxes, want.boxes, atol=2e-3)
        np.testing.assert_allclose(g.keypoints, want.keypoints, atol=2e-3)
        np.testing.assert_allclose(g.scores, want.scores, atol=1e-4)


def test_checkpoint_round_trip(torch_det: FaceDetector, det_500m: Path, photos, tmp_path: Path):
    from damofd.models.checkpoint import save_checkpoint
    from damofd.models.onnx_import import import_scrfd_onnx

    model = import_scrfd_onnx(det_500m, config="scrfd-500m-kps")
    ckpt = save_checkpoint(model, tmp_path / "scrfd500m.pth")
    det = FaceDetector.from_checkpoint(ckpt)  # architecture read from the checkpoint
    np.testing.assert_allclose(
        det.predict(photos[0])[0].boxes, torch_det.predict(photos[0])[0].boxes, atol=1e-3
    )
    again = FaceDetector.from_pretrained(ckpt, protocol="insightface")
    assert again.protocol.name == "insightface" and len(again.predict(photos[0])[0]) == 6
    with pytest.raises(InputError, match="does not fit"):
        FaceDetector.from_zoo("scrfd-1g", weights=ckpt)


def test_kps_free_model_and_modelscope_dict(photos) -> None:
    from damofd.models import create_model

    # initial weights score every anchor ≈ 0.01: threshold 0 keeps all of them, so keep the
    # image small ("original": 128×160 canvas, 840 anchors)
    det = FaceDetector.from_model(
        create_model("damofd-0.5g"), score_thr=0.0, max_faces=7, protocol="original"
    )
    assert not det.use_kps
    res = det.predict(cv2.resize(photos[0], (160, 111)))[0]
    assert res.ok and len(res) == 7 and res.keypoints is None
    d = res.to_modelscope()
    assert d["keypoints"] is None and len(d["boxes"]) == 7
    assert all(f.keypoints is None for f in res.faces)
    with pytest.raises(ConfigError, match="CUDA"):
        FaceDetector.from_model(create_model("damofd-0.5g"), fp16=True)


def test_pipeline_with_modelscope_id(tmp_path: Path, photos, monkeypatch) -> None:
    from damofd.models import create_model
    from damofd.models.checkpoint import save_checkpoint

    model = create_model("damofd-0.5g-kps")
    ckpt = save_checkpoint(model, tmp_path / "damofd05.pth")
    p = pipeline(
        "face-detection",
        model="damo/cv_ddsar_face-detection_iclr23-damofd",
        weights=ckpt,
        protocol="original",
    )
    assert p.detector.use_kps
    out = p(cv2.resize(photos[0], (160, 111)))
    assert set(out) == {"scores", "boxes", "keypoints"}
    assert p.detector.score_thr == 0.3  # ModelScope's default
    # a ModelScope model folder (configuration.json, DamoFD_lms.py, pytorch_model.pt)
    from damofd.models.modelscope import save_modelscope_dir

    ms_dir = save_modelscope_dir(model, tmp_path / "ms")
    p2 = pipeline(Tasks.face_detection, model=ms_dir, protocol="original")
    assert p2.detector.use_kps and p2.detector.score_thr == 0.3
    assert set(p2(cv2.resize(photos[0], (160, 111)))) == {"scores", "boxes", "keypoints"}
    # without weights: the ModelScope loader (offline here) must fail with a clear error
    monkeypatch.setenv("DAMOFD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DamoFDError):
        pipeline("face-detection", model="damo/cv_ddsar_face-detection_iclr23-damofd-10G")
    with pytest.raises(ConfigError, match=r"cannot be fetched automatically \(onedrive: http"):
        FaceDetector.from_zoo("scrfd-1g")
    with pytest.raises(ConfigError, match=r"no weights were released .* --weights FILE"):
        FaceDetector.from_zoo("scrfd-1g-bn")
    with pytest.raises(ConfigError, match="face-detection"):
        pipeline("image-classification", model=str(ckpt))


def test_our_onnx_export(det_500m: Path, photos, tmp_path: Path) -> None:
    """A file written by damofd.export (named, batched outputs) runs like the official one."""
    export = pytest.importorskip("damofd.export.onnx")
    from damofd.models.onnx_import import import_scrfd_onnx

    path = export.export_onnx(import_scrfd_onnx(det_500m), tmp_path / "ours.onnx")
    ours = FaceDetector.from_onnx(path)
    assert ours.layout.max_batch is None and ours.use_kps
    official = FaceDetector.from_onnx(det_500m)
    for got, want in zip(ours.predict(photos), official.predict(photos)):
        assert len(got) == len(want) >= 6
        np.testing.assert_allclose(got.boxes, want.boxes, atol=2e-3)
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=2e-3)


def test_channels_last_matches_contiguous() -> None:
    """The CPU default (NHWC) gives the raw outputs of the plain NCHW run, GroupNorm head included,
    and leaves the caller's module untouched."""
    import torch

    from damofd.inference.backends import TorchBackend
    from damofd.models import create_model

    torch.manual_seed(0)
    model = create_model("damofd-0.5g-kps").eval()
    nhwc = TorchBackend(model)
    nchw = TorchBackend(model, channels_last=False)
    assert nhwc.channels_last and not nchw.channels_last and "channels-last" in nhwc.description
    first = next(model.parameters())
    assert first.dim() != 4 or first.is_contiguous()  # the caller's weights stay NCHW
    blob = np.random.default_rng(0).normal(0, 0.5, (2, 3, 96, 160)).astype(np.float32)
    got, want = nhwc.run(blob), nchw.run(blob)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_device_and_thresholds_validated(one_torch_thread: None, tmp_path: Path) -> None:
    import torch

    from damofd.device import check_device
    from damofd.inference.backends import TorchBackend
    from damofd.models import create_model

    model = create_model("damofd-0.5g")
    for bad in ("foo", "cuda:x", ""):
        with pytest.raises(ConfigError, match=rf"device {bad!r} is not a torch device"):
            TorchBackend(model, device=bad)
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"only .* CUDA device"):
            check_device("cuda:99")
    else:
        with pytest.raises(ConfigError, match="'cuda:0' requested but CUDA is not available"):
            check_device("cuda:0")
    assert check_device("cpu").type == "cpu"
    # checked before the checkpoint is read
    with pytest.raises(ConfigError, match="device 'gpu0'"):
        FaceDetector.from_checkpoint(tmp_path / "any.pth", device="gpu0")

    with pytest.raises(ConfigError, match=r"score_thr must be in \[0, 1\], got 1.5"):
        FaceDetector.from_model(model, score_thr=1.5)
    det = FaceDetector.from_model(model, nms_thr=0.3)
    assert det.nms_thr == 0.3 and det.score_thr == 0.5
    with pytest.raises(ConfigError, match=r"nms_thr must be in \(0, 1\], got 0"):
        det.nms_thr = 0
    with pytest.raises(ConfigError, match="score_thr must be in"):
        det.score_thr = -0.1
    assert det.nms_thr == 0.3 and det.score_thr == 0.5  # unchanged
    img = np.zeros((64, 64, 3), np.uint8)
    for kw in ({"score_thr": 2.0}, {"nms_thr": 1.5}, {"max_faces": -1}):
        with pytest.raises(ConfigError):
            det.predict(img, **kw)
