"""Every verb's ``--help`` ends with one to three runnable examples."""

from __future__ import annotations

import pytest

from damofd.cli.main import VERBS, main


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_ends_with_examples(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    tail = out[out.rindex("examples:") :].splitlines()[1:]
    commands = [x.strip() for x in tail if x.strip()]
    assert 1 <= len(commands) <= 3, out
    assert all(c.startswith(("damofd ", "torchrun ")) for c in commands), commands
