"""The pure Raft state machine: ticks and messages in, a ``Ready`` batch out.

Theory of operation
-------------------
:class:`RaftCore` is a sans-I/O implementation of Raft in the style of
etcd-io/raft. It never blocks, never reads a clock and never touches a disk
or a socket: time arrives as :meth:`RaftCore.tick` calls, network input as
:meth:`RaftCore.step`, client input as :meth:`RaftCore.propose` /
:meth:`RaftCore.read_index`, and randomness (election timeouts) from an
injected :class:`RandomSource`. Everything the outside world must do is
collected into a :class:`Ready` value: the driver feeds ``tick``/``step``/
``propose``, and whenever ``has_ready()`` it takes ``ready()``, persists,
sends, applies and serves reads in the order :class:`Ready`'s docstring
states (persist before send, with its one leader exception), then calls
``advance(rd)``. :mod:`cellmesh.consensus.node` is that driver.

Features: leader election with randomized timeouts (section 5.2); pre-vote
(dissertation 9.6) and check-quorum with leader leases against disruptive
servers (dissertation 4.2.3, 6.2); log replication with probing, pipelining
and an in-flight limit (5.3); the commit rule counting replicas only for
entries of the current term (5.4.2, Figure 8); a no-op entry on election
(section 8); ReadIndex linearizable reads (dissertation 6.4); leadership
transfer with TimeoutNow (dissertation 3.10); snapshots, log compaction and
InstallSnapshot (section 7); membership change by **single-server changes,
one at a time, taking effect when appended** (dissertation 4.1, including the
fix that a new leader must commit an entry of its term before a change);
and learners (non-voting members that receive the log).

A leader may remove itself (or demote itself to learner). As in dissertation
4.2.2 it keeps leading a configuration that excludes it -- replicating, but
not counting itself in any majority -- until that configuration commits;
then it sends TimeoutNow to its most up-to-date voter and steps down.
"""

from __future__ import annotations

from collections.abc import Iterable

from cellmesh.consensus import quorum
from cellmesh.consensus.config import RaftConfig, RandomSource
from cellmesh.consensus.errors import (
    ConfigChangeInProgress,
    ConsensusUsageError,
    InvalidConfigChange,
    NotLeader,
    ProposalDropped,
)
from cellmesh.consensus.log import RaftLog
from cellmesh.consensus.messages import Message, MessageType, well_formed
from cellmesh.consensus.progress import Progress, ProgressState
from cellmesh.consensus.readindex import PendingRead, ReadIndexTracker
from cellmesh.consensus.ready import Ready
from cellmesh.consensus.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

MT = MessageType


class RaftCore:
    """One Raft node's protocol state; see the module docstring for the driver loop."""

    def __init__(
        self,
        config: RaftConfig,
        rng: RandomSource,
        *,
        voters: Iterable[int] = (),
        learners: Iterable[int] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Iterable[Entry] = (),
    ) -> None:
        """Start (or restart) a node from its durable state.

        ``voters``/``learners`` give the bootstrap membership and are used only
        when ``snapshot`` is ``None`` (a fresh node); otherwise membership comes
        from the snapshot and the CONFIG entries after it. Every node of a new
        cluster must be given the same bootstrap membership.
        """
        self.config = config
        self.id = config.id
        self._rng = rng
        if snapshot is None:
            snapshot = Snapshot(
                meta=SnapshotMeta(
                    index=0, term=0, voters=frozenset(voters), learners=frozenset(learners)
                )
            )
        hs = hard_state or HardState()
        self.log = RaftLog(snapshot, tuple(entries), hs.commit)
        self.term = hs.term
        self.vote: int | None = hs.vote
        self.lead: int | None = None
        self.role = Role.FOLLOWER
        self.membership = self.log.membership_at(self.log.last_index)
        self._progress: dict[int, Progress] = {}
        self._votes: dict[int, bool] = {}
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads = ReadIndexTracker()
        self._pending_conf_index = 0
        self.lead_transferee: int | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.config.election_tick
        self._reset_randomized_timeout()
        self._prev_hard = HardState(term=self.term, vote=self.vote, commit=self.log.committed)
        self._prev_soft = SoftState(leader=None, role=Role.FOLLOWER)
        self._ready_outstanding = False

    # ------------------------------------------------------------------
    # Observers

    @property
    def hard_state(self) -> HardState:
        """The current (possibly not yet persisted) hard state."""
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    @property
    def soft_state(self) -> SoftState:
        """The current leader and role."""
        return SoftState(leader=self.lead, role=self.role)

    def progress(self, node: int) -> Progress | None:
        """The leader's replication view of ``node`` (``None`` if not leader/unknown)."""
        return self._progress.get(node) if self.role is Role.LEADER else None

    def _promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration may; so may
        a voter whose removal (or demotion) is appended but not yet committed.

        The second case matters: if a leader demotes itself, appends the change
        and crashes, it may be the only node holding the newest log; were it
        barred from campaigning, no one could win (the others' logs are older).
        It may lead a configuration without itself until the change commits
        (dissertation 4.2.2), exactly like a leader that removed itself.
        """
        if self.id in self.membership.voters:
            return True
        return self.id in self.log.membership_at(self.log.committed).voters

    def _leader_hint(self) -> int | None:
        return self.lead if self.lead != self.id else None

    # ------------------------------------------------------------------
    # Inputs

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""
        self._election_elapsed += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self._election_elapsed >= self._randomized_timeout and self._promotable():
            self._election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        if self._election_elapsed >= self.config.election_tick:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = [self.id] + [
                    n for n, pr in self._progress.items() if pr.recent_active and n != self.id
                ]
                for pr in self._progress.values():
                    pr.recent_active = False
                if not quorum.has_quorum(self.membership.voters, active):
                    self._become_follower(self.term, None)
                    return
            self.lead_transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def propose(self, data: bytes) -> int:
        """Append a NORMAL entry carrying ``data``; returns its log index.

        Raises :class:`NotLeader` unless this node is the leader, and
        :class:`ProposalDropped` during a leadership transfer. A returned index
        is not a promise: the entry may still be overwritten if leadership is
        lost before it commits; watch ``committed_entries`` for it.
        """
        return self._propose(EntryKind.NORMAL, data)

    def _propose(self, kind: EntryKind, data: bytes) -> int:
        if self.role is not Role.LEADER:
            raise NotLeader(self._leader_hint())
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is moving to node {self.lead_transferee}")
        index = self.log.last_index + 1
        self._append_entries([Entry(index=index, term=self.term, kind=kind, data=data)])
        self._broadcast_append()
        return index

    def propose_membership(self, membership: Membership) -> int:
        """Propose a single-server membership change; returns the CONFIG entry's index.

        Allowed: add or remove one voter, and any change of learners (a
        learner promoted to voter counts as adding that voter). The change
        takes effect on each node as soon as the entry is appended to its log
        (dissertation 4.1). The leader may remove or demote itself; it steps
        down once the change commits (dissertation 4.2.2). Raises
        :class:`ConfigChangeInProgress` while a previous change (or the new
        leader's first entry) is uncommitted, and :class:`InvalidConfigChange`
        for anything else not allowed.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self._leader_hint())
        if self._pending_conf_index > self.log.committed:
            raise ConfigChangeInProgress(self._pending_conf_index)
        cur = self.membership
        if membership.voters & membership.learners:
            raise InvalidConfigChange("a node cannot be both voter and learner")
        if not membership.voters:
            raise InvalidConfigChange("the cluster needs at least one voter")
        if len(cur.voters ^ membership.voters) > 1:
            raise InvalidConfigChange("only one voter may be added or removed at a time")
        if any(n <= 0 for n in membership.members):
            raise InvalidConfigChange("node ids must be positive")
        index = self._propose(EntryKind.CONFIG, membership.encode())
        self._pending_conf_index = index
        return index

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read (dissertation 6.4).

        Later, a :class:`ReadState` with ``context`` appears in a ``Ready``:
        the read may be served once the state machine has applied its index.
        The request may be silently dropped if leadership changes (a forwarded
        read that reaches a non-leader is dropped too); callers retry on
        timeout. Raises :class:`NotLeader` if no leader is known.
        """
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.lead is not None and self.role is Role.FOLLOWER:
            self._send(MT.READ_INDEX, self.lead, context=context)
        else:
            raise NotLeader(self._leader_hint())

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to voter ``target`` (dissertation 3.10).

        The leader stops accepting proposals, brings ``target`` up to date, then
        sends it TimeoutNow. The transfer is abandoned after an election
        timeout if it has not completed.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self._leader_hint())
        if target == self.id:
            return
        if target not in self.membership.voters:
            raise InvalidConfigChange(f"node {target} is not a voter")
        self.lead_transferee = target
        self._election_elapsed = 0
        pr = self._progress[target]
        if pr.match == self.log.last_index:
            self._send(MT.TIMEOUT_NOW, target)
        else:
            self._send_append(target)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Record a state-machine snapshot taken at applied ``index``; drop older entries.

        Returns the :class:`Snapshot` (with the membership in effect at
        ``index``). The driver must persist it durably *before* deleting the
        covered entries from its own storage.
        """
        term = self.log.term(index)
        if term is None:
            raise ConsensusUsageError(f"index {index} is not in the log")
        m = self.log.membership_at(index)
        snap = Snapshot(
            meta=SnapshotMeta(index=index, term=term, voters=m.voters, learners=m.learners),
            data=data,
        )
        self.log.compact(snap)
        return snap

    # ------------------------------------------------------------------
    # Ready / advance

    def has_ready(self) -> bool:
        """Whether :meth:`ready` would return anything to do."""
        log = self.log
        hs, soft = self._prev_hard, self._prev_soft
        return bool(
            self._msgs
            or self._read_states
            or log.stabled < log.last_index
            or log.pending_snapshot is not None
            or self.term != hs.term
            or self.vote != hs.vote
            or log.committed != hs.commit
            or self.lead != soft.leader
            or self.role is not soft.role
            or log.committed > max(log.applied, log.snapshot.meta.index)
        )

    def ready(self) -> Ready:
        """Collect pending work; see :class:`Ready` for the ordering contract."""
        if self._ready_outstanding:
            raise ConsensusUsageError("advance() the previous Ready before asking for another")
        self._ready_outstanding = True
        hs = self.hard_state
        soft = self.soft_state
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hs if hs != self._prev_hard else None,
            entries=self.log.unstable_entries(),
            snapshot=self.log.pending_snapshot,
            committed_entries=self.log.next_committed_entries(),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
        )
        self._msgs.clear()
        self._read_states.clear()
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        if not self._ready_outstanding:
            raise ConsensusUsageError("advance() without an outstanding Ready")
        self._ready_outstanding = False
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            if self.log.pending_snapshot is rd.snapshot:
                self.log.pending_snapshot = None
            self.log.applied_to(rd.snapshot.meta.index)
        # The persisted entries are stable as far as the log still holds them
        # (a step since ready() may have replaced a suffix; by Log Matching the
        # last entry that still matches vouches for all before it).
        for e in reversed(rd.entries):
            if self.log.match_term(e.index, e.term):
                self.log.stable_to(e.index, e.term)
                break
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    # ------------------------------------------------------------------
    # Role transitions

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._progress = {}
        self._reads.reset()
        self.lead_transferee = None

    def _reset_randomized_timeout(self) -> None:
        et = self.config.election_tick
        self._randomized_timeout = self._rng.randrange(et, 2 * et)

    def _become_follower(self, term: int, lead: int | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither the term nor the vote (dissertation 9.6).
        self._votes = {}
        self._progress = {}
        self.role = Role.PRE_CANDIDATE
        self.lead = None

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        last = self.log.last_index
        for n in self.membership.members | {self.id}:
            self._progress[n] = self._new_progress(n, last)
        # Section 8: commit an entry of the new term at once (a no-op). Until it
        # commits, no membership change is accepted (dissertation 4.1 fix).
        self._pending_conf_index = last + 1
        self._append_entries([Entry(index=last + 1, term=self.term, kind=EntryKind.NOOP)])
        self._broadcast_append()

    def _new_progress(self, node: int, last: int) -> Progress:
        pr = Progress(match=0, next=last + 1, max_inflight=self.config.max_inflight)
        if node == self.id:
            pr.match = last
            pr.become_replicate()
        pr.recent_active = True
        return pr

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self._votes[self.id] = True
        if self._tally() is quorum.VoteResult.WON:
            self._won_election(pre_vote)
            return
        for n in sorted(self.membership.voters):
            if n != self.id:
                self._msgs.append(
                    Message(
                        type=vote_type,
                        src=self.id,
                        dst=n,
                        term=term,
                        index=self.log.last_index,
                        log_term=self.log.last_term,
                        transfer=transfer,
                    )
                )

    def _tally(self) -> quorum.VoteResult:
        return quorum.vote_result(self.membership.voters, self._votes)

    def _won_election(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False, transfer=False)
        else:
            self._become_leader()

    # ------------------------------------------------------------------
    # Message handling

    def step(self, m: Message) -> None:
        """Feed one message received from a peer.

        Messages for another node, from an older term, or malformed (see
        :func:`well_formed`) are ignored: a bad peer cannot corrupt the log.
        """
        if m.dst != self.id or m.src == self.id or not well_formed(m):
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE) and not m.transfer and self._in_lease():
                # Dissertation 4.2.3: ignore disruptive candidates while a leader is live.
                return
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MT.APPEND, MT.HEARTBEAT):
                # Tell a stale leader about the newer term (it may be partitioned
                # with pre-vote/check-quorum and would never hear otherwise).
                self._send(MT.APPEND_RESP, m.src)
            elif m.type is MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.src, reject=True)
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
            self._maybe_hand_off()
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.lead is not None
            and self._election_elapsed < self.config.election_tick
        )

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.lead is None)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote answers in the term asked about (etcd does the same).
            self._msgs.append(Message(type=resp, src=self.id, dst=m.src, term=m.term))
            if m.type is MT.VOTE:
                self._election_elapsed = 0
                self.vote = m.src
        else:
            self._send(resp, m.src, reject=True)

    def _step_follower(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self._election_elapsed = 0
            self.lead = m.src
            if m.type is MT.APPEND:
                self._handle_append(m)
            elif m.type is MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif m.type is MT.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre_vote=False, transfer=True)
        elif m.type is MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(index=m.index, context=m.context))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            # Section 5.2: a candidate that hears from a leader of its term steps down.
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        expected = MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type is not expected:
            return
        self._votes.setdefault(m.src, not m.reject)
        result = self._tally()
        if result is quorum.VoteResult.WON:
            self._won_election(self.role is Role.PRE_CANDIDATE)
        elif result is quorum.VoteResult.LOST:
            self._become_follower(self.term, None)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(MT.APPEND_RESP, m.src, index=self.log.committed)
            return
        res = self.log.maybe_append(m.index, m.log_term, m.entries)
        if res is None:
            # Section 5.3's optimization: point the leader at the last entry
            # whose term is <= the rejected one, and say which term it has,
            # so it can skip a whole conflicting term in one round trip.
            hint = self.log.find_conflict_by_term(min(m.index, self.log.last_index), m.log_term)
            self._send(
                MT.APPEND_RESP,
                m.src,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=self.log.term(hint) or 0,
            )
            return
        last_new, config_changed = res
        if config_changed:
            self.membership = self.log.membership_at(self.log.last_index)
        self.log.commit_to(min(m.commit, last_new))
        self._send(MT.APPEND_RESP, m.src, index=last_new)

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index))
        self._send(MT.HEARTBEAT_RESP, m.src, read_seq=m.read_seq)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        meta = snap.meta
        if meta.index <= self.log.committed:
            self._send(MT.APPEND_RESP, m.src, index=self.log.committed)
            return
        if self.log.match_term(meta.index, meta.term):
            # We already hold this prefix: just fast-forward the commit index.
            self.log.commit_to(meta.index)
        else:
            self.log.restore(snap)
            self.membership = Membership.of_snapshot(meta)
        self._send(MT.APPEND_RESP, m.src, index=self.log.last_index)

    # -- leader side -----------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        pr = self._progress.get(m.src)
        if m.type is MT.READ_INDEX:
            self._leader_read(m.context, m.src)
            return
        if pr is None:
            return
        if m.type is MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif m.type is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            elif pr.state is ProgressState.REPLICATE and pr.is_paused():
                pr.inflights.popleft()  # an ack may have been lost; make room (etcd does too)
            if pr.match < self.log.last_index:
                self._send_append(m.src, send_if_empty=True)
            if self._reads.ack(m.src, m.read_seq):
                for r in self._reads.release(self.id, self.membership.voters):
                    self._deliver_read(r)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe = self.log.find_conflict_by_term(probe, m.log_term)
            if pr.maybe_decrease_to(m.index, probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        if m.index > self.log.last_index:
            return  # acknowledges entries we never sent: ignore
        old_paused = pr.is_paused()
        advanced = pr.maybe_update(m.index)
        probe_matched = pr.state is ProgressState.PROBE and m.index == pr.match
        if not advanced and not probe_matched:
            if old_paused and not pr.is_paused():
                self._send_append(m.src)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
        if self._maybe_commit():
            self._broadcast_append()
        else:
            self._send_append(m.src)
        # Keep the pipeline full while there is more to send.
        while pr.state is ProgressState.REPLICATE and pr.next <= self.log.last_index:
            before = pr.next
            self._send_append(m.src)
            if pr.next == before:
                break
        if m.src == self.lead_transferee and pr.match == self.log.last_index:
            self._send(MT.TIMEOUT_NOW, m.src)

    def _append_entries(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        if any(e.kind is EntryKind.CONFIG for e in entries):
            self._apply_membership(self.log.membership_at(self.log.last_index))
        self._progress[self.id].maybe_update(self.log.last_index)
        self._maybe_commit()

    def _apply_membership(self, m: Membership) -> None:
        self.membership = m
        for n in m.members:
            if n not in self._progress:
                self._progress[n] = self._new_progress(n, self.log.last_index)
        for n in list(self._progress):
            if n not in m.members and n != self.id:
                del self._progress[n]

    def _maybe_hand_off(self) -> None:
        """Dissertation 4.2.2: a leader removed from the voters leaves once that commits."""
        if (
            self.role is not Role.LEADER
            or self.id in self.membership.voters
            or self.log.committed < self.log.last_config_index()
        ):
            return
        others = [(pr.match, n) for n, pr in self._progress.items() if n in self.membership.voters]
        match, best = max(others)
        if match == self.log.last_index:
            self._send(MT.TIMEOUT_NOW, best)
        self._become_follower(self.term, None)

    def _maybe_commit(self) -> bool:
        """Section 5.4.2: commit by counting replicas only for current-term entries."""
        match = {n: pr.match for n, pr in self._progress.items()}
        mci = quorum.committed_index(self.membership.voters, match)
        if mci <= self.log.committed or self.log.term(mci) != self.term:
            return False
        self.log.commit_to(mci)
        for r in self._reads.take_awaiting_commit():
            self._leader_read(r.context, r.requester)
        return True

    def _send(
        self,
        t: MessageType,
        to: int,
        *,
        index: int = 0,
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        log_term: int = 0,
        read_seq: int = 0,
        context: bytes = b"",
    ) -> None:
        self._msgs.append(
            Message(
                type=t,
                src=self.id,
                dst=to,
                term=self.term,
                index=index,
                commit=commit,
                reject=reject,
                reject_hint=reject_hint,
                log_term=log_term,
                read_seq=read_seq,
                context=context,
            )
        )

    def _send_append(self, to: int, *, send_if_empty: bool = False) -> None:
        """Send ``to`` the entries from its ``next`` (or the snapshot if compacted).

        In REPLICATE state an empty append is only sent when ``send_if_empty``
        (a heartbeat answer showed the follower lags: a lost append must be
        detected by the consistency check).
        """
        pr = self._progress[to]
        if to == self.id or pr.is_paused():
            return
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or pr.next < self.log.first_index:
            self._send_snapshot(to, pr)
            return
        ents = self.log.entries_from(pr.next, self.config.max_entries_per_message)
        if not ents and pr.state is ProgressState.REPLICATE and not send_if_empty:
            return
        self._msgs.append(
            Message(
                type=MT.APPEND,
                src=self.id,
                dst=to,
                term=self.term,
                index=prev,
                log_term=prev_term,
                entries=ents,
                commit=self.log.committed,
            )
        )
        pr.sent_entries(ents[-1].index if ents else prev)

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        snap = self.log.snapshot
        self._msgs.append(
            Message(type=MT.SNAPSHOT, src=self.id, dst=to, term=self.term, snapshot=snap)
        )
        pr.become_snapshot(snap.meta.index)

    def _broadcast_append(self) -> None:
        for n in sorted(self._progress):
            if n != self.id:
                self._send_append(n)

    def _broadcast_heartbeat(self) -> None:
        for n in sorted(self._progress):
            if n != self.id:
                pr = self._progress[n]
                self._send(
                    MT.HEARTBEAT,
                    n,
                    commit=min(pr.match, self.log.committed),
                    read_seq=self._reads.seq,
                )

    # -- ReadIndex (dissertation 6.4) -------------------------------------

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read(self, context: bytes, requester: int) -> None:
        if not self._committed_in_term():
            # 6.4 step 1: the leader must first commit an entry of its own term.
            self._reads.await_commit(context, requester)
            return
        if self.membership.voters == frozenset({self.id}):
            self._deliver_read(PendingRead(0, self.log.committed, context, requester))
            return
        self._reads.add(self.log.committed, context, requester)
        self._broadcast_heartbeat()

    def _deliver_read(self, r: PendingRead) -> None:
        if r.requester == self.id:
            self._read_states.append(ReadState(index=r.index, context=r.context))
        else:
            self._send(MT.READ_INDEX_RESP, r.requester, index=r.index, context=r.context)


# RaftConfig, RandomSource and Ready live in their own modules; they are
# re-exported here because the driver loop is documented against this module.
__all__ = ["RaftConfig", "RaftCore", "RandomSource", "Ready"]
