"""``cellmesh swap`` and ``reload``: the pure rendering, and the commands as a user runs them."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellmesh.actors.control import SwapReport
from cellmesh.cli._swap import report_lines, summary_line

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "actors"))
from swapcells import source  # noqa: E402
from test_daemon import cellmesh  # noqa: E402  (one way to run the command line)

A, B = "a" * 64, "b" * 64


def _report(outcome: str, **kw: Any) -> SwapReport:
    fields: dict[str, Any] = {
        "name": "counter", "outcome": outcome, "cause": "", "from_dna": A, "to_dna": B,
        "from_version": "1", "to_version": "2", "serving_ms": 187.4, "total_ms": 1300.0,
        "state_bytes": 15, "log_tail": [], "timeline": {},
    }
    fields.update(kw)
    return SwapReport(**fields)


# ------------------------------------------------------------------ rendering


def test_swap_report_lines_are_printable_whatever_the_new_version_wrote() -> None:
    """Attack: the new version's exception message and last output lines reached
    the operator's terminal raw (a title change, a screen clear)."""
    evil = "bad \x1b]0;PWNED\x07\x1b[2J"
    lines = report_lines(_report("rolled_back", cause=f"ValueError: {evil}",
                                 log_tail=[f"out {evil}", "\x9b31m"]))
    assert all(line.isprintable() for line in lines), lines
    assert "swap of counter rolled back: ValueError: bad ?]0;PWNED??[2J" in lines
    assert "  | out bad ?]0;PWNED??[2J" in lines and "  | ?31m" in lines


def test_the_root_keeps_a_replicas_last_line_and_a_swaps_cause_printable() -> None:
    from cellmesh.actors._cells import ReplicaPart
    from cellmesh.actors.exitcause import clean

    part = ReplicaPart.__new__(ReplicaPart)
    part.last_line = ""
    part.note_line(b"\x1b]0;PWNED\x07\x1b[2J\x1b[31mEVIL\n")
    assert part.last_line == "?]0;PWNED??[2J?[31mEVIL"
    assert clean("Traceback:\n  \x1b[2J\nValueError: x", 2000, keep_newlines=True) == (
        "Traceback:\n  ?[2J\nValueError: x")  # lines kept, escapes not


def test_swap_report_lines_for_each_outcome() -> None:
    assert report_lines(_report("swapped")) == [
        "swapped counter: DNA aaaaaaaaaaaa -> bbbbbbbbbbbb, version 1 -> 2; serving after "
        "187 ms (state of 15 bytes handed over)"
    ]
    assert report_lines(_report("unchanged", to_dna=A)) == [
        "counter: DNA unchanged (aaaaaaaaaaaa): nothing to do"
    ]
    assert report_lines(_report("retargeted", to_version="")) == [
        "counter is not running: its next start runs DNA bbbbbbbbbbbb (was aaaaaaaaaaaa)"
    ]
    lines = report_lines(_report(
        "rolled_back", cause="the new version failed in the import: ImportError: nope",
        serving_ms=None, log_tail=["Traceback (most recent call last):", "ImportError: nope"],
    ))
    assert lines == [
        "swap of counter rolled back: the new version failed in the import: ImportError: nope",
        "counter still runs DNA aaaaaaaaaaaa (version 1), with its state",
        "the new version's last output:",
        "  | Traceback (most recent call last):",
        "  | ImportError: nope",
        "see `cellmesh logs counter`",
    ]


def test_a_failed_swap_shows_one_line_of_cause_and_the_last_lines_of_output() -> None:
    tail = [f"line {i}" for i in range(20)]
    lines = report_lines(_report(
        "rolled_back", cause="Traceback (most recent call last):\n  File x\nValueError: no",
        serving_ms=None, log_tail=tail,
    ))
    assert lines[0] == (
        "swap of counter rolled back: Traceback (most recent call last): [...] ValueError: no "
        "(its output: `cellmesh logs counter`)"
    )
    assert lines[3:] == [f"  | line {i}" for i in range(14, 20)] + ["see `cellmesh logs counter`"]


def test_swap_report_lines_of_a_replicated_cell_name_each_replica() -> None:
    report = _report("swapped", name="bank", state_bytes=None, serving_ms=2061.0,
                     timeline={"bank/1": 584.0, "bank/2": 1358.6, "bank/0": 2060.8})
    assert report_lines(report) == [
        "swapped bank: DNA aaaaaaaaaaaa -> bbbbbbbbbbbb, version 1 -> 2; one replica at a "
        "time, caught up at: bank/1 584 ms, bank/2 1359 ms, bank/0 2061 ms"
    ]


def test_swap_summary_counts_outcomes() -> None:
    reports = [_report("swapped"), _report("unchanged"), _report("unchanged"),
               _report("rolled_back")]
    assert summary_line(reports) == "4 cells: 1 swapped, 2 unchanged, 1 rolled back"
    assert summary_line([]) == "0 cells: nothing to do"


# ------------------------------------------------------------------ the commands

MANIFEST = '[cells.counter]\ndna = "counter.py"\n\n[cells.other]\ndna = "other.py"\n'


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cw-", dir="/tmp"))
    (path / "counter.py").write_text(source("a"))
    (path / "other.py").write_text(source("x"))
    (path / "cellmesh.toml").write_text(MANIFEST)
    yield path
    cellmesh(path, "down", "--timeout", "2")
    shutil.rmtree(path, ignore_errors=True)


def test_swap_and_reload_commands_as_a_user_runs_them(home: Path) -> None:
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr

    same = cellmesh(home, "swap", "counter")
    assert same.returncode == 0, same.stderr
    assert "counter: DNA unchanged" in same.stdout and "nothing to do" in same.stdout

    (home / "counter.py").write_text(source("b"))
    done = cellmesh(home, "swap", "counter", "--grace", "0.1")
    assert done.returncode == 0, done.stderr
    assert "swapped counter: DNA " in done.stdout and "version a -> b" in done.stdout

    status = json.loads(cellmesh(home, "status", "--json").stdout)
    row = next(c for c in status["cells"] if c["name"] == "counter")
    assert (row["version"], row["swap"], len(row["dna"])) == ("b", None, 12)
    table = cellmesh(home, "status").stdout
    assert "VERSION" in table.splitlines()[1] and " b " in table

    (home / "counter.py").write_text(source("c", "bad_in"))
    bad = cellmesh(home, "swap", "counter", "--grace", "0.1")
    assert bad.returncode == 1
    assert "error: swap of counter rolled back" in bad.stderr
    assert "ValueError: cannot take the state of version b" in bad.stderr
    assert "counter still runs DNA" in bad.stderr and "version b" in bad.stderr

    (home / "counter.py").write_text(source("c"))
    (home / "other.py").write_text(source("y"))
    every = cellmesh(home, "swap", "--all", "--grace", "0.1")
    assert every.returncode == 0, every.stderr
    assert "swapped counter" in every.stdout and "swapped other" in every.stdout
    assert "2 cells: 2 swapped" in every.stdout

    back = cellmesh(home, "swap", "counter", "--rollback", "--grace", "0.1")
    assert back.returncode == 0 and "version c -> b" in back.stdout, back.stderr

    logs = cellmesh(home, "logs", "counter").stdout
    assert "event swapped" in logs and "event swap_rolled_back" in logs
    # The log says which process serves: the first one reported ready, each swap
    # names the process it handed over to, and that is the one status shows.
    assert "event ready pid=" in logs
    events = [json.loads(line) for line in
              cellmesh(home, "logs", "counter", "--json").stdout.splitlines()]
    serving = [e["event"]["pid"] for e in events
               if e["stream"] == "event" and e["event"]["event"] in ("ready", "swapped")]
    status = json.loads(cellmesh(home, "status", "--json").stdout)
    assert serving[-1] == next(c["pid"] for c in status["cells"] if c["name"] == "counter")

    (home / "cellmesh.toml").write_text(MANIFEST.replace('[cells.other]\ndna = "other.py"\n', ""))
    reload = cellmesh(home, "reload")
    assert reload.returncode == 0, reload.stderr
    assert "cellmesh: stopped other (removed from the manifest)" in reload.stdout

    usage = cellmesh(home, "swap")
    assert usage.returncode == 2 and "give one cell NAME or --all" in usage.stderr
    for option, value in (("--grace", "inf"), ("--grace", "nan"), ("--grace", "-1"),
                          ("--timeout", "inf"), ("--timeout", "7200")):
        refused = cellmesh(home, "swap", "counter", option, value)
        assert refused.returncode == 2 and f"{option}: must" in refused.stderr, refused.stderr
    unknown = cellmesh(home, "swap", "ghost")
    assert unknown.returncode == 1 and "no cell named 'ghost' (cells: counter)" in unknown.stderr


def test_swap_of_one_replica_reaches_the_root_which_explains_to_swap_the_group(
    tmp_path: Path,
) -> None:
    """`cellmesh swap bank/1` is not a bad name: the root refuses it saying to swap the
    group (tests/actors/test_swap_replicated.py checks that refusal). Here no root runs,
    so the command gets as far as looking for one; a malformed group still is a bad NAME."""
    replica = cellmesh(tmp_path, "swap", "bank/1")
    assert replica.returncode == 1 and "no root is running" in replica.stderr, replica.stderr
    bad = cellmesh(tmp_path, "swap", "ba d/1")
    assert bad.returncode == 2 and "NAME: 'ba d' is not a valid cell name" in bad.stderr


def test_a_swap_that_failed_before_any_process_ran_does_not_point_at_the_logs() -> None:
    """The new DNA did not build: no process ran, the logs hold nothing about it, and the
    cause (one line naming the user's file) says it all."""
    lines = report_lines(_report(
        "failed", serving_ms=None, timeline={"preparing": 3.0},
        cause="counter.py: does not compile: SyntaxError at line 11, column 12: invalid "
              "syntax: 'def broken(:'\n(second line)",
    ))
    assert lines == [
        "swap of counter failed: counter.py: does not compile: SyntaxError at line 11, "
        "column 12: invalid syntax: 'def broken(:' [...] (second line)",
    ]


def test_swap_all_reports_every_cell_when_the_root_refuses_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refusal for one cell (a swap of it already runs) used to end `swap --all` with
    that one error: the cells swapped before it were not reported, the ones after it
    not tried."""
    import io
    from types import SimpleNamespace

    import cellmesh.cli._swap as swap_cli
    from cellmesh.cli._client import RootRefused

    cells = [SimpleNamespace(name=n, replica=None) for n in ("a", "busy", "c")]

    async def fetch_status(paths: object) -> object:
        return SimpleNamespace(cells=cells)

    asked: list[str] = []

    async def control_call(paths: object, msg: Any) -> SwapReport:
        asked.append(msg.name)
        if msg.name == "busy":
            raise RootRefused("RootRequestError", "busy: a swap of this cell is already in "
                              "progress")
        return _report("swapped", name=msg.name)

    monkeypatch.setattr(swap_cli, "fetch_status", fetch_status)
    monkeypatch.setattr(swap_cli, "control_call", control_call)
    out, err = io.StringIO(), io.StringIO()
    rc = swap_cli.run_swap(None, all_cells=True, timeout=5.0, grace=1.0, rollback=False,
                           out=out, err=err)
    assert rc == 1 and asked == ["a", "busy", "c"]
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("cellmesh: swapped a: ")
    assert printed[1].startswith("cellmesh: swapped c: ")
    assert printed[2] == "cellmesh: 3 cells: 2 swapped, 1 failed"
    assert err.getvalue() == ("cellmesh: error: swap of busy failed: refused: busy: a swap of "
                              "this cell is already in progress\n")
