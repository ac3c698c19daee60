"""What ``cellmesh status`` and ``top`` say of a real root: stopping, restarting, rates.

Each test runs a root in-process with real cells (``rootcells.py``; see
``test_root.py``) and reads its status as the CLI does, over the control
socket, then renders it with the CLI's own functions.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import trio
from rootcells import Echo, Spawn
from test_root import cell, crash, running_root

from cellmesh import Synapse
from cellmesh.actors._statusnotes import count_text
from cellmesh.actors.control import CellStatus, StatusReply, StopMesh
from cellmesh.cli import _fmt, _ops
from cellmesh.testing import MeshStopped

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")

#: A restart backoff long enough to be seen, short enough for a test.
BACKOFF = "backoff = { initial = 2.0, factor = 1.0, max = 2.0 }\n"


def _text(renderable: object) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=160, no_color=True).print(renderable)
    return buf.getvalue()


def _row(reply: StatusReply, name: str) -> CellStatus:
    return next(c for c in reply.cells if c.name == name)


async def _status_until(paths_home: Path, name: str, state: str) -> StatusReply:
    """Ask the root (as ``cellmesh status`` does) until ``name`` is in ``state``."""
    from cellmesh.config import Paths

    paths = Paths.from_env({"CELL_HOME": str(paths_home)})
    with trio.fail_after(20):
        while True:
            reply = await _ops.fetch_status(paths)
            if _row(reply, name).state == state:
                return reply
            await trio.sleep(0.02)


async def test_status_shows_the_root_stopping_and_the_cell_it_is_stopping() -> None:
    """Audit: 2 s into `down`, with a cell in its long on_stop after SIGTERM, `status`
    showed every cell `running` and nothing said the root was stopping."""
    toml = cell("first", "Echoer") + cell("slow", "Stubborn", shutdown="30", standby="false")
    logs: list[str] = []
    with pytest.raises(MeshStopped):
        async with running_root(toml, logs=logs) as (root, paths):
            assert not root.status().stopping
            assert _row(root.status(), "slow").state == "running"
            async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
                await ctl.fire(StopMesh(timeout=30.0))
            reply = await _status_until(paths.home, "slow", "stopping")  # in its on_stop
            assert reply.stopping
            assert _row(reply, "first").state == "running"  # its turn comes after slow's
            assert _row(reply, "slow").pid is not None
            header = _text(_ops.status_header(reply))
            assert header.startswith(f"root pid {reply.root_pid} (stopping), up "), header
            table = _text(_ops.status_table(reply)).splitlines()
            assert table[2].split()[:3] == ["slow", "root", "stopping"], table
            doc = _ops.status_json(reply)
            assert doc["root"]["stopping"] is True  # type: ignore[index]
            crash(root, "slow")  # cut its minute-long on_stop short
            with trio.fail_after(30):
                await trio.sleep_forever()  # the root ends: the block is cancelled
    assert any(re.search(r"root: up \(pid \d+, 2 cells, backend host\)", x) for x in logs), logs


async def test_a_cell_in_its_restart_backoff_shows_when_it_restarts() -> None:
    """Audit: during a restart backoff the cell showed `stopped`, nothing saying that
    a restart was coming."""
    toml = "[supervisor]\nintensity = 5\nperiod = 60\n" + BACKOFF + cell("c", "Echoer")
    async with running_root(toml) as (root, paths):
        crash(root, "c")
        reply = await _status_until(paths.home, "c", "restarting")
        row = _row(reply, "c")
        assert row.pid is None and row.restart_in is not None and 0 < row.restart_in <= 2.0
        shown = _text(_fmt.state_text(row)).strip()
        assert re.fullmatch(r"restarting in [0-2]\.\ds", shown), shown
        assert _ops.status_json(reply)["cells"][0]["state"] == "restarting"  # type: ignore[index]
        reply = await _status_until(paths.home, "c", "running")
        assert _row(reply, "c").restart_in is None and _row(reply, "c").restarts == 1


async def test_a_pool_child_is_named_as_status_names_it_in_logs_and_its_backoff() -> None:
    """Audit: the pool supervisor's log named its instances `worker-1` (its child ids)
    while `status` names them `watcher.a`."""
    toml = (
        cell("watcher", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
        + '[supervisors.pool]\nstrategy = "simple_one_for_one"\ntemplate = "worker"\n'
        + "intensity = 5\n" + BACKOFF
    )
    logs: list[str] = []
    async with running_root(toml, logs=logs) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            assert (await syn.fire(Spawn(suffix="a"))).name == "watcher.a"
        assert root.slots["watcher.a"].child_id == "worker-1"
        crash(root, "watcher.a")
        reply = await _status_until(paths.home, "watcher.a", "restarting")
        assert _row(reply, "watcher.a").restart_in is not None
        delaying = [x for x in logs if "delaying" in x]
        assert delaying == ["root: supervisor pool: delaying watcher.a 2s"], logs
        assert not any("worker-1" in x for x in logs), logs
        await _status_until(paths.home, "watcher.a", "running")


async def test_top_once_shows_the_steady_rate_whatever_its_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit: under a steady 200 calls/s, `top --once --interval 0.5` showed 0 or ~400
    msgs/s (the counters change once a second, when the cell reports)."""
    async with running_root(cell("echo", "Echoer")) as (_root, paths):
        monkeypatch.setenv("CELL_HOME", str(paths.home))
        for name in ("CELL_SOCKET_DIR", "CELL_UMBILICAL"):
            monkeypatch.delenv(name, raising=False)

        async def load(stop: trio.Event) -> None:
            async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
                start, n = trio.current_time(), 0
                while not stop.is_set():
                    await syn.fire(Echo(n))
                    n += 1
                    await trio.sleep_until(start + n / 200)

        def top(interval: float) -> str:
            buf = io.StringIO()
            assert _ops.run_top(interval=interval, once=True, out=buf) == 0
            return buf.getvalue()

        stop = trio.Event()
        seen: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, stop)
            await trio.sleep(1.5)  # the cell reported the load already
            for interval in (0.3, 0.5, 0.3):
                out = await trio.to_thread.run_sync(top, interval)
                row = next(x for x in out.splitlines() if x.startswith("echo "))
                seen.append(row.split()[3])
            stop.set()
        assert all(140 <= float(r) <= 260 for r in seen), seen


def test_count_text_counts_a_replicated_cell_once() -> None:
    """Audit: `up` said "3 cells" for one cell with 3 replicas, and "1 cells"."""
    assert [count_text(1), count_text(4), count_text(1, 3), count_text(3, 1)] == [
        "1 cell", "4 cells", "1 cell (3 replicas)", "3 cells (1 replica)"]
