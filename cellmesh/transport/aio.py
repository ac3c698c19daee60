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
  descriptors travel with its first byte. The queue is capped as the Trio
  channel's is (``MAX_QUEUED_BYTES``, 8 MiB, or 64 descriptors): past it,
  calls and signals wait for room before they send, so a cell that stops
  reading cannot grow the client's memory;
* callers park on an asyncio future that the core completes when their
  answers arrive. A caller whose task is cancelled (a timeout, a client
  that went away) sends ``cancel`` for its calls, so the cell cancels the
  handlers; the answers that come anyway are discarded;
* a broken connection fails every call in flight with
  :class:`~cellmesh.errors.CellUnavailable`, and the next call reconnects;
  a batch (``fire_many``) with calls in flight there has failed, and the
  rest of it is not sent. After a ``goaway`` (the cell drains for a stop
  or a hot swap) calls in flight finish on the old connection while new
  calls open a new one;
* :meth:`Synapse.aclose` closes every connection the synapse has -- the
  draining ones and one being opened too -- even when it is cancelled.

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
from ._channel import MAX_QUEUED_BYTES, MAX_QUEUED_FDS
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

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, max_frame: int,
                 max_queued: int = MAX_QUEUED_BYTES):
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.decoder = FrameDecoder(max_frame_size=max_frame)
        self.fds = HeldFds()  # the descriptor rule of docs/protocol.md 13, as the synapse's
        self.received = 0  # bytes received so far
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._queued = 0  # bytes in the queue
        self._queued_fds = 0  # descriptors in the queue (they leave with a frame's first byte)
        self._max_queued = max_queued
        self._below_cap: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self.closed = False
        self.broken: BaseException | None = None
        #: Called once if the writer task's write fails (the connection must end:
        #: its calls would otherwise wait for answers to requests that never left).
        self.on_broken: Callable[[str], None] | None = None
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

    async def wait_writable(self) -> None:
        """Wait until the socket can be written to (or the channel is closed)."""
        await self._ready(self.loop.add_writer, self.loop.remove_writer)

    def take_fds(self, count: int) -> list[int] | None:
        """Claim the next ``count`` received descriptors, or None if fewer arrived."""
        return self.fds.take(count)

    def send(self, data: bytes, fds: Sequence[int] = (),
             done: Callable[[], None] | None = None) -> None:
        """Send without blocking (queue what the kernel does not take); ``done`` once sent.

        Never refuses for lack of room: callers keep the queue bounded by waiting
        while the channel is :attr:`over_cap` before they send.
        """
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
        self._queued += len(view)
        self._queued_fds += len(fds)
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
                self._wake_below_cap()
                if self.on_broken is not None:
                    self.on_broken(f"send failed: {exc}")
                return
            self._queued -= sent
            self._queued_fds -= len(entry[1])  # they left with the first byte
            if sent == len(entry[0]):
                queue.popleft()
                if entry[2] is not None:
                    entry[2]()
            else:
                entry[0], entry[1] = entry[0][sent:], ()
            if not self.over_cap:
                self._wake_below_cap()

    @property
    def queued(self) -> int:
        """Bytes accepted by :meth:`send` but not yet handed to the kernel."""
        return self._queued

    @property
    def over_cap(self) -> bool:
        """True while ``max_queued`` bytes or more, or more than
        :data:`~cellmesh.transport._channel.MAX_QUEUED_FDS` descriptors, wait to be
        written: a caller then waits (:meth:`wait_below_cap`) before it sends more, as
        with the Trio channel, so a cell that stops reading cannot grow our memory."""
        return self._queued >= self._max_queued or self._queued_fds > MAX_QUEUED_FDS

    async def wait_below_cap(self) -> None:
        """Wait until the channel is no longer :attr:`over_cap` (or failed, or closed)."""
        while self.over_cap and self.broken is None and not self.closed:
            if self._below_cap is None:
                self._below_cap = asyncio.Event()
            await self._below_cap.wait()

    def _wake_below_cap(self) -> None:
        if self._below_cap is not None:
            self._below_cap.set()
            self._below_cap = None

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The task writing what the kernel did not take at once, while it runs (it
        ends once the queue is written, or the channel failed or closed)."""
        writer = self._writer
        return writer if writer is not None and not writer.done() else None

    async def flush(self) -> None:
        """Wait until everything queued is written (or the channel failed or closed).

        Cancelling the wait does not stop the writer.
        """
        writer = self.writer
        if writer is not None:
            await asyncio.wait((writer,))

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
        self._queued = self._queued_fds = 0
        self._wake_below_cap()
        self.on_broken = None
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
        self.channel.on_broken = self.die
        self.dead: CellUnavailable | None = None
        #: Why this client ended the connection, when it refused what the cell sent.
        self.refusal: RemoteProtocolError | None = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, path: str) -> None:
        """Connect the socket to ``path``: OSError if nothing listens there, _Broken
        if the channel was closed (the synapse too) while we waited."""
        sock = self.channel.sock
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):
            await self.channel.wait_writable()
            if self.channel.closed:
                raise _Broken("closed while connecting") from None
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err)) from None

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
            self.refusal = exc
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
        """The connection is gone: fail its calls, close the socket, leave the
        synapse's connections (idempotent).

        Calls to a replicated cell (its hello announces sessions) fail with
        :class:`OutcomeUnknown`: this client sends them plain, without resending
        them in a session, so one that left may have been applied. When the
        connection ends because this client refused what that cell sent
        (:attr:`refusal`: a frame over the decode budget or the frame limit, a
        malformed one), they fail with :class:`~cellmesh.errors.ReplyRefused`
        instead, as with the Trio synapse: an answer came, and could not be read.
        Later calls on the dead connection get :class:`CellUnavailable` (they
        never leave).
        """
        if self.dead is None:
            self.dead = CellUnavailable(self.syn.name, self.syn.socket_path_text, reason)
        if self.core.peer_sessions and self.refusal is not None:
            self.core.fail_refused(self.syn.name, self.refusal)
        if self.core.peer_sessions and self.core.pending:
            self.core.fail(OutcomeUnknown(self.syn.name, (
                f"the connection broke before the answer ({reason}); the asyncio and "
                "blocking clients do not resend calls in a session: check whether it "
                "took effect")))
        self.core.fail(self.dead)
        self.channel.close()
        self.credit.set()
        self.syn._conns.discard(self)


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
        #: The connection new calls go to.
        self._conn: _Connection | None = None
        #: Every connection not yet dead: the current one, those draining after a
        #: goaway (their calls in flight finish there) and one being opened.
        self._conns: set[_Connection] = set()
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
        """Close every connection, the draining ones too (idempotent).

        Calls in flight fail with :class:`~cellmesh.errors.CellUnavailable`
        (:class:`~cellmesh.errors.OutcomeUnknown` to a replicated cell, as when a
        connection breaks); calls waiting for credit or for a connection, and
        every later call, raise :class:`~cellmesh.errors.ConnectionClosed`. What
        is queued gets up to ``CLOSE_FLUSH_TIMEOUT`` seconds to leave (a cell that
        stopped reading cannot hold the close up longer), as for the Trio synapse.
        A cancelled ``aclose`` still closes every socket, at once.
        """
        self._closed = True
        conns = list(self._conns)
        try:
            writers = [w for conn in conns if (w := conn.channel.writer) is not None]
            if writers:
                await asyncio.wait(writers, timeout=CLOSE_FLUSH_TIMEOUT)
        finally:
            self._abort("the synapse was closed")
        readers = [conn.reader for conn in conns if conn.reader is not None]
        if readers:  # they end at once: their sockets are closed
            await asyncio.wait(readers, timeout=CLOSE_FLUSH_TIMEOUT)

    def _abort(self, reason: str) -> None:
        """Close the synapse now, without waiting: every connection dies with ``reason``."""
        self._closed = True
        self._conn = None
        for conn in list(self._conns):
            conn.die(reason)

    @property
    def connected(self) -> bool:
        """True while a live connection exists (the next call may still reconnect)."""
        return self._conn is not None and self._conn.dead is None

    @property
    def draining(self) -> bool:
        """The cell sent ``goaway`` on the current connection: calls in flight finish
        there; the next call opens a new connection."""
        return self._conn is not None and self._conn.core.draining

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(f"synapse to {self.name!r} is closed")

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    async def _open(self) -> _Connection:
        """A new connection, handshake done and reader started (CellUnavailable if
        the cell is not there). It joins ``_conns`` at once, so that closing the
        synapse closes it even while it opens."""
        path = self.socket_path_text
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError as exc:  # EMFILE, ENFILE: ours to report, not to raise raw
            raise CellUnavailable(self.name, path, f"no socket: {exc.strerror or exc}") from None
        conn = _Connection(self, sock)
        self._conns.add(conn)
        try:
            try:
                await conn.connect(path)
            except OSError as exc:
                raise CellUnavailable(self.name, path, connect_failure(exc)) from None
            async with asyncio.timeout(self.options.connect_timeout):
                await conn.handshake()
        except TimeoutError:
            self._discard(conn)
            raise CellUnavailable(self.name, path, NO_HELLO) from None
        except _Broken as exc:
            self._discard(conn)
            raise CellUnavailable(self.name, path, str(exc)) from None
        except HandshakeError as exc:
            self._discard(conn)
            if exc.code == ErrorCode.CONNECTION_LIMIT:  # busy: a later attempt may get in
                raise CellUnavailable(self.name, path, str(exc)) from None
            raise
        except BaseException:
            self._discard(conn)
            raise
        conn.reader = asyncio.get_running_loop().create_task(conn.run_reader())
        return conn

    def _discard(self, conn: _Connection) -> None:
        """A connection that failed to open: close it, forget it."""
        self._conns.discard(conn)
        conn.channel.close()

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        self._check_open()
        async with self._lock:
            self._check_open()
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            try:
                conn = await self._open()
            except CellUnavailable:
                if self._closed:  # aclose closed it while it opened
                    raise self._closed_error() from None
                raise
            if self._closed:  # closed just as the hello came
                conn.die("the synapse was closed")
                raise self._closed_error()
            self._conn = conn
            return conn

    async def _ready_connection(self, replies: ReplyBatch | None = None) -> _Connection | None:
        """A usable connection with credit for at least one message and room in its
        send queue (not :attr:`_Channel.over_cap`); None as soon as ``replies`` has
        ended (a call of that batch failed: the rest of it must not be sent)."""
        while True:
            if replies is not None and replies.done:
                return None
            conn = await self._connection()
            if replies is not None and replies.done:
                return None
            if conn.channel.over_cap:
                await conn.channel.wait_below_cap()
                continue
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

    @staticmethod
    def _drop_unsent(batch: OutboundBatch, sent: int) -> None:
        """Close the vesicles made for messages ``sent...``, which will never be sent."""
        if batch.per_message:
            contexts = batch.contexts[sent:]
        else:
            contexts = batch.contexts[:1] if sent == 0 else []
        for ctx in contexts:
            for vesicle in ctx.owned:
                vesicle.close()

    # -- public API ------------------------------------------------------------

    async def fire(self, msg: Request[R]) -> R:
        """Call the cell with ``msg`` and return its reply (a protein, or None).

        Raises :class:`~cellmesh.RemoteCellError` (or its subclasses
        ``NoReceptor``, ``RemoteProteinError``) when the cell failed the call,
        :class:`~cellmesh.CellUnavailable` when the connection broke first
        (for a replicated cell: :class:`~cellmesh.OutcomeUnknown` once the
        call left, or :class:`~cellmesh.errors.ReplyRefused` when its answer
        came in a frame this client refuses, see :meth:`_Connection.die`),
        :class:`~cellmesh.FieldError` for a bad field, and
        :class:`~cellmesh.UnexpectedReply` when ``msg`` declares a reply
        type the reply does not have. Cancelling the awaiting task cancels
        the call in the cell. It waits for credit, and for room in the send
        queue when a cell has stopped reading (as the Trio synapse does).
        """
        return check_reply(msg, (await self._call([msg]))[0], self.name)

    async def fire_many(self, msgs: Iterable[Request[R]]) -> list[R]:
        """Pipeline calls and return their replies in order.

        If any call fails, the error of the first failed call is raised after
        every call has finished. When a connection breaks with calls of the batch
        unanswered, the batch has failed: the calls not sent yet are never sent
        (on no connection), and the error raised is that of the calls that left.
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
            # A connection that dies completes ``replies`` with the error of the
            # batch's calls in flight there: the batch has ended, nothing more of
            # it is sent (the Trio synapse's rule).
            while sent < batch.count:
                conn = await self._ready_connection(replies)
                if conn is None:
                    break
                n, data, ids = conn.core.frame_calls(batch, sent, batch.count - sent, replies,
                                                     sent)
                fds, done = self._attachments(batch, sent)
                try:
                    conn.channel.send(data, fds, done)
                except _Broken as exc:
                    conn.core.forget(ids)  # nothing of this frame left us
                    conn.die(str(exc))
                    if replies.done:
                        break  # calls of the batch were in flight there: their error
                    if not conns and not retried:
                        retried = True  # the connection died before we noticed: once more
                        continue
                    raise self._unsendable(conns, str(exc)) from None
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
        finally:
            if sent < batch.count:
                self._drop_unsent(batch, sent)
        return replies.outcome()

    def _unsendable(
        self, conns: list[tuple[_Connection, list[int]]], reason: str
    ) -> CellUnavailable | OutcomeUnknown:
        """The error of a batch whose next frame cannot be sent while earlier calls
        of it are in flight on another (draining) connection."""
        if any(conn.core.peer_sessions for conn, _ in conns):
            return OutcomeUnknown(self.name, (
                f"the rest of the batch could not be sent ({reason}) after some of its "
                "calls left; check whether those took effect"))
        return CellUnavailable(self.name, self.socket_path_text, reason)

    async def signal(self, msg: Any) -> None:
        """Send a one-way message (no reply, no error report).

        A checkpoint, before anything is sent; then it waits only for credit, or
        for room in the send queue when a cell has stopped reading. If it raises
        ``CancelledError`` (a timeout), the message was not sent.
        """
        await self.signal_many([msg])

    async def signal_many(self, msgs: Iterable[Any]) -> None:
        """Send one-way messages, batched into as few frames as credit allows.

        As :meth:`signal`; cancelled while it waits for credit or room after a
        first frame left, the messages of the frames already sent were sent and the
        others were not.
        """
        batch = self._batch(list(msgs))
        sent = 0
        try:
            # The checkpoint comes first, like the Trio synapse's: once a frame is
            # queued nothing can cancel the call, so a cancelled call sent nothing more.
            await asyncio.sleep(0)
            while sent < batch.count:
                conn = await self._ready_connection()
                assert conn is not None
                n, data = conn.core.frame_signals(batch, sent, batch.count - sent)
                fds, done = self._attachments(batch, sent)
                try:
                    conn.channel.send(data, fds, done)
                except _Broken as exc:
                    conn.die(str(exc))
                    raise CellUnavailable(self.name, self.socket_path_text,
                                          str(exc)) from None
                sent += n
        finally:
            if sent < batch.count:
                self._drop_unsent(batch, sent)


__all__ = ["Synapse"]
