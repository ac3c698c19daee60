"""End-of-pass coalescing, the single-message paths and signal_nowait, over real sockets.

Counts real ``sendmsg`` calls through a wrapped socket: K concurrent calls in
one scheduler pass cost O(1) writes in each direction. Nothing here is timed.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from rawwire import BATCH, CALL, RawConnection, answers, frame

import cellmesh
from cellmesh import ConnectionClosed, Receptors, Synapse, open_membrane
from cellmesh.errors import FieldError, LocalProtocolError
from cellmesh.wire.proteins import ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("test.co.Ping", registry=REG)
class Ping:
    n: int


@cellmesh.protein("test.co.Tick", registry=REG)
class Tick:
    n: int


@cellmesh.protein("test.co.Gate", registry=REG)
class Gate:
    n: int


@cellmesh.protein("test.co.Seen", registry=REG)
class Seen:
    order: list[int]


@cellmesh.protein("test.co.Nap", registry=REG)
class Nap:
    n: int


@cellmesh.protein("test.co.Blob", registry=REG)
class Blob:
    data: bytes


class CountingSocket:
    """A socket wrapper that counts the writes (``sendmsg`` calls) made through it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def sendmsg(self, *args: Any) -> int:
        self.writes += 1
        return self._sock.sendmsg(*args)

    def send(self, *args: Any) -> int:
        self.writes += 1
        return self._sock.send(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Cell:
    """Records the order of what arrives; Gate calls wait for ``gate``."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.gate = trio.Event()
        self.gated = 0
        self.all_gated = trio.Event()
        self.want_gated = 0
        self.ticks = 0
        self.ticked = trio.Event()
        self.want_ticks = 0
        r = self.receptors = Receptors()
        r.add(Ping, self.ping)
        r.add(Tick, self.tick)
        r.add(Gate, self.wait_gate)
        r.add(Seen, self.seen)
        r.add(Blob, self.blob)
        r.add(Nap, self.nap)

    async def ping(self, msg: Ping) -> Ping:
        self.order.append(msg.n)
        return Ping(msg.n + 1)

    async def tick(self, msg: Tick) -> None:
        self.order.append(msg.n)
        self.ticks += 1
        if self.ticks == self.want_ticks:
            self.ticked.set()

    async def wait_gate(self, msg: Gate) -> Gate:
        self.gated += 1
        if self.gated == self.want_gated:
            self.all_gated.set()
        await self.gate.wait()
        return Gate(msg.n)

    async def seen(self, msg: Seen) -> Seen:
        return Seen(list(self.order))

    async def nap(self, msg: Nap) -> Nap:
        self.order.append(msg.n)  # (before the await: the order handlers start in)
        await trio.lowlevel.checkpoint()
        return Nap(msg.n)

    async def blob(self, msg: Blob) -> Ping:
        return Ping(len(msg.data))


def counting(syn: Synapse) -> CountingSocket:
    """Wrap the synapse's live socket so its writes are counted."""
    conn = syn._conn
    assert conn is not None
    wrapped = CountingSocket(conn.channel.sock)
    conn.channel.sock = wrapped  # type: ignore[assignment]
    return wrapped


async def test_coalescing_k_concurrent_fires_in_one_pass_cost_o1_writes(sockdir: Path) -> None:
    cell = Cell()
    k = 200
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            assert await syn.fire(Ping(0)) == Ping(1)
            (server_conn,) = membrane._connections
            client_sock = counting(syn)
            server_sock = CountingSocket(server_conn.channel.sock)
            server_conn.channel.sock = server_sock  # type: ignore[assignment]
            replies: dict[int, Ping] = {}

            async def call(i: int) -> None:
                replies[i] = await syn.fire(Ping(i))

            async with trio.open_nursery() as nursery:
                for i in range(k):
                    nursery.start_soon(call, i)  # all start in the same pass
            assert replies == {i: Ping(i + 1) for i in range(k)}
            assert client_sock.writes <= 2, client_sock.writes  # one write for all K calls
            assert server_sock.writes <= 2, server_sock.writes  # one write for all K replies


async def test_calls_whose_handlers_await_start_together_in_order_and_answer_in_o1_writes(
    sockdir: Path,
) -> None:
    """A handler that awaits (natural actor code: it calls another cell, sleeps,
    takes a lock) suspends in the reader. The calls behind it start in tasks
    spawned at once, all in the next pass, each taking the next call: still in
    arrival order. Before, each suspended call handed the reader role to a new
    task a pass later: K calls started in K passes and were answered in about K
    writes."""
    cell = Cell()
    k = 64
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            assert await syn.fire(Nap(-1)) == Nap(-1)
            cell.order.clear()
            (server_conn,) = membrane._connections
            server_sock = CountingSocket(server_conn.channel.sock)
            server_conn.channel.sock = server_sock  # type: ignore[assignment]
            replies = await syn.fire_many([Nap(i) for i in range(k)])  # one frame
            assert replies == [Nap(i) for i in range(k)]
            assert cell.order == list(range(k))  # started in arrival order
            assert server_sock.writes <= 4, server_sock.writes
            assert server_conn.suspended == 0 and server_conn.starters == 0


async def test_coalescing_replies_of_handlers_woken_together_leave_in_one_write(
    sockdir: Path,
) -> None:
    cell = Cell()
    k = 50
    cell.want_gated = k
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            results: list[Any] = []
            async with trio.open_nursery() as nursery:
                for i in range(k):
                    nursery.start_soon(lambda i=i: _append(results, syn.fire(Gate(i))))
                await cell.all_gated.wait()  # K handlers suspended, each in its own task
                (server_conn,) = membrane._connections
                server_sock = CountingSocket(server_conn.channel.sock)
                server_conn.channel.sock = server_sock  # type: ignore[assignment]
                cell.gate.set()  # all K finish in the same pass
            assert sorted(r.n for r in results) == list(range(k))
            assert server_sock.writes <= 2, server_sock.writes


async def _append(out: list[Any], call: Any) -> None:
    out.append(await call)


async def test_coalescing_keeps_the_order_of_one_task_across_every_send_path(
    sockdir: Path,
) -> None:
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            await syn.signal(Tick(1))
            syn.signal_nowait(Tick(2))
            await syn.signal_many([Tick(3), Tick(4)])
            syn.signal_nowait(Tick(5))
            assert await syn.fire(Ping(6)) == Ping(7)
            await syn.fire_many([Ping(7), Ping(8)])
            await syn.signal(Tick(9))
            assert await syn.fire(Seen([])) == Seen(list(range(1, 10)))


async def test_coalescing_looping_signals_arrive_without_any_later_call(sockdir: Path) -> None:
    cell = Cell()
    cell.want_ticks = 300
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            writes = counting(syn)
            for i in range(300):
                await syn.signal(Tick(i))
            with trio.fail_after(10):  # a hang, not a speed bound
                await cell.ticked.wait()  # held signals leave once the loop stops
            assert cell.order == list(range(300))
            assert writes.writes < 300 // 4  # many signals per write


async def test_signal_nowait_never_blocks_and_raises_would_block_without_credit(
    sockdir: Path,
) -> None:
    cell = Cell()
    cell.want_gated = 1
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG,
                             credit_calls=4, max_concurrency=1):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(syn.fire, Gate(0))  # holds one call of credit
                await cell.all_gated.wait()
                sent = 0
                with pytest.raises(trio.WouldBlock):
                    for i in range(10):
                        syn.signal_nowait(Tick(i))
                        sent += 1
                assert sent == 3  # the rest of the credit, then WouldBlock
                cell.gate.set()
            # Credit comes back; the queued signals arrived.
            assert await syn.fire(Seen([])) == Seen([0, 1, 2])


async def test_signal_nowait_reports_bad_messages_and_a_closed_synapse(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            with pytest.raises(FieldError):
                syn.signal_nowait(Tick("x"))  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                syn.signal_nowait(object())
        with pytest.raises(ConnectionClosed):
            syn.signal_nowait(Tick(1))


async def test_signal_cancelled_before_it_runs_sends_nothing(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            with trio.CancelScope() as scope:
                scope.cancel()
                await syn.signal(Tick(1))
            assert scope.cancelled_caught
            await syn.signal(Tick(2))
            assert await syn.fire(Seen([])) == Seen([2])


async def test_fire_cancelled_in_the_pass_it_queued_still_gets_one_final_answer(
    sockdir: Path,
) -> None:
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(syn.fire, Gate(1))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()  # its call and its cancel share a pass
            assert await syn.fire(Ping(1)) == Ping(2)
            conn = syn._conn
            assert conn is not None and not conn.pending  # the cancelled call was answered


async def test_fire_too_large_for_the_peer_fails_at_the_call(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG,
                             max_frame_size=4096):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG,
                                vesicle_threshold=2**40) as syn:
            with pytest.raises(LocalProtocolError):
                await syn.fire(Blob(b"x" * 5000))
            with pytest.raises(LocalProtocolError):
                syn.signal_nowait(Blob(b"x" * 5000))
            assert await syn.fire(Blob(b"x" * 3000)) == Ping(3000)


async def test_partial_write_at_the_end_of_a_pass_finishes_without_other_io(
    sockdir: Path,
) -> None:
    """Regression: a write the kernel took only part of at the end of a pass woke the
    writer task from inside the flusher, and the loop slept in epoll with it runnable."""
    cell = Cell()
    payload = bytes(range(256)) * 8192  # 2 MiB: far more than one socket buffer
    options: dict[str, Any] = {"max_frame_size": 64 << 20, "vesicle_threshold": 2**40}
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG,
                             **options):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG, **options) as syn:
            for _ in range(3):
                with trio.fail_after(20):  # a hang, not a speed bound
                    assert await syn.fire(Blob(payload)) == Ping(len(payload))


@cellmesh.protein("test.co.Name", registry=REG)
class Name:
    text: str


async def test_unencodable_text_fails_at_the_call_not_the_connection(sockdir: Path) -> None:
    cell = Cell()
    cell.receptors.add(Name, cell.seen)  # type: ignore[arg-type]
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            with pytest.raises(FieldError, match="UTF-8"):
                await syn.fire(Name("\ud800"))
            with pytest.raises(FieldError, match="UTF-8"):
                syn.signal_nowait(Name("\ud800"))
            assert await syn.fire(Ping(1)) == Ping(2)  # the connection is fine


async def test_signals_sent_just_before_leaving_grow_are_not_lost(sockdir: Path) -> None:
    cell = Cell()
    cell.want_ticks = 3
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            await syn.signal(Tick(1))  # held for the next pass (a signal loop may follow)
            syn.signal_nowait(Tick(2))
            await syn.signal(Tick(3))
        with trio.fail_after(10):  # a hang, not a speed bound
            await cell.ticked.wait()
        assert cell.order == [1, 2, 3]


async def test_signal_nowait_stops_at_the_entry_cap_whatever_the_credit(sockdir: Path) -> None:
    from cellmesh.transport._outbox import MAX_ENTRIES

    cell = Cell()
    cell.want_ticks = MAX_ENTRIES + 1
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG,
                             credit_calls=10 * MAX_ENTRIES):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            queued = 0
            with pytest.raises(trio.WouldBlock):
                while True:  # never yields: only the cap can stop it
                    syn.signal_nowait(Tick(queued))
                    queued += 1
            assert queued == MAX_ENTRIES
            await syn.signal(Tick(queued))  # waits for room, then goes out in order
            with trio.fail_after(30):  # a hang, not a speed bound
                await cell.ticked.wait()
            assert cell.order == list(range(MAX_ENTRIES + 1))


# -- a pipeline, not a lockstep: the cell writes its first answers early -------


async def _answer_frames(sockdir: Path, data: bytes, calls: int) -> list[list[int]]:
    """Send ``data`` (frames of Ping calls) in one write from a raw client; return
    the call ids answered by each frame the cell sends back, in order."""
    cell = Cell()
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG):
        conn = await RawConnection.connect(str(sockdir / "co.sock"))
        await conn.open()
        await conn.send(data)
        frames: list[list[int]] = []
        with trio.fail_after(10):  # a hang, not a speed bound
            while sum(map(len, frames)) < calls:
                frames.append(sorted(answers(await conn.recv())))
        conn.close()
    assert cell.order == list(range(1, calls + 1))
    return frames


def _calls(first: int, count: int) -> bytes:
    return frame([BATCH, [[CALL, i, ["test.co.Ping", i]] for i in range(first, first + count)]])


async def test_a_batch_of_calls_is_answered_in_two_writes_the_first_halfway(
    sockdir: Path,
) -> None:
    # The client gets the first half of the answers while the cell still
    # works on the second half, instead of waiting for the whole batch.
    frames = await _answer_frames(sockdir, _calls(1, 100), 100)
    assert frames == [list(range(1, 51)), list(range(51, 101))]


async def test_answers_already_made_leave_before_the_next_frames_work(sockdir: Path) -> None:
    # Two frames of calls in one write: the first frame's answers do not wait
    # for the second frame's handlers (at most its first half).
    frames = await _answer_frames(sockdir, _calls(1, 100) + _calls(101, 100), 200)
    assert frames == [list(range(1, 51)), list(range(51, 151)), list(range(151, 201))]


async def test_a_few_calls_are_still_answered_in_one_write(sockdir: Path) -> None:
    frames = await _answer_frames(sockdir, _calls(1, 8), 8)
    assert frames == [list(range(1, 9))]


# -- the fast path of one fire: its waiter gets exactly one outcome -------------


@asynccontextmanager
async def warm(sockdir: Path, gated: int = 1) -> AsyncIterator[tuple[Cell, Any, Synapse, Any]]:
    """A cell expecting ``gated`` Gate calls and a synapse whose first call was answered
    (a live connection: the next call takes the fast path)."""
    cell = Cell()
    cell.want_gated = gated
    async with open_membrane("co", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            assert await syn.fire(Ping(0)) == Ping(1)
            assert syn._conn is not None
            yield cell, membrane, syn, syn._conn


@cellmesh.protein("test.co.Fail", registry=REG)
class Fail:
    n: int


async def test_fast_fire_cancelled_while_its_reply_is_in_flight_discards_the_reply(
    sockdir: Path,
) -> None:
    async with warm(sockdir) as (cell, _, syn, conn):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_once_running() -> None:
                    await cell.all_gated.wait()  # the handler runs: the call was sent
                    scope.cancel()

                nursery.start_soon(cancel_once_running)
                await syn.fire(Gate(1))
        assert scope.cancelled_caught
        # Later calls on the same connection get their own replies, and the
        # cancelled call's final answer was consumed, not delivered.
        assert [await syn.fire(Ping(i)) for i in range(3)] == [Ping(1), Ping(2), Ping(3)]
        assert not conn.pending and syn._conn is conn


async def test_calls_one_at_a_time_cost_one_write_each_way(sockdir: Path) -> None:
    # The lone call is written at once and the cell answers at once (no handler
    # suspended): still exactly one write per call in each direction.
    async with warm(sockdir) as (cell, membrane, syn, _conn):
        (server_conn,) = membrane._connections
        client_sock = counting(syn)
        server_sock = CountingSocket(server_conn.channel.sock)
        server_conn.channel.sock = server_sock  # type: ignore[assignment]
        syn.signal_nowait(Tick(-1))  # queued before the call: it leaves with it, first
        for i in range(20):
            assert await syn.fire(Ping(i)) == Ping(i + 1)
        assert client_sock.writes == 20, client_sock.writes
        assert server_sock.writes == 20, server_sock.writes
        assert cell.order == [0, -1, *range(20)]


@pytest.mark.parametrize("batch", [False, True], ids=["lone fire", "fire_many"])
async def test_a_call_whose_write_fails_in_the_callers_task_raises_cell_unavailable(
    sockdir: Path, batch: bool
) -> None:
    # The cell closed the connection and nobody was reading to notice. A lone
    # call is written at once from its caller's task; fire_many frames past
    # WRITE_NOW_BYTES are too. The failed write ends the connection in that
    # task: the caller gets CellUnavailable (not a hang, not a Trio internal
    # error) and the next call connects afresh.
    async with warm(sockdir) as (_cell, membrane, syn, conn):
        (server_conn,) = membrane._connections
        server_conn.channel.sock.shutdown(socket.SHUT_RDWR)
        with trio.fail_after(10), pytest.raises(cellmesh.CellUnavailable):  # (a hang bound)
            if batch:
                await syn.fire_many([Blob(bytes(60_000)) for _ in range(400)])
            else:
                await syn.fire(Ping(1))
        assert conn.dead is not None
        with trio.fail_after(10):
            assert await syn.fire(Ping(2)) == Ping(3)
        assert syn._conn is not conn


async def test_fast_fire_gets_the_handlers_error_and_the_connection_stays(
    sockdir: Path,
) -> None:
    async def fail(msg: Fail) -> Ping:
        raise ValueError(f"no {msg.n}")

    receptors = Receptors()
    receptors.add(Fail, fail)
    receptors.add(Ping, Cell().ping)
    async with open_membrane("co", receptors, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("co", socket_dir=sockdir, registry=REG) as syn:
            assert await syn.fire(Ping(0)) == Ping(1)
            conn = syn._conn
            with pytest.raises(cellmesh.RemoteCellError, match="no 7"):
                await syn.fire(Fail(7))
            assert await syn.fire(Ping(1)) == Ping(2)
            assert syn._conn is conn  # one call failed, not the connection


async def test_fast_fire_waiting_when_the_connection_dies_raises_cell_unavailable(
    sockdir: Path,
) -> None:
    async with warm(sockdir, 2) as (cell, _membrane, syn, _conn):
        outcomes: list[str] = []

        async def call(i: int) -> None:
            try:
                await syn.fire(Gate(i))
            except cellmesh.CellUnavailable:
                outcomes.append("unavailable")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 1)
            nursery.start_soon(call, 2)
            await cell.all_gated.wait()  # both calls are in the cell, their callers parked
            syn._abandon_connection("test: the connection breaks")
        assert outcomes == ["unavailable", "unavailable"]  # each waiter failed exactly once
        cell.gate.set()
        assert await syn.fire(Ping(5)) == Ping(6)  # the next call reconnects


# -- the read role: one call outstanding at a time is woken by its own reply ----
# The reader hands the role over for the pass after it answered the only
# pending call, so each test's next fire comes from the task that just got
# its reply, in the same step (as a loop of calls does).


async def test_lone_caller_reads_its_own_reply_and_the_reader_stays_parked(
    sockdir: Path,
) -> None:
    async with warm(sockdir, 1) as (cell, _membrane, syn, conn):
        assert conn.reader_parked is not None  # one call answered, none pending: handed off
        holding: list[bool] = []

        async def watch() -> None:
            await cell.all_gated.wait()
            holding.append(conn.read_holder)  # the caller waits on the socket itself
            cell.gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            assert await syn.fire(Gate(1)) == Gate(1)
        assert holding == [True]
        for i in range(5):
            assert await syn.fire(Ping(i)) == Ping(i + 1)
        assert conn.reader_parked is not None and not conn.read_holder
        await trio.testing.wait_all_tasks_blocked()  # a pass with no call: the role goes back
        assert conn.reader_parked is None
        assert await syn.fire(Ping(9)) == Ping(10)


async def test_read_role_holder_hands_other_callers_their_replies(sockdir: Path) -> None:
    async with warm(sockdir, 1) as (cell, _membrane, syn, conn):
        got: dict[str, Any] = {}

        async def batch() -> None:
            await cell.all_gated.wait()
            assert conn.read_holder
            got["many"] = await syn.fire_many([Ping(10), Ping(20)])  # read by the holder

        async def release() -> None:
            await cell.all_gated.wait()
            await trio.testing.wait_all_tasks_blocked()  # the batch is in flight
            cell.gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(batch)
            nursery.start_soon(release)
            got["gate"] = await syn.fire(Gate(7))
        assert got == {"gate": Gate(7), "many": [Ping(11), Ping(21)]}
        assert not conn.pending and not conn.read_holder
        assert await syn.fire(Seen([])) == Seen([0, 10, 20])


async def test_read_role_holder_sees_the_cell_close_and_fails_once(sockdir: Path) -> None:
    async with warm(sockdir, 1) as (cell, membrane, syn, conn):
        holding: list[bool] = []

        async def close_cell_side() -> None:
            await cell.all_gated.wait()
            holding.append(conn.read_holder)
            (server_conn,) = membrane._connections
            server_conn.channel.close()  # the cell's side goes away

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_cell_side)
            with pytest.raises(cellmesh.CellUnavailable):
                await syn.fire(Gate(1))
        assert holding == [True]
        assert conn.dead is not None and conn.reader_parked is None and not conn.pending
        cell.gate.set()
        assert await syn.fire(Ping(5)) == Ping(6)  # the next call reconnects


async def test_read_role_holder_cancelled_gives_the_role_back(sockdir: Path) -> None:
    async with warm(sockdir, 1) as (cell, _membrane, syn, conn):
        holding: list[bool] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_once_running() -> None:
                    await cell.all_gated.wait()
                    holding.append(conn.read_holder)
                    scope.cancel()

                nursery.start_soon(cancel_once_running)
                await syn.fire(Gate(1))
        assert scope.cancelled_caught and holding == [True]
        assert not conn.read_holder
        # The cancel reached the cell; its final answer is read (by the
        # reader, which took the role back) and discarded.
        await trio.testing.wait_all_tasks_blocked()
        assert not conn.pending and conn.dead is None
        assert await syn.fire(Ping(1)) == Ping(2)
