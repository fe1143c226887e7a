"""``damofd eval`` end to end on the real WIDER val subset (358 images, 4 events).

* the official SCRFD-500M-KPS ONNX file with the insightface protocol reproduces what the
  official wrapper + the reference evaluator give: 0.9369 / 0.9152 / 0.7093;
* the default ``vga`` protocol is not worse than that by more than 0.005 on any setting;
* the prediction files are the reference layout and ``eval-wider`` on them gives the same APs;
* resumability: deleted, truncated and interrupted files are recomputed, complete ones are kept
  untouched; other settings are refused unless ``fresh``;
* zoo name + weights (torch backend, and exported to ONNX on the fly) and a ``.pth`` checkpoint.

One full detection pass per protocol; every other check reuses those files or runs on a few
images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from damofd.cli.main import main
from damofd.engine.wider_eval import (
    find_ground_truth,
    format_prediction_txt,
    list_wider_images,
    parse_prediction_txt,
    run_wider_eval,
)
from damofd.errors import InputError
from damofd.evaluation import evaluate_wider
from damofd.inference import FaceDetector
from tests.conftest import require_asset

OFFICIAL_AP = {"easy": 0.9369, "medium": 0.9152, "hard": 0.7093}  # official wrapper + reference
AP_TOL = 0.002
VGA_SLACK = 0.005
N_IMAGES = 358


@pytest.fixture(scope="module")
def wider(assets: Path) -> dict[str, Path]:
    return {
        "root": require_asset(assets, "widerface/WIDER_val"),
        "gt": require_asset(assets, "widerface/ground_truth"),
        "onnx": require_asset(assets, "models/scrfd/det_500m.onnx"),
    }


@pytest.fixture(scope="module")
def insightface_run(
    wider: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    """The brief's command, run through the CLI from a scratch cwd (default work dir)."""
    cwd = tmp_path_factory.mktemp("eval_cwd")
    argv = [
        "eval",
        str(wider["onnx"]),
        "--wider-root",
        str(wider["root"]),
        "--gt",
        str(wider["gt"]),
        "--protocol",
        "insightface",
        "--score-thr",
        "0.02",
        "--subset",
        "--json",
    ]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(cwd)
        assert main(argv) == 0
    summary = json.loads(out.getvalue())
    return summary, cwd / "runs" / "eval" / "det_500m-insightface"


def test_insightface_protocol_reproduces_official_ap(insightface_run: tuple[dict, Path]) -> None:
    summary, wd = insightface_run
    for s, want in OFFICIAL_AP.items():
        assert abs(summary[s] - want) <= AP_TOL, (s, summary[s], want)
    assert summary["images"] == N_IMAGES and summary["subset"] is True
    det = summary["detection"]
    assert det["detected"] == N_IMAGES and det["reused"] == 0 and det["images_per_s"] > 0
    assert summary["protocol"] == "insightface" and summary["nms_thr"] == 0.4
    assert summary["backend"] == "onnx" and Path(summary["work_dir"]).resolve() == wd.resolve()
    # the reference file layout, one file per image, and results.json next to them
    files = sorted(wd.glob("*/*.txt"))
    assert len(files) == N_IMAGES
    lines = files[0].read_text().splitlines()
    assert lines[0] == f"{files[0].parent.name}/{files[0].stem}.jpg"
    assert int(lines[1]) == len(lines) - 2 > 0
    assert json.loads((wd / "results.json").read_text())["hard"] == summary["hard"]


def test_vga_protocol_not_worse_and_files_evaluate_the_same(
    wider: dict[str, Path], insightface_run: tuple[dict, Path], tmp_path: Path
) -> None:
    official, _ = insightface_run
    run = run_wider_eval(wider["onnx"], wider["root"], subset=True, work_dir=tmp_path, threads=2)
    assert run.settings["protocol"] == "vga" and run.settings["nms_thr"] == 0.45
    assert run.gt.resolve() == wider["gt"].resolve()  # found next to WIDER_val
    assert run.images == len(run.detected) == N_IMAGES
    for s in OFFICIAL_AP:
        got = run.result.aps[s]
        assert got >= OFFICIAL_AP[s] - VGA_SLACK and got >= official[s] - VGA_SLACK, (s, got)
    # `damofd eval-wider --pred <work dir>` sees exactly what `damofd eval` evaluated
    again = evaluate_wider(tmp_path, wider["gt"], subset=True)
    assert again.aps == run.result.aps


def test_by_size_reads_the_runs_files(
    wider: dict[str, Path], insightface_run: tuple[dict, Path], capsys
) -> None:
    """``damofd eval --by-size`` on a finished run: every file reused, recall per face size as
    ``recall_by_size`` gives it on the work dir, and recall grows with the face size."""
    from damofd.evaluation import recall_by_size

    _, wd = insightface_run
    argv = ["eval", str(wider["onnx"]), "--wider-root", str(wider["root"]), "--gt",
            str(wider["gt"]), "--protocol", "insightface", "--subset", "--work-dir", str(wd),
            "--by-size"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["detection"]["reused"] == N_IMAGES
    want = recall_by_size(wd, wider["gt"], subset=True, allow_inverted=True).to_dict()
    assert got["by_size"] == want and want["images"] == N_IMAGES
    rec = [b["recall"] for b in want["bins"] if b["faces"] >= 50]
    assert rec[0] < 0.2 < 0.8 < rec[-1], rec
    assert main(argv) == 0
    assert "hard faces by size" in capsys.readouterr().out


def test_resume_recomputes_only_missing_and_incomplete_files(
    wider: dict[str, Path], insightface_run: tuple[dict, Path]
) -> None:
    summary, wd = insightface_run
    files = sorted(wd.glob("*/*.txt"))
    deleted, truncated = files[3], files[200]
    original = {p: p.read_bytes() for p in (deleted, truncated)}
    deleted.unlink()
    data = original[truncated]
    truncated.write_bytes(data[: len(data) // 2])  # cut mid-row, as a crash of another tool
    stale = deleted.parent / f".{deleted.name}.abc123.tmp"  # left by a SIGKILL
    stale.write_text("partial")
    untouched = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files if p not in original}

    run = run_wider_eval(
        wider["onnx"],
        wider["root"],
        wider["gt"],
        protocol="insightface",
        subset=True,
        work_dir=wd,
        threads=2,
    )
    key = lambda p: f"{p.parent.name}/{p.stem}"  # noqa: E731
    assert sorted(run.detected) == sorted(key(p) for p in original)
    assert len(run.reused) == N_IMAGES - 2
    for p, (mtime, ino) in untouched.items():
        assert (p.stat().st_mtime_ns, p.stat().st_ino) == (mtime, ino), p
    for p, data in original.items():
        assert p.read_bytes() == data  # recomputed identically
    assert not stale.exists()
    assert run.result.aps == {s: summary[s] for s in ("easy", "medium", "hard")}


def test_interrupted_run_resumes(
    wider: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FaceDetector.iter_predict

    def dies_after_three(self: FaceDetector, inputs: object, **kw: object) -> object:
        for i, r in enumerate(original(self, inputs, **kw)):
            if i == 3:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(FaceDetector, "iter_predict", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_wider_eval(wider["onnx"], wider["root"], work_dir=tmp_path, limit=6, batch_size=2)
    monkeypatch.setattr(FaceDetector, "iter_predict", original)
    written = sorted(tmp_path.glob("*/*.txt"))
    assert len(written) == 3
    assert all(parse_prediction_txt(p.read_bytes(), p.stem) is not None for p in written)
    assert not list(tmp_path.rglob("*.tmp"))

    run = run_wider_eval(wider["onnx"], wider["root"], work_dir=tmp_path, limit=6, batch_size=2)
    assert len(run.reused) == 3 and len(run.detected) == 3 and run.result.subset
    assert {f"{p.parent.name}/{p.stem}" for p in written} == set(run.reused)

    with pytest.raises(InputError, match="other settings"):
        run_wider_eval(wider["onnx"], wider["root"], work_dir=tmp_path, limit=6, score_thr=0.3)
    fresh = run_wider_eval(
        wider["onnx"], wider["root"], work_dir=tmp_path, limit=6, score_thr=0.3, fresh=True
    )
    assert len(fresh.detected) == 6 and not fresh.reused
    rows = parse_prediction_txt(written[0].read_bytes(), written[0].stem)
    assert rows is not None and (rows[:, 4] > 0.3).all()


def test_zoo_name_checkpoint_and_onnx_backend(wider: dict[str, Path], tmp_path: Path) -> None:
    """The same weights as a zoo model (torch), exported on the fly (onnx) and as a .pth."""
    from damofd.models import save_checkpoint
    from damofd.models.onnx_import import import_scrfd_onnx

    common = {"limit": 2, "protocol": "vga", "batch_size": 2}
    ref = run_wider_eval(wider["onnx"], wider["root"], work_dir=tmp_path / "ref", **common)
    torch_run = run_wider_eval(
        "scrfd-500m-kps",
        wider["root"],
        weights=wider["onnx"],
        work_dir=tmp_path / "torch",
        **common,
    )
    onnx_run = run_wider_eval(
        "scrfd-500m-kps",
        wider["root"],
        weights=wider["onnx"],
        backend="onnx",
        work_dir=tmp_path / "onnx",
        **common,
    )
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    assert torch_run.settings["backend"] == "torch" and onnx_run.settings["backend"] == "onnx"
    ckpt = save_checkpoint(import_scrfd_onnx(wider["onnx"]), tmp_path / "m.pth")
    ckpt_run = run_wider_eval(ckpt, wider["root"], work_dir=tmp_path / "ckpt", **common)
    # a FaceDetector: its sessions are reused with the run's settings, the object is untouched
    mine = FaceDetector.from_onnx(wider["onnx"], protocol="insightface", score_thr=0.5)
    det_run = run_wider_eval(mine, wider["root"], work_dir=tmp_path / "det", **common)
    assert mine.protocol.name == "insightface" and mine.score_thr == 0.5
    assert det_run.settings["protocol"] == "vga" and det_run.settings["score_thr"] == 0.02
    assert det_run.result.aps == ref.result.aps
    for other in (torch_run, onnx_run, ckpt_run):
        assert other.detected == ref.detected
        for key in ref.detected:
            ev, name = key.split("/")
            a = parse_prediction_txt((ref.work_dir / ev / f"{name}.txt").read_bytes(), name)
            b = parse_prediction_txt((other.work_dir / ev / f"{name}.txt").read_bytes(), name)
            assert a is not None and b is not None
            # same faces; near-threshold boxes may flip, so compare the confident ones
            sa, sb = a[a[:, 4] > 0.3], b[b[:, 4] > 0.3]
            assert len(sa) == len(sb) > 0, key
            np.testing.assert_allclose(sa, sb, atol=2e-2)
        for s in ("easy", "medium", "hard"):
            assert abs(other.result.aps[s] - ref.result.aps[s]) < 2e-3


def test_prediction_txt_round_trip_and_damage() -> None:
    boxes = np.array([[10.5, 20.25, 30.0, 60.125], [1, 2, 3, 4]], np.float32)
    scores = np.array([0.987654321, 0.02], np.float32)
    text = format_prediction_txt("0--Parade", "0_Parade_x_1.jpg", boxes, scores)
    assert text.splitlines()[:3] == [
        "0--Parade/0_Parade_x_1.jpg",
        "2",
        "10.50000 20.25000 19.50000 39.87500 0.987654",
    ]
    rows = parse_prediction_txt(text.encode(), "0_Parade_x_1")
    assert rows is not None and rows.shape == (2, 5)
    assert parse_prediction_txt(text.encode(), "other") is None
    for cut in (len(text) - 1, len(text) - 5, text.index("\n") + 1):
        assert parse_prediction_txt(text[:cut].encode(), "0_Parade_x_1") is None
    empty = format_prediction_txt("e", "a.jpg", np.zeros((0, 4)), np.zeros(0))
    assert empty == "e/a.jpg\n0\n"
    assert parse_prediction_txt(empty.encode(), "a").shape == (0, 5)


def test_input_errors(
    wider: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "WIDER_val"
    img = root / "images" / "0--Parade" / "0_Parade_marchingband_1_465.jpg"
    img.parent.mkdir(parents=True)
    cv2.imwrite(str(img), np.full((64, 96, 3), 127, np.uint8))
    assert [im.key for im in list_wider_images(root)] == ["0--Parade/0_Parade_marchingband_1_465"]
    with pytest.raises(InputError, match="--gt"):
        find_ground_truth(root)
    (root / "gt").symlink_to(wider["gt"], target_is_directory=True)
    assert find_ground_truth(root) == root / "gt"
    # strict mode refuses before any detection: 3,225 ground-truth images are missing
    with pytest.raises(InputError, match="--subset"):
        run_wider_eval(wider["onnx"], root, work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()
    (img.parent / "not_a_wider_image.jpg").write_bytes(img.read_bytes())
    with pytest.raises(InputError, match="not in the ground truth"):
        run_wider_eval(wider["onnx"], root, subset=True, work_dir=tmp_path / "w")
    os.unlink(img.parent / "not_a_wider_image.jpg")
    bad = ["eval", str(wider["onnx"]), "--wider-root", str(tmp_path / "nope")]
    assert main(bad) == 2
    assert "is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert main(["eval", str(wider["onnx"]), "--wider-root", str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err
