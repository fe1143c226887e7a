"""ONNX files with a fixed batch axis (``damofd export --shape H W --batch N``): any number of
images runs, in passes of exactly N (zero-padded), with the results of a dynamic-batch export of
the same model run one image at a time; onnxruntime failures become one-line InputErrors.

A random-init damofd-0.5g at 64×96 keeps every export and pass tiny.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_eval_support import write_gt_mats

from damofd.cli.main import main
from damofd.errors import ConfigError, InputError
from damofd.inference import FaceDetector, OnnxBackend

H, W, FIXED = 64, 96, 3


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from damofd.export import export_onnx
    from damofd.models import create_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = create_model("damofd-0.5g").eval()
        d = tmp_path_factory.mktemp("fixed_batch")
        fixed = export_onnx(model, d / "b3.onnx", dynamic=False, shape=(H, W), batch=FIXED)
        dynamic = export_onnx(model, d / "dyn.onnx", shape=(H, W))
    finally:
        torch.set_num_threads(n)
    return {"fixed": fixed, "dynamic": dynamic}


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_backend_runs_any_batch_like_one_by_one(exports: dict[str, Path]) -> None:
    fixed = OnnxBackend(exports["fixed"], threads=1)
    dynamic = OnnxBackend(exports["dynamic"], threads=1)
    assert fixed.fixed_batch == FIXED and fixed.layout.max_batch == FIXED
    assert dynamic.fixed_batch is None and "fixed batch 3" in fixed.description
    blob = np.random.default_rng(1).normal(0, 0.6, (7, 3, H, W)).astype(np.float32)
    single = [dynamic.run(blob[i : i + 1]) for i in range(len(blob))]
    for b in (1, 2, 3, 4, 7):
        got = fixed.run(blob[:b])
        assert len(got) == 6
        for level, out in enumerate(got):
            want = np.concatenate([s[level] for s in single[:b]])
            assert out.shape == want.shape
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_onnxruntime_errors_name_file_and_shape(exports: dict[str, Path]) -> None:
    fixed = OnnxBackend(exports["fixed"], threads=1)
    with pytest.raises(
        InputError, match=r"b3\.onnx: onnxruntime cannot run an input of shape"
    ) as e:
        fixed.run(np.zeros((3, 3, H, 2 * W), np.float32))  # not the fixed 64×96
    assert "(3, 3, 64, 192)" in str(e.value) and "\n" not in str(e.value)


def test_detector_groups_passes_by_the_fixed_batch(
    exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = _images(8)
    ref = FaceDetector.from_onnx(exports["dynamic"], protocol=f"{H}x{W}", workers=0)
    want = [ref.predict(im)[0] for im in imgs]
    passes: list[int] = []
    real = OnnxBackend._run_exact

    def counted(self: OnnxBackend, blob: np.ndarray) -> list[np.ndarray]:
        passes.append(blob.shape[0])
        return real(self, blob)

    monkeypatch.setattr(OnnxBackend, "_run_exact", counted)
    for workers in (0, 2):
        det = FaceDetector.from_onnx(exports["fixed"], threads=2, workers=workers, batch_size=8)
        assert det.protocol.size == (H, W)
        passes.clear()
        got = det.predict(imgs)
        # 8 images = 3 passes of 3 (the last one padded), split 2 + 1 between two workers
        assert passes == [FIXED] * 3
        for a, b in zip(got, want):
            assert a.ok and len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert len(det.predict(imgs[:1])) == 1  # fewer images than the batch


def test_detect_and_eval_cli_with_a_fixed_batch_file(
    exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "WIDER_val"
    imgs = _images(4, seed=2)
    gt_images = []
    for i, img in enumerate(imgs):
        name = f"0_E_{i}"
        path = root / "images" / "0--E" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        gt_images.append(
            ("0--E", name, np.array([[10, 10, 20, 20]]), {"easy": [1], "medium": [1], "hard": [1]})
        )
    gt = write_gt_mats(tmp_path / "gt", gt_images)

    argv = ["detect", str(root / "images"), "--json", "--score-thr", "0.3"]
    assert main([*argv, "--onnx", str(exports["fixed"]), "--workers", "2"]) == 0
    fixed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert main([*argv, "--onnx", str(exports["dynamic"]), "--protocol", f"{H}x{W}"]) == 0
    dynamic = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(fixed) == len(dynamic) == 4
    for a, b in zip(fixed, dynamic):
        assert a["path"] == b["path"] and len(a["scores"]) == len(b["scores"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)

    argv = ["eval", str(exports["fixed"]), "--wider-root", str(root), "--gt", str(gt)]
    argv += ["--work-dir", str(tmp_path / "w"), "--no-progress", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["detection"]["detected"] == 4 and summary["backend"] == "onnx"


def test_paths_and_counts_validated(exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory, not an ONNX file"):
        OnnxBackend(tmp_path)
    with pytest.raises(ConfigError, match="threads must be ≥ 0"):
        OnnxBackend(exports["fixed"], threads=-1)
    with pytest.raises(ConfigError, match="workers must be ≥ 0"):
        FaceDetector.from_onnx(exports["fixed"], workers=-1)


def test_to_onnx_needs_a_torch_detector(exports: dict[str, Path]) -> None:
    from damofd.export import export_detector

    with pytest.raises(ConfigError, match="needs a detector on the PyTorch backend"):
        export_detector(FaceDetector.from_onnx(exports["fixed"], workers=0))
