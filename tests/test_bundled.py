"""The bundled default detector: files intact, loads with no network, finds faces.

The README's first command runs ``damofd detect examples/astronaut.jpg``; ``test_readme_command``
runs the same command path in a subprocess with sockets disabled.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from damofd.models import bundled as bundled_mod
from damofd.models.bundled import DEFAULT_MODEL, WEIGHTS_DIR, bundled_file, get_bundled

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
INDEX = WEIGHTS_DIR / "bundled.json"

pytestmark = pytest.mark.skipif(not INDEX.is_file(), reason=f"no bundled weights ({INDEX})")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup fails: the default model must load and run offline."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_index_lists_default_with_checksums() -> None:
    raw = json.loads(INDEX.read_text())
    assert DEFAULT_MODEL in raw
    for fmt in ("onnx", "pth"):
        f = raw[DEFAULT_MODEL]["files"][fmt]
        data = (WEIGHTS_DIR / f["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f"{f['name']}: sha256 differs"
        assert len(data) == f["bytes"]
        assert len(data) < 3_000_000  # a 0.27 M-parameter model is ~1 MB
    entry = get_bundled(DEFAULT_MODEL)
    assert entry is not None and entry.command.startswith("python benchmarks/train_default.py")
    for key in ("easy", "medium", "hard"):
        assert 0.0 < entry.ap[key] <= 1.0


def test_holdout_list_is_committed_and_disjoint_from_training() -> None:
    names = [x for x in (WEIGHTS_DIR / "holdout_train.txt").read_text().splitlines() if x]
    names = [x for x in names if not x.startswith("#")]
    assert len(names) == 62 and len(set(names)) == 62
    assert all(x.endswith(".jpg") and "--" in x for x in names)


def test_damaged_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from damofd.errors import InputError

    for f in WEIGHTS_DIR.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    onnx = tmp_path / get_bundled(DEFAULT_MODEL).files["onnx"].name
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    monkeypatch.setattr(bundled_mod, "WEIGHTS_DIR", tmp_path)
    bundled_mod._verified.cache_clear()
    with pytest.raises(InputError, match="sha256 differs"):
        bundled_file(DEFAULT_MODEL, "onnx")
    (tmp_path / onnx.name).unlink()
    with pytest.raises(InputError, match="missing"):
        bundled_file(DEFAULT_MODEL, "onnx")


def test_default_detector_offline_finds_the_astronaut(no_network) -> None:
    from damofd.inference import FaceDetector, pipeline

    det = FaceDetector(protocol="original")  # the README's command: the photo at its own size
    assert det.model_label == f"{DEFAULT_MODEL} (bundled)"
    assert hasattr(det.backend, "session")  # onnxruntime by default
    faces = det.detect(str(ASTRONAUT))
    assert len(faces) == 1, faces
    x1, y1, x2, y2 = faces[0].box
    # the face of the 512×512 portrait lies around x 170-250, y 60-160
    assert 140 < (x1 + x2) / 2 < 280 and 50 < (y1 + y2) / 2 < 170, faces[0].box
    assert faces[0].keypoints is not None and len(faces[0].keypoints) == 5

    same = FaceDetector.from_pretrained(DEFAULT_MODEL)
    assert same.model_label == det.model_label
    out = pipeline("face-detection", protocol="original")(str(ASTRONAUT))
    assert len(out["scores"]) >= 1 and max(out["scores"]) >= 0.5


def test_torch_backend_of_bundled_model_matches_onnx(no_network) -> None:
    import numpy as np

    from damofd.inference import FaceDetector

    a = FaceDetector.from_zoo(DEFAULT_MODEL, score_thr=0.05).predict(str(ASTRONAUT))[0]
    b = FaceDetector.from_zoo(DEFAULT_MODEL, backend="torch", score_thr=0.05).predict(
        str(ASTRONAUT)
    )[0]
    assert len(a) == len(b) >= 1
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # sockets disabled in the child too: the command path must not touch the network
    code = (
        "import socket, sys\n"
        "def _refuse(*a, **k): raise OSError('network disabled')\n"
        "socket.socket.connect = socket.socket.connect_ex = _refuse\n"
        "socket.create_connection = socket.getaddrinfo = _refuse\n"
        "from damofd.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_command(tmp_path: Path) -> None:
    """The README's first command: detect the face of the committed sample photo, print it and
    write the annotated image."""
    proc = _run_cli(
        "detect", str(ASTRONAUT), "-v", "--save-vis",
        "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{ASTRONAUT}: 1 face" in proc.stdout
    assert "face 0: box [" in proc.stdout
    assert f"model {DEFAULT_MODEL} (bundled)" in proc.stderr
    assert (tmp_path / "out" / "astronaut.jpg").is_file()
    assert (tmp_path / "out" / "detections.jsonl").is_file()


def test_zoo_marks_bundled_entry() -> None:
    proc = _run_cli("zoo", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    row = next(x for x in proc.stdout.splitlines() if x.startswith(f"{DEFAULT_MODEL} "))
    assert "BUNDLED" in row
    other = next(x for x in proc.stdout.splitlines() if x.startswith("scrfd-34g "))
    assert "BUNDLED" not in other


@pytest.mark.assets
def test_default_finds_the_six_faces_of_t1(assets: Path) -> None:
    """Each of the six faces (boxes of insightface's det_500m, which finds exactly these six)
    is matched at IoU >= 0.5 by a bundled-model detection scoring >= 0.3, and at most three
    detections above 0.3 match none of them. The bundled model scores lower than insightface's
    (it was trained on 1,177 images): at the API's default 0.5 it keeps three of the faces and
    no false positive; between 0.3 and 0.4 it also marks a hand, a picture frame and a metal
    bowl (docs/model-card.md, "Known limits")."""
    from damofd.inference import FaceDetector
    from damofd.ops.numpy_nms import box_iou_numpy

    t1 = assets / "images" / "t1.jpg"
    ref_model = assets / "models" / "scrfd" / "det_500m.onnx"
    if not t1.is_file() or not ref_model.is_file():
        pytest.skip(f"asset missing: {t1} or {ref_model}")
    ref = FaceDetector.from_onnx(ref_model, workers=0).predict(str(t1))[0]
    assert len(ref) == 6
    ours = FaceDetector(score_thr=0.3).predict(str(t1))[0]
    iou = box_iou_numpy(ref.boxes, ours.boxes)
    assert (iou.max(axis=1) >= 0.5).all(), iou.max(axis=1)
    false_positives = int((iou.max(axis=0) < 0.5).sum())
    assert false_positives <= 3, ours.scores  # not a flood of false positives
