"""docs/protocol.md, word by word, against a real membrane: an independent client.

Each test quotes the rule it checks and drives the reference server with
``rawwire`` (struct + cbor2, no cellmesh.wire): sections 2 and 5.1 (the first
frame), 4.2 (duplicate call ids), 4.10 and 11.3 (columns).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from rawwire import (
    BATCH,
    CALL,
    COLUMNS,
    ERROR,
    HELLO,
    REPLY,
    RawConnection,
    answers,
    frame,
    hello,
    raw,
)

from cellmesh import ProteinRegistry, open_membrane, protein

REG = ProteinRegistry()


@protein("spec.Echo", registry=REG)
class Echo:
    n: int


@protein("spec.Wait", registry=REG)
class Wait:
    n: int


@protein("spec.Point", registry=REG)
class Point:
    x: int
    y: int


BAD_HANDSHAKE, VERSION_MISMATCH, MALFORMED_FRAME, DUPLICATE_CALL_ID = 4, 5, 1, 8
BAD_FIELDS = 22


class Server:
    """A membrane whose Wait handler suspends until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.waiting = 0

    async def handle(self, msg: object) -> object:
        if isinstance(msg, Wait):
            self.waiting += 1
            await self.release.wait()
        return msg


@asynccontextmanager
async def served(sockdir: Path, **options: Any) -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    async with open_membrane("spec", server.handle, socket_dir=sockdir, registry=REG,
                             **options):
        yield server, str(sockdir / "spec.sock")
        server.release.set()


async def first_frame_answer(path: str, data: bytes) -> list[Any]:
    """Send ``data`` as the very first bytes; return every frame up to end of stream."""
    conn = await RawConnection.connect(path)
    await conn.send(data)
    frames = await conn.until_closed()
    conn.close()
    return frames


# --------------------------------------------------------------------------
# 5.1 step 3: "The first frame it receives MUST be a hello frame of its own (not
# inside a batch); anything else is BAD_HANDSHAKE (4)." Step 4: the refusal is
# "an error frame with id null in place of its hello".

NOT_A_HELLO = {
    "not CBOR": raw(b"\xff"),
    "not an array": frame(5),
    "a call": frame([CALL, 1, ["spec.Echo", 1]]),
    "a hello inside a batch": frame([BATCH, [[HELLO, 1, "x", {}, {}]]]),
    "a hello of the wrong shape": frame([HELLO, 1, "x", {}]),
    "a hello with a bad option": frame([HELLO, 1, "x", {}, {"max_frame_size": 12}]),
    "an empty frame": raw(b""),
    "a budget bomb": raw(b"\x9a\x00\x00\xff\xf0" + b"\x80" * 65520),
}


@pytest.mark.parametrize("what", sorted(NOT_A_HELLO))
async def test_spec_5_1_a_first_frame_that_is_not_a_hello_is_bad_handshake(
    sockdir: Path, what: str
) -> None:
    async with served(sockdir) as (_, path):
        frames = await first_frame_answer(path, NOT_A_HELLO[what])
    assert len(frames) == 1, frames  # the error frame, in place of the hello, then EOF
    (error,) = frames
    assert error[0] == ERROR and error[1] is None and error[2] == BAD_HANDSHAKE


async def test_spec_5_1_a_hello_of_another_version_is_version_mismatch(sockdir: Path) -> None:
    async with served(sockdir) as (_, path):
        frames = await first_frame_answer(path, frame([HELLO, 2, "x", {}, {}]))
    assert [f[:3] for f in frames] == [[ERROR, None, VERSION_MISMATCH]]


# 2: "The first frame of each direction ... may be up to MAX_HELLO_SIZE = 64 KiB
# = 65536 bytes whatever limit the receiver announces, and no larger."


async def test_spec_2_a_first_frame_over_64_KiB_is_refused_from_its_header(sockdir: Path) -> None:
    async with served(sockdir) as (_, path):
        frames = await first_frame_answer(path, (65537).to_bytes(4, "big"))
    assert [f[:3] for f in frames] == [[ERROR, None, BAD_HANDSHAKE]]
    assert "65536" in frames[0][4]


async def test_spec_2_a_hello_of_exactly_64_KiB_is_accepted(sockdir: Path) -> None:
    base = len(hello(padding=""))
    padded = hello(padding="x" * (65536 + 4 - base - 2))  # a 2-byte text length head
    assert len(padded) == 65536 + 4
    async with served(sockdir, max_frame_size=4096) as (_, path):
        conn = await RawConnection.connect(path)
        await conn.send(padded)
        reply = await conn.recv()
        conn.close()
    assert reply[0] == HELLO


# 5.1 step 8: "A second hello on a connection is a protocol error that closes the
# connection: BAD_HANDSHAKE (4) as a frame of its own, MALFORMED_FRAME (1) inside a
# batch."


@pytest.mark.parametrize("second, code", [
    (frame([HELLO, 1, "again", {}, {}]), BAD_HANDSHAKE),
    (frame([BATCH, [[HELLO, 1, "again", {}, {}]]]), MALFORMED_FRAME),
])
async def test_spec_5_1_a_second_hello_closes_the_connection(
    sockdir: Path, second: bytes, code: int
) -> None:
    async with served(sockdir) as (_, path):
        conn = await RawConnection.connect(path)
        await conn.open()
        await conn.send(second)
        assert await conn.error_code() == code


# --------------------------------------------------------------------------
# 4.2: "id ... MUST be unique among the calls of this connection"; 14: a call
# reusing an id still in flight is DUPLICATE_CALL_ID (8), connection-level,
# whether that call is suspended, waiting for a handler slot, or answered but
# its answer not yet sent.


def echo(call_id: int, n: int = 1) -> list[Any]:
    return [CALL, call_id, ["spec.Echo", n]]


def wait(call_id: int) -> list[Any]:
    return [CALL, call_id, ["spec.Wait", call_id]]


async def opened(path: str) -> RawConnection:
    conn = await RawConnection.connect(path)
    await conn.open()
    return conn


async def test_spec_4_2_reusing_the_id_of_a_suspended_call_is_duplicate_call_id(
    sockdir: Path,
) -> None:
    async with served(sockdir) as (server, path):
        conn = await opened(path)
        await conn.send(frame(wait(5)))
        while server.waiting < 1:
            await trio.sleep(0.01)
        await conn.send(frame(echo(5)))  # answered inline: still refused
        frames = await conn.until_closed()
    assert [f[:3] for f in frames] == [[ERROR, None, DUPLICATE_CALL_ID]]


@pytest.mark.parametrize("how", ["one batch", "two frames in one write", "columns"])
async def test_spec_4_2_reusing_an_id_answered_inline_in_the_same_read_is_refused(
    sockdir: Path, how: str
) -> None:
    """The first call is answered inline before the second is read: still refused,
    never two answers for one id."""
    if how == "one batch":
        data = frame([BATCH, [echo(5, 1), echo(5, 2)]])
    elif how == "two frames in one write":
        data = frame(echo(5, 1)) + frame(echo(5, 2))
    else:
        data = frame(echo(5, 1)) + frame([COLUMNS, CALL, 2, "spec.Echo", [6, 5], [[1, 2]]])
    async with served(sockdir) as (_, path):
        conn = await opened(path)
        await conn.send(data)
        frames = await conn.until_closed()
    assert not any(answers(f) for f in frames), frames  # not even one answer for id 5
    assert [f[:3] for f in frames] == [[ERROR, None, DUPLICATE_CALL_ID]]


async def test_spec_4_2_reusing_the_id_of_a_call_waiting_for_a_slot_is_refused(
    sockdir: Path,
) -> None:
    async with served(sockdir, max_concurrency=1) as (server, path):
        conn = await opened(path)
        await conn.send(frame(wait(1)) + frame(wait(2)))  # 2 waits for the slot
        while server.waiting < 1:
            await trio.sleep(0.01)
        await conn.send(frame(echo(2)))
        frames = await conn.until_closed()
    assert [f[:3] for f in frames] == [[ERROR, None, DUPLICATE_CALL_ID]]


async def test_spec_4_2_ids_in_any_order_are_fine_while_they_are_distinct(sockdir: Path) -> None:
    async with served(sockdir) as (_, path):
        conn = await opened(path)
        await conn.send(frame([BATCH, [echo(9), echo(3), echo(7), echo(1)]]))
        answered: dict[int, tuple[int, Any]] = {}
        while len(answered) < 4:
            item = await conn.recv()
            assert item is not None and item[0] != ERROR, item
            answered.update(answers(item))
        conn.close()
    assert set(answered) == {1, 3, 7, 9}
    assert {kind for kind, _ in answered.values()} == {REPLY}


# --------------------------------------------------------------------------
# 4.10: "columns: an array holding one array per field ..., each exactly count
# long" -- a column of another length is MALFORMED_FRAME (1), connection-level.
# 11.3: "The number of columns MUST equal the number of fields ...; otherwise
# BAD_FIELDS (22) for every message of the item" -- call-level.


async def test_spec_4_10_a_column_of_the_wrong_length_is_malformed_frame(sockdir: Path) -> None:
    async with served(sockdir) as (_, path):
        conn = await opened(path)
        await conn.send(frame([COLUMNS, CALL, 2, "spec.Point", [1, 2], [[1, 2], [3]]]))
        assert await conn.error_code() == MALFORMED_FRAME


async def test_spec_11_3_a_wrong_number_of_columns_fails_every_call_with_bad_fields(
    sockdir: Path,
) -> None:
    async with served(sockdir) as (_, path):
        conn = await opened(path)
        await conn.send(frame([COLUMNS, CALL, 2, "spec.Point", [1, 2], [[1, 2]]]))
        errors: dict[int, tuple[int, Any]] = {}
        while len(errors) < 2:
            item = await conn.recv()
            assert item is not None, "the connection closed"
            errors.update(answers(item))
        assert errors == {1: (ERROR, BAD_FIELDS), 2: (ERROR, BAD_FIELDS)}
        await conn.send(frame(echo(3, 42)))  # the connection stays open
        item = await conn.recv()
        conn.close()
    assert item[:3] == [REPLY, 3, ["spec.Echo", 42]]


# 3: "arrays, maps and tags may not be map keys" (MALFORMED_FRAME).


async def test_spec_3_an_array_as_a_map_key_is_malformed_frame(sockdir: Path) -> None:
    async with served(sockdir) as (_, path):
        conn = await opened(path)
        await conn.send(raw(b"\x83\x01\x01\x82\x69spec.Echo\xa1\x81\x01\x02"))
        assert await conn.error_code() == MALFORMED_FRAME


def test_spec_rawwire_is_independent_of_the_reference_codec() -> None:
    import rawwire

    assert "cellmesh" not in rawwire.__dict__ and cbor2.dumps([1]) == b"\x81\x01"
