"""The state machine a replica's Raft node drives (pure: no Trio, no sockets): batches of ops
in log entries, exactly-once sessions, the leader's timestamps, snapshots, determinism."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh import CommandMeta, NondeterminismDetected
from cellmesh.actors._replica_entries import (
    ResultKind,
    address_op,
    check_op,
    close_session_op,
    command_op,
    decode_batch,
    decode_op,
    decode_results,
    encode_batch,
    open_session_op,
)
from cellmesh.actors._replica_machine import ReplicaMachine
from cellmesh.actors._replica_sessions import SessionLimits
from cellmesh.testing.bank import Bank, Deposit, Receipt, Transfer
from cellmesh.wire.proteins import PROTEINS, DecodeContext, EncodeContext


def body(msg: Any) -> bytes:
    return cbor2.dumps(PROTEINS.encode(msg, EncodeContext()))


def machine(cell: Any = None, **kw: Any) -> ReplicaMachine:
    return ReplicaMachine(
        cell if cell is not None else Bank(), registry=PROTEINS, limits=SessionLimits(), **kw
    )


def run(m: ReplicaMachine, index: int, ts: int, *ops: list[Any]) -> list[list[Any]]:
    return decode_results(m.apply_entry(index, encode_batch(ts, ops)), len(ops))


def reply(result: list[Any]) -> Any:
    assert result[0] == ResultKind.OK, result
    return PROTEINS.decode(result[1], DecodeContext())


def test_replicated_machine_applies_a_batch_in_order_with_index_and_timestamps() -> None:
    m = machine()
    results = run(
        m, 7, 1000,
        command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=5))),
        command_op(0, 0, 0, body(Transfer(id="t", src="a", dst="b", amount=2))),
    )
    first, second = (reply(r) for r in results)
    assert first == Receipt(ok=True, index=7, timestamp=1000)
    # Several commands share an entry (and its index); timestamps still increase.
    assert second == Receipt(ok=True, index=7, timestamp=1001)
    assert m.cell.balances == {"a": 3, "b": 2}


def test_replicated_machine_timestamps_never_go_back_across_leaders() -> None:
    m = machine()
    run(m, 1, 5000, command_op(0, 0, 0, body(Deposit(id="1", account="a", amount=1))))
    # A new leader with a clock behind the old one: clamped to previous + 1.
    late = run(m, 2, 10, command_op(0, 0, 0, body(Deposit(id="2", account="a", amount=1))))
    assert reply(late[0]).timestamp == 5001


def test_replicated_machine_applies_a_session_command_exactly_once() -> None:
    m = machine()
    (opened,) = run(m, 1, 1, open_session_op(0x5EED))
    assert opened[0] == ResultKind.SESSION
    sid = opened[1]
    op = command_op(sid, 1, 1, body(Deposit(id="d", account="a", amount=10)))
    (first,) = run(m, 2, 2, op)
    (again,) = run(m, 3, 3, op)  # a client's retry, committed a second time
    assert again == first
    assert m.cell.applied == {"d": 1} and m.cell.balances == {"a": 10}
    (unknown,) = run(m, 4, 4, command_op(sid + 1, 1, 1, body(Deposit(id="x", account="a",
                                                                      amount=1))))
    assert unknown == [ResultKind.NOT_APPLIED, "expired"]
    run(m, 5, 5, close_session_op(sid))
    (closed,) = run(m, 6, 6, op)
    assert closed == [ResultKind.NOT_APPLIED, "expired"]
    assert m.cell.applied == {"d": 1}


def test_replicated_machine_apply_errors_are_deterministic_results() -> None:
    m = machine()
    (raised,) = run(m, 1, 1, command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=-1))))
    assert raised == [ResultKind.RAISED, "ValueError", "a deposit must not be negative"]
    (garbage,) = run(m, 2, 2, command_op(0, 0, 0, b"\xff\xff"))
    assert garbage[:2] == [ResultKind.RAISED, "UndecodableCommand"]
    (query,) = run(m, 3, 3, command_op(0, 0, 0, body(Receipt(ok=True, index=1, timestamp=1))))
    assert query[:2] == [ResultKind.RAISED, "NotACommand"]


class ExitingBank(Bank):
    """Calls sys.exit() in apply: a careless user's way to refuse a command."""

    def apply(self, command: Any, meta: CommandMeta) -> Receipt:
        if command.amount == 13:
            sys.exit("unlucky")
        return super().apply(command, meta)


def test_replicated_machine_sys_exit_in_apply_is_a_result_not_a_crash() -> None:
    """It stopped every replica, and again at every restart (the entry stays in
    the log): a command could take the group down for good."""
    m = machine(ExitingBank())
    (raised,) = run(m, 1, 1, command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=13))))
    assert raised == [ResultKind.RAISED, "SystemExit", "unlucky"]
    (ok,) = run(m, 2, 2, command_op(0, 0, 0, body(Deposit(id="e", account="a", amount=1))))
    assert reply(ok).ok


def test_replicated_machine_snapshot_is_canonical_and_restores_everything() -> None:
    a, b = machine(), machine()
    book: list[str] = []
    b.on_address = lambda replica, path: book.append(f"{replica}={path}")
    sid = run(a, 1, 1, open_session_op(0x5EED))[0][1]
    run(a, 2, 2, command_op(sid, 1, 1, body(Deposit(id="d", account="z", amount=3))),
        command_op(0, 0, 0, body(Deposit(id="e", account="y", amount=4))),
        address_op(4, "/run/cell/peers/4.sock"))
    data = a.snapshot()
    b.restore(data)
    assert b.snapshot() == data
    assert book == ["4=/run/cell/peers/4.sock"]
    # The restored table still deduplicates the session's command.
    (dup,) = run(b, 3, 3, command_op(sid, 1, 1, body(Deposit(id="d", account="z", amount=3))))
    assert b.cell.applied == {"d": 1, "e": 1} and reply(dup).index == 2
    with pytest.raises(ValueError):
        b.restore(b"\x00garbage")


class ClockBank(Bank):
    """Reads the wall clock in apply: not deterministic."""

    def apply(self, command: Any, meta: CommandMeta) -> Receipt:
        super().apply(command, meta)
        return Receipt(ok=True, index=meta.index, timestamp=time.time_ns())


class RandomBank(Bank):
    """Draws a random number into its state in apply: not deterministic."""

    def apply(self, command: Any, meta: CommandMeta) -> Receipt:
        self.balances["luck"] = random.randrange(1 << 30)
        return super().apply(command, meta)


@pytest.mark.parametrize(("cls", "what"), [(ClockBank, "result"), (RandomBank, "state")])
def test_replicated_machine_determinism_check_catches_clocks_and_randomness(
    cls: type[Bank], what: str
) -> None:
    m = machine(cls(), check=True)
    with pytest.raises(NondeterminismDetected) as info:
        run(m, 1, 1, command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=1))))
    assert info.value.command == "Deposit" and info.value.what == what
    # Without the check the same code runs (and silently diverges across replicas).
    run(machine(cls()), 1, 1, command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=1))))


def test_replicated_machine_determinism_check_passes_a_deterministic_cell() -> None:
    m = machine(check=True)
    run(m, 1, 1, command_op(0, 0, 0, body(Deposit(id="d", account="a", amount=1))))
    assert m.commands_applied == 1


counters = st.integers(0, 2**63 - 1)
ops = st.one_of(
    st.builds(command_op, counters, counters, counters, st.binary(max_size=20)),
    st.builds(open_session_op, st.integers(1, 2**63 - 1)),
    st.just([1]),  # an open-session op of a log written before ids were drawn
    st.builds(close_session_op, counters),
    st.builds(address_op, st.integers(0, 100), st.text(max_size=10)),
)


@settings(max_examples=200, deadline=None)
@given(ts=st.integers(0, 2**63), batch=st.lists(ops, max_size=5))
def test_replicated_entries_round_trip(ts: int, batch: list[list[Any]]) -> None:
    decoded = decode_batch(encode_batch(ts, batch))
    assert decoded.timestamp == ts and list(decoded.ops) == batch


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=60))
def test_replicated_entries_garbage_raises_only_value_error(garbage: bytes) -> None:
    """Garbage in, only ValueError out (a forwarded op is checked with check_op)."""
    with contextlib.suppress(ValueError):
        decode_batch(garbage)
    with contextlib.suppress(ValueError):
        decode_op(garbage)
    with contextlib.suppress(ValueError):
        decode_results(garbage, 1)


def test_replicated_machine_session_ids_come_from_the_log_entry() -> None:
    """The proposing replica draws the id (unguessable) and the entry carries it, so
    every replica gives the same; a taken id is probed onward; an entry of an older
    log (no id) takes the counter, as before."""
    a, b = machine(), machine()
    ops = [open_session_op(2**63 - 1), open_session_op(2**63 - 1), [1], open_session_op(7)]
    ids = [r[1] for r in run(a, 1, 1, *ops)]
    assert ids == [2**63 - 1, 1, 2, 7]  # 2**63-1 taken: wraps to 1; [1]: the counter (1 taken)
    assert [r[1] for r in run(b, 1, 1, *ops)] == ids
    assert a.snapshot() == b.snapshot()
    for bad in ([1, 0], [1, 2**63], [1, "x"], [1, 1, 1]):
        with pytest.raises(ValueError):
            check_op(bad)


class Echoing(Bank):
    """Refuses a deposit with a message that echoes its id (as user code does)."""

    def apply(self, command: Any, meta: Any) -> Any:
        raise ValueError(f"refused: {command.id}")


def test_replicated_machine_keeps_a_raised_message_clipped() -> None:
    """The message an apply raised with is a result, kept in the session table on
    every replica: clipped to what an error frame carries, not the 512 KiB input it
    echoed (an audit's client made every replica run out of memory that way)."""
    m = machine(Echoing())
    sid = run(m, 1, 1, open_session_op(9))[0][1]
    (result,) = run(m, 2, 2, command_op(sid, 1, 1, body(Deposit(id="x" * 500_000,
                                                                  account="a", amount=1))))
    assert result[0] == ResultKind.RAISED and result[1] == "ValueError"
    assert 8000 < len(result[2]) <= 8192 and "characters cut" in result[2]
