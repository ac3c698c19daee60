"""A simulated disk for one Raft node: written vs synced state, crashes that tear.

Theory of operation: a node's durable state is a hard state, a snapshot and
the entries after it (:class:`DiskState`). Writes first land in a volatile
queue; :meth:`SimDisk.sync` (the fsync) folds them into the synced state. A
:meth:`SimDisk.crash` loses the queue except for a random prefix the "OS" had
already flushed, and the last flushed write may be *torn*: only a prefix of
its entries survives and its hard state (written last) is lost. This is the
worst a real write-ahead log with per-record checksums may leave after a
power cut, so a core that only reveals state after :meth:`sync` stays safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from cellmesh.consensus.types import Entry, HardState, Snapshot


class _Rng(Protocol):
    def random(self) -> float: ...
    def randrange(self, start: int, stop: int, /) -> int: ...


@attrs.define(eq=False)
class DiskState:
    """What survives a crash: hard state, latest snapshot, entries after it."""

    hard_state: HardState = attrs.field(factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.field(factory=list)

    def copy(self) -> DiskState:
        """An independent copy (entries are immutable values)."""
        return DiskState(
            hard_state=self.hard_state, snapshot=self.snapshot, entries=list(self.entries)
        )


@attrs.frozen(kw_only=True)
class _Write:
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None


def _apply(state: DiskState, w: _Write) -> None:
    if w.snapshot is not None:
        # A snapshot received from the leader replaces the whole log.
        state.snapshot = w.snapshot
        state.entries = []
    if w.entries:
        first = w.entries[0].index
        kept = [e for e in state.entries if e.index < first]
        state.entries = kept + list(w.entries)
    if w.hard_state is not None:
        state.hard_state = w.hard_state


@attrs.define(eq=False)
class SimDisk:
    """Durable storage with an explicit fsync; see the module docstring."""

    synced: DiskState = attrs.field(factory=DiskState)
    _pending: list[_Write] = attrs.field(factory=list)
    torn_writes: int = 0

    def write(
        self, snapshot: Snapshot | None, entries: Sequence[Entry], hard_state: HardState | None
    ) -> None:
        """Queue one batch (snapshot, then entries, then hard state); not durable yet."""
        self._pending.append(
            _Write(snapshot=snapshot, entries=tuple(entries), hard_state=hard_state)
        )

    def sync(self) -> None:
        """Make every queued write durable, in order."""
        for w in self._pending:
            _apply(self.synced, w)
        self._pending.clear()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Durably store a locally taken snapshot, then drop the entries it covers."""
        self.sync()
        self.synced.snapshot = snapshot
        self.synced.entries = [e for e in self.synced.entries if e.index > snapshot.meta.index]

    def crash(self, rng: _Rng) -> None:
        """Lose unsynced writes, except a random flushed prefix whose last may be torn."""
        if self._pending:
            flushed = rng.randrange(0, len(self._pending) + 1)
            for w in self._pending[:flushed]:
                if w is self._pending[flushed - 1] and w.entries and rng.random() < 0.5:
                    keep = rng.randrange(0, len(w.entries))
                    self.torn_writes += 1
                    _apply(
                        self.synced,
                        _Write(snapshot=w.snapshot, entries=w.entries[:keep], hard_state=None),
                    )
                else:
                    _apply(self.synced, w)
        self._pending.clear()

    def recover(self) -> DiskState:
        """What a restarting node reads back."""
        return self.synced.copy()
