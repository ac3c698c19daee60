"""Membrane and Synapse over real Unix sockets: calls, errors, cancel, credit, vesicles."""

from __future__ import annotations

import gc
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest
import trio
import trio.testing

import cellmesh
from cellmesh import CellUnavailable, Receptors, RemoteCellError, Synapse, open_membrane
from cellmesh.errors import ErrorCode, MembraneInUse
from cellmesh.wire.proteins import ProteinRegistry


@cellmesh.protein("test.ms.Ping")
class Ping:
    n: int


@cellmesh.protein("test.ms.Pong")
class Pong:
    n: int


@cellmesh.protein("test.ms.Boom")
class Boom:
    message: str


@cellmesh.protein("test.ms.Wait")
class Wait:
    key: str


@cellmesh.protein("test.ms.Tick")
class Tick:
    n: int


@cellmesh.protein("test.ms.Count")
class Count:
    n: int = 0


@cellmesh.protein("test.ms.Blob")
class Blob:
    data: bytes


@cellmesh.protein("test.ms.BlobInfo")
class BlobInfo:
    length: int
    readonly: bool
    is_view: bool
    last: int


class Service:
    """A handler set with observable state, one per test."""

    def __init__(self) -> None:
        self.ticks = 0
        self.events: dict[str, trio.Event] = {}
        self.started: dict[str, trio.Event] = {}
        self.cancelled: list[str] = []
        self.running = 0
        self.max_running = 0
        self.receptors = Receptors()
        r = self.receptors
        r.add(Ping, self.ping)
        r.add(Boom, self.boom)
        r.add(Wait, self.wait)
        r.add(Tick, self.tick)
        r.add(Count, self.count)
        r.add(Blob, self.blob)

    async def ping(self, msg: Ping) -> Pong:
        return Pong(msg.n + 1)

    async def boom(self, msg: Boom) -> Pong:
        raise ValueError(msg.message)

    def event(self, key: str) -> trio.Event:
        return self.events.setdefault(key, trio.Event())

    def started_event(self, key: str) -> trio.Event:
        return self.started.setdefault(key, trio.Event())

    async def wait(self, msg: Wait) -> Pong:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started_event(msg.key).set()
        try:
            await self.event(msg.key).wait()
        except trio.Cancelled:
            self.cancelled.append(msg.key)
            raise
        finally:
            self.running -= 1
        return Pong(len(msg.key))

    async def tick(self, msg: Tick) -> None:
        self.ticks += msg.n

    async def count(self, msg: Count) -> Count:
        return Count(self.ticks)

    async def blob(self, msg: Blob) -> BlobInfo:
        data = msg.data
        view = data if isinstance(data, memoryview) else memoryview(data)
        return BlobInfo(len(data), view.readonly, isinstance(data, memoryview), view[-1])


@pytest.fixture
async def served(sockdir: Path) -> AsyncIterator[Service]:
    service = Service()
    async with open_membrane("svc", service.receptors, socket_dir=sockdir):
        yield service


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def test_fire_returns_typed_reply(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        assert await syn.fire(Ping(41)) == Pong(42)


async def test_fire_many_pipelines_in_order(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        replies = await syn.fire_many([Ping(i) for i in range(5000)])
    assert replies == [Pong(i + 1) for i in range(5000)]


async def test_handler_exception_is_boxed(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        with pytest.raises(RemoteCellError) as info:
            await syn.fire(Boom("kaput"))
        err = info.value
        assert err.type_name == "ValueError"
        assert err.remote_message == "kaput"
        assert err.code == ErrorCode.HANDLER_FAILED
        assert err.cell == "svc"
        assert err.remote_traceback is not None
        assert "in boom" in err.remote_traceback and "kaput" in err.remote_traceback
        # The cell keeps serving on the same connection.
        assert await syn.fire(Ping(1)) == Pong(2)


class Stop(BaseException):
    """A library's own BaseException subclass."""


@cellmesh.protein("test.ms.Raise")
class Raise:
    what: str
    suspend: bool


def _base_exception(what: str) -> BaseException:
    return {"system-exit": SystemExit(3), "generator-exit": GeneratorExit(),
            "custom": Stop("stop here")}[what]


async def _raise_it(msg: Raise) -> None:
    if msg.suspend:
        await trio.sleep(0)
    if msg.what == "cancelled":  # a Cancelled re-raised where nothing cancelled the call
        caught: BaseException | None = None
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(0)
            except trio.Cancelled as exc:
                caught = exc
        assert caught is not None
        raise caught
    raise _base_exception(msg.what)


@pytest.mark.parametrize("suspend", [False, True], ids=["inline", "suspended"])
@pytest.mark.parametrize("what", ["system-exit", "generator-exit", "custom", "cancelled"])
async def test_a_handler_raising_a_base_exception_fails_only_its_call(
    sockdir: Path, what: str, suspend: bool
) -> None:
    service = Service()
    service.receptors.add(Raise, _raise_it)
    async with open_membrane("svc", service.receptors, socket_dir=sockdir):
        async with Synapse.grow("svc", socket_dir=sockdir) as syn:
            async with trio.open_nursery() as nursery:
                waiting = trio.Event()

                async def innocent() -> None:  # a concurrent call on the same connection
                    assert await syn.fire(Wait("bystander")) == Pong(9)
                    waiting.set()

                nursery.start_soon(innocent)
                await service.started_event("bystander").wait()
                with pytest.raises(RemoteCellError) as info:
                    await syn.fire(Raise(what, suspend))
                assert info.value.code == ErrorCode.HANDLER_FAILED
                names = {"system-exit": "SystemExit", "generator-exit": "GeneratorExit",
                         "custom": "Stop", "cancelled": "Cancelled"}
                assert info.value.type_name.endswith(names[what])
                await syn.signal(Raise(what, suspend))  # a signal's failure is only logged
                service.event("bystander").set()
                await waiting.wait()
            assert await syn.fire(Ping(1)) == Pong(2)  # the same connection goes on


async def test_fire_many_raises_first_error_after_all_finish(
    served: Service, sockdir: Path
) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        with pytest.raises(RemoteCellError) as info:
            await syn.fire_many([Ping(1), Boom("first"), Boom("second"), Ping(2)])
        assert info.value.remote_message == "first"
        assert await syn.fire(Ping(5)) == Pong(6)


async def test_no_receptor_is_a_typed_error(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        with pytest.raises(RemoteCellError) as info:
            await syn.fire(Pong(1))
        assert info.value.code == ErrorCode.NO_HANDLER
        assert await syn.fire(Ping(1)) == Pong(2)


async def test_unknown_protein_is_a_typed_error(served: Service, sockdir: Path) -> None:
    other = ProteinRegistry()

    @cellmesh.protein("test.ms.Stranger", registry=other)
    class Stranger:
        x: int

    async with Synapse.grow("svc", socket_dir=sockdir, registry=other) as syn:
        with pytest.raises(RemoteCellError) as info:
            await syn.fire(Stranger(1))
        assert info.value.code == ErrorCode.UNKNOWN_PROTEIN
        assert "test.ms.Stranger" in info.value.remote_message


async def test_schema_mismatch_is_a_typed_error(served: Service, sockdir: Path) -> None:
    other = ProteinRegistry()

    @cellmesh.protein("test.ms.Ping", registry=other)
    class PingV2:
        n: str  # same wire name, different schema

    async with Synapse.grow("svc", socket_dir=sockdir, registry=other) as syn:
        with pytest.raises(RemoteCellError) as info:
            await syn.fire(PingV2("x"))
        assert info.value.code == ErrorCode.SCHEMA_MISMATCH
        # Named by role, so the cell's text reads right at the caller: the
        # caller's schema is the sender's.
        mine = other.fingerprints()["test.ms.Ping"]
        assert f"has schema {mine} at the sender but " in info.value.remote_message


async def test_bad_field_type_fails_before_sending(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        with pytest.raises(cellmesh.FieldError, match="'n'"):
            await syn.fire(Ping("not an int"))  # type: ignore[arg-type]
        assert await syn.fire(Ping(1)) == Pong(2)


async def test_signals_are_one_way_and_ordered(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        await syn.signal(Tick(1))
        await syn.signal_many([Tick(2) for _ in range(999)])
        assert await syn.fire(Count()) == Count(1 + 2 * 999)


async def test_cancelled_fire_cancels_remote_handler(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        async with trio.open_nursery() as nursery:
            cancel_scope = trio.CancelScope()

            async def caller() -> None:
                with cancel_scope:
                    await syn.fire(Wait("a"))

            nursery.start_soon(caller)
            await served.started_event("a").wait()
            cancel_scope.cancel()
        # The handler sees the cancel frame; wait for it without sleeping blindly.
        with trio.fail_after(5):
            while "a" not in served.cancelled:
                await trio.sleep(0.001)
        assert served.running == 0
        assert await syn.fire(Ping(1)) == Pong(2)


async def test_cancel_before_start_never_runs_handler(sockdir: Path) -> None:
    service = Service()
    async with open_membrane(
        "svc", service.receptors, socket_dir=sockdir, max_concurrency=1
    ) as membrane:
        async with Synapse.grow("svc", socket_dir=sockdir) as syn, trio.open_nursery() as n:
            n.start_soon(syn.fire, Wait("first"))
            await service.started_event("first").wait()
            with trio.move_on_after(0.05):
                await syn.fire(Wait("queued"))  # waits behind "first"; then gives up
            await trio.testing.wait_all_tasks_blocked(0.05)  # the cancel frame is processed
            assert membrane.stats.cancelled == 1
            service.event("first").set()
        assert "queued" not in service.started
        assert service.cancelled == []


async def test_concurrency_is_bounded_per_connection(sockdir: Path) -> None:
    service = Service()
    async with open_membrane("svc", service.receptors, socket_dir=sockdir, max_concurrency=3):
        async with Synapse.grow("svc", socket_dir=sockdir) as syn, trio.open_nursery() as n:
            keys = [f"k{i}" for i in range(8)]
            for key in keys:
                n.start_soon(syn.fire, Wait(key))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert service.running == 3
            for key in keys:
                service.event(key).set()
        assert service.max_running == 3
        assert all(service.started_event(k).is_set() for k in keys)


async def test_many_concurrent_callers_share_one_synapse(served: Service, sockdir: Path) -> None:
    results: dict[int, list[Pong]] = {}

    async with Synapse.grow("svc", socket_dir=sockdir) as syn:

        async def worker(w: int) -> None:
            out = []
            for i in range(50):
                out.append(await syn.fire(Ping(w * 1000 + i)))
            results[w] = out

        async with trio.open_nursery() as nursery:
            for w in range(40):
                nursery.start_soon(worker, w)
    assert all(results[w] == [Pong(w * 1000 + i + 1) for i in range(50)] for w in range(40))


async def test_credit_bounds_server_backlog(sockdir: Path) -> None:
    """A fast sender against a blocked handler: the server never holds more
    than its credit, and the sender waits for credit instead of buffering."""
    service = Service()
    async with open_membrane(
        "svc", service.receptors, socket_dir=sockdir, max_concurrency=1, credit_calls=16
    ) as membrane:
        async with Synapse.grow("svc", socket_dir=sockdir) as syn:
            async with trio.open_nursery() as n:
                n.start_soon(syn.fire, Wait("gate"))
                await service.started_event("gate").wait()
                for _ in range(100):
                    n.start_soon(syn.signal, Tick(1))
                await trio.testing.wait_all_tasks_blocked(0.05)
                (conn,) = membrane._connections
                held = len(conn.backlog) + len(conn.waiting) + conn.suspended
                assert held <= 16
                assert syn._conn is not None and syn._conn.calls_left == 0
                service.event("gate").set()
            assert await syn.fire(Count()) == Count(100)


async def test_connection_loss_fails_inflight_then_reconnects(sockdir: Path) -> None:
    service = Service()
    async with trio.open_nursery() as outer:
        scope = trio.CancelScope()

        async def serve() -> None:
            with scope:
                async with open_membrane("svc", service.receptors, socket_dir=sockdir,
                                         drain_grace=0):
                    await trio.sleep_forever()

        outer.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked(0.05)
        async with Synapse.grow("svc", socket_dir=sockdir) as syn:
            async with trio.open_nursery() as n:
                failures: list[BaseException] = []

                async def call() -> None:
                    try:
                        await syn.fire(Wait("never"))
                    except CellUnavailable as exc:
                        failures.append(exc)

                n.start_soon(call)
                await service.started_event("never").wait()
                scope.cancel()  # the cell dies with a call in flight
            assert len(failures) == 1
            assert "svc" in str(failures[0])
            with pytest.raises(CellUnavailable):
                await syn.fire(Ping(1))  # nobody listens now
            # A new incarnation of the cell: the same synapse reconnects.
            async with open_membrane("svc", Service().receptors, socket_dir=sockdir):
                assert await syn.fire(Ping(1)) == Pong(2)


async def test_grow_without_cell_names_socket(sockdir: Path) -> None:
    with pytest.raises(CellUnavailable) as info:
        async with Synapse.grow("absent", socket_dir=sockdir):
            pass
    assert str(sockdir / "absent.sock") in str(info.value)
    assert info.value.socket_path == str(sockdir / "absent.sock")


async def test_stale_socket_is_replaced(sockdir: Path) -> None:
    path = sockdir / "svc.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file left by a dead process
    service = Service()
    async with open_membrane("svc", service.receptors, socket_dir=sockdir):
        async with Synapse.grow("svc", socket_dir=sockdir) as syn:
            assert await syn.fire(Ping(1)) == Pong(2)
    assert not path.exists()


async def test_live_socket_is_never_stolen(served: Service, sockdir: Path) -> None:
    with pytest.raises(MembraneInUse) as info:
        async with open_membrane("svc", Service().receptors, socket_dir=sockdir):
            pass
    assert str(sockdir / "svc.sock") in str(info.value)
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        assert await syn.fire(Ping(1)) == Pong(2)


async def test_non_socket_file_is_not_replaced(sockdir: Path) -> None:
    (sockdir / "svc.sock").write_text("precious")
    with pytest.raises(cellmesh.ConfigError, match="not a socket"):
        async with open_membrane("svc", Service().receptors, socket_dir=sockdir):
            pass
    assert (sockdir / "svc.sock").read_text() == "precious"


async def test_socket_dir_is_private(served: Service, sockdir: Path) -> None:
    assert sockdir.stat().st_mode & 0o777 == 0o700
    assert (sockdir / "svc.sock").stat().st_mode & 0o777 == 0o600


async def test_serves_a_handed_over_listening_fd(sockdir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = sockdir / "handed.sock"
    listener.bind(str(path))
    listener.listen(16)
    try:
        async with open_membrane("handed", Service().receptors, listen_fd=listener.fileno()):
            async with Synapse.grow("handed", socket_dir=sockdir) as syn:
                assert await syn.fire(Ping(9)) == Pong(10)
        # The membrane did not close or unlink what it was handed.
        assert listener.fileno() >= 0 and path.exists()
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        listener.close()


def _raw_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(5)
    return sock


def _read_frames(sock: socket.socket) -> list[object]:
    """Read until EOF; return decoded frame items."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    items = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        items.append(cbor2.loads(data[4 : 4 + n]))
        data = data[4 + n :]
    return items


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",  # a header far beyond the frame limit
        struct.pack(">I", 3) + b"\x1f\x1f\x1f",  # not CBOR
        struct.pack(">I", 1) + b"\x80",  # an empty array where a frame belongs
        struct.pack(">I", 0),  # an empty frame
    ],
)
async def test_malformed_bytes_close_only_that_connection(
    served: Service, sockdir: Path, garbage: bytes
) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as good:
        bad = await trio.to_thread.run_sync(_raw_connect, sockdir / "svc.sock")
        try:
            hello = cbor2.dumps([0, 1, "fuzzer", {}, {}])
            await trio.to_thread.run_sync(bad.sendall, struct.pack(">I", len(hello)) + hello)
            await trio.to_thread.run_sync(bad.sendall, garbage)
            items = await trio.to_thread.run_sync(_read_frames, bad)
        finally:
            bad.close()
        assert items[0][0] == 0  # the membrane's hello  # type: ignore[index]
        error = items[-1]
        assert error[0] == 3 and error[1] is None  # type: ignore[index]
        assert error[2] in (ErrorCode.FRAME_TOO_LARGE, ErrorCode.MALFORMED_FRAME)  # type: ignore[index]
        assert await good.fire(Ping(1)) == Pong(2)


async def test_calls_beyond_credit_are_a_protocol_error(sockdir: Path) -> None:
    async with open_membrane("svc", Service().receptors, socket_dir=sockdir, credit_calls=2):
        bad = await trio.to_thread.run_sync(_raw_connect, sockdir / "svc.sock")
        try:
            frames = [[0, 1, "greedy", {}, {}]] + [[1, i, ["test.ms.Ping", i]] for i in range(1, 4)]
            data = b"".join(struct.pack(">I", len(p)) + p for p in map(cbor2.dumps, frames))
            await trio.to_thread.run_sync(bad.sendall, data)
            items = await trio.to_thread.run_sync(_read_frames, bad)
        finally:
            bad.close()
        assert items[-1][0] == 3 and items[-1][2] == ErrorCode.FLOW_CONTROL  # type: ignore[index]


async def test_vesicle_arrives_as_readonly_mapping(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        before = open_fds()
        vesicle = cellmesh.Vesicle.alloc(1 << 20)
        with vesicle.buffer as buf:
            buf[-1] = 7
        info = await syn.fire(Blob(vesicle))
        assert info == BlobInfo(1 << 20, True, True, 7)
        # Plain large bytes go the same way (copied once into a memfd).
        info = await syn.fire(Blob(b"\x01" * (256 * 1024)))
        assert info == BlobInfo(256 * 1024, True, True, 1)
        # Small bytes travel inline.
        assert await syn.fire(Blob(b"abc")) == BlobInfo(3, True, False, ord("c"))
        vesicle.close()
        gc.collect()
        assert open_fds() == before


async def test_no_fd_leak_over_many_vesicles(served: Service, sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        await syn.fire(Blob(b"\x00" * 70000))  # warm up lazily opened fds
        gc.collect()
        before = open_fds()
        for i in range(100):
            payload = bytes([i % 256]) * (64 * 1024 + i)
            info = await syn.fire(Blob(payload))
            assert info.length == len(payload)
        gc.collect()
        assert open_fds() == before


async def test_graceful_drain_finishes_inflight_calls(sockdir: Path) -> None:
    service = Service()
    results: list[object] = []
    async with trio.open_nursery() as outer:
        done_serving = trio.Event()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            async with open_membrane("svc", service.receptors, socket_dir=sockdir):
                task_status.started()
                await service.started_event("slow").wait()
            done_serving.set()

        await outer.start(serve)
        async with Synapse.grow("svc", socket_dir=sockdir) as syn:

            async def call() -> None:
                results.append(await syn.fire(Wait("slow")))

            outer.start_soon(call)
            await service.started_event("slow").wait()
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert not done_serving.is_set()  # draining: waits for the call
            service.event("slow").set()
            await done_serving.wait()
    assert results == [Pong(4)]


async def test_accept_filter_refuses_before_the_hello(sockdir: Path) -> None:
    seen: list[int] = []

    def only_once(sock: socket.socket) -> str | None:
        seen.append(sock.fileno())
        return None if len(seen) == 1 else "second peer refused"

    async def pong(msg: Ping) -> Pong:
        return Pong(msg.n)

    logged: list[str] = []
    async with open_membrane(
        "gate", pong, socket_dir=sockdir, accept_filter=only_once, log=logged.append,
        socket_mode=0o660,
    ) as membrane:
        assert membrane.socket_path is not None
        assert membrane.socket_path.stat().st_mode & 0o777 == 0o660
        async with Synapse.grow("gate", socket_dir=sockdir) as syn:
            assert await syn.fire(Ping(1)) == Pong(1)
        with pytest.raises(CellUnavailable):
            async with Synapse.grow("gate", socket_dir=sockdir):
                pass
    assert len(seen) == 2
    assert any("second peer refused" in line for line in logged)


async def test_membrane_on_an_explicit_socket_path(tmp_path: Path) -> None:
    async def pong(msg: Ping) -> Pong:
        return Pong(msg.n + 1)

    path = tmp_path / "sub" / "control.sock"
    async with open_membrane("anything", pong, socket_path=path):
        assert path.exists()
        async with Synapse.grow("anything", socket_path=path) as syn:
            assert await syn.fire(Ping(1)) == Pong(2)
    assert not path.exists()
    with pytest.raises(cellmesh.ConfigError, match="socket_path"):
        async with open_membrane("x", pong, socket_path=tmp_path / ("y" * 120)):
            pass


async def test_membrane_left_by_an_exception_closes_at_once(sockdir: Path) -> None:
    started = trio.Event()

    async def stuck(msg: Ping) -> Pong:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    failures: list[BaseException] = []

    async def client(task_status: trio.TaskStatus[None]) -> None:
        async with Synapse.grow("crashy", socket_dir=sockdir) as syn:
            task_status.started()
            try:
                await syn.fire(Ping(1))
            except CellUnavailable as exc:
                failures.append(exc)

    with trio.fail_after(10):  # not the hour-long drain: closed at once
        async with trio.open_nursery() as outer:
            with pytest.raises(RuntimeError, match="crash"):
                async with open_membrane("crashy", stuck, socket_dir=sockdir, drain_grace=3600):
                    await outer.start(client)
                    await started.wait()
                    raise RuntimeError("crash")
    assert len(failures) == 1


async def test_on_handler_error_sees_failures_only(sockdir: Path) -> None:
    seen: list[BaseException] = []

    async def handler(msg: Ping) -> Pong:
        if msg.n < 0:
            raise ValueError("negative")
        return Pong(msg.n)

    async with open_membrane("hooked", handler, socket_dir=sockdir, on_handler_error=seen.append):
        async with Synapse.grow("hooked", socket_dir=sockdir) as syn:
            assert await syn.fire(Ping(1)) == Pong(1)
            with pytest.raises(RemoteCellError, match="negative"):
                await syn.fire(Ping(-1))
    assert [type(e) for e in seen] == [ValueError]


async def test_a_caller_that_went_away_is_not_logged_as_a_send_failure(sockdir: Path) -> None:
    """A peer that exits (or crashes) before its answer is written is not news for
    the membrane's log: that line came once per crashing cell in root.log."""
    logged: list[str] = []
    release = trio.Event()

    async def slow(msg: Ping) -> Pong:
        await release.wait()
        return Pong(msg.n + 1)

    receptors = Receptors()
    receptors.add(Ping, slow)
    async with open_membrane("gone", receptors, socket_dir=sockdir, log=logged.append):
        for _ in range(3):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await trio.to_thread.run_sync(sock.connect, str(sockdir / "gone.sock"))
            tsock = trio.socket.from_stdlib_socket(sock)
            async with Synapse.grow("gone", socket_dir=sockdir) as syn:
                with trio.move_on_after(0.05):
                    await syn.fire(Ping(1))  # given up: the connection closes under it
            tsock.close()
        release.set()
        await trio.sleep(0.1)
    assert not [line for line in logged if "send failed" in line], logged
