"""Raft messages over Unix-domain sockets: length-prefixed CBOR frames.

Theory of operation
-------------------
A stop-gap until :mod:`cellmesh.wire` is ready. Every node listens on
``<socket_dir>/raft-<id>.sock``. A frame is a 4-byte big-endian length and a
CBOR array holding one :class:`Message` (see :func:`encode_message`).

Sending never blocks the node: :meth:`UnixTransport.send` puts the message
on a bounded per-peer queue (full queue: the message is dropped, Raft will
resend). One sender task per peer connects lazily, writes every queued
message it can gather in one ``send_all`` and, when the peer is unreachable,
drops what is queued and retries after a short back-off. Incoming
connections each get one reader task that decodes frames into the node's
inbox. Bytes from a peer are hostile: anything malformed raises only
:class:`~cellmesh.errors.MalformedFrame` (or :class:`FrameTooLarge`) inside
the decoder, and the reader drops that connection; the node and its other
peers are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import struct
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
_QUEUE: Final = 4096
_GATHER: Final = 256
_BACKOFF: Final = 0.05


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
class UnixTransport:
    """One node's Raft endpoint over Unix sockets; open with :func:`open_unix_transport`."""

    node: int
    socket_dir: Path
    _nursery: trio.Nursery
    _inbox_send: trio.MemorySendChannel[Message]
    _inbox: trio.MemoryReceiveChannel[Message]
    _peers: dict[int, trio.MemorySendChannel[Message]] = attrs.Factory(dict)
    dropped: int = 0

    def send(self, message: Message) -> None:
        """Queue ``message`` for its destination; drops it if that queue is full."""
        queue = self._peers.get(message.dst)
        if queue is None:
            queue, outgoing = trio.open_memory_channel[Message](_QUEUE)
            self._peers[message.dst] = queue
            self._nursery.start_soon(self._sender, message.dst, outgoing)
        try:
            queue.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1

    async def receive(self) -> Message:
        """The next message addressed to this node."""
        return await self._inbox.receive()

    async def _sender(self, peer: int, outgoing: trio.MemoryReceiveChannel[Message]) -> None:
        path = socket_path(self.socket_dir, peer)
        while True:
            first = await outgoing.receive()
            try:
                stream = await trio.open_unix_socket(os.fspath(path))
            except OSError:
                self._drain(outgoing)
                await trio.sleep(_BACKOFF)
                continue
            try:
                async with stream:
                    while True:
                        frames = [encode_message(first)]
                        while len(frames) < _GATHER:
                            try:
                                frames.append(encode_message(outgoing.receive_nowait()))
                            except trio.WouldBlock:
                                break
                        await stream.send_all(b"".join(frames))
                        first = await outgoing.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._drain(outgoing)

    def _drain(self, outgoing: trio.MemoryReceiveChannel[Message]) -> None:
        while True:
            try:
                outgoing.receive_nowait()
            except trio.WouldBlock:
                return
            self.dropped += 1

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        reader = FrameReader()
        async with stream:
            try:
                async for data in stream:
                    for body in reader.feed(data):
                        await self._inbox_send.send(decode_message(body))
            except (MalformedFrame, FrameTooLarge, trio.BrokenResourceError, OSError):
                return


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
    inbox_send, inbox = trio.open_memory_channel[Message](_QUEUE)
    try:
        async with trio.open_nursery() as nursery:
            transport = UnixTransport(
                node=node,
                socket_dir=socket_dir,
                nursery=nursery,
                inbox_send=inbox_send,
                inbox=inbox,
            )
            nursery.start_soon(trio.serve_listeners, transport._serve_connection, [listener])
            try:
                yield transport
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


__all__ = [
    "MAX_FRAME",
    "FrameReader",
    "UnixTransport",
    "decode_message",
    "encode_message",
    "open_unix_transport",
    "socket_path",
]
