"""``status`` says when a running cell has gone silent (hung or stopped).

A cell reports every second. One whose event loop is blocked, or whose
process is stopped (SIGSTOP), still runs to its supervisor: its state stays
``running``, and ``silent_for`` says how long the root has not heard from
it (an audit found a hung cell indistinguishable from a healthy one).
Real root, real host-sandboxed cell, a real SIGSTOP.
"""

from __future__ import annotations

import io
import os
import signal

import trio
from rich.console import Console
from test_root import cell, running_root

from cellmesh.actors._statusnotes import SILENT_AFTER
from cellmesh.cli._ops import status_json, status_table


def _echo(root: object) -> object:
    return next(c for c in root.status().cells if c.name == "echo")  # type: ignore[attr-defined]


async def test_a_stopped_cell_shows_silent_then_recovers() -> None:
    async with running_root(cell("echo", "Echoer")) as (root, _):
        with trio.fail_after(30):
            while _echo(root).state != "running" or _echo(root).stats_at is None:
                await trio.sleep(0.05)
        row = _echo(root)
        assert row.silent_for is None
        os.kill(row.pid, signal.SIGSTOP)
        try:
            with trio.fail_after(30):
                while _echo(root).silent_for is None:
                    await trio.sleep(0.1)
            row = _echo(root)
            assert row.state == "running" and row.silent_for > SILENT_AFTER
            assert status_json(root.status())["cells"][0]["silent_for"] > SILENT_AFTER
            buf = io.StringIO()
            Console(file=buf, width=200, no_color=True).print(status_table(root.status()))
            assert "running, silent" in buf.getvalue(), buf.getvalue()
        finally:
            os.kill(row.pid, signal.SIGCONT)
        with trio.fail_after(30):  # its next report clears it
            while _echo(root).silent_for is not None:
                await trio.sleep(0.1)
        assert _echo(root).pid == row.pid  # nothing restarted it
