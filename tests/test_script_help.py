"""Every argparse script in scripts/ and bench/ answers --help (and each subcommand's --help) with its usage.

A help string with a bare ``%`` makes argparse crash on --help, which is the first thing a new user runs.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    path for folder in ("scripts", "bench") for path in (ROOT / folder).glob("*.py") if "argparse" in path.read_text()
)
SUBCOMMANDS = {"peer_reference.py": ["train", "compare", "frontier"]}
INVOCATIONS = [
    pytest.param(path, words, id=" ".join([f"{path.parent.name}/{path.name}", *words]))
    for path in SCRIPTS
    for words in [[], *([sub] for sub in SUBCOMMANDS.get(path.name, []))]
]


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 15
    assert any(path.name == "peer_reference.py" for path in SCRIPTS)


@pytest.mark.parametrize(("path", "words"), INVOCATIONS)
def test_script_help_exits_cleanly(
    path: Path, words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [str(path), *words, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
