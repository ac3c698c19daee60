"""Regressions: each test pins a bug the wire test suite once found (see its name)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import cbor2
import pytest
import trio
import trio.testing
from rawwire import RawConnection, frame, hello

from cellmesh import ProteinRegistry, RemoteCellError, Synapse, open_membrane, protein
from cellmesh.errors import ErrorCode, HandshakeError, LocalProtocolError
from cellmesh.wire.codec import MAX_ID, Hello, frame_bytes

REG = ProteinRegistry()


@protein("reg.Job", registry=REG)
class Job:
    block: bool


@protein("reg.Num", registry=REG)
class Num:
    i: int


@protein("reg.Text", registry=REG)
class Text:
    s: str


async def handler(msg: object) -> object:
    if isinstance(msg, Job):
        if msg.block:
            await trio.sleep_forever()
        await trio.sleep(0)  # suspends: goes through the owner path
        return None
    return msg


async def test_queued_call_runs_after_the_owner_is_cancelled(sockdir: Path) -> None:
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG, max_concurrency=1):
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            async with trio.open_nursery() as nursery:
                blocker = trio.CancelScope()

                async def block() -> None:
                    with blocker:
                        await syn.fire(Job(True))

                nursery.start_soon(block)
                await trio.testing.wait_all_tasks_blocked(0.05)
                answered: list[object] = []

                async def queued() -> None:
                    answered.append(await syn.fire(Job(False)))  # waits for the slot

                nursery.start_soon(queued)
                await trio.testing.wait_all_tasks_blocked(0.05)
                blocker.cancel()  # the owner is cancelled; the queued call must run
            assert answered == [None]


async def test_byte_credit_is_counted_like_the_server_counts_it(sockdir: Path) -> None:
    async with open_membrane(
        "r", handler, socket_dir=sockdir, registry=REG, credit_bytes=64, credit_calls=4
    ):
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            with trio.fail_after(10):
                for i in range(200):
                    assert await syn.fire(Num(i)) == Num(i)
                assert await syn.fire_many([Num(i) for i in range(50)]) == [
                    Num(i) for i in range(50)
                ]


async def test_credit_of_one_call_does_not_deadlock(sockdir: Path) -> None:
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG, credit_calls=1):
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            with trio.fail_after(10):
                for i in range(20):
                    assert await syn.fire(Num(i)) == Num(i)
                await syn.signal_many([Num(i) for i in range(20)])
                assert len(await syn.fire_many([Num(i) for i in range(20)])) == 20


async def test_batches_larger_than_a_frame_are_split_and_credited(sockdir: Path) -> None:
    async with open_membrane(
        "r", handler, socket_dir=sockdir, registry=REG, max_frame_size=4096
    ) as membrane:
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            mixed: list[object] = []
            for i in range(300):
                mixed.append(Num(i) if i % 3 else Text("x" * 40))
            assert await syn.fire_many(mixed) == mixed  # replies split too
            assert await syn.fire_many([Num(i) for i in range(2000)]) == [
                Num(i) for i in range(2000)
            ]
            await syn.signal_many([Text("y" * 50) for _ in range(500)])
    assert membrane.stats.protocol_errors == 0


async def test_oversized_single_call_fails_locally(sockdir: Path) -> None:
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG, max_frame_size=4096):
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            with pytest.raises(LocalProtocolError) as info:
                await syn.fire(Text("x" * 10_000))
            assert info.value.code == ErrorCode.FRAME_TOO_LARGE
            assert await syn.fire(Num(1)) == Num(1)  # the connection survived


def largest_text(limit: int) -> str:
    """The longest ``Text`` field whose call, framed alone with the largest id
    (``[1, 2**63-1, body]``), is exactly ``limit`` bytes."""
    n = limit
    while len(cbor2.dumps([1, MAX_ID, ["reg.Text", "x" * n]])) > limit:
        n -= 1
    return "x" * n


async def test_a_call_that_fits_the_peers_frame_limit_is_sent(sockdir: Path) -> None:
    """The client kept about 64 bytes plus 11 per field back for an envelope, so it
    refused calls of up to ~90 bytes below the limit that fit; only a call that
    cannot fit alone is refused, and the error names the real sizes."""
    async with open_membrane(
        "r", handler, socket_dir=sockdir, registry=REG, max_frame_size=4096
    ) as membrane:
        async with Synapse.grow("r", socket_dir=sockdir, registry=REG) as syn:
            text = largest_text(4096)
            with trio.fail_after(10):
                assert await syn.fire(Text(text)) == Text(text)  # was LocalProtocolError
                await syn.signal(Text(text))
                with pytest.raises(LocalProtocolError) as info:
                    await syn.fire(Text(text + "x"))
                assert info.value.code == ErrorCode.FRAME_TOO_LARGE
                assert str(info.value) == (
                    "a Text message (reg.Text) of 4,097 bytes does not fit the peer's "
                    "4,096-byte frame limit (only bytes fields can travel outside a "
                    "frame, as vesicles)"
                )
                # Calls queued in one pass become a columns item too large for a
                # frame: split down to rows, each travels as its plain call.
                got: list[object] = []

                async def call() -> None:
                    got.append(await syn.fire(Text(text)))

                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(call)
                assert got == [Text(text)] * 3
                assert await syn.fire_many([Text(text)] * 3) == [Text(text)] * 3
                assert await syn.fire(Num(1)) == Num(1)
    assert membrane.stats.protocol_errors == 0


async def test_descriptors_no_frame_references_close_the_connection(sockdir: Path) -> None:
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG) as membrane:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(sockdir / "r.sock"))
        read_end, write_end = os.pipe()
        try:
            hello = Hello(version=1, name="stray", proteins=REG.fingerprints())
            sock.sendall(frame_bytes(hello.to_wire()))
            before = len(os.listdir("/proc/self/fd"))
            for i in range(1, 50):
                try:
                    socket.send_fds(sock, [frame_bytes([1, i, ["reg.Num", 1]])], [read_end] * 10)
                except OSError:
                    break  # the membrane already closed the connection
            with trio.fail_after(5):
                while membrane.stats.protocol_errors == 0:
                    await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert len(os.listdir("/proc/self/fd")) <= before
        finally:
            sock.close()
            os.close(read_end)
            os.close(write_end)


async def test_large_hello_fits_whatever_the_frame_limit(sockdir: Path) -> None:
    big = ProteinRegistry()
    for i in range(150):
        cls = type(f"P{i}", (), {"__annotations__": {"v": int}})
        protein(f"reg.big.P{i:03d}", registry=big)(cls)

    @protein("reg.Num", registry=big)
    class Num2:
        i: int

    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG, max_frame_size=4096):
        async with Synapse.grow("r", socket_dir=sockdir, registry=big) as syn:
            assert await syn.fire(Num2(5)) == Num2(5)


async def test_refused_handshake_is_reported_by_grow(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cellmesh.transport._client_conn  # where the synapse builds its hello

    monkeypatch.setattr(cellmesh.transport._client_conn, "PROTOCOL_VERSION", 99)
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG):
        with pytest.raises(HandshakeError) as info:
            async with Synapse.grow("r", socket_dir=sockdir, registry=REG):
                pass
        assert info.value.code == ErrorCode.VERSION_MISMATCH
        assert "99" in str(info.value)


@protein("reg.Fat", registry=REG)
class Fat:
    data: bytes
    text: str


async def fat_handler(msg: object) -> object:
    return Fat(b"v" * 100_000, "t" * 10_000)  # the bytes go as a vesicle, the text cannot


async def test_too_large_reply_with_a_vesicle_fails_that_call(sockdir: Path) -> None:
    async with open_membrane("r", fat_handler, socket_dir=sockdir, registry=REG):
        async with Synapse.grow(
            "r", socket_dir=sockdir, registry=REG, max_frame_size=4096
        ) as syn:
            with trio.fail_after(10), pytest.raises(RemoteCellError) as info:
                await syn.fire(Num(1))
            assert info.value.code == ErrorCode.BAD_REPLY
            assert info.value.type_name == "ReplyTooLarge"


async def test_duplicate_id_of_a_call_in_progress_closes_the_connection(sockdir: Path) -> None:
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG) as membrane:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(sockdir / "r.sock"))
        try:
            hello = Hello(version=1, name="dup", proteins=REG.fingerprints())
            sock.sendall(frame_bytes(hello.to_wire()))
            sock.sendall(frame_bytes([1, 7, ["reg.Job", True]]))  # suspends forever
            sock.sendall(frame_bytes([1, 7, ["reg.Job", True]]))  # same id, still running
            with trio.fail_after(5):
                while membrane.stats.protocol_errors == 0:
                    await trio.sleep(0.01)
        finally:
            sock.close()


async def test_a_client_defining_a_protein_with_an_undefined_field_type_is_told_which(
    sockdir: Path,
) -> None:
    """A hello carries every protein's fingerprint, so a protein whose field names
    something never defined fails the handshake: with the protein and the name, not
    a bare NameError from deep inside typing."""
    broken = ProteinRegistry()
    dangling = type("Dangling", (), {"__annotations__": {"x": "NoSuchType"}})
    protein("reg.Dangling", registry=broken)(dangling)
    async with open_membrane("d", handler, socket_dir=sockdir, registry=REG):
        with pytest.raises(NameError) as info:
            async with Synapse.grow("d", socket_dir=sockdir, registry=broken):
                raise AssertionError("the handshake must fail")
    assert str(info.value) == (
        "protein reg.Dangling (test_regressions.Dangling): a field's type does not "
        "resolve: name 'NoSuchType' is not defined"
    )


HUGE = 2 ** (8 * 2000) - 1  # 4,817 decimal digits: more than Python will print


@pytest.mark.parametrize(("item", "code", "message"), [
    ([HUGE], ErrorCode.UNKNOWN_FRAME_KIND, "unknown frame kind an integer of 16,000 bits"),
    ([1, HUGE, ["reg.Num", 1]], ErrorCode.MALFORMED_FRAME,
     "call id must be in 1..2**63-1, got an integer of 16,000 bits"),
    ([5, HUGE], ErrorCode.MALFORMED_FRAME,
     "cancel id must be in 1..2**63-1, got an integer of 16,000 bits"),
    ([9, 1, HUGE, "reg.Num", [1], [[1]]], ErrorCode.MALFORMED_FRAME,
     "a columns frame count must be positive, at most 2**63-1, got an integer of 16,000 bits"),
    ([0, HUGE, "raw", {}, {}], ErrorCode.BAD_HANDSHAKE,
     "hello version must be an integer in 0..2**63-1, got an integer of 16,000 bits"),
], ids=["frame kind", "call id", "cancel id", "columns count", "hello version"])
async def test_a_huge_integer_from_a_client_gets_its_code_and_a_clear_message(
    sockdir: Path, item: list[object], code: int, message: str
) -> None:
    """A bignum kind was MALFORMED_FRAME (1), not UNKNOWN_FRAME_KIND (3), and every
    bignum's message was Python's "Exceeds the limit (4300 digits) for integer
    string conversion": formatting it into the message raised."""
    async with open_membrane("r", handler, socket_dir=sockdir, registry=REG):
        conn = await RawConnection.connect(str(sockdir / "r.sock"))
        try:
            with trio.fail_after(10):
                if item[0] != 0:  # (a hello is the first frame)
                    await conn.send(hello(proteins=REG.fingerprints()))
                    assert (await conn.recv())[0] == 0
                await conn.send(frame(item))
                frames = await conn.until_closed()
        finally:
            conn.close()
    errors = [f for f in frames if f[0] == 3 and f[1] is None]
    assert [e[2] for e in errors] == [code], frames
    assert errors[0][4] == message
