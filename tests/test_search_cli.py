"""``damofd score`` / ``cost`` / ``search``: outputs, bad input, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search_helpers import RELEASED, SEEDS

from damofd.cli.main import main
from damofd.search.evolution import STATE_FILE, EvolutionSearch, SearchConfig


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON object
    return json.loads(out[0])


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_score_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = _json(capsys, ["score", RELEASED["0.5g"], "--json"])
    assert abs(d["score"] - 9.335759) < 5e-7
    assert len(d["stages"]) == 5 and all(isinstance(x, float) for x in d["stages"])
    # @file and a plain path (e.g. best_structure.txt) work the same
    f = tmp_path / "best_structure.txt"
    f.write_text(RELEASED["2.5g"] + "\n")
    a = _json(capsys, ["score", f"@{f}", "--json", "--resolution", "640"])
    b = _json(capsys, ["score", str(f), "--json", "--resolution", "640"])
    assert a == b and abs(a["score"] - 13.231554) < 5e-7
    d = _json(capsys, ["score", RELEASED["0.5g"], "--json", "--alpha", "0.25"])
    assert abs(d["score"] - 13.177359) < 5e-7
    for proxy, want in (("flops", 63_135_422), ("params", 380_617)):
        d = _json(capsys, ["score", RELEASED["0.5g"], "--proxy", proxy, "--json"])
        assert d["score"] == want and "stages" not in d
    r1 = _json(capsys, ["score", RELEASED["0.5g"], "--proxy", "random", "--seed", "3", "--json"])
    r2 = _json(capsys, ["score", RELEASED["0.5g"], "--proxy", "random", "--seed", "3", "--json"])
    assert r1 == r2
    assert main(["score", RELEASED["0.5g"]]) == 0
    assert "ddsar = 9.335759" in capsys.readouterr().out


def test_cost_json(capsys: pytest.CaptureFixture[str]) -> None:
    d = _json(capsys, ["cost", RELEASED["34g"], "--json"])
    assert (d["flops"], d["params"], d["layers"]) == (4_147_297_476, 4_839_265, 20)
    d = _json(capsys, ["cost", RELEASED["34g"], "--json", "--resolution", "640"])
    assert d["flops"] == 33_855_489_600
    d = _json(capsys, ["cost", RELEASED["34g"], "--json", "--no-quirks"])
    assert d["params"] == 4_839_265 + 999 and d["options"]["proj_double_stride"] is False


def test_bad_input_messages(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = RELEASED["0.5g"].replace("SuperResIDWE1K7(32,64,2,40,1)", "SuperResIDWE1K7(32,64,2,40)")
    err = _error(capsys, ["score", bad])
    assert "block 2" in err and "SuperResIDWE1K7(32,64,2,40)" in err and "got 4" in err
    err = _error(capsys, ["cost", RELEASED["0.5g"].replace("IDWE1K5", "IDWE3K5")])
    assert "block 4" in err and "unknown block type 'SuperResIDWE3K5'" in err
    err = _error(capsys, ["score", RELEASED["0.5g"].replace("(32,32,2,8,1)", "(32,32,3,8,1)")])
    assert "block 1" in err and "stride must be 1 or 2, got 3" in err
    err = _error(capsys, ["score", RELEASED["0.5g"], "--proxy", "zenn"])
    assert (
        "valid proxies: ddsar, zen, naswot, synflow, gradnorm, tenas, flops, params, random" in err
    )
    err = _error(capsys, ["search", "--preset", "damofd-1g", "--out", str(tmp_path / "x")])
    assert "valid presets: damofd-0.5g, damofd-2.5g, damofd-10g, damofd-34g" in err
    f = tmp_path / "s.txt"
    f.write_text("# my structure\nSuperConvK3BNRELU(3,32,2,1)\nSuperResK3K3(32,32,2,8)\n")
    err = _error(capsys, ["score", str(f)])
    assert str(f) in err and "block 1" in err
    err = _error(capsys, ["score", f"@{tmp_path / 'missing.txt'}"])
    assert "missing.txt" in err and "does not exist" in err


def test_search_cli_outputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["search", "--preset", "damofd-0.5g", "--iterations", "600", "--population", "32"]
    argv += ["--seed", "4", "--top-k", "3", "--out", str(out), "--no-progress", "--json"]
    rep = _json(capsys, argv)
    assert rep["finished"] and rep["iterations_done"] == 600
    best = rep["best"]
    assert best["flops"] <= 65e6 and best["layers"] <= 14 and len(best["stages"]) == 5
    assert len(rep["top_k"]) == 3 and rep["config"]["population"] == 32
    assert rep["config"]["budget_flops"] == 65e6 and rep["config"]["max_layers"] == 14
    assert (out / "best_structure.txt").read_text().strip() == best["structure"]
    assert json.loads((out / "report.json").read_text())["best"] == best
    # the same options again without --resume: refuse to overwrite the saved search
    err = _error(capsys, argv[:-1])
    assert "already holds a search" in err and "--resume" in err
    # --resume with a different option is refused; with --iterations it extends the search
    err = _error(capsys, [*argv[:-1], "--resume", "--seed", "5"])
    assert "seed: saved 4, given 5" in err
    rep2 = _json(capsys, [*argv[:4], "1000", *argv[5:], "--resume"])
    assert rep2["iterations_done"] == 1000 and rep2["accepted"] > rep["accepted"]
    # a faithful search from a custom init (no preset)
    rep3 = _json(
        capsys,
        ["search", "--init", SEEDS["10g"], "--space", "xxbl", "--budget-flops", "1414e6",
         "--max-layers", "20", "--iterations", "300", "--faithful", "--out", str(tmp_path / "f"),
         "--no-progress", "--json"],
    )  # fmt: skip
    assert rep3["config"]["dedup"] is False and rep3["config"]["proposals"] == 1
    assert rep3["stats"]["proposals"] == 300


def test_search_init_over_budget(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "o"
    err = _error(
        capsys,
        ["search", "--init", SEEDS["2.5g"], "--space", "xxbl", "--budget-flops", "345e6",
         "--out", str(out)],
    )  # fmt: skip
    assert "FLOPs@224 380,645,328 > budget 345,000,000 (over by 35,645,328, +10.3%)" in err
    assert not out.exists()  # nothing was started


def test_search_unwritable_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    err = _error(capsys, ["search", "--preset", "damofd-0.5g", "--out", str(f)])
    assert "a_file" in err and "not a directory" in err
    if os.geteuid() != 0:  # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        err = _error(capsys, ["search", "--preset", "damofd-0.5g", "--out", str(ro / "sub")])
        assert "not writable" in err


def _state_iteration(path: Path) -> int:
    try:
        return json.loads(path.read_text())["iteration"]
    except (OSError, ValueError):
        return -1


@pytest.mark.slow
def test_sigkill_then_resume_is_deterministic(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    iters, every = 30_000, 1000
    argv = [sys.executable, "-m", "damofd", "search", "--preset", "damofd-0.5g", "--seed", "7"]
    argv += ["--iterations", str(iters), "--checkpoint-every", str(every), "--out", str(out)]
    argv += ["--no-progress"]
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = out / STATE_FILE
    deadline = time.monotonic() + 120
    seen = -1
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _state_iteration(state)
        if seen >= 3 * every:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"search ended before it could be killed: {proc.communicate()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = _state_iteration(state)
    assert at_kill >= seen >= 3 * every and at_kill < iters
    # at most one checkpoint interval is lost: the state is a checkpoint boundary
    assert at_kill % every == 0
    res = subprocess.run([*argv, "--resume", "--json"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming {str(out)!r} at iteration {at_kill}/{iters}" in res.stderr
    resumed = json.loads(res.stdout)
    log = (out / "search.log").read_text()
    assert f"resumed at iteration {at_kill}" in log
    # an uninterrupted run with the same seed ends with exactly the same result
    cfg = SearchConfig.from_preset("damofd-0.5g", seed=7, iterations=iters)
    full = EvolutionSearch(cfg).run().to_dict()
    for key in ("best", "top_k", "iterations_done", "accepted", "stats", "history"):
        assert resumed[key] == full[key], key


def test_score_torch_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    argv = ["score", RELEASED["0.5g"], "--proxy", "gradnorm", "--resolution", "64"]
    argv += ["--batch-size", "2", "--seed", "0", "--json"]
    a, b = _json(capsys, argv), _json(capsys, argv)
    assert a == b and a["proxy"] == "gradnorm" and a["score"] > 0


def test_score_stage_weights_and_directories(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = RELEASED["0.5g"]
    err = _error(capsys, ["score", s, "--stage-weights", "0.5,0.5"])
    assert "--stage-weights gives 2 weights for a structure of 5 blocks" in err
    err = _error(capsys, ["score", s, "--stage-weights", "0.2,0.27,0.25,0.18,0.1,0.3"])
    assert "gives 6 weights for a structure of 5 blocks" in err
    d = _json(capsys, ["score", s, "--stage-weights", "0.2,0.27,0.25,0.18,0.1", "--json"])
    assert abs(d["score"] - 9.335759) < 5e-7  # the released weights, given explicitly
    err = _error(capsys, ["score", s, "--proxy", "flops", "--stage-weights", "1,1,1,1,1"])
    assert "--stage-weights applies to --proxy ddsar, not flops" in err
    err = _error(capsys, ["score", str(tmp_path)])
    assert f"{str(tmp_path)!r} is a directory" in err and "best_structure.txt" in err
    err = _error(capsys, ["score", f"@{tmp_path}"])
    assert "is a directory, not a structure file" in err
