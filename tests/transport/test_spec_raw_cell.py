"""docs/protocol.md from the client's side: a real ``Synapse`` against a raw cell.

The cell here is a plain Unix socket speaking struct + cbor2 (no cellmesh.wire),
so it can break the protocol in ways the reference membrane never does. Rules
checked: section 5.3 ("on end of stream or a connection-level error, every
outstanding call fails locally": also when the error is a reply's bad vesicle,
section 13) and section 5.1 step 8 / section 6 (the client tells the cell what
it did wrong, in an id-null error frame, before it closes).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

import cellmesh
from cellmesh import CellUnavailable, ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("rawcell.Blob", registry=REG)
class Blob:
    data: bytes


ERROR, HELLO, REPLY = 3, 0, 2
MALFORMED_FRAME, UNKNOWN_FRAME_KIND, BAD_HANDSHAKE, BAD_VESICLE = 1, 3, 4, 7
CELL_HELLO = [HELLO, 1, "raw", {}, {"max_frame_size": 1 << 20, "credit_calls": 16,
                                    "credit_bytes": 1 << 20}]
VESICLE_TAG = 1667591276
F_ADD_SEALS, ALL_SEALS = 1033, 0xF


def frame(obj: Any) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


async def read_exactly(sock: trio.socket.SocketType, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


async def read_frame(sock: trio.socket.SocketType) -> Any:
    (n,) = struct.unpack(">I", await read_exactly(sock, 4))
    return cbor2.loads(await read_exactly(sock, n))


async def read_rest(sock: trio.socket.SocketType) -> list[Any]:
    """Every frame the client sends until it closes."""
    frames = []
    while True:
        try:
            frames.append(await read_frame(sock))
        except EOFError:
            return frames


Answer = Callable[[trio.socket.SocketType, int], Awaitable[None]]


async def run_cell(sockdir: Path, answer: Answer) -> tuple[BaseException, list[Any]]:
    """Serve one connection: hello, then ``answer(sock, call_id)`` to the first call.

    Returns what ``Synapse.fire`` raised and the frames the client sent after.
    """
    path = str(sockdir / "raw.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    sent: list[Any] = []
    raised: list[BaseException] = []

    async def cell() -> None:
        sock, _ = await listener.accept()
        with sock:
            await read_frame(sock)  # the client's hello
            await sock.send(frame(CELL_HELLO))
            call = await read_frame(sock)
            await answer(sock, call[1])
            sent.extend(await read_rest(sock))

    async def client() -> None:
        async with cellmesh.Synapse.grow("raw", socket_path=path, registry=REG) as syn:
            try:
                await syn.fire(Blob(b"x"))
            except Exception as exc:  # what the call ends with is the result
                raised.append(exc)

    with trio.fail_after(10), listener:  # a call that never ends fails here
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cell)
            nursery.start_soon(client)
    assert raised, "the call succeeded"
    return raised[0], sent


def memfd(content: bytes, *, sealed: bool) -> int:
    fd = os.memfd_create("v", os.MFD_ALLOW_SEALING)
    os.write(fd, content)
    if sealed:
        fcntl.fcntl(fd, F_ADD_SEALS, ALL_SEALS)
    return fd


@pytest.mark.parametrize("case", ["unsealed", "wrong size"])
async def test_spec_13_a_reply_with_a_bad_vesicle_fails_the_call_with_the_connection(
    sockdir: Path, case: str
) -> None:
    """The call used to hang forever: its reply was taken off the books before
    the vesicle check failed, so the connection's failure found no call."""

    async def answer(sock: trio.socket.SocketType, call_id: int) -> None:
        fd = memfd(b"12345", sealed=case != "unsealed")
        length = 9 if case == "wrong size" else 5
        data = frame([REPLY, call_id, ["rawcell.Blob", cbor2.CBORTag(VESICLE_TAG, [0, length])]])
        try:
            await sock.sendmsg([data[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             array.array("i", [fd]))])
            await sock.send(data[1:])
        finally:
            os.close(fd)

    raised, sent = await run_cell(sockdir, answer)
    assert isinstance(raised, CellUnavailable), raised
    assert "vesicle" in str(raised)
    assert [f[:4] for f in sent] == [[ERROR, None, BAD_VESICLE, "VesicleError"]]


@pytest.mark.parametrize("bad, code", [
    (frame(CELL_HELLO), BAD_HANDSHAKE),
    (frame([REPLY, 999, None]), MALFORMED_FRAME),
    (frame([12, 1]), UNKNOWN_FRAME_KIND),
], ids=["second hello", "reply for an unknown id", "unknown frame kind"])
async def test_spec_5_1_the_client_names_the_cells_violation_before_it_closes(
    sockdir: Path, bad: bytes, code: int
) -> None:
    """The error frame used to be queued and then dropped by the close."""

    async def answer(sock: trio.socket.SocketType, call_id: int) -> None:
        await sock.send(bad)

    raised, sent = await run_cell(sockdir, answer)
    assert isinstance(raised, CellUnavailable), raised
    assert len(sent) == 1 and sent[0][:3] == [ERROR, None, code], sent


HUGE = 2 ** (8 * 2000) - 1  # 4,817 decimal digits: more than Python will print


@pytest.mark.parametrize("bad, code, message", [
    ([HUGE], UNKNOWN_FRAME_KIND, "unknown frame kind an integer of 16,000 bits"),
    ([REPLY, HUGE, None], MALFORMED_FRAME,
     "reply id must be in 1..2**63-1, got an integer of 16,000 bits"),
], ids=["huge frame kind", "huge reply id"])
async def test_spec_4_a_huge_integer_from_the_cell_gets_its_code_and_a_clear_message(
    sockdir: Path, bad: list[Any], code: int, message: str
) -> None:
    """Section 4: an integer kind that is not a kind is UNKNOWN_FRAME_KIND (3). A
    bignum kind was MALFORMED_FRAME, and every bignum's message was Python's
    "Exceeds the limit (4300 digits) for integer string conversion"."""

    async def answer(sock: trio.socket.SocketType, call_id: int) -> None:
        await sock.send(frame(bad))

    raised, sent = await run_cell(sockdir, answer)
    assert isinstance(raised, CellUnavailable), raised
    assert message in str(raised)
    assert len(sent) == 1 and sent[0][:5] == [ERROR, None, code, sent[0][3], message], sent
