"""One live synapse connection: handshake, reading, the read role, pending calls.

Theory of operation
-------------------
A :class:`Connection` is what a :class:`~cellmesh.transport.synapse.Synapse`
holds while it is connected: the :class:`~cellmesh.transport._outbox.Outbox`
of what callers queue (credit, end-of-pass framing) and the
:class:`~cellmesh.transport._client_core.ClientReceiver` that applies what
the cell sends. Callers wait on a :class:`ReplyBatch` registered in
``pending``: :class:`Waiter` for a batch, :class:`OneCall` for one call.

Reading: the reader task (:meth:`Connection.run_reader`) reads frames and
hands each caller its reply (``trio.lowlevel.reschedule``). The caller then
runs one scheduler pass later. When calls go one at a time (the round-trip
pattern), the reader hands the *read role* over: the next caller whose call
is the only one pending writes it at once (nothing else is pending to share
the write), waits on the socket itself (:meth:`Connection.read_for`) and is
woken by its own reply, which saves that pass. The reader takes the role
back at the end of any pass in which no caller holds it, so the connection
is always read (goaway, credit, end of stream) whatever the callers do.
Cancelling a role holder gives the role back and cancels its call as a
parked caller's cancellation does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, Final, Protocol

import outcome
import trio

from ..errors import CellUnavailable, ProtocolError, RemoteProtocolError
from ..wire import codec
from ..wire.batching import OutboundBatch
from ..wire.codec import NEED_DATA, PROTOCOL_VERSION, Hello, Kind
from ..wire.proteins import DecodeContext, ProteinRegistry
from ..wire.vesicle import MappedBudget
from ._channel import Channel, ChannelBroken, receive_hello, vesicle_context
from ._client_core import CellEndedConnection, ClientReceiver, ReplyBatch, hello_frame
from ._outbox import Outbox
from .session import ClientSessions


class ConnectionOwner(Protocol):
    """What a connection needs of the synapse that owns it."""

    name: str
    client_name: str
    socket_path_text: str
    registry: ProteinRegistry
    _sessions: ClientSessions | None
    mapped: MappedBudget

    @property
    def options(self) -> Any:
        """The synapse's options (``max_frame_size`` is read here)."""


class Waiter(ReplyBatch):
    """One waiting caller (a single call, or all calls of a ``fire_many``): the task
    to reschedule with the replies, or with the first failed call's error.

    Its task is rescheduled only once it is parked in :meth:`wait`. Until
    then -- while it is still sending its frames, or waiting for credit in
    between -- a completion (the connection failed, even from a write in
    the caller's own task) is kept in ``result`` for :meth:`wait` to return.
    """

    __slots__ = ("parked", "result", "task")

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.task = trio.lowlevel.current_task()
        self.parked = False
        self.result: outcome.Outcome[Any] | None = None

    def _complete(self) -> None:
        if not self.done:
            self.done = True
            errors = self.errors
            result = outcome.Error(errors[min(errors)]) if errors else outcome.Value(self.results)
            if self.parked:
                trio.lowlevel.reschedule(self.task, result)
            else:
                self.result = result

    def ended(self) -> bool:
        """True once completed (or given up): nothing more needs to be sent for it.

        A method, not ``done`` read inline: ``_fire`` asks again after an
        await, and a type checker would take the attribute as still False.
        """
        return self.done

    async def wait(self, abort: Callable[[Any], trio.lowlevel.Abort]) -> Any:
        """The replies (or the first error), parking until they are all in."""
        if self.result is not None:
            return self.result.unwrap()
        self.parked = True
        return await trio.lowlevel.wait_task_rescheduled(abort)


class OneCall(ReplyBatch):
    """The waiting caller of one call on the fast path: its task is rescheduled
    with the reply itself (no results list, no intermediate task).

    While its own task holds the read role (:meth:`Connection.read_for`),
    ``task`` is None and the outcome is left in ``result`` for it instead.
    It is a :class:`ReplyBatch` of one call so the shared receiver and
    ``fail_pending`` treat it like any other; only the completion differs.
    """

    __slots__ = ("call_id", "conn", "result", "task")

    def __init__(self, task: trio.lowlevel.Task, conn: Connection, call_id: int) -> None:
        # No super() and no errors dict: the hot path (a failure comes through _fail).
        self.remaining = 1
        self.done = False
        self.task: trio.lowlevel.Task | None = task
        self.result: outcome.Outcome[Any] | None = None
        self.conn = conn
        self.call_id = call_id

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """Its parked caller was cancelled: the call is given up (the cell is told)."""
        self.done = True
        self.conn.cancel_ids((self.call_id,))
        return trio.lowlevel.Abort.SUCCEEDED

    def _answer(self, index: int, value: Any, error: BaseException | None) -> None:
        if not self.done:  # (the common case inline: one call less per reply)
            result = outcome.Value(value) if error is None else outcome.Error(error)
            self.done = True
            if self.task is None:
                self.result = result
            else:
                trio.lowlevel.reschedule(self.task, result)

    def _fail(self, index: int, exc: BaseException) -> None:
        if not self.done:
            self._deliver(outcome.Error(exc))

    def _complete(self) -> None:  # (only ever completed through _answer or _fail)
        raise AssertionError("a OneCall completes through _answer or _fail")

    def _deliver(self, result: outcome.Outcome[Any]) -> None:
        self.done = True
        if self.task is None:
            self.result = result  # its task is reading: it picks the result up itself
        else:
            trio.lowlevel.reschedule(self.task, result)


_CANCELLED: Final = (None, -1)


class Connection(Outbox, ClientReceiver):
    """One live connection to the membrane: handshake, reader, credit, pending calls.

    Its :class:`Outbox` base holds the credit counters and what callers
    queued during the current pass; what the cell sends is applied by the
    :class:`~cellmesh.transport._client_core.ClientReceiver` it shares with
    the asyncio client.
    """

    def __init__(self, syn: ConnectionOwner, sock: socket.socket) -> None:
        super().__init__(Channel(sock, max_frame_size=syn.options.max_frame_size))
        self.syn = syn
        self.registry = syn.registry
        self.pending = {}
        self.next_id = 1
        self.credit_event = trio.Event()
        self.peer_name = "?"
        self.peer_fps = {}
        self.ctx = DecodeContext()
        self.draining = False
        self.dead: CellUnavailable | None = None
        #: Why this client ended the connection, when it refused what the cell sent.
        self.refusal: RemoteProtocolError | None = None
        self.closed = trio.Event()
        self.sessions = False
        #: The reader task while it has handed the read role to callers (see
        #: :meth:`read_for`), and whether a caller holds it now.
        self.reader_parked: trio.lowlevel.Task | None = None
        self.read_holder = False
        self.handoff_passes = 0

    async def handshake(self) -> None:
        syn = self.syn
        hello = Hello(
            version=PROTOCOL_VERSION,
            name=syn.client_name,
            proteins=syn.registry.fingerprints(),
            max_frame_size=syn.options.max_frame_size,
            packed_columns=1,
        )
        self.channel.send(hello_frame(hello))
        try:
            await self.channel.flush_inline()  # no writer task runs yet
        except ChannelBroken:
            # A membrane that refuses us (too many connections) may have said
            # why and closed before our hello went out: its reason comes first.
            await receive_hello(self.channel, f"cell {syn.name!r}")
            raise
        frame = await receive_hello(self.channel, f"cell {syn.name!r}")
        # From now on a failed write ends the connection (during the handshake
        # it must not: a refusal may still be there to read).
        self.channel.on_broken = self._broken
        self.peer_name = frame.name
        self.peer_fps = frame.proteins
        self.peer_max_frame = frame.max_frame_size
        self.packed_columns = frame.packed_columns >= 1
        self.calls_left = frame.credit_calls
        self.bytes_left = frame.credit_bytes
        self.ctx = DecodeContext(None, syn.registry.mismatched(frame.proteins))
        self.sessions = frame.sessions
        if frame.sessions:
            syn._sessions = syn._sessions or ClientSessions()

    # -- reading -----------------------------------------------------------

    async def run_reader(self) -> None:
        """Read and apply what the cell sends until the connection ends.

        When one step answered exactly one call and nothing else is pending
        (one call outstanding at a time: the round-trip pattern), the reader
        hands the read role to that caller's next call instead of waiting on
        the socket itself: that caller then waits for its own reply and is
        woken by it directly, one scheduler pass sooner (:meth:`read_for`).
        The reader takes the role back at the end of the next pass in which
        no caller holds it (:meth:`_prepare_handed_off`).
        """
        reason = "the cell closed the connection"
        try:
            channel = self.channel
            decoder = channel.decoder
            held = channel.fds
            before = len(self.pending)
            while True:
                decoded = decoder.next_frame()
                if decoded is NEED_DATA:
                    if held.queue:
                        channel.check_fds()
                    pending = self.pending
                    if not pending:
                        if self.draining:
                            reason = "drained after goaway"
                            break
                        if before == 1 and self.dead is None:
                            await self._hand_off()
                            before = len(self.pending)
                            continue
                    if not await channel.receive():
                        break
                    before = len(self.pending)
                    continue
                self._apply(decoded)
        except BaseException as exc:
            failed = self._read_failed(exc)
            if failed is None:
                raise
            reason = failed
        finally:
            self._die(reason)

    def _apply(self, decoded: codec.DecodedFrame) -> None:
        if decoded.vesicles:
            self._handle(decoded.items, decoded.vesicles)
        else:
            self.receive(decoded.items, self.ctx)

    def _read_failed(self, exc: BaseException) -> str | None:
        """Why reading ended with ``exc`` (telling the cell when it broke the
        protocol), or None for an exception that is not the connection's
        (a cancellation, an interrupt: re-raise it)."""
        if isinstance(exc, (ProtocolError, ChannelBroken, CellEndedConnection)):
            if isinstance(exc, RemoteProtocolError):
                self.refusal = exc
                with suppress(ChannelBroken):
                    self.channel.send(self.protocol_error_frame(exc))
                    self.channel.write_pending()  # now: _die closes the socket next
            return str(exc)
        if isinstance(exc, Exception):  # an odd reply, or our bug: this connection only
            return f"reading the cell's frames failed: {type(exc).__name__}: {exc}"
        return None

    async def _hand_off(self) -> None:
        """Park the reader (no wait on the socket) until :meth:`_prepare_handed_off`
        or a failure wakes it."""
        self.reader_parked = trio.lowlevel.current_task()
        self.handoff_passes = 1  # the caller runs next pass: decide at that pass's end
        self.channel.prepare = self._prepare_handed_off  # (only meanwhile: no cost otherwise)
        self.channel.mark()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.reader_parked = None
            self.channel.prepare = self.prepare
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_reader(self) -> None:
        task = self.reader_parked
        if task is not None:
            self.reader_parked = None
            self.channel.prepare = self.prepare
            trio.lowlevel.reschedule(task)
            self.channel.woke_tasks()

    def _prepare_handed_off(self) -> bool:
        """The channel's end-of-pass hook while the reader is parked: frame what
        was queued; give the read role back to the reader once a pass ends with
        no caller holding it."""
        again = self.prepare()
        if self.reader_parked is not None and not self.read_holder:
            if self.handoff_passes > 0:
                self.handoff_passes -= 1
                return True
            self._wake_reader()
        return again

    def may_read(self) -> bool:
        """True if a caller whose call is the only one pending may read for itself."""
        return self.reader_parked is not None and not self.read_holder and len(self.pending) == 1

    async def read_for(self, waiter: OneCall) -> Any:
        """Write the queued call of ``waiter`` at once, then hold the read role
        until it has its outcome; return its reply.

        The caller's task waits on the socket itself, so the frame with its
        reply wakes it directly. Other callers' replies read meanwhile are
        handed to them as the reader would; if there were any, this task
        yields one pass before returning so that it runs (and sends its next
        call) in the same pass as they do, and the reader takes the role
        back. Connection failures end the connection exactly as in
        :meth:`run_reader`; a cancellation propagates (the caller cancels its
        call) and the role goes back to the reader.
        """
        self.read_holder = True
        waiter.task = None
        channel = self.channel
        decoder = channel.decoder
        others = False
        try:
            # The only call pending has nothing to share its write with: it
            # leaves now. (After ``task = None``: a failed write ends the
            # connection, and this call gets its error as ``result``.)
            self.write_now()
            while waiter.result is None:
                decoded = decoder.next_frame()
                if decoded is NEED_DATA:
                    if channel.fds.queue:
                        channel.check_fds()
                    if not await channel.receive():
                        self._die("the cell closed the connection")
                        break
                    continue
                mine = waiter.done
                before = len(self.pending)
                self._apply(decoded)
                # Did this frame answer anyone else's call (wake another task)?
                answered = before - len(self.pending) - (waiter.done and not mine)
                others = others or answered > 0
        except BaseException as exc:
            failed = self._read_failed(exc)
            if failed is None:
                raise
            self._die(failed)
        finally:
            self.read_holder = False
            if others:
                self._wake_reader()
            elif self.reader_parked is not None and self.dead is None:
                self.handoff_passes = 0
                self.channel.mark()
        result = waiter.result
        if result is None:  # ended with the connection (which failed every pending call)
            assert self.dead is not None
            result = outcome.Error(self.dead)
        if others:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result.unwrap()

    def _die(self, reason: str) -> None:
        """End the connection: its calls fail, the next call reconnects (idempotent).

        Calls in flight fail with :class:`CellUnavailable` (the session layer
        resends those to a cell that announced sessions), except when this
        client ended a sessions connection because it refused what the cell
        sent (:attr:`refusal`): then they fail with
        :class:`~cellmesh.errors.ReplyRefused`, which is never resent (the
        cell answered; a resent copy would get the same frame).
        """
        if self.dead is None:
            self.dead = CellUnavailable(self.syn.name, self.syn.socket_path_text, reason)
        if self.sessions and self.refusal is not None:
            self.fail_refused(self.syn.name, self.refusal)
        self.fail_pending(self.dead)
        self.entries.clear()
        self.held.clear()
        self.credit_event.set()
        self._wake_reader()
        self.channel.close()
        self.closed.set()

    def _broken(self, exc: BaseException) -> None:
        """A write failed (at the end of a pass, outside any caller): the connection is dead."""
        self._die(f"send failed: {exc}")

    def refused(self, item: list[Any], exc: Exception) -> None:
        """A queued item could not be framed: its calls fail with ``exc``."""
        super().refused(item, exc)
        self.channel.woke_tasks()
        for call_id in codec.item_call_ids(item):
            self.fail_call(call_id, exc)

    def _handle(self, items: list[list[Any]], vesicles: int) -> None:
        ctx = self.ctx
        leftover: dict[int, int] = {}
        if vesicles:
            ctx, leftover = vesicle_context(self.channel, vesicles, self.ctx.mismatched,
                                            self.syn.mapped)
        try:
            self.receive(items, ctx)
        finally:
            for fd in leftover.values():
                os.close(fd)

    def on_credit(self) -> None:
        if self.held:
            self.send_held()
        self.credit_event.set()

    def on_goaway(self) -> None:
        self.credit_event.set()

    # -- sending -----------------------------------------------------------

    def fit_frame(
        self, batch: OutboundBatch, kind: int, start: int, n: int
    ) -> tuple[int, bytes, list[int] | None]:
        """The most of messages ``[start, start + n)`` that fit one frame.

        Returns (count, frame, call ids or None for signals). Byte credit is
        checked once per frame, so a chunk never spills into a second frame:
        it is halved until it fits. A single message too large for the
        peer's frame limit raises LocalProtocolError.
        """
        while True:
            ids = None if kind == Kind.SIGNAL else list(range(self.next_id, self.next_id + n))
            items = batch.items(kind, start, start + n, ids, self.packed_columns)
            frames = codec.encode_items(items, self.peer_max_frame)
            if len(frames) == 1:
                return n, frames[0], ids
            n //= 2

    def cancel_ids(self, ids: Iterable[int]) -> None:
        """The caller gave up on these calls: tell the cell, discard their answers."""
        cancelled = []
        for call_id in ids:
            if call_id in self.pending:
                self.pending[call_id] = _CANCELLED
                cancelled.append(call_id)
        if cancelled and self.dead is None:
            self.queue_cancels(cancelled)
