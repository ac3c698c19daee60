"""The asyncio and blocking clients against hand-driven cells: failures, closes, limits.

Each test runs a small fake cell (:class:`FakeCell`) that speaks
docs/protocol.md by hand on an asyncio Unix server, so it can misbehave on
cue: grant one call of credit, drop a connection with calls unanswered, send
a goaway, hold its hello back, stop reading. The asyncio tests run the cell
in the test's own loop; the blocking ones in a loop thread of its own. The
two sides synchronise on events (a frame arrived, a socket was closed), not
on time.

Covered: a batch whose connection broke sends nothing more; closing fails
calls in flight on draining connections too (a blocking ``close`` leaves no
thread blocked); a close during a reconnect leaves no connection behind; the
send queue is capped as in the Trio channel; a cancelled ``aclose`` (Ctrl-C
in a blocking ``close``) still closes the socket; a signal that raised
``CancelledError`` / ``TimeoutError`` was not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cellmesh
from cellmesh import CellUnavailable, ConnectionClosed, OutcomeUnknown, Request, aio
from cellmesh.transport._channel import MAX_QUEUED_BYTES
from cellmesh.transport.synapse import CLOSE_FLUSH_TIMEOUT
from cellmesh.wire import codec
from cellmesh.wire.codec import NEED_DATA, PROTOCOL_VERSION, FrameDecoder, Hello, Kind
from cellmesh.wire.proteins import PROTEINS

#: Inline bytes (under the vesicle threshold): each message sits in the send queue.
PAD = 60_000


@cellmesh.protein("test.aioaudit.Pong")
class Pong:
    n: int


@cellmesh.protein("test.aioaudit.Ping")
class Ping(Request[Pong]):
    n: int


@cellmesh.protein("test.aioaudit.Tick")
class Tick:
    n: int


@cellmesh.protein("test.aioaudit.Padded")
class Padded(Request[Pong]):
    n: int
    pad: bytes


class Peer:
    """One accepted connection of a :class:`FakeCell`, driven by its script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_frame_size=codec.DEFAULT_MAX_FRAME_SIZE)
        #: Set once the client closed its end (end of stream, or a write refused).
        self.eof = asyncio.Event()

    async def frame(self) -> list[list[Any]] | None:
        """The items of the client's next frame, or None at end of stream."""
        while (decoded := self.decoder.next_frame()) is NEED_DATA:
            try:
                data = await self.reader.read(1 << 20)
            except ConnectionError:
                data = b""
            if not data:
                self.eof.set()
                return None
            self.decoder.feed(data)
        return decoded.items

    async def until_eof(self) -> None:
        """Read (and drop) everything until the client closes its end."""
        while await self.frame() is not None:
            pass

    async def hello(self, *, calls: int = 10_000, credit_bytes: int = 1 << 40,
                    sessions: bool = False) -> None:
        """Take the client's hello and answer with ours, granting this credit."""
        assert (await self.frame()) is not None
        hello = Hello(version=PROTOCOL_VERSION, name="fake", proteins=PROTEINS.fingerprints(),
                      max_frame_size=codec.DEFAULT_MAX_FRAME_SIZE, credit_calls=calls,
                      credit_bytes=credit_bytes, sessions=sessions)
        self.writer.write(codec.frame_bytes(hello.to_wire()))
        await self.writer.drain()

    async def send(self, items: list[list[Any]]) -> None:
        for data in codec.encode_items(items, codec.DEFAULT_MAX_FRAME_SIZE):
            self.writer.write(data)
        await self.writer.drain()


def calls_of(items: list[list[Any]]) -> list[tuple[int, int]]:
    """(call id, n) of every call in a frame's items, plain or in columns."""
    out: list[tuple[int, int]] = []
    for item in items:
        if item[0] == Kind.CALL:
            out.append((item[1], item[2][1]))
        elif item[0] == Kind.COLUMNS and item[1] == Kind.CALL:
            out.extend(zip(list(item[4]), list(item[5][0]), strict=True))
    return out


def signals_in(items: list[list[Any]]) -> int:
    return sum(1 if item[0] == Kind.SIGNAL else item[2] if item[0] == Kind.COLUMNS
               and item[1] == Kind.SIGNAL else 0 for item in items)


def pong(call_id: int, n: int) -> list[Any]:
    return [Kind.REPLY, call_id, ["test.aioaudit.Pong", n]]


async def echo(peer: Peer) -> None:
    """Answer every call with Pong(n) until the client closes."""
    while (items := await peer.frame()) is not None:
        if replies := [pong(call_id, n) for call_id, n in calls_of(items)]:
            await peer.send(replies)


Script = Callable[[Peer, int], Awaitable[None]]


class FakeCell:
    """An asyncio Unix server at ``path``; connection ``i`` runs ``script(peer, i)``."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path = path
        self.script = script
        self.peers: list[Peer] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeCell:
        self._server = await asyncio.start_unix_server(self._serve, path=os.fspath(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.peers.append(peer)
        try:
            await self.script(peer, len(self.peers) - 1)
        except ConnectionError:  # the client closed its end while we wrote
            peer.eof.set()
        finally:
            writer.close()


@contextlib.contextmanager
def cell_in_thread(path: Path, script: Script) -> Iterator[tuple[FakeCell,
                                                                 asyncio.AbstractEventLoop]]:
    """A :class:`FakeCell` served by an event loop in a thread (for blocking clients)."""
    loop = asyncio.new_event_loop()
    cell = FakeCell(path, script)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(cell.__aenter__(), loop).result(10)
    try:
        yield cell, loop
    finally:
        asyncio.run_coroutine_threadsafe(cell.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def closed_within(peer: Peer, seconds: float) -> bool:
    """Whether the client closes its end of ``peer`` within ``seconds``."""
    try:
        await asyncio.wait_for(peer.eof.wait(), seconds)
    except TimeoutError:
        return False
    return True


def unsent(syn: aio.Synapse) -> int:
    """Bytes the client holds in its current connection's send queue."""
    conn = syn._conn
    assert conn is not None
    return sum(len(entry[0]) for entry in conn.channel._queue)


# -- 1. a failed batch sends nothing more ---------------------------------------------


@pytest.mark.parametrize("sessions", [False, True])
def test_aio_fire_many_sends_no_more_of_a_batch_whose_connection_broke(
    tmp_path: Path, sessions: bool
) -> None:
    """One call of credit, then the connection drops with that call unanswered: the
    batch has failed. The rest of it is never sent -- not on a new connection either
    -- and the error is true: CellUnavailable for a plain cell, OutcomeUnknown for a
    replicated one (the call that left may have been applied)."""
    seen: list[tuple[int, int]] = []  # (connection, n)

    async def script(peer: Peer, index: int) -> None:
        if index == 0:
            await peer.hello(calls=1, sessions=sessions)
            items = await peer.frame()
            assert items is not None
            seen.extend((0, n) for _, n in calls_of(items))
            return  # closes with the call unanswered
        await peer.hello(sessions=sessions)
        while (items := await peer.frame()) is not None:
            seen.extend((index, n) for _, n in calls_of(items))
            await peer.send([pong(call_id, n) for call_id, n in calls_of(items)])

    async def main() -> None:
        async with FakeCell(tmp_path / "c.sock", script) as cell:
            syn = await aio.Synapse.connect("c", socket_path=cell.path)
            try:
                with pytest.raises(OutcomeUnknown if sessions else CellUnavailable):
                    await syn.fire_many([Ping(i) for i in range(5)])
                assert seen == [(0, 0)]
                assert len(cell.peers) == 1  # no connection was opened for the rest
                assert not syn.connected
                assert await syn.fire(Ping(9)) == Pong(9)  # the next call reconnects...
                assert seen == [(0, 0), (1, 9)]  # ...and it alone goes there
            finally:
                await syn.aclose()

    asyncio.run(main())


# -- 2. closing fails calls on draining connections -----------------------------------


def draining_script(held: threading.Event | asyncio.Event) -> Script:
    """Connection 0 holds the call Ping(1) unanswered; Ping(0) is answered after a
    goaway in the same frame (so the client is draining once it has its answer).
    Later connections echo."""

    async def script(peer: Peer, index: int) -> None:
        await peer.hello()
        if index:
            await echo(peer)
            return
        while (items := await peer.frame()) is not None:
            for call_id, n in calls_of(items):
                if n == 1:
                    held.set()
                else:
                    await peer.send([[Kind.GOAWAY, 32, "stopping"], pong(call_id, n)])

    return script


def test_aio_aclose_fails_calls_in_flight_on_a_draining_connection(tmp_path: Path) -> None:
    """After a goaway, a call in flight finishes on the old connection while new calls
    go to a new one; aclose closes both, and that call fails with CellUnavailable."""
    async def main() -> None:
        held = asyncio.Event()
        async with FakeCell(tmp_path / "d.sock", draining_script(held)) as cell:
            syn = await aio.Synapse.connect("d", socket_path=cell.path)
            slow = asyncio.create_task(syn.fire(Ping(1)))
            await asyncio.wait_for(held.wait(), 5)
            assert await syn.fire(Ping(0)) == Pong(0)
            assert syn.draining
            assert await syn.fire(Ping(2)) == Pong(2)  # on a new connection
            assert len(cell.peers) == 2
            await syn.aclose()
            with pytest.raises(CellUnavailable, match="closed"):
                await asyncio.wait_for(slow, 2)
            await asyncio.wait_for(cell.peers[0].eof.wait(), 2)  # the old socket is closed
            await asyncio.wait_for(cell.peers[1].eof.wait(), 2)

    asyncio.run(main())


def test_blocking_close_leaves_no_thread_blocked_on_a_draining_connection(
    tmp_path: Path,
) -> None:
    held = threading.Event()
    with cell_in_thread(tmp_path / "d.sock", draining_script(held)) as (cell, _):
        syn = cellmesh.connect("d", socket_path=cell.path)
        outcome: list[BaseException | Pong] = []

        def worker() -> None:
            try:
                outcome.append(syn.fire(Ping(1)))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        assert held.wait(5)
        assert syn.fire(Ping(0), timeout=5) == Pong(0)
        assert syn.fire(Ping(2), timeout=5) == Pong(2)  # on a new connection
        assert len(cell.peers) == 2
        syn.close()
        thread.join(5)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], CellUnavailable)


# -- 3. a close during a reconnect ----------------------------------------------------


def test_aio_aclose_while_another_task_reconnects(tmp_path: Path) -> None:
    """A task reconnects to a cell slow to say hello; aclose meanwhile must not wait for
    it, that task gets ConnectionClosed, no socket stays open and no later call works."""
    hello_seen = asyncio.Event()

    async def script(peer: Peer, index: int) -> None:
        if index == 0:
            await peer.hello()
            await peer.frame()
            return  # drop the connection with the call unanswered
        await peer.frame()  # the client's hello; ours never comes
        hello_seen.set()
        await peer.until_eof()

    async def main() -> None:
        async with FakeCell(tmp_path / "r.sock", script) as cell:
            syn = await aio.Synapse.connect("r", socket_path=cell.path)
            with pytest.raises(CellUnavailable):
                await syn.fire(Ping(0))
            call = asyncio.create_task(syn.fire(Ping(7)))  # reconnects
            await asyncio.wait_for(hello_seen.wait(), 5)
            await asyncio.wait_for(syn.aclose(), 2)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(call, 2)
            await asyncio.wait_for(cell.peers[1].eof.wait(), 2)
            assert not syn.connected
            with pytest.raises(ConnectionClosed):
                await syn.fire(Ping(8))
            assert len(cell.peers) == 2

    asyncio.run(main())


def test_aio_aclose_as_a_reconnect_gets_its_hello(tmp_path: Path) -> None:
    """The hello comes while aclose runs: the new connection is closed, not kept."""
    release, accepted = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer, index: int) -> None:
        if index == 0:
            await peer.hello()
            await peer.frame()
            return
        accepted.set()
        await release.wait()
        await peer.hello()
        await echo(peer)

    async def main() -> None:
        async with FakeCell(tmp_path / "h.sock", script) as cell:
            syn = await aio.Synapse.connect("h", socket_path=cell.path)
            with pytest.raises(CellUnavailable):
                await syn.fire(Ping(0))
            call = asyncio.create_task(syn.fire(Ping(7)))
            await asyncio.wait_for(accepted.wait(), 5)
            release.set()  # the hello goes out as aclose begins
            await syn.aclose()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(call, 2)
            await asyncio.wait_for(cell.peers[1].eof.wait(), 2)
            assert not syn.connected

    asyncio.run(main())


# -- 4. the send queue is capped ------------------------------------------------------


def test_aio_send_queue_is_capped_for_a_cell_that_stops_reading(tmp_path: Path) -> None:
    """A cell grants huge credit and stops reading: signals and calls wait for room once
    MAX_QUEUED_BYTES are queued (plus what the kernel holds), as with the Trio
    channel, and go on once the cell reads again."""
    reading = asyncio.Event()
    received = {"signals": 0}

    async def script(peer: Peer, index: int) -> None:
        await peer.hello()
        await reading.wait()
        while (items := await peer.frame()) is not None:
            received["signals"] += signals_in(items)
            if replies := [pong(call_id, n) for call_id, n in calls_of(items)]:
                await peer.send(replies)

    count = 400  # 24 MB in all
    bound = MAX_QUEUED_BYTES + 2 * PAD

    async def main() -> None:
        async with FakeCell(tmp_path / "q.sock", script) as cell:
            syn = await aio.Synapse.connect("q", socket_path=cell.path)
            progress = {"signals": 0}

            async def sender() -> None:
                for i in range(count):
                    await syn.signal(Padded(i, b"x" * PAD))
                    progress["signals"] += 1

            task = asyncio.create_task(sender())
            # Each signal is one scheduler pass when nothing bounds the queue: give it
            # passes enough for all of them, then it must still be waiting for room.
            for _ in range(3 * count):
                if task.done():
                    break
                await asyncio.sleep(0)
            assert not task.done()
            assert unsent(syn) <= bound
            assert progress["signals"] * PAD < bound + 4 * 1024 * 1024  # + kernel buffers
            calls = [asyncio.create_task(syn.fire(Padded(i, b"y" * PAD))) for i in range(50)]
            for _ in range(200):
                await asyncio.sleep(0)
            assert unsent(syn) <= bound and not any(call.done() for call in calls)
            reading.set()  # the cell reads again: everything goes through
            async with asyncio.timeout(30):
                await task
                assert [(await call).n for call in calls] == list(range(50))
                assert await syn.fire(Ping(0)) == Pong(0)  # answered after every signal
            assert received["signals"] == count
            await syn.aclose()

    asyncio.run(main())


# -- 5. a cancelled close still closes ------------------------------------------------


def stalled_script(reading: asyncio.Event | threading.Event) -> Script:
    """A cell that takes the hello, reads nothing until ``reading``, then reads to EOF."""

    async def script(peer: Peer, index: int) -> None:
        await peer.hello()
        if isinstance(reading, asyncio.Event):
            await reading.wait()
        else:
            await asyncio.get_running_loop().run_in_executor(None, reading.wait)
        await peer.until_eof()

    return script


def test_aio_a_cancelled_aclose_still_closes_the_connection(tmp_path: Path) -> None:
    """aclose waits for queued bytes to leave; cancelled in that wait (a shutdown
    deadline), it closes the socket all the same, and a second aclose is a no-op."""
    reading = asyncio.Event()

    async def main() -> None:
        async with FakeCell(tmp_path / "s.sock", stalled_script(reading)) as cell:
            syn = await aio.Synapse.connect("s", socket_path=cell.path)
            await syn.signal_many([Padded(i, b"x" * PAD) for i in range(30)])
            assert unsent(syn) > 0  # more than the kernel takes
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(syn.aclose(), 0.1)
            assert not syn.connected
            reading.set()
            await asyncio.wait_for(cell.peers[0].eof.wait(), 2)  # the socket was closed
            await asyncio.wait_for(syn.aclose(), 1)
            with pytest.raises(ConnectionClosed):
                await syn.fire(Ping(1))

    asyncio.run(main())


def test_blocking_close_interrupted_by_ctrl_c_still_closes(tmp_path: Path) -> None:
    reading = threading.Event()
    with cell_in_thread(tmp_path / "k.sock", stalled_script(reading)) as (cell, loop):
        syn = cellmesh.connect("k", socket_path=cell.path)
        syn.signal_many([Padded(i, b"x" * PAD) for i in range(30)], timeout=5)

        def interrupt() -> None:  # once close() waits for the flush
            deadline = time.monotonic() + 5
            while not syn._syn._closed and time.monotonic() < deadline:
                time.sleep(0.001)
            if syn._syn._closed and syn._thread.is_alive():  # never a stray SIGINT
                os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            syn.close()
        assert time.monotonic() - start < CLOSE_FLUSH_TIMEOUT / 2
        assert not syn._thread.is_alive()
        reading.set()
        assert asyncio.run_coroutine_threadsafe(closed_within(cell.peers[0], 2), loop).result(5)
        with pytest.raises(ConnectionClosed):
            syn.fire(Ping(1))


# -- 6. a signal that raised was not sent ---------------------------------------------


def counting_script(received: list[int]) -> Script:
    """Counts signals; answers Ping with Pong(number of signals so far)."""

    async def script(peer: Peer, index: int) -> None:
        await peer.hello()
        while (items := await peer.frame()) is not None:
            received[0] += signals_in(items)
            if replies := [pong(call_id, received[0]) for call_id, _ in calls_of(items)]:
                await peer.send(replies)

    return script


def test_aio_a_cancelled_signal_was_not_sent(tmp_path: Path) -> None:
    """Cancelled at any point (a timeout), ``signal`` either returned -- it was sent --
    or raised CancelledError and sent nothing."""
    received = [0]

    async def main() -> None:
        async with FakeCell(tmp_path / "g.sock", counting_script(received)) as cell:
            syn = await aio.Synapse.connect("g", socket_path=cell.path)
            returned = 0
            for passes in range(6):
                task = asyncio.create_task(syn.signal(Tick(passes)))
                for _ in range(passes):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                    returned += 1
            assert returned
            assert await syn.fire(Ping(0)) == Pong(returned)  # after every signal that left
            await syn.aclose()

    asyncio.run(main())


def test_blocking_signal_timeout_means_not_sent(tmp_path: Path) -> None:
    received = [0]
    with cell_in_thread(tmp_path / "t.sock", counting_script(received)) as (cell, _):
        with cellmesh.connect("t", socket_path=cell.path) as syn:
            returned = timeouts = 0
            for i in range(1500):
                try:
                    syn.signal(Tick(i), timeout=(0, 1e-4, 2e-4, 5e-4)[i % 4])
                    returned += 1
                except TimeoutError:
                    timeouts += 1
            assert syn.fire(Ping(0), timeout=10) == Pong(returned)
            assert returned + timeouts == 1500
