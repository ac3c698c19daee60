"""One connected Unix stream socket driven from Trio: bytes and descriptors both ways.

Theory of operation
-------------------
The socket is non-blocking and used directly (no ``trio.SocketStream``): a
receive is one ``recvmsg`` that also collects any descriptors passed with
SCM_RIGHTS, and waits with ``trio.lowlevel.wait_readable`` only when nothing
is there. Received bytes go straight into the channel's
:class:`~cellmesh.wire.codec.FrameDecoder`; received descriptors queue in
:attr:`Channel.fds` until a frame that references them claims them.

Sending never blocks the caller: :meth:`Channel.send` writes at once when
nothing is queued, and queues whatever the kernel did not take. One writer
task per channel (:meth:`Channel.run_writer`) drains that queue when the
socket becomes writable again, so a reader that also sends can never deadlock
against a peer that does the same. Queued bytes are bounded by the protocol's
credit (calls in flight), not by this class.

Descriptors travel with the first byte of the chunk they were queued with,
which is the first byte of the frame that references them, so a frame's
descriptors have always arrived once the frame is complete.
"""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Sequence
from typing import Final

import trio

from ..wire.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_VESICLES_PER_FRAME,
    NEED_DATA,
    FrameDecoder,
    Hello,
)
from ..wire.proteins import DecodeContext
from . import _client_core as client_core

RECV_SIZE: Final = 256 * 1024
#: At most this many descriptors may arrive with one chunk (one frame's worth).
MAX_FDS_PER_CHUNK: Final = MAX_VESICLES_PER_FRAME
_ANC_SIZE: Final = socket.CMSG_SPACE(MAX_FDS_PER_CHUNK * array.array("i").itemsize)
#: Receives in a row without a schedule point before we yield to other tasks.
_FAIRNESS_READS: Final = 16
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)
_SCM_RIGHTS: Final = int(socket.SCM_RIGHTS)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)


class ChannelBroken(Exception):
    """The socket failed (reset, broken pipe) or the peer broke SCM_RIGHTS rules."""


class _Pending:
    __slots__ = ("data", "done", "fds")

    def __init__(self, data: memoryview, fds: Sequence[int], done: Callable[[], None] | None):
        self.data = data
        self.fds = fds
        self.done = done


class Channel:
    """A connected AF_UNIX stream socket with a frame decoder and a send queue."""

    def __init__(self, sock: socket.socket, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE):
        sock.setblocking(False)
        self.sock = sock
        self.decoder = FrameDecoder(max_frame_size=max_frame_size)
        self.fds: collections.deque[int] = collections.deque()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake_writer = trio.Event()
        self._flushed: trio.Event | None = None
        self._reads_in_row = 0
        self._short_read = False  # the last read did not fill the buffer: wait first
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)
        self.closed = False
        self.broken: BaseException | None = None
        self.bytes_in = 0
        self.bytes_out = 0

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
        for level, kind, payload in ancdata:
            if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self.fds.extend(fds)
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
        if count > len(self.fds):
            return None
        return [self.fds.popleft() for _ in range(count)]

    # -- sending -----------------------------------------------------------

    def send(
        self,
        data: bytes,
        fds: Sequence[int] = (),
        done: Callable[[], None] | None = None,
    ) -> None:
        """Send ``data`` (with ``fds`` attached to its first byte) without blocking.

        ``done`` is called once every byte has been handed to the kernel (use
        it to close descriptors that were only kept alive for the send).
        Raises :class:`ChannelBroken` if the socket already failed.
        """
        if self.broken is not None:
            raise ChannelBroken(f"channel is broken: {self.broken}") from self.broken
        if self.closed:
            raise ChannelBroken("channel is closed")
        view = memoryview(data)
        if not self._queue:
            try:
                sent = self._send_now(view, fds)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._fail(exc)
                raise ChannelBroken(f"send failed: {exc}") from exc
            if sent == len(view):
                if done is not None:
                    done()
                return
            if sent:
                view = view[sent:]
                fds = ()
        self._queue.append(_Pending(view, fds, done))
        self._wake_writer.set()

    def _send_now(self, view: memoryview, fds: Sequence[int]) -> int:
        if fds:
            sent = self.sock.sendmsg(
                [view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
        else:
            sent = self.sock.send(view)
        self.bytes_out += sent
        return sent

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        self._wake_writer.set()
        if self._flushed is not None:
            self._flushed.set()

    @property
    def queued(self) -> int:
        """Bytes accepted by :meth:`send` but not yet handed to the kernel."""
        return sum(len(p.data) for p in self._queue)

    async def run_writer(self) -> None:
        """Drain the send queue whenever the kernel buffer frees up. Runs until closed."""
        queue = self._queue
        while not self.closed and self.broken is None:
            if not queue:
                self._wake_writer = trio.Event()
                await self._wake_writer.wait()
                continue
            pending = queue[0]
            try:
                sent = self._send_now(pending.data, pending.fds)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except trio.ClosedResourceError:
                    return
                continue
            except OSError as exc:
                self._fail(exc)
                return
            if sent == len(pending.data):
                queue.popleft()
                if pending.done is not None:
                    pending.done()
                if not queue and self._flushed is not None:
                    self._flushed.set()
                    self._flushed = None
            else:
                pending.data = pending.data[sent:]
                pending.fds = ()

    async def flush_inline(self) -> None:
        """Drain the send queue from this task (only while no writer task runs)."""
        queue = self._queue
        while queue and self.broken is None and not self.closed:
            pending = queue[0]
            try:
                sent = self._send_now(pending.data, pending.fds)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError as exc:
                self._fail(exc)
                raise ChannelBroken(f"send failed: {exc}") from exc
            if sent == len(pending.data):
                queue.popleft()
                if pending.done is not None:
                    pending.done()
            else:
                pending.data = pending.data[sent:]
                pending.fds = ()

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
        while self.fds:
            os.close(self.fds.popleft())
        for pending in self._queue:
            if pending.done is not None:
                pending.done()
        self._queue.clear()
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
    channel: Channel, count: int, mismatched: frozenset[str]
) -> tuple[DecodeContext, dict[int, int]]:
    """Claim a frame's ``count`` descriptors and build a context that maps them.

    Returns the context and the dict of descriptors not yet mapped; the caller
    closes whatever is left in it once the frame is decoded.
    """
    return client_core.vesicle_context(channel.take_fds(count), count, mismatched)


async def receive_hello(channel: Channel, peer: str) -> Hello:
    """Read the peer's first frame, which must be its hello, and check its version.

    An error frame in its place means the peer refused us: HandshakeError
    carrying the peer's code and message. ``peer`` names the peer in messages.
    """
    decoder = channel.decoder
    while True:
        decoded = decoder.next_frame()
        if decoded is not NEED_DATA:
            break
        if not await channel.receive():
            raise ChannelBroken(f"{peer} closed the connection before its hello")
    return client_core.parse_hello(decoded.items, peer)
