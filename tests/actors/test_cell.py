"""The Cell base class: receptor collection, dispatch through a real membrane,
calls between cells, root requests over a fake umbilical, lifecycle."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import cellmesh
from cellmesh.actors._stats import ServiceTimes, percentile
from cellmesh.actors.cell import CellReceptors, NoRoot
from cellmesh.actors.control import (
    Ack,
    CellReady,
    CellStats,
    Demonitor,
    Link,
    Monitor,
    MonitorRef,
    StartChild,
    StopChild,
    Unlink,
)
from cellmesh.actors.runtime import RunningCell, serve_cell


@cellmesh.protein("tests.cell.Add")
class Add:
    n: int


@cellmesh.protein("tests.cell.Total")
class Total:
    total: int


@cellmesh.protein("tests.cell.Relay")
class Relay:
    target: str
    n: int


@cellmesh.protein("tests.cell.Note")
class Note:
    text: str


@cellmesh.protein("tests.cell.Slow")
class Slow:
    pass


class Counter(cellmesh.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.events: list[str] = []
        self.notes: list[str] = []
        self.noted = trio.Event()
        self.release = trio.Event()
        self.slow_started = trio.Event()

    async def on_start(self) -> None:
        self.events.append("start")

    async def on_stop(self) -> None:
        self.events.append("stop")

    @cellmesh.receptor
    async def add(self, msg: Add) -> Total:
        if msg.n < 0:
            raise ValueError("negative")
        self.total += msg.n
        return Total(total=self.total)

    @cellmesh.receptor(Note)
    async def note(self, msg: Any) -> None:
        self.notes.append(msg.text)
        self.noted.set()

    @cellmesh.receptor
    async def relay(self, msg: Relay) -> Total:
        await self.signal(msg.target, Note(text=f"from {self.name}"))
        reply = await self.call(msg.target, Add(n=msg.n))
        assert isinstance(reply, Total)
        return reply

    @cellmesh.receptor
    async def slow(self, msg: Slow) -> Total:
        self.slow_started.set()
        await self.release.wait()
        await self.stop()
        return Total(total=-1)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short path: Unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="cm-", dir="/tmp") as d:
        yield Path(d)


@asynccontextmanager
async def running(
    cell: cellmesh.Cell, name: str, sockdir: Path, **kw: Any
) -> AsyncIterator[tuple[RunningCell, trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        run = await nursery.start(lambda task_status: serve_cell(
            cell, name=name, socket_dir=sockdir, task_status=task_status, **kw
        ))
        yield run, nursery
        run.stop("test done")


# ---------------------------------------------------------------- collection


def test_cell_receptors_collected_from_annotations_and_explicit_form() -> None:
    assert Counter._receptor_table == {Add: "add", Note: "note", Relay: "relay", Slow: "slow"}


def test_cell_receptor_subclass_override_keeps_the_route() -> None:
    class Doubler(Counter):
        async def add(self, msg: Add) -> Total:
            return Total(total=2 * msg.n)

    assert Doubler._receptor_table[Add] == "add"


def test_cell_receptor_resolves_a_protein_local_to_the_defining_function() -> None:
    @cellmesh.protein("tests.cell.LocalPing")
    class LocalPing:
        n: int

    class Local(cellmesh.Cell):
        @cellmesh.receptor
        async def ping(self, msg: LocalPing) -> None:
            pass

    assert Local._receptor_table == {LocalPing: "ping"}


def test_cell_receptor_annotation_not_a_protein_is_type_error() -> None:
    with pytest.raises(TypeError, match=r"Bad\.add: annotation .*int.* is not a protein"):

        class Bad(cellmesh.Cell):
            @cellmesh.receptor
            async def add(self, msg: int) -> None:
                pass


def test_cell_receptor_duplicate_protein_is_type_error() -> None:
    with pytest.raises(TypeError, match=r"Add has two receptors, 'one' and 'two'"):

        class Twice(cellmesh.Cell):
            @cellmesh.receptor
            async def one(self, msg: Add) -> None:
                pass

            @cellmesh.receptor(Add)
            async def two(self, msg: Any) -> None:
                pass


def test_cell_receptor_duplicate_across_inheritance_is_type_error() -> None:
    with pytest.raises(TypeError, match="two receptors"):

        class Again(Counter):
            @cellmesh.receptor
            async def add_again(self, msg: Add) -> None:
                pass


def test_cell_receptor_bad_forms_are_type_errors() -> None:
    with pytest.raises(TypeError, match="has no annotation"):

        class Bare(cellmesh.Cell):
            @cellmesh.receptor
            async def f(self, msg) -> None:  # type: ignore[no-untyped-def]
                pass

    with pytest.raises(TypeError, match="async def"):
        cellmesh.receptor(lambda self, msg: None)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="not a protein class"):
        cellmesh.receptor(int)
    with pytest.raises(TypeError, match="cannot resolve"):

        class Unresolved(cellmesh.Cell):
            @cellmesh.receptor
            async def f(self, msg: NoSuchProtein) -> None:  # type: ignore[name-defined]  # noqa: F821
                pass

    with pytest.raises(TypeError, match="override on_cell_down"):

        class Down(cellmesh.Cell):
            @cellmesh.receptor
            async def f(self, msg: cellmesh.CellDown) -> None:
                pass


def test_cell_runtime_api_before_serving_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="is not running"):
        _ = Counter().name


def test_cell_receptors_sample_every_nth_message() -> None:
    calls: list[int] = []

    async def handler(msg: Any) -> int:
        calls.append(msg.n)
        return int(msg.n)

    times = ServiceTimes()
    receptors = CellReceptors({Add: handler}, times, every=4)
    for i in range(8):
        found = receptors.lookup(Add)
        assert found is not None
        coro = found(Add(n=i))
        with pytest.raises(StopIteration):
            coro.send(None)
    assert calls == list(range(8))
    assert len(times) == 2
    assert receptors.lookup(Total) is None


def test_cell_service_time_percentiles_are_nearest_rank() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile(list(range(1, 101)), 0.99) == 99
    times = ServiceTimes(capacity=3)
    assert times.take() == (None, None)
    for ns in (1000, 2000, 3000, 4000):
        times.record(ns)
    assert len(times) == 3
    assert times.take() == (3.0, 4.0)  # 1000 was replaced by 4000
    assert len(times) == 0


# ---------------------------------------------------------------- serving


async def test_cell_dispatches_calls_through_a_real_membrane(sockdir: Path) -> None:
    cell = Counter()
    async with running(cell, "counter", sockdir) as (run, _):
        assert cell.name == "counter"
        assert cell.data_dir is None
        async with cellmesh.Synapse.grow("counter", socket_dir=sockdir) as syn:
            assert await syn.fire(Add(n=2)) == Total(total=2)
            assert await syn.fire_many([Add(n=1), Add(n=1)]) == [Total(total=3), Total(total=4)]
            with pytest.raises(cellmesh.RemoteCellError, match="negative"):
                await syn.fire(Add(n=-1))
            await syn.signal(Note(text="hi"))
            await cell.noted.wait()
        stats = run.stats()
        assert (stats.msgs_in, stats.msgs_out, stats.errors) == (5, 4, 1)
    assert cell.events == ["start", "stop"]
    assert cell.notes == ["hi"]


async def test_cell_calls_and_signals_another_cell(sockdir: Path) -> None:
    a, b = Counter(), Counter()
    async with running(b, "b", sockdir), running(a, "a", sockdir):
        async with cellmesh.Synapse.grow("a", socket_dir=sockdir) as syn:
            assert await syn.fire(Relay(target="b", n=5)) == Total(total=5)
            assert await syn.fire(Relay(target="b", n=1)) == Total(total=6)
        await b.noted.wait()
        assert b.notes[0] == "from a"
        with pytest.raises(cellmesh.CellUnavailable):
            await a.call("nobody", Add(n=1))


async def test_cell_stop_drains_the_inflight_call_then_runs_on_stop(sockdir: Path) -> None:
    cell = Counter()
    async with trio.open_nursery() as nursery:
        reason = []

        async def serve(task_status: trio.TaskStatus[RunningCell]) -> None:
            reason.append(await serve_cell(
                cell, name="slow", socket_dir=sockdir, task_status=task_status
            ))

        await nursery.start(serve)
        async with cellmesh.Synapse.grow("slow", socket_dir=sockdir) as syn:
            result: list[Any] = []

            async def call() -> None:
                result.append(await syn.fire(Slow()))

            nursery.start_soon(call)
            await cell.slow_started.wait()
            cell.release.set()  # the receptor calls self.stop(), then replies
            await trio.testing.wait_all_tasks_blocked()
    assert result == [Total(total=-1)]
    assert reason == ["the cell asked to stop"]
    assert cell.events == ["start", "stop"]
    assert not (sockdir / "slow.sock").exists()


async def test_cell_task_crash_propagates_from_serve_cell(sockdir: Path) -> None:
    class Crashy(cellmesh.Cell):
        async def on_start(self) -> None:
            async def boom() -> None:
                raise KeyError("task failed")

            self.nursery.start_soon(boom)

    with pytest.raises(KeyError, match="task failed"):
        await serve_cell(Crashy(), name="crashy", socket_dir=sockdir)


async def test_cell_memory_error_in_a_receptor_fails_the_call_in_a_tests_process(
    sockdir: Path,
) -> None:
    """serve_cell in a test's own process: a receptor's MemoryError is that call's error,
    not ``os._exit(137)`` of the test run (only the cell runtime's process dies of it)."""

    class Greedy(cellmesh.Cell):
        @cellmesh.receptor
        async def add(self, msg: Add) -> Total:
            raise MemoryError("pretend it ran out")

    async with running(Greedy(), "greedy", sockdir):
        async with cellmesh.Synapse.grow("greedy", socket_dir=sockdir) as syn:
            with pytest.raises(cellmesh.RemoteCellError, match="MemoryError"):
                await syn.fire(Add(n=1))
            with pytest.raises(cellmesh.RemoteCellError, match="MemoryError"):  # it serves on
                await syn.fire(Add(n=2))


async def test_cell_root_requests_without_umbilical_raise_no_root(sockdir: Path) -> None:
    cell = Counter()
    async with running(cell, "alone", sockdir):
        with pytest.raises(NoRoot) as info:
            await cell.monitor("other")
        assert info.value.umbilical is None
        with pytest.raises(NoRoot):
            await cell.start_child("worker", "1")


# ---------------------------------------------------------------- fake root


class FakeRoot:
    """Serves the cell -> root requests on a temp umbilical and records them."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.ready = trio.Event()
        self.stats: list[CellStats] = []
        self.stats_event = trio.Event()

    async def __call__(self, msg: Any) -> Any:
        if isinstance(msg, CellStats):
            self.stats.append(msg)
            self.stats_event.set()
            return None
        self.seen.append(msg)
        if isinstance(msg, CellReady):
            self.ready.set()
            return Ack(text="ok")
        if isinstance(msg, Monitor):
            return MonitorRef(ref=7)
        if isinstance(msg, StartChild):
            return Ack(text=f"watcher.{msg.suffix}")
        if isinstance(msg, (Demonitor, Link, Unlink, StopChild)):
            return Ack(text="ok")
        raise AssertionError(f"unexpected {msg!r}")


class Watcher(cellmesh.Cell):
    trap_exits = True

    def __init__(self) -> None:
        super().__init__()
        self.downs: list[cellmesh.CellDown] = []
        self.down = trio.Event()
        self.replies: list[Any] = []
        self.stopped = False

    async def on_start(self) -> None:
        self.replies.append(await self.monitor("db"))
        await self.link("db")
        self.replies.append(await self.start_child("worker", "1"))
        await self.stop_child("watcher.1")
        await self.unlink("db")
        await self.demonitor(7)

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        self.downs.append(down)
        self.down.set()

    async def on_stop(self) -> None:
        self.stopped = True

    @cellmesh.receptor
    async def add(self, msg: Add) -> Total:
        return Total(total=msg.n)


async def test_cell_root_requests_go_out_and_cell_down_reaches_on_cell_down(
    sockdir: Path,
) -> None:
    root = FakeRoot()
    umbilical = sockdir / "umb" / "mitosis.sock"
    async with cellmesh.open_membrane("mitosis", root, socket_dir=umbilical.parent):
        cell = Watcher()
        async with running(cell, "watcher", sockdir, umbilical=str(umbilical)):
            await root.ready.wait()
            assert [type(m) for m in root.seen] == [
                Monitor, Link, StartChild, StopChild, Unlink, Demonitor, CellReady,
            ]
            assert root.seen[1] == Link(target="db", trap_exits=True)
            assert cell.replies == [7, "watcher.1"]
            async with cellmesh.Synapse.grow("watcher", socket_dir=sockdir) as syn:
                down = cellmesh.CellDown(name="db", reason="killed", ref=7)
                assert await syn.fire(down) is None
            await cell.down.wait()
            assert cell.downs == [down]


async def test_cell_reports_stats_to_the_root(sockdir: Path) -> None:
    root = FakeRoot()
    umbilical = sockdir / "umb" / "mitosis.sock"
    async with cellmesh.open_membrane("mitosis", root, socket_dir=umbilical.parent):
        async with running(
            Counter(), "counter", sockdir, umbilical=str(umbilical),
            stats_interval=0.01, sample_every=1,
        ):
            async with cellmesh.Synapse.grow("counter", socket_dir=sockdir) as syn:
                await syn.fire_many([Add(n=1) for _ in range(10)])
            while not any(s.msgs_in == 10 for s in root.stats):
                root.stats_event = trio.Event()
                await root.stats_event.wait()
    first = next(s for s in root.stats if s.msgs_in == 10)
    assert (first.msgs_out, first.errors) == (10, 0)
    reported = [s for s in root.stats if s.rtt_p50_us is not None]
    assert reported
    assert reported[0].rtt_p99_us is not None
    assert 0 < reported[0].rtt_p50_us <= reported[0].rtt_p99_us  # type: ignore[operator]


async def test_cell_stops_when_the_umbilical_breaks(sockdir: Path) -> None:
    root = FakeRoot()
    umbilical = sockdir / "umb" / "mitosis.sock"
    cell = Watcher()
    reason: list[str] = []
    async with trio.open_nursery() as nursery:
        async with cellmesh.open_membrane("mitosis", root, socket_dir=umbilical.parent):

            async def serve(task_status: trio.TaskStatus[RunningCell]) -> None:
                reason.append(await serve_cell(
                    cell, name="watcher", socket_dir=sockdir, umbilical=str(umbilical),
                    stats_interval=0.01, task_status=task_status,
                ))

            await nursery.start(serve)
        # The root's membrane is gone: the cell notices at its next tick.
    assert reason == ["the umbilical connection to the root broke"]
    assert cell.stopped


def test_a_receptor_returning_the_wrong_type_is_refused_at_class_creation() -> None:
    @cellmesh.protein("test.cell.TypedPong")
    class TypedPong:
        n: int

    @cellmesh.protein("test.cell.TypedPing")
    class TypedPing(cellmesh.Request[TypedPong]):
        n: int

    with pytest.raises(TypeError, match=r"Wrong.ping: returns .*TypedPing but test.cell"):

        class Wrong(cellmesh.Cell):
            @cellmesh.receptor
            async def ping(self, msg: TypedPing) -> TypedPing:
                return msg

    class Right(cellmesh.Cell):
        @cellmesh.receptor
        async def ping(self, msg: TypedPing) -> TypedPong:
            return TypedPong(msg.n)

    assert set(Right._receptor_table) == {TypedPing}
