"""Regressions: each test pins a bug the wire test suite once found (see its name)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from cellmesh import ProteinRegistry, RemoteCellError, Synapse, open_membrane, protein
from cellmesh.errors import ErrorCode, HandshakeError, LocalProtocolError
from cellmesh.wire.codec import Hello, frame_bytes

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
