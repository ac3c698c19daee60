"""The command line: --about, python -m cellmesh, exit codes for bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cellmesh._about import ABOUT
from cellmesh.cli import EXIT_OK, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[2]


def test_about_prints_the_attribution_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--about"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out == (ROOT / "ATTRIBUTION").read_text()
    assert "Copyright (c) 2025 Leif Rydenfalk" in out
    assert out == ABOUT


def test_python_m_cellmesh_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cellmesh", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["bench", "wire", "--bogus"],
        ["bench", "raft", "--tick", "-1"],
        ["bench", "raft", "--ops", "0"],
        ["bench", "raft", "--tick", "soon"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr()
    assert (err.out + err.err).strip()  # it said what was wrong
