"""Batches over real sockets: columnar runs, credit splits, bad replies, vesicles, bind."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import cellmesh
from cellmesh import Receptors, RemoteCellError, Synapse, open_membrane
from cellmesh.errors import ErrorCode
from cellmesh.wire import codec
from cellmesh.wire.batching import OutboundBatch
from cellmesh.wire.proteins import PROTEINS
from cellmesh.wire.vesicle import Vesicle


@cellmesh.protein("test.batch.Num")
class Num:
    i: int
    x: float
    tag: str | None


@cellmesh.protein("test.batch.Other")
class Other:
    words: list[str]


@cellmesh.protein("test.batch.Blob")
class Blob:
    data: bytes


@cellmesh.protein("test.batch.Len")
class Len:
    n: int


@cellmesh.protein("test.batch.Gate")
class Gate:
    key: str


def make_receptors(gates: dict[str, trio.Event] | None = None) -> Receptors:
    r = Receptors()

    async def num(msg: Num) -> Num:
        return Num(msg.i * 2, msg.x * 2, msg.tag)

    async def other(msg: Other) -> Other | Len:
        if msg.words == ["bad-reply"]:
            return "not a protein"  # type: ignore[return-value]
        if msg.words == ["none"]:
            return None  # type: ignore[return-value]
        return Other(list(reversed(msg.words)))

    async def blob(msg: Blob) -> Len:
        return Len(len(msg.data))

    async def gate(msg: Gate) -> Len:
        assert gates is not None
        await gates[msg.key].wait()
        return Len(len(msg.key))

    r.add(Num, num)
    r.add(Other, other)
    r.add(Blob, blob)
    r.add(Gate, gate)
    return r


def test_outbound_batch_uses_columns_for_runs() -> None:
    msgs: list[Any] = [Num(i, 0.5, None) for i in range(5)] + [Other(["a"])] + [
        Num(9, 1.0, "t") for _ in range(3)
    ]
    batch = OutboundBatch(PROTEINS, msgs, 1 << 16, Vesicle.from_bytes)
    items = batch.items(codec.Kind.CALL, 0, len(msgs), list(range(1, 10)))
    kinds = [item[0] for item in items]
    assert kinds == [codec.Kind.COLUMNS, codec.Kind.CALL, codec.Kind.COLUMNS]
    assert items[0][2] == 5 and items[2][2] == 3
    # A sub-range cuts runs: messages 3..6 are two Nums, the Other, one Num
    # (a run cut to one message is still a one-row columns item).
    cut = batch.items(codec.Kind.CALL, 3, 7, [13, 14, 15, 16])
    assert [item[0] for item in cut] == [codec.Kind.COLUMNS, codec.Kind.CALL, codec.Kind.COLUMNS]
    assert cut[0][2] == 2 and cut[0][4].value  # ids 13, 14 as a typed array
    assert cut[1][1] == 15 and cut[2][2] == 1


def test_outbound_batch_reports_bad_field_before_sending() -> None:
    msgs = [Num(1, 1.0, None), Num("x", 1.0, None)]  # type: ignore[arg-type]
    with pytest.raises(cellmesh.FieldError, match="'i'"):
        OutboundBatch(PROTEINS, msgs, 1 << 16, Vesicle.from_bytes)


async def test_mixed_runs_round_trip_in_order(sockdir: Path) -> None:
    msgs: list[Any] = []
    for k in range(50):
        msgs += [Num(k * 10 + j, j + 0.25, None if j % 2 else "t") for j in range(k % 4)]
        msgs.append(Other([str(k), "x"]))
    async with open_membrane("b", make_receptors(), socket_dir=sockdir):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            replies = await syn.fire_many(msgs)
    expected = [
        Num(m.i * 2, m.x * 2, m.tag) if isinstance(m, Num) else Other(list(reversed(m.words)))
        for m in msgs
    ]
    assert replies == expected


async def test_ints_widen_to_float_and_big_ints_survive(sockdir: Path) -> None:
    async with open_membrane("b", make_receptors(), socket_dir=sockdir):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            replies = await syn.fire_many([Num(2**62, 3, None), Num(-(2**62), 2, "n")])
            big = await syn.fire_many([Num(2**70, 1.5, None), Num(1, 1.5, None)])
    assert replies == [Num(2**63, 6.0, None), Num(-(2**63), 4.0, "n")]
    assert all(type(r.x) is float for r in replies)
    assert big == [Num(2**71, 3.0, None), Num(2, 3.0, None)]


async def test_runs_split_by_credit_keep_order(sockdir: Path) -> None:
    msgs = [Num(i, 1.0, None) for i in range(100)]
    async with open_membrane("b", make_receptors(), socket_dir=sockdir, credit_calls=7):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            replies = await syn.fire_many(msgs)
    assert [r.i for r in replies] == [2 * i for i in range(100)]


async def test_bad_reply_in_a_run_fails_only_that_call(sockdir: Path) -> None:
    async with open_membrane("b", make_receptors(), socket_dir=sockdir):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            with pytest.raises(RemoteCellError) as info:
                await syn.fire_many([Other(["a"]), Other(["bad-reply"]), Other(["b"])])
            assert info.value.code == ErrorCode.BAD_REPLY
            assert await syn.fire_many([Other(["a"]), Other(["none"])]) == [Other(["a"]), None]


async def test_vesicles_inside_a_batch(sockdir: Path) -> None:
    payloads = [bytes([i]) * (70_000 + i) for i in range(5)]
    async with open_membrane("b", make_receptors(), socket_dir=sockdir):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            await syn.fire(Blob(b"warm-up" * 20_000))
            gc.collect()
            before = set(os.listdir("/proc/self/fd"))
            replies = await syn.fire_many([Blob(p) for p in payloads] + [Blob(b"small")])
            gc.collect()
            assert set(os.listdir("/proc/self/fd")) - before == set()  # nothing leaked
    assert replies == [Len(len(p)) for p in payloads] + [Len(5)]


@cellmesh.protein("test.batch.Blobs")
class Blobs:
    parts: list[bytes]


async def test_a_batch_may_carry_more_vesicles_than_one_frame(sockdir: Path) -> None:
    # Each message holds 40 vesicles (within one frame's 64); together 120:
    # they travel one message per frame, and so do signals.
    got: list[int] = []
    receptors = Receptors()

    async def blobs(msg: Blobs) -> Len:
        got.append(len(msg.parts))
        return Len(sum(map(len, msg.parts)))

    receptors.add(Blobs, blobs)
    msgs = [Blobs([bytes([k]) * 70_000 for _ in range(40)]) for k in range(3)]
    async with open_membrane("b", receptors, socket_dir=sockdir):
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            await syn.fire(Blobs([b"warm-up" * 20_000]))
            gc.collect()
            before = set(os.listdir("/proc/self/fd"))
            assert await syn.fire_many(msgs) == [Len(40 * 70_000)] * 3
            await syn.signal_many(msgs[:2])
            with pytest.raises(cellmesh.FieldError, match="more than 64 vesicles"):
                await syn.fire_many([msgs[0], Blobs([b"v" * 70_000] * 65)])
            await syn.fire(Blobs([]))
            gc.collect()
            assert set(os.listdir("/proc/self/fd")) - before == set()  # nothing leaked
    assert got == [1, 40, 40, 40, 40, 40, 0]


def test_a_message_over_the_vesicle_limit_is_a_field_error_naming_it() -> None:
    made: list[Any] = []

    def make(data: Any) -> Any:
        made.append(Vesicle.from_bytes(data))
        return made[-1]

    ok = Blobs([b"v" * 70_000] * 40)
    with pytest.raises(cellmesh.FieldError, match=r"test\.batch\.Blobs.*more than 64 vesicles"):
        OutboundBatch(PROTEINS, [ok, Blobs([b"v" * 70_000] * 65)], 1 << 16, make)
    assert made and all("closed" in repr(v) for v in made)  # what was made is closed


async def test_cancelled_fire_many_cancels_every_call(sockdir: Path) -> None:
    gates = {k: trio.Event() for k in ("a", "b", "c")}
    async with open_membrane("b", make_receptors(gates), socket_dir=sockdir) as membrane:
        async with Synapse.grow("b", socket_dir=sockdir) as syn:
            with trio.move_on_after(0.05) as scope:
                await syn.fire_many([Gate("a"), Gate("b"), Gate("c")])
            assert scope.cancelled_caught
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert membrane.stats.cancelled == 3
            assert syn._conn is not None and not syn._conn.pending
            assert await syn.fire(Num(1, 1.0, None)) == Num(2, 2.0, None)


async def test_membrane_bind_serves_until_cancelled(sockdir: Path) -> None:
    async with trio.open_nursery() as nursery:
        membrane = await nursery.start(
            lambda task_status: cellmesh.Membrane.bind(
                "bound", make_receptors(), socket_dir=sockdir, task_status=task_status
            )
        )
        assert membrane.socket_path == sockdir / "bound.sock"
        async with Synapse.grow("bound", socket_dir=sockdir) as syn:
            assert await syn.fire(Num(1, 0.5, None)) == Num(2, 1.0, None)
        nursery.cancel_scope.cancel()
    assert not (sockdir / "bound.sock").exists()
