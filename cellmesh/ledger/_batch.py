"""Running a batch of create events: timestamps, linked chains, per-event results.

Theory of operation
-------------------
Event ``i`` of a batch runs at timestamp ``base + i``. Events stand alone
unless ``flags.linked`` ties an event to the next one (flags outside their
16 bits are no flags at all: such an event fails with ``field_out_of_range``
and is not linked, see :func:`linked`): a *chain* runs in
order, each event seeing the effects of the ones before it, and either every
event of it succeeds or none leaves a trace. The first event to fail keeps
its own result; every other event of the chain gets ``linked_event_failed``
(those after the failure are not run). ``exists`` counts as success inside a
chain (the event is already in the ledger exactly as given), so a retried
chain that committed before answers ``exists`` for each of its events.

A batch whose last event is linked leaves its last chain open: that event
gets ``linked_event_chain_open``, the rest of its chain ``linked_event_failed``,
and none of them runs.

Transfers expire before each event that is not inside a chain (``expire``),
so a pending transfer is released as soon as the ledger's clock passes its
expiry and never while a chain is half applied.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from ._store import Store, Undo, expire_due

#: The results every create operation shares (same numbers in both enums).
OK: Final = 0
LINKED_EVENT_FAILED: Final = 1
LINKED_EVENT_CHAIN_OPEN: Final = 2
_LINKED: Final = 1  # flags.linked is bit 0 for accounts and transfers alike
_FLAG_BITS: Final = 16  # flags is a u16 for accounts and transfers alike

#: ``one(event, timestamp, undo)`` -> result code; ``undo`` is None outside chains.
OneEvent = Callable[[Any, int, "Undo | None"], int]
#: ``bulk(events, i, limit, base, results)`` -> the index of the first event it did not
#: run: it runs unlinked events from ``i`` exactly as this module would with ``one``
#: (expiry before each, results written, transient failures remembered), stopping at
#: the first :func:`linked` event or at ``limit``.
Bulk = Callable[[Sequence[Any], int, int, int, list[int]], int]


def linked(flags: int) -> bool:
    """Whether an event with these ``flags`` is linked to the next one.

    Only flags within their 16 bits are read: a negative or wider value (which
    the engines refuse with ``field_out_of_range``) links nothing, whatever its
    bit 0, so one malformed event cannot drag its neighbours into a chain.
    """
    return bool(flags & _LINKED) and not flags >> _FLAG_BITS


def run_batch(
    store: Store,
    events: Sequence[Any],
    base: int,
    one: OneEvent,
    *,
    exists: int,
    transient: frozenset[int] = frozenset(),
    expire: bool = False,
    bulk: Bulk | None = None,
) -> list[int]:
    """Run ``events`` from timestamp ``base``; return one result code per event.

    ``exists`` is the operation's ``exists`` code (success inside a chain);
    an event failing with a code in ``transient`` has its id remembered in
    ``store.failed`` (after any rollback, so the memory survives it).
    ``bulk``, if given, runs the stretches of unlinked events (the hot path).
    """
    count = len(events)
    results = [OK] * count
    limit = count
    if count and linked(events[-1].flags):
        start = count - 1
        while start > 0 and linked(events[start - 1].flags):
            start -= 1
        for k in range(start, count - 1):
            results[k] = LINKED_EVENT_FAILED
        results[count - 1] = LINKED_EVENT_CHAIN_OPEN
        limit = start
    heap = store.expiry
    failed = store.failed
    undo: Undo | None = None
    chain_start = 0
    i = 0
    while i < limit:
        if bulk is not None and undo is None:
            i = bulk(events, i, limit, base, results)
            if i >= limit:
                break
        event = events[i]
        flags = event.flags
        is_linked = flags & _LINKED and not flags >> _FLAG_BITS  # linked(flags), inlined
        timestamp = base + i
        if undo is None:
            if expire and heap and heap[0][0] <= timestamp:
                expire_due(store, timestamp)
            if is_linked:
                undo = Undo()
                chain_start = i
        code = one(event, timestamp, undo)
        if code:
            code = int(code)  # the engines may return enum members; results hold plain ints
            results[i] = code
        if code and code != exists:
            if undo is not None:
                undo.rollback(store)
                undo = None
                for k in range(chain_start, i):
                    results[k] = LINKED_EVENT_FAILED
                while i + 1 < limit and linked(events[i].flags):
                    i += 1
                    results[i] = LINKED_EVENT_FAILED
            if code in transient:
                failed.add(event.id)
        elif undo is not None and not is_linked:
            undo.commit(store)  # the chain ended and held
            undo = None
        i += 1
    return results
