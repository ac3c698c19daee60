"""A deterministic fault simulator for the Raft core: one seed, one exact run.

Theory of operation
-------------------
:class:`Simulation` plays the driver for a cluster of :class:`RaftCore`
objects in discrete global steps. All choices come from one
``random.Random(seed)``, so a seed replays a run exactly
(``scripts/simulate.py --seed N``).

Each node owns a :class:`SimDisk` (written vs synced state) and a
:class:`KVStateMachine`. Its Ready cycle is the real contract: write ->
*maybe crash here* (losing unsynced writes, possibly tearing the last) ->
fsync -> send -> apply -> advance, then compact the log when it grows.

The run has two phases. During the **fault phase** the network drops,
duplicates and delays (hence reorders) messages; one- and two-way partitions
and leader isolation come and go; nodes crash at any point (also between a
write and its fsync) and restart from their synced disk; nodes tick at
different rates (clock skew); leaders are asked to transfer leadership and
to make random single-server membership changes (voters, a learner, and the
leader itself). Then the **heal phase** restarts every node, removes
partitions and skew and stops losing messages; the run must then converge:
every client operation completes, every member applies the same state, and
every server outside the final configuration knows it was removed.

Simulated clients issue KV operations (put/append/get; some gets through
ReadIndex instead of the log), one at a time, with unique (client, seq) ids;
they re-submit on :class:`NotLeader`, drops and timeouts. The state machine
deduplicates, so apply is idempotent. Clients record invoke/return events in
a global event order, and the resulting history is checked for
linearizability with :mod:`cellmesh.testing.lincheck`.

After every Ready and every message sent, :class:`SafetyChecker` checks the
safety properties of Figure 3 (see :mod:`cellmesh.testing.raftcheck`); it
registers facts when their Ready is durable, not when it is handed out.
Any failure raises :class:`SimulationFailure` carrying the seed and its mix.
:meth:`SimParams.for_seed` knows two mixes: ``"normal"`` and ``"harsh"``
(twice the fault phase, three times the operations, five times the
membership changes).
"""

from __future__ import annotations

import heapq
import random
from typing import Final, Literal

import attrs

from cellmesh.consensus.core import RaftConfig, RaftCore, Ready
from cellmesh.consensus.errors import ConfigChangeInProgress, NotLeader, ProposalDropped
from cellmesh.consensus.messages import Message
from cellmesh.consensus.types import EntryKind, Membership, ReadState, Role
from cellmesh.errors import CellmeshError
from cellmesh.testing.kvsm import Command, KVStateMachine
from cellmesh.testing.lincheck import KVModel, Operation, check_operations
from cellmesh.testing.raftcheck import SafetyChecker
from cellmesh.testing.simdisk import SimDisk

Mix = Literal["normal", "harsh"]
#: The fault mixes :meth:`SimParams.for_seed` knows (``scripts/simulate.py --mix``).
MIXES: Final[tuple[Mix, ...]] = ("normal", "harsh")


class SimulationFailure(CellmeshError, AssertionError):
    """A simulated run broke safety, liveness or linearizability; ``seed`` (in ``mix``)
    replays it."""

    def __init__(self, seed: int, problem: str, mix: Mix = "normal") -> None:
        flag = "" if mix == "normal" else f" --mix {mix}"
        super().__init__(
            f"seed {seed}: {problem}\n"
            f"  replay with: python scripts/simulate.py{flag} --seed {seed}"
        )
        self.seed = seed
        self.problem = problem
        self.mix = mix


@attrs.frozen(kw_only=True)
class SimParams:
    """Knobs of one run; :meth:`for_seed` varies the cluster shape by seed."""

    nodes: int = 3
    learners: int = 1
    clients: int = 3
    ops_per_client: int = 10
    keys: int = 2
    fault_steps: int = 300
    max_heal_steps: int = 1500
    election_tick: int = 10
    heartbeat_tick: int = 2
    max_inflight: int = 4
    max_entries_per_message: int = 4
    max_delay: int = 3
    p_drop: float = 0.05
    p_dup: float = 0.03
    p_crash: float = 0.015
    p_crash_mid_write: float = 0.02
    p_restart: float = 0.08
    p_partition: float = 0.02
    p_heal_partition: float = 0.04
    p_skew: float = 0.01
    p_transfer: float = 0.005
    p_reconfig: float = 0.01
    pre_vote: bool = True
    #: Let the fsync take 0-2 steps while input keeps arriving (like an async driver).
    async_persist: bool = False
    check_quorum: bool = True
    p_new_op: float = 0.3
    read_index_ratio: float = 0.5
    client_timeout: int = 30
    compact_after: int = 12
    check_every: int = 5
    #: Deliberately break the Ready contract (send before fsync) so tests can
    #: show the checker notices; never set outside such self-tests.
    bug_send_before_sync: bool = False

    @classmethod
    def for_seed(cls, seed: int, mix: Mix = "normal") -> SimParams:
        """Vary the cluster by seed so a soak covers every shape.

        Odd seeds run 5 voters, even seeds 3 (plus one learner); every other
        block of 8 seeds persists asynchronously. One seed pair in four runs
        plain Raft: no pre-vote, no check-quorum, and hence no
        membership changes (a removed server that never learns of its removal
        would disrupt a cluster without leases, dissertation 4.2.3).

        The ``"harsh"`` mix keeps those shapes and doubles the fault phase,
        triples each client's operations and makes membership changes five
        times as likely: longer runs under faults, more single-voter
        configurations, more leaders removing themselves.
        """
        nodes = 5 if seed % 2 else 3
        async_persist = (seed // 8) % 2 == 1
        if (seed // 2) % 4 == 3:
            params = cls(
                nodes=nodes,
                pre_vote=False,
                check_quorum=False,
                p_reconfig=0.0,
                async_persist=async_persist,
            )
        else:
            params = cls(nodes=nodes, async_persist=async_persist)
        if mix == "harsh":
            params = attrs.evolve(
                params,
                fault_steps=2 * params.fault_steps,
                ops_per_client=3 * params.ops_per_client,
                p_reconfig=5 * params.p_reconfig,
            )
        return params


@attrs.define(eq=False)
class _Node:
    id: int
    disk: SimDisk = attrs.field(factory=SimDisk)
    core: RaftCore | None = None
    kv: KVStateMachine = attrs.field(factory=KVStateMachine)
    applied: int = 0
    rate: float = 1.0
    clock: float = 0.0
    reads: list[ReadState] = attrs.field(factory=list)
    inflight: Ready | None = None  #: a Ready written but not yet fsynced (async_persist)
    inflight_due: int = 0


@attrs.define(eq=False)
class _Client:
    id: int
    target: int
    seq: int = 0
    done: int = 0
    current: Command | None = None
    use_read_index: bool = False
    attempts: set[int] = attrs.field(factory=set)
    call_time: int = 0
    deadline: int = 0
    retry_at: int | None = None
    hint_hops: int = 0


@attrs.frozen(kw_only=True)
class SimResult:
    """Summary of a successful run."""

    seed: int
    steps: int
    operations: int
    elections: int
    crashes: int
    torn_writes: int
    snapshots_sent: int
    config_changes: int
    max_term: int


class Simulation:
    """One seeded run; call :meth:`run`."""

    def __init__(
        self,
        seed: int,
        params: SimParams | None = None,
        *,
        trace: bool = False,
        mix: Mix = "normal",
    ) -> None:
        """Prepare the run; ``trace=True`` records a human-readable event log in :attr:`trace`.

        ``params`` default to :meth:`SimParams.for_seed` of ``seed`` in ``mix``.
        """
        self.seed = seed
        self.mix = mix
        self.trace: list[str] | None = [] if trace else None
        self.params = params or SimParams.for_seed(seed, mix)
        self.rng = random.Random(seed)
        p = self.params
        self.voters = tuple(range(1, p.nodes + 1))
        self.learners = tuple(range(p.nodes + 1, p.nodes + 1 + p.learners))
        self.ids = self.voters + self.learners
        self.nodes = {n: _Node(id=n) for n in self.ids}
        self.clients = [
            _Client(id=c, target=self.rng.choice(self.ids)) for c in range(1, p.clients + 1)
        ]
        self.checker = SafetyChecker()
        self.now = 0
        self.events = 0
        self.faults = True
        self.blocked: set[tuple[int, int]] = set()
        self._queue: list[tuple[int, int, Message]] = []
        self._msg_seq = 0
        self.history: list[Operation[tuple[str, str, str | None], str]] = []
        self.crashes = 0
        self.snapshots_sent = 0
        self.config_changes = 0
        for n in self.ids:
            self._start(self.nodes[n])

    # -- node lifecycle ------------------------------------------------------

    def _config(self, n: int) -> RaftConfig:
        p = self.params
        return RaftConfig(
            id=n,
            election_tick=p.election_tick,
            heartbeat_tick=p.heartbeat_tick,
            max_inflight=p.max_inflight,
            max_entries_per_message=p.max_entries_per_message,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
        )

    def _start(self, node: _Node) -> None:
        st = node.disk.recover()
        node.core = RaftCore(
            self._config(node.id),
            random.Random(self.rng.getrandbits(32)),
            voters=self.voters,
            learners=self.learners,
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=st.entries,
        )
        node.kv = KVStateMachine.restore(st.snapshot.data if st.snapshot else b"")
        node.applied = node.core.log.applied
        node.reads = []
        self.checker.on_start(node.id, node.core)
        self._log(f"start node {node.id} term={node.core.term} last={node.core.log.last_index}")
        self._process(node)

    def _crash(self, node: _Node, unsynced: Ready | None = None) -> None:
        """Crash ``node``; ``unsynced`` is the Ready written but not fsynced, if any."""
        lost = unsynced if unsynced is not None else node.inflight
        where = ""
        if lost is not None and node.core is not None:
            term = lost.hard_state.term if lost.hard_state is not None else node.core.term
            where = (
                f" before fsyncing a Ready (as {node.core.role.name} term={term}, "
                f"{len(lost.entries)} entries written, {len(lost.messages)} messages unsent)"
            )
        node.disk.crash(self.rng)
        node.core = None
        node.reads = []
        node.inflight = None
        self.crashes += 1
        self._log(f"crash node {node.id}{where} ({len(node.disk.synced.entries)} synced entries)")

    # -- the driver loop -------------------------------------------------------

    def _process(self, node: _Node) -> None:
        """Run the Ready cycle until the node has nothing left to do.

        With ``async_persist`` the fsync takes 0-2 steps, during which the
        node keeps receiving messages and ticks (as an async driver does) and
        may crash with the write unsynced; :meth:`_finish` completes it.
        """
        p = self.params
        while node.core is not None and node.inflight is None and node.core.has_ready():
            core = node.core
            rd = core.ready()
            if self.trace is not None and rd.soft_state is not None:
                self._log(
                    f"node {node.id} is {rd.soft_state.role.name} term={core.term} "
                    f"leader={rd.soft_state.leader} last={core.log.last_index}"
                )
            self.checker.on_ready(node.id, core, rd)
            node.disk.write(rd.snapshot, rd.entries, rd.hard_state)
            if p.bug_send_before_sync:
                for m in rd.messages:
                    self._send(m)
            if self.faults and rd.must_sync and self.rng.random() < p.p_crash_mid_write:
                self._crash(node, rd)  # between the write and its fsync
                return
            if p.async_persist and rd.must_sync:
                delay = self.rng.randrange(0, 3)
                if delay:
                    node.inflight = rd
                    node.inflight_due = self.now + delay
                    return
            self._finish(node, rd)

    def _finish(self, node: _Node, rd: Ready) -> None:
        """fsync, then send, apply and advance (steps 1-5 of the Ready contract)."""
        p = self.params
        core = node.core
        assert core is not None
        node.inflight = None
        node.disk.sync()
        self.checker.on_durable(node.id, core, rd)
        if not p.bug_send_before_sync:
            for m in rd.messages:
                self._send(m)
        if rd.snapshot is not None:
            node.kv = KVStateMachine.restore(rd.snapshot.data)
            node.applied = rd.snapshot.meta.index
            self.checker.on_restore(node.id, node.applied)
        self.checker.on_apply(node.id, rd.committed_entries)
        for e in rd.committed_entries:
            if e.kind is EntryKind.NORMAL:
                cmd = Command.decode(e.data)
                result = node.kv.apply(cmd)
                self._reply(node.id, cmd.client, cmd.seq, result)
            node.applied = e.index
        node.reads.extend(rd.read_states)
        self._serve_reads(node)
        core.advance(rd)
        snap_index = core.log.snapshot.meta.index
        if core.log.applied - snap_index >= p.compact_after:
            snap = core.compact(core.log.applied, node.kv.snapshot())
            node.disk.save_snapshot(snap)

    def _serve_reads(self, node: _Node) -> None:
        waiting = []
        for rs in node.reads:
            if rs.index > node.applied:
                waiting.append(rs)
                continue
            client_id, seq = (int(x) for x in rs.context.decode().split(":"))
            c = self.clients[client_id - 1]
            if c.current is not None and c.current.seq == seq and node.id in c.attempts:
                self._reply(node.id, client_id, seq, node.kv.read(c.current.key))
        node.reads = waiting

    def _send(self, m: Message) -> None:
        self.checker.on_send(m)
        if m.snapshot is not None:
            self.snapshots_sent += 1
        p = self.params
        copies = 1
        if self.faults:
            if self.rng.random() < p.p_drop:
                return
            if self.rng.random() < p.p_dup:
                copies = 2
        for _ in range(copies):
            self._msg_seq += 1
            due = self.now + self.rng.randrange(1, p.max_delay + 1)
            heapq.heappush(self._queue, (due, self._msg_seq, m))

    def _deliver_due(self) -> None:
        while self._queue and self._queue[0][0] <= self.now:
            _, _, m = heapq.heappop(self._queue)
            node = self.nodes[m.dst]
            if node.core is None or (m.src, m.dst) in self.blocked:
                continue
            node.core.step(m)
            self._process(node)

    # -- clients ----------------------------------------------------------------

    def _reply(self, node: int, client_id: int, seq: int, result: str) -> None:
        c = self.clients[client_id - 1]
        cmd = c.current
        if cmd is None or cmd.seq != seq or node not in c.attempts:
            return
        self.events += 1
        output = result if cmd.op == "get" else None
        self.history.append(
            Operation(
                client=c.id,
                input=(cmd.op, cmd.key, cmd.value),
                output=output,
                call=c.call_time,
                ret=self.events,
            )
        )
        self._log(f"client {c.id} done {cmd.op} {cmd.key} {cmd.value} -> {output!r} via {node}")
        c.current = None
        c.done += 1
        c.retry_at = None

    def _client_act(self, c: _Client) -> None:
        p = self.params
        if c.current is None:
            if c.done >= p.ops_per_client or self.rng.random() >= p.p_new_op:
                return
            c.seq += 1
            key = f"k{self.rng.randrange(0, p.keys)}"
            op = self.rng.choice(("put", "append", "get", "get"))
            value = None if op == "get" else f"{c.id}.{c.seq}"
            c.current = Command(client=c.id, seq=c.seq, op=op, key=key, value=value)
            c.use_read_index = op == "get" and self.rng.random() < p.read_index_ratio
            c.attempts = set()
            self.events += 1
            c.call_time = self.events
            self._submit(c)
        elif self.now >= c.deadline or (c.retry_at is not None and self.now >= c.retry_at):
            if self.now >= c.deadline:
                c.target = self.ids[c.target % len(self.ids)]
            self._submit(c)

    def _submit(self, c: _Client) -> None:
        cmd = c.current
        assert cmd is not None
        c.retry_at = None
        c.deadline = self.now + self.params.client_timeout
        node = self.nodes[c.target]
        if node.core is None:
            return  # the request is lost; the client times out
        try:
            if c.use_read_index:
                node.core.read_index(f"{c.id}:{cmd.seq}".encode())
            else:
                node.core.propose(cmd.encode())
        except NotLeader as exc:
            # Follow hints, but not forever: servers removed from the cluster
            # may point at each other (stale hints) and trap a naive client.
            hint = exc.leader_hint
            if hint is not None and c.hint_hops < 2:
                c.target = hint
                c.hint_hops += 1
            else:
                c.target = self.ids[c.target % len(self.ids)]
            c.retry_at = self.now + 1
            return
        except ProposalDropped:
            c.retry_at = self.now + 2
            return
        c.attempts.add(node.id)
        c.hint_hops = 0  # reached a leader (or at least a live one): trust hints again
        self._process(node)

    # -- faults ---------------------------------------------------------------------

    def _leader(self) -> _Node | None:
        leaders = [
            (n.core.term, n.id)
            for n in self.nodes.values()
            if n.core is not None and n.core.role is Role.LEADER
        ]
        return self.nodes[max(leaders)[1]] if leaders else None

    def _inject_faults(self) -> None:
        p, rng = self.params, self.rng
        up = [n for n in self.nodes.values() if n.core is not None]
        if up and rng.random() < p.p_crash:
            self._crash(rng.choice(up))
        for node in self.nodes.values():
            if node.core is None and rng.random() < p.p_restart:
                self._start(node)
        if rng.random() < p.p_partition:
            self._partition()
        if self.blocked and rng.random() < p.p_heal_partition:
            self.blocked = set()
            self._log("partition healed")
        if rng.random() < p.p_skew:
            rng.choice(list(self.nodes.values())).rate = rng.choice((0.5, 0.75, 1.0, 1.5, 2.0))
        if rng.random() < p.p_transfer:
            leader = self._leader()
            if leader is not None and leader.core is not None:
                target = rng.choice(sorted(leader.core.membership.voters))
                leader.core.transfer_leadership(target)
                self._log(f"leader {leader.id} asked to transfer to {target}")
                self._process(leader)
        if rng.random() < p.p_reconfig:
            self._reconfigure()

    def _reconfigure(self) -> None:
        """Ask the leader for one random single-server change (dissertation 4.1, 4.2.2)."""
        leader = self._leader()
        if leader is None or leader.core is None:
            return
        core = leader.core
        cur = core.membership
        options: list[Membership] = []
        for n in self.ids:
            voters, learners = set(cur.voters), set(cur.learners)
            if n in voters:  # (the leader too: it leads until the change commits)
                voters.discard(n)
                options.append(Membership(voters=frozenset(voters), learners=frozenset(learners)))
                learners.add(n)  # demote to learner
            elif n in learners:
                learners.discard(n)
                options.append(Membership(voters=frozenset(voters), learners=frozenset(learners)))
                voters.add(n)  # promote to voter
            else:
                learners.add(n)
                options.append(Membership(voters=frozenset(voters), learners=frozenset(learners)))
                learners.discard(n)
                voters.add(n)
            options.append(Membership(voters=frozenset(voters), learners=frozenset(learners)))
        options = [m for m in options if m.voters]
        if not options:
            return
        try:
            core.propose_membership(self.rng.choice(options))
        except (ConfigChangeInProgress, ProposalDropped):
            return
        self.config_changes += 1
        self._log(f"leader {leader.id} proposes membership {core.membership}")
        self._process(leader)

    def _partition(self) -> None:
        rng, ids = self.rng, list(self.ids)
        kind = rng.randrange(0, 3)
        blocked: set[tuple[int, int]] = set()
        if kind == 0:  # two-way split into two sides
            side = set(rng.sample(ids, rng.randrange(1, len(ids))))
            blocked = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
        elif kind == 1:  # one-way: some links lose traffic in one direction only
            for _ in range(rng.randrange(1, len(ids) + 1)):
                a, b = rng.sample(ids, 2)
                blocked.add((a, b))
        else:  # isolate the leader (or a random node) both ways
            leader = self._leader()
            x = leader.id if leader is not None else rng.choice(ids)
            blocked = {(x, o) for o in ids if o != x} | {(o, x) for o in ids if o != x}
        self.blocked = blocked
        self._log(f"partition kind={kind} blocked={sorted(blocked)}")

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"[{self.now:5d}] {text}")

    def _heal(self) -> None:
        self._log("heal: restart all, no more faults")
        self.faults = False
        self.blocked = set()
        for node in self.nodes.values():
            node.rate = 1.0
            if node.core is None:
                self._start(node)

    # -- the run ----------------------------------------------------------------------

    def _step(self) -> None:
        self.now += 1
        if self.faults:
            self._inject_faults()
        for node in self.nodes.values():
            rd = node.inflight
            if rd is not None and node.inflight_due <= self.now:
                self._finish(node, rd)
                self._process(node)
        for node in self.nodes.values():
            if node.core is None:
                continue
            node.clock += node.rate
            while node.clock >= 1 and node.core is not None:
                node.clock -= 1
                node.core.tick()
                self._process(node)
        self._deliver_due()
        for c in self.clients:
            self._client_act(c)
        if self.now % self.params.check_every == 0:
            self._check_logs()

    def _check_logs(self) -> None:
        cores = {n: node.core for n, node in self.nodes.items() if node.core is not None}
        self.checker.check_logs_pairwise(cores)

    def _converged(self) -> bool:
        p = self.params
        if any(c.current is not None or c.done < p.ops_per_client for c in self.clients):
            return False
        leader = self._leader()
        if leader is None or leader.core is None:
            return False
        last = leader.core.log.last_index
        if leader.core.log.committed != last:
            return False
        ref = leader.kv
        members = leader.core.membership.members
        members_agree = all(
            n.core is not None
            and n.applied == last
            and n.kv.data == ref.data
            and n.kv.last == ref.last
            for n in self.nodes.values()
            if n.id in members
        )
        # Every server outside the configuration knows it was removed (all of them
        # were members once: they start in the bootstrap configuration).
        removed_know = all(
            n.core is not None and n.core.role is Role.REMOVED
            for n in self.nodes.values()
            if n.id not in members
        )
        return members_agree and removed_know

    def run(self) -> SimResult:
        """Run both phases; raise :class:`SimulationFailure` on any broken property."""
        p = self.params
        try:
            for _ in range(p.fault_steps):
                self._step()
            self._heal()
            converged = False
            for _ in range(p.max_heal_steps):
                self._step()
                if self._converged():
                    converged = True
                    break
            self._check_logs()
        except SimulationFailure:
            raise
        except AssertionError as exc:
            raise SimulationFailure(self.seed, f"{type(exc).__name__}: {exc}", self.mix) from exc
        if not converged:
            raise SimulationFailure(self.seed, self._stuck_report(), self.mix)
        result = check_operations(KVModel(), self.history)
        if not result.ok:
            raise SimulationFailure(
                self.seed, f"history is not linearizable: {list(result.failing_part)!r}", self.mix
            )
        return SimResult(
            seed=self.seed,
            steps=self.now,
            operations=len(self.history),
            elections=len(self.checker.leaders),
            crashes=self.crashes,
            torn_writes=sum(n.disk.torn_writes for n in self.nodes.values()),
            snapshots_sent=self.snapshots_sent,
            config_changes=self.config_changes,
            max_term=max(t for t in self.checker.leaders) if self.checker.leaders else 0,
        )

    def _stuck_report(self) -> str:
        lines = [f"liveness: not converged {self.params.max_heal_steps} steps after healing"]
        for node in self.nodes.values():
            core = node.core
            if core is not None:
                lines.append(
                    f"  node {node.id}: {core.role.name} term={core.term} lead={core.lead} "
                    f"last={core.log.last_index} commit={core.log.committed} "
                    f"applied={node.applied}"
                )
        for c in self.clients:
            lines.append(f"  client {c.id}: done={c.done} current={c.current}")
        return "\n".join(lines)


def run_seed(seed: int, params: SimParams | None = None, *, mix: Mix = "normal") -> SimResult:
    """Run the simulation for ``seed`` (in ``mix``); raises :class:`SimulationFailure`."""
    return Simulation(seed, params, mix=mix).run()
