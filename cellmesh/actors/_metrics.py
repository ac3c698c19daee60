"""Per-cell metrics the root keeps for Prometheus: accumulation and labels (pure).

Theory of operation
-------------------
Cells report :class:`~cellmesh.actors.control.CellStats` about once a second
(counters cumulative per process, a histogram of the interval's sampled
call durations). The root passes every report through :func:`accept_stats`
(always: it bounds what a cell can make the root hold) and, when metrics are
served, to :meth:`MeshMetrics.observe_stats`, which turns the per-process
counters into per-cell totals that only ever grow: a new process (another
pid) or a counter that went down starts from zero again, so a restart never
makes a total go back. Exits are counted by kind (:meth:`MeshMetrics.observe_exit`);
restarts, CPU time and memory are sampled from the root's own view of its
slots when Prometheus scrapes (:meth:`MeshMetrics.sample`).

Labels are bounded, because cells are untrusted and a cell must not be able
to create label values: a cell declared in the manifest is labelled with its
name; every dynamic child of a declared cell is counted under
``<parent>.*``; control-API spawns under ``~spawned``; anything else under
``~dynamic``. So the number of series is at most twice the number of
declared cells plus two, whatever the cells do (a ``cellmesh reload`` that
adds a cell declares it: the operator's manifests, never a cell, name the
labels). A replica ``X/i`` of a declared replicated cell is counted under
``X``; its Raft figures are labelled ``cell="X", replica="i"``, the id the
root allocated (at most :data:`~cellmesh.actors.membership.MAX_MEMBERS` per
group), never a value a replica reports.

Raft figures: the replicas' :class:`~cellmesh.actors.control.ReplicaStats`
(validated by the root before they get here) are read at scrape time; the
only accumulation is :meth:`MeshMetrics.observe_leader`, which counts each
replica's leader changes (a new ``(term, leader)`` it reports after the
first one), so the counter survives its process's restarts.

Pure: no I/O and no clock; the driver (:mod:`._metrics_http`) reads
``/proc`` and serves the text format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Literal, Protocol

import attrs

from ..errors import ConfigError
from ._stats import RTT_BUCKETS_US
from .control import CellStats, ReplicaStats
from .membership import parse_replica_name
from .policy import AbnormalExit, ExitReason, NormalExit

#: Label of operator-spawned cells (SpawnCell).
SPAWNED: Final = "~spawned"
#: The manifest key of an operator-spawned cell.
SPAWN_KEY: Final = "SpawnCell"
#: Label of cells that are neither declared, nor children of a declared cell, nor spawned.
DYNAMIC: Final = "~dynamic"
#: A counter a cell reports above this is not believed (2**53: exact in a float).
MAX_COUNT: Final = 1 << 53
#: A service time a cell reports above this (an hour, in microseconds) is not believed:
#: its percentiles become None, and no sampled call counts for more in the sum.
MAX_RTT_US: Final = 3600.0 * 1_000_000
#: Buckets a CellStats histogram must have.
BUCKET_COUNT: Final = len(RTT_BUCKETS_US) + 1

ExitKind = Literal["normal", "shutdown", "abnormal"]


class CellRef(Protocol):
    """What labels a cell: its name, its parent (dynamic children), its manifest key."""

    @property
    def name(self) -> str: ...

    @property
    def parent(self) -> str | None: ...

    @property
    def key(self) -> str: ...
EXIT_KINDS: Final[tuple[ExitKind, ...]] = ("normal", "shutdown", "abnormal")


def exit_kind(reason: ExitReason) -> ExitKind:
    """``normal``, ``shutdown`` or ``abnormal`` (the ``kind`` label of exits)."""
    if isinstance(reason, AbnormalExit):
        return "abnormal"
    return "normal" if isinstance(reason, NormalExit) else "shutdown"


def _count(value: object) -> int:
    """A reported counter as the root believes it: an int in [0, MAX_COUNT], else 0."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        return 0
    return value


def _duration_bound(buckets: tuple[int, ...]) -> float:
    """The largest believable sum of durations (us) of the calls ``buckets`` counts: each
    at its bucket's upper bound, those above the last bound at :data:`MAX_RTT_US`."""
    bounds = (*(float(b) for b in RTT_BUCKETS_US), MAX_RTT_US)
    return math.fsum(count * bound for count, bound in zip(buckets, bounds, strict=True))


def accept_stats(stats: CellStats) -> CellStats:
    """``stats`` as the root keeps it (see the module doc).

    Every number is bounded, because cells are untrusted and what the root
    keeps is printed by ``status`` and ``top`` and served to Prometheus:
    counters outside ``[0, 2**53]`` become 0; a histogram whose shape is not
    ``BUCKET_COUNT`` believable counts with a finite, non-negative sum is
    dropped (so a cell cannot make the root hold a large tuple), and its sum
    is capped at what its counts allow (each call at most its bucket's bound,
    :data:`MAX_RTT_US` above the last); percentiles that are not finite and in
    ``[0, MAX_RTT_US]`` become None.
    """
    buckets = stats.rtt_buckets
    total = stats.rtt_sum_us
    good = (
        len(buckets) == BUCKET_COUNT
        and all(type(b) is int and 0 <= b <= MAX_COUNT for b in buckets)
        and isinstance(total, float) and math.isfinite(total) and total >= 0.0
    )

    def pct(value: float | None) -> float | None:
        ok = isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= MAX_RTT_US
        return value if ok else None

    return CellStats(
        msgs_in=_count(stats.msgs_in), msgs_out=_count(stats.msgs_out),
        errors=_count(stats.errors), rtt_p50_us=pct(stats.rtt_p50_us),
        rtt_p99_us=pct(stats.rtt_p99_us), rtt_buckets=tuple(buckets) if good else (),
        rtt_sum_us=min(total, _duration_bound(tuple(buckets))) if good else 0.0,
    )


def parse_address(text: str, *, source: str = "--metrics") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ConfigError naming ``source``."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ConfigError(source, f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    return host, int(port)


@attrs.define(eq=False)
class CellTotals:
    """Everything counted under one label since the root started."""

    msgs_in: int = 0
    msgs_out: int = 0
    errors: int = 0
    #: Sampled calls per bucket (not cumulative), and their total duration.
    rtt_buckets: list[int] = attrs.Factory(lambda: [0] * BUCKET_COUNT)
    rtt_sum_us: float = 0.0
    restarts: int = 0
    cpu_seconds: float = 0.0
    exits: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(EXIT_KINDS, 0))


@attrs.frozen(kw_only=True)
class SlotRow:
    """One slot as :meth:`MeshMetrics.sample` needs it (read by the driver)."""

    name: str
    parent: str | None
    spawned: bool
    running: bool
    restarts: int
    pid: int | None
    rss: int | None
    cpu_seconds: float | None


@attrs.frozen(kw_only=True)
class LabelGauges:
    """The current (not accumulated) figures of one label."""

    running: int
    rss: int


@attrs.define(eq=False)
class MeshMetrics:
    """The root's per-label totals (see the module doc). One per root."""

    declared: frozenset[str]
    totals: dict[str, CellTotals] = attrs.Factory(dict)
    _stats: dict[str, tuple[int | None, CellStats]] = attrs.Factory(dict)
    _restarts: dict[str, int] = attrs.Factory(dict)
    _cpu: dict[str, tuple[int, float]] = attrs.Factory(dict)
    #: (group, replica) -> leader changes it reported; and the last (term, leader).
    leader_changes: dict[tuple[str, int], int] = attrs.Factory(dict)
    _leaders: dict[tuple[str, int], tuple[int, int]] = attrs.Factory(dict)

    def label(self, name: str, parent: str | None, *, spawned: bool = False) -> str:
        """The label value of cell ``name`` (bounded: see the module doc)."""
        if name in self.declared:
            return name
        if parent is not None and parent in self.declared:
            return f"{parent}.*"
        replica = parse_replica_name(name)
        if replica is not None and replica[0] in self.declared:
            return replica[0]  # a replica counts under its replicated cell
        return SPAWNED if spawned else DYNAMIC

    def observe_leader(self, group: str, replica: int, stats: ReplicaStats) -> None:
        """Count a leader change of ``replica`` of ``group`` when ``stats`` (validated by the
        root) names another ``(term, leader)`` than the last it reported."""
        if group not in self.declared or stats.leader is None:
            return
        key = (group, replica)
        now = (stats.term, stats.leader)
        last = self._leaders.get(key)
        if last is not None and last != now:
            self.leader_changes[key] = self.leader_changes.get(key, 0) + 1
        self._leaders[key] = now

    def declare(self, name: str) -> None:
        """Cell ``name`` is declared from now on (a reload added it): it gets its own label.

        Names are never undeclared: a removed cell's totals stay as they were.
        """
        self.declared = self.declared | {name}

    def _totals(self, label: str) -> CellTotals:
        totals = self.totals.get(label)
        if totals is None:
            totals = self.totals[label] = CellTotals()
        return totals

    def observe_stats(self, cell: CellRef, pid: int | None, stats: CellStats) -> None:
        """Add what ``stats`` (already :func:`accept_stats`-ed) says since the last report
        of ``cell``'s process ``pid``."""
        name = cell.name
        totals = self._totals(self.label(name, cell.parent, spawned=cell.key == SPAWN_KEY))
        last = self._stats.get(name)
        base = last[1] if last is not None and last[0] == pid else None

        def delta(cur: int, before: int | None) -> int:
            return cur - before if before is not None and cur >= before else cur

        totals.msgs_in += delta(stats.msgs_in, None if base is None else base.msgs_in)
        totals.msgs_out += delta(stats.msgs_out, None if base is None else base.msgs_out)
        totals.errors += delta(stats.errors, None if base is None else base.errors)
        if len(stats.rtt_buckets) == BUCKET_COUNT:
            for i, count in enumerate(stats.rtt_buckets):
                totals.rtt_buckets[i] += count
            totals.rtt_sum_us += stats.rtt_sum_us
        self._stats[name] = (pid, stats)

    def forget(self, name: str) -> None:
        """Cell ``name``'s slot is gone (a dynamic child stopped): drop what was kept
        for it now, not at the next scrape, so an endpoint nobody scrapes does not
        let a parent that churns children grow the root's memory."""
        for kept in (self._stats, self._restarts, self._cpu):
            kept.pop(name, None)

    def observe_exit(self, cell: CellRef, reason: ExitReason) -> None:
        """Count one exit of a process of ``cell`` (by :func:`exit_kind`)."""
        label = self.label(cell.name, cell.parent, spawned=cell.key == SPAWN_KEY)
        self._totals(label).exits[exit_kind(reason)] += 1

    def sample(self, rows: Iterable[SlotRow]) -> dict[str, LabelGauges]:
        """Fold the slots' restarts and CPU time into the totals; the current gauges.

        Forgets what it kept for slots that are gone (so memory follows the
        slots, not history).
        """
        running: dict[str, int] = {}
        rss: dict[str, int] = {}
        seen: set[str] = set()
        for row in rows:
            seen.add(row.name)
            label = self.label(row.name, row.parent, spawned=row.spawned)
            totals = self._totals(label)
            before = self._restarts.get(row.name, 0)
            if row.restarts > before:
                totals.restarts += row.restarts - before
            self._restarts[row.name] = row.restarts
            if row.pid is not None and row.cpu_seconds is not None:
                last = self._cpu.get(row.name)
                base = last[1] if last is not None and last[0] == row.pid else 0.0
                if row.cpu_seconds >= base:
                    totals.cpu_seconds += row.cpu_seconds - base
                self._cpu[row.name] = (row.pid, row.cpu_seconds)
            running[label] = running.get(label, 0) + (1 if row.running else 0)
            rss[label] = rss.get(label, 0) + (row.rss or 0)
        for kept in (self._stats, self._restarts, self._cpu):
            for name in [n for n in kept if n not in seen]:
                del kept[name]
        for pairs in (self._leaders, self.leader_changes):
            for key in [k for k in pairs if f"{k[0]}/{k[1]}" not in seen]:
                del pairs[key]  # a removed replica's series end
        return {
            label: LabelGauges(running=running.get(label, 0), rss=rss.get(label, 0))
            for label in self.totals
        }


__all__ = [
    "BUCKET_COUNT",
    "DYNAMIC",
    "EXIT_KINDS",
    "MAX_COUNT",
    "MAX_RTT_US",
    "SPAWNED",
    "SPAWN_KEY",
    "CellRef",
    "CellTotals",
    "ExitKind",
    "LabelGauges",
    "MeshMetrics",
    "SlotRow",
    "accept_stats",
    "exit_kind",
    "parse_address",
]
