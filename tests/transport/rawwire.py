"""An independent wire client, written from docs/protocol.md alone (no cellmesh.wire).

Frames are ``struct`` headers around ``cbor2`` items; nothing here reuses the
reference codec, so the tests that use it check the reference server against
the specification's words, not against itself. Also usable from inside a cell
(tests/transport/wirecells.py copies the few functions it needs).
"""

from __future__ import annotations

import array
import socket
import struct
from typing import Any

import cbor2
import trio

HELLO, CALL, REPLY, ERROR, SIGNAL, CANCEL, CREDIT, GOAWAY, BATCH, COLUMNS = range(10)


def frame(obj: Any) -> bytes:
    """Section 2: a 4-byte big-endian length, then one CBOR item."""
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


def raw(payload: bytes) -> bytes:
    """A frame around bytes that need not be valid CBOR."""
    return struct.pack(">I", len(payload)) + payload


def hello(name: str = "raw", proteins: dict[str, str] | None = None, **options: Any) -> bytes:
    """Section 4.1: ``[0, version, name, proteins, options]``."""
    opts = {"max_frame_size": 16 * 1024 * 1024, "credit_calls": 0, "credit_bytes": 0}
    opts.update(options)
    return frame([HELLO, 1, name, proteins or {}, opts])


def answers(item: Any) -> dict[int, tuple[int, Any]]:
    """Final answers in a frame (section 16.8, step 4): call id -> (kind, body or code).

    Replies, errors with an id and columns items of replies (their ids a plain
    array or an RFC 8746 uint64 little-endian typed array, tag 71).
    """
    out: dict[int, tuple[int, Any]] = {}
    for sub in item[1] if item[0] == BATCH else [item]:
        if sub[0] == REPLY:
            out[sub[1]] = (REPLY, sub[2])
        elif sub[0] == ERROR and sub[1] is not None:
            out[sub[1]] = (ERROR, sub[2])
        elif sub[0] == COLUMNS and sub[1] == REPLY:
            ids = sub[4]
            if isinstance(ids, cbor2.CBORTag):
                ids = [int.from_bytes(ids.value[i : i + 8], "little")
                       for i in range(0, len(ids.value), 8)]
            for i, call_id in enumerate(ids):
                out[call_id] = (REPLY, i)
    return out


class RawConnection:
    """One client connection driven by hand: bytes and descriptors out, frames in."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self._buf = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, path: str) -> RawConnection:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(path)
        return cls(sock)

    async def send(self, data: bytes, fds: list[int] | None = None) -> None:
        """Send ``data`` (descriptors on its first byte, section 13); ignores a closed peer."""
        try:
            if fds:
                sent = await self.sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
            else:
                sent = await self.sock.send(data)
            while sent < len(data):
                sent += await self.sock.send(data[sent:])
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True

    async def _fill(self, want: int) -> bool:
        while len(self._buf) < want:
            try:
                chunk = await self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self._buf += chunk
        return True

    async def recv(self) -> Any:
        """The next frame's item, or None at end of stream."""
        if not await self._fill(4):
            return None
        (length,) = struct.unpack(">I", self._buf[:4])
        if not await self._fill(4 + length):
            return None
        payload = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        return cbor2.loads(payload)

    async def open(self, **options: Any) -> list[Any]:
        """Section 5.1: send our hello first, return the server's hello."""
        await self.send(hello(**options))
        reply = await self.recv()
        assert reply is not None and reply[0] == HELLO, reply
        return list(reply)

    async def until_closed(self) -> list[Any]:
        """Every frame up to end of stream (the server's last words)."""
        frames = []
        while (item := await self.recv()) is not None:
            frames.append(item)
        return frames

    async def error_code(self) -> int | None:
        """The code of the connection-level error frame the server sends before closing."""
        for item in await self.until_closed():
            if item[0] == ERROR and item[1] is None:
                return int(item[2])
        return None

    def close(self) -> None:
        self.sock.close()
