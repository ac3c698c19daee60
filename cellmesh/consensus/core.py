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

A removed server learns it was removed: the leader keeps replicating to it
until the removing configuration has committed and a grace period passed
(:class:`~cellmesh.consensus.confchange.LeavingTracker`); a server that
missed that finds the leader through its vote requests, which members answer
with a rejection naming the leader and the leader answers by replicating to
it. Once a node holds a committed configuration without itself it is
:attr:`Role.REMOVED`: it never campaigns or votes and refuses requests with
:class:`NodeRemoved`. A *joining* node (:class:`JoinState`) never votes until
a configuration change made after it joined promotes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from cellmesh.consensus import quorum
from cellmesh.consensus._leader import LeaderSide
from cellmesh.consensus.confchange import (
    LeavingTracker,
    became_voter_after,
    check_single_server_change,
)
from cellmesh.consensus.config import RaftConfig, RandomSource
from cellmesh.consensus.errors import (
    ConfigChangeInProgress,
    ConsensusUsageError,
    InvalidConfigChange,
    NodeRemoved,
    NotLeader,
    ProposalDropped,
)
from cellmesh.consensus.log import RaftLog
from cellmesh.consensus.messages import Message, MessageType, well_formed
from cellmesh.consensus.progress import Progress
from cellmesh.consensus.readindex import ReadIndexTracker
from cellmesh.consensus.ready import Ready
from cellmesh.consensus.types import (
    Entry,
    EntryKind,
    HardState,
    JoinState,
    Membership,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

MT = MessageType


class RaftCore(LeaderSide):
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
        join: JoinState | None = None,
    ) -> None:
        """Start (or restart) a node from its durable state.

        ``voters``/``learners`` give the bootstrap membership and are used only
        when ``snapshot`` is ``None`` (a fresh node); otherwise membership comes
        from the snapshot and the CONFIG entries after it. Every node of a new
        cluster must be given the same bootstrap membership. ``join`` is the
        node's durable :class:`JoinState` if it joined an existing cluster with
        an empty log; while it is not ``done`` the bootstrap membership is
        ignored and the node never votes or campaigns.
        """
        self.config = config
        self.id = config.id
        self._rng = rng
        self.join = join
        if self.joining:
            voters = learners = ()
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
        #: Whether this node was ever a member (only a former member can be
        #: removed; a new node waits to be added). Its configurations may have
        #: been compacted away: a node with any durable state counts as one.
        self._was_member = not self.joining and (
            hs.term > 0
            or self.log.last_index > 0
            or any(self.id in m.members for m in self.log.configurations())
        )
        #: The last append showed the leader's commit beyond our log: still catching up.
        self._behind = False
        #: A node outside our configuration named in a vote rejection as the leader.
        self._outside_hint: int | None = None
        self._leaving = LeavingTracker(grace_ticks=2 * config.election_tick)
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
        self._prev_join = join
        self._ready_outstanding = False
        self._check_joined()
        self.role = self._follower_role()

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
        """The leader's replication view of ``node`` (``None`` if not leader/unknown).

        Besides members, the leader tracks recently removed servers until they
        learned of their removal.
        """
        return self._progress.get(node) if self.role is Role.LEADER else None

    @property
    def joining(self) -> bool:
        """Whether this node joined with an empty log and was not yet made a voter."""
        return self.join is not None and not self.join.done

    @property
    def pending_config_index(self) -> int:
        """Index of the latest CONFIG entry if it is not committed yet, else 0."""
        index = self.log.last_config_index()
        return index if index > self.log.committed else 0

    def _promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration may; so may
        a voter whose removal (or demotion) is appended but not yet committed.

        The second case matters: if a leader demotes itself, appends the change
        and crashes, it may be the only node holding the newest log; were it
        barred from campaigning, no one could win (the others' logs are older).
        It may lead a configuration without itself until the change commits
        (dissertation 4.2.2), exactly like a leader that removed itself.
        """
        if self.joining:
            return False
        if self.id in self.membership.voters:
            return True
        return self.id in self.log.membership_at(self.log.committed).voters

    def _leader_hint(self) -> int | None:
        return self.lead if self.lead != self.id else None

    def not_leader(self) -> NotLeader:
        """The error for a request that needs the leader: :class:`NotLeader` with the
        leader hint, or :class:`NodeRemoved` once this node knows it was removed."""
        if self.role is Role.REMOVED:
            return NodeRemoved(self.id, self._leader_hint())
        return NotLeader(self._leader_hint())

    def _removed(self) -> bool:
        """Whether this node knows a committed configuration without itself."""
        return (
            self._was_member
            and not self.joining
            and not self._behind
            and self.id not in self.membership.members
            and self.log.committed >= self.log.last_config_index()
        )

    def _follower_role(self) -> Role:
        return Role.REMOVED if self._removed() else Role.FOLLOWER

    def _set_membership(self, m: Membership) -> None:
        self.membership = m
        if self.id in m.members and not self.joining:
            self._was_member = True

    def _settle_follower(self) -> None:
        """After the log or commit changed on a non-leader: joined? removed? back?"""
        self._check_joined()
        if self.role in (Role.FOLLOWER, Role.REMOVED):
            self.role = self._follower_role()

    def _check_joined(self) -> None:
        """A joining node becomes an ordinary member once a change made after it joined
        promotes it; it then records its vote for the leader it follows in this term
        (it may have voted in this term before its state was wiped)."""
        join = self.join
        if join is None or join.done or join.floor is None:
            return
        if self.lead is not None and became_voter_after(self.log, self.id, join.floor):
            self.join = JoinState(floor=join.floor, done=True)
            self._was_member = True
            if self.vote is None and self.lead is not None:
                self.vote = self.lead

    # ------------------------------------------------------------------
    # Inputs

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""
        self._election_elapsed += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self._election_elapsed >= self._randomized_timeout:
            if self._promotable():
                self._election_elapsed = 0
                self._campaign(pre_vote=self.config.pre_vote, transfer=False)
            elif self._was_member and self.role is Role.FOLLOWER:
                # A learner (or a node whose removal is not known to it) that has
                # heard no leader for an election timeout: ask the voters, so that
                # a removed node finds the leader that can tell it.
                self._election_elapsed = 0
                self._reset_randomized_timeout()
                self._send_vote_requests(MT.PRE_VOTE, self.term + 1, transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        for gone in self._leaving.tick(self.log.committed):
            self._progress.pop(gone, None)
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
            raise self.not_leader()
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
            raise self.not_leader()
        if self._pending_conf_index > self.log.committed:
            raise ConfigChangeInProgress(self._pending_conf_index)
        check_single_server_change(self.membership, membership)
        index = self._propose(EntryKind.CONFIG, membership.encode())
        self._pending_conf_index = index
        return index

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read (dissertation 6.4).

        Later, a :class:`ReadState` with ``context`` appears in a ``Ready``:
        the read may be served once the state machine has applied its index.
        The request may be silently dropped if leadership changes (a forwarded
        read that reaches a non-leader is dropped too); callers retry on
        timeout. Raises :class:`NotLeader` if no leader is known, and
        :class:`NodeRemoved` on a removed node.
        """
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.lead is not None and self.role is Role.FOLLOWER:
            self._send(MT.READ_INDEX, self.lead, context=context)
        else:
            raise self.not_leader()

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to voter ``target`` (dissertation 3.10).

        The leader stops accepting proposals, brings ``target`` up to date, then
        sends it TimeoutNow. The transfer is abandoned after an election
        timeout if it has not completed.
        """
        if self.role is not Role.LEADER:
            raise self.not_leader()
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
            or self.join != self._prev_join
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
            committed_entries=self.log.next_committed_entries(
                self.config.max_committed_bytes_per_ready),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            join=self.join if self.join != self._prev_join else None,
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
        if rd.join is not None:
            self._prev_join = rd.join
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
        self._leaving.clear()
        self._reads.reset()
        self.lead_transferee = None

    def _reset_randomized_timeout(self) -> None:
        et = self.config.election_tick
        self._randomized_timeout = self._rng.randrange(et, 2 * et)

    def _become_follower(self, term: int, lead: int | None) -> None:
        self._reset(term)
        self.lead = lead
        self.role = self._follower_role()

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither the term nor the vote (dissertation 9.6).
        self._votes = {}
        self._progress = {}
        self._leaving.clear()
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
        # Servers the latest change removed may not know it yet: keep them informed.
        config_index = self.log.last_config_index()
        if config_index > self.log.snapshot.meta.index:
            before = self.log.membership_at(config_index - 1)
            for n in sorted(before.members - self.membership.members - {self.id}):
                if self._leaving.add(n, config_index):
                    self._progress[n] = self._new_progress(n, last)
        # Section 8: commit an entry of the new term at once (a no-op). Until it
        # commits, no membership change is accepted (dissertation 4.1 fix).
        self._pending_conf_index = last + 1
        self._append_entries([Entry(index=last + 1, term=self.term, kind=EntryKind.NOOP)])
        self._broadcast_append()

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
        self._send_vote_requests(vote_type, term, transfer=transfer)

    def _send_vote_requests(self, vote_type: MessageType, term: int, *, transfer: bool) -> None:
        """Ask every voter (and a leader named from outside our configuration) for a vote."""
        targets = set(self.membership.voters)
        if self._outside_hint is not None:
            targets.add(self._outside_hint)
        for n in sorted(targets - {self.id}):
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
        if m.type in (MT.VOTE, MT.PRE_VOTE) and self._catch_up_outsider(m):
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE) and not m.transfer and self._in_lease():
                # Dissertation 4.2.3: ignore disruptive candidates while a leader is live
                # (but tell a server outside our configuration who leads).
                if m.src not in self.membership.members:
                    self._reject_vote(m)
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
                self._reject_vote(m)
            return

        if (
            m.type in (MT.PRE_VOTE_RESP, MT.VOTE_RESP)
            and m.reject
            and m.reject_hint
            and m.reject_hint not in self.membership.voters
            and m.reject_hint != self.id
        ):
            self._outside_hint = m.reject_hint  # a leader outside our configuration
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
            self._maybe_hand_off()
        elif self.role in (Role.FOLLOWER, Role.REMOVED):
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _catch_up_outsider(self, m: Message) -> bool:
        """A leader answers a vote request from outside its (latest) configuration --
        most likely a removed server that does not know it -- by replicating to it,
        so that it learns of its removal; and rejects the request. Returns whether it
        handled ``m``. A requester ahead of our term is left to the usual rules.
        """
        if self.role is not Role.LEADER or m.src in self.membership.members:
            return False
        its_term = m.term - 1 if m.type is MT.PRE_VOTE else m.term
        if its_term > self.term:
            return False
        if m.src not in self._progress and self._leaving.add(m.src, self.log.last_config_index()):
            self._progress[m.src] = self._new_progress(m.src, self.log.last_index)
            self._send_append(m.src)
        self._reject_vote(m)
        return True

    def _reject_vote(self, m: Message) -> None:
        """Reject a (pre-)vote request. A requester outside our configuration (most
        likely removed without knowing it) learns whom to ask next (``reject_hint``):
        the leader we follow, or else a voter of our configuration -- so that its
        requests travel towards a leader that can tell it, even through servers
        that were removed themselves."""
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        hint = 0
        if m.src not in self.membership.members:
            if self.lead is not None:
                hint = self.lead
            else:
                others = sorted(self.membership.voters - {self.id, m.src})
                hint = others[0] if others else 0
        self._send(resp, m.src, reject=True, reject_hint=hint)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.lead is not None
            and self._election_elapsed < self.config.election_tick
        )

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        if self.joining:
            self._reject_vote(m)  # it forgot its votes: never votes until re-admitted
            return
        # A removed node still votes (dissertation 4.1: votes are granted without
        # consulting the configuration; its log may be stale and the cluster may
        # have added it back and now need its vote).
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
            self._reject_vote(m)

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
            self._behind = True
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
            self._set_membership(self.log.membership_at(self.log.last_index))
        self.log.commit_to(min(m.commit, last_new))
        self._behind = m.commit > self.log.last_index
        self._note_joined_log(m.commit)
        self._settle_follower()
        self._send(MT.APPEND_RESP, m.src, index=last_new)

    def _note_joined_log(self, floor: int) -> None:
        """A joining node accepted the log for the first time: remember the leader's commit."""
        if self.join is not None and self.join.floor is None:
            self.join = JoinState(floor=floor)

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index))
        self._settle_follower()
        self._send(MT.HEARTBEAT_RESP, m.src, read_seq=m.read_seq)
        if m.commit > self.log.last_index:
            # The leader believes we hold entries we do not (our state was wiped):
            # say where our log ends so that it replicates from there.
            self._send(
                MT.APPEND_RESP,
                m.src,
                index=m.commit,
                reject=True,
                reject_hint=self.log.last_index,
                log_term=self.log.last_term,
            )

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
            self._set_membership(Membership.of_snapshot(meta))
        self._behind = False
        self._note_joined_log(meta.index)
        self._settle_follower()
        self._send(MT.APPEND_RESP, m.src, index=self.log.last_index)

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


# RaftConfig, RandomSource and Ready live in their own modules; they are
# re-exported here because the driver loop is documented against this module.
__all__ = ["RaftConfig", "RaftCore", "RandomSource", "Ready"]
