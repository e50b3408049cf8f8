"""The obpipe command line: every subcommand parses in one place, and bad days are refused before anything is read or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli


@pytest.mark.parametrize("bad", ["20260302", "2026-W10-1", "2026-02-30", "yesterday"])
def test_finalize_refuses_other_day_forms(bad: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        # Nothing listens here: a command that got past the day would fail differently.
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "finalize", bad],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "YYYY-MM-DD" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as stop:
            cli.main([name, "--help"])
        assert stop.value.code == 0
        assert f"obpipe {name}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["nonsense"],
        ["tickers", "add"],
        ["tickers", "list", "BBCA"],
        ["run", "--writers", "0"],
        ["web", "--port", "70000"],
        ["simulate", "--rate", "-1"],
    ):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2, argv
    assert "needs at least one CODE" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


@pytest.mark.parametrize("package", ["ingestor", "writer", "web", "simulator", "jobs"])
def test_python_dash_m_is_the_same_program(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", package, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: obpipe ")
