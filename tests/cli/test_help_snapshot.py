"""Every command's `--help`, compared exactly with the checked-in snapshot (help_snapshot.txt):
a flag renamed, dropped or reworded shows up in review. After a deliberate change, regenerate it
with `LIVESTATS_UPDATE_SNAPSHOT=1 pytest tests/cli/test_help_snapshot.py` and commit the diff."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from livestats_cli.main import _parser

SNAPSHOT = Path(__file__).parent / "help_snapshot.txt"
COMMANDS = (
    "", "up", "worker", "gateway", "submit", "status", "events", "cancel", "runs", "tail", "watch",
    "token", "report", "export", "replay", "keys", "migrate",
)  # fmt: skip


def help_text(command: str) -> str:
    """What `livestats [COMMAND] --help` prints (the parser's own help, built in-process)."""
    parser = _parser()
    if command:
        (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = choices[command]
    return f"$ livestats {command + ' ' if command else ''}--help\n{parser.format_help()}"


def test_every_commands_help_matches_the_snapshot(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width, which differs per machine
    current = "\n".join(help_text(command) for command in COMMANDS)
    if os.environ.get("LIVESTATS_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current)
        pytest.skip(f"snapshot written to {SNAPSHOT}")
    assert SNAPSHOT.exists(), f"no snapshot yet: run with LIVESTATS_UPDATE_SNAPSHOT=1 to write {SNAPSHOT}"
    assert current == SNAPSHOT.read_text(), (
        "a command's --help changed; if on purpose, regenerate with LIVESTATS_UPDATE_SNAPSHOT=1"
    )


def test_the_in_process_help_is_what_the_command_prints(monkeypatch):
    """Positive control: the snapshot's text is what a user sees from the real program."""
    monkeypatch.setenv("COLUMNS", "100")
    result = subprocess.run(
        [sys.executable, "-m", "livestats_cli", "runs", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == help_text("runs").split("\n", 1)[1]
