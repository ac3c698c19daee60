"""``cellmesh status``, ``top`` and ``logs``: look at a running mesh.

``status`` and ``top`` ask the root over its control socket
(``$CELL_UMBILICAL``) with :class:`~cellmesh.actors.control.StatusRequest`;
``logs`` reads the captured output and lifecycle events under
``$CELL_HOME/logs`` directly (no root needed).

The rendering is pure: :func:`status_json`, :func:`status_table`,
:func:`rates` and :func:`top_frame` turn :class:`StatusReply` values into
JSON documents or rich renderables, so tests need neither a root nor a
terminal. The commands around them are thin.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import json as jsonlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Final, TextIO

import attrs
import cyclopts
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..actors.control import (
    CellStatus,
    GroupStatus,
    ReplicaInfo,
    RestartRecord,
    StatusReply,
    StatusRequest,
)
from ..actors.exitcause import printable
from ..actors.lastwords import duration_text
from ..actors.logs import LogCursor, LogRecord, follow_log, logged_cells, read_log
from ..actors.membership import parse_replica_name, replica_stem, replicas_text
from ..config import Paths, check_cell_name, check_seconds
from ..errors import CellmeshError, ConfigError
from ..transport.synapse import Synapse
from ._client import ask_root, open_root

#: Version of the ``status --json`` document; bumped when a field changes meaning.
STATUS_SCHEMA: Final = 1
#: How long ``status`` and ``top`` wait for the root's answer.
ROOT_TIMEOUT: Final = 10.0
#: Width used when stdout is not a terminal (so tables do not wrap at 80).
PIPE_WIDTH: Final = 160
#: Restart records shown by ``top``.
TOP_RESTARTS: Final = 8


class BadRootReply(CellmeshError):
    """The root answered a StatusRequest with something else."""

    def __init__(self, got: object) -> None:
        super().__init__(f"the root answered StatusRequest with {type(got).__name__}")
        self.got = got


# ---------------------------------------------------------------- formatting


def fmt_duration(seconds: float | None) -> str:
    """``None`` -> ``-``; else the two largest units: ``45s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    return duration_text(seconds)


def fmt_bytes(n: int | None) -> str:
    """``None`` -> ``-``; else binary units: ``512B``, ``1.5K``, ``12.0M``, ``2.0G``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_us(us: float | None) -> str:
    """A service time in microseconds: ``-``, ``850us``, ``1.25ms``, ``2.10s``."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.2f}ms"
    return f"{us / 1_000_000:.2f}s"


def fmt_percent(p: float | None) -> str:
    """``None`` -> ``-``; else one decimal: ``12.5``."""
    return "-" if p is None else f"{p:.1f}"


def fmt_rate(r: float | None) -> str:
    """Messages per second: ``-`` when unknown, else ``0``, ``12.3``, ``4567``."""
    if r is None:
        return "-"
    return f"{r:.1f}" if r < 100 else f"{r:.0f}"


def _state_style(state: str) -> str:
    return {"running": "green", "starting": "yellow", "dormant": "cyan"}.get(state, "red")


def shown(value: object) -> str:
    """Text the root relays from cells, made safe to print: every control or other
    unprintable character shown as ``?`` (no escape sequence reaches the
    terminal). Print it as a :class:`Text` (literal: a ``[`` is not rich markup,
    a ``:name:`` not an emoji). The root cleans what it keeps too; this does not
    rely on it."""
    return printable(value if isinstance(value, str) else str(value))


def state_text(cell: CellStatus) -> Text:
    """The STATE column: the state, or ``swapping (phase)`` while a hot swap runs."""
    if cell.swap:
        return Text(f"swapping ({shown(cell.swap)})", style="bold magenta")
    return Text(shown(cell.state), style=_state_style(cell.state))


def _when(at: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


# ---------------------------------------------------------------- status


def replica_json(info: ReplicaInfo | None) -> dict[str, object] | None:
    """A replica row's Raft view in ``status --json`` (None for a plain cell)."""
    if info is None:
        return None
    return {
        "group": info.group, "id": info.replica, "role": info.role, "term": info.term,
        "leader": info.leader, "commit_index": info.commit_index,
        "applied_index": info.applied_index, "last_index": info.last_index, "lag": info.lag,
        "voters": list(info.voters), "learners": list(info.learners), "error": info.error,
        "given_up": info.given_up,
    }  # fmt: skip


def group_json(group: GroupStatus) -> dict[str, object]:
    """One replicated cell of the ``status --json`` document."""
    return {
        "name": group.name, "supervisor": group.supervisor, "members": list(group.members),
        "target": group.target, "leader": group.leader, "term": group.term,
        "change": group.change, "error": group.error,
    }


def cell_json(cell: CellStatus) -> dict[str, object]:
    """One cell of the ``status --json`` document (every :class:`CellStatus` field)."""
    return {
        "name": cell.name,
        "supervisor": cell.supervisor,
        "state": cell.state,
        "pid": cell.pid,
        "restarts": cell.restarts,
        "uptime": cell.uptime,
        "msgs_in": cell.msgs_in,
        "msgs_out": cell.msgs_out,
        "rss": cell.rss,
        "cpu_percent": cell.cpu_percent,
        "rtt_p50_us": cell.rtt_p50_us,
        "rtt_p99_us": cell.rtt_p99_us,
        "backend": cell.backend,
        "dna": cell.dna,
        "version": cell.version,
        "swap": cell.swap or None,
        "last_exit": cell.last_exit,
        "last_exit_at": cell.last_exit_at,
        "replica": replica_json(cell.replica),
    }


def status_json(reply: StatusReply) -> dict[str, object]:
    """The ``status --json`` document (see the ``status`` command's help for the fields)."""
    return {
        "schema": STATUS_SCHEMA,
        "root": {"pid": reply.root_pid, "uptime": reply.uptime, "manifest": reply.manifest},
        "cells": [cell_json(c) for c in reply.cells],
        "restart_log": [
            {"at": r.at, "cell": r.cell, "reason": r.reason} for r in reply.restart_log
        ],
        "groups": [group_json(g) for g in reply.groups],
    }


def status_header(reply: StatusReply) -> Text:
    """``root pid 123, up 3m05s, manifest /path, 4 cells (3 running)``."""
    running = sum(c.state == "running" for c in reply.cells)
    return Text(shown(
        f"root pid {reply.root_pid}, up {fmt_duration(reply.uptime)}, "
        f"manifest {reply.manifest or '-'}, {len(reply.cells)} cells ({running} running)"
    ))


#: The replica columns (``status`` and ``top``), shown when the mesh has a replicated cell.
REPLICA_COLUMNS: Final = ("ROLE", "TERM", "COMMIT", "APPLIED", "LAG")


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def replica_cells(info: ReplicaInfo | None) -> tuple[Text, str, str, str, str]:
    """ROLE, TERM, COMMIT, APPLIED, LAG of a row (``-`` for a plain cell or no stats yet)."""
    if info is None:
        return Text("-"), "-", "-", "-", "-"
    role = "given up" if info.given_up else info.role
    style = {"leader": "bold green", "follower": "green", "learner": "cyan"}.get(role, "yellow")
    return (Text(shown(role), style=style), _opt(info.term), _opt(info.commit_index),
            _opt(info.applied_index), _opt(info.lag))


def _has_replicas(reply: StatusReply) -> bool:
    return any(c.replica is not None for c in reply.cells)


def last_exits(reply: StatusReply, *, now: float) -> Text:
    """One line per cell that crashed: ``db: crashed 3m05s ago: exit code 1: ValueError: boom``."""
    text = Text()
    for c in reply.cells:
        if c.last_exit is None:
            continue
        if text:
            text.append("\n")
        ago = fmt_duration(None if c.last_exit_at is None else now - c.last_exit_at)
        text.append(shown(c.name), style="bold")
        text.append(shown(f": crashed {ago} ago: {c.last_exit}"))
    return text


def status_table(reply: StatusReply) -> Table:
    """The ``status`` table: one row per cell (per replica: ``X/i``), in the root's order.

    When the mesh has a replicated cell, each row also shows ROLE, TERM,
    COMMIT, APPLIED and LAG (``-`` on plain cells' rows).
    """
    table = Table(box=None, header_style="bold", pad_edge=False)
    replicas = _has_replicas(reply)
    for title, justify in (
        ("CELL", "left"), ("SUPERVISOR", "left"), ("STATE", "left"), ("PID", "right"),
        ("RESTARTS", "right"), ("UPTIME", "right"), ("IN", "right"), ("OUT", "right"),
        ("RSS", "right"), ("CPU%", "right"), ("P50", "right"), ("P99", "right"),
        ("DNA", "left"), ("VERSION", "left"),
        *(((t, "left" if t == "ROLE" else "right") for t in REPLICA_COLUMNS) if replicas else ()),
    ):
        table.add_column(title, justify=justify, no_wrap=True)
    for c in reply.cells:
        table.add_row(
            Text(shown(c.name)), Text(shown(c.supervisor)), state_text(c),
            "-" if c.pid is None else str(c.pid), str(c.restarts), fmt_duration(c.uptime),
            str(c.msgs_in), str(c.msgs_out), fmt_bytes(c.rss), fmt_percent(c.cpu_percent),
            fmt_us(c.rtt_p50_us), fmt_us(c.rtt_p99_us), Text(shown(c.dna or "-")),
            Text(shown(c.version or "-")),
            *(replica_cells(c.replica) if replicas else ()),
        )
    return table


def group_lines(reply: StatusReply) -> Text:
    """Below the table: each replicated cell's members, leader and change; replica errors."""
    out = Text()
    for g in reply.groups:
        if out:
            out.append("\n")
        leader = "no leader" if g.leader is None else f"leader {g.name}/{g.leader} (term {g.term})"
        members = ", ".join(f"{g.name}/{i}" for i in g.members)
        out.append(shown(g.name), style="bold")
        out.append(shown(f": {replicas_text(len(g.members))} ({members}), {leader}"))
        if g.target != len(g.members):
            out.append(f", target {g.target}")
        if g.change:
            out.append(f"\n  changing: {shown(g.change)}", style="yellow")
        if g.error:
            out.append(f"\n  last change failed: {shown(g.error)}", style="red")
    for c in reply.cells:
        info = c.replica
        if info is not None and (info.error or info.given_up):
            out.append("\n")
            out.append(shown(c.name), style="bold")
            what = "given up" if info.given_up else "failed"
            out.append(f" {what}: {shown(info.error or '-')}", style="red")
    return out


# ---------------------------------------------------------------- top


@attrs.frozen(kw_only=True)
class CellRate:
    """Per-cell rates between two snapshots; None when they cannot be known."""

    msgs_in_per_s: float | None
    msgs_out_per_s: float | None
    #: The process changed between the snapshots (new pid, more restarts, counters reset).
    restarted: bool


def _rate(prev: int, cur: int, elapsed: float, reset: bool) -> float:
    # After a restart the counters began at zero within the interval: count them all.
    delta = cur if reset else cur - prev
    return max(delta, 0) / elapsed


def rates(prev: StatusReply, cur: StatusReply, elapsed: float) -> dict[str, CellRate]:
    """Messages per second of every cell of ``cur`` since ``prev``, ``elapsed`` s earlier.

    Pure. A cell restarted in between (pid changed, restart count grew, or a
    counter went down) has its counters reset: its rate is its new count over
    the interval, never negative. A cell absent from ``prev``, one not
    running, or ``elapsed <= 0`` gives None rates.
    """
    before = {c.name: c for c in prev.cells}
    out: dict[str, CellRate] = {}
    for c in cur.cells:
        p = before.get(c.name)
        if p is None or not (elapsed > 0 and math.isfinite(elapsed)) or c.pid is None:
            out[c.name] = CellRate(msgs_in_per_s=None, msgs_out_per_s=None,
                                   restarted=p is not None and p.pid != c.pid)
            continue
        reset = (
            p.pid != c.pid or c.restarts != p.restarts
            or c.msgs_in < p.msgs_in or c.msgs_out < p.msgs_out
        )
        out[c.name] = CellRate(
            msgs_in_per_s=_rate(p.msgs_in, c.msgs_in, elapsed, reset),
            msgs_out_per_s=_rate(p.msgs_out, c.msgs_out, elapsed, reset),
            restarted=reset,
        )
    return out


def restart_panel(records: list[RestartRecord], *, limit: int = TOP_RESTARTS) -> Panel:
    """The newest ``limit`` restart records, newest first."""
    newest = sorted(records, key=lambda r: r.at, reverse=True)[:limit]
    body = Text()
    for i, r in enumerate(newest):
        if i:
            body.append("\n")
        body.append(f"{_when(r.at)} ", style="dim")
        body.append(shown(r.cell), style="bold")
        body.append(shown(f" {r.reason}"))
    if not newest:
        body.append("no restarts", style="dim")
    return Panel(body, title="restarts", title_align="left")


def top_frame(
    reply: StatusReply, cell_rates: dict[str, CellRate], *, interval: float,
    live: bool = True,
) -> RenderableType:
    """One ``top`` frame: header, per-cell table with rates, restart log panel
    (and, ``live``, how to quit)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    replicas = _has_replicas(reply)
    for title, justify in (
        ("CELL", "left"), ("STATE", "left"), ("PID", "right"), ("IN/s", "right"),
        ("OUT/s", "right"), ("P50", "right"), ("P99", "right"), ("RESTARTS", "right"),
        ("RSS", "right"), ("CPU%", "right"), ("UPTIME", "right"),
        *(((t, "left" if t == "ROLE" else "right") for t in REPLICA_COLUMNS) if replicas else ()),
    ):
        table.add_column(title, justify=justify, no_wrap=True)
    for c in reply.cells:
        r = cell_rates.get(c.name)
        restarts = Text(str(c.restarts), style="bold red" if r and r.restarted else "")
        table.add_row(
            Text(shown(c.name)), state_text(c),
            "-" if c.pid is None else str(c.pid),
            fmt_rate(r.msgs_in_per_s if r else None), fmt_rate(r.msgs_out_per_s if r else None),
            fmt_us(c.rtt_p50_us), fmt_us(c.rtt_p99_us), restarts, fmt_bytes(c.rss),
            fmt_percent(c.cpu_percent), fmt_duration(c.uptime),
            *(replica_cells(c.replica) if replicas else ()),
        )
    footer = Text(f"every {interval:g}s; q or Ctrl-C quits" if live
                  else f"rates over {interval:g}s", style="dim")
    parts: list[RenderableType] = [status_header(reply), table]
    if reply.groups:
        parts.append(group_lines(reply))
    return Group(*parts, restart_panel(reply.restart_log), footer)


# ---------------------------------------------------------------- talking to the root


def _console(file: TextIO) -> Console:
    tty = file.isatty()
    return Console(file=file, width=None if tty else PIPE_WIDTH,
                   no_color=not tty, highlight=False, soft_wrap=False)


async def _ask(syn: Synapse) -> StatusReply:
    with trio.fail_after(ROOT_TIMEOUT):
        reply = await ask_root(syn, StatusRequest())
    if not isinstance(reply, StatusReply):
        raise BadRootReply(reply)
    return reply


async def fetch_status(paths: Paths) -> StatusReply:
    """One :class:`StatusReply` from the root at ``paths.umbilical`` (RootNotRunning if none)."""
    async with open_root(paths) as syn:
        return await _ask(syn)


def run_status(*, json: bool, out: TextIO | None = None) -> int:
    """Implementation of ``cellmesh status``."""
    out = out if out is not None else sys.stdout
    reply = trio.run(fetch_status, Paths.from_env())
    if json:
        out.write(jsonlib.dumps(status_json(reply), indent=2, sort_keys=True) + "\n")
    else:
        console = _console(out)
        console.print(status_header(reply))
        console.print(status_table(reply))
        crashes = last_exits(reply, now=time.time())
        if crashes:
            console.print(crashes)
        if reply.groups:
            console.print(group_lines(reply))
    return 0


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[int | None]:
    """Put the terminal ``fd`` in cbreak mode (keys arrive unbuffered); always restore it."""
    if fd is None:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _quit_requested(fd: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a key on ``fd``; True when it was ``q`` (or stdin ended)."""
    if fd is None:
        await trio.sleep(timeout)
        return False
    with trio.move_on_after(timeout):
        await trio.lowlevel.wait_readable(fd)
        try:
            keys = os.read(fd, 64)
        except BlockingIOError:
            return False
        return b"q" in keys.lower() or not keys
    return False


async def _top_once(paths: Paths, interval: float) -> RenderableType:
    async with open_root(paths) as syn:
        first = await _ask(syn)
        t0 = trio.current_time()
        await trio.sleep(interval)
        second = await _ask(syn)
        elapsed = trio.current_time() - t0
    return top_frame(second, rates(first, second, elapsed), interval=interval, live=False)


async def _top_live(paths: Paths, interval: float, console: Console, key_fd: int | None) -> None:
    async with open_root(paths) as syn:
        prev: StatusReply | None = None
        prev_t = 0.0
        with Live(console=console, auto_refresh=False, screen=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                reply = await _ask(syn)
                now = trio.current_time()
                cell_rates = rates(prev, reply, now - prev_t) if prev is not None else {}
                live.update(top_frame(reply, cell_rates, interval=interval), refresh=True)
                prev, prev_t = reply, now
                if await _quit_requested(key_fd, interval):
                    return


def run_top(*, interval: float, once: bool, out: TextIO | None = None) -> int:
    """Implementation of ``cellmesh top``."""
    check_seconds("--interval", interval)
    out = out if out is not None else sys.stdout
    paths = Paths.from_env()
    console = _console(out)
    if once or not out.isatty():
        console.print(trio.run(_top_once, paths, interval))
        return 0
    stdin_fd: int | None = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if sys.stdin.isatty():
            stdin_fd = sys.stdin.fileno()
    try:
        with _cbreak(stdin_fd) as key_fd:
            trio.run(_top_live, paths, interval, console, key_fd)
    except KeyboardInterrupt:
        pass  # Ctrl-C is the other way to quit
    return 0


# ---------------------------------------------------------------- logs


def log_name(name: str) -> str:
    """The file name of ``NAME``'s logs: the cell's name, or ``X..i`` for replica ``X/i``.

    Raises :class:`~cellmesh.errors.ConfigError` (source ``NAME``) when it is neither.
    """
    replica = parse_replica_name(name)
    if replica is not None:
        check_cell_name(replica[0], source="NAME")
        return replica_stem(*replica)
    check_cell_name(name, source="NAME")
    return name


def run_logs(
    name: str,
    *,
    follow: bool,
    lines: int | None,
    json: bool = False,
    timestamps: bool = False,
    out: TextIO | None = None,
) -> int:
    """Implementation of ``cellmesh logs``."""
    out = out if out is not None else sys.stdout
    stem = log_name(name)
    if lines is not None and lines < 0:
        raise ConfigError("--lines", f"must be >= 0, got {lines}")
    log_dir = Paths.from_env().log_dir
    view = read_log(log_dir, stem, lines=lines)
    if not view.found:
        raise NoCellLogs(name, log_dir, logged_cells(log_dir))
    _write_records(out, name, view.records, json=json, timestamps=timestamps)
    if not follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends following
        trio.run(_follow, log_dir, (stem, name), view.cursor, out, (json, timestamps))
    return 0


def _write_records(
    out: TextIO, name: str, records: list[LogRecord], *, json: bool, timestamps: bool
) -> None:
    for record in records:
        if json:
            out.write(jsonlib.dumps(record.to_json(name), sort_keys=True) + "\n")
        else:
            out.write(record.display(timestamps=timestamps) + "\n")
    out.flush()


async def _follow(
    log_dir: Path, names: tuple[str, str], cursor: LogCursor, out: TextIO,
    style: tuple[bool, bool],
) -> None:
    """Follow the logs filed as ``names[0]`` (a replica's stem) shown as ``names[1]``."""
    stem, name = names
    json, timestamps = style
    async for records in follow_log(log_dir, stem, cursor):
        _write_records(out, name, records, json=json, timestamps=timestamps)


class NoCellLogs(CellmeshError):
    """Cell ``name`` has neither captured output nor lifecycle events under ``log_dir``.

    ``known`` lists the cells that have logs there; the message suggests the
    nearest name.
    """

    def __init__(self, name: str, log_dir: Path, known: list[str]) -> None:
        replicas = sorted(k.replace("..", "/") for k in known if k.startswith(f"{name}.."))
        if replicas:
            super().__init__(
                f"no logs for cell {name!r}: it is a replicated cell, name one replica "
                f"({', '.join(replicas)})"
            )
            self.name = name
            self.log_dir = log_dir
            self.known = known
            return
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        cells = f"cells with logs: {listed}" if known else f"nothing in {log_dir}"
        super().__init__(f"no logs for cell {name!r} ({hint}{cells})")
        self.name = name
        self.log_dir = log_dir
        self.known = known


# ---------------------------------------------------------------- commands


def register(app: cyclopts.App) -> None:
    """Attach ``status``, ``top`` and ``logs`` to ``app``."""
    @app.command(name="status")
    def _status(*, json: bool = False) -> int:
        """Show every cell of the running mesh as the root sees it.

        With --json, prints one document (stable; "schema" is bumped when a
        field changes meaning):
        "schema" (1); "root": {"pid", "uptime" (s), "manifest"};
        "cells": a list of {"name", "supervisor" (the name of its
        supervisor: "root" for the top one, a [supervisors.X] name,
        "~dynamic", or the replicated cell's name for a replica),
        "state" (running|starting|dormant|stopped), "pid" (null when not
        running), "restarts", "uptime" (s or null), "msgs_in", "msgs_out"
        (cumulative since the process started), "rss" (bytes or null),
        "cpu_percent" (or null), "rtt_p50_us", "rtt_p99_us" (service times
        over the last report interval, null when idle), "backend", "dna"
        (the first 12 hex digits of the code's content hash), "version" (the
        cell class's version, "" if it declares none or has not started
        yet: a dormant cell's code is not imported), "swap" (the phase of a
        hot swap in progress, or null), "last_exit" (the last crash: exit
        status and the exception the cell reported, or null), "last_exit_at"
        (Unix time or null), "replica": null for a plain cell; for a replica
        (row "X/i") {"group", "id", "role" (leader|follower|candidate|
        precandidate|learner|removed|unknown), "term", "leader",
        "commit_index", "applied_index", "last_index", "lag" (the leader's
        last_index minus this applied_index), "voters", "learners", "error"
        (why it last failed, "" if not), "given_up" (its supervisor stopped
        restarting it)}};
        "restart_log": a list of {"at" (Unix time), "cell", "reason"};
        "groups": one per replicated cell, {"name", "supervisor", "members"
        (replica ids), "target" (replicas asked for), "leader", "term",
        "change" (in progress, "" if none), "error" (last failed change)}.
        Exit 1 when no root is running.

        Parameters
        ----------
        json
            Print the JSON document instead of the table.
        """
        return run_status(json=json)

    @app.command(name="top")
    def _top(*, interval: float = 1.0, once: bool = False) -> int:
        """A live dashboard of the mesh: per-cell msgs/s, RTT, restarts, memory, state.

        Press q (or Ctrl-C) to quit. When stdout is not a terminal, or with
        --once, prints one frame (two snapshots INTERVAL apart, for the
        rates) and exits.

        Parameters
        ----------
        interval
            Seconds between refreshes.
        once
            Print one frame and exit.
        """
        return run_top(interval=interval, once=once)

    @app.command(name="logs")
    def _logs(
        name: str,
        /,
        *,
        follow: Annotated[bool, cyclopts.Parameter(alias="-f", negative=())] = False,
        lines: Annotated[int | None, cyclopts.Parameter(alias="-n")] = None,
        json: bool = False,
        timestamps: Annotated[bool, cyclopts.Parameter(alias="-t", negative=())] = False,
    ) -> int:
        """Print a cell's captured output and lifecycle events ($CELL_HOME/logs), by time.

        Every captured line is stored with the time the root read it, so
        output and events (started, exited, ...) interleave in time order.
        With --json, prints one JSON object per line: "ts" (Unix time, null
        when unknown), "time" (ISO 8601 UTC), "cell", "stream" ("output" or
        "event"), "text", and for events "event" (its fields).

        Parameters
        ----------
        name
            The cell's name; for a replica of a replicated cell, NAME/ID (ledger/1).
        follow
            Keep printing new output and events until Ctrl-C.
        lines
            Print only the last N lines (output and events, by time).
        json
            One JSON object per line instead of text.
        timestamps
            Put each output line's time in front of it.
        """
        return run_logs(name, follow=follow, lines=lines, json=json, timestamps=timestamps)


__all__ = [
    "BadRootReply",
    "CellRate",
    "NoCellLogs",
    "cell_json",
    "fetch_status",
    "fmt_bytes",
    "fmt_duration",
    "fmt_percent",
    "fmt_rate",
    "fmt_us",
    "group_json",
    "group_lines",
    "log_name",
    "last_exits",
    "rates",
    "register",
    "replica_cells",
    "replica_json",
    "restart_panel",
    "run_logs",
    "run_status",
    "run_top",
    "status_header",
    "status_json",
    "state_text",
    "status_table",
    "top_frame",
]
