"""``cellmesh status``, ``top``, ``logs``: a fake root (a real membrane) and log fixtures."""

from __future__ import annotations

import io
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import cyclopts
import pytest
import trio
from rich.console import Console

import cellmesh.cli
from cellmesh import open_membrane
from cellmesh.actors.control import (
    CellStatus,
    GroupStatus,
    ReplicaInfo,
    RestartRecord,
    StatusReply,
    StatusRequest,
)
from cellmesh.actors.logs import RotatingLog, stamp
from cellmesh.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, _fmt, _ops, main
from cellmesh.cli._ops import last_exits, rates, status_json, status_table, top_frame


def _cell(name: str, **kw: Any) -> CellStatus:
    fields: dict[str, Any] = {
        "name": name, "supervisor": "root", "state": "running", "pid": 100, "restarts": 0,
        "uptime": 65.0, "msgs_in": 1000, "msgs_out": 990, "rss": 24 * 1024 * 1024,
        "cpu_percent": 1.5, "rtt_p50_us": 85.0, "rtt_p99_us": 1250.0, "backend": "host",
        "dna": "3f2a9c0d1b7e",
    }
    fields.update(kw)
    return CellStatus(**fields)


def _reply(*cells: CellStatus, log: tuple[RestartRecord, ...] = ()) -> StatusReply:
    return StatusReply(root_pid=42, uptime=3725.0, manifest="/srv/mesh.toml",
                       cells=list(cells), restart_log=list(log))


CANNED = _reply(
    _cell("db", supervisor="root/store", pid=101, restarts=2, version="1.2"),
    _cell("web", pid=None, state="stopped", uptime=None, rss=None, cpu_percent=None,
          rtt_p50_us=None, rtt_p99_us=None, msgs_in=0, msgs_out=0),
    log=(RestartRecord(at=1_795_246_801.0, cell="db", reason="exited code=1"),
         RestartRecord(at=1_795_246_901.0, cell="db", reason="killed")),
)


# ---------------------------------------------------------------- pure parts


def _text(renderable: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, no_color=True).print(renderable)
    return buf.getvalue()


def test_rates_are_the_counter_delta_over_elapsed() -> None:
    prev = _reply(_cell("a", msgs_in=100, msgs_out=50))
    cur = _reply(_cell("a", msgs_in=300, msgs_out=150))
    r = rates(prev, cur, 2.0)["a"]
    assert (r.msgs_in_per_s, r.msgs_out_per_s, r.restarted) == (100.0, 50.0, False)


@pytest.mark.parametrize(
    "cur_kw",
    [
        {"pid": 200, "msgs_in": 30, "msgs_out": 10},  # new process, new pid
        {"restarts": 1, "msgs_in": 30, "msgs_out": 10},  # restarted (same pid number)
        {"msgs_in": 30, "msgs_out": 10},  # counters went down: reset
    ],
)
def test_rates_after_a_restart_count_from_zero_and_are_never_negative(
    cur_kw: dict[str, Any],
) -> None:
    prev = _reply(_cell("a", msgs_in=5000, msgs_out=5000))
    r = rates(prev, _reply(_cell("a", **cur_kw)), 10.0)["a"]
    assert r.restarted
    assert (r.msgs_in_per_s, r.msgs_out_per_s) == (3.0, 1.0)


def test_rates_are_unknown_without_a_baseline() -> None:
    prev = _reply(_cell("a"))
    cur = _reply(_cell("a"), _cell("new"), _cell("down", pid=None, state="stopped"))
    got = rates(prev, cur, 1.0)
    assert got["new"].msgs_in_per_s is None
    assert got["down"].msgs_in_per_s is None
    assert rates(prev, cur, 0.0)["a"].msgs_in_per_s is None
    assert rates(prev, cur, -1.0)["a"].msgs_out_per_s is None


def test_status_json_is_a_stable_document() -> None:
    doc = status_json(CANNED)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["schema"] == 1
    assert doc["root"] == {"pid": 42, "uptime": 3725.0, "manifest": "/srv/mesh.toml",
                           "stopping": False}
    cells = doc["cells"]
    assert isinstance(cells, list)
    assert set(cells[0]) == {
        "name", "supervisor", "state", "pid", "restarts", "uptime", "msgs_in", "msgs_out",
        "rss", "cpu_percent", "rtt_p50_us", "rtt_p99_us", "backend", "dna", "version", "swap",
        "last_exit", "last_exit_at", "replica", "stats_at", "restart_in", "silent_for",
    }
    assert (cells[0]["dna"], cells[0]["version"], cells[0]["swap"]) == ("3f2a9c0d1b7e", "1.2", None)
    assert cells[1]["pid"] is None and cells[1]["replica"] is None
    assert doc["groups"] == []
    assert doc["restart_log"] == [
        {"at": 1_795_246_801.0, "cell": "db", "reason": "exited code=1"},
        {"at": 1_795_246_901.0, "cell": "db", "reason": "killed"},
    ]


def test_status_lists_the_last_crash_of_each_cell() -> None:
    reply = _reply(_cell("db", last_exit="exit code 1: ValueError: boom", last_exit_at=100.0),
                   _cell("web"))
    assert _text(last_exits(reply, now=225.0)).splitlines() == [
        "db: crashed 2m05s ago: exit code 1: ValueError: boom"
    ]
    assert status_json(reply)["cells"][0]["last_exit"] == "exit code 1: ValueError: boom"  # type: ignore[index]


def test_status_table_renders_every_column() -> None:
    text = _text(status_table(CANNED))
    header = text.splitlines()[0].split()
    assert header == ["CELL", "SUPERVISOR", "STATE", "PID", "RESTARTS", "UPTIME", "IN", "OUT",
                      "RSS", "CPU%", "P50", "P99", "DNA", "VERSION"]
    db = text.splitlines()[1].split()
    assert db == ["db", "root/store", "running", "101", "2", "1m05s", "1000", "990", "24.0M",
                  "1.5", "85us", "1.25ms", "3f2a9c0d1b7e", "1.2"]
    web = text.splitlines()[2].split()
    assert web == ["web", "root", "stopped", "-", "0", "-", "0", "0", "-", "-", "-", "-",
                   "3f2a9c0d1b7e", "-"]


HOSTILE = "[/][link=https://evil.example/]x[/link] :smile: \x1b]0;PWNED\x07\x1b[2J\x1b[31m!"


def _terminal(renderable: Any) -> str:
    """What a colour terminal receives (escape sequences included)."""
    buf = io.StringIO()
    Console(file=buf, width=400, force_terminal=True, color_system="standard").print(renderable)
    return buf.getvalue()


def test_status_and_top_print_cell_text_literally_and_without_escapes() -> None:
    """Attack (security.md: a cell cannot "write terminal escapes into" status): a
    version that is rich markup crashed `status` (MarkupError) or became a hyperlink;
    a replica's last output line or a swap phase reached the terminal raw."""
    from cellmesh.actors.control import ReplicaInfo
    from cellmesh.cli._ops import group_lines

    info = ReplicaInfo(group="g", replica=0, role="unknown", term=None, leader=None,
                       commit_index=None, applied_index=None, last_index=None, lag=None,
                       voters=[], learners=[], error=f"exit code 3: {HOSTILE}", given_up=True)
    reply = _reply(_cell("db", version=HOSTILE, dna=HOSTILE, supervisor=HOSTILE,
                         last_exit=HOSTILE, last_exit_at=1.0, swap=HOSTILE),
                   _cell("g/0", replica=info),
                   log=(RestartRecord(at=1.0, cell="db", reason=HOSTILE),))
    for renderable in (status_table(reply), top_frame(reply, {}, interval=1.0),
                       last_exits(reply, now=2.0), group_lines(reply)):
        out = _terminal(renderable)
        # no OSC (title, hyperlink), no screen clear, no bell, no foreign colour
        assert "\x1b]" not in out and "\x1b[2J" not in out and "\x07" not in out
        assert "\x1b[31m!" not in out
        # the text itself, literally: markup and emoji codes not interpreted
        assert "[/][link=https://evil.example/]x[/link] :smile: ?]0;PWNED??[2J?[31m!" in out


def test_status_and_top_show_a_swap_in_progress() -> None:
    swapping = _reply(_cell("db", swap="handing over"))
    assert "swapping (handing over)" in _text(status_table(swapping))
    assert "swapping (handing over)" in _text(top_frame(swapping, {}, interval=1.0))
    assert status_json(swapping)["cells"][0]["swap"] == "handing over"  # type: ignore[index]


def test_top_frame_shows_rates_and_the_newest_restarts_first() -> None:
    prev = _reply(_cell("db", msgs_in=0, msgs_out=0))
    cur = _reply(_cell("db", msgs_in=250, msgs_out=50), log=CANNED.restart_log)
    text = _text(top_frame(cur, rates(prev, cur, 1.0), interval=1.0))
    row = next(line for line in text.splitlines() if line.startswith("db"))
    assert row.split()[:5] == ["db", "running", "100", "250", "50.0"]
    assert text.index("killed") < text.index("exited code=1")
    assert "root pid 42, up 1h02m" in text


def test_rates_divide_by_the_time_between_the_cells_reports() -> None:
    """Audit: under a steady 200 calls/s, `top --interval 0.5` showed 0, 380, 0, 382...
    and `--interval 1.5` 131, 259, 130: the counters change once a second (when the
    cell reports), but were divided by the time between top's own snapshots."""

    def snap(count: int, at: float) -> StatusReply:
        return _reply(_cell("a", msgs_in=count, msgs_out=count // 2, stats_at=at))

    # The cell reports every second at 200 msgs/s; top asks every 0.5 s.
    reports = [snap(0, 100.0), snap(0, 100.0), snap(200, 101.0), snap(200, 101.0),
               snap(400, 102.0), snap(400, 102.0), snap(600, 103.0)]
    shown: list[float | None] = []
    last: dict[str, _ops.CellRate] = {}
    for prev, cur in itertools.pairwise(reports):
        last = rates(prev, cur, 0.5, last)
        shown.append(last["a"].msgs_in_per_s)
    assert shown == [None, 200.0, 200.0, 200.0, 200.0, 200.0]  # no report yet, then steady
    assert last["a"].msgs_out_per_s == 100.0
    # top asks every 1.5 s: one or two reports in between, the rate stays the rate.
    every_1_5 = [snap(0, 100.02), snap(200, 101.01), snap(600, 103.0), snap(800, 104.0)]
    got = [rates(p, c, 1.5)["a"].msgs_in_per_s for p, c in itertools.pairwise(every_1_5)]
    assert [round(r or 0) for r in got] == [202, 201, 200]


def test_rates_after_a_restart_do_not_keep_the_old_processs_rate() -> None:
    before = _reply(_cell("a", msgs_in=100, stats_at=10.0))
    kept = {"a": _ops.CellRate(msgs_in_per_s=50.0, msgs_out_per_s=50.0, restarted=False)}
    fresh = _reply(_cell("a", pid=777, msgs_in=0, stats_at=None))  # no report of it yet
    r = rates(before, fresh, 0.5, kept)["a"]
    assert (r.msgs_in_per_s, r.restarted) == (None, True)


@pytest.mark.parametrize("value", [
    1e300, -1e300, float("inf"), float("-inf"), float("nan"), 2**63,
    pytest.param(10**5000, id="10**5000"), pytest.param(-(10**5000), id="-10**5000"),
    -1, 0, 999.5, 59_999_999.0, 86_400e6 * 5000,
])
def test_every_formatter_stays_short_whatever_the_value(value: float) -> None:
    """Audit: fmt_us(1e300) printed a ~300-digit number (and rich then collapsed every
    column of the table). A figure the root relays must never widen a column."""
    floats = (_fmt.fmt_us, _fmt.fmt_duration, _fmt.fmt_percent, _fmt.fmt_rate,
              _fmt.fmt_countdown)
    as_float = float(value) if not isinstance(value, int) or abs(value) < 2**1000 else 1e300
    for fmt in floats:
        assert len(fmt(as_float)) <= 9, (fmt.__name__, value, fmt(as_float))
    if isinstance(value, int):
        assert len(_fmt.fmt_count(value)) <= 10, _fmt.fmt_count(value)
        assert len(_fmt.fmt_bytes(value)) <= 7, _fmt.fmt_bytes(value)
    assert _fmt.fmt_us(1e300) == ">999d" and _fmt.fmt_us(float("nan")) == "-"


def test_fmt_count_is_exact_below_a_billion_then_short() -> None:
    assert [_fmt.fmt_count(n) for n in (None, 0, 990, 123_456_789)] == [
        "-", "0", "990", "123456789"]
    assert [_fmt.fmt_count(n) for n in (1_234_567_890, 45_600_000_000_000, 2**53)] == [
        "1.23G", "45.6T", "9.01P"]
    assert _fmt.fmt_count(10**30) == ">999E"


def _hostile_reply() -> StatusReply:
    info = ReplicaInfo(group="g", replica=1, role="leader", term=10**5000, leader=1,
                       commit_index=2**64, applied_index=2**64, last_index=2**64, lag=2**70,
                       voters=[1], learners=[], error="", given_up=False)
    liar = _cell("liar", rtt_p50_us=1e300, rtt_p99_us=float("inf"), msgs_in=2**53,
                 msgs_out=10**5000, restarts=2**100, rss=10**30, cpu_percent=1e300,
                 uptime=1e300, version="v" * 100, stats_at=float("nan"),
                 last_exit_at=float("-inf"))
    return StatusReply(
        root_pid=42, uptime=float("inf"), manifest="/m.toml",
        cells=[_cell("honest"), liar, _cell("g/1", replica=info), _cell("other")],
        restart_log=[RestartRecord(at=1e300, cell="liar", reason="x")],
        groups=[GroupStatus(name="g", supervisor="root", members=[1], target=1, leader=1,
                            term=10**5000, change="", error="")],
    )


def test_one_cell_with_absurd_numbers_leaves_every_row_readable() -> None:
    """Audit: one cell reporting rtt_p50_us=1e300 turned the CELL column of every row
    into "…" (at 160 columns); a replica's huge term made `status` raise."""
    reply = _hostile_reply()
    names = ["honest", "liar", "g/1", "other"]
    for renderable in (status_table(reply), top_frame(reply, {}, interval=1.0)):
        buf = io.StringIO()
        Console(file=buf, width=160, no_color=True).print(renderable)
        lines = buf.getvalue().splitlines()
        assert all(len(line) <= 160 for line in lines)
        table = lines[lines.index(next(x for x in lines if x.startswith("CELL"))):][:5]
        assert [line.split()[0] for line in table[1:]] == names
        assert all("running" in line.split() for line in table[1:])
        honest = table[1].split()
        assert "85us" in honest and "1.25ms" in honest and "24.0M" in honest, table[1]
    assert "…" in _text(status_table(reply)).splitlines()[2]  # the long version is cut
    assert "term >999E" in _text(_ops.group_lines(reply))


def test_status_json_stays_valid_json_whatever_the_numbers() -> None:
    doc = status_json(_hostile_reply())
    text = json.dumps(doc, allow_nan=False)  # raises on inf/nan; a 5000-digit int raised
    cells = json.loads(text)["cells"]
    liar = cells[1]
    assert (liar["rtt_p50_us"], liar["rtt_p99_us"], liar["stats_at"]) == (1e300, None, None)
    assert liar["msgs_out"] is None and liar["msgs_in"] == 2**53
    assert cells[2]["replica"]["term"] is None and cells[2]["replica"]["commit_index"] is None
    assert json.loads(text)["root"]["uptime"] is None


def test_status_says_the_root_is_stopping_and_which_cells_it_stops() -> None:
    reply = StatusReply(root_pid=42, uptime=5.0, manifest="/m.toml", restart_log=[],
                        cells=[_cell("db", state="stopping"), _cell("web")], stopping=True)
    header = _text(_ops.status_header(reply)).strip()
    assert header == "root pid 42 (stopping), up 5s, manifest /m.toml, 2 cells (1 running)"
    assert "stopping" in _text(status_table(reply)).splitlines()[1]
    doc = status_json(reply)
    assert doc["root"] == {"pid": 42, "uptime": 5.0, "manifest": "/m.toml", "stopping": True}
    assert [c["state"] for c in doc["cells"]] == ["stopping", "running"]  # type: ignore[union-attr, index]
    assert "(stopping)" not in _text(_ops.status_header(_reply(_cell("db"))))


def test_a_cell_waiting_out_its_restart_backoff_says_when_it_restarts() -> None:
    waiting = _cell("db", state="restarting", pid=None, restart_in=2.14)
    assert _text(_fmt.state_text(waiting)).strip() == "restarting in 2.1s"
    assert "restarting in 2.1s" in _text(status_table(_reply(waiting)))
    assert status_json(_reply(waiting))["cells"][0]["restart_in"] == 2.14  # type: ignore[index]


def test_the_header_counts_a_replicated_cell_once_and_pluralises() -> None:
    info = ReplicaInfo(group="ledger", replica=1, role="leader", term=1, leader=1,
                       commit_index=1, applied_index=1, last_index=1, lag=0, voters=[1, 2, 3],
                       learners=[], error="", given_up=False)
    rows = [_cell(f"ledger/{i}", replica=attrs.evolve(info, replica=i)) for i in (1, 2, 3)]
    assert "1 cell (3 replicas, 3 running)" in _text(_ops.status_header(_reply(*rows)))
    assert "1 cell (1 running)" in _text(_ops.status_header(_reply(_cell("db"))))
    assert "2 cells (1 replica, 2 running)" in _text(
        _ops.status_header(_reply(_cell("db"), rows[0])))


# ---------------------------------------------------------------- the commands


@pytest.fixture
def app_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``main`` see the ops commands even before cli/__init__ registers them."""
    real = cellmesh.cli.build_app

    def build() -> cyclopts.App:
        app = real()
        if "status" not in app:
            _ops.register(app)
        return app

    monkeypatch.setattr(cellmesh.cli, "build_app", build)


@pytest.fixture
def sockdir(monkeypatch: pytest.MonkeyPatch, app_main: None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cm-ops-"))  # short: sun_path is 108 bytes
    monkeypatch.setenv("CELL_SOCKET_DIR", str(path))
    monkeypatch.setenv("CELL_HOME", str(path / "home"))
    monkeypatch.delenv("CELL_UMBILICAL", raising=False)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def root(sockdir: Path) -> AsyncIterator[list[object]]:
    """A fake root serving CANNED on mitosis.sock; yields the requests it received."""
    seen: list[object] = []

    async def handler(msg: object) -> StatusReply:
        seen.append(msg)
        return CANNED

    async with open_membrane("mitosis", handler, socket_dir=sockdir):
        yield seen


async def _main(argv: list[str]) -> int:
    return await trio.to_thread.run_sync(main, argv)


async def test_status_prints_the_table(
    root: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["status"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "root pid 42, up 1h02m, manifest /srv/mesh.toml, 2 cells (1 running)" in out
    assert "SUPERVISOR" in out
    assert "root/store" in out and "24.0M" in out and "1.25ms" in out
    assert all(isinstance(m, StatusRequest) for m in root) and len(root) == 1


async def test_status_json_prints_the_document(
    root: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["status", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == status_json(CANNED)


async def test_top_once_prints_one_frame(
    root: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["top", "--once", "--interval", "0.01"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "IN/s" in out and "restarts" in out and "killed" in out
    row = next(line for line in out.splitlines() if line.startswith("db"))
    assert row.split()[3] == "0.0"  # same counters twice: 0 msgs/s
    assert len(root) == 2  # two snapshots for the rates


async def test_top_once_rates_span_the_cells_reports_not_its_interval(
    sockdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: `top --once --interval 0.5` under a steady 200 calls/s showed 0 or ~400:
    the counters (reported once a second) were divided by the 0.5 s between its two
    snapshots. It now waits for the cell's next report and divides by the time
    between the two reports; a cell that does not report in time shows `-`."""
    replies = [
        _reply(_cell("a", msgs_in=1000, msgs_out=500, stats_at=100.0)),  # first snapshot
        _reply(_cell("a", msgs_in=1000, msgs_out=500, stats_at=100.0)),  # no report since
        _reply(_cell("a", msgs_in=1200, msgs_out=600, stats_at=101.0)),  # its next report
    ]
    seen: list[object] = []

    async def handler(msg: object) -> StatusReply:
        seen.append(msg)
        return replies[min(len(seen), len(replies)) - 1]

    async with open_membrane("mitosis", handler, socket_dir=sockdir):
        assert await _main(["top", "--once", "--interval", "0.01"]) == EXIT_OK
        row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("a "))
        assert row.split()[3:5] == ["200", "100"]
        assert len(seen) >= 3
        monkeypatch.setattr(_ops, "REPORT_WAIT", 0.2)
        replies[2] = replies[1]  # the cell stopped reporting: its rate is unknown
        seen.clear()
        assert await _main(["top", "--once", "--interval", "0.01"]) == EXIT_OK
        row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("a "))
        assert row.split()[3:5] == ["-", "-"]


def test_status_without_a_root_says_so(
    sockdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == EXIT_FAILURE
    err = capsys.readouterr().err.strip()
    assert err == (
        f"cellmesh: error: no root is running (nothing listens on {sockdir}/mitosis.sock); "
        "start one with `cellmesh up`"
    )
    assert main(["top", "--once"]) == EXIT_FAILURE


def test_top_rejects_a_bad_interval(sockdir: Path) -> None:
    assert main(["top", "--once", "--interval", "0"]) == EXIT_USAGE


@pytest.mark.parametrize("argv", [
    ["top", "--once", "--interval", "1e308"],  # never returned
    ["down", "--timeout", "1e308"],  # stopped the mesh, then an OverflowError traceback
    ["top", "--once", "--interval", "31536001"],
], ids=["top", "down", "top-a-year-and-a-second"])
def test_durations_over_a_year_are_refused(
    sockdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "must be at most 31536000 seconds (a year), got " in err, err


@pytest.fixture
def log_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_main: None) -> Path:
    monkeypatch.setenv("CELL_HOME", str(tmp_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "db.log.1").write_bytes(b"booting\n")
    (logs / "db.log").write_bytes(b"ready\nserving\n")
    (logs / "db.events.jsonl").write_text(json.dumps(
        {"ts": 4_000_000_000, "event": "exited", "cell": "db", "cell_id": "db-1",
         "backend": "host", "pid": 7, "code": 1, "reason": "crash"}) + "\n")
    return logs


def test_logs_prints_output_then_events(
    log_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "db"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "booting", "ready", "serving",
        "[2096-10-02T07:06:40Z] event exited pid=7 code=1 reason=crash",
    ]
    assert main(["logs", "db", "-n", "2"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0] == "serving"
    assert main(["logs", "db", "--lines", "1"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("[2096")


def test_logs_of_an_unknown_cell_fails(
    log_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "ghost"]) == EXIT_FAILURE
    assert "no logs for cell 'ghost'" in capsys.readouterr().err


def test_logs_of_a_misspelled_cell_suggests_the_nearest(
    log_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (log_home / "cache.log").write_bytes(b"")
    assert main(["logs", "cach"]) == EXIT_FAILURE
    assert capsys.readouterr().err == (
        "cellmesh: error: no logs for cell 'cach' (did you mean 'cache'? "
        "cells with logs: cache, db)\n"
    )


def test_logs_of_a_missing_replica_suggests_a_replica_by_the_name_logs_takes(
    log_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit: `logs ledger/9` suggested 'ledger..2', the internal file name."""
    for stem in ("ledger..1", "ledger..2"):
        (log_home / f"{stem}.log").write_bytes(b"")
    assert main(["logs", "ledger/9"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "did you mean 'ledger/2'? cells with logs: db, ledger/1, ledger/2)" in err
    assert ".." not in err


def test_logs_interleave_stamped_output_and_events_by_time(
    log_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (log_home / "db.log.1").unlink()
    (log_home / "db.log").write_bytes(
        stamp(3_999_999_990.0) + b"ready\n" + stamp(4_000_000_010.0) + b"restarted\n"
    )
    assert main(["logs", "db", "-n", "2"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "[2096-10-02T07:06:40Z] event exited pid=7 code=1 reason=crash", "restarted",
    ]
    assert main(["logs", "db", "-t"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0] == "[2096-10-02T07:06:30.000000Z] ready"
    assert main(["logs", "db", "--json"]) == EXIT_OK
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["ts"], d["stream"], d["cell"]) for d in docs] == [
        (3_999_999_990.0, "output", "db"), (4_000_000_000, "event", "db"),
        (4_000_000_010.0, "output", "db"),
    ]
    assert docs[0]["time"] == "2096-10-02T07:06:30.000000Z" and docs[0]["text"] == "ready"
    assert docs[1]["event"]["code"] == 1


@pytest.mark.parametrize("argv", [["logs", "../etc"], ["logs", "db", "-n", "-3"], ["logs"]])
def test_logs_bad_arguments_exit_2(log_home: Path, argv: list[str]) -> None:
    assert main(argv) == EXIT_USAGE


_CLI_WITH_OPS = (
    "import sys, cellmesh.cli as c\n"
    "from cellmesh.cli import _ops\n"
    "real = c.build_app\n"
    "def build():\n"
    "    app = real()\n"
    "    if 'status' not in app:\n"
    "        _ops.register(app)\n"
    "    return app\n"
    "c.build_app = build\n"
    "sys.exit(c.main(sys.argv[1:]))\n"
)


def _read_until(proc: subprocess.Popen[bytes], want: bytes, got: bytearray) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + 30
    while want not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {want!r}; got {bytes(got)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"EOF before {want!r}; got {bytes(got)!r}"
            got += chunk


def test_logs_follow_continues_across_rotation_until_ctrl_c(log_home: Path) -> None:
    env = {**os.environ, "CELL_HOME": str(log_home.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI_WITH_OPS, "logs", "db", "-f"],
        stdout=subprocess.PIPE, env=env,
    )
    try:
        got = bytearray()
        _read_until(proc, b"reason=crash\n", got)
        log = RotatingLog(log_home, "db", max_bytes=20, keep=10)
        for i in range(6):  # rotates several times
            log.write(f"line {i} of six\n".encode())
        log.close()
        _read_until(proc, b"line 5 of six\n", got)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == EXIT_OK
    finally:
        proc.kill()
        proc.wait()
    lines = bytes(got).decode().splitlines()
    assert lines[:3] == ["booting", "ready", "serving"]
    assert lines[4:] == [f"line {i} of six" for i in range(6)]
