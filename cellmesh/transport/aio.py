"""An asyncio client to cells: the Trio synapse's wire, proteins, errors and typed replies.

Theory of operation
-------------------
For programs that run on asyncio (FastAPI, aiohttp, plain ``asyncio.run``),
:class:`Synapse` connects to a cell's membrane and calls it, driving the
sans-I/O :class:`~cellmesh.transport._client_core.ClientCore` (hello,
credit, call ids, replies, goaway: the decisions) over asyncio:

* one non-blocking Unix socket per connection, read by one reader task with
  ``recvmsg`` (the event loop's ``add_reader`` waits for readiness), so
  descriptors passed with SCM_RIGHTS (vesicles: sealed memfds, mapped
  read-only) arrive with their frame;
* writes go out at once when the socket takes them and are queued
  otherwise, drained by a writer task (``add_writer``); a frame's
  descriptors travel with its first byte;
* callers park on an asyncio future that the core completes when their
  answers arrive. A caller whose task is cancelled (a timeout, a client
  that went away) sends ``cancel`` for its calls, so the cell cancels the
  handlers; the answers that come anyway are discarded;
* a broken connection fails every call in flight with
  :class:`~cellmesh.errors.CellUnavailable`, and the next call reconnects;
  after a ``goaway`` (the cell drains for a stop or a hot swap) calls in
  flight finish on the old connection while new calls open a new one.

A :class:`Synapse` belongs to the event loop it was created in; tasks of that
loop may share it. For code that is not async at all, see
:class:`cellmesh.transport.blocking.BlockingSynapse`.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from ..errors import (
    CellUnavailable,
    ConnectionClosed,
    ErrorCode,
    HandshakeError,
    OutcomeUnknown,
    ProtocolError,
    RemoteProtocolError,
)
from ..wire.batching import OutboundBatch
from ..wire.codec import MAX_VESICLES_PER_FRAME, NEED_DATA, FrameDecoder
from ..wire.proteins import PROTEINS, DecodeContext, EncodeContext, ProteinRegistry
from ..wire.replies import R, Request, check_replies, check_reply
from ..wire.vesicle import MappedBudget, Vesicle
from ._client_core import (
    NO_HELLO,
    CellEndedConnection,
    ClientCore,
    ReplyBatch,
    connect_failure,
    first_frame_error,
    vesicle_context,
)
from ._fds import HeldFds
from .synapse import CLOSE_FLUSH_TIMEOUT, SynapseOptions, client_target

RECV_SIZE: Final = 256 * 1024
_ANC_SIZE: Final = socket.CMSG_SPACE(MAX_VESICLES_PER_FRAME * array.array("i").itemsize)


class _Broken(Exception):
    """The socket failed, or the peer broke the SCM_RIGHTS rules."""


class _Channel:
    """One connected Unix stream socket under asyncio: bytes and descriptors both ways."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, max_frame: int):
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.decoder = FrameDecoder(max_frame_size=max_frame)
        self.fds = HeldFds()  # the descriptor rule of docs/protocol.md 13, as the synapse's
        self.received = 0  # bytes received so far
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self.closed = False
        self.broken: BaseException | None = None
        #: Wake-ups of tasks waiting for readiness (close() runs them all).
        self._waits: set[Callable[[], None]] = set()

    async def _ready(self, add: Callable[..., None], remove: Callable[[int], bool]) -> None:
        fd = self.sock.fileno()
        if fd < 0:
            raise _Broken("the socket is closed")
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(fd, wake)
        self._waits.add(wake)
        try:
            await ready
        finally:
            self._waits.discard(wake)
            if self.sock.fileno() >= 0:
                remove(fd)

    async def receive(self) -> bool:
        """Receive one chunk into the decoder (waiting until one is there); False at EOF."""
        while True:
            if self.closed:
                return False
            try:
                n, ancdata, flags, _ = self.sock.recvmsg_into([self._view], _ANC_SIZE)
            except BlockingIOError:
                await self._ready(self.loop.add_reader, self.loop.remove_reader)
                continue
            except OSError as exc:
                if self.sock.fileno() < 0:  # closed by us while we waited
                    return False
                raise _Broken(f"receive failed: {exc}") from exc
            break
        if ancdata:
            self.fds.received(ancdata, self.received)  # where this read began
        if flags & socket.MSG_CTRUNC:
            raise _Broken(f"the peer sent more than {MAX_VESICLES_PER_FRAME} descriptors at once")
        if not n:
            return False
        self.received += n
        self.decoder.feed(self._view[:n])
        return True

    def take_fds(self, count: int) -> list[int] | None:
        """Claim the next ``count`` received descriptors, or None if fewer arrived."""
        return self.fds.take(count)

    def send(self, data: bytes, fds: Sequence[int] = (),
             done: Callable[[], None] | None = None) -> None:
        """Send without blocking (queue what the kernel does not take); ``done`` once sent."""
        if self.broken is not None or self.closed:
            raise _Broken(f"the connection is {'broken' if self.broken else 'closed'}")
        view = memoryview(data)
        if not self._queue:
            try:
                sent = self._send_now(view, fds)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.broken = exc
                raise _Broken(f"send failed: {exc}") from exc
            if sent == len(view):
                if done is not None:
                    done()
                return
            view, fds = view[sent:], (fds if not sent else ())
        self._queue.append([view, fds, done])
        if self._writer is None or self._writer.done():
            self._writer = self.loop.create_task(self._drain())

    def _send_now(self, view: memoryview, fds: Sequence[int]) -> int:
        if fds:
            return self.sock.sendmsg(
                [view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
        return self.sock.send(view)

    async def _drain(self) -> None:
        queue = self._queue
        while queue and not self.closed:
            entry = queue[0]
            try:
                sent = self._send_now(entry[0], entry[1])
            except BlockingIOError:
                try:
                    await self._ready(self.loop.add_writer, self.loop.remove_writer)
                except _Broken:
                    return
                continue
            except OSError as exc:
                self.broken = exc
                return
            if sent == len(entry[0]):
                queue.popleft()
                if entry[2] is not None:
                    entry[2]()
            else:
                entry[0], entry[1] = entry[0][sent:], ()

    @property
    def queued(self) -> bool:
        """Bytes wait to be written."""
        return bool(self._queue)

    async def flush(self) -> None:
        """Wait until everything queued is written (or the channel failed)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)

    def close(self) -> None:
        """Close the socket, unclaimed received descriptors, queued sends (idempotent)."""
        if self.closed:
            return
        self.closed = True
        fd = self.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
        for wake in list(self._waits):
            wake()  # the waiting reader (or writer) sees the channel closed
        self.fds.close()
        for entry in self._queue:
            if entry[2] is not None:
                entry[2]()
        self._queue.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self.sock.close()


class _Core(ClientCore):
    """The core whose credit and goaway wake the connection's credit waiters."""

    def __init__(self, syn: Synapse, credit: asyncio.Event) -> None:
        super().__init__(syn.registry, client_name=syn.client_name,
                         max_frame_size=syn.options.max_frame_size)
        self.credit = credit

    def on_credit(self) -> None:
        self.credit.set()

    def on_goaway(self) -> None:
        self.credit.set()


class _Connection:
    """One live connection: the core, the channel, the reader task."""

    def __init__(self, syn: Synapse, sock: socket.socket) -> None:
        self.syn = syn
        self.loop = asyncio.get_running_loop()
        self.credit = asyncio.Event()
        self.core = _Core(syn, self.credit)
        self.channel = _Channel(sock, self.loop, syn.options.max_frame_size)
        self.dead: CellUnavailable | None = None
        self.reader: asyncio.Task[None] | None = None

    async def handshake(self) -> None:
        hello = self.core.hello_bytes()
        try:
            self.channel.send(hello)
            await self.channel.flush()
        except _Broken:
            # A membrane that refuses us (too many connections) may have said
            # why and closed before our hello went out: its reason comes first.
            await self._first_frame()
            raise
        await self._first_frame()

    async def _first_frame(self) -> None:
        """Read the cell's hello (or refusal): any failure of it is BAD_HANDSHAKE."""
        peer = f"cell {self.syn.name!r}"
        decoder = self.channel.decoder
        try:
            while (decoded := decoder.next_frame()) is NEED_DATA:
                if not await self.channel.receive():
                    raise _Broken(f"{peer} closed the connection before its hello")
        except HandshakeError:
            raise
        except RemoteProtocolError as exc:
            raise first_frame_error(exc, peer) from None
        self.core.accept_hello(decoded.items, peer)

    @property
    def usable(self) -> bool:
        """Live, and not draining after a goaway."""
        return self.dead is None and not self.core.draining

    async def run_reader(self) -> None:
        reason = "the cell closed the connection"
        channel, core = self.channel, self.core
        try:
            while True:
                decoded = channel.decoder.next_frame()
                if decoded is NEED_DATA:
                    if channel.fds:
                        channel.fds.check(channel.decoder.buffered, channel.received)
                    if not core.pending and core.draining:
                        reason = "drained after goaway"
                        break
                    if not await channel.receive():
                        break
                    continue
                self._handle(decoded.items, decoded.vesicles)
        except RemoteProtocolError as exc:
            reason = str(exc)
            with contextlib.suppress(_Broken):
                channel.send(core.protocol_error_frame(exc))
                await asyncio.wait_for(channel.flush(), 1.0)
        except (ProtocolError, CellEndedConnection, _Broken, TimeoutError) as exc:
            reason = str(exc)
        finally:
            self.die(reason)

    def _handle(self, items: list[list[Any]], vesicles: int) -> None:
        ctx: DecodeContext | None = None
        leftover: dict[int, int] = {}
        if vesicles:
            fds = self.channel.take_fds(vesicles)
            ctx, leftover = vesicle_context(fds, vesicles, self.core.ctx.mismatched,
                                            self.syn.mapped)
        try:
            self.core.apply(items, ctx)
        finally:
            for fd in leftover.values():
                os.close(fd)

    def die(self, reason: str) -> None:
        """The connection is gone: fail its calls, close the socket (idempotent).

        Calls to a replicated cell (its hello announces sessions) fail with
        :class:`OutcomeUnknown`: this client sends them plain, without resending
        them in a session, so one that left may have been applied. Later calls on
        the dead connection get :class:`CellUnavailable` (they never leave).
        """
        if self.dead is None:
            self.dead = CellUnavailable(self.syn.name, self.syn.socket_path_text, reason)
        if self.core.peer_sessions and self.core.pending:
            self.core.fail(OutcomeUnknown(self.syn.name, (
                f"the connection broke before the answer ({reason}); the asyncio and "
                "blocking clients do not resend calls in a session: check whether it "
                "took effect")))
        self.core.fail(self.dead)
        self.channel.close()
        self.credit.set()


@attrs.define(eq=False)
class _Waiter:
    """Completes an asyncio future when the core completes a ReplyBatch."""

    future: asyncio.Future[None]

    def done(self, _: ReplyBatch) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Synapse:
    """An asyncio client to one cell. Create it with :meth:`grow` or :meth:`connect`."""

    def __init__(
        self, name: str, socket_path: Path, *, registry: ProteinRegistry,
        options: SynapseOptions, client_name: str,
    ) -> None:
        self.name = name
        self.socket_path = socket_path
        self.socket_path_text = os.fspath(socket_path)
        self.registry = registry
        self.options = options
        self.client_name = client_name
        #: Received vesicles mapped at once (``SynapseOptions.max_mapped_bytes``).
        self.mapped = MappedBudget(options.max_mapped_bytes, options.max_mapped_vesicles)
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        name: str,
        *,
        socket_dir: str | os.PathLike[str] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        registry: ProteinRegistry | None = None,
        client_name: str | None = None,
        **options: Any,
    ) -> Synapse:
        """Connect to cell ``name``; close it with :meth:`aclose`.

        The socket is ``<socket_dir>/<name>.sock`` (default
        ``$CELL_SOCKET_DIR``), or ``socket_path`` when given. Raises
        :class:`~cellmesh.errors.CellUnavailable` naming the socket when
        nothing listens there. ``options`` are
        :class:`~cellmesh.transport.synapse.SynapseOptions` fields.
        """
        path, opts = client_target(name, socket_dir, socket_path, options)
        syn = cls(name, path, registry=registry if registry is not None else PROTEINS,
                  options=opts, client_name=client_name or f"pid{os.getpid()}")
        syn._conn = await syn._open()
        return syn

    @classmethod
    @contextlib.asynccontextmanager
    async def grow(cls, name: str, **kwargs: Any) -> AsyncIterator[Synapse]:
        """:meth:`connect` for the duration of the block (same arguments)."""
        syn = await cls.connect(name, **kwargs)
        try:
            yield syn
        finally:
            await syn.aclose()

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail with CellUnavailable (idempotent).

        What is queued gets up to ``CLOSE_FLUSH_TIMEOUT`` seconds to leave (a cell
        that stopped reading cannot hold the close up longer), as for the Trio
        synapse.
        """
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.channel.flush(), CLOSE_FLUSH_TIMEOUT)
            conn.die("the synapse was closed")
            if conn.reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.reader

    @property
    def connected(self) -> bool:
        """True while a live connection exists (the next call may still reconnect)."""
        return self._conn is not None and self._conn.dead is None

    @property
    def draining(self) -> bool:
        """The cell sent ``goaway`` on the current connection: calls in flight finish
        there; the next call opens a new connection."""
        return self._conn is not None and self._conn.core.draining

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, self.socket_path_text)
        except OSError as exc:
            sock.close()
            raise CellUnavailable(self.name, self.socket_path_text, connect_failure(exc)) from None
        except BaseException:
            sock.close()
            raise
        conn = _Connection(self, sock)
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await conn.handshake()
        except TimeoutError:
            conn.channel.close()
            raise CellUnavailable(self.name, self.socket_path_text,
                                  NO_HELLO) from None
        except _Broken as exc:
            conn.channel.close()
            raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
        except HandshakeError as exc:
            conn.channel.close()
            if exc.code == ErrorCode.CONNECTION_LIMIT:  # busy: a later attempt may get in
                raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
            raise
        except BaseException:
            conn.channel.close()
            raise
        conn.reader = loop.create_task(conn.run_reader())
        return conn

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._closed:
            raise ConnectionClosed(f"synapse to {self.name!r} is closed")
        async with self._lock:
            conn = self._conn
            if conn is None or not conn.usable:
                conn = self._conn = await self._open()
            return conn

    async def _with_credit(self) -> _Connection:
        """A usable connection with credit for at least one message."""
        while True:
            conn = await self._connection()
            if conn.core.has_credit:
                return conn
            conn.credit.clear()
            await conn.credit.wait()

    def _batch(self, msgs: list[Any]) -> OutboundBatch:
        return OutboundBatch(self.registry, msgs, self.options.vesicle_threshold,
                             Vesicle.from_bytes)

    @staticmethod
    def _attachments(
        batch: OutboundBatch, start: int
    ) -> tuple[list[int], Callable[[], None] | None]:
        """The descriptors that travel with the frame starting at ``start``, and what
        to close once they are sent."""
        ctx: EncodeContext = (
            batch.contexts[start] if batch.per_message
            else batch.contexts[0] if start == 0 else EncodeContext()
        )
        if not ctx.vesicles:
            return [], None
        owned = list(ctx.owned)

        def sent() -> None:
            for vesicle in owned:
                vesicle.close()

        return [v.fileno() for v in ctx.vesicles], sent

    # -- public API ------------------------------------------------------------

    async def fire(self, msg: Request[R]) -> R:
        """Call the cell with ``msg`` and return its reply (a protein, or None).

        Raises :class:`~cellmesh.RemoteCellError` (or its subclasses
        ``NoReceptor``, ``RemoteProteinError``) when the cell failed the call,
        :class:`~cellmesh.CellUnavailable` when the connection broke first,
        :class:`~cellmesh.FieldError` for a bad field, and
        :class:`~cellmesh.UnexpectedReply` when ``msg`` declares a reply
        type the reply does not have. Cancelling the awaiting task cancels
        the call in the cell.
        """
        return check_reply(msg, (await self._call([msg]))[0], self.name)

    async def fire_many(self, msgs: Iterable[Request[R]]) -> list[R]:
        """Pipeline calls and return their replies in order.

        If any call fails, the error of the first failed call is raised after
        every call has finished.
        """
        batch = list(msgs)
        if not batch:
            return []
        return check_replies(batch, await self._call(batch), cell=self.name)

    async def _call(self, msgs: list[Any]) -> list[Any]:
        batch = self._batch(msgs)  # validates everything before anything is sent
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replies = ReplyBatch(batch.count, _Waiter(future).done)
        sent = 0
        conns: list[tuple[_Connection, list[int]]] = []
        retried = False
        try:
            while sent < batch.count:
                conn = await self._with_credit()
                n, data, ids = conn.core.frame_calls(batch, sent, batch.count - sent, replies,
                                                     sent)
                fds, done = self._attachments(batch, sent)
                try:
                    conn.channel.send(data, fds, done)
                except _Broken as exc:
                    conn.core.forget(ids)  # nothing of this frame left us
                    conn.die(str(exc))
                    if not conns and not retried:
                        retried = True  # the connection died before we noticed: once more
                        continue
                    raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
                conns.append((conn, ids))
                sent += n
            await future
        except BaseException:  # cancelled (or failed while sending): cancel what left
            for conn, ids in conns:
                if conn.dead is None:
                    for frame in conn.core.cancel(ids):
                        with contextlib.suppress(_Broken):
                            conn.channel.send(frame)
            raise
        return replies.outcome()

    async def signal(self, msg: Any) -> None:
        """Send a one-way message (no reply, no error report)."""
        await self.signal_many([msg])

    async def signal_many(self, msgs: Iterable[Any]) -> None:
        """Send one-way messages, batched into as few frames as credit allows."""
        batch = self._batch(list(msgs))
        sent = 0
        while sent < batch.count:
            conn = await self._with_credit()
            n, data = conn.core.frame_signals(batch, sent, batch.count - sent)
            fds, done = self._attachments(batch, sent)
            try:
                conn.channel.send(data, fds, done)
            except _Broken as exc:
                conn.die(str(exc))
                raise CellUnavailable(self.name, self.socket_path_text, str(exc)) from None
            sent += n
        await asyncio.sleep(0)  # a checkpoint, like the Trio synapse


__all__ = ["Synapse"]
