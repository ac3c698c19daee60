"""Hot swap with a real root and real cell processes (host and bwrap): docs/swap.md.

The counter cell's DNA (swapcells.source) is rewritten between swaps.
Callers hammer it from their own connections while the test swaps it; every
call must be answered, and the counter must neither lose nor double an
increment. Synchronisation is by the system's own guarantees (a swap request
returns when the swap is over; a call waits in the listen backlog while the
cell hands over), never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import rootcells
import trio
import trio.testing
from rootcells import Downs, Spawn, Watch
from swapcells import Add, Total, source

from cellmesh import CellmeshError, Synapse
from cellmesh.actors._swap import MAX_POLLS
from cellmesh.actors.control import StatusRequest, SwapCell, SwapReport
from cellmesh.actors.root import Root
from cellmesh.cli._client import RootRefused, ask_root
from cellmesh.config import Paths
from cellmesh.sandbox import read_events
from cellmesh.testing.mesh import MeshStopped, open_root

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")

SANDBOXES = ["host", "bwrap"]
COUNTER = '[cells.counter]\ndna = "counter.py"\n'


@asynccontextmanager
async def mesh(
    toml: str, *, sandbox: str, version: str = "a", mode: str = "ok", blob: int = 0,
    bwrap_usable: str | None = None,
) -> AsyncIterator[tuple[Root, Path]]:
    """A root serving ``toml`` with the counter (``version``/``mode``) as counter.py."""
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    home = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    try:
        (home / "counter.py").write_text(source(version, mode, blob=blob))
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, toml, sandbox=sandbox) as root:
            yield root, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def swap(
    root: Root, name: str = "counter", *, timeout: float = 20.0, grace: float = 0.2,
    rollback: bool = False,
) -> SwapReport:
    """Ask the root over its control socket, as ``cellmesh swap`` does."""
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
        reply = await ask_root(
            syn, SwapCell(name=name, timeout=timeout, grace=grace, rollback=rollback)
        )  # a refusal (an operator error) raises RootRefused
    assert isinstance(reply, SwapReport)
    return reply


@attrs.define
class Load:
    """What the callers saw."""

    totals: list[int] = attrs.Factory(list)
    versions: list[str] = attrs.Factory(list)
    failures: list[str] = attrs.Factory(list)
    started: int = 0


@asynccontextmanager
async def hammering(paths: Paths, tasks: int) -> AsyncIterator[Load]:
    """``tasks`` callers, each on its own connection, calling Add(1) in a tight loop."""
    load = Load()
    stop = trio.Event()
    all_running = trio.Event()

    async def caller() -> None:
        async with Synapse.grow("counter", socket_dir=paths.socket_dir) as syn:
            first = True
            while not stop.is_set():
                try:
                    reply = await syn.fire(Add(n=1))
                except CellmeshError as exc:
                    load.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                assert isinstance(reply, Total)
                load.totals.append(reply.total)
                load.versions.append(reply.version)
                if first:
                    first = False
                    load.started += 1
                    if load.started == tasks:
                        all_running.set()

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(caller)
        with trio.fail_after(60):
            await all_running.wait()
        yield load
        stop.set()


async def total(paths: Paths) -> Total:
    async with Synapse.grow("counter", socket_dir=paths.socket_dir) as syn:
        reply = await syn.fire(Add(n=0))
    assert isinstance(reply, Total)
    return reply


def events(home: Path, name: str = "counter") -> list[dict[str, Any]]:
    return read_events(home / "logs" / f"{name}.events.jsonl")


def status_of(root: Root, name: str = "counter") -> Any:
    return next(c for c in root.status().cells if c.name == name)


# --------------------------------------------------------------------------
# Under load


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_swap_under_load_answers_every_call_and_keeps_every_increment(
    sandbox: str, bwrap_usable: str | None
) -> None:
    toml = "[supervisor]\nintensity = 1\nperiod = 600\n\n" + COUNTER
    async with mesh(toml, sandbox=sandbox, bwrap_usable=bwrap_usable) as (root, home):
        slot = root.slots["counter"]
        first_dna = slot.dna_digest
        async with hammering(root.paths, 16) as load:
            for i in range(20):
                version = "b" if i % 2 == 0 else "a"
                (home / "counter.py").write_text(source(version))
                report = await swap(root, grace=0.05)
                assert report.outcome == "swapped", report
                assert report.to_version == version and report.state_bytes
                assert report.serving_ms is not None and report.log_tail == []
        assert load.failures == []
        calls = len(load.totals)
        # Every increment exactly once, whichever version answered it.
        assert sorted(load.totals) == list(range(1, calls + 1))
        assert {"a", "b"} <= set(load.versions)
        assert (await total(root.paths)).total == calls
        # A swap is not a restart: the supervisor never saw an exit.
        assert slot.restarts == 0 and root.escalation is None
        assert slot.dna_digest == first_dna  # 20 swaps: back to version a
        row = status_of(root)
        assert (row.state, row.version, row.dna, row.swap) == ("running", "a", first_dna[:12], "")
        swapped = [e for e in events(home) if e["event"] == "swapped"]
        assert len(swapped) == 20 and swapped[0]["to_version"] == "b"


async def test_swap_keeps_monitors_and_dynamic_children() -> None:
    toml = (
        COUNTER + '\n[cells.watcher]\ndna = "rootcells.py"\nentry = "rootcells:Watcher"\n'
        'max_children = 1\ntemplates = ["worker"]\n\n'
        '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with mesh(toml, sandbox="host") as (root, home):
        async with Synapse.grow("watcher", socket_dir=root.paths.socket_dir) as watcher:
            await watcher.fire(Watch(target="counter"))
            await watcher.fire(Spawn(suffix="w1"))
            child_pid = status_of(root, "watcher.w1").pid
            for version in ("b", "a"):
                (home / "counter.py").write_text(source(version))
                assert (await swap(root)).outcome == "swapped"
            assert (await watcher.fire(Downs())).downs == []  # a swap is not a CellDown
            # Swap the watcher itself: its child and its monitor survive.
            rootcells_py = home / "rootcells.py"
            rootcells_py.write_text(rootcells_py.read_text() + "\n# version 2\n")
            assert (await swap(root, "watcher")).outcome == "swapped"
            assert status_of(root, "watcher.w1").pid == child_pid
            assert root.slots["watcher"].restarts == 0
            crash = root.slots["counter"].instance
            assert crash is not None
            root.backend.kill(crash.cell_id, as_crash=True)
            with trio.fail_after(60):
                while not (downs := (await watcher.fire(Downs())).downs):
                    await root.slots["counter"].changed.wait()
            assert downs == ["counter:killed by SIGKILL (killed on request)"]
        assert (await total(root.paths)).version == "a"  # the restart runs the code in force


# --------------------------------------------------------------------------
# Rollback


ROLLBACKS = [
    # (mode of the NEW version, what the cause must name, grace)
    ("import", "ImportError: version b cannot be imported", 0.2),
    ("bad_in", "ValueError: cannot take the state of version a", 0.2),
    ("hang", "not ready within 3 s", 0.2),
    ("crash", "RuntimeError: version b crashed after taking over", 1.0),
]


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize(("mode", "cause", "grace"), ROLLBACKS)
async def test_swap_rolls_back_each_failure_and_the_callers_see_none(
    sandbox: str, mode: str, cause: str, grace: float, bwrap_usable: str | None
) -> None:
    async with mesh(COUNTER, sandbox=sandbox, bwrap_usable=bwrap_usable) as (root, home):
        old_pid = status_of(root).pid
        async with hammering(root.paths, 8) as load:
            before = (await total(root.paths)).total
            (home / "counter.py").write_text(source("b", mode))
            report = await swap(root, timeout=3.0, grace=grace)
            after = await total(root.paths)
        assert report.outcome == "rolled_back", report
        assert cause in report.cause
        assert load.failures == []
        assert after.version == "a" and status_of(root).pid == old_pid
        # The old version serves again WITH its state (the count went on from it).
        assert after.total >= before
        if mode != "crash":  # (calls the new version answered on probation are undone)
            assert sorted(load.totals) == list(range(1, len(load.totals) + 1))
        if mode == "import":
            assert any("ImportError" in line for line in report.log_tail)
        rolled = [e for e in events(home) if e["event"] == "swap_rolled_back"]
        assert len(rolled) == 1 and cause in str(rolled[0]["cause"])
        # Back on the old DNA: its standby is ready again, and a good version swaps in.
        (home / "counter.py").write_text(source("c"))
        assert (await swap(root)).outcome == "swapped"
        assert (await total(root.paths)).version == "c"


@pytest.mark.parametrize(
    ("mode", "cause"),
    [("refuse_out", "KeyError: 'version a keeps its state'"),
     ("stuck_out", "on_swap_out did not return in time")],
)
async def test_swap_an_old_version_that_cannot_hand_over_keeps_serving(
    mode: str, cause: str
) -> None:
    async with mesh(COUNTER, sandbox="host", mode=mode) as (root, home):
        async with hammering(root.paths, 4) as load:
            (home / "counter.py").write_text(source("b"))
            report = await swap(root, timeout=3.0)
        assert report.outcome == "rolled_back" and cause in report.cause, report
        assert load.failures == []
        assert (await total(root.paths)).version == "a"


@pytest.mark.parametrize("standby", [True, False])
async def test_swap_rollback_names_what_the_new_process_said_on_its_report_pipe(
    standby: bool,
) -> None:
    # SystemExit in on_start is not a failure the hand-over reports on the
    # umbilical; the runtime still writes it on its report pipe (fd 5), be
    # the new version the cell's standby or a fresh process (standby = false).
    toml = COUNTER if standby else COUNTER + "standby = false\n"
    async with mesh(toml, sandbox="host") as (root, home):
        (home / "counter.py").write_text(source("b", "exit_start"))
        report = await swap(root, timeout=5.0)
        assert report.outcome == "rolled_back", report
        assert report.cause == (
            "the new version exited before it was ready: exit code 1: SystemExit in on_start: 4"
        )
        assert (await total(root.paths)).version == "a"


async def test_swap_a_swapped_in_process_that_crashes_later_says_why() -> None:
    # After the commit the cell's instance waits on the adopted process: its
    # exit is read from that process's report pipe like any other.
    async with mesh(COUNTER, sandbox="host") as (root, home):
        (home / "counter.py").write_text(source("b", "fail_later"))
        assert (await swap(root)).outcome == "swapped"
        restarts = status_of(root).restarts
        async with Synapse.grow("counter", socket_dir=root.paths.socket_dir) as syn:
            await syn.fire(Add(n=-1))
        with trio.fail_after(30):
            while status_of(root).restarts == restarts or status_of(root).state != "running":
                await root.slots["counter"].changed.wait()
        cause = "exit code 1: RuntimeError: version b failed on request"
        assert status_of(root).last_exit == cause
        assert root.restart_log[-1].reason == cause


async def test_swap_an_old_process_that_crashes_while_handing_over_says_why() -> None:
    async with mesh(COUNTER, sandbox="host", mode="die_out") as (root, home):
        (home / "counter.py").write_text(source("b"))
        report = await swap(root, timeout=5.0)
        cause = "exit code 1: RuntimeError: version a died while handing over"
        assert report.outcome == "failed", report
        assert report.cause == f"the old version exited during the swap: {cause}"
        # Its supervisor saw the crash with the same cause, and restarts the cell.
        assert root.restart_log[-1].reason == cause
        assert status_of(root).last_exit == cause
        with trio.fail_after(30):
            assert (await total(root.paths)).version == "a"


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_swap_from_code_its_standby_cannot_forget_reexecutes_it(
    sandbox: str, bwrap_usable: str | None
) -> None:
    """The standby preloaded code that started a thread: it takes over as a fresh interpreter."""
    async with mesh(COUNTER, sandbox=sandbox, mode="thread", bwrap_usable=bwrap_usable) as (
        root, home,
    ):
        async with hammering(root.paths, 4) as load:
            await total(root.paths)
            standby = root.slots["counter"].standby
            assert standby is not None
            (home / "counter.py").write_text(source("b"))
            report = await swap(root)
        assert report.outcome == "swapped", report
        assert load.failures == []
        assert (await total(root.paths)).version == "b"
        log = (home / "logs" / "counter.log").read_text()
        assert "starting the new code in a fresh interpreter" in log


async def test_swap_of_a_cell_without_standby_starts_a_fresh_process() -> None:
    async with mesh(COUNTER + "standby = false\n", sandbox="host") as (root, home):
        async with hammering(root.paths, 4) as load:
            (home / "counter.py").write_text(source("b"))
            report = await swap(root)
            (home / "counter.py").write_text(source("c", "bad_in"))
            failed = await swap(root)
        assert report.outcome == "swapped" and failed.outcome == "rolled_back"
        assert load.failures == []
        assert (await total(root.paths)).version == "b"
        assert root.slots["counter"].standby is None


async def test_swap_rollback_flag_returns_to_the_previous_dna() -> None:
    async with mesh(COUNTER, sandbox="host") as (root, home):
        with pytest.raises(RootRefused, match="no previous DNA"):
            await swap(root, rollback=True)
        first = root.slots["counter"].dna_digest
        (home / "counter.py").write_text(source("b"))
        assert (await swap(root)).outcome == "swapped"
        await total(root.paths)  # count 0 -> 0
        report = await swap(root, rollback=True)
        assert report.outcome == "swapped" and report.to_dna == first
        assert (await total(root.paths)).version == "a"
        report = await swap(root, rollback=True)  # and back again
        assert report.to_version == "b"


# --------------------------------------------------------------------------
# Other cases


async def test_swap_identical_dna_says_so_and_does_nothing() -> None:
    async with mesh(COUNTER, sandbox="host") as (root, home):
        pid = status_of(root).pid
        report = await swap(root)
        assert (report.outcome, report.cause) == ("unchanged", "")
        assert status_of(root).pid == pid
        assert not [e for e in events(home) if e["event"].startswith("swap")]


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_swap_of_a_dormant_on_demand_cell_changes_its_next_start(
    sandbox: str, bwrap_usable: str | None
) -> None:
    toml = COUNTER + 'activation = "on_demand"\n'
    async with mesh(toml, sandbox=sandbox, bwrap_usable=bwrap_usable) as (root, home):
        assert status_of(root).state == "dormant"
        (home / "counter.py").write_text(source("b"))
        report = await swap(root)
        assert report.outcome == "retargeted" and report.to_version == ""
        assert status_of(root).state == "dormant"
        reply = await total(root.paths)  # the first connection starts it
        assert reply.version == "b"


async def test_two_swaps_of_one_cell_at_once_are_refused_clearly() -> None:
    async with mesh(COUNTER, sandbox="host") as (root, home):
        (home / "counter.py").write_text(source("b", "slow"))
        reports: list[SwapReport] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(reports, swap(root)))
            with trio.fail_after(30):
                while root.slots["counter"].swap_phase in ("", "preparing"):
                    await root.slots["counter"].changed.wait()
            assert status_of(root).swap != ""  # `top` shows the swap in progress
            with pytest.raises(RootRefused, match="already in progress"):
                await swap(root)
        assert reports[0].outcome == "swapped"


async def _append(out: list[SwapReport], job: Any) -> None:
    out.append(await job)


async def test_swap_of_an_unknown_cell_or_with_bad_times_is_refused() -> None:
    async with mesh(COUNTER, sandbox="host") as (root, _):
        with pytest.raises(RootRefused, match=r"no cell named 'nope' \(cells: counter\)"):
            await swap(root, "nope")
        # A local client may send any float: every wait of a swap keeps a bound.
        inf, nan = float("inf"), float("nan")
        for timeout, grace, what in (
            (0.0, 1.0, "timeout"), (nan, 1.0, "timeout"), (inf, 1.0, "timeout"),
            (3601.0, 1.0, "timeout"), (5.0, -1.0, "grace"), (5.0, nan, "grace"),
            (5.0, inf, "grace"), (5.0, 1e300, "grace"),
        ):
            with pytest.raises(RootRefused, match=rf"counter: cannot be swapped: {what} must"):
                await swap(root, timeout=timeout, grace=grace)
        assert status_of(root).swap == ""  # nothing started


# --------------------------------------------------------------------------
# State size and hostile cells


async def test_swap_hands_over_ten_megabytes_of_state() -> None:
    blob = 10 << 20
    async with mesh(COUNTER, sandbox="host", mode="big", blob=blob) as (root, home):
        (home / "counter.py").write_text(source("b", blob=blob))
        report = await swap(root)
        assert report.outcome == "swapped" and report.state_bytes is not None
        assert report.state_bytes > blob
        reply = await total(root.paths)
        assert reply.version == "b" and reply.blob_sha  # the blob arrived whole


async def test_swap_state_over_the_limit_rolls_back_naming_the_knob() -> None:
    toml = '[root]\nswap_max_state = "1M"\n\n' + COUNTER
    async with mesh(toml, sandbox="host", mode="big", blob=2 << 20) as (root, home):
        (home / "counter.py").write_text(source("b"))
        report = await swap(root, timeout=5.0)
        assert report.outcome == "rolled_back"
        assert "over the limit of 1048576" in report.cause
        assert "swap_max_state" in report.cause
        assert (await total(root.paths)).version == "a"


async def test_swap_state_far_over_the_limit_is_not_even_mapped_and_rolls_back_saying_so(
) -> None:
    """The root maps at most twice swap_max_state (plus 1 MiB) of a cell's vesicles at
    once: a state far larger is refused unread, and the old version says so (the swap
    used to wait for a SwapOut that never came)."""
    toml = '[root]\nswap_max_state = "1M"\n\n' + COUNTER
    async with mesh(toml, sandbox="host", mode="big", blob=6 << 20) as (root, home):
        (home / "counter.py").write_text(source("b"))
        report = await swap(root, timeout=10.0)
        assert report.outcome == "rolled_back", report
        assert "the root refused its state" in report.cause, report.cause
        assert "received vesicles that may be mapped at once" in report.cause, report.cause
        assert (await total(root.paths)).version == "a"


async def test_swap_requests_from_a_cell_out_of_turn_are_refused() -> None:
    async with mesh(COUNTER, sandbox="host") as (root, home):
        slot = root.slots["counter"]
        from cellmesh.actors.control import NextOrder, SwapIn, SwapOut

        for msg, match in (
            (SwapIn(token="x" * 32, version="evil"), "no swap is waiting"),
            (SwapOut(token="x" * 32, failure="", state_name="", state_fingerprint="",
                     state=b"x" * 100, blobs=[]), "no swap is waiting"),
        ):
            with pytest.raises(CellmeshError, match=match):
                await root._from_cell(slot, msg)
        # Order polls are bounded per cell (the cell's own poll is one of them): a new
        # poll ends the oldest, answered with no order.
        answered: list[str] = []

        async def poll(token: str) -> None:
            assert await root._from_cell(slot, NextOrder(token=token)) is None
            answered.append(token)

        async with trio.open_nursery() as nursery:
            for i in range(3 * MAX_POLLS):
                nursery.start_soon(poll, f"t{i}")
                await trio.testing.wait_all_tasks_blocked()
            assert len([k for k in root._swapper._polls if k[0] == "counter"]) == MAX_POLLS
            # The oldest go first (the cell's own poll, ended too, comes back at the end):
            # the ended ones are the first fakes, in whatever order their tasks ran.
            assert len(answered) >= 2 * MAX_POLLS
            assert set(answered) == {f"t{i}" for i in range(len(answered))}, answered
            with pytest.raises(CellmeshError, match="this process already waits for an order"):
                await root._from_cell(slot, NextOrder(token=f"t{3 * MAX_POLLS - 1}"))
            nursery.cancel_scope.cancel()
        assert (await total(root.paths)).version == "a"
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
            assert (await syn.fire(StatusRequest())).cells  # the root is fine
        # The cell's own process polled again each time its poll was ended: it still
        # hears orders, so a swap works.
        (home / "counter.py").write_text(source("b"))
        assert (await swap(root, timeout=10.0)).outcome == "swapped"


async def test_swap_works_after_processes_died_with_their_order_polls_waiting() -> None:
    """A killed process's order poll waits in the root until it times out (60 s). Four
    kills used to fill the cell's polls, so its next process was refused its poll, never
    heard the order to suspend, and every swap rolled back ('not ready ... still
    suspending') until the cell restarted."""
    async with mesh(COUNTER, sandbox="host") as (root, home):
        slot = root.slots["counter"]
        from cellmesh.actors.control import NextOrder

        async def dead_poll(token: str) -> None:
            with contextlib.suppress(CellmeshError):  # (refused, before the fix)
                await root._from_cell(slot, NextOrder(token=token))

        async with trio.open_nursery() as nursery:
            for i in range(MAX_POLLS):  # the polls dead processes left behind
                nursery.start_soon(dead_poll, f"dead{i}")
                await trio.testing.wait_all_tasks_blocked()
            instance = slot.instance
            assert instance is not None
            old_pid = status_of(root).pid
            root.backend.kill(instance.cell_id, as_crash=True)  # a new process must poll
            with trio.fail_after(60):
                while status_of(root).pid in (old_pid, None):
                    await slot.changed.wait()
            assert (await total(root.paths)).version == "a"
            (home / "counter.py").write_text(source("b"))
            report = await swap(root, timeout=10.0)
            assert report.outcome == "swapped", report
            assert (await total(root.paths)).version == "b"
            nursery.cancel_scope.cancel()


async def test_swap_logs_show_swap_events() -> None:
    from cellmesh.actors.logs import read_log

    async with mesh(COUNTER, sandbox="host") as (root, home):
        (home / "counter.py").write_text(source("b", "bad_in"))
        await swap(root)
        (home / "counter.py").write_text(source("b"))
        await swap(root)
        lines = read_log(home / "logs", "counter").lines
    text = "\n".join(lines)
    assert "event swap_started" in text and "event swap_rolled_back" in text
    assert "event swapped" in text and "to_version=b" in text


def _processes_of(home: Path) -> list[int]:
    """Live processes whose environment mentions ``home`` (the mesh's cells)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if str(home).encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    out.append(int(entry.name))
        except OSError:
            continue
    return out


async def test_swap_in_progress_when_the_root_stops_leaves_no_process() -> None:
    home_seen: list[Path] = []
    with contextlib.suppress(MeshStopped):  # (the stop may end the block first)
        async with mesh(COUNTER, sandbox="host") as (root, home):
            home_seen.append(home)
            (home / "counter.py").write_text(source("b", "slow"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(swap, root)
                with trio.fail_after(30):
                    while root.slots["counter"].swap_phase not in ("suspending",
                                                                    "handing over"):
                        await root.slots["counter"].changed.wait()
                root.request_stop(5.0)
    assert _processes_of(home_seen[0]) == []


async def test_swap_a_bug_in_the_swap_ends_the_swap_not_the_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cellmesh.actors._launch import Launcher

    async def broken(self: Launcher, decl: object, hold: object) -> object:
        raise RuntimeError("a bug")

    async with mesh(COUNTER, sandbox="host") as (root, home):
        (home / "counter.py").write_text(source("b"))
        with monkeypatch.context() as patch:
            patch.setattr(Launcher, "build", broken)
            report = await swap(root)
        assert report.outcome == "failed" and "internal error" in report.cause
        assert "RuntimeError('a bug')" in report.cause
        assert (await swap(root)).outcome == "swapped"  # the root and the next swap are fine
        assert (await total(root.paths)).version == "b"


async def test_swap_the_new_version_does_not_inherit_what_the_old_one_did_to_the_process(
) -> None:
    """The standby preloaded the old version, whose import set an env variable, the
    recursion limit, a logging config and a warning filter: the new version sees the
    process as a fresh start would (its own logging.basicConfig is not a no-op), without
    a re-execution; a monkeypatch of a stdlib module cannot be undone, so that standby
    re-executes itself."""
    async with mesh(COUNTER, sandbox="host", mode="leaky") as (root, home):
        await total(root.paths)
        (home / "counter.py").write_text(source("b", "probe"))
        assert (await swap(root)).outcome == "swapped"
        swapped = (await total(root.paths)).blob_sha
        instance = root.slots["counter"].instance
        assert instance is not None
        root.backend.kill(instance.cell_id, as_crash=True)  # a fresh start, for comparison
        with trio.fail_after(60):
            while True:
                try:
                    fresh = (await total(root.paths)).blob_sha
                    break
                except CellmeshError:
                    await trio.sleep(0.05)
        assert swapped == fresh and not swapped.startswith("a|"), (swapped, fresh)
        log = (home / "logs" / "counter.log").read_text()
        assert "fresh interpreter" not in log
    async with mesh(COUNTER, sandbox="host", mode="monkey") as (root, home):
        await total(root.paths)
        (home / "counter.py").write_text(source("b", "probe"))
        assert (await swap(root)).outcome == "swapped"
        assert "|-|" in (await total(root.paths)).blob_sha  # json is the stdlib's again
        log = (home / "logs" / "counter.log").read_text()
        assert ("the old code cannot be unloaded here (it changed the process "
                "(json._counter_leak was set)); starting the new code in a fresh "
                "interpreter") in log
