"""The root daemon with real cell processes: activation, restarts, escalation, monitors.

Each test runs a root in-process (``serve_root``) on a private ``CELL_HOME``
under /tmp (short: socket paths are limited to 107 bytes), with cells from
``rootcells.py``. Synchronisation is by the system's own guarantees -- a
call to a cell that is being restarted waits in the listener's backlog
until the new process accepts it -- never by sleeping.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import rootcells
import trio
from rootcells import (
    AwaitDown,
    Dial,
    Downs,
    Echo,
    Forward,
    Hog,
    HogNow,
    Quit,
    Raise,
    SayReady,
    Slow,
    Spawn,
    StopKid,
    Watch,
    WhoAmI,
)

from cellmesh import CellUnavailable, RemoteCellError, Synapse
from cellmesh.actors._rootlock import peer_uid_filter
from cellmesh.actors.control import KillCell, StatusReply, StatusRequest, StopMesh
from cellmesh.actors.errors import RootAlreadyRunning, SupervisorEscalation
from cellmesh.actors.root import Root, serve_root
from cellmesh.config import Paths
from cellmesh.sandbox import read_events
from cellmesh.testing import MeshStopped
from cellmesh.testing.mesh import open_root

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


@asynccontextmanager
async def running_root(
    toml: str, *, sandbox: str = "host", logs: list[str] | None = None, keep: bool = False,
    metrics: tuple[str, int] | None = None,
) -> AsyncIterator[tuple[Root, Paths]]:
    """A root serving ``toml`` (its DNA is rootcells.py) until the block ends."""
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        sink = logs if logs is not None else []
        async with open_root(home, toml, sandbox=sandbox, log=sink.append,
                             metrics=metrics) as root:
            yield root, root.paths
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def cell(name: str, cls: str, **keys: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return f'[cells.{name}]\ndna = "rootcells.py"\nentry = "rootcells:{cls}"\n{extra}\n'


async def until(root: Root, name: str, predicate: Callable[[], bool]) -> None:
    """Wait (on the slots' change events, ``name``'s first) until ``predicate()`` holds."""
    with trio.fail_after(60):
        while not predicate():
            events = [slot.changed for slot in root.slots.values()]
            async with trio.open_nursery() as nursery:

                async def wake(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                for event in events:
                    nursery.start_soon(wake, event)


def leaves(group: BaseExceptionGroup, kind: type[BaseException]) -> list[BaseException]:
    """The exceptions of type ``kind`` anywhere in a (nested) exception group."""
    matched = group.subgroup(kind)
    out: list[BaseException] = []
    todo: list[BaseException] = [matched] if matched is not None else []
    while todo:
        exc = todo.pop()
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        else:
            out.append(exc)
    return out


def crash(root: Root, name: str) -> None:
    """SIGKILL the process serving ``name`` (as ``cellmesh kill`` does)."""
    instance = root.slots[name].instance
    assert instance is not None
    root.backend.kill(instance.cell_id, as_crash=True)


def serving_pid(root: Root, name: str) -> int | None:
    return next(c.pid for c in root.status().cells if c.name == name)


def state(root: Root, name: str) -> str:
    return next(c.state for c in root.status().cells if c.name == name)


def pids_alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


# --------------------------------------------------------------------------


async def test_eager_cell_serves_and_status_reports_it() -> None:
    async with running_root(cell("echo", "Echoer")) as (root, paths):
        assert state(root, "echo") == "running"
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(7)) == Echo(7)
            me = await syn.fire(WhoAmI())
        async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
            reply = await ctl.fire(StatusRequest())
        assert isinstance(reply, StatusReply)
        (row,) = reply.cells
        assert (row.name, row.state, row.supervisor, row.restarts) == ("echo", "running", "root", 0)
        assert row.pid is not None and row.rss is not None and row.rss > 0
        assert row.backend == "host"
        assert me.name == "echo"
        assert len(row.dna) == 12


async def test_on_demand_cell_spawns_once_for_concurrent_first_grows() -> None:
    toml = cell("lazy", "Echoer", activation='"on_demand"')
    async with running_root(toml) as (root, paths):
        assert state(root, "lazy") == "dormant"
        pids: list[int] = []

        async def caller() -> None:
            async with Synapse.grow("lazy", socket_dir=paths.socket_dir) as syn:
                pids.append((await syn.fire(WhoAmI())).token)

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(caller)
        assert len(pids) == 16 and len(set(pids)) == 1
        assert state(root, "lazy") == "running"
        assert root.slots["lazy"].restarts == 0  # one activation, served by one process


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_kill_during_calls_fails_them_and_the_cell_comes_back(
    sandbox: str, bwrap_usable: str | None
) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = "[supervisor]\nintensity = 3\n\n" + cell("echo", "Echoer")
    async with running_root(toml, sandbox=sandbox) as (root, paths):
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            before = await syn.fire(WhoAmI())
            failures: list[BaseException] = []

            async def slow_call() -> None:
                try:
                    await syn.fire(Slow(1))
                except CellUnavailable as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(slow_call)
                await until(root, "echo", lambda: root.slots["echo"].stats is not None
                            or state(root, "echo") == "running")
                await trio.testing.wait_all_tasks_blocked()
                async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
                    await ctl.fire(KillCell(name="echo"))
            assert len(failures) == 3
            after = await syn.fire(WhoAmI())  # waits in the backlog for the restarted cell
            assert after.token != before.token
            assert await syn.fire(Echo(5)) == Echo(5)
        assert root.slots["echo"].restarts == 1
        assert [r.cell for r in root.restart_log] == ["echo"]
        assert "killed" in root.restart_log[0].reason


async def test_crash_loop_escalates_and_stops_everything() -> None:
    toml = "[supervisor]\nintensity = 1\nperiod = 30\n\n" + cell("a", "Echoer")
    toml += cell("b", "Echoer")
    logs: list[str] = []
    pids: list[int] = []
    with pytest.raises(BaseExceptionGroup) as info:
        async with running_root(toml, logs=logs) as (root, _paths):
            pids = [c.pid for c in root.status().cells if c.pid is not None]
            assert len(pids) == 2
            for _ in range(2):
                old = root.slots["b"].instance

                def replaced(old: object = old) -> bool:
                    return root.escalation is not None or root.slots["b"].instance is not old

                crash(root, "b")
                await until(root, "b", replaced)
            with trio.fail_after(60):
                await trio.sleep_forever()  # the root's nursery is cancelled by the escalation
    assert info.group_contains(SupervisorEscalation)
    assert any("gave up" in line for line in logs)
    assert pids_alive(pids) == []


async def test_a_cell_failing_to_start_is_reported_by_name() -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with running_root(cell("doomed", "Crasher", start_timeout="20")):
            pass
    (exc,) = leaves(info.value, SupervisorEscalation)
    assert exc.child_id == "doomed"
    assert "exited before it was ready" in str(exc)


async def test_an_unknown_membrane_option_is_a_start_failure_naming_it() -> None:
    """docs/cells.md: "an unknown key is a ConfigError naming it at start". It was
    found only once the membrane opened, after the cell said it was ready: `up`
    reported the mesh up, then the cell crash-looped until the root gave up."""
    with pytest.raises(BaseExceptionGroup) as info:
        async with running_root(cell("typo", "TypoOptions")):
            pass
    (exc,) = leaves(info.value, SupervisorEscalation)
    assert exc.child_id == "typo"
    assert "exited before it was ready" in str(exc)
    assert "max_frame_sise: is not a membrane option" in str(exc)


async def test_nested_supervisor_escalation_restarts_the_subtree() -> None:
    toml = (
        "[supervisor]\nintensity = 5\nchildren = [\"team\"]\n\n"
        "[supervisors.team]\nintensity = 0\nchildren = [\"x\", \"y\"]\n\n"
        + cell("x", "Echoer") + cell("y", "Echoer")
    )
    async with running_root(toml) as (root, paths):
        x_before = root.slots["x"].instance
        crash(root, "y")
        # team gives up (intensity 0): x and y stop; root restarts team, so both are new.
        await until(root, "x", lambda: root.slots["x"].instance is not x_before
                    and state(root, "x") == "running")
        await until(root, "y", lambda: state(root, "y") == "running")
        async with Synapse.grow("x", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(1)) == Echo(1)
        assert root.escalation is None


async def test_transient_cell_that_quits_is_restarted_by_the_next_connection() -> None:
    toml = cell("job", "Echoer", restart='"transient"')
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("job", socket_dir=paths.socket_dir) as syn:
            first = (await syn.fire(WhoAmI())).token
            await syn.fire(Quit())
        await until(root, "job", lambda: state(root, "job") == "stopped")
        assert root.slots["job"].restarts == 0  # a normal exit of a transient child is final
        async with Synapse.grow("job", socket_dir=paths.socket_dir) as syn:
            assert (await syn.fire(WhoAmI())).token != first
        assert state(root, "job") == "running"


async def test_monitor_delivers_cell_down_with_the_reason() -> None:
    toml = cell("echo", "Echoer") + cell("watcher", "Watcher")
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            await syn.fire(Watch(target="echo"))
            await syn.fire(Watch(target="ghost"))
            crash(root, "echo")
            with trio.fail_after(60):
                while True:
                    downs = (await syn.fire(Downs())).downs
                    if len(downs) == 2:
                        break
                    await root.slots["echo"].changed.wait()
        assert sorted(downs)[0] == "echo:killed by SIGKILL (killed on request)"
        assert sorted(downs)[1] == "ghost:noproc"


async def test_a_connection_to_a_cell_whose_supervisor_gave_up_says_which_supervisor() -> None:
    """A temporary sub-supervisor with intensity 0 gives up at its child's first crash and
    is not restarted: a connection to the child is refused, and the root's log names the
    supervisor (it said "child '': the supervisor has stopped")."""
    toml = ("[supervisor]\nintensity = 5\nchildren = [\"keep\", \"s\"]\n\n"
            "[supervisors.s]\nintensity = 0\nrestart = \"temporary\"\nchildren = [\"x\"]\n\n"
            + cell("keep", "Echoer") + cell("x", "Echoer"))
    logs: list[str] = []
    async with running_root(toml, logs=logs) as (root, paths):
        crash(root, "x")
        await until(root, "x", lambda: state(root, "x") == "stopped")
        with pytest.raises(CellUnavailable):
            async with Synapse.grow("x", socket_dir=paths.socket_dir) as syn:
                await syn.fire(Echo(1))
        with trio.fail_after(30):
            while not any("on-demand start of x failed" in line for line in logs):
                await trio.sleep(0.05)
        line = next(line for line in logs if "on-demand start of x failed" in line)
        assert "its supervisor s has stopped" in line and "child ''" not in line, line
        async with Synapse.grow("keep", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(2)) == Echo(2)  # the rest of the mesh serves


async def test_monitor_of_a_dormant_on_demand_cell_is_noproc_at_once() -> None:
    """docs/cells.md: `noproc` at once if the cell is not running. A dormant on-demand
    cell has no process (it used to count as alive: the monitor waited, then fired when
    the cell, started much later, stopped)."""
    toml = cell("lazy", "Echoer", activation='"on_demand"') + cell("watcher", "Watcher")
    async with running_root(toml) as (root, paths):
        assert state(root, "lazy") == "dormant"
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            await syn.fire(Watch(target="lazy"))
            with trio.fail_after(30):
                downs = await syn.fire(AwaitDown())
        assert downs.downs == ["lazy:noproc"]
        assert state(root, "lazy") == "dormant"  # the monitor did not start it


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_dynamic_children_respect_the_quota(sandbox: str, bwrap_usable: str | None) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = (
        cell("watcher", "Watcher", max_children="1", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with running_root(toml, sandbox=sandbox) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            with pytest.raises(RemoteCellError, match="suffix may not be empty"):
                await syn.fire(Spawn(suffix=""))  # (it started a child named "watcher.")
            child = await syn.fire(Spawn(suffix="a"))
            assert child.name == "watcher.a"
            # the parent reaches its child (inside bwrap: through /run/cell/children)
            assert await syn.fire(Forward(target="watcher.a", n=9)) == Echo(9)
            async with Synapse.grow("watcher.a", socket_dir=paths.socket_dir) as kid:
                assert await kid.fire(Echo(3)) == Echo(3)
            with pytest.raises(RemoteCellError, match="quota"):
                await syn.fire(Spawn(suffix="b"))
        # the child dies with its parent
        child_pid = serving_pid(root, "watcher.a")
        assert child_pid is not None
        crash(root, "watcher")
        await until(root, "watcher", lambda: "watcher.a" not in root.slots)
        assert pids_alive([child_pid]) == []


async def test_a_child_stopped_and_started_again_under_its_name_keeps_working() -> None:
    """A parent starts, calls and stops a child under the same name, again and again.
    Every start works: the stopped slot's umbilical server waited for the *name* to
    go, so once a new slot took the name before it woke, it listened forever and
    every later start of the name failed with MembraneInUse. The root's descriptors
    stay flat, and the parent keeps no synapse to a child it stopped (it kept one
    per name it ever called, with a task each)."""
    toml = (
        cell("parent", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("parent", socket_dir=paths.socket_dir) as parent:
            fds = 0
            for i in range(30):
                suffix = "r" if i % 2 else f"u{i}"
                assert (await parent.fire(Spawn(suffix=suffix))).name == f"parent.{suffix}"
                assert await parent.fire(Forward(target=f"parent.{suffix}", n=i)) == Echo(i)
                assert await parent.fire(StopKid(suffix=suffix)) == Echo(0)
                if i == 5:
                    fds = len(os.listdir("/proc/self/fd"))
            assert len(os.listdir("/proc/self/fd")) <= fds + 4
        assert not any(name.startswith("parent.") for name in root.slots)


async def test_an_umbilical_server_ends_with_its_slot_even_if_its_name_is_taken_again() -> None:
    """The race the churn test above cannot force: a new slot takes the name before
    the old slot's umbilical server wakes. The server follows its own slot, not the
    name: it ends, and its socket goes (it listened forever, holding the name)."""
    toml = (
        cell("parent", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("parent", socket_dir=paths.socket_dir) as parent:
            await parent.fire(Spawn(suffix="r"))
        old = root.slots["parent.r"]
        assert old.umbilical_path.exists()
        root.slots["parent.r"] = root.slots["parent"]  # (any other slot under that name)
        try:
            old.touch()
            with trio.fail_after(5):
                while old.umbilical_path.exists():
                    await trio.sleep(0.01)
        finally:
            root.slots["parent.r"] = old


async def test_a_cells_version_is_kept_cut_and_printable() -> None:
    """A cell's version is its own text: the root keeps 100 printable characters of
    it, so twenty such cells cannot make a status too large to send, and none can
    write terminal escapes into an operator's `cellmesh status`."""
    async with running_root(cell("boast", "Boastful")) as (root, _paths):
        row = next(c for c in root.status().cells if c.name == "boast")
        assert len(row.version) <= 100 and row.version.isprintable()
        assert row.version.startswith("?[2J?[31mPWNED?store  root  running?vvv")
        assert row.version.endswith("...")


async def test_linked_cells_fail_together() -> None:
    toml = "[supervisor]\nintensity = 5\n\n" + cell("a", "Echoer", calls='["b"]') + cell(
        "b", "Echoer"
    )
    async with running_root(toml) as (root, _paths):
        # link a -> b through a's umbilical, the way a cell's self.link() does
        from cellmesh.actors.control import Link

        async with Synapse.grow("mitosis", socket_path=root.slots["a"].umbilical_path) as umb:
            await umb.fire(Link(target="b", trap_exits=False))
        a_before = root.slots["a"].instance
        crash(root, "b")
        await until(root, "a", lambda: root.slots["a"].instance is not a_before
                    and state(root, "a") == "running")
        assert [(r.cell, r.reason) for r in root.restart_log] == [
            ("b", "killed by SIGKILL (killed on request)"),
            ("a", "killed by SIGKILL (linked cell b failed)"),  # the link, not an operator
        ]


async def test_a_trapping_cell_linked_by_another_gets_cell_down_instead_of_dying() -> None:
    """docs/cells.md: when either side of a link stops abnormally the root kills the
    other, unless that other set `trap_exits = True`. The root used to know a cell's
    flag only when that cell asked for the link itself: linked by a non-trapping cell,
    a trapping one was killed with it."""
    toml = ("[supervisor]\nintensity = 5\n\n" + cell("plain", "Echoer", calls='["trapper"]')
            + cell("trapper", "TrappingWatcher"))
    async with running_root(toml) as (root, _paths):
        from cellmesh.actors.control import Link

        async with Synapse.grow("mitosis",
                                socket_path=root.slots["plain"].umbilical_path) as umb:
            await umb.fire(Link(target="trapper", trap_exits=False))
        trapper_pid = serving_pid(root, "trapper")
        crash(root, "plain")
        async with Synapse.grow("trapper", socket_dir=root.paths.socket_dir) as syn:
            with trio.fail_after(30):
                downs = await syn.fire(AwaitDown())
        assert downs.downs == ["plain:killed by SIGKILL (killed on request)"]
        assert serving_pid(root, "trapper") == trapper_pid  # not killed with it
        assert [r.cell for r in root.restart_log] == ["plain"]


@pytest.mark.parametrize("sandbox", ["bwrap", "host"])
async def test_cells_call_each_other_only_through_granted_sockets(
    bwrap_usable: str | None, sandbox: str
) -> None:
    """Under bwrap a cell sees only the sockets of the cells its ``calls`` lists;
    under the host sandbox (no boundary) its socket dir shows the same ones, so a
    test there fails as production would."""
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = (
        cell("caller", "Echoer", calls='["echo"]') + cell("echo", "Echoer")
        + cell("secret", "Echoer")
    )
    async with running_root(toml, sandbox=sandbox) as (_root, paths):
        async with Synapse.grow("caller", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Forward(target="echo", n=4)) == Echo(4)
            with pytest.raises(RemoteCellError, match="CellUnavailable") as info:
                await syn.fire(Forward(target="secret", n=4))
            # The error names the likely cause, not only "is the cell running?"
            assert "lists in `calls`" in info.value.remote_message


@pytest.mark.parametrize("sandbox", ["bwrap", "host"])
async def test_calls_naming_a_template_reach_its_running_instances(
    bwrap_usable: str | None, sandbox: str
) -> None:
    """docs/manifest.md: `calls` names "the cells (or templates) it may call" -- for a
    template, its running instances: bound into the caller as they start (the grant
    was empty), also into a caller started after them, and only into such callers."""
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = (
        cell("parent", "Watcher", max_children="2", templates='["worker"]')
        + cell("user", "Watcher", calls='["worker"]')
        + cell("stranger", "Watcher")
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with running_root(toml, sandbox=sandbox) as (root, paths):
        async with Synapse.grow("parent", socket_dir=paths.socket_dir) as parent:
            assert (await parent.fire(Spawn(suffix="a"))).name == "parent.a"
        async with Synapse.grow("user", socket_dir=paths.socket_dir) as user:
            assert await user.fire(Forward(target="parent.a", n=5)) == Echo(5)
        async with Synapse.grow("stranger", socket_dir=paths.socket_dir) as stranger:
            with pytest.raises(RemoteCellError, match="CellUnavailable") as info:
                await stranger.fire(Forward(target="parent.a", n=5))
            assert "the running instances of the templates listed there" in (
                info.value.remote_message)
        old = root.slots["user"].instance
        async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
            await ctl.fire(KillCell(name="user"))  # its new sandbox is made after parent.a
        await until(root, "user", lambda: root.slots["user"].instance is not old
                    and root.slots["user"].instance is not None
                    and root.slots["user"].instance.state == "running")
        async with Synapse.grow("user", socket_dir=paths.socket_dir) as user:
            assert await user.fire(Forward(target="parent.a", n=6)) == Echo(6)


async def test_a_receptor_raising_system_exit_fails_its_call_and_the_cell_serves_on() -> None:
    """A receptor cannot end its cell by raising: SystemExit or a library's own
    BaseException is an error reply to that caller (docs/cells.md)."""
    async with running_root(cell("echo", "Echoer"), sandbox="bwrap") as (root, paths):
        pid = serving_pid(root, "echo")
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            for what, name in (("system-exit", "SystemExit"), ("base", "Stop")):
                with pytest.raises(RemoteCellError) as info:
                    await syn.fire(Raise(what=what))
                assert info.value.type_name.endswith(name)
            assert await syn.fire(Echo(5)) == Echo(5)
        assert serving_pid(root, "echo") == pid
        assert next(c.restarts for c in root.status().cells if c.name == "echo") == 0


async def test_a_cell_repeating_cell_ready_adds_one_ready_event_only() -> None:
    """The root logs `ready` once per process: a cell sending CellReady in a loop
    cannot grow its events log."""
    async with running_root(cell("echo", "Echoer")) as (root, paths):
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            await syn.fire(SayReady(times=50))
            assert await syn.fire(Echo(1)) == Echo(1)
        events = [e for e in read_events(paths.log_dir / "echo.events.jsonl")
                  if e["event"] == "ready"]
        assert [e["pid"] for e in events] == [serving_pid(root, "echo")]


async def test_a_second_root_is_refused_with_the_pid() -> None:
    async with running_root(cell("echo", "Echoer")) as (root, paths):
        manifest = root.manifest
        with pytest.raises(RootAlreadyRunning) as info:
            await serve_root(manifest, paths=paths, env={"CELL_SANDBOX": "host"})
        assert info.value.pid == os.getpid()
        assert "already running" in str(info.value)


async def test_stop_mesh_stops_cells_in_reverse_order_and_leaves_nothing() -> None:
    toml = cell("first", "Echoer") + cell("second", "Echoer")
    with pytest.raises(MeshStopped, match="the rest of the block did not run"):
        async with running_root(toml, keep=True) as (root, paths):
            pids = [c.pid for c in root.status().cells if c.pid is not None]
            events_dir = paths.log_dir
            serving = {name: root.slots[name].instance.cell_id  # type: ignore[union-attr]
                       for name in ("first", "second")}
            async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
                await ctl.fire(StopMesh(timeout=5.0))
            with trio.fail_after(60):
                await trio.sleep_forever()  # the root ends; its nursery cancels the block
    assert pids_alive(pids) == []
    stops = {}
    for name in ("first", "second"):
        exits = [e for e in read_events(events_dir / f"{name}.events.jsonl")
                 if e["event"] == "exited" and e["cell_id"] == serving[name]]
        stops[name] = exits[-1]
    assert all(e["reason"] == "stop" for e in stops.values())
    assert float(str(stops["second"]["ts"])) <= float(str(stops["first"]["ts"]))
    assert not paths.umbilical.exists()
    assert not (paths.socket_dir / "first.sock").exists()
    shutil.rmtree(paths.home)


def test_control_socket_admits_only_the_owner_uid() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid_filter(os.getuid())(a) is None
        refusal = peer_uid_filter(os.getuid() + 4242)(a)
        assert refusal is not None and f"uid {os.getuid()}" in refusal


async def test_a_network_grant_reaches_exactly_the_granted_destination(
    bwrap_usable: str | None,
) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    granted, other = trio.socket.socket(), trio.socket.socket()
    with granted, other:
        for listener in (granted, other):
            await listener.bind(("127.0.0.1", 0))
            listener.listen(8)
        port = granted.getsockname()[1]
        toml = cell("dialer", "Echoer", network=f'["127.0.0.1:{port}"]')

        async def echo_once(listener: trio.socket.SocketType) -> None:
            conn, _ = await listener.accept()
            with conn:
                await conn.send(await conn.recv(64))

        async with running_root(toml, sandbox="bwrap") as (_root, paths), trio.open_nursery() as n:
            n.start_soon(echo_once, granted)
            async with Synapse.grow("dialer", socket_dir=paths.socket_dir) as syn:
                ok = await syn.fire(Dial(host="127.0.0.1", port=port))
                denied = await syn.fire(Dial(host="127.0.0.1", port=other.getsockname()[1]))
        assert (ok.reply, ok.error) == (b"ping", "")
        assert denied.reply == b"" and denied.error


async def test_a_restart_hands_over_to_the_waiting_standby() -> None:
    async with running_root(cell("echo", "Echoer")) as (root, paths):
        slot = root.slots["echo"]
        await until(root, "echo", lambda: slot.standby is not None)
        assert slot.standby is not None
        standby_pid = slot.standby.pid
        crash(root, "echo")
        await until(root, "echo", lambda: state(root, "echo") == "running"
                    and serving_pid(root, "echo") == standby_pid)
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(2)) == Echo(2)
        await until(root, "echo", lambda: slot.standby is not None)  # the next one waits
        assert slot.standby is not None and slot.standby.pid != standby_pid


async def test_standby_false_keeps_one_process_per_cell() -> None:
    async with running_root(cell("solo", "Echoer", standby="false")) as (root, paths):
        slot = root.slots["solo"]
        assert slot.standby is None
        # Two backend ids (a hot swap needs the second), one process.
        assert len([i for i in slot.cell_ids if root.backend.process_id(i)]) == 1
        first = serving_pid(root, "solo")
        crash(root, "solo")
        async with Synapse.grow("solo", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(1)) == Echo(1)
        assert serving_pid(root, "solo") not in (None, first)
        assert slot.standby is None


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_a_cell_over_its_memory_limit_is_reported_as_a_memory_kill(
    sandbox: str, bwrap_usable: str | None
) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = "[supervisor]\nintensity = 5\n\n" + cell(
        "hog", "Hoarder", limits='{ memory = "400M" }', standby="false"
    )
    async with running_root(toml, sandbox=sandbox) as (root, paths):
        before = root.slots["hog"].instance
        async with Synapse.grow("hog", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Hog(mib=2048)) == Echo(2048)  # grows in a task
            await until(root, "hog", lambda: root.slots["hog"].instance is not before
                        and state(root, "hog") == "running")
            before = root.slots["hog"].instance
            with pytest.raises(CellUnavailable):  # grows inside the call: no error reply
                await syn.fire(HogNow(mib=2048))
        await until(root, "hog", lambda: root.slots["hog"].instance is not before
                    and state(root, "hog") == "running")
        records = [r.reason for r in root.restart_log if r.cell == "hog"]
        assert len(records) == 2
        assert all(r.startswith("memory limit") for r in records), records
        assert all("MemoryError: out of memory" in r for r in records), records


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_a_cell_out_of_memory_without_a_limit_is_reported_with_its_memory_error(
    sandbox: str, bwrap_usable: str | None
) -> None:
    """No rlimit: under bwrap exit code 137 reads as a SIGKILL, so the runtime's report
    (a MemoryError record on the report pipe before it exits) is what names the cause."""
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    toml = "[supervisor]\nintensity = 5\n\n" + cell("hog", "Hoarder", standby="false")
    async with running_root(toml, sandbox=sandbox) as (root, paths):
        before = root.slots["hog"].instance
        async with Synapse.grow("hog", socket_dir=paths.socket_dir) as syn:
            with pytest.raises(CellUnavailable):  # 16 TiB at once: MemoryError, exit 137
                await syn.fire(HogNow(mib=1 << 24))
        await until(root, "hog", lambda: root.slots["hog"].instance is not before
                    and state(root, "hog") == "running")
        (record,) = [r.reason for r in root.restart_log if r.cell == "hog"]
        expected = "killed by SIGKILL" if sandbox == "bwrap" else "exit code 137"
        assert record.startswith(expected), record
        assert record.endswith("MemoryError: out of memory (the runtime exits with 137)"), record


async def test_undeclared_cells_spawn_through_the_control_api_only_when_allowed() -> None:
    from cellmesh.actors.control import Refused, SpawnCell

    toml = "[root]\nallow_spawn = true\n\n" + cell("echo", "Echoer")
    async with running_root(toml) as (root, paths):
        dna = str(root.manifest.path.parent / "rootcells.py")
        async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
            ack = await ctl.fire(SpawnCell(name="extra", dna=dna, entry="rootcells:Echoer"))
            assert ack.text == "extra"
            # Operator errors are answered with Refused (no remote traceback).
            refused = await ctl.fire(SpawnCell(name="echo", dna=dna, entry="rootcells:Echoer"))
            assert isinstance(refused, Refused) and "exists" in refused.message
            refused = await ctl.fire(SpawnCell(name="rel", dna="rootcells.py", entry=""))
            assert isinstance(refused, Refused) and "absolute" in refused.message
            assert refused.error == "RootRequestError"
        async with Synapse.grow("extra", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire(Echo(6)) == Echo(6)
        assert root.slots["extra"].supervisor == "~dynamic"
    async with running_root(cell("echo", "Echoer")) as (root, paths):
        async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
            refused = await ctl.fire(SpawnCell(name="extra", dna="/x.py", entry=""))
            assert isinstance(refused, Refused) and "allow_spawn" in refused.message


async def test_children_of_a_pooled_template_run_under_its_simple_one_for_one_supervisor() -> None:
    toml = (
        cell("watcher", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
        + '[supervisors.pool]\nstrategy = "simple_one_for_one"\ntemplate = "worker"\n'
        + "intensity = 5\n"
    )
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            assert (await syn.fire(Spawn(suffix="a"))).name == "watcher.a"
            child = root.slots["watcher.a"]
            assert (child.supervisor, child.child_id) == ("pool", "worker-1")
            first = serving_pid(root, "watcher.a")
            crash(root, "watcher.a")  # the pool restarts it (a permanent template)
            assert await syn.fire(Forward(target="watcher.a", n=5)) == Echo(5)
            assert serving_pid(root, "watcher.a") not in (None, first)
        assert [r.cell for r in root.restart_log] == ["watcher.a"]
        crash(root, "watcher")  # children stop with their parent
        await until(root, "watcher", lambda: "watcher.a" not in root.slots)
        pool = root.supervisors["pool"]
        assert [i.child_id for i in pool.which_children()] == []


async def test_a_cell_may_start_children_in_on_start() -> None:
    """The hidden ``~dynamic`` supervisor runs before any cell (and exists in every mesh);
    a pool listed after the cell is not running yet: the error says so."""
    worker = '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
    toml = cell("p", "EagerParent", max_children="2", templates='["worker"]') + worker
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("p", socket_dir=paths.socket_dir) as syn:
            assert (await syn.fire(WhoAmI())).name == "p.first"
            assert await syn.fire(Forward(target="p.first", n=3)) == Echo(3)
        assert root.slots["p.first"].supervisor == "~dynamic"
    pool = '[supervisors.pool]\nstrategy = "simple_one_for_one"\ntemplate = "worker"\n\n'
    late = toml + pool + '[supervisor]\nchildren = ["p", "pool"]\n'
    async with running_root(late) as (root, paths):
        async with Synapse.grow("p", socket_dir=paths.socket_dir) as syn:
            said = (await syn.fire(WhoAmI())).name
        assert "the pool supervisor 'pool' of template 'worker' is not running now" in said
        assert "list the pool before" in said
    early = toml + pool + '[supervisor]\nchildren = ["pool", "p"]\n'
    async with running_root(early) as (root, paths):
        async with Synapse.grow("p", socket_dir=paths.socket_dir) as syn:
            assert (await syn.fire(WhoAmI())).name == "p.first"
        assert root.slots["p.first"].supervisor == "pool"


async def test_the_root_stops_while_a_cell_keeps_failing_to_restart(tmp_path: Path) -> None:
    """A crash loop its supervisor's intensity allows (50 in 10 s) never ends by itself:
    stopping the mesh must not wait behind it."""
    mark = tmp_path / "started-once"
    toml = ("[supervisor]\nintensity = 50\nperiod = 10\n\n"
            + cell("again", "FailsAgain", env=f'{{ MARK = "{mark}" }}'))
    with trio.fail_after(60):
        async with running_root(toml) as (root, paths):
            assert mark.exists()
            async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
                await ctl.fire(KillCell(name="again"))
            while len(root.restart_log) < 3:  # looping: each start fails in on_start
                await trio.sleep(0.05)
            t0 = trio.current_time()
        assert trio.current_time() - t0 < 20, "the stop waited behind the crash loop"


async def test_children_of_a_pool_that_gave_up_are_forgotten_when_it_starts_again() -> None:
    toml = (
        cell("watcher", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
        + '[supervisors.pool]\nstrategy = "simple_one_for_one"\ntemplate = "worker"\n'
        + "intensity = 0\n\n[supervisor]\nintensity = 5\n"
    )
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            for suffix in ("a", "b"):
                assert (await syn.fire(Spawn(suffix=suffix))).name == f"watcher.{suffix}"
            pool = root.supervisors["pool"]
            crash(root, "watcher.a")  # intensity 0: the pool gives up, the root restarts it
            with trio.fail_after(60):
                while root.supervisors["pool"] is pool or {"watcher.a", "watcher.b"} & set(
                    root.slots
                ):
                    await trio.sleep(0.05)
            assert root.slots["watcher"].children == set()
            assert [i.child_id for i in root.supervisors["pool"].which_children()] == []
            # The quota is free again and the names can be reused.
            for suffix in ("a", "c"):
                assert (await syn.fire(Spawn(suffix=suffix))).name == f"watcher.{suffix}"
            assert await syn.fire(Forward(target="watcher.a", n=4)) == Echo(4)
        rows = {c.name: c for c in root.status().cells}
        assert {"watcher.a", "watcher.c"} <= set(rows) and "watcher.b" not in rows


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
async def test_strategies_restart_the_right_siblings_of_a_killed_cell(
    strategy: str, restarted: set[str]
) -> None:
    toml = (
        f'[supervisor]\nstrategy = "{strategy}"\nintensity = 5\nchildren = ["a", "b", "c"]\n\n'
        + cell("a", "Echoer") + cell("b", "Echoer") + cell("c", "Echoer")
    )
    async with running_root(toml) as (root, _paths):
        before = {name: root.slots[name].instance for name in "abc"}
        crash(root, "b")

        def settled() -> bool:
            return all(
                (root.slots[n].instance is not before[n]) == (n in restarted)
                and state(root, n) == "running"
                for n in "abc"
            )

        await until(root, "b", settled)
        assert {n for n in "abc" if root.slots[n].restarts} == restarted


@pytest.mark.parametrize("shutdown", ["0.5", '"brutal_kill"'])
async def test_shutdown_timeout_and_brutal_kill_stop_a_cell_that_will_not(shutdown: str) -> None:
    toml = cell("slow", "Stubborn", shutdown=shutdown, standby="false")
    start = trio.current_time()
    with pytest.raises(MeshStopped):
        async with running_root(toml, keep=True) as (root, paths):
            serving = root.slots["slow"].instance
            assert serving is not None
            events = paths.log_dir / "slow.events.jsonl"
            async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
                await ctl.fire(StopMesh(timeout=30.0))
            with trio.fail_after(30):
                await trio.sleep_forever()  # the root ends: the block is cancelled
    assert trio.current_time() - start < 20  # not the minute on_stop asks for
    (exited,) = [e for e in read_events(events) if e["event"] == "exited"]
    assert exited["signal_name"] == "SIGKILL" and exited["reason"] == "stop"
    shutil.rmtree(paths.home)
