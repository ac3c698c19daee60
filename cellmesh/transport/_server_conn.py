"""The server side of one membrane connection: handshake, reader/owner tasks, replies.

See :mod:`cellmesh.transport.membrane` for the theory of operation; this module holds
the per-connection state machine it describes.
"""

from __future__ import annotations

import collections
import os
import socket
import traceback
from collections.abc import Callable
from contextlib import suppress
from itertools import repeat
from typing import Any, Final, Protocol

import trio

from ..errors import (
    CellmeshError,
    ErrorCode,
    FlowControlError,
    HandshakeError,
    LocalProtocolError,
    ProteinError,
    ProtocolError,
    RemoteProtocolError,
    VesicleError,
)
from ..wire import codec
from ..wire.codec import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Cancel,
    Credit,
    Error,
    GoAway,
    Hello,
    Kind,
    frame_of,
)
from ..wire.proteins import (
    DecodeContext,
    EncodeContext,
    ProteinRegistry,
)
from ..wire.vesicle import Vesicle
from ._channel import (
    Channel,
    ChannelBroken,
    FdBudget,
    hello_frame,
    receive_hello,
    vesicle_context,
)
from ._dispatch import Handler, NoReceptor, Receptors, Suspended, resume, start_inline
from ._options import MembraneOptions, MembraneStats


class ConnectionHost(Protocol):
    """What a connection needs from the membrane that accepted it.

    :class:`~cellmesh.transport.membrane.Membrane` satisfies it; naming the
    needs here keeps this module below the membrane (no import cycle).
    """

    name: str
    handler: Handler
    registry: ProteinRegistry
    options: MembraneOptions
    stats: MembraneStats
    fd_budget: FdBudget
    on_handler_error: Callable[[BaseException], None] | None

    def log(self, text: str) -> None:
        """Report a connection event."""

def _exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class _FrameCost:
    """Byte credit held by one received frame until all its calls finish."""

    __slots__ = ("remaining", "size")

    def __init__(self, remaining: int, size: int) -> None:
        self.remaining = remaining
        self.size = size


class _Undecodable:
    """A call body that failed schema decoding; reported when its turn comes."""

    __slots__ = ("error",)

    def __init__(self, error: ProteinError) -> None:
        self.error = error


# An inbound unit of work: (call id or 0 for a signal, message, cost).
_Work = tuple[int, Any, _FrameCost]

#: A reader that keeps finding data encodes its replies once this many are queued.
_FLUSH_NOW_ITEMS: Final = 1024


class _Slot:
    """What a reader/owner task is running, for reporting its cancellation."""

    __slots__ = ("call_id", "cost")

    def __init__(self) -> None:
        self.call_id = 0
        self.cost: _FrameCost | None = None


class ServerConnection:
    """One accepted connection: handshake, then reader/owner tasks until it ends."""

    def __init__(self, membrane: ConnectionHost, sock: socket.socket) -> None:
        self.m = membrane
        opts = membrane.options
        self.channel = Channel(
            sock, max_frame_size=opts.max_frame_size, max_queued=opts.max_queued_bytes,
            fd_budget=membrane.fd_budget,
        )
        self.peer_name = "?"
        self.peer_fps: dict[str, str] = {}
        self.peer_max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        self.peer_packed = False  # the client reads packed str/bytes columns
        self.plain_ctx = DecodeContext()
        self.calls_left = opts.credit_calls
        self.bytes_left = opts.credit_bytes
        # Credit of calls answered (and signals finished) since the last flush:
        # it becomes returnable once the frames of that flush are written.
        self.released_calls = 0
        self.released_bytes = 0
        self.return_calls = 0  # returnable: goes out with the next credit frame
        self.return_bytes = 0
        # Duplicate call ids (docs/protocol.md 4.2): ids only grow on a well-behaved
        # connection, so a call id above max_id is new. Once one does not grow,
        # ``live`` tracks every id whose final answer has not been flushed.
        self.max_id = 0
        self.live: set[int] | None = None
        self.frames_in = 0  # complete frames received (the idle watch reads it)
        self.resuming = False  # a task waits for the send queue to drain
        self.backlog: collections.deque[_Work] = collections.deque()
        self.waiting: collections.deque[_Work] = collections.deque()
        self.owned: dict[int, trio.CancelScope] = {}
        self.suspended = 0
        self.out: list[list[Any]] = []
        self.replies: list[tuple[int, Any]] = []
        self.enc_ctx = EncodeContext(opts.vesicle_threshold, Vesicle.from_bytes)
        self.reading = True  # a reader task exists (or is about to)
        self.draining = False
        self.done = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.handler = membrane.handler
        self.receptors = membrane.handler if isinstance(membrane.handler, Receptors) else None
        # Replies, errors and credit queued during a pass leave in one write at
        # its end (transport/_flusher.py); a failed write ends the connection.
        self.channel.prepare = self._end_of_pass
        self.channel.on_broken = self._write_failed

    def _end_of_pass(self) -> bool:
        self._flush()
        return False

    def _write_failed(self, exc: BaseException) -> None:
        self.m.log(f"connection from {self.peer_name!r}: send failed: {exc}")
        self.done.set()

    # -- lifecycle ---------------------------------------------------------

    async def serve(self) -> None:
        stats = self.m.stats
        stats.connections += 1
        stats.open_connections += 1
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.channel.run_writer)
                try:
                    await self._handshake()
                except trio.TooSlowError:
                    self._fatal(HandshakeError(
                        f"no hello within {self.m.options.hello_timeout:g} s"
                    ))
                    nursery.cancel_scope.cancel()
                    return
                except (ProtocolError, ChannelBroken) as exc:
                    self._fatal(exc)
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(self._reader_task)
                nursery.start_soon(self._idle_watch)
                await self.done.wait()
                await self._flush_and_wait()
                nursery.cancel_scope.cancel()
        finally:
            stats.open_connections -= 1
            stats.bytes_in += self.channel.bytes_in
            stats.bytes_out += self.channel.bytes_out
            self.channel.close()
            for scope in self.owned.values():
                scope.cancel()

    async def _flush_and_wait(self) -> None:
        with trio.move_on_after(5):
            await self.channel.wait_flushed()

    async def _handshake(self) -> None:
        """Read and check the client's hello, then answer with ours.

        Answering second means a refused hello gets an error frame in place of
        our hello, so the client learns why at connect time.
        """
        opts = self.m.options
        with trio.fail_after(opts.hello_timeout):
            frame = await receive_hello(self.channel, "the client")
        self.peer_name = frame.name
        self.peer_fps = frame.proteins
        self.peer_max_frame = frame.max_frame_size
        self.peer_packed = frame.packed_columns >= 1
        mismatched = self.m.registry.mismatched(frame.proteins)
        self.plain_ctx = DecodeContext(None, mismatched)
        hello = Hello(
            version=PROTOCOL_VERSION,
            name=self.m.name,
            proteins=self.m.registry.fingerprints(),
            max_frame_size=opts.max_frame_size,
            credit_calls=opts.credit_calls,
            credit_bytes=opts.credit_bytes,
            packed_columns=1,
        )
        self.channel.send(hello_frame(hello))

    def _fatal(self, exc: BaseException) -> None:
        """Report a connection-level error to the peer (best effort) and end."""
        self.channel.prepare = None  # nothing may follow the error frame
        if isinstance(exc, ProtocolError):
            self.m.stats.protocol_errors += 1
            error = Error(
                id=None, code=exc.code, type_name=type(exc).__name__, message=str(exc)
            )
            with suppress(ChannelBroken, CellmeshError):
                self.channel.send(codec.frame_bytes(error.to_wire()))
                self.channel.write_pending()  # now: the connection is about to close
        self.m.log(f"connection from {self.peer_name!r} closed: {exc}")
        self.done.set()

    def goaway(self, code: int, reason: str) -> None:
        """Ask the client to send no new calls here and to close once answered (section 9)."""
        self.draining = True
        with suppress(ChannelBroken):
            self.channel.send(codec.frame_bytes(GoAway(code, reason).to_wire()))

    def _in_flight(self) -> bool:
        """Calls or signals received whose answers (or handlers) are not done and flushed."""
        return bool(
            self.owned or self.suspended or self.waiting or self.backlog or self.out
            or self.replies
        )

    async def _idle_watch(self) -> None:
        """Goaway a connection that has nothing in flight and sends no frame for
        ``idle_timeout``; close it if it has not closed ``idle_grace`` later.

        Frames are counted, not bytes: a peer trickling a frame that never
        completes (slowloris) is idle too.
        """
        opts = self.m.options
        step = opts.idle_timeout / 4
        seen = self.frames_in
        quiet_since = trio.current_time()
        while not self.done.is_set():
            await trio.sleep(step)
            now = trio.current_time()
            if self.frames_in != seen or self._in_flight() or self.draining:
                seen = self.frames_in
                quiet_since = now
                continue
            if now - quiet_since < opts.idle_timeout:
                continue
            self.m.stats.idle_closed += 1
            self.m.log(f"connection from {self.peer_name!r} idle for "
                       f"{now - quiet_since:.0f} s: goaway")
            self.goaway(ErrorCode.IDLE_TIMEOUT, f"idle for {opts.idle_timeout:g} s")
            with trio.move_on_after(opts.idle_grace):
                await self.done.wait()
            self.done.set()
            return

    # -- reading -----------------------------------------------------------

    async def _reader_task(self) -> None:
        slot = _Slot()
        with trio.CancelScope() as scope:
            try:
                await self._read_loop(scope, slot)
            except (ProtocolError, ChannelBroken) as exc:
                self._fatal(exc)
                return
            except Exception as exc:  # our bug, or an odd value: this connection only
                self.m.log(f"connection from {self.peer_name!r}: internal error:\n"
                           + "".join(traceback.format_exception(exc)))
                self._fatal(exc)
                return
        self._report_cancel(scope, slot)

    def _report_cancel(self, scope: trio.CancelScope, slot: _Slot) -> None:
        """After a task's scope caught a cancel frame's cancellation: answer the call
        and let another task take over the calls waiting for a slot."""
        if scope.cancelled_caught and slot.call_id and slot.cost is not None:
            self.m.stats.cancelled += 1
            self._finish_error(
                slot.call_id, ErrorCode.CANCELLED, "Cancelled", "the caller cancelled",
                cost=slot.cost,
            )
        self._kick_waiting()
        self._after_owner()

    def _kick_waiting(self) -> None:
        """Start a worker for waiting calls if there are any and a slot is free."""
        if (
            self.waiting
            and self.suspended < self.m.options.max_concurrency
            and self.nursery is not None
            and not self.done.is_set()
        ):
            if self.channel.over_cap:
                self._hold()
            else:
                self.nursery.start_soon(self._worker_task)

    def _hold(self) -> None:
        """Calls wait because too many answers are unsent: resume once they are."""
        if not self.resuming and self.nursery is not None and not self.done.is_set():
            self.resuming = True
            self.nursery.start_soon(self._resume_when_drained)

    async def _resume_when_drained(self) -> None:
        await self.channel.wait_below_cap()
        self.resuming = False
        self._kick_waiting()

    async def _worker_task(self) -> None:
        """Serve calls that waited for a slot whose owner left by cancellation."""
        slot = _Slot()
        with trio.CancelScope() as scope:
            try:
                while self.waiting and self.suspended < self.m.options.max_concurrency:
                    if self.channel.over_cap:
                        self._hold()
                        break
                    work = self.waiting.popleft()
                    suspended = self._start(work)
                    if suspended is not None:
                        await self._own(work, suspended, scope, slot)
                        break
                self.channel.mark()
            except (ProtocolError, ChannelBroken) as exc:
                self._fatal(exc)
                return
        self._report_cancel(scope, slot)

    async def _read_loop(self, scope: trio.CancelScope, slot: _Slot) -> None:
        """Read and dispatch until EOF, or until this task owns a suspended call
        (then finish it, and any calls it picks up from the waiting queue)."""
        channel = self.channel
        backlog = self.backlog
        waiting = self.waiting
        stats = self.m.stats
        max_concurrency = self.m.options.max_concurrency
        receptors = self.receptors
        lookup = receptors.lookup if receptors is not None else None
        while True:
            # Answers only reach the channel at a flush, so whether it is over its
            # cap cannot change inside this batch.
            held = bool(backlog) and channel.over_cap
            if held:
                self._hold()
            while backlog:
                work = backlog.popleft()
                if held or waiting or self.suspended >= max_concurrency:
                    waiting.append(work)
                    continue
                # The common case inline: a known handler that returns without
                # suspending. Everything else goes through _start.
                call_id, msg, cost = work
                handler = lookup(type(msg)) if lookup is not None else self.handler
                if handler is not None and type(msg) is not _Undecodable:
                    try:
                        coro = handler(msg)
                        trap = coro.send(None)
                    except StopIteration as stop:
                        self.released_calls += 1
                        cost.remaining -= 1
                        if not cost.remaining:
                            self.released_bytes += cost.size
                        if call_id:
                            stats.calls += 1
                            if stop.value is None:
                                self.out.append([Kind.REPLY, call_id, None])
                            else:
                                self.replies.append((call_id, stop.value))
                        else:
                            stats.signals += 1
                        continue
                    except Exception as exc:
                        stats.calls += bool(call_id)
                        stats.signals += not call_id
                        self._fail_call(call_id, cost, ErrorCode.HANDLER_FAILED, exc)
                        continue
                    # It suspended: this task keeps it (see _own).
                    if call_id:
                        stats.calls += 1
                    else:
                        stats.signals += 1
                    suspended: Suspended | None = Suspended(coro, trap)
                else:
                    suspended = self._start(work)
                if suspended is not None:
                    # Hand the reader role to a new task; this one owns the call.
                    assert self.nursery is not None
                    self.nursery.start_soon(self._reader_task)
                    await self._own(work, suspended, scope, slot)
                    return
            decoded = channel.next_frame()
            if decoded is not NEED_DATA:
                self.frames_in += 1
                self._accept(decoded.items, decoded.vesicles, decoded.size)
                continue
            # Replies leave at the end of this pass, with those of every other
            # task; a reader that keeps finding data flushes now and then.
            if len(self.out) + len(self.replies) >= _FLUSH_NOW_ITEMS:
                self._flush()
            else:
                channel.mark()
            if not await channel.receive():
                self.reading = False
                self.draining = True
                if not self.owned and not self.waiting:
                    self._flush()
                    self.done.set()
                return

    def _accept(self, items: list[list[Any]], vesicles: int, size: int) -> None:
        """Account for one received frame and queue its work (no handler runs here)."""
        n_work = 0
        for item in items:
            kind = item[0]
            if kind in (1, 4):  # call, signal
                n_work += 1
            elif kind == 9:  # columns: [9, kind, count, name, ids, columns]
                if item[1] == Kind.REPLY:
                    raise RemoteProtocolError("a client may not send replies")
                n_work += item[2]
        if n_work:
            if self.bytes_left <= 0:
                raise FlowControlError("peer sent calls with no byte credit left")
            if n_work > self.calls_left:
                raise FlowControlError(
                    f"peer sent {n_work} calls/signals with {self.calls_left} call credit left"
                )
            self.calls_left -= n_work
            self.bytes_left -= size
        cost = _FrameCost(n_work, size)
        backlog = self.backlog
        ctx = self.plain_ctx
        leftover: dict[int, int] = {}
        if vesicles:
            if n_work == 0:
                raise VesicleError("descriptors arrived with a frame that carries no message")
            ctx, leftover = self._vesicle_context(vesicles)
        decode = self.m.registry.decode
        peer = self.peer_fps
        try:
            for item in items:
                kind = item[0]
                if kind == 1:  # call: [1, id, body]
                    call_id = item[1]
                    if call_id > self.max_id and self.live is None:
                        self.max_id = call_id  # ids that only grow cannot repeat
                    else:
                        self._check_new_id(call_id)
                    try:
                        msg: Any = decode(item[2], ctx, peer)
                    except ProteinError as exc:
                        msg = _Undecodable(exc)
                    backlog.append((call_id, msg, cost))
                elif kind == 4:  # signal: [4, body]
                    try:
                        msg = decode(item[1], ctx, peer)
                    except ProteinError as exc:
                        msg = _Undecodable(exc)
                    backlog.append((0, msg, cost))
                elif kind == 9:  # columns of calls or signals
                    _, sub, count, name, ids, columns = item
                    if sub == 1:
                        if self.live is None and min(ids) > self.max_id:
                            self.max_id = max(ids)
                        else:
                            for call_id in ids:
                                self._check_new_id(call_id)
                    try:
                        msgs: list[Any] = self.m.registry.decode_columns(
                            name, columns, count, ctx, peer
                        )
                    except ProteinError as exc:
                        msgs = [_Undecodable(exc)] * count
                    backlog.extend(zip(ids if sub == 1 else repeat(0), msgs, repeat(cost)))
                else:
                    self._accept_control(frame_of(item))
        finally:
            for fd in leftover.values():
                os.close(fd)

    def _check_new_id(self, call_id: int) -> None:
        """Refuse a call id that is in flight: received, its final answer not flushed.

        Called only for an id that is not above every id seen so far: the first
        time, this connection starts tracking its in-flight ids (a reference
        client never gets here: its ids only grow).
        """
        live = self.live
        if live is None:
            live = self.live = self._live_ids()
        if call_id in live:
            raise RemoteProtocolError(
                f"call id {call_id} is already in flight on this connection",
                code=ErrorCode.DUPLICATE_CALL_ID,
            )
        live.add(call_id)
        self.max_id = max(self.max_id, call_id)

    def _live_ids(self) -> set[int]:
        """Every call id whose final answer has not been flushed yet."""
        live = {work[0] for work in self.backlog if work[0]}
        live.update(work[0] for work in self.waiting if work[0])
        live.update(self.owned)
        live.update(call_id for call_id, _ in self.replies)
        for item in self.out:
            live.update(codec.item_call_ids(item))
        return live

    def _accept_control(self, item: codec.Frame) -> None:
        """Handle a frame that is not a call or signal."""
        if isinstance(item, Cancel):
            self._cancel(item.id)
        elif isinstance(item, GoAway):
            self.draining = True
        elif isinstance(item, Error):
            if item.id is None:
                raise RemoteProtocolError(
                    f"peer reported a protocol error: {item.type_name}: {item.message}",
                    code=item.code,
                )
            raise RemoteProtocolError("a client may not send error frames for calls")
        elif isinstance(item, Credit):
            pass  # a client grants nothing a membrane uses; harmless
        elif isinstance(item, Hello):
            raise HandshakeError("a second hello on one connection")
        else:
            raise RemoteProtocolError(
                f"a client may not send {type(item).__name__.lower()} frames here"
            )

    def _vesicle_context(self, count: int) -> tuple[DecodeContext, dict[int, int]]:
        """A decode context resolving this frame's vesicles, and the unclaimed fds."""
        return vesicle_context(self.channel, count, self.plain_ctx.mismatched)

    # -- running handlers --------------------------------------------------

    def _start(self, work: _Work) -> Suspended | None:
        """Run one call or signal inline. Returns the suspension, if any."""
        call_id, msg, cost = work
        stats = self.m.stats
        if type(msg) is _Undecodable:
            self._fail_call(call_id, cost, msg.error.code, msg.error)
            return None
        if call_id:
            stats.calls += 1
        else:
            stats.signals += 1
        if self.receptors is not None:
            handler = self.receptors.lookup(type(msg))
            if handler is None:
                self._fail_call(
                    call_id, cost, ErrorCode.NO_HANDLER,
                    NoReceptor(f"no receptor for {type(msg).__qualname__}"),
                )
                return None
        else:
            handler = self.handler
        try:
            coro = handler(msg)
            done, result = start_inline(coro)
        except Exception as exc:
            self._fail_call(call_id, cost, ErrorCode.HANDLER_FAILED, exc)
            return None
        if done:
            self._complete(call_id, cost, result)
            return None
        assert isinstance(result, Suspended)
        return result

    async def _own(
        self, work: _Work, suspended: Suspended, scope: trio.CancelScope, slot: _Slot
    ) -> None:
        """Finish a suspended call in this task, then serve calls that waited for a
        free slot. ``slot`` records the current call for cancellation reports."""
        call_id, _, cost = work
        while True:
            slot.call_id, slot.cost = call_id, cost
            self.suspended += 1
            if call_id:
                self.owned[call_id] = scope
            try:
                result = await resume(suspended)
            except Exception as exc:
                self._fail_call(call_id, cost, ErrorCode.HANDLER_FAILED, exc)
            else:
                self._complete(call_id, cost, result)
            finally:
                self.suspended -= 1
                self.owned.pop(call_id, None)
            slot.call_id, slot.cost = 0, None
            self.channel.mark()
            if scope.cancel_called:
                return
            # Serve calls that waited for a free slot, in order, in this task.
            next_suspended = None
            while self.waiting and self.suspended < self.m.options.max_concurrency:
                if self.channel.over_cap:
                    self._hold()
                    break
                work = self.waiting.popleft()
                next_suspended = self._start(work)
                if next_suspended is not None:
                    call_id, cost = work[0], work[2]
                    break
            self.channel.mark()
            if next_suspended is None:
                self._after_owner()
                return
            suspended = next_suspended

    def _after_owner(self) -> None:
        # Done once the peer has closed its side and nothing is left to answer.
        if not self.reading and not self.owned and not self.waiting and not self.backlog:
            self._flush()
            self.done.set()

    def _cancel(self, call_id: int) -> None:
        scope = self.owned.get(call_id)
        if scope is not None:
            scope.cancel()
            return
        for queue in (self.waiting, self.backlog):
            for work in queue:
                if work[0] == call_id:
                    queue.remove(work)
                    self.m.stats.cancelled += 1
                    self._finish_error(
                        call_id, ErrorCode.CANCELLED, "Cancelled", "the caller cancelled",
                        cost=work[2],
                    )
                    return
        # Already finished: the reply is on its way; nothing to do.

    # -- replies -----------------------------------------------------------

    def _complete(self, call_id: int, cost: _FrameCost, result: Any) -> None:
        self._release(cost)
        if not call_id:
            return
        if result is None:
            self.out.append([Kind.REPLY, call_id, None])
            return
        self.replies.append((call_id, result))

    def _encode_replies(self) -> None:
        """Turn pending replies into wire items: runs of one protein type become
        one columnar item, the rest single replies (vesicles in frames of their own)."""
        replies, self.replies = self.replies, []
        registry = self.m.registry
        out = self.out
        i, n = 0, len(replies)
        while i < n:
            cls = type(replies[i][1])
            j = i + 1
            while j < n and type(replies[j][1]) is cls:
                j += 1
            if j - i >= 2:
                run = replies[i:j]
                objs = [result for _, result in run]
                ctx = self.enc_ctx
                try:
                    schema = registry.schema_for(objs[0])
                    values = schema.column_values(objs, ctx)
                except (TypeError, ProteinError):
                    values = None
                if ctx.vesicles:
                    self._release_ctx(ctx)
                    values = None
                if values is not None:
                    out.append(codec.columns_item(
                        Kind.REPLY, schema.name, [call_id for call_id, _ in run],
                        schema.pack_columns(values, self.peer_packed), j - i,
                    ))
                    i = j
                    continue
            for call_id, result in replies[i:j]:
                self._encode_reply(call_id, result)
            i = j

    def _encode_reply(self, call_id: int, result: Any) -> None:
        ctx = self.enc_ctx
        try:
            body = self.m.registry.encode(result, ctx)
        except (TypeError, ProteinError) as exc:
            self._release_ctx(ctx)
            self.m.stats.errors += 1
            self.out.append(Error(
                id=call_id, code=ErrorCode.BAD_REPLY, type_name=_exception_type_name(exc),
                message=f"the handler returned an invalid reply: {exc}",
            ).to_wire())
            return
        if ctx.vesicles:
            self._send_with_vesicles([Kind.REPLY, call_id, body], ctx)
        else:
            self.out.append([Kind.REPLY, call_id, body])

    def _send_with_vesicles(self, item: list[Any], ctx: EncodeContext) -> None:
        self._flush_out()  # what was queued before it leaves before it
        if self.live is not None:
            self.live.difference_update(codec.item_call_ids(item))
        fds = [v.fileno() for v in ctx.vesicles]
        owned = list(ctx.owned)
        ctx.vesicles.clear()
        ctx.owned.clear()

        def sent() -> None:
            for vesicle in owned:
                vesicle.close()

        try:
            data = codec.encode_items([item], self.peer_max_frame)[0]
        except LocalProtocolError as exc:
            sent()
            # Even with its bytes in vesicles the reply is too large: that call
            # fails (every call gets exactly one final answer).
            self.out.extend(self._encode_each_errors(item, exc))
            return
        try:
            self.channel.send(data, fds, sent)
        except ChannelBroken:
            sent()
            self.done.set()

    def _release_ctx(self, ctx: EncodeContext) -> None:
        for vesicle in ctx.owned:
            vesicle.close()
        ctx.vesicles.clear()
        ctx.owned.clear()

    def _fail_call(self, call_id: int, cost: _FrameCost, code: int, exc: BaseException) -> None:
        self.m.stats.errors += 1
        if code == ErrorCode.HANDLER_FAILED and self.m.on_handler_error is not None:
            self.m.on_handler_error(exc)  # may not return (a cell dying of MemoryError)
        if not call_id:
            self._release(cost)
            self.m.log(f"signal failed: {_exception_type_name(exc)}: {exc}")
            return
        tb = None
        if code == ErrorCode.HANDLER_FAILED:
            tb = "".join(traceback.format_exception(exc))
        self._finish_error(call_id, code, _exception_type_name(exc), str(exc), tb, cost=cost)

    def _finish_error(
        self,
        call_id: int,
        code: int,
        type_name: str,
        message: str,
        tb: str | None = None,
        *,
        cost: _FrameCost | None = None,
    ) -> None:
        if cost is not None:
            self._release(cost)
        self.out.append([Kind.ERROR, call_id, code, type_name, message, tb])
        self.channel.mark()

    def _release(self, cost: _FrameCost) -> None:
        self.released_calls += 1
        cost.remaining -= 1
        if cost.remaining == 0:
            self.released_bytes += cost.size

    def _flush(self) -> None:
        """Queue replies/errors and returned credit on the channel as one frame (or a few).

        Called by the channel at the end of every pass in which something was
        queued (``channel.mark()``), and directly where order or shutdown needs
        it now; the channel writes the frames with one ``sendmsg``.

        The credit of the calls answered since the last flush comes back only
        once these frames have been written (docs/protocol.md section 7): a
        client that stops reading its replies stops getting credit, so what it
        can make this connection hold is bounded by the window it was granted.
        """
        calls, nbytes = self.released_calls, self.released_bytes
        self.released_calls = self.released_bytes = 0
        self._flush_out()
        if calls or nbytes:
            self.channel.after_sent(lambda: self._returnable(calls, nbytes))

    def _returnable(self, calls: int, nbytes: int) -> None:
        """Answers were written: their credit may go back (lazily, see _flush_out)."""
        self.return_calls += calls
        self.return_bytes += nbytes
        if self._credit_due():
            self.channel.mark()

    def _credit_due(self) -> bool:
        # Return credit lazily: only once the peer's remaining credit (as we
        # know it) is below half the window. No deadlock: a peer blocked on
        # credit has none left, so whatever its answered calls freed goes out
        # with the flush that follows their writing.
        opts = self.m.options
        return bool(self.return_calls or self.return_bytes) and (
            self.calls_left <= opts.credit_calls // 2 or self.bytes_left <= opts.credit_bytes // 2
        )

    def _flush_out(self) -> None:
        """Encode pending answers and due credit and queue them on the channel."""
        if self.replies:
            self._encode_replies()
        out = self.out
        if self._credit_due():
            out.append([Kind.CREDIT, self.return_calls, self.return_bytes])
            self.calls_left += self.return_calls
            self.bytes_left += self.return_bytes
            self.return_calls = self.return_bytes = 0
        if not out:
            return
        self.out = []
        live = self.live
        if live is not None:  # these answers are final: their ids are free again
            for item in out:
                live.difference_update(codec.item_call_ids(item))
        try:
            try:
                frames = codec.encode_items(out, self.peer_max_frame)
            except LocalProtocolError:
                frames = self._encode_each(out)
            for data in frames:
                self.channel.send(data)
        except ChannelBroken:
            self.done.set()

    def _encode_each(self, out: list[list[Any]]) -> list[bytes]:
        """Encode items one by one, turning a reply too large for one frame into
        an error for that call alone."""
        frames = []
        for item in out:
            try:
                frames += codec.encode_items([item], self.peer_max_frame)
            except LocalProtocolError as exc:
                frames += codec.encode_items(
                    self._encode_each_errors(item, exc), self.peer_max_frame
                )
        return frames

    def _encode_each_errors(
        self, item: list[Any], exc: LocalProtocolError
    ) -> list[list[Any]]:
        """BAD_REPLY error items for every call a too-large reply item answers."""
        errors = []
        for call_id in codec.item_call_ids(item):
            self.m.stats.errors += 1
            errors.append(Error(
                id=call_id, code=ErrorCode.BAD_REPLY, type_name="ReplyTooLarge",
                message=f"{exc} (large bytes fields travel as vesicles)",
            ).to_wire())
        return errors
