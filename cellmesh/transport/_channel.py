"""One connected Unix stream socket driven from Trio: bytes and descriptors both ways.

Theory of operation
-------------------
The socket is non-blocking and used directly (no ``trio.SocketStream``): a
receive is one ``recvmsg`` that also collects any descriptors passed with
SCM_RIGHTS, and waits with ``trio.lowlevel.wait_readable`` only when nothing
is there. Received bytes go straight into the channel's
:class:`~cellmesh.wire.codec.FrameDecoder`; received descriptors queue in
:attr:`Channel.fds` until a frame that references them claims them.

Sending never blocks the caller and never writes per message.
:meth:`Channel.send` queues the bytes and marks the channel dirty with the
run's :class:`~cellmesh.transport._flusher.Flusher`; at the end of the
scheduler pass, :meth:`Channel.end_of_pass` first lets the owning connection
encode what it queued as messages (the ``prepare`` hook), then hands the
whole queue to the kernel with one ``sendmsg`` (scatter/gather, up to
:data:`MAX_IOV` segments). So every frame queued by any task during one pass
leaves in one write, right where a direct ``send`` would have left the
process. Only when the queue passes :data:`WRITE_NOW_BYTES` does ``send``
write at once, which bounds what a task that never yields can pile up.

Whatever the kernel does not take waits in the queue for the writer task
(:meth:`Channel.run_writer`), which sleeps on ``wait_writable``; a reader
that also sends therefore never deadlocks against a peer that does the same.
The queue is bounded by its users through :attr:`Channel.over_cap` (more
than ``max_queued`` bytes or :data:`MAX_QUEUED_FDS` descriptors unsent): a
synapse refuses to queue past it, a membrane starts no handler past it and
returns credit only for answers that were written.

Descriptors a peer sends are held only as long as a frame may still claim
them (:mod:`cellmesh.transport._fds`, docs/protocol.md section 13): once
every complete frame is processed (:meth:`Channel.check_fds`), the
descriptors left must all have arrived with the bytes that begin the one
incomplete frame (at most one frame's worth, 64); any others, or any at all
with no incomplete frame, are :class:`~cellmesh.errors.VesicleError`. A
membrane's connections also share one
:class:`~cellmesh.transport._fds.FdBudget`, so many connections cannot hold
many frames' worth between them.

The 256 KiB receive buffer is one per Trio run, not one per connection: a
receive copies what arrived into the decoder before it can yield, so the
buffer is free again whenever another task runs.

A failed write (the peer reset the connection) marks the channel broken and
calls ``on_broken``, so the connection that owns it fails its callers even
though the write happened outside any of their tasks.

Descriptors travel with the first byte of the segment they were queued with,
which is the first byte of the frame that references them, so a frame's
descriptors have always arrived once the frame is complete: a segment that
carries descriptors always starts its own ``sendmsg``.
"""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import socket
from collections.abc import Callable, Sequence
from typing import Final

import trio

from ..errors import HandshakeError, RemoteProtocolError
from ..wire.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_VESICLES_PER_FRAME,
    NEED_DATA,
    DecodedFrame,
    FrameDecoder,
    Hello,
    NeedData,
)
from ..wire.proteins import DecodeContext
from ..wire.vesicle import MappedBudget
from . import _client_core as client_core
from ._fds import FdBudget, HeldFds
from ._flusher import Flusher

RECV_SIZE: Final = 256 * 1024
#: At most this many descriptors may arrive with one chunk (one frame's worth).
MAX_FDS_PER_CHUNK: Final = MAX_VESICLES_PER_FRAME
#: A channel is over its cap while more than this many descriptors wait to be sent.
MAX_QUEUED_FDS: Final = MAX_VESICLES_PER_FRAME
_ANC_SIZE: Final = socket.CMSG_SPACE(MAX_FDS_PER_CHUNK * array.array("i").itemsize)
#: Receives in a row without a schedule point before we yield to other tasks.
_FAIRNESS_READS: Final = 16
#: ``send`` writes at once (instead of at the end of the pass) past this many queued bytes.
WRITE_NOW_BYTES: Final = 256 * 1024
#: A synapse queues no more than this many unsent bytes (:attr:`Channel.over_cap`).
MAX_QUEUED_BYTES: Final = 8 * 1024 * 1024
#: Segments handed to one ``sendmsg`` (well below the kernel's IOV_MAX of 1024).
MAX_IOV: Final = 64
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)
_SCM_RIGHTS: Final = int(socket.SCM_RIGHTS)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)


class ChannelBroken(Exception):
    """The socket failed (reset, broken pipe) or the peer broke SCM_RIGHTS rules."""


class _RecvBuffer:
    """The receive buffer of one Trio run (see the module doc)."""

    __slots__ = ("data", "view")

    def __init__(self) -> None:
        self.data = bytearray(RECV_SIZE)
        self.view = memoryview(self.data)

    @staticmethod
    def current() -> _RecvBuffer:
        try:
            return _RECV_BUFFER.get()
        except LookupError:
            buffer = _RecvBuffer()
            _RECV_BUFFER.set(buffer)
            return buffer


_RECV_BUFFER: Final[trio.lowlevel.RunVar[_RecvBuffer]] = trio.lowlevel.RunVar(
    "cellmesh_recv_buffer"
)


class _Pending:
    __slots__ = ("data", "done", "fds")

    def __init__(self, data: memoryview, fds: Sequence[int], done: Callable[[], None] | None):
        self.data = data
        self.fds = fds
        self.done = done


class Channel:
    """A connected AF_UNIX stream socket with a frame decoder and an end-of-pass send queue.

    ``prepare`` (set by the owning connection) is called at the end of every
    pass in which the channel was marked, before the write: it moves messages
    the connection queued into the channel (with :meth:`send`) and returns
    True to be called again next pass. ``on_broken`` is called once if a
    write fails.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_queued: int = MAX_QUEUED_BYTES,
        fd_budget: FdBudget | None = None,
    ):
        sock.setblocking(False)
        self.sock = sock
        self.decoder = FrameDecoder(max_frame_size=max_frame_size)
        self.fds = HeldFds(fd_budget)
        self._max_queued = max_queued
        self._queued_fds = 0
        self.prepare: Callable[[], bool] | None = None
        self.on_broken: Callable[[BaseException], None] | None = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued = 0
        self._marked = False
        self._in_pass = False  # end_of_pass is running: a mark asks for the next pass
        self._writing = False  # _write is running: send() only queues
        self._remark = False
        # The run's flusher (a bad CELL_SPIN_US is a ConfigError here, as the
        # channel is made); the channel attaches to it when it first sends.
        self._flusher = Flusher.current()
        self._attached = False
        self._wake_writer = trio.Event()
        self._flushed: trio.Event | None = None
        self._below_cap: trio.Event | None = None
        self._reads_in_row = 0
        self._short_read = False  # the last read did not fill the buffer: wait first
        self._rview = _RecvBuffer.current().view
        self.closed = False
        self.broken: BaseException | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.writes = 0

    # -- receiving ---------------------------------------------------------

    async def receive(self) -> bool:
        """Receive one chunk into the decoder (waiting if none is ready).

        Returns False at end of stream. Raises :class:`ChannelBroken` if the
        socket fails or descriptors were truncated.
        """
        sock = self.sock
        if self.closed:
            return False
        if self._short_read:
            # The last read drained the socket, so a read now would almost
            # surely fail with EAGAIN: wait for readiness first.
            self._short_read = False
            self._reads_in_row = 0
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, ValueError, OSError):
                return False  # closed while we waited (ValueError: fd already -1)
        while True:
            if sock.fileno() < 0:  # closed by another task since we last looked
                return False
            try:
                # Into a reused buffer: a fresh 256 KiB bytes object per call
                # would cost an mmap/munmap pair (above glibc's mmap threshold).
                nbytes, ancdata, flags, _ = sock.recvmsg_into([self._rview], _ANC_SIZE)
            except BlockingIOError:
                self._reads_in_row = 0
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return False
                continue
            except OSError as exc:
                if sock.fileno() < 0:  # we closed it while waiting
                    return False
                raise ChannelBroken(f"receive failed: {exc}") from exc
            break
        if ancdata:
            self.fds.received(ancdata, self.bytes_in)  # bytes_in: where this read began
        if flags & _MSG_CTRUNC:
            raise ChannelBroken(
                f"peer sent more than {MAX_FDS_PER_CHUNK} descriptors with one chunk"
            )
        if not nbytes:
            return False
        self._short_read = nbytes < RECV_SIZE
        self.bytes_in += nbytes
        self.decoder.feed(self._rview[:nbytes])
        self._reads_in_row += 1
        if self._reads_in_row >= _FAIRNESS_READS:
            self._reads_in_row = 0
            await trio.lowlevel.checkpoint()
        return True

    def take_fds(self, count: int) -> list[int] | None:
        """Claim the next ``count`` received descriptors, or None if fewer arrived."""
        return self.fds.take(count)

    def next_frame(self) -> DecodedFrame | NeedData:
        """The decoder's next frame; at NEED_DATA, :meth:`check_fds`.

        Call :meth:`take_fds` for a returned frame's vesicles before calling
        this again. (Hot loops call ``decoder.next_frame()`` themselves and
        :meth:`check_fds` only when :attr:`fds` is not empty.)
        """
        frame = self.decoder.next_frame()
        if frame is NEED_DATA and self.fds:
            self.check_fds()
        return frame

    def check_fds(self) -> None:
        """Every complete frame was consumed: may the descriptors still held be claimed?

        Raises :class:`VesicleError` when descriptors are held that no frame
        can claim any more: with no incomplete frame, from a chunk before the
        one that began the incomplete frame, or more than that chunk brought
        (docs/protocol.md section 13).
        """
        self.fds.check(self.decoder.buffered, self.bytes_in)

    # -- sending -----------------------------------------------------------

    def send(
        self,
        data: bytes,
        fds: Sequence[int] = (),
        done: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``data`` (with ``fds`` attached to its first byte); it leaves this pass.

        The write happens at the end of the current scheduler pass (together
        with everything else queued in the pass), at once if the queue passes
        :data:`WRITE_NOW_BYTES`. ``done`` is called once every byte has been
        handed to the kernel (use it to close descriptors that were only kept
        alive for the send). Raises :class:`ChannelBroken` if the socket
        already failed.
        """
        if self.broken is not None:
            raise ChannelBroken(f"channel is broken: {self.broken}") from self.broken
        if self.closed:
            raise ChannelBroken("channel is closed")
        self._queue.append(_Pending(memoryview(data), fds, done))
        self._queued += len(data)
        self._queued_fds += len(fds)
        if self._queued >= WRITE_NOW_BYTES and not self._writing:
            self._write()
        elif not self._marked:
            self.mark()

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every byte queued so far has gone to the kernel
        (at once if nothing is queued; also when the channel closes first)."""
        if not self._queue:
            callback()
            return
        last = self._queue[-1]
        earlier = last.done
        if earlier is None:
            last.done = callback
        else:

            def both() -> None:
                earlier()
                callback()

            last.done = both

    def mark(self) -> None:
        """Have :meth:`end_of_pass` run at the end of this scheduler pass (or, when
        called from inside it, at the end of the next one)."""
        if self._in_pass:
            self._remark = True
            self.woke_tasks()  # the loop must not sleep before that next pass
            return
        if self._marked or self.closed:
            return
        self._marked = True
        if not self._attached:
            self._attached = True
            self._flusher.attach(self.sock.fileno())
        self._flusher.mark(self)

    def end_of_pass(self) -> bool:
        """Called by the flusher: let the owner encode, then write what is queued."""
        prepare = self.prepare
        again = False
        self._in_pass = True
        try:
            if prepare is not None and self.broken is None and not self.closed:
                again = prepare()
            if self._queue and self.broken is None and not self.closed:
                self._write()
        finally:
            self._in_pass = False
        self._marked = (again or self._remark) and not self.closed
        self._remark = False
        return self._marked

    def flush_failed(self, exc: Exception) -> None:
        """``end_of_pass`` raised: the channel cannot be trusted any more."""
        self._marked = False
        self._fail(exc)

    def write_pending(self) -> None:
        """Write what is queued now instead of at the end of the pass (without
        blocking: what the kernel does not take waits for the writer task)."""
        if self._queue and not self._writing and self.broken is None and not self.closed:
            self._write()

    def _write(self) -> None:
        """Hand queued bytes to the kernel without blocking; the writer task does the rest.

        A ``done`` callback run from here may :meth:`send` more: that is queued
        (and written by this same loop), never written from inside it.
        """
        self._writing = True
        try:
            self._write_queue()
        finally:
            self._writing = False

    def _write_queue(self) -> None:
        queue = self._queue
        sock = self.sock
        while queue:
            head = queue[0]
            total = len(head.data)
            try:
                if len(queue) == 1 and not head.fds:
                    sent = sock.send(head.data)  # the common lone frame: no iovec to build
                else:
                    bufs: list[memoryview] = [head.data]
                    for pending in queue:
                        if pending is head:
                            continue
                        if pending.fds or len(bufs) >= MAX_IOV:
                            break
                        bufs.append(pending.data)
                        total += len(pending.data)
                    if head.fds:
                        sent = sock.sendmsg(
                            bufs, [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", head.fds))]
                        )
                    else:
                        sent = sock.sendmsg(bufs)
            except BlockingIOError:
                break
            except OSError as exc:
                # Kept in ``broken`` for as long as the channel lives: without its
                # traceback, which holds this frame and so the unsent frames.
                self._fail(exc.with_traceback(None))
                return
            self.writes += 1
            self.bytes_out += sent
            self._queued -= sent
            self._queued_fds -= len(head.fds)  # they left with the first byte
            short = sent < total
            while sent:
                pending = queue[0]
                size = len(pending.data)
                if sent >= size:
                    sent -= size
                    queue.popleft()
                    if pending.done is not None:
                        pending.done()
                else:
                    pending.data = pending.data[sent:]
                    pending.fds = ()
                    sent = 0
            if short:
                break  # the kernel's buffer is full: the writer waits for room
        if queue:
            if not self._wake_writer.is_set():
                self._wake_writer.set()
                self.woke_tasks()
        elif self._flushed is not None:
            self._flushed.set()
            self._flushed = None
            self.woke_tasks()
        if self._below_cap is not None and not self.over_cap:
            self._below_cap.set()
            self._below_cap = None
            self.woke_tasks()

    def woke_tasks(self) -> None:
        """Code that may run inside the end-of-pass hook woke a task (see Flusher.poke)."""
        self._flusher.poke()

    def _fail(self, exc: BaseException) -> None:
        first = self.broken is None
        self.woke_tasks()
        if first:
            self.broken = exc
        self._wake_writer.set()
        if self._flushed is not None:
            self._flushed.set()
        if self._below_cap is not None:
            self._below_cap.set()
        if first and self.on_broken is not None:
            self.on_broken(exc)

    @property
    def queued(self) -> int:
        """Bytes accepted by :meth:`send` but not yet handed to the kernel."""
        return self._queued

    @property
    def over_cap(self) -> bool:
        """True while ``max_queued`` bytes or more, or more than
        :data:`MAX_QUEUED_FDS` descriptors, wait for the kernel."""
        return self._queued >= self._max_queued or self._queued_fds > MAX_QUEUED_FDS

    async def wait_below_cap(self) -> None:
        """Wait until the channel is no longer :attr:`over_cap` (or failed, or closed)."""
        while self.over_cap and self.broken is None and not self.closed:
            if self._below_cap is None:
                self._below_cap = trio.Event()
            await self._below_cap.wait()

    async def run_writer(self) -> None:
        """Finish writes the kernel could not take at once. Runs until closed."""
        while not self.closed and self.broken is None:
            if not self._queue:
                self._wake_writer = trio.Event()
                await self._wake_writer.wait()
                continue
            try:
                await trio.lowlevel.wait_writable(self.sock)
            except (trio.ClosedResourceError, ValueError, OSError):
                return
            self._write()

    async def flush_inline(self) -> None:
        """Write the queue from this task, waiting as needed (only while no writer task runs)."""
        while self._queue and self.broken is None and not self.closed:
            self._write()
            if self._queue and self.broken is None:
                await trio.lowlevel.wait_writable(self.sock)
        if self.broken is not None:
            raise ChannelBroken(f"send failed: {self.broken}") from self.broken

    async def wait_flushed(self) -> None:
        """Wait until every queued byte has been handed to the kernel (or the channel failed)."""
        if not self._queue or self.broken is not None or self.closed:
            return
        if self._flushed is None:
            self._flushed = trio.Event()
        await self._flushed.wait()

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Close the socket and every unclaimed received descriptor (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._wake_writer.set()
        if self._flushed is not None:
            self._flushed.set()
        if self._below_cap is not None:
            self._below_cap.set()
        if self._attached:
            self._attached = False
            self._flusher.detach(self, self.sock.fileno())
        self.fds.close()
        for pending in self._queue:
            if pending.done is not None:
                pending.done()
        self._queue.clear()
        self._queued = self._queued_fds = 0
        # Give the memory back at once: the partial frame a peer left (up to the
        # frame limit), and the owner's callbacks, whose references back to the
        # owner would keep all of it until a cycle collection.
        self.decoder.release()
        self.prepare = None
        self.on_broken = None
        with contextlib.suppress(OSError, ValueError):
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()

    def shutdown_write(self) -> None:
        """Half-close: the peer sees end of stream after what was sent."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.EBADF):
                raise


def vesicle_context(
    channel: Channel, count: int, mismatched: frozenset[str],
    budget: MappedBudget | None = None,
) -> tuple[DecodeContext, dict[int, int]]:
    """Claim a frame's ``count`` descriptors and build a context that maps them
    (within ``budget``, if given).

    Returns the context and the dict of descriptors not yet mapped; the caller
    closes whatever is left in it once the frame is decoded.
    """
    return client_core.vesicle_context(channel.take_fds(count), count, mismatched, budget)


async def receive_hello(channel: Channel, peer: str) -> Hello:
    """Read the peer's first frame, which must be its hello, and check its version.

    An error frame in its place means the peer refused us: HandshakeError
    carrying the peer's code and message. Any other failure of the first frame
    -- larger than ``MAX_HELLO_SIZE``, not CBOR, not a hello -- is
    HandshakeError (``BAD_HANDSHAKE``), a well-formed hello of another version
    VersionMismatch (docs/protocol.md section 5.1). ``peer`` names the peer in
    messages.
    """
    try:
        while True:
            decoded = channel.next_frame()
            if decoded is not NEED_DATA:
                break
            if not await channel.receive():
                raise ChannelBroken(f"{peer} closed the connection before its hello")
    except HandshakeError:
        raise
    except RemoteProtocolError as exc:
        raise client_core.first_frame_error(exc, peer) from None
    return client_core.parse_hello(decoded.items, peer)
