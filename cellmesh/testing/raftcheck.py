"""Incremental checks of Raft's safety properties (Figure 3 of the paper) for the simulator.

Theory of operation: checking every property from scratch after every event
would cost O(nodes x log) per event, so the checker is fed the *changes* the
simulator observes and keeps global registries:

* **Election Safety** -- ``leaders[term]`` records the one node that became
  leader in each term.
* **Leader Append-Only** -- for a node that stays leader within a term, the
  entry it last had at its old last index must keep that term, and no entry
  it persists may start at or below that index.
* **Log Matching** -- every persisted entry registers ``(index, term) ->
  (kind, data, previous term)``; a second, different registration is a
  violation. By induction on the index this yields Log Matching; a periodic
  pairwise comparison (:meth:`check_logs_pairwise`) re-verifies it directly.
* **Leader Completeness** -- each new leader's log must hold every entry
  known committed (compacted prefixes excepted, checked via snapshot terms).
* **State Machine Safety** -- ``applied[index]`` records the entry the first
  node applied there; every node must apply the same.
* **One vote per term across restarts** -- every granted vote that leaves a
  node is recorded per (voter, term); a second candidate is a violation.
  Likewise a restarted node must not go back to a term it revealed.
* **Monotonic commit** -- within one incarnation a node's commit and applied
  indexes never decrease, and different nodes never commit different entries
  at the same index. Commits are registered only once the Ready carrying
  them is durable (a single-voter leader counts its own unsynced entries).

Facts are registered when they are **durable**, as the Ready contract
defines it, not when a Ready is handed out. :meth:`SafetyChecker.on_ready`
only notes what a Ready claims (the node leads its term, these entries follow
these terms) and checks what cannot depend on durability (append-only,
monotonic commit); :meth:`SafetyChecker.on_durable` registers the claims once
the driver has synced that Ready, and :meth:`SafetyChecker.on_start`
registers the entries a restarted node really recovered (a crash may keep
part of an unsynced write). A Ready lost in a crash revealed nothing -- its
messages were never sent -- so it is as if it never happened: a single-voter
leader that wins an election and appends in the same Ready, then crashes
before the fsync, restarts in the older term, and another node may then
lead that term and write different entries there. Registering such a Ready
at hand-out raised false Election Safety and Log Matching alarms on harsh
fault mixes (``scripts/simulate.py --mix harsh --seed 20562``).

A violation raises :class:`InvariantViolation` naming the property.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from cellmesh.consensus.core import RaftCore, Ready
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.types import Entry, EntryKind, Role
from cellmesh.errors import CellmeshError


class InvariantViolation(CellmeshError, AssertionError):
    """A Raft safety property failed; ``property`` names which one."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.property = prop
        self.detail = detail


_EntryKey = tuple[EntryKind, bytes]


@attrs.define(eq=False)
class _NodeMarks:
    commit: int = 0  #: highest commit index made durable
    mem_commit: int = 0  #: highest commit index seen in memory (this incarnation)
    applied: int = 0
    leader_term: int = 0
    leader_last: int = 0
    leader_last_term: int = 0


@attrs.frozen(kw_only=True)
class _Claims:
    """What one Ready claims; registered by :meth:`SafetyChecker.on_durable`.

    ``leader_term`` is the term the node led when the Ready was taken (0: not
    leader); ``incomplete`` a Leader Completeness problem found then;
    ``entries`` each persisted entry with the term of the entry before it.
    """

    leader_term: int
    incomplete: str | None
    entries: tuple[tuple[Entry, int | None], ...]


@attrs.define(eq=False)
class SafetyChecker:
    """Registries of everything observed so far; see the module docstring."""

    leaders: dict[int, int] = attrs.field(factory=dict)
    entries: dict[tuple[int, int], tuple[EntryKind, bytes, int | None]] = attrs.field(factory=dict)
    committed: dict[int, tuple[int, _EntryKey]] = attrs.field(factory=dict)
    applied: dict[int, tuple[int, _EntryKey]] = attrs.field(factory=dict)
    votes: dict[tuple[int, int], int] = attrs.field(factory=dict)
    revealed_term: dict[int, int] = attrs.field(factory=dict)
    marks: dict[int, _NodeMarks] = attrs.field(factory=dict)
    pending: dict[int, _Claims] = attrs.field(factory=dict)

    def _fail(self, prop: str, detail: str) -> None:
        raise InvariantViolation(prop, detail)

    def on_start(self, node: int, core: RaftCore) -> None:
        """A node (re)started from its durable state."""
        if core.term < self.revealed_term.get(node, 0):
            self._fail(
                "durable term",
                f"node {node} restarted at term {core.term} after revealing term "
                f"{self.revealed_term[node]}",
            )
        self.marks[node] = _NodeMarks(
            commit=core.log.committed, mem_commit=core.log.committed, applied=core.log.applied
        )
        self.pending.pop(node, None)  # a Ready lost in the crash revealed nothing
        log = core.log
        # What survived the crash is durable, synced or not (a flushed prefix).
        for index in range(log.first_index, log.last_index + 1):
            self._register_entry(log.entry(index), log.term(index - 1))
        self._register_commits(node, core, core.log.snapshot.meta.index, core.log.committed)

    def on_ready(self, node: int, core: RaftCore, rd: Ready) -> None:
        """Called with each Ready while the core's log still matches it.

        Notes the Ready's claims (registered by :meth:`on_durable` once it is
        synced) and checks Leader Append-Only and monotonic commit.
        """
        marks = self.marks[node]
        log = core.log
        entries: list[tuple[Entry, int | None]] = []
        prev_term = log.term(rd.entries[0].index - 1) if rd.entries else None
        for e in rd.entries:
            entries.append((e, prev_term))
            prev_term = e.term
        leader_term = 0
        incomplete = None
        if core.role is Role.LEADER:
            leader_term = core.term
            if marks.leader_term == core.term:
                self._check_append_only(node, core, rd, marks)
            else:
                incomplete = self._completeness_problem(node, core)
            marks.leader_term = core.term
            marks.leader_last = log.last_index
            marks.leader_last_term = log.last_term
        else:
            marks.leader_term = 0
        if log.committed < marks.mem_commit:
            self._fail(
                "monotonic commit",
                f"node {node} commit went {marks.mem_commit} -> {log.committed}",
            )
        marks.mem_commit = log.committed
        self.pending[node] = _Claims(
            leader_term=leader_term, incomplete=incomplete, entries=tuple(entries)
        )

    def on_durable(self, node: int, core: RaftCore, rd: Ready) -> None:
        """Called once ``rd`` was synced: its commit index is now safe to rely on.

        (A single-voter leader counts its own entries before they are durable;
        only after the sync is its commit index a fact.) The Ready's claims
        noted by :meth:`on_ready` are registered here: Log Matching for its
        entries, Election Safety and Leader Completeness for its leadership.
        """
        marks = self.marks[node]
        claims = self.pending.pop(node, None)
        if claims is not None:
            for e, prev_term in claims.entries:
                self._register_entry(e, prev_term)
            if claims.leader_term:
                owner = self.leaders.setdefault(claims.leader_term, node)
                if owner != node:
                    self._fail(
                        "Election Safety",
                        f"nodes {owner} and {node} both lead term {claims.leader_term}",
                    )
                if claims.incomplete is not None:
                    self._fail("Leader Completeness", claims.incomplete)
        # Committed-entry agreement, for the commit index this Ready made durable
        # (the core may have moved on if the driver let input in meanwhile).
        durable = rd.hard_state.commit if rd.hard_state is not None else marks.commit
        if durable > marks.commit:
            self._register_commits(node, core, marks.commit, durable)
            marks.commit = durable
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            known = self.committed.get(meta.index)
            if known is not None and known[0] != meta.term:
                self._fail(
                    "State Machine Safety",
                    f"node {node} installs snapshot ({meta.index}, {meta.term}) but "
                    f"term {known[0]} was committed there",
                )

    def _check_append_only(self, node: int, core: RaftCore, rd: Ready, marks: _NodeMarks) -> None:
        log = core.log
        t = log.term(marks.leader_last)
        if log.last_index < marks.leader_last or (t is not None and t != marks.leader_last_term):
            self._fail(
                "Leader Append-Only",
                f"leader {node} of term {core.term} lost or rewrote index {marks.leader_last}",
            )
        if rd.entries and rd.entries[0].index <= marks.leader_last:
            self._fail(
                "Leader Append-Only",
                f"leader {node} rewrote entries from {rd.entries[0].index}",
            )

    def _completeness_problem(self, node: int, core: RaftCore) -> str | None:
        """Why a new leader's log lacks a committed entry, or ``None`` if it holds all."""
        log = core.log
        snap = log.snapshot.meta
        for index, (term, _key) in self.committed.items():
            if index > log.last_index:
                return f"leader {node} of term {core.term} lacks committed index {index}"
            if index < snap.index:
                continue
            if log.term(index) != term:
                return (
                    f"leader {node} of term {core.term} has term {log.term(index)} at "
                    f"committed index {index} (committed term {term})"
                )
        return None

    def _register_entry(self, e: Entry, prev_term: int | None) -> None:
        key = (e.index, e.term)
        value = (e.kind, e.data, prev_term)
        known = self.entries.setdefault(key, value)
        if known != value:
            self._fail(
                "Log Matching",
                f"two different entries at index {e.index} term {e.term}: {known!r} vs {value!r}",
            )

    def _register_commits(self, node: int, core: RaftCore, lo: int, hi: int) -> None:
        log = core.log
        for i in range(max(lo, log.snapshot.meta.index) + 1, hi + 1):
            e = log.entry(i)
            value = (e.term, (e.kind, e.data))
            known = self.committed.setdefault(i, value)
            if known != value:
                self._fail(
                    "State Machine Safety",
                    f"node {node} committed {value!r} at index {i}, another node {known!r}",
                )

    def on_apply(self, node: int, entries: Iterable[Entry]) -> None:
        """A node applied ``entries`` (in order) to its state machine."""
        marks = self.marks[node]
        for e in entries:
            if e.index != marks.applied + 1:
                self._fail(
                    "monotonic apply",
                    f"node {node} applied index {e.index} right after {marks.applied}",
                )
            value = (e.term, (e.kind, e.data))
            known = self.applied.setdefault(e.index, value)
            if known != value:
                self._fail(
                    "State Machine Safety",
                    f"node {node} applied {value!r} at index {e.index}, another node {known!r}",
                )
            marks.applied = e.index

    def on_restore(self, node: int, index: int) -> None:
        """A node restored its state machine from a snapshot ending at ``index``."""
        self.marks[node].applied = index

    def on_send(self, m: Message) -> None:
        """A message left a node (after its Ready was persisted)."""
        if m.type is MessageType.VOTE_RESP and not m.reject:
            voted = self.votes.setdefault((m.src, m.term), m.dst)
            if voted != m.dst:
                self._fail(
                    "one vote per term",
                    f"node {m.src} voted for {voted} and {m.dst} in term {m.term}",
                )
        if m.type not in (
            MessageType.PRE_VOTE,
            MessageType.PRE_VOTE_RESP,
        ) and m.term > self.revealed_term.get(m.src, 0):
            self.revealed_term[m.src] = m.term

    def check_logs_pairwise(self, cores: dict[int, RaftCore]) -> None:
        """Log Matching checked directly between every pair of live logs."""
        ids = sorted(cores)
        for ai, a in enumerate(ids):
            for b in ids[ai + 1 :]:
                la, lb = cores[a].log, cores[b].log
                lo = max(la.first_index, lb.first_index)
                hi = min(la.last_index, lb.last_index)
                top = 0
                for i in range(hi, lo - 1, -1):
                    if la.term(i) == lb.term(i):
                        top = i
                        break
                for i in range(lo, top + 1):
                    if la.entry(i) != lb.entry(i):
                        self._fail(
                            "Log Matching",
                            f"nodes {a} and {b} agree at index {top} but differ at {i}",
                        )
