"""``cellmesh status``, ``top`` and ``logs``: look at a running mesh.

``status`` and ``top`` ask the root over its control socket
(``$CELL_UMBILICAL``) with :class:`~cellmesh.actors.control.StatusRequest`;
``logs`` reads the captured output and lifecycle events under
``$CELL_HOME/logs`` directly (no root needed: :mod:`._logs`).

The rendering is pure: :func:`status_json`, :func:`status_table`,
:func:`rates` and :func:`top_frame` turn :class:`StatusReply` values into
JSON documents or rich renderables (every figure through :mod:`._fmt`), so
tests need neither a root nor a terminal. The commands around them are thin.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Final, TextIO

import attrs
import cyclopts
import trio
from rich.console import Console, Group, JustifyMethod, RenderableType
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
from ..actors.membership import replicas_text
from ..config import Paths, check_seconds
from ..errors import CellmeshError
from ..transport.synapse import Synapse
from ._client import ask_root, open_root
from ._fmt import (
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_percent,
    fmt_rate,
    fmt_us,
    fmt_when,
    json_safe,
    shown,
    state_text,
)
from ._logs import run_logs

#: Version of the ``status --json`` document; bumped when a field changes meaning.
STATUS_SCHEMA: Final = 1
#: How long ``status`` and ``top`` wait for the root's answer.
ROOT_TIMEOUT: Final = 10.0
#: Width used when stdout is not a terminal (so tables do not wrap at 80).
PIPE_WIDTH: Final = 160
#: Restart records shown by ``top``.
TOP_RESTARTS: Final = 8
#: ``top --once``: how much longer than ``--interval`` it waits for the cells' next
#: reports (they report about once a second), and how often it asks meanwhile.
REPORT_WAIT: Final = 1.5
REPORT_POLL: Final = 0.1
#: The VERSION column's width at most: a cell chooses its version (up to 100 characters).
VERSION_WIDTH: Final = 24


class BadRootReply(CellmeshError):
    """The root answered a StatusRequest with something else."""

    def __init__(self, got: object) -> None:
        super().__init__(f"the root answered StatusRequest with {type(got).__name__}")
        self.got = got


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
        "stats_at": cell.stats_at,
        "restart_in": cell.restart_in,
        "silent_for": cell.silent_for,
    }



def status_json(reply: StatusReply) -> dict[str, object]:
    """The ``status --json`` document (see the ``status`` command's help for the fields).

    Always valid JSON (:func:`json_safe`), whatever the numbers in ``reply``.
    """
    doc = {
        "schema": STATUS_SCHEMA,
        "root": {"pid": reply.root_pid, "uptime": reply.uptime, "manifest": reply.manifest,
                 "stopping": reply.stopping},
        "cells": [cell_json(c) for c in reply.cells],
        "restart_log": [
            {"at": r.at, "cell": r.cell, "reason": r.reason} for r in reply.restart_log
        ],
        "groups": [group_json(g) for g in reply.groups],
    }
    safe = json_safe(doc)
    assert isinstance(safe, dict)
    return safe


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def status_header(reply: StatusReply) -> Text:
    """``root pid 123, up 3m05s, manifest /path, 4 cells (3 running)``.

    A replicated cell counts once, its replicas apart (``1 cell (3 replicas, 3
    running)``); ``root pid 123 (stopping)`` once the root is stopping.
    """
    running = sum(c.state == "running" for c in reply.cells)
    groups = {c.replica.group for c in reply.cells if c.replica is not None}
    replicas = sum(c.replica is not None for c in reply.cells)
    counts = [_plural(replicas, "replica")] if replicas else []
    counts.append(f"{running} running")
    cells = _plural(len(reply.cells) - replicas + len(groups), "cell")
    text = Text(shown(f"root pid {reply.root_pid}"))
    if reply.stopping:
        text.append(" (stopping)", style="bold yellow")
    text.append(shown(
        f", up {fmt_duration(reply.uptime)}, manifest {reply.manifest or '-'}, "
        f"{cells} ({', '.join(counts)})"
    ))
    return text


#: The replica columns (``status`` and ``top``), shown when the mesh has a replicated cell.
REPLICA_COLUMNS: Final = ("ROLE", "TERM", "COMMIT", "APPLIED", "LAG")


def _opt(value: int | None) -> str:
    return fmt_count(value)


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


#: The columns that keep their width when a table is wider than the terminal.
KEPT_COLUMNS: Final = frozenset({"CELL", "STATE"})


def cells_table(columns: Iterable[tuple[str, JustifyMethod]]) -> Table:
    """An empty ``status``/``top`` table of ``(title, justify)`` columns.

    One line per row, whatever the width: no cell's text wraps (:func:`add_row`
    cuts it with ``…``). When the table is wider than the terminal, the columns
    other than CELL and STATE give way, the widest first, so what one row holds
    (a long version, a large figure) cannot hide the names of the others.
    VERSION, which a cell chooses, is at most :data:`VERSION_WIDTH` wide.
    """
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title, justify in columns:
        table.add_column(
            Text(title, no_wrap=True, overflow="ellipsis"), justify=justify,
            no_wrap=title in KEPT_COLUMNS, overflow="ellipsis",
            max_width=VERSION_WIDTH if title == "VERSION" else None,
        )
    return table


def add_row(table: Table, *cells: str | Text) -> None:
    """Add a row of :func:`cells_table`: each cell on one line, cut with ``…`` if narrowed."""
    texts = [cell if isinstance(cell, Text) else Text(cell) for cell in cells]
    for text in texts:
        text.no_wrap, text.overflow = True, "ellipsis"
    table.add_row(*texts)


def status_table(reply: StatusReply) -> Table:
    """The ``status`` table: one row per cell (per replica: ``X/i``), in the root's order.

    When the mesh has a replicated cell, each row also shows ROLE, TERM,
    COMMIT, APPLIED and LAG (``-`` on plain cells' rows).
    """
    replicas = _has_replicas(reply)
    table = cells_table((
        ("CELL", "left"), ("SUPERVISOR", "left"), ("STATE", "left"), ("PID", "right"),
        ("RESTARTS", "right"), ("UPTIME", "right"), ("IN", "right"), ("OUT", "right"),
        ("RSS", "right"), ("CPU%", "right"), ("P50", "right"), ("P99", "right"),
        ("DNA", "left"), ("VERSION", "left"),
        *(((t, "left" if t == "ROLE" else "right") for t in REPLICA_COLUMNS) if replicas else ()),
    ))
    for c in reply.cells:
        add_row(table,
            Text(shown(c.name)), Text(shown(c.supervisor)), state_text(c),
            fmt_count(c.pid), fmt_count(c.restarts), fmt_duration(c.uptime),
            fmt_count(c.msgs_in), fmt_count(c.msgs_out), fmt_bytes(c.rss),
            fmt_percent(c.cpu_percent),
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
        leader = ("no leader" if g.leader is None
                  else f"leader {g.name}/{fmt_count(g.leader)} (term {fmt_count(g.term)})")
        members = ", ".join(f"{g.name}/{i}" for i in g.members)
        out.append(shown(g.name), style="bold")
        out.append(shown(f": {replicas_text(len(g.members))} ({members}), {leader}"))
        if g.target != len(g.members):
            out.append(f", target {fmt_count(g.target)}")
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
    """Per-cell rates between two reports of the cell; None when they cannot be known."""

    msgs_in_per_s: float | None
    msgs_out_per_s: float | None
    #: The process changed between the snapshots (new pid, more restarts, counters reset).
    restarted: bool


def _rate(prev: int, cur: int, elapsed: float, reset: bool) -> float:
    # After a restart the counters began at zero within the interval: count them all.
    delta = cur if reset else cur - prev
    return max(delta, 0) / elapsed


def _window(prev: CellStatus, cur: CellStatus, elapsed: float) -> float | None:
    """Seconds between the cell's reports behind ``prev`` and ``cur``; None when ``cur``
    holds no newer report. Without report times (a root that does not send them) the
    snapshots' own ``elapsed``."""
    if prev.stats_at is None and cur.stats_at is None:
        return elapsed if elapsed > 0 and math.isfinite(elapsed) else None
    if prev.stats_at is None or cur.stats_at is None:
        return None
    window = cur.stats_at - prev.stats_at
    return window if window > 0 and math.isfinite(window) else None


def rates(
    prev: StatusReply, cur: StatusReply, elapsed: float,
    last: Mapping[str, CellRate] | None = None,
) -> dict[str, CellRate]:
    """Messages per second of every cell of ``cur`` since ``prev`` (``elapsed`` s earlier).

    Pure. A cell's counters are those of its last report to the root (about
    one a second, whatever the snapshots' interval): a rate is the change in
    its counters over the time between the two reports (``stats_at``), so
    snapshots taken more or less often than the cell reports neither see zero
    nor twice the rate. When ``cur`` holds the same report as ``prev`` the
    cell's rate in ``last`` (the previous call's result) still holds.

    A cell restarted in between (pid changed, restart count grew, or a
    counter went down) has its counters reset: its rate is its new count over
    the window, never negative. A cell absent from ``prev``, one not running,
    one with no report in either snapshot, or one whose only new report is the
    first of a new process, gives None rates. Without report times in the
    snapshots the window is ``elapsed`` (None rates when it is not > 0).
    """
    before = {c.name: c for c in prev.cells}
    out: dict[str, CellRate] = {}
    for c in cur.cells:
        p = before.get(c.name)
        if p is None or c.pid is None:
            out[c.name] = CellRate(msgs_in_per_s=None, msgs_out_per_s=None,
                                   restarted=p is not None and p.pid != c.pid)
            continue
        reset = (
            p.pid != c.pid or c.restarts != p.restarts
            or c.msgs_in < p.msgs_in or c.msgs_out < p.msgs_out
        )
        window = _window(p, c, elapsed)
        if window is None:
            kept = None if reset or last is None else last.get(c.name)
            out[c.name] = CellRate(
                msgs_in_per_s=None if kept is None else kept.msgs_in_per_s,
                msgs_out_per_s=None if kept is None else kept.msgs_out_per_s,
                restarted=reset,
            )
            continue
        out[c.name] = CellRate(
            msgs_in_per_s=_rate(p.msgs_in, c.msgs_in, window, reset),
            msgs_out_per_s=_rate(p.msgs_out, c.msgs_out, window, reset),
            restarted=reset,
        )
    return out


def stale_reports(prev: StatusReply, cur: StatusReply) -> list[str]:
    """The running cells of ``cur`` whose report is the one ``prev`` held already
    (``top --once`` waits a little for their next report)."""
    before = {c.name: c for c in prev.cells}
    return [
        c.name for c in cur.cells
        if c.pid is not None and c.stats_at is not None
        and (p := before.get(c.name)) is not None and p.pid == c.pid
        and p.stats_at == c.stats_at
    ]


def restart_panel(records: list[RestartRecord], *, limit: int = TOP_RESTARTS) -> Panel:
    """The newest ``limit`` restart records, newest first."""
    newest = sorted(records, key=lambda r: r.at, reverse=True)[:limit]
    body = Text()
    for i, r in enumerate(newest):
        if i:
            body.append("\n")
        body.append(f"{fmt_when(r.at)} ", style="dim")
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
    replicas = _has_replicas(reply)
    table = cells_table((
        ("CELL", "left"), ("STATE", "left"), ("PID", "right"), ("IN/s", "right"),
        ("OUT/s", "right"), ("P50", "right"), ("P99", "right"), ("RESTARTS", "right"),
        ("RSS", "right"), ("CPU%", "right"), ("UPTIME", "right"),
        *(((t, "left" if t == "ROLE" else "right") for t in REPLICA_COLUMNS) if replicas else ()),
    ))
    for c in reply.cells:
        r = cell_rates.get(c.name)
        restarts = Text(fmt_count(c.restarts), style="bold red" if r and r.restarted else "")
        add_row(table,
            Text(shown(c.name)), state_text(c), fmt_count(c.pid),
            fmt_rate(r.msgs_in_per_s if r else None), fmt_rate(r.msgs_out_per_s if r else None),
            fmt_us(c.rtt_p50_us), fmt_us(c.rtt_p99_us), restarts, fmt_bytes(c.rss),
            fmt_percent(c.cpu_percent), fmt_duration(c.uptime),
            *(replica_cells(c.replica) if replicas else ()),
        )
    footer = Text(f"every {interval:g}s (rates between the cells' reports, about 1 s apart); "
                  "q or Ctrl-C quits" if live
                  else "rates between the cells' last two reports, about 1 s apart", style="dim")
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
    """Two snapshots ``interval`` apart; if some running cells have not reported
    in between (they do about once a second), ask again until they have, for at
    most :data:`REPORT_WAIT` s more (their rates are ``-`` after that)."""
    async with open_root(paths) as syn:
        first = await _ask(syn)
        t0 = trio.current_time()
        await trio.sleep(interval)
        second = await _ask(syn)
        deadline = trio.current_time() + REPORT_WAIT
        while stale_reports(first, second) and trio.current_time() < deadline:
            await trio.sleep(REPORT_POLL)
            second = await _ask(syn)
        elapsed = trio.current_time() - t0
    return top_frame(second, rates(first, second, elapsed), interval=interval, live=False)


async def _top_live(paths: Paths, interval: float, console: Console, key_fd: int | None) -> None:
    async with open_root(paths) as syn:
        prev: StatusReply | None = None
        prev_t = 0.0
        cell_rates: dict[str, CellRate] = {}
        with Live(console=console, auto_refresh=False, screen=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                reply = await _ask(syn)
                now = trio.current_time()
                if prev is not None:  # a cell that did not report since keeps its last rate
                    cell_rates = rates(prev, reply, now - prev_t, cell_rates)
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


# ---------------------------------------------------------------- commands


def register(app: cyclopts.App) -> None:
    """Attach ``status``, ``top`` and ``logs`` to ``app``."""
    @app.command(name="status")
    def _status(*, json: bool = False) -> int:
        """Show every cell of the running mesh as the root sees it.

        With --json, prints one document (stable; "schema" is bumped when a
        field changes meaning):
        "schema" (1); "root": {"pid", "uptime" (s), "manifest", "stopping"
        (true once the root is stopping: `down`, SIGTERM, its top supervisor
        gave up)};
        "cells": a list of {"name", "supervisor" (the name of its
        supervisor: "root" for the top one, a [supervisors.X] name,
        "~dynamic", or the replicated cell's name for a replica),
        "state" (running|starting|dormant|stopping (being stopped: its
        on_stop runs)|restarting (ended; its supervisor restarts it after a
        backoff delay)|stopped), "pid" (null when not
        running), "restarts", "uptime" (s or null), "msgs_in", "msgs_out"
        (cumulative since the process started), "rss" (bytes or null),
        "cpu_percent" (or null), "rtt_p50_us", "rtt_p99_us" (service times
        over the last report interval, null when idle), "backend", "dna"
        (the first 12 hex digits of the code's content hash), "version" (the
        cell class's version, "" if it declares none or has not started
        yet: a dormant cell's code is not imported), "swap" (the phase of a
        hot swap in progress, or null), "last_exit" (the last crash: exit
        status and the exception the cell reported, or null), "last_exit_at"
        (Unix time or null), "stats_at" (Unix time the root received the
        counters and RTTs: about once a second; null before the first),
        "restart_in" (s until a "restarting" cell starts again, else null),
        "silent_for" (s since a running cell was last heard from, once over
        5 s: its event loop is blocked or it is stopped; else null),
        "replica": null for a plain cell; for a replica
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
        A number that is not finite or does not fit in 64 bits is null.
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

        Press q (or Ctrl-C) to quit. Cells report their counters about once a
        second: msgs/s is the change between a cell's two last reports over
        the time between them, whatever INTERVAL. When stdout is not a
        terminal, or with --once, prints one frame (two snapshots at least
        INTERVAL apart, waiting up to 1.5 s more for the cells' next reports)
        and exits.

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
    "add_row",
    "cell_json",
    "cells_table",
    "fetch_status",
    "group_json",
    "group_lines",
    "last_exits",
    "rates",
    "register",
    "replica_cells",
    "replica_json",
    "restart_panel",
    "run_status",
    "run_top",
    "stale_reports",
    "status_header",
    "status_json",
    "status_table",
    "top_frame",
]
