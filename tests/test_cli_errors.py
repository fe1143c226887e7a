"""Command-line errors found in a user audit: one line, exit 2, naming the user's path or flag
(never a temporary file, an API argument or a traceback), and raised before the long work."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

import damofd.io
from damofd.cli.main import main
from damofd.errors import InputError
from damofd.io import atomic_write_bytes, atomic_write_text, ensure_writable_file

STRUCT = (
    "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE4K3(32,48,2,32,1)"
    "SuperResIDWE1K3(48,96,2,48,1)SuperResIDWE1K3(96,120,2,96,1)"
)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _deny(*args: object, **kwargs: object) -> None:
    raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/.probe.tmp")


# ----------------------------------------------------------------------------------------------
# damofd.io


def test_atomic_write_errors_name_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(InputError, match=r"cannot write '.*': it is a directory"):
        atomic_write_text(tmp_path, "x")
    target = tmp_path / "sub" / "r.json"
    monkeypatch.setattr(damofd.io.tempfile, "mkstemp", _deny)
    with pytest.raises(InputError) as e:
        atomic_write_text(target, "x")
    assert str(e.value) == f"cannot write {str(target)!r}: permission denied"
    monkeypatch.undo()

    def no_rename(src: str, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", src, dst)

    monkeypatch.setattr(damofd.io.os, "replace", no_rename)
    with pytest.raises(InputError, match=r"r\.json': invalid cross-device link$"):
        atomic_write_bytes(target, b"x")
    assert not target.exists() and os.listdir(target.parent) == []  # no temporary file left


def test_ensure_writable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ensure_writable_file(tmp_path / "new" / "a.json") == tmp_path / "new" / "a.json"
    with pytest.raises(InputError, match=r"--plot '.*' is a directory; give a file path such as "
                       r"'.*pr\.png'"):  # fmt: skip
        ensure_writable_file(tmp_path, "--plot", "pr.png")
    monkeypatch.setattr(damofd.io.tempfile, "mkstemp", _deny)
    with pytest.raises(InputError, match=r"--out '.*a\.json' cannot be written: permission denied"):
        ensure_writable_file(tmp_path / "a.json", "--out")


def test_cli_prints_an_oserror_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import damofd.cli.info

    def full_disk(args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.json")

    monkeypatch.setattr(damofd.cli.info, "model_info", full_disk)
    err = _error(capsys, ["info", "damofd-0.5g"])
    assert err == "damofd info: error: '/data/out.json': no space left on device"

    def api_worded(args: object) -> None:
        e = InputError("use fresh=True")
        e.cli_message = "use --fresh"  # type: ignore[attr-defined]
        raise e

    monkeypatch.setattr(damofd.cli.info, "model_info", api_worded)
    assert _error(capsys, ["info", "damofd-0.5g"]) == "damofd info: error: use --fresh"


# ----------------------------------------------------------------------------------------------
# outputs are checked before the work


def test_eval_wider_checks_outputs_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --pred/--gt do not exist: the output check must come first
    base = ["eval-wider", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]
    err = _error(capsys, [*base, "--out", str(tmp_path)])
    assert f"--out {str(tmp_path)!r} is a directory" in err and "ap.json" in err
    if importlib.util.find_spec("matplotlib") is not None:
        assert "--plot" in _error(capsys, [*base, "--plot", str(tmp_path)])
    monkeypatch.setattr(damofd.io.tempfile, "mkstemp", _deny)
    err = _error(capsys, [*base, "--out", str(tmp_path / "ap.json")])
    assert "cannot be written: permission denied" in err and ".tmp" not in err


def test_export_checks_out_first_and_names_the_cli_syntax(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nosd = tmp_path / "nosd.pth"
    torch.save({"backbone.w": torch.zeros(1)}, nosd)  # no meta: no recorded architecture
    err = _error(capsys, ["export", str(nosd), "--out", str(tmp_path / "j.onnx")])
    assert f"damofd export damofd-10g --weights {nosd}" in err and "name=" not in err
    # not a checkpoint at all (an image renamed .pth): said so, no trust_pickle advice
    jpg = tmp_path / "t1.pth"
    jpg.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    err = _error(capsys, ["export", "damofd-0.5g", "--weights", str(jpg),
                          "--out", str(tmp_path / "e.onnx")])  # fmt: skip
    assert "is not a PyTorch checkpoint (a JPEG image)" in err and "trust" not in err
    monkeypatch.setattr(damofd.io.tempfile, "mkstemp", _deny)
    err = _error(capsys, ["export", "damofd-0.5g", "--random-init", "--out", str(tmp_path / "e")])
    assert "--out" in err and "permission denied" in err


# ----------------------------------------------------------------------------------------------
# damofd info


def test_info_messages(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["info", "SuperConvK3BNRELU(3,32,2,1)"])
    assert "needs at least 5 blocks (stem + 4 stages)" in err and "PAFPN" not in err
    err = _error(capsys, ["info", "damofd-0.5g", "--input", "481x640"])
    assert err == (
        "damofd info: error: --input '481x640': both sides must be multiples of 32 "
        "(height 481 → 480 or 512)"
    )


def test_info_names_the_template_of_a_structure(capsys: pytest.CaptureFixture[str]) -> None:
    from damofd.training.api import resolve_config

    assert main(["info", STRUCT, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the zoo model `damofd train --structure` takes its recipe (neck and head) from
    assert report["template"] == resolve_config(None, structure=STRUCT).model == "damofd-0.5g"
    assert main(["info", STRUCT, "--template", "DamoFD-2.5G"]) == 0
    assert "neck and head from the zoo model damofd-2.5g" in capsys.readouterr().out
    assert main(["info", "damofd-0.5g", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["template"] is None


# ----------------------------------------------------------------------------------------------
# damofd search


def test_search_rejects_an_unusable_device_up_front(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "x"
    argv = ["search", "--preset", "damofd-0.5g", "--proxy", "zen", "--iterations", "2",
            "--out", str(out), "--force", "--no-progress"]  # fmt: skip
    err = _error(capsys, [*argv, "--device", "foo"])
    assert "device 'foo' is not a torch device" in err
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _error(capsys, [*argv, "--device", "cuda"])
    assert not out.exists()  # nothing written: no -9999 "result"
