"""Failures that say why: entries checked before the mesh starts, crash causes, last words.

Real roots (in-process, ``serve_root``) with real cell processes under the
host sandbox, on private homes; no sleeping: waits are on the root's slot
events or on the cells' own answers.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import rootcells
import trio
from rootcells import AwaitDown, Break, Echo, ExitNow, Watch
from test_root import cell, leaves, running_root, until

from cellmesh import CellUnavailable, Synapse
from cellmesh.actors.errors import CellsCannotStart, SupervisorEscalation
from cellmesh.actors.lastwords import owners_stop_reason, read_last_words
from cellmesh.actors.manifest import MIN_CELL_MEMORY, MIN_CELL_OPEN_FILES, MIN_CELL_PIDS
from cellmesh.config import Paths
from cellmesh.testing.mesh import open_root

BROKEN_IMPORT = "import cellmesh\nimport no_such_module_anywhere  # noqa\n"


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    shutil.copy(Path(rootcells.__file__), path / "rootcells.py")
    (path / "broken.py").write_text(BROKEN_IMPORT)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_up_refuses_a_mesh_whose_entries_do_not_import_naming_the_keys(home: Path) -> None:
    toml = (
        cell("echo", "Echoer")
        + cell("lazy", "NoSuchClass", activation='"on_demand"')
        + cell("typo", "Echoer").replace("rootcells:Echoer", "rootcell.x:Echoer")
        + '[cells.heavy]\ndna = "broken.py"\nentry = "broken:Cell"\nstandby = false\n'
        + 'activation = "on_demand"\n'
    )
    started: list[str] = []
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, toml, log=started.append):
            raise AssertionError("the mesh must not start")
    (err,) = leaves(info.value, CellsCannotStart)
    assert err.cells == ["lazy", "typo", "heavy"]
    assert err.problems[0] == "cells.lazy.entry: module 'rootcells' has no attribute 'NoSuchClass'"
    assert err.problems[1].startswith("cells.typo.entry: module 'rootcell.x' not found")
    assert err.problems[2] == (
        "cells.heavy.entry: importing the cell's code raised ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere'"
    )
    assert str(err).startswith("3 cells cannot start:\n  cells.lazy.entry: ")
    assert not any("root: up" in line for line in started)  # nothing was started
    words = read_last_words(Paths.from_env({"CELL_HOME": str(home)}))
    assert words is not None and words.state == "stopped" and not words.clean
    assert "3 cells cannot start" in words.reason


async def test_a_replicated_cell_that_does_not_import_is_named_once(home: Path) -> None:
    """Its replicas share its code and its manifest key: one line, not one per
    replica (an audit saw "3 cells cannot start" and the same line three times)."""
    toml = cell("kv", "NoSuchClass", replicas="3") + cell("echo", "Echoer")
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, toml):
            raise AssertionError("the mesh must not start")
    (err,) = leaves(info.value, CellsCannotStart)
    assert err.problems == ["cells.kv.entry: module 'rootcells' has no attribute 'NoSuchClass'"]
    assert str(err).startswith("1 cell cannot start:\n")


async def test_templates_are_checked_too_and_leave_nothing_behind(home: Path) -> None:
    pool = (cell("watcher", "Watcher", max_children="2", templates='["worker", "broken"]')
            + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n')
    bad = pool + '[templates.broken]\ndna = "broken.py"\nentry = "broken:Cell"\n'
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, bad):
            raise AssertionError("the mesh must not start")
    (err,) = leaves(info.value, CellsCannotStart)
    assert err.problems == [
        "templates.broken.entry: importing the cell's code raised ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere'"
    ]
    good = pool.replace('"worker", "broken"', '"worker"')
    async with open_root(home, good) as root:
        assert sorted(root.slots) == ["watcher"]  # the template's check slot is gone
        assert not list(root.paths.socket_dir.glob("worker.preflight*"))


async def test_an_on_start_exception_fails_the_start_with_its_type_and_message(
    home: Path,
) -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, cell("doomed", "Crasher")):
            raise AssertionError("the mesh must not start")
    (exc,) = leaves(info.value, SupervisorEscalation)
    assert "exited before it was ready: exit code 1: RuntimeError in on_start: " \
        "this cell never starts" in exc.detail


async def test_a_start_that_times_out_names_its_key_and_the_likely_cause(home: Path) -> None:
    """docs/cells.md: an on_start that waits for a cell starting after it fails the
    start after start_timeout; the message says where the limit is set and why
    that happens (the logs hold nothing about it)."""
    # The supervisor gives up at its 2nd failure however slow the restarts: with the
    # default window (10 s), restarts slowed by a loaded machine never added up to an
    # escalation, and the mesh neither started nor gave up.
    toml = ("[supervisor]\nintensity = 1\nperiod = 3600\n\n"
            + cell("early", "CallsTooEarly", calls='["echo"]', start_timeout="1")
            + cell("echo", "Echoer"))
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, toml):
            raise AssertionError("the mesh must not start")
    escalations = leaves(info.value, SupervisorEscalation)
    assert len(escalations) == 1, repr(info.value.exceptions)
    (exc,) = escalations
    assert "not ready within 1 s (cells.early.start_timeout); an on_start that calls a " \
        "cell which starts after it waits for that cell" in exc.detail, exc.detail


async def test_a_constructor_exception_is_named_as_such(home: Path) -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, cell("doomed", "BadInit")):
            raise AssertionError("the mesh must not start")
    (exc,) = leaves(info.value, SupervisorEscalation)
    assert "exit code 1: KeyError in the constructor: 'in ctor'" in exc.detail


UNSUPPORTED_PROTEIN = """
import cellmesh

@cellmesh.protein("t.fail.Unused")
class Unused:  # a name that is never defined: found only when the membrane opens
    tags: "NoSuchType"  # noqa: F821

class Cell(cellmesh.Cell):
    pass
"""


async def test_a_failure_of_the_runtimes_own_start_steps_is_not_blamed_on_on_start(
    home: Path,
) -> None:
    (home / "badproto.py").write_text(UNSUPPORTED_PROTEIN)
    toml = '[cells.doomed]\ndna = "badproto.py"\nentry = "badproto:Cell"\n'
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, toml):
            raise AssertionError("the mesh must not start")
    (exc,) = leaves(info.value, SupervisorEscalation)
    assert (
        "exit code 1: NameError while starting: protein t.fail.Unused (badproto.Unused): "
        "a field's type does not resolve: name 'NoSuchType' is not defined"
    ) in exc.detail, exc.detail
    assert "on_start" not in exc.detail  # the class has no on_start


async def test_a_crash_reaches_cell_down_status_and_the_restart_log_with_its_cause() -> None:
    toml = cell("watcher", "Watcher") + cell("fragile", "Fragile")
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as watcher:
            await watcher.fire(Watch(target="fragile"))
            before = root.slots["fragile"].instance
            async with Synapse.grow("fragile", socket_dir=paths.socket_dir) as fragile:
                with contextlib.suppress(CellUnavailable):  # the crash may beat the reply
                    await fragile.fire(Break(message="the disk is on fire"))
            await until(root, "fragile", lambda: root.slots["fragile"].instance is not before
                        and root.slots["fragile"].instance is not None
                        and root.slots["fragile"].instance.state == "running")
            with trio.fail_after(30):
                downs = (await watcher.fire(AwaitDown())).downs
        assert downs == [
            "fragile:exit code 1: ValueError: the disk is on fire"
            "|ValueError|the disk is on fire"
        ]
        row = next(c for c in root.status().cells if c.name == "fragile")
        assert row.last_exit == "exit code 1: ValueError: the disk is on fire"
        assert row.last_exit_at is not None
        assert [r.reason for r in root.restart_log if r.cell == "fragile"] == [
            "exit code 1: ValueError: the disk is on fire"
        ]


async def test_what_a_cell_writes_on_its_report_pipe_is_bounded_and_printable() -> None:
    toml = cell("fragile", "Fragile")
    async with running_root(toml) as (root, paths):
        slot = root.slots["fragile"]
        instance = slot.instance
        assert instance is not None
        # What a hostile cell could write on its fd 5: junk, then a forged record
        # with terminal escapes, a bogus stage and an overlong type and message.
        forged = json.dumps({"event": "failed", "stage": "bogus", "type": "\x1b[2J" + "T" * 999,
                             "message": "m\n" * 5000})
        with open(f"/proc/{instance.pid}/fd/5", "wb", buffering=0) as fd5:
            fd5.write(b"\xff\xfe not json\n[1, 2]\n" + forged.encode() + b"\n")
        async with Synapse.grow("fragile", socket_dir=paths.socket_dir) as fragile:
            with pytest.raises(CellUnavailable):
                await fragile.fire(ExitNow(code=3))
        await until(root, "fragile", lambda: slot.instance is not instance)
        reason = next(r.reason for r in root.restart_log if r.cell == "fragile")
        assert reason.startswith("exit code 3: ?[2JTTT")
        assert reason.isprintable() and "\x1b" not in reason
        assert len(reason) <= len("exit code 3: ") + 200 + len(": ") + 1000


async def test_the_last_words_say_why_the_top_supervisor_gave_up(home: Path) -> None:
    toml = "[supervisor]\nintensity = 0\n\n" + cell("fragile", "Fragile")
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_root(home, toml) as root:
            paths = root.paths
            running = read_last_words(paths)
            assert running is not None and running.state == "running"
            async with Synapse.grow("fragile", socket_dir=paths.socket_dir) as fragile:
                with contextlib.suppress(CellUnavailable):
                    await fragile.fire(Break(message="no way back"))
            await trio.sleep_forever()  # the root ends the block when it gives up
    assert info.group_contains(SupervisorEscalation)
    words = read_last_words(Paths.from_env({"CELL_HOME": str(home)}))
    assert words is not None and words.state == "stopped" and not words.clean
    assert words.reason == (
        "the top supervisor gave up (reached_max_restart_intensity, child 'fragile'); "
        "its last exit: exit code 1: ValueError: no way back"
    )
    assert "stopped 0s ago: the top supervisor gave up" in words.summary(
        now=words.stopped_at or 0.0, alive=False
    )


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_a_cell_serves_at_the_smallest_limits_the_manifest_accepts(
    sandbox: str, bwrap_usable: str | None
) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    limits = (f'{{ memory = {MIN_CELL_MEMORY}, pids = {MIN_CELL_PIDS}, '
              f'open_files = {MIN_CELL_OPEN_FILES} }}')
    async with running_root(cell("echo", "Echoer", limits=limits), sandbox=sandbox) as (
        root, paths
    ):
        assert root.slots["echo"].decl.limits.memory == 32 << 20
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            assert await syn.fire_many([Echo(i) for i in range(1000)]) == [
                Echo(i) for i in range(1000)
            ]


async def _echo_ready(home: Path) -> None:
    """Wait until ``echo`` reported ready (the top supervisor then starts the next child)."""
    from cellmesh.sandbox import read_events

    events = home / "logs" / "echo.events.jsonl"
    with trio.fail_after(60):
        while not (events.exists()
                   and any(e.get("event") == "ready" for e in read_events(events))):
            await trio.sleep(0.05)


@pytest.mark.parametrize("why", ["", "SIGTERM before the mesh was up"])
async def test_a_root_cancelled_while_it_starts_records_a_clean_stop(
    home: Path, why: str
) -> None:
    """Its owner cancels a root whose mesh is starting (as `cellmesh up` does on a signal):
    its nurseries raise a group of nothing but Cancelled, which is a stop asked for -- a
    clean one, with the owner's reason -- not an unclean end "BaseExceptionGroup:
    Exceptions from Trio nursery (14 sub-exceptions)"."""
    toml = cell("echo", "Echoer") + cell("slow", "SlowStarter", start_timeout="120")
    with owners_stop_reason() as reason, trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def stop_while_starting() -> None:
                await _echo_ready(home)
                await trio.sleep(0.3)  # slow's on_start runs (60 s)
                reason.text = why
                scope.cancel()

            nursery.start_soon(stop_while_starting)
            async with open_root(home, toml):
                raise AssertionError("the mesh must not start")
    assert scope.cancelled_caught
    words = read_last_words(Paths.from_env({"CELL_HOME": str(home)}))
    assert words is not None and words.state == "stopped"
    assert (words.clean, words.reason) == (True, why or "cancelled by its owner")
    summary = words.summary(now=words.stopped_at or 0.0, alive=False)
    assert summary.endswith(f"stopped 0s ago on request ({why or 'cancelled by its owner'})")
