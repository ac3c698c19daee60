"""Raft messages over Unix-domain sockets: length-prefixed CBOR frames.

Theory of operation
-------------------
A stop-gap until :mod:`cellmesh.wire` is ready. Every node listens on
``<socket_dir>/raft-<id>.sock``. A frame is a 4-byte big-endian length and a
CBOR array holding one :class:`Message` (see :func:`encode_message`).

Sending never blocks the node, and costs no task switch when the link is
idle: :meth:`UnixTransport.send` encodes the message and writes it to the
peer's non-blocking socket at once (one ``send`` syscall) if nothing is
queued for that peer. The link then stays *corked* for 50 microseconds:
further messages of the same burst (a pipelining leader's Ready) are queued
and go out together in one write by the peer's sender task. The queue is bounded
(full: the message is dropped, Raft will resend). The sender task connects
lazily, flushes the queue (waiting for the socket to become writable if the
kernel buffer is full) and, when the peer is unreachable, drops what is
queued and retries after a short back-off.

Incoming connections are accepted by one task and registered in a private
``epoll`` set; :meth:`UnixTransport.receive` waits for that set to become
readable and reads the sockets in the caller's task, so a frame is stepped
without a task switch. It returns the rest of what one read decoded without
a checkpoint, so the node steps a whole burst before its ready loop runs
(one batch, one fsync). Bytes from a peer are hostile:
anything malformed raises only :class:`~cellmesh.errors.MalformedFrame` (or
:class:`FrameTooLarge`) inside the decoder, and the reader drops that
connection; the node and its other peers are unaffected.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import select
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import cbor2
import trio

from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.types import Entry, EntryKind, Snapshot, SnapshotMeta
from cellmesh.errors import FrameTooLarge, MalformedFrame

MAX_FRAME: Final = 256 * 1024 * 1024
_LENGTH: Final = struct.Struct(">I")
_FIELDS: Final = 14
_ENTRY_FIELDS: Final = 4
_SNAPSHOT_FIELDS: Final = 5
_QUEUE: Final = 4096  #: messages queued per peer (outgoing) and in the inbox
_QUEUE_BYTES: Final = 64 * 1024 * 1024  #: bytes queued per peer (one larger frame may pass)
_BACKOFF: Final = 0.05
_READ_SIZE: Final = 256 * 1024
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_CORK: Final = 50e-6  #: after a direct write, queue for this long (seconds) to batch a burst


def socket_path(socket_dir: Path, node: int) -> Path:
    """Where node ``node`` listens for Raft traffic."""
    return socket_dir / f"raft-{node}.sock"


# --------------------------------------------------------------------------
# Message codec (sans I/O)


def encode_message(m: Message) -> bytes:
    """One frame (length prefix included) carrying ``m``."""
    snap = None
    if m.snapshot is not None:
        meta = m.snapshot.meta
        snap = [meta.index, meta.term, sorted(meta.voters), sorted(meta.learners), m.snapshot.data]
    body = cbor2.dumps(
        [
            int(m.type),
            m.src,
            m.dst,
            m.term,
            m.log_term,
            m.index,
            [[e.index, e.term, int(e.kind), e.data] for e in m.entries],
            m.commit,
            m.reject,
            m.reject_hint,
            snap,
            m.read_seq,
            m.context,
            m.transfer,
        ]
    )
    return _LENGTH.pack(len(body)) + body


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedFrame(f"{what} must be a non-negative integer, got {value!r:.40}")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise MalformedFrame(f"{what} must be a boolean")
    return value


def _bytes(value: object, what: str) -> bytes:
    if type(value) is not bytes:
        raise MalformedFrame(f"{what} must be a byte string")
    return value


def _list(value: object, what: str, length: int | None = None) -> list[object]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise MalformedFrame(f"{what} must be an array" + (f" of {length}" if length else ""))
    return value


def decode_message(body: bytes) -> Message:
    """Decode one frame body; raises only :class:`MalformedFrame` on bad input."""
    try:
        raw = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise MalformedFrame(f"frame is not valid CBOR: {exc}") from None
    fields = _list(raw, "message", _FIELDS)
    try:
        kind = MessageType(_int(fields[0], "type"))
    except ValueError:
        raise MalformedFrame(f"unknown message type {fields[0]!r}") from None
    entries = []
    for item in _list(fields[6], "entries"):
        index, term, entry_kind, data = _list(item, "entry", _ENTRY_FIELDS)
        try:
            ekind = EntryKind(_int(entry_kind, "entry kind"))
        except ValueError:
            raise MalformedFrame(f"unknown entry kind {entry_kind!r}") from None
        entries.append(
            Entry(
                index=_int(index, "entry index"),
                term=_int(term, "entry term"),
                kind=ekind,
                data=_bytes(data, "entry data"),
            )
        )
    snapshot = None
    if fields[10] is not None:
        index, term, voters, learners, data = _list(fields[10], "snapshot", _SNAPSHOT_FIELDS)
        snapshot = Snapshot(
            meta=SnapshotMeta(
                index=_int(index, "snapshot index"),
                term=_int(term, "snapshot term"),
                voters=frozenset(_int(v, "voter") for v in _list(voters, "voters")),
                learners=frozenset(_int(v, "learner") for v in _list(learners, "learners")),
            ),
            data=_bytes(data, "snapshot data"),
        )
    return Message(
        type=kind,
        src=_int(fields[1], "src"),
        dst=_int(fields[2], "dst"),
        term=_int(fields[3], "term"),
        log_term=_int(fields[4], "log_term"),
        index=_int(fields[5], "index"),
        entries=tuple(entries),
        commit=_int(fields[7], "commit"),
        reject=_bool(fields[8], "reject"),
        reject_hint=_int(fields[9], "reject_hint"),
        snapshot=snapshot,
        read_seq=_int(fields[11], "read_seq"),
        context=_bytes(fields[12], "context"),
        transfer=_bool(fields[13], "transfer"),
    )


@attrs.define(eq=False)
class FrameReader:
    """Sans-I/O splitter: :meth:`feed` bytes, get complete frame bodies back."""

    max_frame: int = MAX_FRAME
    _buffer: bytearray = attrs.Factory(bytearray)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add ``data``; return every complete body. Raises :class:`FrameTooLarge`."""
        self._buffer += data
        bodies = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer, 0)
            if length > self.max_frame:
                raise FrameTooLarge(length, self.max_frame)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[_LENGTH.size : end]))
            del self._buffer[:end]
        return bodies


# --------------------------------------------------------------------------
# The transport


@attrs.define(eq=False)
class FrameOutbox:
    """Frames bound for one non-blocking socket: written at once when it is idle.

    :meth:`put` never blocks. If nothing is queued and the outbox is not
    corked, the frame is written straight to the socket (``fd``): no task
    switch, one syscall. Such a
    write corks the outbox for ``cork`` seconds, so the rest of a burst (the
    messages of one Ready follow each other within microseconds) is queued
    and leaves in one write. The cork needs no task to lift it: a frame put
    after it expired is written directly again. Whatever the kernel does not
    take at once is queued too. Some task must call :meth:`flush` each time
    :meth:`wait` returns (as :meth:`flush_forever` does). A write error marks
    the outbox ``broken``; the owner decides what to do (reconnect, close).
    The owner must set ``fd`` to ``None`` before it closes the socket.
    """

    fd: int | None = None
    max_frames: int = _QUEUE
    max_bytes: int = _QUEUE_BYTES
    cork: float = _CORK
    broken: bool = False
    _buffer: bytearray = attrs.Factory(bytearray)
    _frames: int = 0
    _corked_until: float = 0.0
    _wakeup: trio.Event = attrs.Factory(trio.Event)
    _room: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    @property
    def queued_frames(self) -> int:
        """Frames (or a frame's unsent tail) waiting in the queue."""
        return self._frames

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the queue."""
        return len(self._buffer)

    def put(self, frame: bytes) -> bool:
        """Write or queue ``frame``; ``False`` if it was dropped (queue full or broken)."""
        if self.broken:
            return False
        if self.fd is not None and not self._buffer:
            now = time.perf_counter()
            if now >= self._corked_until:
                try:
                    sent = os.write(self.fd, frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.broken = True
                    self._wakeup.set()
                    return False
                self._corked_until = now + self.cork
                if sent == len(frame):
                    return True
                frame = frame[sent:]  # the tail of a started frame must follow, whatever the bound
        elif self._buffer and (
            self._frames >= self.max_frames or len(self._buffer) + len(frame) > self.max_bytes
        ):
            return False
        self._buffer += frame
        self._frames += 1
        self._wakeup.set()
        return True

    def discard(self) -> int:
        """Drop everything queued; return how many frames that was."""
        dropped, self._frames = self._frames, 0
        self._buffer.clear()
        self._room.unpark_all()
        return dropped

    async def wait(self) -> None:
        """Wait until there is something for :meth:`flush` to do."""
        await self._wakeup.wait()
        self._wakeup = trio.Event()

    async def flush(self) -> None:
        """Write the whole queue (waiting for the socket as needed).

        Sets :attr:`broken` on a write error (the queue is then kept; the
        owner calls :meth:`discard`).
        """
        fd = self.fd
        while self._buffer and fd is not None and not self.broken:
            try:
                sent = os.write(fd, self._buffer)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            except OSError:
                self.broken = True
                self._room.unpark_all()
                return
            del self._buffer[:sent]
            if not self._buffer:
                self._frames = 0
            if self._room:
                self._room.unpark_all()

    async def flush_forever(self) -> None:
        """Flush each time something is queued, until the outbox breaks."""
        while not self.broken:
            await self.wait()
            await self.flush()

    async def wait_room(self) -> None:
        """Wait while the queue is at its bound (back-pressure for a producer)."""
        while not self.broken and (
            self._frames >= self.max_frames or len(self._buffer) >= self.max_bytes
        ):
            await self._room.park()


@attrs.define(eq=False)
class _Incoming:
    """One accepted connection: its socket and its frame splitter."""

    stream: trio.SocketStream
    reader: FrameReader = attrs.Factory(FrameReader)


@attrs.define(eq=False)
class UnixTransport:
    """One node's Raft endpoint over Unix sockets; open with :func:`open_unix_transport`."""

    node: int
    socket_dir: Path
    _nursery: trio.Nursery
    _poller: select.epoll
    _peers: dict[int, FrameOutbox] = attrs.Factory(dict)
    _incoming: dict[int, _Incoming] = attrs.Factory(dict)
    _inbox: collections.deque[Message] = attrs.Factory(collections.deque)
    _closed: bool = False
    dropped: int = 0

    def send(self, message: Message) -> None:
        """Write ``message`` to its destination now if the link is idle, else queue it.

        Drops it if that peer's queue is full.
        """
        outbox = self._peers.get(message.dst)
        if outbox is None:
            outbox = self._peers[message.dst] = FrameOutbox()
            self._nursery.start_soon(self._sender, message.dst, outbox)
        if not outbox.put(encode_message(message)):
            self.dropped += 1

    async def receive(self) -> Message:
        """The next message addressed to this node.

        The caller's task reads the sockets itself (no reader task, so no
        task switch between a frame arriving and the node stepping it). It
        returns without a checkpoint while messages of the last read remain,
        so the caller steps a whole burst before other tasks run; it yields
        whenever it has to read. Waits forever once the transport is closed.
        One task at a time may call it (the node's receiver).
        """
        while not self._inbox:
            if self._closed:
                await trio.sleep_forever()
            try:
                await trio.lowlevel.wait_readable(self._poller.fileno())
            except trio.ClosedResourceError:
                continue
            self._read_ready()
        return self._inbox.popleft()

    def _read_ready(self) -> None:
        """Read once from every connection with data; decode every complete frame."""
        for fd, _ in self._poller.poll(0):
            conn = self._incoming.get(fd)
            if conn is None:
                continue
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._drop_connection(fd)
                continue
            try:
                for body in conn.reader.feed(data):
                    self._inbox.append(decode_message(body))
            except (MalformedFrame, FrameTooLarge):
                self._drop_connection(fd)

    def _drop_connection(self, fd: int) -> None:
        conn = self._incoming.pop(fd)
        self._poller.unregister(fd)
        conn.stream.socket.close()

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                await trio.sleep(_BACKOFF)  # out of descriptors or memory: retry later
                continue
            fd = stream.socket.fileno()
            self._incoming[fd] = _Incoming(stream)
            self._poller.register(fd, select.EPOLLIN)

    def _close(self) -> None:
        self._closed = True
        for fd in list(self._incoming):
            self._drop_connection(fd)
        trio.lowlevel.notify_closing(self._poller.fileno())
        self._poller.close()

    async def _sender(self, peer: int, outbox: FrameOutbox) -> None:
        path = os.fspath(socket_path(self.socket_dir, peer))
        sock: socket.socket | None = None
        try:
            while True:
                await outbox.wait()
                if sock is None and outbox.queued_frames and not outbox.broken:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        sock.connect(path)
                    except OSError:  # absent, refused, or its backlog is full
                        sock.close()
                        sock = None
                        self.dropped += outbox.discard()
                        await trio.sleep(_BACKOFF)
                        continue
                    outbox.fd = sock.fileno()
                await outbox.flush()
                if outbox.broken:
                    outbox.fd = None
                    if sock is not None:
                        sock.close()
                        sock = None
                    self.dropped += outbox.discard()
                    outbox.broken = False
        finally:
            outbox.fd = None
            if sock is not None:
                sock.close()


@asynccontextmanager
async def open_unix_transport(node: int, socket_dir: Path) -> AsyncIterator[UnixTransport]:
    """Listen on ``raft-<node>.sock`` in ``socket_dir`` and yield the transport.

    A stale socket file at that path is replaced. Everything is torn down
    (listener, connections, sender tasks) when the block exits.
    """
    path = socket_path(socket_dir, node)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(os.fspath(path))
    sock.listen(128)
    listener = trio.SocketListener(sock)
    try:
        async with listener, trio.open_nursery() as nursery:
            transport = UnixTransport(
                node=node,
                socket_dir=socket_dir,
                nursery=nursery,
                poller=select.epoll(),
            )
            nursery.start_soon(transport._accept, listener)
            try:
                yield transport
            finally:
                nursery.cancel_scope.cancel()
                transport._close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


__all__ = [
    "MAX_FRAME",
    "FrameOutbox",
    "FrameReader",
    "UnixTransport",
    "decode_message",
    "encode_message",
    "open_unix_transport",
    "socket_path",
]
