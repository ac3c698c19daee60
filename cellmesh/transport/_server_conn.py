"""The server side of one membrane connection: handshake, reader/owner tasks, limits.

See :mod:`cellmesh.transport.membrane` for the theory of operation; this module holds
the per-connection state machine it describes, and its outbound side is
:mod:`cellmesh.transport._answers` (answers, credit, flushing).
"""

from __future__ import annotations

import collections
import os
import socket
import traceback
from contextlib import suppress
from itertools import repeat
from typing import Any, Final

import trio

from ..errors import (
    CellmeshError,
    ErrorCode,
    FlowControlError,
    HandshakeError,
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
)
from ._answers import Answers, ConnectionHost, FrameCost
from ._channel import Channel, ChannelBroken, receive_hello, vesicle_context
from ._client_core import hello_frame
from ._dispatch import NoReceptor, Receptors, Suspended, handler_failed, resume, start_inline
from ._spares import Body, Slot, Spares


class _Undecodable:
    """A call body that failed schema decoding; reported when its turn comes."""

    __slots__ = ("error",)

    def __init__(self, error: ProteinError) -> None:
        self.error = error


# An inbound unit of work: (call id or 0 for a signal, message, cost).
_Work = tuple[int, Any, FrameCost]

#: A reader that keeps finding data encodes its replies once this many are queued.
_FLUSH_NOW_ITEMS: Final = 1024
#: Answers start leaving before the reader has worked through what one read
#: brought: the first write goes out after half of that work, at least
#: ``_SPLIT_MIN`` and at most ``_SPLIT_MAX`` messages in (see _read_loop) ...
_SPLIT_MIN: Final = 8
_SPLIT_MAX: Final = 256
#: ... and answers already made are written before the next frame's work when
#: at least this many are queued.
_EARLY_WRITE_ITEMS: Final = 64


def _peer_went_away(exc: BaseException) -> bool:
    """The socket failed because the peer is gone (reset, broken pipe): not news."""
    gone = (BrokenPipeError, ConnectionResetError)
    return isinstance(exc, gone) or isinstance(exc.__cause__, gone)


class ServerConnection(Answers):
    """One accepted connection: handshake, then reader/owner tasks until it ends."""

    def __init__(self, membrane: ConnectionHost, sock: socket.socket) -> None:
        opts = membrane.options
        super().__init__(membrane, Channel(
            sock, max_frame_size=opts.max_frame_size, max_queued=opts.max_queued_bytes,
            fd_budget=membrane.fd_budget,
        ))
        self.peer_name = "?"
        self.peer_fps: dict[str, str] = {}
        self.plain_ctx = DecodeContext()
        # Duplicate call ids (docs/protocol.md 4.2): ids only grow on a well-behaved
        # connection, so a call id above max_id is new. Once one does not grow,
        # ``live`` tracks every id whose final answer has not been written.
        self.max_id = 0
        self.frames_in = 0  # complete frames received (the idle watch reads it)
        self.resuming = False  # a task waits for the send queue to drain
        self.backlog: collections.deque[_Work] = collections.deque()
        self.waiting: collections.deque[_Work] = collections.deque()
        self.owned: dict[int, trio.CancelScope] = {}
        self.suspended = 0
        self.starters = 0  # starter tasks spawned that have not run yet (_fan_out)
        self.spares = Spares(membrane.options.max_concurrency)  # tasks between roles
        self.reading = True  # a reader task exists (or is about to)
        self.draining = False
        self.hello_sent = False
        self._goaway_after_hello: bytes | None = None
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
        # A peer that went away (it exited, it crashed) is not news: the caller
        # has its own error. Anything else about our writes is worth a line.
        if not _peer_went_away(exc):
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
                self._spawn(self._read_loop)
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
            sessions=opts.sessions,
        )
        self.channel.send(hello_frame(hello))
        self.hello_sent = True
        if self._goaway_after_hello is not None:
            self.channel.send(self._goaway_after_hello)

    @property
    def busy(self) -> bool:
        """Calls received and not yet answered (running, waiting for a slot, or queued)."""
        return bool(self.owned or self.waiting or self.backlog)

    def send_goaway(self, frame: bytes) -> None:
        """Ask the peer to send new work elsewhere (protocol section 9).

        A connection still in its handshake gets the goaway right after our
        hello: a goaway first would be a handshake error for the client.
        """
        self.draining = True
        if not self.hello_sent:
            self._goaway_after_hello = frame
            return
        with suppress(ChannelBroken):
            self.channel.send(frame)

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
        if not _peer_went_away(exc):  # (a reset: the peer exited; a stopped child does)
            self.m.log(f"connection from {self.peer_name!r} closed: {exc}")
        self.done.set()

    def goaway(self, code: int, reason: str) -> None:
        """Ask the client to send no new calls here and to close once answered (section 9)."""
        self.send_goaway(codec.frame_bytes(GoAway(code, reason).to_wire()))

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
        completes (slowloris) is idle too. The watch looks four times per
        ``idle_timeout``; the quiet is counted from the first look that saw
        nothing in flight (or a new frame already answered), so a goaway never
        comes early, and at most a quarter of ``idle_timeout`` late.
        """
        opts = self.m.options
        step = opts.idle_timeout / 4
        seen = self.frames_in
        quiet_since: float | None = trio.current_time()
        while not self.done.is_set():
            await trio.sleep(step)
            now = trio.current_time()
            if self.spares and not self.suspended:
                self.spares.release()  # quiet: a quiet connection keeps one task
            if self._in_flight() or self.draining:
                seen = self.frames_in
                quiet_since = None  # busy: the quiet starts once this is answered
                continue
            if self.frames_in != seen or quiet_since is None:
                seen = self.frames_in
                quiet_since = now  # became quiet since the last look
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

    def _spawn(self, body: Body) -> None:
        """Run the role ``body`` in a spare task if one waits, else in a new one
        (see :mod:`cellmesh.transport._spares`)."""
        if not self.spares.hand(body):
            assert self.nursery is not None
            self.nursery.start_soon(self._role_task, body)

    async def _role_task(self, body: Body) -> None:
        """Run roles in this task's own cancel scope (the scope of a call it comes
        to own), waiting as a spare between them; a failure ends this connection only.

        A task whose scope was cancelled (a cancel frame for its call) reports
        that and ends: a scope serves once. So does a task when the connection
        is done, or when ``max_concurrency`` spares are parked already.
        """
        slot = Slot()
        with trio.CancelScope() as scope:
            next_body: Body | None = body
            while next_body is not None:
                try:
                    await next_body(scope, slot)
                except (ProtocolError, ChannelBroken) as exc:
                    self._fatal(exc)
                    return
                except MemoryError as exc:  # out of memory: a cell dies (137)
                    if self.m.on_handler_error is not None:
                        self.m.on_handler_error(exc)
                    self._fatal(exc)
                    return
                except Exception as exc:  # our bug, or an odd value: this connection only
                    self.m.log(f"connection from {self.peer_name!r}: internal error:\n"
                               + "".join(traceback.format_exception(exc)))
                    self._fatal(exc)
                    return
                if scope.cancel_called:
                    break
                self._kick_waiting()
                self._after_owner()
                next_body = None if self.done.is_set() else await self.spares.wait(slot)
            else:
                return  # released while waiting, or not wanted as a spare
        self._report_cancel(scope, slot)

    def _report_cancel(self, scope: trio.CancelScope, slot: Slot) -> None:
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
            if self.answers_over_cap():
                self._hold()
            else:
                self._spawn(self._serve_waiting)

    def _hold(self) -> None:
        """Calls wait because too many answers are unsent: resume once they are."""
        if not self.resuming and self.nursery is not None and not self.done.is_set():
            self.resuming = True
            self.nursery.start_soon(self._resume_when_drained)

    async def _resume_when_drained(self) -> None:
        await self.channel.wait_below_cap()
        self.resuming = False
        self._kick_waiting()

    async def _serve_waiting(self, scope: trio.CancelScope, slot: Slot) -> None:
        """Serve calls that waited for a slot whose owner left by cancellation."""
        found = self._start_waiting()
        self.channel.mark()
        if found is not None:
            await self._own(*found, scope, slot)

    def _start_waiting(self) -> tuple[_Work, Suspended] | None:
        """Start calls that waited for a free slot, in order, until one suspends (it is
        returned, for the caller to own) or none may start now."""
        while self.waiting and self.suspended < self.m.options.max_concurrency:
            if self.answers_over_cap():
                self._hold()
                return None
            work = self.waiting.popleft()
            suspended = self._start(work)
            if suspended is not None:
                return work, suspended
        return None

    def _fan_out(self) -> None:
        """A handler suspended in the reader: start tasks for the calls behind it.

        The new reader starts in the next scheduler pass, and so does any task
        spawned now; if each call it starts suspends too, it hands over to yet
        another reader, one pass later, so a frame of calls whose handlers
        await something would start one call per pass (one ``epoll_wait`` and
        one write each). Starters spawned now, one per call still in the
        backlog (within ``max_concurrency``), all run in the next pass: each
        takes the next call from the backlog when it runs, so calls still
        start in arrival order whichever task runs first.
        """
        free = self.m.options.max_concurrency - self.suspended - 1 - self.starters
        wanted = min(len(self.backlog) - self.starters, free)
        for _ in range(wanted):
            self.starters += 1
            self._spawn(self._start_backlog)

    async def _start_backlog(self, scope: trio.CancelScope, slot: Slot) -> None:
        """A starter (see :meth:`_fan_out`): start backlog calls in this task until
        one suspends (then own it) or none may start now. What is left (calls that
        must wait for a slot or for answers to drain) is for the reader, which
        moves them to ``waiting``."""
        self.starters -= 1
        backlog = self.backlog
        max_concurrency = self.m.options.max_concurrency
        while backlog and not self.done.is_set():
            if self.waiting or self.suspended >= max_concurrency:
                break
            if self.pending_weight >= self.weight_limit and self.answers_over_cap():
                break
            work = backlog.popleft()
            suspended = self._start(work)
            if suspended is not None:
                self.channel.mark()
                await self._own(work, suspended, scope, slot)
                return
        self.channel.mark()

    async def _read_loop(self, scope: trio.CancelScope, slot: Slot) -> None:
        """Read and dispatch until EOF, or until this task owns a suspended call
        (then finish it, and any calls it picks up from the waiting queue)."""
        channel = self.channel
        decoder = channel.decoder
        backlog = self.backlog
        waiting = self.waiting
        stats = self.m.stats
        max_concurrency = self.m.options.max_concurrency
        receptors = self.receptors
        lookup = receptors.lookup if receptors is not None else None
        weight_limit = self.weight_limit
        while True:
            # Whether answers are over the cap is checked before a batch and again
            # whenever the answers made since the last flush may weigh enough to
            # matter (answers_over_cap encodes them, so the channel counts them):
            # past the cap, the rest of the batch waits.
            held = bool(backlog) and self.answers_over_cap()
            if held:
                self._hold()
            # A pipeline, not a lockstep: once half of this work is done, its
            # answers leave (one write) while the rest is handled, so the client
            # works on them meanwhile instead of waiting for the whole batch.
            split = min(_SPLIT_MAX, max(_SPLIT_MIN, len(backlog) // 2)) if not held else -1
            done = 0
            while backlog:
                if done == split:
                    self._write_early()
                if self.pending_weight >= weight_limit and not held and self.answers_over_cap():
                    held = True
                    self._hold()
                done += 1
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
                                self.pending_weight += self.weigh(stop.value)
                        else:
                            stats.signals += 1
                        continue
                    except BaseException as exc:
                        if not handler_failed(exc):
                            raise
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
                    # Hand the reader role to another task; this one owns the call.
                    self._spawn(self._read_loop)
                    self._fan_out()
                    await self._own(work, suspended, scope, slot)
                    return
            decoded = decoder.next_frame()
            if decoded is not NEED_DATA:
                if len(self.out) + len(self.replies) >= _EARLY_WRITE_ITEMS:
                    # More frames wait behind answers already made: those leave now.
                    self._write_early()
                self.frames_in += 1
                self._accept(decoded.items, decoded.vesicles, decoded.size)
                continue
            if channel.fds.queue:
                channel.check_fds()
            # With no handler of this connection suspended, nothing else can add
            # to these answers: they leave now. Otherwise they leave at the end
            # of this pass with those of every other task (encoded now if many).
            if not self.owned and (self.out or self.replies):
                self._write_early()
            elif len(self.out) + len(self.replies) >= _FLUSH_NOW_ITEMS:
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

    def _write_early(self) -> None:
        """Write the answers made so far now, in the middle of the pass (if any),
        with the credit due (signals leave no answer, only credit)."""
        if self.out or self.replies or self.released_calls:
            self._flush()
            self.channel.write_pending()

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
        cost = FrameCost(n_work, size)
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
        return vesicle_context(self.channel, count, self.plain_ctx.mismatched, self.m.mapped)

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
        except BaseException as exc:
            if not handler_failed(exc):
                raise
            self._fail_call(call_id, cost, ErrorCode.HANDLER_FAILED, exc)
            return None
        if done:
            self._complete(call_id, cost, result)
            return None
        assert isinstance(result, Suspended)
        return result

    async def _own(
        self, work: _Work, suspended: Suspended, scope: trio.CancelScope, slot: Slot
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
            except BaseException as exc:
                if not handler_failed(exc):
                    raise
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
            found = self._start_waiting()  # calls that waited for a free slot, in order
            self.channel.mark()
            if found is None:
                self._after_owner()
                return
            (call_id, _, cost), suspended = found

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
