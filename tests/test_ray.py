"""``damofd detect --engine ray`` and :func:`damofd.engine.ray.detect_dataset` on a local Ray
instance (one per module, 2 CPUs, 200 MB object store) and on a head node started by the test.

The images are a slice of the real WIDER FACE val subset (shared assets, copied to tmp_path) plus
three broken copies: a truncated JPEG, a text file named ``.jpg`` and an empty ``.jpg``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import nullcontext, redirect_stderr
from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from damofd.cli.main import main

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from damofd.engine.ray import (  # noqa: E402  (after the importorskips)
    RESULT_COLUMNS,
    detect_dataset,
    read_results,
    result_schema,
)

ROOT = Path(__file__).resolve().parents[1]
VAL = "widerface/WIDER_val/images"
N_PER_EVENT = 6  # 4 events → 24 real images
BAD = ("bad_truncated.jpg", "bad_text.jpg", "bad_empty.jpg")

pytestmark = pytest.mark.skipif(
    not (ROOT / "damofd" / "weights" / "bundled.json").is_file(), reason="no bundled weights"
)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module: 2 CPUs, no dashboard, a small object store."""
    env_before = os.environ.get("RAY_AUTH_MODE")
    from damofd.engine.ray import restore_signal_handlers, signal_handlers

    handlers = signal_handlers()
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024**2,
            ignore_reinit_error=True,
            logging_level=logging.WARNING,
        )
    yield ray
    if started:
        ray.shutdown()
        restore_signal_handlers(handlers)  # ray.init installs its own
    if env_before is None:  # ray.init enables token auth for this process and its children
        os.environ.pop("RAY_AUTH_MODE", None)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 val images (6 from each of the 4 events) and the 3 broken copies, in one folder."""
    from damofd.testing import assets_dir

    root = assets_dir()
    if root is None or not (root / VAL).is_dir():
        pytest.skip(f"shared assets not found ({VAL}); set DAMOFD_ASSETS")
    d = tmp_path_factory.mktemp("ray_images") / "images"
    d.mkdir()
    events = sorted(p for p in (root / VAL).iterdir() if p.is_dir())
    for ev in events:
        for f in sorted(ev.glob("*.jpg"))[:N_PER_EVENT]:
            shutil.copyfile(f, d / f.name)
    first = sorted(d.glob("*.jpg"))[0].read_bytes()
    (d / BAD[0]).write_bytes(first[: len(first) // 2])
    (d / BAD[1]).write_text("this is not an image\n")
    (d / BAD[2]).write_bytes(b"")
    return d


def _local_records(out: Path) -> dict[str, dict]:
    lines = (out / "detections.jsonl").read_text().splitlines()
    return {r["path"]: r for r in map(json.loads, lines)}


def _assert_same(got: dict[str, dict], want: dict[str, dict]) -> None:
    """Same images, same errors, same faces (boxes and keypoints to 1e-3 px, scores to 1e-5)."""
    assert set(got) == set(want)
    for path, w in want.items():
        g = got[path]
        assert g.get("error") == w.get("error"), path
        assert list(g["image_size"]) == list(w["image_size"]), path
        assert len(g["scores"]) == len(w["scores"]), path
        if w["scores"]:
            np.testing.assert_allclose(g["scores"], w["scores"], atol=1e-5, err_msg=path)
            np.testing.assert_allclose(g["boxes"], w["boxes"], atol=1e-3, err_msg=path)
            np.testing.assert_allclose(g["keypoints"], w["keypoints"], atol=1e-3, err_msg=path)


@pytest.fixture(scope="module")
def local_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Single-process ``damofd detect`` on the folder: the reference records."""
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(["detect", str(images), "--out", str(out), "--no-progress"]) == 1
    return _local_records(out)


@pytest.fixture(scope="module")
def ray_run(ray_local, images: Path, tmp_path_factory: pytest.TempPathFactory):
    """``damofd detect --engine ray --format parquet`` with 2 actors: (out, rc, stderr)."""
    out = tmp_path_factory.mktemp("ray") / "out"
    cmd = ["detect", str(images), "--engine", "ray", "--out", str(out), "--format", "parquet"]
    cmd += ["--num-actors", "2", "--no-progress"]
    err = StringIO()
    with redirect_stderr(err):
        rc = main(cmd)
    return out, rc, err.getvalue()


@pytest.mark.slow
def test_ray_equals_single_process_and_lists_bad_files(ray_run, local_run, images: Path) -> None:
    out, rc, err = ray_run
    assert rc == 1, err  # bad files fail the images, not the job
    rows = pq.read_table(out / "detections").to_pylist()
    got = {r["path"]: r for r in rows}
    assert len(rows) == len(got) == 24 + len(BAD)
    _assert_same(got, local_run)
    bad = {str(images / b) for b in BAD}
    assert {p for p, r in got.items() if r["error"]} == bad
    for b in sorted(bad):
        assert f"damofd detect: skipped {b}: " in err
    faces = sum(len(r["scores"]) for r in local_run.values())
    assert f"damofd detect: 27 images, {faces} faces, 3 failed" in err
    assert "engine ray (2 actors on the running Ray instance)" in err


@pytest.mark.slow
def test_parquet_reads_back_with_the_documented_schema(ray_run) -> None:
    out, _, _ = ray_run
    files = sorted((out / "detections").glob("*.parquet"))
    assert len(files) >= 2  # written per block, not in one piece at the end
    schema = result_schema()
    assert list(schema.names) == list(RESULT_COLUMNS)
    table = pq.read_table(out / "detections")
    assert table.schema.names == schema.names
    for field in schema:
        assert table.schema.field(field.name).type == field.type, field.name
    row = next(r for r in table.to_pylist() if r["scores"])
    assert len(row["boxes"][0]) == 4 and len(row["keypoints"][0]) == 10
    assert row["error"] is None and row["vis"] is None
    assert read_results(out).num_rows == table.num_rows


@pytest.mark.slow
def test_rerun_skips_finished_inputs(ray_run, images: Path, tmp_path: Path) -> None:
    src, _, _ = ray_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    files = sorted((out / "detections").glob("*.parquet"))
    lost = pq.read_table(files[0]).to_pylist()  # as if the job had been killed before this block
    files[0].unlink()
    lost_ok = [r["path"] for r in lost if r["error"] is None]
    cmd = ["detect", str(images), "--engine", "ray", "--out", str(out), "--format", "parquet"]
    cmd += ["--num-actors", "1", "--no-progress"]
    err = StringIO()
    with redirect_stderr(err):
        rc = main(cmd)
    text = err.getvalue()
    assert rc == 1, text
    done = 24 - len(lost_ok)
    assert f"resuming: {done} images already in {out}" in text
    redone = len(lost_ok) + len(BAD)  # failed images are retried, as by the local engine
    assert f"damofd detect: {redone} image{'s' if redone != 1 else ''}, " in text
    assert f"{done} skipped (done earlier)" in text
    ok = [r["path"] for r in read_results(out).to_pylist() if r["error"] is None]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 24


@pytest.mark.slow
def test_python_entry_point_chains_with_a_user_map(ray_local, images: Path, local_run) -> None:
    paths = [*sorted(str(p) for p in images.glob("*.jpg"))[:7], str(images / BAD[1])]
    ds = ray_local.data.from_items([{"path": p, "photo_id": i} for i, p in enumerate(paths)])
    faces = detect_dataset(ds, num_actors=1, batch_size=4)
    counted = faces.map(
        lambda r: {"id": r["photo_id"], "path": r["path"], "n": len(r["scores"]), "err": r["error"]}
    )
    rows = sorted(counted.take_all(), key=lambda r: r["id"])
    assert [r["path"] for r in rows] == paths
    for r in rows:
        want = local_run[r["path"]]
        assert r["n"] == len(want["scores"]) and r["err"] == want.get("error")

    # encoded bytes from Ray's own reader, decoded by damofd's loader inside the actors
    binary = ray_local.data.read_binary_files([str(images / BAD[0]), paths[0]], include_paths=True)
    got = {r["path"]: r for r in detect_dataset(binary, num_actors=1).take_all()}
    assert "bytes" not in next(iter(got.values()))
    assert len(got) == 2
    for path, r in got.items():
        name = Path(path).name
        want = local_run[str(images / name)]
        assert len(r["scores"]) == len(want["scores"])
        assert (r["error"] is None) == ("error" not in want)
        if r["error"]:
            assert name in r["error"] and "not a readable image" in r["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def head_node(ray_local, tmp_path: Path):
    """A Ray head node (1 CPU) started by ``ray start --head --block`` in a subprocess; stopped
    (by its pid, with its child processes) in teardown."""
    ray_bin = shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray command is not on PATH")
    port = _free_port()
    env = dict(os.environ)
    # the local instance of ray_local created the token (~/.ray/auth_token) if there was none
    env.update({"RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    log = open(tmp_path / "head.log", "wb")  # noqa: SIM115  (closed in teardown)
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--num-cpus", "1", "--port", str(port),
         "--include-dashboard=false", "--disable-usage-stats", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {(tmp_path / 'head.log').read_text()[-2000:]}")
            if b"This command will now block" in (tmp_path / "head.log").read_bytes():
                break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head node did not start within 120 s")
        yield f"127.0.0.1:{port}", env
    finally:
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        for pid in children:  # gcs_server, raylet, ... of this head only, if still running
            try:
                if b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        log.close()
        # `ray start` names its cluster the machine's current one: not after the test
        current = Path("/tmp/ray/ray_current_cluster")
        try:
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()
        except OSError:
            pass


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.slow
def test_explicit_ray_address_runs_the_same_code_path(
    head_node, images: Path, local_run, tmp_path: Path
) -> None:
    address, env = head_node
    listed = tmp_path / "inputs.txt"  # a text file of paths as INPUT
    chosen = [*sorted(str(p) for p in images.glob("0_*.jpg"))[:5], str(images / BAD[2])]
    listed.write_text("# five photos and an empty file\n" + "\n".join(chosen) + "\n")
    out = tmp_path / "out"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    # 900 s: a guard against hangs only (a loaded 2-core CI machine once took over 300 s)
    proc = subprocess.run(
        [sys.executable, "-m", "damofd", "detect", str(listed), "--engine", "ray",
         "--ray-address", address, "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"engine ray (1 actor on the Ray cluster at {address}" in proc.stderr
    assert f"damofd detect: skipped {images / BAD[2]}: empty file" in proc.stderr
    # jsonl: the very records of single-process detect, one per line
    lines = [
        json.loads(line)
        for f in sorted((out / "detections").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    got = {r["path"]: r for r in lines}
    assert len(lines) == len(got) == len(chosen)
    _assert_same(got, {p: local_run[p] for p in chosen})
    for r in lines:
        assert list(r) == list(local_run[r["path"]])  # same keys in the same order


def test_cli_errors_need_no_ray_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    img = str(ROOT / "examples" / "astronaut.jpg")
    cases = [
        (["--engine", "ray", "--num-actors", "0"], "expected N (≥ 1) or MIN,MAX"),
        (["--engine", "ray", "--num-actors", "3,1"], "expected N (≥ 1) or MIN,MAX"),
        (["--engine", "ray", "--num-actors", "two"], "expected N (≥ 1) or MIN,MAX"),
        (["--num-actors", "2"], "--num-actors applies to --engine ray only"),
        (["--ray-address", "auto", "--format", "parquet"], "apply to --engine ray only"),
        (["--engine", "ray", "--json"], "--json applies to --engine local only"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) if "expected" in message else nullcontext():
            rc = main(["detect", img, "--out", str(tmp_path / "o"), *extra])
            assert rc == 2
        assert message in capsys.readouterr().err, extra

    table = tmp_path / "photos.csv"
    table.write_text("file,label\na.jpg,1\n")
    assert main(["detect", str(table), "--engine", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{table}: no 'path' column (columns: file, label)" in err
    assert "--path-column" in err

    out = tmp_path / "mixed"
    (out / "detections").mkdir(parents=True)
    (out / "detections" / "part-x-000000.jsonl").write_text("")
    assert main(["detect", img, "--engine", "ray", "--out", str(out), "--format", "parquet"]) == 2
    assert "already holds jsonl results" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["detect", img, "--engine", "ray", "--out", str(tmp_path / "o2")]) == 2
    assert "pip install 'damofd[ray]'" in capsys.readouterr().err


def test_inputs_from_lists_tables_and_patterns(images: Path, tmp_path: Path) -> None:
    from damofd.engine.inputs import expand_inputs

    files = sorted(str(p) for p in images.glob("*.jpg"))[:3]
    (tmp_path / "l.txt").write_text("\n".join(["# comment", *files, ""]))
    (tmp_path / "t.csv").write_text("path,x\n" + "".join(f"{f},1\n" for f in files))
    pq.write_table(pa.table({"img": files}), tmp_path / "t.parquet")
    for spec, kw in (("l.txt", {}), ("t.csv", {}), ("t.parquet", {"path_column": "img"})):
        items = list(expand_inputs([str(tmp_path / spec)], **kw))
        assert [(i.kind, i.source) for i in items] == [("image", f) for f in files], spec
    pattern = str(images / "0_*.jpg")
    got = [i.source for i in expand_inputs([pattern])]
    assert got == sorted(str(p) for p in images.glob("0_*.jpg")) and got
    (nothing,) = expand_inputs([str(images / "zzz*.jpg")])
    assert nothing.kind == "empty" and "matches" in (nothing.note or "")
