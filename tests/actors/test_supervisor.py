"""The Trio supervisor driver: in-process fakes under MockClock, then real processes.

Fake children record every start / terminate / kill in one log, so each test
states the exact sequence OTP prescribes. Time only moves by ``clock.jump``;
synchronisation is ``wait_all_tasks_blocked``. The real-process tests use
``python -c`` children that report readiness on stdout and record SIGTERM in
a file, so no test sleeps to synchronise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from cellmesh.actors.errors import (
    ChildRunning,
    ChildStartFailed,
    SupervisorEscalation,
    SupervisorStopped,
    UnknownChild,
)
from cellmesh.actors.policy import (
    FAILED_TO_START,
    MAX_INTENSITY,
    AbnormalExit,
    Backoff,
    ChildKind,
    ChildSpec,
    ChildStatus,
    ExitReason,
    NormalExit,
    Restart,
    Shutdown,
    ShutdownExit,
    Strategy,
    SupervisorSpec,
)
from cellmesh.actors.supervisor import (
    ChildFactory,
    ChildHandle,
    ProcessFactory,
    ProcessHandle,
    Supervisor,
    SupervisorChildHandle,
    SupervisorEvent,
    exit_reason_from_returncode,
)

CRASH = AbnormalExit(text="boom")


# --------------------------------------------------------------------------
# In-process fakes.


@attrs.define(eq=False)
class FakeChild:
    """A child that exits when told to; ``stubborn`` ones ignore terminate."""

    child_id: str
    log: list[tuple[str, str]]
    stubborn: bool = False
    reason: ExitReason | None = None
    exited: trio.Event = attrs.Factory(trio.Event)

    async def wait(self) -> ExitReason:
        await self.exited.wait()
        assert self.reason is not None
        return self.reason

    def exit(self, reason: ExitReason) -> None:
        if self.reason is None:
            self.reason = reason
            self.exited.set()

    def terminate(self) -> None:
        self.log.append(("term", self.child_id))
        if not self.stubborn:
            self.exit(ShutdownExit())

    def kill(self) -> None:
        self.log.append(("kill", self.child_id))
        self.exit(AbnormalExit(text="killed"))


@attrs.define(eq=False)
class FakeFactory:
    """Starts fake children; ``fail[id]`` upcoming starts of ``id`` raise."""

    log: list[tuple[str, str]] = attrs.Factory(list)
    live: dict[str, FakeChild] = attrs.Factory(dict)
    fail: dict[str, int] = attrs.Factory(dict)
    stubborn: set[str] = attrs.Factory(set)
    subs: dict[str, SupervisorSpec] = attrs.Factory(dict)

    async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
        self.log.append(("start", spec.id))
        if self.fail.get(spec.id, 0) > 0:
            self.fail[spec.id] -= 1
            raise RuntimeError(f"cannot start {spec.id}")
        if spec.id in self.subs:
            return await SupervisorChildHandle.start(self.subs[spec.id], self, nursery)
        child = FakeChild(spec.id, self.log, stubborn=spec.id in self.stubborn)
        self.live[spec.id] = child
        return child

    def take_log(self) -> list[tuple[str, str]]:
        out = list(self.log)
        self.log.clear()
        return out


def specs(*ids: str, **kw: object) -> tuple[ChildSpec, ...]:
    return tuple(ChildSpec(id=i, **kw) for i in ids)  # type: ignore[arg-type]


@attrs.define(eq=False)
class Running:
    sup: Supervisor
    factory: FakeFactory
    escalation: list[SupervisorEscalation]
    events: list[SupervisorEvent]

    async def crash(self, child_id: str, reason: ExitReason = CRASH) -> None:
        self.factory.live[child_id].exit(reason)
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def supervising(
    spec: SupervisorSpec, factory: FakeFactory | None = None
) -> AsyncIterator[Running]:
    """Run a supervisor in a nursery; an escalation after start is recorded, not raised."""
    factory = factory or FakeFactory()
    events: list[SupervisorEvent] = []
    sup = Supervisor(spec, factory, events.append)
    escalation: list[SupervisorEscalation] = []

    async def run(*, task_status: trio.TaskStatus[Supervisor]) -> None:
        try:
            await sup.run(task_status=task_status)
        except SupervisorEscalation as exc:
            escalation.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        yield Running(sup, factory, escalation, events)
        await sup.stop()


START_ABC = [("start", "a"), ("start", "b"), ("start", "c")]


# --------------------------------------------------------------------------
# Order, restarts, escalation.


async def test_supervisor_starts_in_order_and_stops_in_reverse(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with supervising(SupervisorSpec(children=specs("a", "b", "c"))) as r:
        assert r.factory.take_log() == START_ABC
        assert [i.status for i in r.sup.which_children()] == [ChildStatus.RUNNING] * 3
    assert r.factory.take_log() == [("term", "c"), ("term", "b"), ("term", "a")]
    assert r.sup.which_children()[0].status is ChildStatus.STOPPED


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [("term", "c"), ("term", "a"), ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        (Strategy.REST_FOR_ONE, [("term", "c"), ("start", "b"), ("start", "c")]),
    ],
    ids=lambda v: getattr(v, "value", ""),
)
async def test_supervisor_restarts_per_strategy(
    mock_clock: trio.testing.MockClock, strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    spec = SupervisorSpec(strategy=strategy, children=specs("a", "b", "c"))
    async with supervising(spec) as r:
        r.factory.take_log()
        old = r.sup.handle("b")
        await r.crash("b")
        assert r.factory.take_log() == expected
        assert r.sup.handle("b") is not old
        assert r.escalation == []


async def test_supervisor_ignores_the_exit_of_an_instance_it_replaced(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Two children die together under one_for_all: the first exit restarts the group;
    the second is from an instance the restart already replaced and is dropped (OTP
    ignores an 'EXIT' from a pid that is no longer a child), so one restart counts."""
    spec = SupervisorSpec(strategy=Strategy.ONE_FOR_ALL, children=specs("a", "b", "c"))
    async with supervising(spec) as r:
        r.factory.take_log()
        r.factory.live["b"].exit(CRASH)
        r.factory.live["c"].exit(CRASH)
        await trio.testing.wait_all_tasks_blocked()
        exited = [e.child_id for e in r.events if e.kind == "exited"]
        assert len(exited) == 1  # whichever exit the loop saw first
        other = "c" if exited == ["b"] else "b"
        assert r.factory.take_log() == [
            ("term", other), ("term", "a"), ("start", "a"), ("start", "b"), ("start", "c"),
        ]
        assert r.escalation == []


@pytest.mark.parametrize(
    ("restart", "reason", "restarted"),
    [
        (Restart.TRANSIENT, NormalExit(), False),
        (Restart.TRANSIENT, ShutdownExit(), False),
        (Restart.TRANSIENT, CRASH, True),
        (Restart.TEMPORARY, CRASH, False),
        (Restart.PERMANENT, NormalExit(), True),
    ],
)
async def test_supervisor_applies_restart_types(
    mock_clock: trio.testing.MockClock, restart: Restart, reason: ExitReason, restarted: bool
) -> None:
    async with supervising(SupervisorSpec(children=specs("a", restart=restart))) as r:
        r.factory.take_log()
        await r.crash("a", reason)
        assert r.factory.take_log() == ([("start", "a")] if restarted else [])
        ids = [i.child_id for i in r.sup.which_children()]
        assert ids == ([] if restart is Restart.TEMPORARY else ["a"])


async def test_supervisor_crash_loop_escalates(mock_clock: trio.testing.MockClock) -> None:
    """Restart intensity (default 1 in 5 s): the second crash in the window escalates,
    after stopping every other child in reverse start order."""
    async with supervising(SupervisorSpec(children=specs("a", "b", "c"))) as r:
        r.factory.take_log()
        await r.crash("b")
        assert r.factory.take_log() == [("start", "b")]
        mock_clock.jump(4.0)
        await r.crash("b")
        assert r.factory.take_log() == [("term", "c"), ("term", "a")]
        assert [e.reason for e in r.escalation] == [MAX_INTENSITY]
        assert r.escalation[0].child_id == "b"
        assert r.events[-1] == SupervisorEvent(kind="escalated", child_id="b", detail=MAX_INTENSITY)
        with pytest.raises(SupervisorStopped):
            await r.sup.terminate_child("a")


async def test_supervisor_window_slides_with_the_clock(mock_clock: trio.testing.MockClock) -> None:
    async with supervising(SupervisorSpec(children=specs("a"))) as r:
        for _ in range(4):
            await r.crash("a")
            mock_clock.jump(5.5)
        assert r.factory.take_log() == [("start", "a")] * 5
        assert r.escalation == []


async def test_supervisor_failed_restarts_count_toward_intensity(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory()
    async with supervising(SupervisorSpec(intensity=2, children=specs("a", "b")), factory) as r:
        r.factory.take_log()
        factory.fail["b"] = 5
        await r.crash("b")
        assert r.factory.take_log() == [("start", "b"), ("start", "b"), ("term", "a")]
        assert [e.reason for e in r.escalation] == [MAX_INTENSITY]


async def test_supervisor_stop_does_not_wait_behind_a_crash_loop(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A child whose restarts keep failing, slowly enough never to exceed the intensity:
    a stop is acted on before the next start, not after the loop (it never ends)."""

    @attrs.define(eq=False)
    class SlowFailing(FakeFactory):
        async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
            if spec.id == "b" and self.fail.get("b", 0) > 0:
                await trio.sleep(1.0)  # a process that starts, then fails in on_start
            return await super().start(spec, nursery)

    mock_clock.autojump_threshold = 0
    factory = SlowFailing()
    spec = SupervisorSpec(intensity=50, period=10, children=specs("a", "b"))
    async with trio.open_nursery() as nursery:
        sup = Supervisor(spec, factory)
        await nursery.start(sup.run)
        factory.take_log()
        factory.fail["b"] = 10**6
        factory.live["b"].exit(CRASH)
        await trio.sleep(5.5)  # about five failed restarts so far
        looped = factory.take_log()
        assert len(looped) >= 4 and set(looped) == {("start", "b")}, looped
        sup.request_stop()
        with trio.fail_after(5):
            await sup.stop()
    assert factory.take_log() in ([("term", "a")], [("start", "b"), ("term", "a")])


async def test_supervisor_stop_cuts_a_backoff_delay_short(
    mock_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(intensity=5, children=specs("a"),
                          backoff=Backoff(initial=60.0, maximum=60.0))
    async with trio.open_nursery() as nursery:
        factory = FakeFactory()
        sup = Supervisor(spec, factory)
        await nursery.start(sup.run)
        factory.take_log()
        factory.live["a"].exit(CRASH)
        await trio.testing.wait_all_tasks_blocked()
        sup.request_stop()
        with trio.fail_after(1):  # not the 60 s of the backoff
            await sup.stop()
        assert factory.take_log() == []


async def test_supervisor_one_for_all_retry_stops_what_it_started(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory()
    spec = SupervisorSpec(strategy=Strategy.ONE_FOR_ALL, intensity=3, children=specs("a", "b"))
    async with supervising(spec, factory) as r:
        r.factory.take_log()
        factory.fail["b"] = 1
        await r.crash("a")
        assert r.factory.take_log() == [
            ("term", "b"), ("start", "a"), ("start", "b"),  # b fails
            ("term", "a"), ("start", "a"), ("start", "b"),  # the retry
        ]
        assert r.sup.which_children()[1].status is ChildStatus.RUNNING


async def test_supervisor_child_failing_at_start_fails_the_supervisor(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory(fail={"c": 1})
    sup = Supervisor(SupervisorSpec(children=specs("a", "b", "c", "d")), factory)
    with pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert (info.value.reason, info.value.child_id) == (FAILED_TO_START, "c")
    assert "cannot start c" in info.value.detail
    assert factory.take_log() == [*START_ABC, ("term", "b"), ("term", "a")]
    assert not sup.started


async def test_supervisor_backoff_delays_the_restart(mock_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec(
        intensity=5, children=specs("a"), backoff=Backoff(initial=1.0, maximum=10.0)
    )
    async with supervising(spec) as r:
        r.factory.take_log()
        await r.crash("a")
        assert r.factory.take_log() == []
        mock_clock.jump(0.9)
        await trio.testing.wait_all_tasks_blocked()
        assert r.factory.take_log() == []
        mock_clock.jump(0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert r.factory.take_log() == [("start", "a")]
        await r.crash("a")
        mock_clock.jump(1.99)
        await trio.testing.wait_all_tasks_blocked()
        assert r.factory.take_log() == []
        mock_clock.jump(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert r.factory.take_log() == [("start", "a")]


# --------------------------------------------------------------------------
# Shutdown kinds.


async def test_supervisor_timeout_shutdown_kills_after_the_grace(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory(stubborn={"a"})
    spec = SupervisorSpec(children=(ChildSpec(id="a", shutdown=Shutdown.timeout(3.0)),))
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(Supervisor(spec, factory).run)
        factory.take_log()
        nursery.start_soon(sup.stop)
        await trio.testing.wait_all_tasks_blocked()
        assert factory.take_log() == [("term", "a")]
        mock_clock.jump(2.99)
        await trio.testing.wait_all_tasks_blocked()
        assert factory.take_log() == []
        mock_clock.jump(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert factory.take_log() == [("kill", "a")]


async def test_supervisor_brutal_kill_and_infinity(mock_clock: trio.testing.MockClock) -> None:
    factory = FakeFactory(stubborn={"inf"})
    spec = SupervisorSpec(
        children=(
            ChildSpec(id="inf", shutdown=Shutdown.infinity()),
            ChildSpec(id="bk", shutdown=Shutdown.brutal_kill()),
        )
    )
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(Supervisor(spec, factory).run)
        factory.take_log()
        nursery.start_soon(sup.stop)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(3600.0)
        await trio.testing.wait_all_tasks_blocked()
        assert factory.take_log() == [("kill", "bk"), ("term", "inf")]
        factory.live["inf"].exit(NormalExit())  # infinity waits for it, however long
        await trio.testing.wait_all_tasks_blocked()
    assert factory.take_log() == []


async def test_supervisor_cancellation_stops_children_in_reverse(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory()
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor(SupervisorSpec(children=specs("a", "b", "c")), factory).run)
        factory.take_log()
        nursery.cancel_scope.cancel()
    assert factory.take_log() == [("term", "c"), ("term", "b"), ("term", "a")]


# --------------------------------------------------------------------------
# Requests.


async def test_supervisor_requests(mock_clock: trio.testing.MockClock) -> None:
    factory = FakeFactory()
    async with supervising(SupervisorSpec(intensity=0, children=specs("a")), factory) as r:
        factory.take_log()
        assert await r.sup.start_child(ChildSpec(id="z")) == "z"
        await r.sup.terminate_child("z")
        await trio.testing.wait_all_tasks_blocked()
        assert factory.take_log() == [("start", "z"), ("term", "z")]  # and no restart
        with pytest.raises(ChildRunning):
            await r.sup.delete_child("a")
        await r.sup.restart_child("z")
        with pytest.raises(ChildRunning):
            await r.sup.restart_child("z")
        await r.sup.terminate_child("z")
        await r.sup.delete_child("z")
        with pytest.raises(UnknownChild):
            await r.sup.terminate_child("z")
        factory.fail["y"] = 1
        with pytest.raises(ChildStartFailed, match="cannot start y"):
            await r.sup.start_child(ChildSpec(id="y"))
        assert [i.child_id for i in r.sup.which_children()] == ["a"]
        assert r.escalation == []


async def test_supervisor_simple_one_for_one(mock_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec(
        strategy=Strategy.SIMPLE_ONE_FOR_ONE,
        children=(ChildSpec(id="w", restart=Restart.TRANSIENT),),
        intensity=5,
    )
    async with supervising(spec) as r:
        ids = [await r.sup.start_child((n,)) for n in range(3)]
        assert ids == ["w-1", "w-2", "w-3"]
        await r.crash("w-2")
        await r.crash("w-3", NormalExit())
        assert [i.child_id for i in r.sup.which_children()] == ["w-1", "w-2"]
        r.factory.take_log()
    assert sorted(r.factory.take_log()) == [("term", "w-1"), ("term", "w-2")]


async def test_supervisor_simple_one_for_one_stops_children_concurrently(
    mock_clock: trio.testing.MockClock,
) -> None:
    """OTP stops dynamic children at once: three stubborn children cost one timeout."""
    factory = FakeFactory(stubborn={"w-1", "w-2", "w-3"})
    spec = SupervisorSpec(
        strategy=Strategy.SIMPLE_ONE_FOR_ONE,
        children=(ChildSpec(id="w", shutdown=Shutdown.timeout(2.0)),),
    )
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(Supervisor(spec, factory).run)
        for _ in range(3):
            await sup.start_child(())
        factory.take_log()
        nursery.start_soon(sup.stop)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(factory.take_log()) == [("term", "w-1"), ("term", "w-2"), ("term", "w-3")]
        mock_clock.jump(2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(factory.take_log()) == [("kill", "w-1"), ("kill", "w-2"), ("kill", "w-3")]


async def test_supervisor_requests_after_the_end_are_refused(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with supervising(SupervisorSpec(children=specs("a"))) as r:
        pass
    with pytest.raises(SupervisorStopped):
        await r.sup.start_child(ChildSpec(id="b"))
    await r.sup.stop()  # idempotent
    with pytest.raises(Exception, match="once"):
        await r.sup.run()


# --------------------------------------------------------------------------
# Nested supervisors.


async def test_supervisor_nested_escalation_is_restarted_by_the_parent(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The child supervisor gives up (reason shutdown); its permanent spec in the parent
    restarts it, and the parent counts that restart in its own window."""
    factory = FakeFactory(subs={"sub": SupervisorSpec(intensity=0, children=specs("x", "y"))})
    parent = SupervisorSpec(
        intensity=1,
        children=(ChildSpec(id="a"), ChildSpec(id="sub", kind=ChildKind.SUPERVISOR)),
    )
    async with supervising(parent, factory) as r:
        start_sub = [("start", "sub"), ("start", "x"), ("start", "y")]
        assert factory.take_log() == [("start", "a"), *start_sub]
        await r.crash("x")
        assert factory.take_log() == [("term", "y"), *start_sub]
        await r.crash("y")
        assert factory.take_log() == [("term", "x"), ("term", "a")]
        assert [e.reason for e in r.escalation] == [MAX_INTENSITY]
        assert r.escalation[0].child_id == "sub"


async def test_supervisor_stop_order_spans_the_tree(mock_clock: trio.testing.MockClock) -> None:
    factory = FakeFactory(subs={"sub": SupervisorSpec(children=specs("x", "y"))})
    parent = SupervisorSpec(
        children=(
            ChildSpec(id="a"),
            ChildSpec(id="sub", kind=ChildKind.SUPERVISOR),
            ChildSpec(id="z"),
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor(parent, factory).run)
        factory.take_log()
        nursery.cancel_scope.cancel()
    assert factory.take_log() == [("term", "z"), ("term", "y"), ("term", "x"), ("term", "a")]


async def test_supervisor_brutal_kill_of_a_sub_supervisor_kills_its_children(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory(subs={"sub": SupervisorSpec(children=specs("x", "y"))})
    parent = SupervisorSpec(
        children=(
            ChildSpec(id="sub", kind=ChildKind.SUPERVISOR, shutdown=Shutdown.brutal_kill()),
        )
    )
    async with supervising(parent, factory) as r:
        factory.take_log()
    assert r.factory.take_log() == [("kill", "y"), ("kill", "x")]


async def test_supervisor_sub_supervisor_failing_to_start_is_a_start_failure(
    mock_clock: trio.testing.MockClock,
) -> None:
    factory = FakeFactory(subs={"sub": SupervisorSpec(children=specs("x"))}, fail={"x": 1})
    parent = SupervisorSpec(intensity=3, children=(ChildSpec(id="sub", kind=ChildKind.SUPERVISOR),))
    sup = Supervisor(parent, factory)
    with pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert (info.value.reason, info.value.child_id) == (FAILED_TO_START, "sub")


# --------------------------------------------------------------------------
# Real processes.

SLEEPER = r"""
import os, signal, sys
name, log = sys.argv[1], sys.argv[2]
def on_term(signum, frame):
    with open(log, "a") as f:
        f.write(name + "\n")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term if name != "stubborn" else signal.SIG_IGN)
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    signal.pause()
"""


@attrs.define(eq=False)
class ReadyProcessFactory:
    """Starts ``SLEEPER`` children; ``start`` returns once the child says it is ready."""

    log: Path
    pids: list[int] = attrs.Factory(list)

    async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", SLEEPER, spec.id, str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            assert chunk, "child exited before it was ready"
            line += chunk
        await process.stdout.aclose()
        self.pids.append(process.pid)
        return ProcessHandle(process)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def next_event(
    receive: trio.MemoryReceiveChannel[SupervisorEvent], kind: str
) -> SupervisorEvent:
    async for event in receive:
        if event.kind == kind:
            return event
    raise AssertionError(f"no {kind} event")


async def test_supervisor_process_kill_9_is_restarted(tmp_path: Path) -> None:
    factory = ReadyProcessFactory(tmp_path / "log")
    send, receive = trio.open_memory_channel[SupervisorEvent](100)
    spec = SupervisorSpec(intensity=3, children=specs("a", "b", shutdown=Shutdown.timeout(5)))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sup = await nursery.start(Supervisor(spec, factory, send.send_nowait).run)
            handle = sup.handle("a")
            assert isinstance(handle, ProcessHandle)
            old_pid = handle.pid
            os.kill(old_pid, signal.SIGKILL)
            exited = await next_event(receive, "exited")
            assert (exited.child_id, exited.detail) == ("a", "killed by SIGKILL")
            assert (await next_event(receive, "started")).child_id == "a"
            new = sup.handle("a")
            assert isinstance(new, ProcessHandle)
            assert new.pid != old_pid
            assert not alive(old_pid)
            await sup.stop()
    assert not any(alive(pid) for pid in factory.pids)


async def test_supervisor_process_crash_loop_escalates() -> None:
    factory = ProcessFactory(lambda spec: [sys.executable, "-c", "raise SystemExit(3)"])
    events: list[SupervisorEvent] = []
    spec = SupervisorSpec(intensity=2, period=60.0, children=specs("a"))
    sup = Supervisor(spec, factory, events.append)
    with trio.fail_after(20), pytest.raises(SupervisorEscalation):
        await sup.run()
    exits = [e.detail for e in events if e.kind == "exited"]
    assert exits == ["exit code 3"] * 3
    assert events[-1].kind == "escalated"


async def test_supervisor_process_stop_order_is_reverse_start_order(tmp_path: Path) -> None:
    log = tmp_path / "log"
    factory = ReadyProcessFactory(log)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sup = await nursery.start(
                Supervisor(SupervisorSpec(children=specs("a", "b", "c", "d")), factory).run
            )
            await sup.stop()
    assert log.read_text().split() == ["d", "c", "b", "a"]


async def test_supervisor_process_none_left_after_cancellation(tmp_path: Path) -> None:
    """Cancelling the owner stops the whole tree (SIGTERM; SIGKILL after the grace for a
    child that ignores SIGTERM) before the cancellation completes: no process is left."""
    factory = ReadyProcessFactory(tmp_path / "log")

    class Tree:
        async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
            if spec.id == "sub":
                return await SupervisorChildHandle.start(
                    SupervisorSpec(children=specs("x", "y")), factory, nursery
                )
            return await factory.start(spec, nursery)

    tree: ChildFactory = Tree()
    spec = SupervisorSpec(
        children=(
            ChildSpec(id="a"),
            ChildSpec(id="sub", kind=ChildKind.SUPERVISOR),
            ChildSpec(id="stubborn", shutdown=Shutdown.timeout(0.2)),
        )
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor(spec, tree).run)
            assert len(factory.pids) == 4
            assert all(alive(pid) for pid in factory.pids)
            nursery.cancel_scope.cancel()
    assert not any(alive(pid) for pid in factory.pids)
    assert (tmp_path / "log").read_text().split() == ["y", "x", "a"]


async def test_supervisor_process_missing_binary_fails_the_start(tmp_path: Path) -> None:
    factory = ProcessFactory(lambda spec: [str(tmp_path / "no-such-binary")])
    with pytest.raises(SupervisorEscalation) as info:
        await Supervisor(SupervisorSpec(children=specs("a")), factory).run()
    assert info.value.reason == FAILED_TO_START


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, NormalExit()),
        (3, AbnormalExit(text="exit code 3")),
        (-9, AbnormalExit(text="killed by SIGKILL")),
        (-200, AbnormalExit(text="killed by signal 200")),
    ],
)
def test_supervisor_exit_reason_from_returncode(code: int, expected: ExitReason) -> None:
    assert exit_reason_from_returncode(code) == expected
