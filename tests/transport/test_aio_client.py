"""The asyncio and blocking clients against real (Trio) membranes.

The membrane runs with ``trio.run`` in a thread of its own (a real membrane
on a real Unix socket); the test drives the client with ``asyncio.run`` in
the main thread, as an asyncio program would. Waits are on events the two
sides set, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import cellmesh
from cellmesh import (
    CellUnavailable,
    ConnectionClosed,
    FieldError,
    NoReceptor,
    OutcomeUnknown,
    Receptors,
    RemoteCellError,
    Request,
    UnexpectedReply,
    aio,
    open_membrane,
)
from cellmesh.errors import ErrorCode

BIG: int = 256 * 1024  # above the vesicle threshold: travels as a sealed memfd


@cellmesh.protein("test.aio.Pong")
class Pong:
    n: int


@cellmesh.protein("test.aio.Ping")
class Ping(Request[Pong]):
    n: int


@cellmesh.protein("test.aio.Liar")
class Liar(Request[Pong]):
    n: int


@cellmesh.protein("test.aio.Boom")
class Boom:
    message: str


@cellmesh.protein("test.aio.Hold")
class Hold(Request[Pong]):
    """Parks until released or cancelled."""

    key: str


@cellmesh.protein("test.aio.Tick")
class Tick:
    n: int


@cellmesh.protein("test.aio.Ticks")
class Ticks(Request[Pong]):
    pass


@cellmesh.protein("test.aio.Info")
class Info:
    length: int
    is_view: bool
    last: int


@cellmesh.protein("test.aio.Blob")
class Blob(Request[Info]):
    data: bytes


@cellmesh.protein("test.aio.Give")
class Give(Request["Blob"]):
    size: int


@cellmesh.protein("test.aio.Unserved")
class Unserved:
    n: int


class Server:
    """A Trio membrane in a thread; ``events`` are threading events the test waits on."""

    def __init__(self, sockdir: Path, *, sessions: bool = False) -> None:
        self.sockdir = sockdir
        self.sessions = sessions
        self._scope: trio.CancelScope | None = None
        self.ticks = 0
        self.started: dict[str, threading.Event] = {}
        self.cancelled: dict[str, threading.Event] = {}
        self.release: dict[str, trio.Event] = {}
        self.token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self.generation = 0

    def receptors(self) -> Receptors:
        r = Receptors()

        async def ping(msg: Ping) -> Pong:
            return Pong(msg.n + 1 + 1000 * self.generation)

        async def liar(msg: Liar) -> Ping:
            return Ping(msg.n)

        async def boom(msg: Boom) -> None:
            raise ValueError(msg.message)

        async def hold(msg: Hold) -> Pong:
            self.started.setdefault(msg.key, threading.Event()).set()
            try:
                await self.release.setdefault(msg.key, trio.Event()).wait()
            except trio.Cancelled:
                self.cancelled.setdefault(msg.key, threading.Event()).set()
                raise
            return Pong(len(msg.key))

        async def tick(msg: Tick) -> None:
            self.ticks += msg.n

        async def ticks(msg: Ticks) -> Pong:
            return Pong(self.ticks)

        async def blob(msg: Blob) -> Info:
            data = msg.data
            return Info(length=len(data), is_view=isinstance(data, memoryview), last=data[-1])

        async def give(msg: Give) -> Blob:
            return Blob(bytes(range(256)) * (msg.size // 256))

        for cls, fn in ((Ping, ping), (Liar, liar), (Boom, boom), (Hold, hold), (Tick, tick),
                        (Ticks, ticks), (Blob, blob), (Give, give)):
            r.add(cls, fn)
        return r

    def start(self) -> None:
        self._ready.clear()
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    async def _serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        with trio.CancelScope() as self._scope:
            async with open_membrane("svc", self.receptors(), socket_dir=self.sockdir,
                                     drain_grace=30.0, sessions=self.sessions):
                self._ready.set()
                await self._stop.wait()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the membrane's Trio thread."""
        return trio.from_thread.run_sync(fn, trio_token=self.token)

    def stop(self) -> None:
        """Leave the membrane's block: it drains (goaway; in-flight calls finish)."""
        if self._thread is not None and self._thread.is_alive():
            assert self._stop is not None
            stop = self._stop
            self.call(stop.set)
            self._thread.join(60)
        self.generation += 1

    def abort(self) -> None:
        """End the membrane at once: its connections break, calls in flight unanswered."""
        assert self._scope is not None and self._thread is not None
        self.call(self._scope.cancel)
        self._thread.join(60)

    def unblock(self, key: str) -> None:
        self.call(self.release.setdefault(key, trio.Event()).set)


@pytest.fixture
def server() -> Iterator[Server]:
    path = Path(tempfile.mkdtemp(prefix="cm-"))
    srv = Server(path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(path, ignore_errors=True)


async def wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 30)


def test_aio_fire_fire_many_and_signals(server: Server) -> None:
    async def main() -> None:
        async with aio.Synapse.grow("svc", socket_dir=server.sockdir) as syn:
            assert await syn.fire(Ping(1)) == Pong(2)
            replies = await syn.fire_many([Ping(i) for i in range(3000)])  # pipelined, columns
            assert replies == [Pong(i + 1) for i in range(3000)]
            await syn.signal_many([Tick(1)] * 500)
            await syn.signal(Tick(2))
            assert await syn.fire(Ticks()) == Pong(502)  # ordered after the signals
            results = await asyncio.gather(*(syn.fire(Ping(i)) for i in range(200)))
            assert results == [Pong(i + 1) for i in range(200)]  # tasks share one connection

    asyncio.run(main())


def test_aio_errors_are_the_same_types(server: Server) -> None:
    async def main() -> None:
        async with aio.Synapse.grow("svc", socket_dir=server.sockdir) as syn:
            with pytest.raises(RemoteCellError) as info:
                await syn.fire(Boom("kaput"))
            assert (info.value.type_name, info.value.remote_message) == ("ValueError", "kaput")
            assert info.value.code == ErrorCode.HANDLER_FAILED
            assert info.value.remote_traceback is not None
            with pytest.raises(NoReceptor):
                await syn.fire(Unserved(1))
            with pytest.raises(UnexpectedReply):
                await syn.fire(Liar(1))
            with pytest.raises(FieldError):
                await syn.fire(Ping("not an int"))  # type: ignore[arg-type]
            with pytest.raises(FieldError, match="field 'message'") as bad_text:
                await syn.fire(Boom("lone \ud800"))  # text that cannot travel, nothing sent
            assert bad_text.value.field == "message"
            with pytest.raises(RemoteCellError):
                await syn.fire_many([Ping(1), Boom("second"), Ping(2)])
            assert await syn.fire(Ping(5)) == Pong(6)  # the connection is still good
        with pytest.raises(ConnectionClosed):
            await syn.fire(Ping(1))
        with pytest.raises(CellUnavailable, match="no such socket"):
            await aio.Synapse.connect("nobody", socket_dir=server.sockdir)

    asyncio.run(main())


def test_aio_a_cancelled_task_cancels_the_call_in_the_cell(server: Server) -> None:
    async def main() -> None:
        async with aio.Synapse.grow("svc", socket_dir=server.sockdir) as syn:
            task = asyncio.create_task(syn.fire(Hold("a")))
            await wait_thread_event(server.started.setdefault("a", threading.Event()))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_thread_event(server.cancelled.setdefault("a", threading.Event()))
            # a timeout is a cancellation too
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await syn.fire(Hold("b"))
            await wait_thread_event(server.cancelled.setdefault("b", threading.Event()))
            assert await syn.fire(Ping(1)) == Pong(2)

    asyncio.run(main())


def test_aio_a_broken_call_to_a_replicated_cell_is_outcome_unknown(tmp_path: Path) -> None:
    """To a cell that deduplicates session calls (a replicated cell), the asyncio and
    blocking clients send plain calls and never resend: one in flight when the connection
    breaks may have been applied, so it is OutcomeUnknown, never CellUnavailable (which
    promises it was not); a later call that cannot leave is CellUnavailable."""
    sockdir = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    replicated = Server(sockdir, sessions=True)
    replicated.start()
    try:
        async def main() -> None:
            async with aio.Synapse.grow("svc", socket_dir=sockdir) as syn:
                assert await syn.fire(Ping(1)) == Pong(2)
                task = asyncio.create_task(syn.fire(Hold("x")))
                await wait_thread_event(replicated.started.setdefault("x", threading.Event()))
                await asyncio.get_running_loop().run_in_executor(None, replicated.abort)
                with pytest.raises(OutcomeUnknown, match="do not resend"):
                    await task
                with pytest.raises(CellUnavailable):
                    await syn.fire(Ping(2))

        asyncio.run(main())
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_aio_vesicles_travel_as_memfds_both_ways(server: Server) -> None:
    async def main() -> None:
        async with aio.Synapse.grow("svc", socket_dir=server.sockdir) as syn:
            payload = bytes(range(256)) * (BIG // 256)
            info = await syn.fire(Blob(payload))
            assert info == Info(length=BIG, is_view=True, last=255)  # mapped on the server
            vesicle = cellmesh.Vesicle.from_bytes(payload)
            assert (await syn.fire(Blob(vesicle))).length == BIG
            got = await syn.fire(Give(BIG))
            assert isinstance(got.data, memoryview) and got.data.readonly
            assert bytes(got.data) == payload
            infos = await syn.fire_many([Blob(payload), Blob(b"small")])
            assert [i.length for i in infos] == [BIG, 5]

    asyncio.run(main())


def test_aio_goaway_lets_calls_finish_and_the_next_call_reconnects(server: Server) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with aio.Synapse.grow("svc", socket_dir=server.sockdir) as syn:
            held = asyncio.create_task(syn.fire(Hold("drain")))
            await wait_thread_event(server.started.setdefault("drain", threading.Event()))
            stopping = loop.run_in_executor(None, server.stop)  # goaway; waits for "drain"
            async with asyncio.timeout(30):
                while not syn.draining:  # the goaway has reached the client
                    await asyncio.sleep(0)
            await loop.run_in_executor(None, server.unblock, "drain")
            assert await held == Pong(5)  # the call in flight finished across the goaway
            await stopping
            with pytest.raises(CellUnavailable):
                await syn.fire(Ping(1))  # nobody serves the socket now
            await loop.run_in_executor(None, server.start)  # a new membrane, same path
            assert await syn.fire(Ping(1)) == Pong(1002)  # reconnected to generation 1

    asyncio.run(main())


def test_blocking_client_for_scripts(server: Server) -> None:
    with cellmesh.connect("svc", socket_dir=server.sockdir) as syn:
        assert syn.fire(Ping(1)) == Pong(2)
        assert syn.fire_many([Ping(i) for i in range(100)]) == [Pong(i + 1) for i in range(100)]
        syn.signal(Tick(3))
        assert syn.fire(Ticks()) == Pong(3)
        with pytest.raises(NoReceptor):
            syn.fire(Unserved(1))
        with pytest.raises(TimeoutError):
            syn.fire(Hold("slow"), timeout=0.05)
        assert server.cancelled.setdefault("slow", threading.Event()).wait(30)
        results: list[Pong] = []
        threads = [threading.Thread(target=lambda i=i: results.append(syn.fire(Ping(i))))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(p.n for p in results) == list(range(1, 9))
    with pytest.raises(ConnectionClosed):
        syn.fire(Ping(1))
    with pytest.raises(CellUnavailable):
        cellmesh.connect("nobody", socket_dir=server.sockdir)


def test_an_asyncio_web_handler_calls_cells(server: Server) -> None:
    """The FastAPI pattern, framework-free: one synapse opened at startup, one task per
    request; a client that disconnects mid-request cancels the cell's handler."""

    async def main() -> None:
        syn = await aio.Synapse.connect("svc", socket_dir=server.sockdir)  # the lifespan

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = (await reader.readline()).decode().split()
            path = request[1] if len(request) > 1 else "/"
            if path.startswith("/hold/"):
                pong = await syn.fire(Hold(path.removeprefix("/hold/")))
            else:
                pong = await syn.fire(Ping(int(path.strip("/") or 0)))
            writer.write(f"HTTP/1.0 200 OK\r\n\r\n{pong.n}".encode())
            await writer.drain()
            writer.close()

        handlers: list[asyncio.Task[Any]] = []

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            await handle(reader, writer)

        web = await asyncio.start_server(tracked, "127.0.0.1", 0)
        port = web.sockets[0].getsockname()[1]

        async def get(path: str) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            body = (await reader.read()).decode().split("\r\n\r\n", 1)[1]
            writer.close()
            return body

        try:
            bodies = await asyncio.gather(*(get(f"/{i}") for i in range(50)))
            assert bodies == [str(i + 1) for i in range(50)]
            # a request whose client goes away: the framework cancels its handler task
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /hold/gone HTTP/1.0\r\n\r\n")
            await wait_thread_event(server.started.setdefault("gone", threading.Event()))
            writer.close()
            handlers[-1].cancel()
            await wait_thread_event(server.cancelled.setdefault("gone", threading.Event()))
        finally:
            web.close()
            await web.wait_closed()
            await syn.aclose()

    asyncio.run(main())


@cellmesh.protein("test.aio.Padded")
class Padded(Request[None]):
    """Inline bytes (under the vesicle threshold): queued in the client's buffer."""

    pad: bytes


_STOPPABLE = """
import sys, trio, cellmesh
from cellmesh import Receptors, open_membrane

@cellmesh.protein("test.aio.Pong")
class Pong:
    n: int

@cellmesh.protein("test.aio.Ping")
class Ping(cellmesh.Request[Pong]):
    n: int

@cellmesh.protein("test.aio.Tick")
class Tick:
    n: int

@cellmesh.protein("test.aio.Padded")
class Padded(cellmesh.Request[None]):
    pad: bytes

async def main():
    r = Receptors()
    async def ping(msg: Ping) -> Pong:
        return Pong(msg.n + 1)
    async def tick(msg: Tick) -> None:
        pass
    async def padded(msg: Padded) -> None:
        pass
    r.add(Ping, ping)
    r.add(Tick, tick)
    r.add(Padded, padded)
    async with open_membrane("w", r, socket_dir=sys.argv[1]):
        print("ready", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def test_closing_does_not_wait_for_a_cell_that_stopped_reading(tmp_path: Path) -> None:
    """A cell that stops reading (SIGSTOP; a receptor stuck in blocking code) while a
    client's requests are queued: ``aclose`` / ``close`` give up on them after
    CLOSE_FLUSH_TIMEOUT (as the Trio synapse does) and close the socket; a blocking
    ``signal_many`` takes a ``timeout`` too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cellmesh.transport.synapse import CLOSE_FLUSH_TIMEOUT

    sockdir = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    script = tmp_path / "stoppable.py"
    script.write_text(_STOPPABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(sockdir)], stdout=subprocess.PIPE,
                            text=True)
    big = [Tick(1)] * 200_000  # more than the socket buffers take

    def sockets() -> int:
        return sum(os.readlink(f"/proc/self/fd/{f}").startswith("socket:")
                   for f in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{f}"))

    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        async def main() -> float:
            syn = await aio.Synapse.connect("w", socket_dir=sockdir)
            assert await syn.fire(Ping(1)) == Pong(2)
            os.kill(proc.pid, signal.SIGSTOP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):  # 6 MB queued behind a full socket
                    await syn.fire_many([Padded(b"x" * 60_000) for _ in range(100)])
            t0 = time.monotonic()
            await syn.aclose()
            return time.monotonic() - t0

        before = sockets()
        took = asyncio.run(main())
        assert took < CLOSE_FLUSH_TIMEOUT + 2, took
        assert sockets() <= before
        os.kill(proc.pid, signal.SIGCONT)
        blocking = cellmesh.connect("w", socket_dir=sockdir)
        assert blocking.fire(Ping(3), timeout=10) == Pong(4)
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(TimeoutError):
            blocking.signal_many(big, timeout=1)
        with pytest.raises(TimeoutError):
            blocking.fire_many([Padded(b"x" * 60_000) for _ in range(100)], timeout=1)
        t0 = time.monotonic()
        blocking.close()
        assert time.monotonic() - t0 < CLOSE_FLUSH_TIMEOUT + 2
        assert sockets() <= before
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_blocking_client_dropped_unclosed_warns_and_frees_its_thread(server: Server) -> None:
    """Like an unclosed file: a ResourceWarning, and the connection and the loop thread
    are freed when it is collected (closed ones never warn)."""
    import gc
    import time
    import warnings

    def client_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("cellmesh-synapse-")]

    before = len(client_threads())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with cellmesh.connect("svc", socket_dir=server.sockdir) as closed:
            assert closed.fire(Ping(1)) == Pong(2)
        del closed
        dropped = cellmesh.connect("svc", socket_dir=server.sockdir)
        assert dropped.fire(Ping(2)) == Pong(3)
        del dropped
        gc.collect()
        deadline = time.monotonic() + 10
        while len(client_threads()) > before and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(client_threads()) == before
    warned = [w for w in caught if issubclass(w.category, ResourceWarning)
              and "BlockingSynapse" in str(w.message)]
    assert len(warned) == 1 and "was never closed" in str(warned[0].message)
