"""Cells the mesh attack tests run (this file is their DNA: copied into the cache, sandboxed).

``Attacker`` mounts the issue's wire attacks from inside a cell, on a raw
socket written from docs/protocol.md (no cellmesh.wire): against a neighbour
it may call, or against its own umbilical to the root (target ``mitosis``).
The tests import this file too, for the proteins.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import time
from typing import Any, Final

import cbor2

import cellmesh

MIB: Final = 1024 * 1024


@cellmesh.protein("t.wire.Echo")
class Echo:
    n: int


@cellmesh.protein("t.wire.Attack")
class Attack:
    """Mount attack ``kind`` on ``target`` (a cell name, or ``mitosis``), ``count`` times."""

    target: str
    kind: str
    count: int


@cellmesh.protein("t.wire.Outcome")
class Outcome:
    """What the attack met: the connection-level error codes received (0: closed
    without one), how many frames or connections it got through, the last failure."""

    codes: list[int]
    sent: int
    error: str


class Echoer(cellmesh.Cell):
    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return Echo(msg.n)


# -------------------------------------------------------------- the raw wire


def _frame(obj: Any) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


_HELLO: Final = _frame([0, 1, "attacker", {}, {"max_frame_size": 16 * MIB}])


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _recv_frame(sock: socket.socket) -> Any:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    payload = _recv_exact(sock, struct.unpack(">I", head)[0])
    return None if payload is None else cbor2.loads(payload)


def _last_error(sock: socket.socket) -> int:
    """Read to end of stream; the code of the connection-level error seen (0: none)."""
    code = 0
    while (item := _recv_frame(sock)) is not None:
        if item[0] == 3 and item[1] is None:
            code = item[2]
    return code


def _connect(path: str, *, hello: bool = True, patient: bool = True) -> socket.socket:
    """A connection that said hello; a refusal raises ConnectionRefusedError(code).

    ``patient``: a refusal for too many connections is retried for a few
    seconds (connections we just closed may not be reaped yet).
    """
    for _ in range(100 if patient else 1):
        try:
            return _connect_once(path, hello=hello)
        except ConnectionRefusedError as exc:
            if exc.args[0] != 9 or not patient:
                raise
            time.sleep(0.05)
    return _connect_once(path, hello=hello)


def _connect_once(path: str, *, hello: bool) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    if hello:
        # A full membrane refuses and closes before reading: its refusal is still here.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_HELLO)
        reply = _recv_frame(sock)
        if reply is None or reply[0] != 0:
            code = reply[2] if reply is not None and reply[0] == 3 else 0
            sock.close()
            raise ConnectionRefusedError(code)
    return sock


def _send(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> bool:
    try:
        if fds:
            sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            sock.sendall(data)
    except OSError:
        return False
    return True


def _empty_arrays(count: int) -> bytes:
    payload = b"\x9a" + count.to_bytes(4, "big") + b"\x80" * count
    return struct.pack(">I", len(payload)) + payload


def bomb(path: str, count: int, size: int) -> Outcome:
    """``count`` connections, each sending one frame of ``size`` bytes of empty arrays."""
    codes = []
    for _ in range(count):
        sock = _connect(path)
        _send(sock, _empty_arrays(size - 5))
        codes.append(_last_error(sock))
        sock.close()
    return Outcome(codes=codes, sent=count, error="")


def header_bomb(path: str) -> Outcome:
    """A first frame announcing 16 MiB: refused from its header."""
    sock = _connect(path, hello=False)
    _send(sock, (16 * MIB).to_bytes(4, "big"))
    code = _last_error(sock)
    sock.close()
    return Outcome(codes=[code], sent=1, error="")


def hoard_fds(path: str, chunks: int) -> Outcome:
    """The issue's attack: 64 descriptors per chunk behind a frame that never completes."""
    sock = _connect(path)
    null = os.open(os.devnull, os.O_RDONLY)
    sent = 0
    try:
        if _send(sock, (1000).to_bytes(4, "big") + b"\x83", [null] * 64):
            sent = 1
            for _ in range(chunks):
                if not _send(sock, b"\x01", [null] * 64):
                    break
                sent += 1
        code = _last_error(sock)
    finally:
        os.close(null)
        sock.close()
    return Outcome(codes=[code], sent=sent * 64, error="")


def never_read(path: str, calls: int, body: list[Any]) -> Outcome:
    """Send calls and never read a reply: how many went out before we were cut off."""
    sock = _connect(path)
    sock.settimeout(5)  # a send that blocks this long: the peer stopped reading us
    sent = 0
    for call_id in range(1, calls + 1):
        if not _send(sock, _frame([1, call_id, body])):
            break
        sent += 1
    sock.close()
    return Outcome(codes=[], sent=sent, error="")


class Attacker(Echoer):
    """A hostile cell: mounts wire attacks on request (see the module doc)."""

    async def on_start(self) -> None:
        self.held: list[socket.socket] = []

    def _path(self, target: str) -> str:
        if target == "mitosis":
            return os.environ["CELL_UMBILICAL"]
        return os.path.join(os.environ["CELL_SOCKET_DIR"], f"{target}.sock")

    @cellmesh.receptor
    async def attack(self, msg: Attack) -> Outcome:
        import trio

        path = self._path(msg.target)
        kind, count = msg.kind, msg.count
        if kind == "hold":
            return await trio.to_thread.run_sync(self._hold, path, count)
        if kind == "release":
            for sock in self.held:
                sock.close()
            released, self.held = len(self.held), []
            return Outcome(codes=[], sent=released, error="")
        if kind == "bomb":
            size = 16 * MIB if msg.target != "mitosis" else MIB
            return await trio.to_thread.run_sync(bomb, path, count, size)
        if kind == "header":
            return await trio.to_thread.run_sync(header_bomb, path)
        if kind == "fds":
            return await trio.to_thread.run_sync(hoard_fds, path, count)
        if kind == "noread":
            body = (["cellmesh.ctl.Demonitor", 1] if msg.target == "mitosis"
                    else ["t.wire.Echo", 1])
            return await trio.to_thread.run_sync(never_read, path, count, body)
        raise ValueError(f"no attack {kind!r}")

    def _hold(self, path: str, count: int) -> Outcome:
        """Open ``count`` connections (after a hello each) and keep them open."""
        codes = []
        for _ in range(count):
            try:
                self.held.append(_connect(path, patient=False))
            except ConnectionRefusedError as exc:
                codes.append(int(exc.args[0]))
            except OSError as exc:
                return Outcome(codes=codes, sent=len(self.held), error=str(exc))
        return Outcome(codes=codes, sent=len(self.held), error="")
