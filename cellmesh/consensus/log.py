"""The in-memory Raft log: a snapshot followed by entries, with commit/apply/stable marks.

Theory of operation: the core owns the whole log in memory (like etcd's
``raftLog`` over a ``MemoryStorage``). The log is the latest :class:`Snapshot`
(covering indexes ``1..snapshot.meta.index``) followed by a contiguous list of
entries. Three marks move over it:

* ``stabled`` -- the highest index the driver has persisted (entries above it
  are *unstable* and are handed out in the next ``Ready``);
* ``committed`` -- the highest index known to be committed (monotonic);
* ``applied`` -- the highest index the driver has applied (monotonic).

Invariants: ``applied <= committed <= last_index``; ``snapshot.meta.index <=
committed``; entries are contiguous and their terms never decrease. A
conflicting append truncates the suffix (never below ``committed``) and pulls
``stabled`` back so the replacement entries are persisted again.
The log also remembers where CONFIG entries sit so the core can find the
latest membership (which takes effect when appended, dissertation 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from cellmesh.consensus.errors import ConsensusUsageError, RestoredLogInvalid
from cellmesh.consensus.types import Entry, EntryKind, Membership, Snapshot


def _check_restored_config(entry: Entry) -> None:
    """RestoredLogInvalid unless ``entry`` holds a membership with a voter."""
    try:
        Membership.decode_runnable(entry.data)
    except ValueError as exc:
        raise RestoredLogInvalid(f"restored configuration entry {entry.index}: {exc}") from None


class RaftLog:
    """The replicated log of one node; see the module docstring for invariants."""

    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry] = (), commit: int = 0) -> None:
        """Restore from durable state; ``entries`` must follow the snapshot contiguously."""
        self.snapshot: Snapshot = snapshot
        self._entries: list[Entry] = []
        self._config_indexes: list[int] = []
        self.pending_snapshot: Snapshot | None = None
        base = snapshot.meta.index
        prev_term = snapshot.meta.term
        for k, e in enumerate(entries):
            if e.index != base + k + 1:
                raise RestoredLogInvalid(
                    f"restored entries are not contiguous after snapshot {base}: index "
                    f"{e.index} where {base + k + 1} belongs"
                )
            if e.term < prev_term:
                raise RestoredLogInvalid(
                    f"restored entry {e.index} has term {e.term}, below the term "
                    f"{prev_term} before it (terms never go down in a Raft log)"
                )
            if e.kind is EntryKind.CONFIG:
                _check_restored_config(e)
            prev_term = e.term
            self._push(e)
        self.stabled = self.last_index
        self.committed = max(base, min(commit, self.last_index))
        self.applied = base

    # -- positions ---------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index still held as an entry (``snapshot index + 1``)."""
        return self.snapshot.meta.index + 1

    @property
    def last_index(self) -> int:
        """The index of the last entry, or the snapshot's index if there is none."""
        return self.snapshot.meta.index + len(self._entries)

    @property
    def last_term(self) -> int:
        """The term of the last entry (or of the snapshot)."""
        return self._entries[-1].term if self._entries else self.snapshot.meta.term

    def term(self, index: int) -> int | None:
        """The term at ``index``; ``None`` if compacted away or beyond the end."""
        base = self.snapshot.meta.index
        if index == base:
            return self.snapshot.meta.term
        if index < base or index > self.last_index:
            return None
        return self._entries[index - base - 1].term

    def match_term(self, index: int, term: int) -> bool:
        """Whether the log holds an entry (or snapshot end) at ``index`` with ``term``."""
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        """The entry at ``index`` (which must be held, not compacted)."""
        return self._entries[index - self.snapshot.meta.index - 1]

    def entries_from(self, lo: int, max_count: int,
                     max_bytes: int | None = None) -> tuple[Entry, ...]:
        """Up to ``max_count`` entries starting at ``lo`` (``lo >= first_index``) and
        (``max_bytes``) at most that much data, the first entry whatever its size."""
        base = self.snapshot.meta.index
        ents = self._entries[lo - base - 1 : lo - base - 1 + max_count]
        if max_bytes is None or len(ents) <= 1:
            return tuple(ents)
        size = len(ents[0].data)
        for n, e in enumerate(ents[1:], start=1):
            size += len(e.data)
            if size > max_bytes:
                return tuple(ents[:n])
        return tuple(ents)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index ``<= index`` whose entry has a term ``<= term``.

        Used on both sides of a rejected append (section 5.3, end): every
        entry above the result has a newer term than ``term``, so it cannot
        match the other log's entry of term ``term`` at the same index.
        Stops at the snapshot (its index is returned if nothing newer fits).
        """
        index = min(index, self.last_index)
        base = self.snapshot.meta.index
        while index > base:
            t = self.term(index)
            if t is not None and t <= term:
                return index
            index -= 1
        return max(index, 0)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Section 5.4.1: is a log ending at (``last_index``, ``last_term``) at least as new?"""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    # -- mutation ----------------------------------------------------------

    def _push(self, e: Entry) -> None:
        self._entries.append(e)
        if e.kind is EntryKind.CONFIG:
            self._config_indexes.append(e.index)

    def _truncate_after(self, index: int) -> None:
        """Drop every entry above ``index``."""
        if index < self.committed:
            raise ConsensusUsageError(f"refusing to truncate committed entries after {index}")
        del self._entries[index - self.snapshot.meta.index :]
        while self._config_indexes and self._config_indexes[-1] > index:
            self._config_indexes.pop()
        self.stabled = min(self.stabled, index)

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that directly follow ``last_index`` (the leader's path)."""
        for e in entries:
            if e.index != self.last_index + 1:
                raise ConsensusUsageError(f"append of {e.index} after {self.last_index}")
            self._push(e)

    def maybe_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry]
    ) -> tuple[int, bool] | None:
        """Section 5.3 consistency check and append.

        Returns ``None`` if the log has no entry at ``prev_index`` with
        ``prev_term``. Otherwise skips entries already present, truncates at
        the first conflicting one, appends the rest and returns ``(last new
        index, whether membership entries were added or removed)``.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        changed_config = False
        last_new = prev_index + len(entries)
        for k, e in enumerate(entries):
            t = self.term(e.index)
            if e.index < self.first_index or t == e.term:
                continue
            if t is not None:
                had_config = bool(self._config_indexes) and self._config_indexes[-1] >= e.index
                changed_config = changed_config or had_config
                self._truncate_after(e.index - 1)
            for rest in entries[k:]:
                changed_config = changed_config or rest.kind is EntryKind.CONFIG
                self._push(rest)
            break
        return last_new, changed_config

    def commit_to(self, index: int) -> bool:
        """Raise ``committed`` to ``index`` (never lower it); returns whether it moved."""
        if index <= self.committed:
            return False
        if index > self.last_index:
            raise ConsensusUsageError(f"commit {index} beyond last index {self.last_index}")
        self.committed = index
        return True

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (InstallSnapshot, section 7)."""
        self.snapshot = snapshot
        self._entries.clear()
        self._config_indexes.clear()
        self.committed = snapshot.meta.index
        self.stabled = snapshot.meta.index
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot) -> None:
        """Discard entries covered by a locally taken ``snapshot`` (section 7)."""
        index = snapshot.meta.index
        if not (self.snapshot.meta.index < index <= self.applied):
            raise ConsensusUsageError(
                f"can only compact to an applied index above {self.snapshot.meta.index};"
                f" got {index} with applied={self.applied}"
            )
        if self.term(index) != snapshot.meta.term:
            raise ConsensusUsageError(f"snapshot term does not match the log at {index}")
        del self._entries[: index - self.snapshot.meta.index]
        while self._config_indexes and self._config_indexes[0] <= index:
            self._config_indexes.pop(0)
        self.snapshot = snapshot

    # -- membership ----------------------------------------------------------

    def membership_at(self, index: int) -> Membership:
        """The membership in effect at ``index`` (latest CONFIG entry at or before it)."""
        for ci in reversed(self._config_indexes):
            if ci <= index:
                return Membership.decode(self.entry(ci).data)
        return Membership.of_snapshot(self.snapshot.meta)

    def config_indexes_between(self, lo: int, hi: int) -> list[int]:
        """Indexes of the CONFIG entries held in ``(lo, hi]``, in log order."""
        return [i for i in self._config_indexes if lo < i <= hi]

    def configurations(self) -> list[Membership]:
        """Every configuration this log knows: the snapshot's, then each CONFIG entry's."""
        found = [Membership.of_snapshot(self.snapshot.meta)]
        found.extend(Membership.decode(self.entry(i).data) for i in self._config_indexes)
        return found

    def last_config_index(self) -> int:
        """Index of the latest CONFIG entry held, or the snapshot's index."""
        return self._config_indexes[-1] if self._config_indexes else self.snapshot.meta.index

    # -- ready bookkeeping ---------------------------------------------------

    def unstable_entries(self) -> tuple[Entry, ...]:
        """Entries above ``stabled`` that the driver has not persisted yet."""
        return tuple(self._entries[self.stabled - self.snapshot.meta.index :])

    def next_committed_entries(self, max_bytes: int | None = None) -> tuple[Entry, ...]:
        """Committed entries not applied yet (above ``applied`` and the snapshot); with
        ``max_bytes``, only as many as hold that much data (one at least)."""
        lo = max(self.applied, self.snapshot.meta.index) + 1
        if lo > self.committed:
            return ()
        return self.entries_from(lo, self.committed - lo + 1, max_bytes)

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted through (``index``, ``term``); ignore if since replaced."""
        if index > self.stabled and self.term(index) == term:
            self.stabled = index

    def applied_to(self, index: int) -> None:
        """The driver applied through ``index``."""
        if index > self.applied:
            self.applied = min(index, self.committed)
