"""A lossless, hand-driven network of Raft cores for unit tests.

Theory of operation: :class:`RaftNet` owns several :class:`RaftCore` objects
and plays the driver for each of them with perfect storage: :meth:`flush`
takes every ``Ready`` (persisting it to an in-memory copy, applying committed
entries, queueing messages) and :meth:`deliver` hands queued messages to their
destinations, optionally through a filter that may drop them. Nothing is
random unless the test seeds the injected generators; tests drive time with
:meth:`tick` explicitly, so every scenario of the Raft paper can be staged
step by step and stays synchronous and sleep-free.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import attrs

from cellmesh.consensus.core import RaftConfig, RaftCore, Ready
from cellmesh.consensus.messages import Message
from cellmesh.consensus.types import Entry, HardState, JoinState, ReadState, Role, Snapshot


@attrs.define(eq=False)
class PerfectStorage:
    """What one node durably holds, under a driver that never crashes mid-write."""

    hard_state: HardState = attrs.field(factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.field(factory=list)
    applied: list[Entry] = attrs.field(factory=list)
    read_states: list[ReadState] = attrs.field(factory=list)

    def persist(self, rd: Ready) -> None:
        """Store ``rd``'s snapshot, entries and hard state (step 1 of the contract)."""
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = [e for e in self.entries if e.index > rd.snapshot.meta.index]
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state


MessageFilter = Callable[[Message], bool]


@attrs.define(eq=False)
class RaftNet:
    """Several cores wired by a queue of messages; see the module docstring."""

    nodes: dict[int, RaftCore]
    storage: dict[int, PerfectStorage]
    queue: list[Message] = attrs.field(factory=list)
    down: set[int] = attrs.field(factory=set)

    @classmethod
    def create(
        cls,
        ids: Iterable[int],
        *,
        learners: Iterable[int] = (),
        seed: int = 0,
        configure: Callable[[int], RaftConfig] | None = None,
    ) -> RaftNet:
        """Build a fresh cluster with bootstrap voters ``ids`` and ``learners``."""
        voters = tuple(ids)
        lrn = tuple(learners)
        nodes = {}
        for n in voters + lrn:
            cfg = configure(n) if configure else RaftConfig(id=n)
            nodes[n] = RaftCore(cfg, random.Random(seed * 1000 + n), voters=voters, learners=lrn)
        return cls(nodes=nodes, storage={n: PerfectStorage() for n in nodes})

    @classmethod
    def from_cores(cls, cores: Iterable[RaftCore]) -> RaftNet:
        """Wire already-built cores (for example from :func:`make_core`)."""
        nodes = {c.id: c for c in cores}
        return cls(nodes=nodes, storage={n: PerfectStorage() for n in nodes})

    def flush(self) -> None:
        """Run every node's Ready cycle until none has work; queue the messages."""
        busy = True
        while busy:
            busy = False
            for n, core in self.nodes.items():
                if n in self.down or not core.has_ready():
                    continue
                busy = True
                rd = core.ready()
                st = self.storage[n]
                st.persist(rd)
                self.queue.extend(rd.messages)
                if rd.snapshot is not None:
                    st.applied = [e for e in st.applied if e.index <= rd.snapshot.meta.index]
                st.applied.extend(rd.committed_entries)
                st.read_states.extend(rd.read_states)
                core.advance(rd)

    def take(self, pred: MessageFilter | None = None) -> list[Message]:
        """Flush, then remove and return queued messages matching ``pred``."""
        self.flush()
        taken = [m for m in self.queue if pred is None or pred(m)]
        self.queue = [m for m in self.queue if not (pred is None or pred(m))]
        return taken

    def deliver(self, drop: MessageFilter | None = None, *, rounds: int = 100) -> None:
        """Deliver queued messages (and their consequences) until quiet.

        Messages for down or unknown nodes, or for which ``drop`` returns True,
        are lost.
        """
        for _ in range(rounds):
            self.flush()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                lost = m.dst in self.down or m.src in self.down or m.dst not in self.nodes
                if lost or (drop and drop(m)):
                    continue
                self.nodes[m.dst].step(m)
        self.flush()

    def tick(self, times: int = 1, *, only: Iterable[int] | None = None) -> None:
        """Tick the given (default: all up) nodes ``times`` times, delivering in between."""
        targets = list(only) if only is not None else list(self.nodes)
        for _ in range(times):
            for n in targets:
                if n not in self.down:
                    self.nodes[n].tick()
            self.deliver()

    def campaign(self, node: int) -> None:
        """Tick ``node`` until its election timer fires, then deliver the election.

        Gives up after ``2 * election_tick`` ticks (a learner never campaigns).
        """
        core = self.nodes[node]
        for _ in range(2 * core.config.election_tick):
            if core.role is not Role.FOLLOWER or node in self.down:
                break
            core.tick()
        self.deliver()

    def leader(self) -> int | None:
        """The id of the single up node that believes it leads in the highest term."""
        leaders = [
            (c.term, n)
            for n, c in self.nodes.items()
            if c.role is Role.LEADER and n not in self.down
        ]
        return max(leaders)[1] if leaders else None

    def applied_data(self, node: int) -> list[bytes]:
        """The data of NORMAL entries ``node`` applied, in order."""
        return [e.data for e in self.storage[node].applied if e.kind.name == "NORMAL"]


def make_core(
    node: int,
    voters: Iterable[int],
    *,
    learners: Iterable[int] = (),
    term: int = 0,
    vote: int | None = None,
    commit: int = 0,
    log_terms: Iterable[int] = (),
    seed: int = 0,
    pre_vote: bool = False,
    check_quorum: bool = False,
    election_tick: int = 10,
    heartbeat_tick: int = 1,
    max_inflight: int = 64,
    max_bytes_per_message: int = 1 << 20,
    max_committed_bytes_per_ready: int = 1 << 20,
    join: JoinState | None = None,
) -> RaftCore:
    """A core restarted from a hand-written durable state.

    ``log_terms`` lists the term of each entry from index 1 (data ``b"<i>"``),
    which is how the paper's figures describe logs. Pre-vote and
    check-quorum default to off so paper-section tests see plain Raft.
    ``join`` makes it a joining node (see :class:`JoinState`).
    """
    entries = [
        Entry(index=i, term=t, data=str(i).encode()) for i, t in enumerate(log_terms, start=1)
    ]
    cfg = RaftConfig(
        id=node,
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        max_inflight=max_inflight,
        max_bytes_per_message=max_bytes_per_message,
        max_committed_bytes_per_ready=max_committed_bytes_per_ready,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
    )
    return RaftCore(
        cfg,
        random.Random(seed * 1000 + node),
        voters=voters,
        learners=learners,
        hard_state=HardState(term=term, vote=vote, commit=commit),
        entries=entries,
        join=join,
    )


def drain(core: RaftCore) -> list[Message]:
    """Run ``core``'s Ready cycles (perfect storage) and return the messages to send."""
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages)
        core.advance(rd)
    return out
