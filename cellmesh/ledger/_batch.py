"""Running a batch of create events: timestamps, linked chains, per-event results.

Theory of operation
-------------------
Event ``i`` of a batch runs at timestamp ``base + i``. Events stand alone
unless ``flags.linked`` ties an event to the next one: a *chain* runs in
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

#: ``one(event, timestamp, undo)`` -> result code; ``undo`` is None outside chains.
OneEvent = Callable[[Any, int, "Undo | None"], int]
#: ``bulk(events, i, limit, base, results)`` -> the index of the first event it did not
#: run: it runs unlinked events from ``i`` exactly as this module would with ``one``
#: (expiry before each, results written, transient failures remembered), stopping at
#: the first linked event or at ``limit``.
Bulk = Callable[[Sequence[Any], int, int, int, list[int]], int]


def _linked(event: Any) -> bool:
    return bool(event.flags & _LINKED)


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
    if count and _linked(events[-1]):
        start = count - 1
        while start > 0 and _linked(events[start - 1]):
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
        timestamp = base + i
        if undo is None:
            if expire and heap and heap[0][0] <= timestamp:
                expire_due(store, timestamp)
            if event.flags & _LINKED:
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
                while i + 1 < limit and events[i].flags & _LINKED:
                    i += 1
                    results[i] = LINKED_EVENT_FAILED
            if code in transient:
                failed.add(event.id)
        elif undo is not None and not event.flags & _LINKED:
            undo = None  # the chain ended and held
        i += 1
    return results
