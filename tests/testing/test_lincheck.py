"""The linearizability checker on textbook histories and generated ones."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.testing.lincheck import (
    KVModel,
    Operation,
    RegisterModel,
    SearchBudgetExceeded,
    check_operations,
    history_from_events,
)


def op(client: int, inp: Any, out: Any, call: float, ret: float | None) -> Operation[Any, Any]:
    return Operation(client=client, input=inp, output=out, call=call, ret=ret)


def w(client: int, v: int, call: float, ret: float | None) -> Operation[Any, Any]:
    return op(client, ("w", v), None, call, ret)


def r(client: int, v: int | None, call: float, ret: float | None) -> Operation[Any, Any]:
    return op(client, ("r",), v, call, ret)


REG = RegisterModel()


def test_lincheck_sequential_register_history_is_linearizable() -> None:
    assert check_operations(REG, [w(1, 1, 0, 1), r(1, 1, 2, 3), w(2, 2, 4, 5), r(1, 2, 6, 7)]).ok


def test_lincheck_read_overlapping_a_write_may_see_either_value() -> None:
    assert check_operations(REG, [w(1, 1, 0, 10), r(2, 1, 5, 15)]).ok
    assert check_operations(REG, [w(1, 1, 0, 10), r(2, 0, 5, 15)]).ok


def test_lincheck_stale_read_after_completed_write_is_rejected() -> None:
    """A read that starts after a write returned must see it."""
    result = check_operations(REG, [w(1, 1, 0, 5), r(2, 0, 6, 10)])
    assert not result.ok
    assert len(result.failing_part) == 2


def test_lincheck_new_old_inversion_is_rejected() -> None:
    """Herlihy & Wing / Lamport: a regular but not atomic register.

    Both reads overlap the write, but the first read sees the new value and
    returns before the second starts, which then sees the old one.
    """
    history = [w(1, 1, 0, 20), r(2, 1, 2, 5), r(3, 0, 7, 10)]
    assert not check_operations(REG, history).ok
    # Swap the outcomes and it is fine: old value first, then the new one.
    assert check_operations(REG, [w(1, 1, 0, 20), r(2, 0, 2, 5), r(3, 1, 7, 10)]).ok


def test_lincheck_concurrent_writes_then_reads_must_agree_on_order() -> None:
    """Two overlapping writes may land in either order, but all later reads agree."""
    base = [w(1, 1, 0, 10), w(2, 2, 0, 10)]
    assert check_operations(REG, [*base, r(3, 1, 11, 12), r(3, 1, 13, 14)]).ok
    assert check_operations(REG, [*base, r(3, 2, 11, 12), r(3, 2, 13, 14)]).ok
    assert not check_operations(REG, [*base, r(3, 1, 11, 12), r(3, 2, 13, 14)]).ok


def test_lincheck_pending_operation_may_take_effect_late_or_never() -> None:
    """An operation with no return may take effect any time after its call, or not at all."""
    pending = w(1, 1, 0, None)
    assert check_operations(REG, [pending, r(2, 0, 1, 2), r(2, 1, 3, 4)]).ok
    assert check_operations(REG, [pending, r(2, 0, 1, 2), r(2, 0, 3, 4)]).ok
    assert not check_operations(REG, [pending, r(2, 1, 1, 2), r(2, 0, 3, 4)]).ok


def test_lincheck_kv_partitions_by_key() -> None:
    kv = KVModel()
    ok = [
        op(1, ("put", "x", "a"), None, 0, 2),
        op(2, ("put", "y", "b"), None, 1, 3),
        op(1, ("get", "x", None), "a", 4, 5),
        op(2, ("append", "y", "c"), None, 4, 6),
        op(3, ("get", "y", None), "bc", 7, 8),
    ]
    assert check_operations(kv, ok).ok
    bad = [*ok, op(3, ("get", "y", None), "b", 9, 10)]
    result = check_operations(kv, bad)
    assert not result.ok
    assert {o.input[1] for o in result.failing_part} == {"y"}


def test_lincheck_kv_lost_update_is_rejected() -> None:
    """Two appends both complete, but a later read shows only one of them."""
    kv = KVModel()
    history = [
        op(1, ("append", "x", "a"), None, 0, 5),
        op(2, ("append", "x", "b"), None, 0, 5),
        op(3, ("get", "x", None), "a", 6, 7),
    ]
    assert not check_operations(kv, history).ok


def test_lincheck_budget_is_enforced() -> None:
    history = [w(c, c, 0, 100) for c in range(1, 12)] + [r(99, 0, 101, 102)]
    with pytest.raises(SearchBudgetExceeded):
        check_operations(REG, history, budget=50)


def test_history_from_events_pairs_calls_and_returns() -> None:
    events = [
        ("call", 1, 0.0, ("w", 1)),
        ("call", 2, 1.0, ("r",)),
        ("return", 1, 2.0, None),
        ("return", 2, 3.0, 1),
        ("call", 1, 4.0, ("w", 2)),
    ]
    ops = history_from_events(events)
    assert ops[0] == w(1, 1, 0.0, 2.0)
    assert ops[1] == r(2, 1, 1.0, 3.0)
    assert ops[2] == w(1, 2, 4.0, None)
    assert check_operations(REG, ops).ok


@st.composite
def linearizable_register_histories(draw: st.DrawFn) -> list[Operation[Any, Any]]:
    """Run a real register sequentially at instants 10, 20, ...; widen each interval."""
    n = draw(st.integers(1, 9))
    value = 0
    ops = []
    for i in range(n):
        point = 10 * (i + 1)
        before = draw(st.integers(0, 25))
        after = draw(st.integers(0, 25))
        if draw(st.booleans()):
            value = draw(st.integers(0, 3))
            ops.append(w(i, value, point - before, point + after))
        else:
            ops.append(r(i, value, point - before, point + after))
    return ops


@settings(max_examples=200, deadline=None)
@given(linearizable_register_histories())
def test_lincheck_accepts_every_history_with_real_linearization_points(
    history: list[Operation[Any, Any]],
) -> None:
    """Property: a history built around real linearization points is linearizable."""
    assert check_operations(REG, history).ok


@settings(max_examples=200, deadline=None)
@given(linearizable_register_histories(), st.data())
def test_lincheck_rejects_a_read_of_a_value_never_written(
    history: list[Operation[Any, Any]], data: st.DataObject
) -> None:
    """Property: a read returning a value nobody wrote makes any history illegal."""
    k = data.draw(st.integers(0, len(history) - 1))
    h = list(history)
    h[k] = r(h[k].client, 99, h[k].call, h[k].ret)
    assert not check_operations(REG, h).ok


def brute_force_linearizable(history: list[Operation[Any, Any]]) -> bool:
    """Try every order that respects real time (only for tiny histories)."""
    from itertools import permutations

    for order in permutations(range(len(history))):
        pos = {op_id: k for k, op_id in enumerate(order)}
        if any(
            (history[a].ret if history[a].ret is not None else float("inf")) < history[b].call
            and pos[a] > pos[b]
            for a in range(len(history))
            for b in range(len(history))
        ):
            continue
        state = REG.init()
        ok = True
        for op_id in order:
            ok, state = REG.step(state, history[op_id].input, history[op_id].output)
            if not ok:
                break
        if ok:
            return True
    return False


@st.composite
def arbitrary_register_histories(draw: st.DrawFn) -> list[Operation[Any, Any]]:
    """Random small histories, most of them not linearizable."""
    ops = []
    for i in range(draw(st.integers(1, 5))):
        call = draw(st.integers(0, 20))
        ret = call + draw(st.integers(0, 10))
        if draw(st.booleans()):
            ops.append(w(i, draw(st.integers(0, 2)), call, ret))
        else:
            ops.append(r(i, draw(st.integers(0, 2)), call, ret))
    return ops


@settings(max_examples=300, deadline=None)
@given(arbitrary_register_histories())
def test_lincheck_agrees_with_brute_force_on_small_histories(
    history: list[Operation[Any, Any]],
) -> None:
    """Property: the memoized search decides exactly what exhaustive search decides."""
    assert check_operations(REG, history).ok == brute_force_linearizable(history)
