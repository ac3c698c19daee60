"""Linearizability checking of concurrent histories (Wing & Gong search, memoized).

Theory of operation
-------------------
A history is a list of :class:`Operation` values: each has a client, an
input, an output and the times it was invoked and returned. It is
*linearizable* for a sequential :class:`Model` if every operation can be
given a single instant between its invocation and return such that applying
the operations in that order to the model reproduces every output.

:func:`check_operations` implements the Wing & Gong backtracking search with
the improvements Lowe and Porcupine use: the history becomes a doubly linked
list of call and return events ordered by time; the search repeatedly tries to
linearize a *minimal* pending call (any call before the first return), lifting
it and its return out of the list; reaching a return whose call is still in
the list means the current choice is wrong, so it backtracks. A cache of
(linearized-set bitmask, model state) pairs prunes every configuration that was
already explored -- why model states must be hashable.

A model may split a history into independent parts (``partition``; for a
key-value store, one part per key). Each part is checked alone, which keeps
the search small (P-compositionality).

An operation that never returned (the client gave up or crashed) has
``ret=None``: it may have taken effect at any point after its invocation, or
never. It is placed at the end of time and its output is ``None``, which a
model must accept as "unknown".

Equal timestamps are treated as overlapping (calls sort before returns).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs

from cellmesh.errors import CellmeshError

StateT = TypeVar("StateT", bound=Hashable)
InT = TypeVar("InT")
OutT = TypeVar("OutT")


@attrs.frozen(kw_only=True)
class Operation(Generic[InT, OutT]):
    """One completed (or abandoned, ``ret is None``) operation of a history."""

    client: int
    input: InT
    output: OutT | None
    call: float
    ret: float | None


class Model(Protocol[StateT, InT, OutT]):
    """A sequential specification: an initial state and a step relation.

    ``step(state, input, output)`` returns ``(ok, new_state)``: whether the
    operation may return ``output`` in ``state`` (``output`` is ``None`` for
    an operation that never returned), and the state afterwards. States must
    be hashable and compare by value.
    """

    def init(self) -> StateT:
        """The state before any operation."""
        ...

    def step(self, state: StateT, input: InT, output: OutT | None) -> tuple[bool, StateT]:
        """Apply one operation; see the class docstring."""
        ...

    def partition(
        self, history: Sequence[Operation[InT, OutT]]
    ) -> list[list[Operation[InT, OutT]]]:
        """Split the history into independently checkable parts (or return it whole)."""
        ...


@attrs.frozen(kw_only=True)
class CheckResult:
    """Outcome of a check; ``failing_part`` holds the first non-linearizable part."""

    ok: bool
    failing_part: tuple[Operation[Any, Any], ...] = ()
    explored: int = 0


@attrs.define(eq=False)
class _Node:
    op_id: int
    is_call: bool
    time: float
    input: Any = None
    output: Any = None
    match: _Node | None = None
    prev: _Node | None = None
    next: _Node | None = None


def _build_list(ops: Sequence[Operation[Any, Any]]) -> _Node:
    events: list[tuple[float, int, int, _Node]] = []
    for i, op in enumerate(ops):
        ret_time = math.inf if op.ret is None else op.ret
        if ret_time < op.call:
            raise ValueError(f"operation {op!r} returns before it is invoked")
        call = _Node(op_id=i, is_call=True, time=op.call, input=op.input, output=op.output)
        ret = _Node(op_id=i, is_call=False, time=ret_time)
        call.match = ret
        events.append((op.call, 0, i, call))
        events.append((ret_time, 1, i, ret))
    events.sort(key=lambda t: (t[0], t[1], t[2]))
    head = _Node(op_id=-1, is_call=False, time=-math.inf)
    last = head
    for _, _, _, node in events:
        last.next = node
        node.prev = last
        last = node
    return head


def _lift(call: _Node) -> None:
    assert call.prev is not None and call.match is not None and call.match.prev is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def _check_part(
    model: Model[Any, Any, Any], ops: Sequence[Operation[Any, Any]], budget: int
) -> tuple[bool, int]:
    head = _build_list(ops)
    state: Hashable = model.init()
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Node, Hashable]] = []
    explored = 0
    entry = head.next
    while head.next is not None:
        explored += 1
        if explored > budget:
            raise SearchBudgetExceeded(budget)
        assert entry is not None
        if entry.is_call:
            ok, new_state = model.step(state, entry.input, entry.output)
            if ok:
                new_lin = linearized | (1 << entry.op_id)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, explored
            call, state = stack.pop()
            linearized &= ~(1 << call.op_id)
            _unlift(call)
            entry = call.next
    return True, explored


class SearchBudgetExceeded(CellmeshError):
    """The search explored more than ``budget`` steps without an answer."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"linearizability search gave up after {budget} steps")
        self.budget = budget


def check_operations(
    model: Model[Any, InT, OutT],
    history: Sequence[Operation[InT, OutT]],
    *,
    budget: int = 10_000_000,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Raises :class:`SearchBudgetExceeded` if a part needs more than ``budget``
    search steps (the problem is NP-complete; partitions keep it tractable).
    """
    explored = 0
    for part in model.partition(history):
        ok, n = _check_part(model, part, budget)
        explored += n
        if not ok:
            return CheckResult(ok=False, failing_part=tuple(part), explored=explored)
    return CheckResult(ok=True, explored=explored)


# ---------------------------------------------------------------------------
# Models


@attrs.frozen
class RegisterModel:
    """A single read/write register holding an int, initially ``initial``.

    Inputs: ``("w", value)`` (output ignored) and ``("r",)`` (output: the value).
    """

    initial: int = 0

    def init(self) -> int:
        """The register's initial value."""
        return self.initial

    def step(self, state: int, input: tuple[Any, ...], output: int | None) -> tuple[bool, int]:
        """Writes always succeed; a read must return the current value."""
        if input[0] == "w":
            return True, int(input[1])
        return output is None or output == state, state

    def partition(
        self, history: Sequence[Operation[tuple[Any, ...], int]]
    ) -> list[list[Operation[tuple[Any, ...], int]]]:
        """A single register does not split."""
        return [list(history)]


KVInput = tuple[str, str, str | None]


@attrs.frozen
class KVModel:
    """A key-value map of strings; missing keys read as ``""``.

    Inputs: ``("put", key, value)``, ``("append", key, value)`` and
    ``("get", key, None)``; a get's output is the value, other outputs are
    ignored. The history is partitioned by key, so the state is one value.
    """

    def init(self) -> str:
        """The value of a key never written."""
        return ""

    def step(self, state: str, input: KVInput, output: str | None) -> tuple[bool, str]:
        """Apply one operation to the value of its key."""
        op, _key, value = input
        if op == "put":
            return True, value or ""
        if op == "append":
            return True, state + (value or "")
        if op == "get":
            return output is None or output == state, state
        raise ValueError(f"unknown KV operation {op!r}")

    def partition(
        self, history: Sequence[Operation[KVInput, str]]
    ) -> list[list[Operation[KVInput, str]]]:
        """One part per key, in the order keys first appear."""
        parts: dict[str, list[Operation[KVInput, str]]] = {}
        for op in history:
            parts.setdefault(op.input[1], []).append(op)
        return list(parts.values())


def history_from_events(
    events: Sequence[tuple[str, int, float, Any]],
    make_op: Callable[[int, Any, Any, float, float | None], Operation[Any, Any]] | None = None,
) -> list[Operation[Any, Any]]:
    """Pair ``("call"|"return", client, time, value)`` events into operations.

    Each client has at most one operation outstanding; a call without a
    matching return becomes an operation with ``ret=None``.
    """
    pending: dict[int, tuple[Any, float]] = {}
    ops: list[Operation[Any, Any]] = []
    build = make_op or (
        lambda c, i, o, t0, t1: Operation(client=c, input=i, output=o, call=t0, ret=t1)
    )
    for kind, client, time, value in events:
        if kind == "call":
            if client in pending:
                raise ValueError(f"client {client} called twice without a return")
            pending[client] = (value, time)
        elif kind == "return":
            inp, t0 = pending.pop(client)
            ops.append(build(client, inp, value, t0, time))
        else:
            raise ValueError(f"unknown event kind {kind!r}")
    for client, (inp, t0) in pending.items():
        ops.append(build(client, inp, None, t0, None))
    return ops
