"""A caller's bad message fails that call alone, with a cellmesh error; a peer's bad
descriptor fails the connection, as docs/protocol.md says. Real sockets, one process.

* Text that cannot be encoded (a lone surrogate) raises :class:`FieldError`
  from every sending API, and a handler that returns such text fails only its
  own call.
* A message nested deeper than a frame may carry is refused locally
  (:class:`FieldError`), never sent to be refused by the cell at the cost of
  every call on the connection.
* A handler raising with a huge message gets an error frame of bounded size.
* A vesicle descriptor that is not sealed, or not of the size its reference
  says, is ``BAD_VESICLE``, connection-level (section 13).
* ``signal_many`` and ``fire`` in a scope already cancelled raise
  ``Cancelled`` and send nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cbor2
import pytest
import trio
from rawwire import CALL, RawConnection, frame

import cellmesh
from cellmesh import Synapse, open_membrane
from cellmesh.errors import ConfigError, ErrorCode, FieldError, RemoteCellError
from cellmesh.transport.membrane import membrane_options
from cellmesh.wire._cliptext import MAX_ERROR_TEXT, MAX_TRACEBACK_TEXT, clip_text
from cellmesh.wire._fields import MAX_BODY_NESTING
from cellmesh.wire.codec import VESICLE_TAG
from cellmesh.wire.proteins import ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("test.bad.Name", registry=REG)
class Name:
    text: str


@cellmesh.protein("test.bad.Names", registry=REG)
class Names:
    texts: list[str]


@cellmesh.protein("test.bad.Tree", registry=REG)
class Tree:
    children: list[Tree]


@cellmesh.protein("test.bad.Chain", registry=REG)
class Chain:
    next: Chain | None


@cellmesh.protein("test.bad.Ping", registry=REG)
class Ping:
    n: int


@cellmesh.protein("test.bad.Fail", registry=REG)
class Fail:
    size: int


@cellmesh.protein("test.bad.BadReply", registry=REG)
class BadReply:
    n: int


@cellmesh.protein("test.bad.Blob", registry=REG)
class Blob:
    data: bytes


class Cell:
    def __init__(self) -> None:
        self.seen: list[object] = []
        self.gate = trio.Event()

    async def handle(self, msg: object) -> object:
        self.seen.append(msg)
        if isinstance(msg, Fail):
            raise RuntimeError("x" * msg.size)  # noqa: TRY004 (a handler's failure)
        if isinstance(msg, BadReply):
            return Name("\udc80")
        if isinstance(msg, Ping) and msg.n < 0:
            await self.gate.wait()
        if isinstance(msg, Blob):
            return Ping(len(msg.data))
        return msg


@asynccontextmanager
async def served(sockdir: Path) -> AsyncIterator[tuple[Cell, Synapse]]:
    cell = Cell()
    async with open_membrane("bad", cell.handle, socket_dir=sockdir, registry=REG):
        async with Synapse.grow("bad", socket_dir=sockdir, registry=REG) as syn:
            yield cell, syn


def tree(levels: int) -> Tree:
    node = Tree([])
    for _ in range(levels - 1):
        node = Tree([node])
    return node


def chain(levels: int) -> Chain:
    node = Chain(None)
    for _ in range(levels - 1):
        node = Chain(node)
    return node


# --------------------------------------------------------------------------
# Text that cannot travel


async def test_a_lone_surrogate_is_a_field_error_from_every_sending_api(sockdir: Path) -> None:
    async with served(sockdir) as (cell, syn):
        bad = Name("ok \ud800")
        sends = {
            "fire": lambda: syn.fire(bad),
            "signal": lambda: syn.signal(bad),
            "fire_many": lambda: syn.fire_many([Name("a"), bad]),
            "signal_many": lambda: syn.signal_many([Name("a"), bad]),
            "fire nested": lambda: syn.fire(Names(["a", "\udfff"])),
            "fire_many nested": lambda: syn.fire_many([Names(["a"]), Names(["\udfff"])]),
        }
        named = {"fire", "signal", "fire_many", "signal_many", "fire nested"}
        for what, send in sends.items():
            with pytest.raises(FieldError) as info:
                await send()
            assert "cannot be encoded as UTF-8" in str(info.value), what
            if what in named:  # the field at fault is named
                field = "texts" if "nested" in what else "text"
                assert info.value.field == field, what
                assert f"field {field!r}" in str(info.value), what
        with pytest.raises(FieldError, match=r"test\.bad\.Name.*field 'text'"):
            syn.signal_nowait(bad)
        # Nothing was sent and the connection is fine.
        assert await syn.fire(Ping(1)) == Ping(1)
        assert not any(isinstance(m, (Name, Names)) for m in cell.seen)


async def test_a_reply_that_cannot_be_encoded_fails_its_call_only(sockdir: Path) -> None:
    async with served(sockdir) as (cell, syn):
        results: dict[str, object] = {}

        async def waiting() -> None:
            results["waiting"] = await syn.fire(Ping(-1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            while not cell.seen:
                await trio.sleep(0.001)
            with pytest.raises(RemoteCellError) as info:
                await syn.fire(BadReply(1))
            assert info.value.code == ErrorCode.BAD_REPLY
            assert "UTF-8" in info.value.remote_message
            cell.gate.set()
        assert results["waiting"] == Ping(-1)  # the call in flight beside it was answered
        assert await syn.fire(Ping(2)) == Ping(2)


# --------------------------------------------------------------------------
# Nesting


async def test_a_message_too_deep_for_a_frame_is_refused_by_the_sender(sockdir: Path) -> None:
    async with served(sockdir) as (cell, syn):
        # Tree(n): two levels (a list and a nested protein) per node below the
        # outer one, and the innermost node's empty list: 2n - 1 levels.
        deepest = (MAX_BODY_NESTING + 1) // 2
        assert await syn.fire(tree(deepest)) == tree(deepest)
        assert await syn.fire_many([tree(deepest)] * 3) == [tree(deepest)] * 3
        assert await syn.fire(chain(MAX_BODY_NESTING + 1)) == chain(MAX_BODY_NESTING + 1)
        results: dict[str, object] = {}

        async def waiting() -> None:
            results["waiting"] = await syn.fire(Ping(-1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            while not any(isinstance(m, Ping) for m in cell.seen):
                await trio.sleep(0.001)
            for send in (
                lambda: syn.fire(tree(deepest + 1)),
                lambda: syn.fire(chain(MAX_BODY_NESTING + 2)),
                lambda: syn.signal(chain(MAX_BODY_NESTING + 2)),
                lambda: syn.fire_many([Ping(3), tree(deepest + 1)]),
            ):
                with pytest.raises(FieldError, match="nested more than"):
                    await send()
            cell.gate.set()
        assert results["waiting"] == Ping(-1)  # the innocent call kept its connection
        assert await syn.fire(Ping(4)) == Ping(4)


# --------------------------------------------------------------------------
# Error frames


async def test_a_membrane_may_keep_its_tracebacks_to_itself(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane("quiet", cell.handle, socket_dir=sockdir, registry=REG,
                             send_tracebacks=False):
        async with Synapse.grow("quiet", socket_dir=sockdir, registry=REG) as syn:
            with pytest.raises(RemoteCellError) as info:
                await syn.fire(Fail(3))
    assert (info.value.type_name, info.value.remote_message) == ("RuntimeError", "xxx")
    assert info.value.remote_traceback is None
    with pytest.raises(ConfigError, match="send_tracebacks: must be True or False"):
        membrane_options({"send_tracebacks": "no"})


def test_clip_text_keeps_head_and_tail_within_the_limit() -> None:
    """The marker used to come on top of the limit (8,193 characters became 8,220)."""
    assert clip_text("abc", 3) == "abc"
    assert clip_text("a" * 50 + "b" * 50, 60) == (
        "a" * 15 + "\n[... 70 characters cut ...]\n" + "b" * 15  # 59 characters
    )
    for limit in (MAX_ERROR_TEXT, MAX_TRACEBACK_TEXT):
        for size in (limit, limit + 1, limit + 40, 100_000):
            text = "h" + "x" * (size - 2) + "t"
            clipped = clip_text(text, limit)
            assert len(clipped) <= limit, (limit, size)
            assert clipped.startswith("hxx") and clipped.endswith("xxt")
            assert (clipped == text) is (size <= limit)
    # Escapes count too: each lone surrogate takes six characters once escaped.
    escaped = clip_text("\udc80" * 2000, MAX_ERROR_TEXT)
    assert len(escaped) <= MAX_ERROR_TEXT and escaped.startswith("\\udc80\\udc80")
    assert escaped.endswith("\\udc80") and " characters cut ...]" in escaped
    assert clip_text("\udc80" * 10, 100) == "\\udc80" * 10
    from cellmesh.wire._cliptext import _cut_marker

    assert _cut_marker(1) == "\n[... 1 character cut ...]\n"  # (not "1 characters")


@pytest.mark.parametrize("size", [MAX_ERROR_TEXT + 1, 100_000, 4_000_000])
async def test_a_huge_handler_error_arrives_clipped(sockdir: Path, size: int) -> None:
    async with served(sockdir) as (_, syn):
        with pytest.raises(RemoteCellError) as info:
            await syn.fire(Fail(size))
        err = info.value
        assert err.type_name == "RuntimeError"
        assert len(err.remote_message) <= MAX_ERROR_TEXT  # docs/protocol.md 4.4
        assert "characters cut" in err.remote_message
        assert err.remote_traceback is not None
        assert len(err.remote_traceback) <= MAX_TRACEBACK_TEXT
        assert err.remote_traceback.rstrip().endswith("x")  # its tail: the exception line
        with pytest.raises(RemoteCellError) as small:
            await syn.fire(Fail(10))
        assert small.value.remote_message == "x" * 10  # short texts travel whole
        assert await syn.fire(Ping(5)) == Ping(5)


async def test_an_error_frame_too_large_for_the_client_says_so_plainly(
    sockdir: Path,
) -> None:
    """It read "a error frame of 24662 bytes ... send large bytes as a vesicle":
    no vesicle can carry an error frame."""
    cell = Cell()
    async with open_membrane("bad", cell.handle, socket_dir=sockdir, registry=REG):
        async with Synapse.grow(
            "bad", socket_dir=sockdir, registry=REG, max_frame_size=4096
        ) as syn:
            with pytest.raises(RemoteCellError) as info:
                await syn.fire(Fail(100_000))
            assert (info.value.code, info.value.type_name) == (
                ErrorCode.BAD_REPLY, "ReplyTooLarge"
            )
            message = info.value.remote_message
            assert message.startswith("an error frame (RuntimeError, code 30) of ")
            assert message.endswith(" bytes does not fit the peer's 4,096-byte frame limit")
            assert "vesicle" not in message
            assert await syn.fire(Ping(5)) == Ping(5)


# --------------------------------------------------------------------------
# Vesicle descriptors


def memfd(size: int, seals: int) -> int:
    fd = os.memfd_create("bad", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


ALL_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


@pytest.mark.parametrize(
    ("size", "seals"),
    [
        (4096, 0),  # not sealed
        (4096, ALL_SEALS & ~fcntl.F_SEAL_GROW),  # may still grow
        (100, ALL_SEALS),  # sealed, but not the size the reference says
    ],
    ids=["unsealed", "no-grow-seal", "wrong-size"],
)
async def test_a_bad_vesicle_descriptor_is_a_connection_error(
    sockdir: Path, size: int, seals: int
) -> None:
    async with served(sockdir) as (cell, syn):
        conn = await RawConnection.connect(str(sockdir / "bad.sock"))
        await conn.open()
        fd = memfd(size, seals)
        try:
            ref = cbor2.CBORTag(VESICLE_TAG, [0, 4096])
            await conn.send(frame([CALL, 1, ["test.bad.Blob", ref]]), [fd])
        finally:
            os.close(fd)
        assert await conn.error_code() == ErrorCode.BAD_VESICLE
        conn.close()
        assert not any(isinstance(m, Blob) for m in cell.seen)
        assert await syn.fire(Ping(6)) == Ping(6)  # other connections are served


# --------------------------------------------------------------------------
# Cancellation before sending


async def test_sends_in_a_cancelled_scope_raise_cancelled_and_send_nothing(
    sockdir: Path,
) -> None:
    async with served(sockdir) as (cell, syn):
        assert await syn.fire(Ping(7)) == Ping(7)
        for send in (
            lambda: syn.signal_many([Ping(100), Ping(101)]),
            lambda: syn.signal(Ping(102)),
            lambda: syn.fire(Ping(103)),
            lambda: syn.fire_many([Ping(104), Ping(105)]),
        ):
            with trio.CancelScope() as scope:
                scope.cancel()
                await send()
                pytest.fail("a send in a cancelled scope returned")
        assert await syn.fire(Ping(8)) == Ping(8)  # after everything sent before it
        assert [m.n for m in cell.seen if isinstance(m, Ping)] == [7, 8]
