"""The command line: --about, python -m cellmesh, exit codes for bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cellmesh._about import ABOUT
from cellmesh.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main, report
from cellmesh.cli._client import RootRefused
from cellmesh.errors import ErrorCode, RemoteCellError

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


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stauts"], 'Unknown command "stauts". Did you mean "status"?'),
        (["lgos", "web"], 'Unknown command "lgos". Did you mean "logs"?'),
        (["graft"], 'Unknown command "graft".'),  # no such command (like swap before it existed)
        (["graft", "--help"], 'Unknown command "graft".'),  # not the top-level help, exit 0
        (["frobnicate", "-h"], 'Unknown command "frobnicate".'),
        (["status", "--jsn"], "Unknown option: --jsn. Did you mean --json?"),
    ],
)
def test_cli_unknown_commands_say_so_in_one_line(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"cellmesh: error: {said}")
    assert err.count("\n") == 1  # one line, no box, no usage dump


def test_cli_without_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Usage: cellmesh COMMAND" in out and "status" in out and "--about" in out


def _remote() -> RemoteCellError:
    return RemoteCellError(
        cell="db", code=ErrorCode.HANDLER_FAILED, type_name="builtins.KeyError",
        message="'k'", remote_traceback="Traceback (most recent call last):\n  boom\n",
    )


def test_cli_remote_errors_are_one_line_and_the_traceback_needs_debug() -> None:
    import io

    err = io.StringIO()
    assert report(_remote(), debug=False, err=err) == EXIT_FAILURE
    assert err.getvalue() == (
        "cellmesh: error: cell 'db' failed the call: builtins.KeyError: 'k'\n"
        "cellmesh: (--debug shows the remote traceback)\n"
    )
    err = io.StringIO()
    report(_remote(), debug=True, err=err)
    assert "remote traceback:\nTraceback (most recent call last):\n  boom" in err.getvalue()
    err = io.StringIO()
    assert report(RootRefused("UnknownCell", "no cell named 'x' (cells: a)"), debug=True,
                  err=err) == EXIT_FAILURE
    assert err.getvalue() == "cellmesh: error: no cell named 'x' (cells: a)\n"


def test_cli_debug_flag_is_taken_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "--version"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "0.1.0"


@pytest.mark.parametrize("address", ["9464", "localhost", "h:99999"])
def test_up_refuses_a_bad_metrics_address_first(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--metrics", address, "-f", "/nonexistent/cellmesh.toml"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(
        "cellmesh: error: --metrics: expected HOST:PORT (e.g. 127.0.0.1:9464)"
    )


def test_cli_ctrl_c_inside_a_trio_run_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A KeyboardInterrupt that crossed nurseries arrives in exception groups (bench
    spawn/swap/replicated/ledger printed a 100-line traceback and exited 1); anything
    else in the group is still a crash."""
    from cellmesh import cli

    def app_raising(exc: BaseException) -> object:
        def app(*args: object, **kwargs: object) -> object:
            raise exc
        return lambda: app

    nested = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [KeyboardInterrupt()])])
    monkeypatch.setattr(cli, "build_app", app_raising(nested))
    assert cli.main(["bench", "swap"]) == 130
    assert capsys.readouterr().err == ""
    mixed = BaseExceptionGroup("outer", [KeyboardInterrupt(), ValueError("a real bug")])
    monkeypatch.setattr(cli, "build_app", app_raising(mixed))
    with pytest.raises(BaseExceptionGroup):
        cli.main(["bench", "swap"])
