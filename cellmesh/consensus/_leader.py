"""The leader's half of the Raft core: replication, commit, ReadIndex, leaving members.

Theory of operation: :class:`LeaderSide` is a mixin of
:class:`~cellmesh.consensus.core.RaftCore` holding what only a leader does --
answering AppendEntries results (section 5.3 probing and pipelining, the
follower-lost-its-state recovery), advancing the commit index by the
section 5.4.2 rule, applying configuration changes to its replication set
(dissertation 4.1) and handing off when removed (4.2.2), and confirming
ReadIndex reads (dissertation 6.4). It shares the core's state; the
attributes it relies on are declared below for the type checker. Splitting
it out keeps each module readable; there is no separate state here.
"""

from __future__ import annotations

from cellmesh.consensus import quorum
from cellmesh.consensus.confchange import LeavingTracker
from cellmesh.consensus.config import RaftConfig
from cellmesh.consensus.log import RaftLog
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.progress import Progress, ProgressState
from cellmesh.consensus.readindex import PendingRead, ReadIndexTracker
from cellmesh.consensus.types import Entry, EntryKind, Membership, ReadState, Role

MT = MessageType


class LeaderSide:
    """Leader-side handlers of :class:`~cellmesh.consensus.core.RaftCore` (a mixin)."""

    # State owned by RaftCore (declared for the type checker).
    id: int
    config: RaftConfig
    term: int
    role: Role
    log: RaftLog
    membership: Membership
    lead_transferee: int | None
    _progress: dict[int, Progress]
    _leaving: LeavingTracker
    _msgs: list[Message]
    _read_states: list[ReadState]
    _reads: ReadIndexTracker

    # -- leader side -----------------------------------------------------

    def _new_progress(self, node: int, last: int) -> Progress:
        pr = Progress(match=0, next=last + 1, max_inflight=self.config.max_inflight)
        if node == self.id:
            pr.match = last
            pr.become_replicate()
        pr.recent_active = True
        return pr


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
            if m.reject_hint < pr.match <= m.index:
                # It lacks entries it acknowledged (a current rejection, not a late
                # one: it rejects at or above match): its state was wiped.
                pr.lost_entries(m.reject_hint)
                self._send_append(m.src)
                return
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
        self.membership = m  # (a leader is a member already: nothing else to note)
        for n in m.members:
            self._leaving.discard(n)
            if n not in self._progress:
                self._progress[n] = self._new_progress(n, self.log.last_index)
        removed = [n for n in self._progress if n not in m.members | {self.id}]
        for n in removed:
            # Keep replicating to it until it knows (see LeavingTracker).
            if n not in self._leaving and not self._leaving.add(n, self.log.last_config_index()):
                del self._progress[n]

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
        ents = self.log.entries_from(pr.next, self.config.max_entries_per_message,
                                     self.config.max_bytes_per_message)
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
