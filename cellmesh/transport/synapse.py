"""Synapse: a typed client to a cell, shared by any number of tasks.

Theory of operation
-------------------
``async with Synapse.grow(name) as syn`` connects to the cell's membrane and
owns a nursery for the connection's reader and writer tasks
(:mod:`cellmesh.transport._client_conn`). Calls carry ids, so any number of
tasks can have calls in flight on one connection; the reader task matches
replies to waiting callers and wakes them directly
(``trio.lowlevel.reschedule``, no queue in between). When calls go one at a
time, the caller waits on the socket itself and its own reply wakes it (the
connection's read role), one scheduler pass sooner.

* ``fire`` sends one call and waits for its reply. Cancelling the waiting
  task (a timeout, a cancelled nursery) sends a ``cancel`` frame so the
  callee's handler is cancelled too; the eventual final answer is discarded.
* ``fire_many`` pipelines a batch: one frame, one wake-up for all replies.
* ``signal``/``signal_nowait``/``signal_many`` are one-way.

Single messages cost no frame and no write of their own: ``fire`` and the
signals queue the validated body on the connection's
:class:`~cellmesh.transport._outbox.Outbox`, and everything queued by any
task during one scheduler pass is framed (runs of one protein as one
columns item) and written with one ``sendmsg`` at the end of the pass
(:mod:`cellmesh.transport._flusher`). So many tasks that each ``await
syn.fire(msg)`` travel as well as one ``fire_many``, and a lone call leaves
exactly when a direct write would have.

Credit: the membrane grants call and byte credit in its hello and returns it
as calls finish; callers wait for credit when it runs out, so a fast caller
cannot grow the server's memory without bound.

Failure: when the connection breaks, every call in flight fails with
:class:`~cellmesh.errors.CellUnavailable` and the next call reconnects
(calls to a replicated cell: see :mod:`~cellmesh.transport.session`). A
``goaway`` (graceful shutdown, hot swap) lets calls in flight finish while
new calls go to a new connection.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from itertools import repeat
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from .._util import open_service_nursery
from ..config import Paths, check_cell_name, check_positive_int, check_seconds
from ..errors import (
    CellUnavailable,
    ConnectionClosed,
    ErrorCode,
    HandshakeError,
)
from ..wire import codec
from ..wire.batching import OutboundBatch
from ..wire.codec import Kind
from ..wire.proteins import (
    DEFAULT_VESICLE_THRESHOLD,
    PROTEINS,
    EncodeContext,
    ProteinRegistry,
)
from ..wire.replies import R, Request, check_replies, check_reply
from ..wire.vesicle import MappedBudget, Vesicle
from ._channel import ChannelBroken
from ._client_conn import Connection, OneCall, Waiter
from ._client_core import NO_HELLO, connect_failure
from ._options import DEFAULT_MAX_MAPPED_VESICLES, default_mapped_bytes
from .session import ClientSessions

CONNECT_TIMEOUT: Final = 10.0
#: Leaving ``Synapse.grow`` waits at most this long for queued messages to be written.
CLOSE_FLUSH_TIMEOUT: Final = 5.0


@attrs.define(kw_only=True)
class SynapseOptions:
    """Tunables of a synapse."""

    max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE
    vesicle_threshold: int = DEFAULT_VESICLE_THRESHOLD
    connect_timeout: float = CONNECT_TIMEOUT
    #: Session calls only (a server announcing sessions, docs/protocol.md
    #: section 17): resend a call unanswered for this long on a new connection,
    retry_after: float = 2.0
    #: ... and give up (OutcomeUnknown) after this long.
    give_up_after: float = 30.0
    #: Received vesicles (in replies) this synapse keeps mapped at once, as a
    #: membrane does (docs/protocol.md section 13): a reply past them fails its
    #: one call with a field error, so a hostile cell cannot fill its caller's
    #: address space through the answers to its calls.
    max_mapped_bytes: int = attrs.field(factory=default_mapped_bytes)
    max_mapped_vesicles: int = DEFAULT_MAX_MAPPED_VESICLES

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        codec.check_max_frame_size(self.max_frame_size)
        check_positive_int("vesicle_threshold", self.vesicle_threshold)
        check_positive_int("max_mapped_bytes", self.max_mapped_bytes)
        check_positive_int("max_mapped_vesicles", self.max_mapped_vesicles)
        check_seconds("connect_timeout", self.connect_timeout)
        check_seconds("retry_after", self.retry_after)
        check_seconds("give_up_after", self.give_up_after)


def client_target(
    name: str,
    socket_dir: str | os.PathLike[str] | None,
    socket_path: str | os.PathLike[str] | None,
    options: dict[str, Any],
) -> tuple[Path, SynapseOptions]:
    """Where a client of cell ``name`` connects, and its validated options.

    ``<socket_dir>/<name>.sock`` (default ``$CELL_SOCKET_DIR``), or
    ``socket_path`` when given. Shared by every client (Trio, asyncio).
    """
    check_cell_name(name)
    opts = SynapseOptions(**options)
    opts.validate()
    if socket_path is not None:
        return Path(socket_path), opts
    paths = Paths.from_env()
    if socket_dir is not None:
        paths = attrs.evolve(paths, socket_dir=Path(socket_dir))
    return paths.socket_path(name), opts


class Synapse:
    """A typed client to one cell. Create it with :meth:`Synapse.grow`."""

    def __init__(
        self,
        name: str,
        socket_path: Path,
        *,
        registry: ProteinRegistry,
        options: SynapseOptions,
        client_name: str,
    ) -> None:
        self.name = name
        self.socket_path = socket_path
        self.socket_path_text = os.fspath(socket_path)
        self.registry = registry
        self.options = options
        #: Shared by its connections (docs/protocol.md section 13).
        self.mapped = MappedBudget(options.max_mapped_bytes, options.max_mapped_vesicles)
        self.client_name = client_name
        self._nursery: trio.Nursery | None = None
        self._conn: Connection | None = None
        self._connect_lock = trio.Lock()
        self._single_ctx = EncodeContext(options.vesicle_threshold, Vesicle.from_bytes)
        self._closed = False
        #: Set once a server announced sessions: calls then go through it.
        self._sessions: ClientSessions | None = None

    @classmethod
    @asynccontextmanager
    async def grow(
        cls,
        name: str,
        *,
        socket_dir: str | os.PathLike[str] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        registry: ProteinRegistry | None = None,
        client_name: str | None = None,
        **options: Any,
    ) -> AsyncIterator[Synapse]:
        """Connect to cell ``name`` for the duration of the block.

        The socket is ``<socket_dir>/<name>.sock`` (default
        ``$CELL_SOCKET_DIR``), or ``socket_path`` when given. Raises
        :class:`CellUnavailable` naming the socket when nothing listens there.
        ``options`` are :class:`SynapseOptions` fields.
        """
        path, opts = client_target(name, socket_dir, socket_path, options)
        syn = cls(
            name, path, registry=registry if registry is not None else PROTEINS,
            options=opts, client_name=client_name or f"pid{os.getpid()}",
        )
        conn = await syn._connect()  # before the nursery: errors arrive unwrapped
        async with open_service_nursery() as nursery:
            syn._nursery = nursery
            syn._start(conn)
            try:
                yield syn
                await syn._flush_on_exit()
            finally:
                syn._close()
                nursery.cancel_scope.cancel()

    async def _flush_on_exit(self) -> None:
        """Leaving ``grow`` normally: what was sent is written before the socket closes.

        Signals are fire-and-forget, so a block that ends right after
        ``signal`` must not lose it: queued messages are framed now and the
        channel is given up to :data:`CLOSE_FLUSH_TIMEOUT` seconds to hand
        them to the kernel (a cell that stopped reading cannot hold us longer).
        """
        conn = self._conn
        if conn is None or conn.dead is not None or conn.channel.broken is not None:
            return
        conn.encode_pending()
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT), suppress(ChannelBroken):
            conn.channel.write_pending()
            await conn.channel.wait_flushed()

    def _close(self) -> None:
        if self._sessions is not None:
            self._sessions.goodbye(self)  # queued before the last write below
        self._closed = True
        conn = self._conn
        if conn is not None:
            if conn.dead is None and conn.channel.broken is None:
                conn.encode_pending()  # best effort: whatever the kernel takes now
                conn.channel.write_pending()
            conn._die("the synapse was closed")

    async def _connect(self) -> Connection:
        path = self.socket_path_text
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: ours to report, not to raise raw
            raise CellUnavailable(self.name, path, f"no socket: {exc.strerror or exc}") from None
        sock.setblocking(False)
        try:
            try:
                sock.connect(path)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err)) from None
        except OSError as exc:
            sock.close()
            raise CellUnavailable(self.name, path, connect_failure(exc)) from None
        except BaseException:
            sock.close()
            raise
        conn = Connection(self, sock)
        try:
            with trio.fail_after(self.options.connect_timeout):
                await conn.handshake()
        except trio.TooSlowError:
            conn.channel.close()
            raise CellUnavailable(self.name, path, NO_HELLO) from None
        except ChannelBroken as exc:
            conn.channel.close()
            raise CellUnavailable(self.name, path, str(exc)) from None
        except HandshakeError as exc:
            conn.channel.close()
            if exc.code == ErrorCode.CONNECTION_LIMIT:  # busy: a later attempt may get in
                raise CellUnavailable(self.name, path, str(exc)) from None
            raise
        except BaseException:
            conn.channel.close()
            raise
        return conn

    def _start(self, conn: Connection) -> None:
        """Make ``conn`` current and start its reader and writer tasks."""
        assert self._nursery is not None
        self._conn = conn
        self._nursery.start_soon(conn.channel.run_writer)
        self._nursery.start_soon(conn.run_reader)

    def _connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.dead is None and not conn.draining

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and conn.dead is None and not conn.draining:
            return conn
        if self._closed:
            raise ConnectionClosed(f"synapse to {self.name!r} is closed")
        async with self._connect_lock:
            conn = self._conn
            if conn is None or conn.dead is not None or conn.draining:
                conn = await self._connect()
                self._start(conn)
            return conn

    async def _credit(self, want: int) -> tuple[Connection, int]:
        """A live connection with credit for up to ``want`` calls; returns how many.

        What single-message callers queued before is framed first, and no
        frame waits for byte credit when this returns, so a frame the caller
        sends now leaves after everything queued before it.
        """
        while True:
            conn = await self._connection()
            conn.encode_pending()
            if conn.ready():
                return conn, min(want, conn.calls_left)
            if conn.channel.over_cap:
                await conn.channel.wait_below_cap()
                continue
            # One event shared by every waiter; replaced only once it has fired.
            if conn.credit_event.is_set():
                conn.credit_event = trio.Event()
            await conn.credit_event.wait()

    def _encode_one(self, msg: Any) -> tuple[Any, codec.Body] | None:
        """Validate and encode one message for the single-message paths.

        Returns (schema, body), or None when the body carries vesicles (those
        travel in a frame of their own, through the batch path). Raises
        :class:`~cellmesh.errors.FieldError` / TypeError for a bad message.
        """
        schema = self.registry.schema_for(msg)
        ctx = self._single_ctx
        body = schema.encode(msg, ctx)
        if ctx.vesicles:
            self._drop_vesicles(ctx)
            return None
        return schema, body

    @staticmethod
    def _drop_vesicles(ctx: EncodeContext) -> None:
        """Undo what encoding one message into the shared context attached: such a
        message is encoded again by the batch path, which owns its vesicles."""
        for vesicle in ctx.owned:
            vesicle.close()
        ctx.vesicles.clear()
        ctx.owned.clear()

    # -- public API --------------------------------------------------------

    async def fire(self, msg: Request[R]) -> R:
        """Call the cell with ``msg`` and return its reply (a protein, or None).

        Raises :class:`RemoteCellError` if the handler failed,
        :class:`CellUnavailable` if the connection broke first,
        :class:`~cellmesh.errors.FieldError` if ``msg`` has a bad field,
        :class:`~cellmesh.errors.UnexpectedReply` if ``msg`` is a
        ``Request[R]`` and the reply is not an ``R``. The call is framed and
        written at the end of the current scheduler pass together with every
        other message queued in it (a call that is the only one pending is
        written at once). To a cell that announces sessions (a
        replicated cell) the call is resent until answered and raises
        :class:`~cellmesh.errors.OutcomeUnknown` instead when it never is,
        or :class:`~cellmesh.errors.ReplyRefused` at once, never resent, when
        its answer came in a frame this client refuses (over its decode
        budget, for instance).
        In a scope already cancelled it raises ``Cancelled`` and sends nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._sessions is not None:
            return check_reply(msg, (await self._sessions.call(self, [msg]))[0], self.name)
        return check_reply(msg, await self._fire_one_raw(msg), self.name)

    async def _fire_one(self, msg: Any) -> Any:
        """One plain call (no session): its checked reply."""
        return check_reply(msg, await self._fire_one_raw(msg), self.name)

    async def _fire_one_raw(self, msg: Any) -> Any:
        """One plain call: its reply, unchecked.

        The fast path (a live connection with credit, a message without
        vesicles) does only per-call work -- encode, reserve credit and an
        id, queue -- and waits for the reply: parked until the reader hands
        it over, or, when this is the only call pending and the reader has
        handed the read role over, reading it itself
        (:meth:`Connection.read_for`). The frame and the write happen at the
        end of the pass, once for every message queued in it -- or at once
        for that lone reading caller, which has no other call to wait for
        (one call at a time, the round-trip pattern). Anything else
        goes through :meth:`_fire`, which waits for credit or a connection.
        """
        conn = self._conn
        if conn is None or conn.dead is not None or conn.draining or not conn.ready():
            return (await self._fire(msg, 1))[0]
        schema = self.registry.schema_for(msg)
        ctx = self._single_ctx
        body = schema.encode(msg, ctx)
        if ctx.vesicles:
            self._drop_vesicles(ctx)
            return (await self._fire(msg, 1))[0]
        fits = schema.fits_any_frame
        if fits is None or not fits(body):
            conn.check_fits(schema, body)
        call_id = conn.next_id
        conn.next_id = call_id + 1
        waiter = OneCall(trio.lowlevel.current_task(), conn, call_id)
        conn.pending[call_id] = (waiter, 0)
        conn.queue(Kind.CALL, call_id, schema, body)
        if conn.may_read():
            try:
                return await conn.read_for(waiter)
            except BaseException:
                if not waiter.done:  # cancelled (or interrupted) before its answer
                    waiter.abort(None)
                raise
        return await trio.lowlevel.wait_task_rescheduled(waiter.abort)

    async def fire_many(self, msgs: Iterable[Request[R]]) -> list[R]:
        """Pipeline calls and return their replies in order.

        If any call fails, the error of the first failed call is raised after
        every call has finished (no call is left running). Replies are
        checked against their requests' declared reply types
        (:class:`~cellmesh.errors.UnexpectedReply`) once all have arrived.
        In a scope already cancelled it raises ``Cancelled`` and sends nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = list(msgs)
        if not batch:
            await trio.lowlevel.checkpoint()
            return []
        if self._sessions is not None:
            replies = await self._sessions.call(self, batch)
        else:
            replies = await self._fire(batch, len(batch))
        return check_replies(batch, replies, cell=self.name)

    def _batch(self, msgs: list[Any]) -> OutboundBatch:
        return OutboundBatch(
            self.registry, msgs, self.options.vesicle_threshold, Vesicle.from_bytes
        )

    async def _fire(self, msgs: Any, count: int) -> list[Any]:
        single = count == 1 and not isinstance(msgs, list)
        batch = self._batch([msgs] if single else msgs)  # validates everything first
        waiter = Waiter(count)
        sent = 0
        conns: list[tuple[Connection, list[int]]] = []
        retried = False
        try:
            # (A failed connection may complete the waiter in between, even from a
            # write in this task: then nothing more is sent and its error is raised.)
            while sent < count and not waiter.ended():
                conn, n = await self._credit(count - sent)
                if waiter.ended():
                    break
                if batch.per_message:
                    n = 1
                n, data, call_ids = conn.fit_frame(batch, Kind.CALL, sent, n)
                ids = call_ids or []
                conn.next_id += n
                pending = conn.pending
                pending.update(zip(ids, zip(repeat(waiter), range(sent, sent + n), strict=False),
                                   strict=True))
                try:
                    conn.send_frame(data, self._frame_context(batch, sent))
                except ChannelBroken as exc:
                    for call_id in ids:  # nothing of this frame was queued: forget it
                        pending.pop(call_id, None)
                    conn._die(str(exc))
                    if not conns and not retried:
                        # Nothing of these calls left us: the connection died
                        # before we noticed. Send them once on a fresh one.
                        retried = True
                        continue
                    raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
                conn.calls_left -= n
                conns.append((conn, ids))
                sent += n
        except BaseException:
            for conn, ids in conns:
                conn.cancel_ids(ids)
            raise

        def abort(_: Any) -> trio.lowlevel.Abort:
            for conn, ids in conns:
                conn.cancel_ids(ids)
            waiter.done = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await waiter.wait(abort)  # type: ignore[no-any-return]

    @staticmethod
    def _frame_context(batch: OutboundBatch, start: int) -> EncodeContext:
        """The context whose vesicles travel with the frame starting at ``start``."""
        if batch.per_message:
            return batch.contexts[start]
        return batch.contexts[0] if start == 0 else EncodeContext()

    def signal_nowait(self, msg: Any) -> None:
        """Queue a one-way message without blocking, or raise ``trio.WouldBlock``.

        Never blocks and is not a checkpoint. Raises ``trio.WouldBlock`` when
        the message cannot be queued right now: no call credit or byte credit
        left, frames already waiting for credit, more than the channel's cap
        of unsent bytes, or no live connection (``await signal(msg)`` then
        waits, or reconnects). Raises :class:`~cellmesh.errors.FieldError` for
        a bad field, :class:`~cellmesh.errors.LocalProtocolError` for a
        message too large for one frame, :class:`ConnectionClosed` once the
        synapse is closed. The message leaves at the end of the current pass.
        """
        self._signal_now(msg)

    def _signal_now(self, msg: Any) -> Connection:
        conn = self._conn
        if conn is None or conn.dead is not None or conn.draining:
            if self._closed:
                raise ConnectionClosed(f"synapse to {self.name!r} is closed")
            raise trio.WouldBlock
        if not conn.ready():
            raise trio.WouldBlock
        encoded = self._encode_one(msg)
        if encoded is None:
            self._signal_vesicles(conn, msg)
            return conn
        schema, body = encoded
        conn.check_fits(schema, body)
        conn.queue(Kind.SIGNAL, 0, schema, body)
        return conn

    def _signal_vesicles(self, conn: Connection, msg: Any) -> None:
        """A signal whose body carries vesicles: its own frame, sent with its descriptors."""
        batch = self._batch([msg])
        conn.encode_pending()
        if not conn.ready():
            for vesicle in batch.contexts[0].owned:
                vesicle.close()
            raise trio.WouldBlock
        _, data, _ = conn.fit_frame(batch, Kind.SIGNAL, 0, 1)
        try:
            conn.send_frame(data, batch.contexts[0])
        except ChannelBroken:
            for vesicle in batch.contexts[0].owned:
                vesicle.close()
            raise trio.WouldBlock from None
        conn.calls_left -= 1

    async def signal(self, msg: Any) -> None:
        """Send a one-way message (no reply, no error report).

        A checkpoint, with Trio's convention for sends: if it raises
        ``Cancelled``, the message was not sent. It waits only when credit or
        the send buffer is exhausted. Signals sent in a loop are written
        together, once per many signals (see :mod:`~cellmesh.transport._outbox`).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        conn = self._conn
        if conn is not None and conn.dead is None and not conn.draining and conn.ready():
            # The common case inline: encode, queue, one scheduler pass.
            schema = self.registry.schema_for(msg)
            ctx = self._single_ctx
            body = schema.encode(msg, ctx)
            if not ctx.vesicles:
                conn.check_fits(schema, body)
                conn.queue_signal(schema, body)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self._drop_vesicles(ctx)
        try:
            conn = self._signal_now(msg)
        except trio.WouldBlock:
            await self.signal_many([msg])
            return
        conn.defer = True  # this task runs again next pass: its signals may wait for more
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def signal_many(self, msgs: Iterable[Any]) -> None:
        """Send one-way messages, batched into as few frames as credit allows.

        A checkpoint; if it raises ``Cancelled`` before any message was sent,
        none was (in a scope already cancelled, none is).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = self._batch(list(msgs))
        sent = 0
        while sent < batch.count:
            conn, n = await self._credit(batch.count - sent)
            if batch.per_message:
                n = 1
            n, data, _ = conn.fit_frame(batch, Kind.SIGNAL, sent, n)
            try:
                conn.send_frame(data, self._frame_context(batch, sent))
            except ChannelBroken as exc:
                raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
            conn.calls_left -= n
            sent += n
        if sent:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await trio.lowlevel.checkpoint()

    def _abandon_connection(self, reason: str) -> None:
        """Close the current connection (its calls fail); the next call reconnects."""
        if self._conn is not None:
            self._conn._die(reason)

    @property
    def connected(self) -> bool:
        """True while a live connection exists (the next call may still reconnect)."""
        return self._conn is not None and self._conn.dead is None
