"""The replicated deduplication table (Raft dissertation 6.3), one test per rule of the
session table in docs/replicated.md. Pure: no Trio, no clock."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.actors._replica_sessions import SessionLimits, SessionTable, Verdict

SEC = 10**9


def table(**limits: int) -> SessionTable:
    return SessionTable(SessionLimits(**limits))


def test_session_new_seq_is_applied_then_answered_from_the_table() -> None:
    t = table()
    s = t.open(now=1)
    assert t.admit(s, seq=1, floor=1, now=2) == (Verdict.APPLY, None)
    t.record(s, 1, ["result"])
    assert t.admit(s, seq=1, floor=1, now=3) == (Verdict.DUPLICATE, ["result"])


def test_session_out_of_order_seqs_are_each_applied_once() -> None:
    t = table()
    s = t.open(now=1)
    for seq in (3, 1, 2):
        assert t.admit(s, seq, floor=1, now=2)[0] is Verdict.APPLY
        t.record(s, seq, seq)
    assert [t.admit(s, seq, floor=1, now=3)[1] for seq in (1, 2, 3)] == [1, 2, 3]


def test_session_floor_drops_acknowledged_results_and_refuses_them_as_stale() -> None:
    t = table()
    s = t.open(now=1)
    for seq in (1, 2, 3):
        t.admit(s, seq, floor=1, now=2)
        t.record(s, seq, seq)
    assert t.admit(s, seq=4, floor=3, now=3)[0] is Verdict.APPLY
    session = t.get(s)
    assert session is not None and sorted(session.results) == [3]
    assert t.admit(s, seq=1, floor=3, now=4) == (Verdict.STALE, None)


def test_session_floor_above_seq_is_trusted_only_up_to_seq() -> None:
    t = table()
    s = t.open(now=1)
    t.admit(s, seq=1, floor=1, now=1)
    t.record(s, 1, "one")
    assert t.admit(s, seq=2, floor=99, now=2)[0] is Verdict.APPLY
    session = t.get(s)
    assert session is not None and session.floor == 2


def test_session_unknown_or_closed_session_is_expired_and_ids_are_never_reused() -> None:
    t = table()
    assert t.admit(7, seq=1, floor=1, now=1) == (Verdict.EXPIRED, None)
    s = t.open(now=1)
    assert t.close(s)
    assert t.admit(s, seq=1, floor=1, now=2)[0] is Verdict.EXPIRED
    assert t.open(now=3) != s


def test_session_idle_past_its_ttl_expires_in_log_time() -> None:
    t = table(ttl_ns=10 * SEC)
    idle = t.open(now=0)
    busy = t.open(now=0)
    t.admit(busy, seq=1, floor=1, now=9 * SEC)
    assert t.admit(busy, seq=2, floor=1, now=15 * SEC)[0] is Verdict.APPLY
    assert t.admit(idle, seq=1, floor=1, now=15 * SEC)[0] is Verdict.EXPIRED


def test_session_count_is_bounded_least_recently_used_first() -> None:
    t = table(max_sessions=2)
    a = t.open(now=1)
    b = t.open(now=2)
    t.admit(a, seq=1, floor=1, now=3)  # a is now the most recently used
    c = t.open(now=4)
    assert len(t) == 2
    assert t.get(b) is None and t.get(a) is not None and t.get(c) is not None


def test_session_results_are_bounded_by_raising_the_floor() -> None:
    t = table(max_results=3)
    s = t.open(now=1)
    for seq in range(1, 6):
        t.admit(s, seq, floor=1, now=2)
        t.record(s, seq, seq)
    session = t.get(s)
    assert session is not None and sorted(session.results) == [3, 4, 5]
    assert t.admit(s, seq=1, floor=1, now=3)[0] is Verdict.STALE


def test_session_table_round_trips_its_wire_form_exactly() -> None:
    t = table()
    a = t.open(now=5)
    t.admit(a, seq=2, floor=1, now=6)
    t.record(a, 2, [0, ["x", 1]])
    t.open(now=7)
    again = SessionTable.from_wire(t.to_wire())
    assert again.to_wire() == t.to_wire()
    assert again.next_id == t.next_id
    assert again.admit(a, seq=2, floor=1, now=8) == (Verdict.DUPLICATE, [0, ["x", 1]])


def test_session_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SessionLimits(ttl_ns=0)
    with pytest.raises(ValueError):
        SessionLimits(max_sessions=0)


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(
    st.none() | st.integers(-3, 2**64) | st.text(max_size=3) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=20,
))
def test_session_table_from_garbage_raises_only_value_error(value: object) -> None:
    """Garbage in, only ValueError out (a snapshot is read through this)."""
    with contextlib.suppress(ValueError):
        SessionTable.from_wire(value)


def test_session_results_are_bounded_in_bytes_per_session_and_in_all() -> None:
    """Counts alone are no bound (an audit recorded 400 results of 512 KiB each in one
    session and every replica ran out of memory): one session keeps at most an eighth
    of max_bytes of results (its oldest go, the floor rising past them; the newest
    always stays), and past max_bytes in all the least recently used sessions expire."""
    t = table(max_bytes=8000)  # a share of 1000 bytes per session
    a = t.open(1)
    for seq in (1, 2, 3):
        assert t.admit(a, seq, 1, 2)[0] is Verdict.APPLY
        t.record(a, seq, ["x" * 400])
    assert t.admit(a, 1, 1, 3) == (Verdict.STALE, None)  # weighed out
    assert t.admit(a, 3, 1, 3)[0] is Verdict.DUPLICATE
    alone = t.open(4)
    assert t.admit(alone, 1, 1, 4)[0] is Verdict.APPLY
    t.record(alone, 1, [b"y" * 5000])  # over the share alone: kept, it is the newest
    assert t.admit(alone, 1, 1, 5)[0] is Verdict.DUPLICATE
    others = [t.open(6 + i) for i in range(4)]
    for i, sid in enumerate(others):
        assert t.admit(sid, 1, 1, 10 + i)[0] is Verdict.APPLY
        t.record(sid, 1, ["z" * 900])
    assert t.result_bytes <= 8000
    assert t.admit(a, 3, 1, 20) == (Verdict.EXPIRED, None)  # least recently used: gone
    assert t.admit(others[-1], 1, 1, 21)[0] is Verdict.DUPLICATE
    again = SessionTable.from_wire(t.to_wire(), t.limits)
    assert again.result_bytes == t.result_bytes and again.to_wire() == t.to_wire()
    with pytest.raises(ValueError, match="max_bytes"):
        table(max_bytes=0)
