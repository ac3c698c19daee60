"""What ``cellmesh status`` says of a cell beyond its slot's own report.

A slot's :meth:`~cellmesh.actors._cells.CellSlot.report` knows its process:
running, starting, dormant or exited. It does not know what the supervisors
are doing with it, nor when its counters arrived. :class:`StatusNotes` keeps
those facts, fed by the root's hooks, and :meth:`StatusNotes.annotate`
adds them to a row:

* ``stopping``: the cell's supervisor asked its process to stop (its
  ``stopping`` event: ``cellmesh down``, a sibling's restart, a reload) and
  the process has not exited yet (it runs its ``on_stop``);
* ``restarting``: the process ended and the supervisor waits a backoff delay
  before it starts the cell again (its ``delaying`` event); ``restart_in``
  counts down the delay. Nothing is shown once the delay is over, nor while
  the root stops (a stop cancels the delay);
* ``stats_at``: when the root received the cell's last ``CellStats`` (Unix
  time), so ``top`` divides the change in counters by the time between two
  reports, not by the time between two of its own requests;
* ``silent_for``: a running process the root has not heard from (a report,
  a request) for more than :data:`SILENT_AFTER` seconds: it reports every
  second, so its event loop is blocked, or it is stopped. Its state stays
  ``running`` (its supervisor sees a live process); the row says how long.

Everything is kept by weak reference to the slot or process it is about, so
slots and processes that go are forgotten with them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

import attrs

from ._cells import CellInstance, CellSlot
from .control import CellStats, CellStatus
from .supervisor import SupervisorEvent

#: A running process not heard from for longer than this is shown silent (it
#: reports every second: five missed reports).
SILENT_AFTER: Final = 5.0

#: Supervisor events after which no restart of that child is pending any more.
_RESTART_SETTLED = frozenset({"started", "start_failed", "stopping", "stopped", "removed",
                              "escalated"})


def slot_of(slots: Mapping[str, CellSlot], supervisor: str, child_id: str) -> CellSlot | None:
    """The slot supervisor ``supervisor`` calls ``child_id`` (None: not a cell, e.g. a
    nested supervisor). A simple_one_for_one supervisor numbers its children
    (``kid-3``) while the slot has the name its parent gave it (``parent.a``)."""
    slot = slots.get(child_id)
    if slot is not None and slot.child_id == child_id:
        return slot
    return _find(slots.values(), supervisor, child_id)


def _find(slots: Iterable[CellSlot], supervisor: str, child_id: str) -> CellSlot | None:
    for slot in slots:
        if slot.child_id == child_id and slot.supervisor == supervisor:
            return slot
    return None


def child_name(slots: Mapping[str, CellSlot], supervisor: str, child_id: str) -> str:
    """The name ``status`` shows for supervisor ``supervisor``'s child ``child_id``."""
    slot = slot_of(slots, supervisor, child_id)
    return child_id if slot is None else slot.name


def count_text(cells: int, replicas: int = 0) -> str:
    """``1 cell``, ``4 cells``; with replicated cells ``1 cell (3 replicas)``: a
    replicated cell counts once, its replicas are counted apart."""
    text = f"{cells} cell{'' if cells == 1 else 's'}"
    if replicas:
        text += f" ({replicas} replica{'' if replicas == 1 else 's'})"
    return text


def slots_text(slots: Iterable[CellSlot]) -> str:
    """:func:`count_text` of the root's slots (the ``up`` message)."""
    plain, replicas = 0, 0
    groups: set[str] = set()
    for slot in slots:
        if slot.replica is None:
            plain += 1
        else:
            groups.add(slot.replica.group)
            replicas += 1
    return count_text(plain + len(groups), replicas)


@attrs.define(eq=False)
class StatusNotes:
    """The facts of the module doc, per slot and process. One per root."""

    _stopping: weakref.WeakSet[CellInstance] = attrs.Factory(weakref.WeakSet)
    #: slot -> (its process that ended, monotonic time its restart is due).
    _restarts: weakref.WeakKeyDictionary[CellSlot, tuple[CellInstance | None, float]] = (
        attrs.Factory(weakref.WeakKeyDictionary))
    #: slot -> (the stats it holds, Unix time they arrived).
    _samples: weakref.WeakKeyDictionary[CellSlot, tuple[CellStats, float]] = attrs.Factory(
        weakref.WeakKeyDictionary)
    #: slot -> monotonic time the root last heard from its process (anything on the umbilical).
    _heard: weakref.WeakKeyDictionary[CellSlot, float] = attrs.Factory(
        weakref.WeakKeyDictionary)

    def on_event(self, slot: CellSlot | None, event: SupervisorEvent, *, mono: float) -> None:
        """Supervisor ``event`` about ``slot`` (None: not about a cell), at monotonic ``mono``."""
        if slot is None:
            return
        if event.kind in _RESTART_SETTLED:
            self._restarts.pop(slot, None)
        if event.kind == "stopping" and slot.instance is not None:
            self._stopping.add(slot.instance)
        elif event.kind == "delaying" and event.delay is not None:
            self._restarts[slot] = (slot.instance, mono + event.delay)

    def heard_from(self, slot: CellSlot, *, mono: float) -> None:
        """``slot``'s process sent the root something, at monotonic time ``mono``."""
        self._heard[slot] = mono

    def stats_received(self, slot: CellSlot, *, at: float) -> None:
        """``slot.stats`` was just set from a report of its process, at Unix time ``at``."""
        if slot.stats is not None:
            self._samples[slot] = (slot.stats, at)

    def annotate(self, slot: CellSlot, row: CellStatus, *, mono: float,
                 root_stopping: bool) -> CellStatus:
        """``row`` (``slot``'s own report) with the state and times kept here."""
        sample = self._samples.get(slot)
        stats_at = sample[1] if sample is not None and sample[0] is slot.stats else None
        instance = slot.instance
        if instance is not None and instance.state != "exited" and instance in self._stopping:
            return _evolve(row, state="stopping", stats_at=stats_at)
        pending = self._restarts.get(slot)
        if (
            pending is not None and not root_stopping and row.pid is None
            and pending[0] is instance and pending[1] > mono
        ):
            return _evolve(row, state="restarting", stats_at=stats_at,
                           restart_in=pending[1] - mono)
        silent = self._silent_for(slot, row, mono)
        if silent is not None:
            return _evolve(row, stats_at=stats_at, silent_for=silent)
        return row if stats_at is None else _evolve(row, stats_at=stats_at)

    def _silent_for(self, slot: CellSlot, row: CellStatus, mono: float) -> float | None:
        """Seconds since ``slot``'s running process was last heard from (or started),
        when more than :data:`SILENT_AFTER`; else None."""
        instance = slot.instance
        if row.state != "running" or instance is None or instance.started_at is None:
            return None
        last = max(self._heard.get(slot, instance.started_at), instance.started_at)
        silent = mono - last
        return silent if silent > SILENT_AFTER else None


def _evolve(row: CellStatus, **changes: object) -> CellStatus:
    """A copy of ``row`` with ``changes`` (a protein is an attrs class mypy does not see as one)."""
    return cast(CellStatus, attrs.evolve(cast(Any, row), **changes))


__all__ = ["StatusNotes", "child_name", "count_text", "slot_of", "slots_text"]
