"""The raw baselines of ``cellmesh bench wire``: plain sockets, no cellmesh code.

Each baseline is a (server, client) pair of functions; the bench runs the server
and the client in two separate processes (see :mod:`cellmesh.bench.wire_server`
and :mod:`cellmesh.bench.wire_client`), exactly as it runs cellmesh's own
membrane and synapse, so every comparison pays the same process and scheduling
costs.

They are written the way a competent engineer writes the *simple* version --
not sabotaged, not heroically tuned:

* frames are a 4-byte big-endian length prefix + one ``cbor2.dumps`` body;
* readers ``recv`` big chunks and parse every complete frame in the chunk;
* writers join all frames produced by one chunk into one ``sendall``;
* every received message is decoded and checked (call id / count), as an RPC
  layer would.

Message shapes mimic a small RPC protocol: a call is ``[1, call_id, "ping",
[n]]``, its reply ``[2, call_id, [n]]``, a one-way signal ``[3, "ping", [n]]``,
a count request ``[4, call_id]`` and its reply ``[5, call_id, count]``.

Servers serve connections one after another until the process is killed; a
client opens one connection per measured round.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import cbor2
import trio

__all__ = [
    "BULK_ACK",
    "PING_PAYLOAD",
    "client_oneway",
    "client_pipeline",
    "client_raw_bulk",
    "client_trio_pingpong",
    "client_unix_pingpong",
    "connect_unix",
    "listen_unix",
    "serve_oneway",
    "serve_pipeline",
    "serve_raw_bulk",
    "serve_trio_pingpong",
    "serve_unix_pingpong",
]

PING_PAYLOAD: Final = b"pingpong"  # the 8-byte payload of the blocking ping-pong
BULK_ACK: Final = b"k"
CALL: Final = 1
REPLY: Final = 2
SIGNAL: Final = 3
COUNT: Final = 4
COUNT_REPLY: Final = 5
_LEN: Final = struct.Struct(">I")
_RECV_SIZE: Final = 1 << 18
_BULK_CHUNK: Final = 1 << 20


class BaselineError(RuntimeError):
    """A baseline peer misbehaved (closed early, replied out of order)."""


# --------------------------------------------------------------------------
# Plumbing shared by servers and clients.


def listen_unix(path: str) -> socket.socket:
    """Bind and listen on a fresh AF_UNIX stream socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    return sock


def connect_unix(path: str, timeout: float = 10.0) -> socket.socket:
    """Connect a blocking AF_UNIX stream socket to ``path``, retrying while it is not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        else:
            return sock


def frame(obj: Any) -> bytes:
    """Encode ``obj`` as one length-prefixed CBOR frame."""
    body = cbor2.dumps(obj)
    return _LEN.pack(len(body)) + body


def decode_frames(data: bytes, out: list[Any]) -> bytes:
    """Decode every complete frame at the start of ``data`` into ``out``; return the rest."""
    view = memoryview(data)
    end = len(data)
    off = 0
    loads = cbor2.loads
    unpack_from = _LEN.unpack_from
    while end - off >= 4:
        (size,) = unpack_from(view, off)
        stop = off + 4 + size
        if stop > end:
            break
        out.append(loads(view[off + 4 : stop]))
        off = stop
    view.release()
    return data[off:]


def _serve_forever(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(ConnectionError, BaselineError):
            handle(conn)


# --------------------------------------------------------------------------
# 1. Raw blocking AF_UNIX ping-pong, 8-byte payload.


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size)
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            raise BaselineError("peer closed mid-message")
        data += more
    return data


def _handle_unix_pingpong(conn: socket.socket) -> None:
    size = len(PING_PAYLOAD)
    while True:
        data = conn.recv(size)
        if not data:
            return
        if len(data) < size:
            data += _recv_exact(conn, size - len(data))
        conn.sendall(data)


def serve_unix_pingpong(listener: socket.socket) -> None:
    """Echo 8-byte messages with ``recv``/``sendall``, one connection at a time."""
    _serve_forever(listener, _handle_unix_pingpong)


def client_unix_pingpong(path: str, samples: int, warmup: int) -> list[int]:
    """Return ``samples`` round-trip times (ns) of one outstanding 8-byte ping."""
    size = len(PING_PAYLOAD)
    rtts: list[int] = []
    clock = time.perf_counter_ns
    with connect_unix(path) as sock:
        for i in range(warmup + samples):
            t0 = clock()
            sock.sendall(PING_PAYLOAD)
            _recv_exact(sock, size)
            t1 = clock()
            if i >= warmup:
                rtts.append(t1 - t0)
    return rtts


# --------------------------------------------------------------------------
# 2. Raw Trio socket ping-pong with CBOR frames.


async def _handle_trio_pingpong(stream: trio.SocketStream) -> None:
    rest = b""
    msgs: list[Any] = []
    async with stream:
        while True:
            try:
                data = await stream.receive_some(_RECV_SIZE)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            rest = decode_frames(rest + data, msgs)
            if msgs:
                out = b"".join(frame([REPLY, m[1], m[3]]) for m in msgs)
                msgs.clear()
                try:
                    await stream.send_all(out)
                except trio.BrokenResourceError:
                    return


async def serve_trio_pingpong(listener: socket.socket) -> None:
    """Reply to every CBOR call frame over Trio socket streams, one task per connection."""
    trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
    await trio.serve_listeners(_handle_trio_pingpong, [trio_listener])


async def _open_trio_unix(path: str, timeout: float = 10.0) -> trio.SocketStream:
    with trio.fail_after(timeout):
        while True:
            try:
                return await trio.open_unix_socket(path)
            except (FileNotFoundError, ConnectionRefusedError):
                await trio.sleep(0.01)


async def client_trio_pingpong(path: str, samples: int, warmup: int) -> list[int]:
    """Return ``samples`` RTTs (ns) of one outstanding CBOR call over a Trio socket stream."""
    rtts: list[int] = []
    clock = time.perf_counter_ns
    msgs: list[Any] = []
    rest = b""
    stream = await _open_trio_unix(path)
    async with stream:
        for i in range(warmup + samples):
            t0 = clock()
            await stream.send_all(frame([CALL, i, "ping", [i]]))
            while not msgs:
                data = await stream.receive_some(_RECV_SIZE)
                if not data:
                    raise BaselineError("server closed the connection")
                rest = decode_frames(rest + data, msgs)
            t1 = clock()
            reply = msgs.pop()
            if reply[1] != i or msgs:
                raise BaselineError(f"unexpected reply {reply!r} to call {i}")
            if i >= warmup:
                rtts.append(t1 - t0)
    return rtts


# --------------------------------------------------------------------------
# 3. Raw blocking pipelined request/reply, one cbor2 frame per message,
#    chunks of 128 frames per sendall.


def _handle_pipeline(conn: socket.socket) -> None:
    rest = b""
    msgs: list[Any] = []
    dumps = cbor2.dumps
    pack = _LEN.pack
    while True:
        data = conn.recv(_RECV_SIZE)
        if not data:
            return
        rest = decode_frames(rest + data, msgs)
        if msgs:
            parts: list[bytes] = []
            for m in msgs:
                body = dumps([REPLY, m[1], m[3]])
                parts.append(pack(len(body)))
                parts.append(body)
            msgs.clear()
            conn.sendall(b"".join(parts))


def serve_pipeline(listener: socket.socket) -> None:
    """Decode every call frame in each chunk and reply with one encoded frame per call."""
    _serve_forever(listener, _handle_pipeline)


def rec_body(i: int) -> list[Any]:
    """The body of the ``i``-th record call: the fields of the bench's ``Rec`` -- an int,
    a 16-byte key and a short name, made the same way (see ``_cellmesh.rec``)."""
    return [i, i.to_bytes(8, "little") * 2, f"user-{i % 1000}"]


def _calls(first: int, count: int, rec: bool = False) -> bytes:
    dumps = cbor2.dumps
    pack = _LEN.pack
    parts: list[bytes] = []
    for i in range(first, first + count):
        body = dumps([CALL, i, "rec", rec_body(i)] if rec else [CALL, i, "ping", [i]])
        parts.append(pack(len(body)))
        parts.append(body)
    return b"".join(parts)


def _run_pipeline(
    sock: socket.socket, start: int, total: int, window: int, chunk: int = 128, *,
    rec: bool = False,
) -> None:
    """Complete calls ``start .. start+total-1`` keeping up to ``window`` outstanding.

    Calls leave in chunks of ``chunk`` frames per ``sendall`` (the first
    window at once): whenever at least ``chunk`` replies have come back, the
    next chunk goes out. The server answers each chunk it receives with one
    ``sendall``, so both sides write and wake up once per chunk, not per
    message -- the strongest simple raw client (smaller refills, one per
    received reply batch, measured 3x slower).
    """
    stop = start + total
    sent = start + min(window, total)
    sock.sendall(_calls(start, sent - start, rec))
    expected = start
    rest = b""
    msgs: list[Any] = []
    while expected < stop:
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise BaselineError("server closed the connection")
        rest = decode_frames(rest + data, msgs)
        for m in msgs:
            if m[1] != expected:
                raise BaselineError(f"reply {m[1]} arrived, expected {expected}")
            expected += 1
        msgs.clear()
        while sent < stop and sent - expected <= window - chunk:
            n = min(chunk, stop - sent)
            sock.sendall(_calls(sent, n, rec))
            sent += n


def client_pipeline(
    path: str, msgs: int, window: int, warmup: int, chunk: int = 128, *, rec: bool = False
) -> float:
    """Complete ``msgs`` pipelined calls (``window`` outstanding, sent ``chunk`` frames per
    ``sendall``); return the seconds taken. ``rec``: the calls carry :func:`rec_body`
    (an int, bytes and a str) instead of one int."""
    with connect_unix(path) as sock:
        if warmup:
            _run_pipeline(sock, 0, warmup, window, chunk, rec=rec)
        t0 = time.perf_counter()
        _run_pipeline(sock, warmup, msgs, window, chunk, rec=rec)
        return time.perf_counter() - t0


# --------------------------------------------------------------------------
# 4. Raw one-way cbor2 stream, acknowledged by count at the end.


def _handle_oneway(conn: socket.socket) -> None:
    rest = b""
    msgs: list[Any] = []
    count = 0
    while True:
        data = conn.recv(_RECV_SIZE)
        if not data:
            return
        rest = decode_frames(rest + data, msgs)
        for m in msgs:
            if m[0] == COUNT:
                conn.sendall(frame([COUNT_REPLY, m[1], count]))
                count = 0
            else:
                count += 1
        msgs.clear()


def serve_oneway(listener: socket.socket) -> None:
    """Decode and count one-way frames; answer a count request with the count so far."""
    _serve_forever(listener, _handle_oneway)


def _run_oneway(sock: socket.socket, total: int, batch: int) -> None:
    dumps = cbor2.dumps
    pack = _LEN.pack
    done = 0
    while done < total:
        parts: list[bytes] = []
        for i in range(done, min(done + batch, total)):
            body = dumps([SIGNAL, "ping", [i]])
            parts.append(pack(len(body)))
            parts.append(body)
        sock.sendall(b"".join(parts))
        done += len(parts) // 2
    sock.sendall(frame([COUNT, 0]))
    rest = b""
    msgs: list[Any] = []
    while not msgs:
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise BaselineError("server closed the connection")
        rest = decode_frames(rest + data, msgs)
    if msgs[0][2] != total:
        raise BaselineError(f"server counted {msgs[0][2]} signals, sent {total}")


def client_oneway(path: str, msgs: int, batch: int, warmup: int) -> float:
    """Send ``msgs`` one-way frames (``batch`` per ``sendall``) and await the count; seconds."""
    with connect_unix(path) as sock:
        if warmup:
            _run_oneway(sock, warmup, batch)
        t0 = time.perf_counter()
        _run_oneway(sock, msgs, batch)
        return time.perf_counter() - t0


# --------------------------------------------------------------------------
# 5b. Raw bulk transfer: sendall of the whole payload, 1-byte ack.


@attrs.define(eq=False)
class _BulkReceiver:
    """Receives length-prefixed payloads into one buffer reused across connections."""

    _buf: bytearray = attrs.field(factory=bytearray)

    def handle(self, conn: socket.socket) -> None:
        while True:
            header = conn.recv(4)
            if not header:
                return
            if len(header) < 4:
                header += _recv_exact(conn, 4 - len(header))
            (size,) = _LEN.unpack(header)
            if len(self._buf) != size:
                self._buf = bytearray(size)
            view = memoryview(self._buf)
            got = 0
            while got < size:
                n = conn.recv_into(view[got:], min(_BULK_CHUNK, size - got))
                if not n:
                    raise BaselineError("peer closed mid-payload")
                got += n
            view.release()
            conn.sendall(BULK_ACK)


def serve_raw_bulk(listener: socket.socket) -> None:
    """Receive length-prefixed payloads into a reused buffer; ack each with one byte."""
    _serve_forever(listener, _BulkReceiver().handle)


def client_raw_bulk(path: str, payload: bytes, transfers: int, warmup: int = 1) -> list[float]:
    """Send ``payload`` ``warmup + transfers`` times, one ``sendall`` each; timed seconds each."""
    times: list[float] = []
    header = _LEN.pack(len(payload))
    with connect_unix(path) as sock:
        for i in range(warmup + transfers):
            t0 = time.perf_counter()
            sock.sendall(header)
            sock.sendall(payload)
            if _recv_exact(sock, 1) != BULK_ACK:
                raise BaselineError("bad ack")
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times
