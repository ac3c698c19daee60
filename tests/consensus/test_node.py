"""The Trio Raft driver on an in-memory network, under Trio's MockClock.

Each test cites the part of the Raft paper (or dissertation) whose behaviour
it checks through the driver.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
import trio
import trio.testing

from cellmesh.consensus.core import RaftConfig
from cellmesh.consensus.errors import NotLeader, ProposalOutcomeUnknown
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.node import (
    LogStorage,
    NodeOptions,
    NodeStopped,
    RaftNode,
    open_raft_node,
    open_wal_storage,
    run_inline,
)
from cellmesh.consensus.transport import MemoryNetwork
from cellmesh.consensus.types import Entry, EntryKind, HardState, Membership, Role
from cellmesh.consensus.wal import Recovered, WalBatch, WalCorrupted, WalFailed, WriteAheadLog

from .conftest import IDS, KV, TICK, Recorder, cluster


async def test_node_cluster_elects_a_leader_and_replicates(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Sections 5.2 and 5.3: one leader is elected; its entries reach every node."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        assert await leader.propose(b"x=1") == b""
        assert await leader.propose(b"x=2") == b"1"
        await c.converge(leader.status().commit)
        for node_id in IDS:
            assert c.machines[node_id].data == {b"x": b"2"}
            assert (await c.nodes[node_id].wait_leader()) == leader.id
        leaders = [n for n in c.nodes.values() if n.status().role is Role.LEADER]
        assert leaders == [leader]


async def test_node_follower_proposal_raises_not_leader_with_hint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Section 5.1: clients must talk to the leader; followers redirect them."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        await c.converge(leader.status().commit)
        follower = next(n for n in c.nodes.values() if n is not leader)
        with pytest.raises(NotLeader) as info:
            await follower.propose(b"a=2")
        assert info.value.leader_hint == leader.id


async def test_node_reads_are_linearizable_on_every_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Dissertation 6.4: a read issued after a write returns, on any node, that write."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        for round_ in range(5):
            value = str(round_).encode()
            await leader.propose(b"k=" + value)
            # Followers may not have applied the write yet; ReadIndex makes them wait.
            for node in c.nodes.values():
                assert await node.read(b"k") == value


async def test_node_survives_leader_crash_and_restarts_from_its_wal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Sections 5.2, 5.4: a new leader keeps every committed entry; the old one recovers."""
    async with cluster(tmp_path) as c:
        old = await c.leader()
        for i in range(10):
            await old.propose(b"n=%d" % i)
        await c.crash(old.id)
        new = await c.leader()
        assert new.id != old.id
        assert await new.read(b"n") == b"9"
        assert await new.propose(b"n=after") == b"9"
        c.network.isolate(old.id)
        term = old.status().term
        restarted = await c.start(old.id)
        # Cut off from its peers, everything it knows comes from its own WAL.
        status = restarted.status()
        assert status.last_index == 11
        assert status.term >= term
        c.network.heal()
        await restarted.wait_applied(new.status().commit)
        assert c.machines[old.id].data == {b"n": b"after"}
        assert c.machines[old.id].applied == 11


async def test_node_whole_cluster_restart_recovers_state_from_disk(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Figure 2 "persistent state": terms, votes and the log survive a full restart."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        for i in range(5):
            await leader.propose(b"k%d=v%d" % (i, i))
        term = leader.status().term
        for node_id in IDS:
            await c.crash(node_id)
        for node_id in IDS:
            await c.start(node_id)
        leader = await c.leader()
        assert leader.status().term > term
        assert await leader.read(b"k4") == b"v4"
        await c.converge(leader.status().commit)
        for machine in c.machines.values():
            assert machine.data == {b"k%d" % i: b"v%d" % i for i in range(5)}


async def test_node_persists_before_it_sends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Figure 2 / etcd Ready contract: a term, vote or acknowledged entry is durable
    before any message revealing it leaves the node."""
    recorder = Recorder()
    async with cluster(
        tmp_path,
        open_storage=recorder.storage(open_wal_storage),
        wrap_transport=recorder.transport,
    ) as c:
        leader = await c.leader()
        for i in range(5):
            await leader.propose(b"p=%d" % i)
        await c.crash(leader.id)
        new = await c.leader()
        await new.propose(b"p=new")
        await c.start(leader.id)
        await c.converge(new.status().commit)

    durable_term: dict[int, int] = {}
    durable_vote: dict[int, tuple[int, int | None]] = {}
    durable_log: dict[int, dict[int, int]] = {n: {} for n in IDS}
    sends = 0
    for node, kind, item in recorder.events:
        if kind == "saved":
            assert isinstance(item, WalBatch)
            if item.hard_state is not None:
                durable_term[node] = item.hard_state.term
                durable_vote[node] = (item.hard_state.term, item.hard_state.vote)
            if item.snapshot is not None:
                durable_log[node] = {item.snapshot.meta.index: item.snapshot.meta.term}
            if item.entries:
                first = item.entries[0].index
                durable_log[node] = {i: t for i, t in durable_log[node].items() if i < first}
                durable_log[node].update({e.index: e.term for e in item.entries})
            continue
        assert isinstance(item, Message)
        sends += 1
        if item.type not in (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP):
            assert durable_term.get(node, 0) >= item.term, item
        if item.type is MessageType.VOTE_RESP and not item.reject:
            assert durable_vote[node] == (item.term, item.dst), item
        if item.type is MessageType.VOTE:
            assert durable_vote[node] == (item.term, node), item
        if item.type is MessageType.APPEND_RESP and not item.reject and item.index:
            assert item.index in durable_log[node], item
    assert sends > 20


def _durable_last_index(events: list[tuple[int, str, object]], node: int) -> int:
    """The highest log index node ``node`` had saved, per the recorder."""
    last = 0
    for who, kind, item in events:
        if who == node and kind == "saved" and isinstance(item, WalBatch):
            if item.snapshot is not None:
                last = max(last, item.snapshot.meta.index)
            if item.entries:
                last = item.entries[-1].index
    return last


async def test_node_leader_replicates_while_its_own_save_is_in_flight_10_2_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Dissertation 10.2.1: the leader sends AppendEntries before its own save of
    those entries returns, yet reveals a commit (in a message, or by answering
    the proposer) only for entries it already holds durably."""
    recorder = Recorder()
    async with cluster(
        tmp_path,
        open_storage=recorder.storage(open_wal_storage),
        wrap_transport=recorder.transport,
    ) as c:
        leader = await c.leader()
        for i in range(5):
            await leader.propose(b"p=%d" % i)
            assert _durable_last_index(recorder.events, leader.id) >= leader.status().applied
        await c.converge(leader.status().commit)

    overlapped = 0
    durable: dict[int, int] = dict.fromkeys(IDS, 0)
    for node, kind, item in recorder.events:
        if kind == "saved":
            assert isinstance(item, WalBatch)
            if item.entries:
                durable[node] = item.entries[-1].index
            continue
        assert isinstance(item, Message)
        if item.type in (MessageType.APPEND, MessageType.HEARTBEAT):
            assert item.commit <= durable[node], item
        if item.type is MessageType.APPEND and item.entries:
            overlapped += item.entries[-1].index > durable[node]
    assert overlapped >= 5


async def test_node_propose_nowait_reports_through_its_callback(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Section 5.3 without a waiting task: the applied result arrives through
    ``on_done``; a follower refuses at once (NotLeader); a full admission limit
    raises WouldBlock with nothing proposed, and the slot frees on completion."""
    options = NodeOptions(tick_interval=TICK, max_pending_proposals=1)
    async with cluster(tmp_path, options=options) as c:
        leader = await c.leader()
        outcomes: list[tuple[bytes | None, BaseException | None]] = []
        done = trio.Event()

        def on_done(result: bytes | None, error: BaseException | None) -> None:
            outcomes.append((result, error))
            done.set()

        leader.propose_nowait(b"a=1", on_done)
        with pytest.raises(trio.WouldBlock):
            leader.propose_nowait(b"a=2", on_done)
        await done.wait()
        assert outcomes == [(b"", None)]
        follower = next(n for n in c.nodes.values() if n is not leader)
        with pytest.raises(NotLeader):
            follower.propose_nowait(b"b=1", on_done)
        assert await leader.propose(b"a=3") == b"1"
        await c.converge(leader.status().commit)
        for machine in c.machines.values():
            assert machine.data == {b"a": b"3"}


async def test_node_bounds_pending_proposals(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Back-pressure: at most ``max_pending_proposals`` in flight; the rest wait."""
    options = NodeOptions(tick_interval=TICK, max_pending_proposals=2)
    async with cluster(tmp_path, options=options) as c:
        leader = await c.leader()
        await leader.propose(b"warm=up")
        start = leader.status().last_index
        c.network.drop_when(lambda m: m.type is MessageType.APPEND_RESP)
        results: dict[int, bytes] = {}

        async def client(i: int) -> None:
            results[i] = await leader.propose(b"c%d=%d" % (i, i))

        async with trio.open_nursery() as clients:
            for i in range(6):
                clients.start_soon(client, i)
            await trio.testing.wait_all_tasks_blocked()
            status = leader.status()
            assert status.pending_proposals == 2
            assert status.last_index == start + 2
            assert results == {}
            c.network.heal()
        assert sorted(results) == list(range(6))
        assert leader.status().pending_proposals == 0


async def test_node_snapshots_compact_and_catch_up_a_lagging_follower(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Section 7: the log is compacted; a follower behind the snapshot installs it."""
    options = NodeOptions(tick_interval=TICK, snapshot_every=5)
    async with cluster(tmp_path, options=options) as c:
        leader = await c.leader()
        lagging = next(n for n in IDS if n != leader.id)
        await c.crash(lagging)
        for i in range(30):
            await leader.propose(b"s%d=%d" % (i, i))
        follower = await c.start(lagging)
        await follower.wait_applied(leader.status().commit)
        assert c.machines[lagging].data == c.machines[leader.id].data
        assert len(c.machines[lagging].data) == 30
        assert list((tmp_path / str(lagging)).glob("snap-*.snap"))
        # Restart everything: state comes back from snapshot + log suffix.
        for node_id in IDS:
            await c.crash(node_id)
        for node_id in IDS:
            await c.start(node_id)
        leader = await c.leader()
        assert await leader.read(b"s29") == b"29"


@attrs.define
class SlowSnapshotKV(KV):
    """A KV whose snapshot is built by a job that waits for ``gate`` (a worker thread)."""

    gate: threading.Event = attrs.Factory(threading.Event)
    building: threading.Event = attrs.Factory(threading.Event)
    jobs: list[int] = attrs.Factory(list)

    def snapshot_job(self) -> Callable[[], bytes]:
        data = cbor2.dumps([dict(self.data), self.applied])  # the capture: copies
        self.jobs.append(self.applied)

        def build() -> bytes:
            self.building.set()
            assert self.gate.wait(30), "the test never opened the gate"
            return data

        return build


def snapshot_indexes(directory: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1], 16) for p in directory.glob("snap-*.snap"))


async def test_node_builds_a_snapshot_off_the_loop_while_it_goes_on_committing(
    tmp_path: Path,
) -> None:
    """Section 7 with ``snapshot_job`` (BackgroundSnapshots): the node keeps
    committing and applying while a worker thread builds the snapshot; the log
    is compacted at the index captured, once the build is done."""
    machine = SlowSnapshotKV()
    options = NodeOptions(tick_interval=0.01, snapshot_every=5)

    async def propose_all(node: RaftNode, keys: range) -> None:
        for i in keys:
            await node.propose(b"k%d=%d" % (i, i))

    with trio.fail_after(60):
        async with open_raft_node(
            RaftConfig(id=1), voters=[1], directory=tmp_path, transport=MemoryNetwork()
            .transport(1), state_machine=machine, options=options,
        ) as node:
            try:
                while node.status().role is not Role.LEADER:
                    await trio.sleep(0.01)
                await node.wait_applied(node.status().last_index)
                base = node.status().applied  # the leader's first (empty) entry
                await propose_all(node, range(5 - base))
                # due at index 5: captured there (after 4 commands), building
                assert machine.jobs == [5 - base]
                await propose_all(node, range(5 - base, 40))  # the loop is not held
                assert node.status().applied == 40 + base and machine.jobs == [5 - base]
                assert snapshot_indexes(tmp_path) == []
            finally:
                machine.gate.set()
            while not snapshot_indexes(tmp_path):
                await node.propose(b"tick=1")  # each Ready looks for a finished build
            assert snapshot_indexes(tmp_path)[0] == 5
            await propose_all(node, range(40, 45))
            applied = node.status().applied
    restored = KV()
    async with open_raft_node(
        RaftConfig(id=1), voters=[1], directory=tmp_path, transport=MemoryNetwork()
        .transport(1), state_machine=restored, options=NodeOptions(tick_interval=0.01),
    ) as again:
        with trio.fail_after(30):
            await again.wait_applied(applied)
    assert restored.data == machine.data and len(restored.data) == 46


async def test_node_stops_without_waiting_for_a_snapshot_build(tmp_path: Path) -> None:
    """A build is pure computation: a stopping node (a replica told to stop) drops
    it rather than wait, and the log keeps its entries (nothing was compacted)."""
    machine = SlowSnapshotKV()
    options = NodeOptions(tick_interval=0.01, snapshot_every=3)
    try:
        with trio.fail_after(10):
            async with open_raft_node(
                RaftConfig(id=1), voters=[1], directory=tmp_path,
                transport=MemoryNetwork().transport(1), state_machine=machine, options=options,
            ) as node:
                while node.status().role is not Role.LEADER:
                    await trio.sleep(0.01)
                while not machine.jobs:
                    await node.propose(b"k=1")
                while not machine.building.is_set():
                    await trio.sleep(0.01)
                # leaving the block stops the node while the build waits on the gate
    finally:
        machine.gate.set()
    assert snapshot_indexes(tmp_path) == []


@attrs.define
class FailingStorage:
    inner: LogStorage
    fail_after: int
    saves: int = 0

    def save(self, batch: WalBatch) -> None:
        self.saves += 1
        if self.saves > self.fail_after:
            raise WalFailed(OSError(5, "injected EIO"))
        self.inner.save(batch)

    def close(self) -> None:
        self.inner.close()


async def test_node_stops_when_storage_fails(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """fsyncgate: a storage failure ends the node; a waiting proposer learns its
    outcome is unknown (the cause names the failure), later callers that it stopped."""
    network = MemoryNetwork()
    storage_holder: list[FailingStorage] = []

    def open_failing(directory: Path) -> tuple[LogStorage, Recovered]:
        inner, recovered = open_wal_storage(directory)
        storage = FailingStorage(inner, fail_after=1_000_000)
        storage_holder.append(storage)
        return storage, recovered

    outcome: list[BaseException] = []
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_raft_node(
            RaftConfig(id=1),
            voters=[1],
            directory=tmp_path / "1",
            transport=network.transport(1),
            state_machine=KV(),
            options=NodeOptions(tick_interval=TICK),
            rng=random.Random(1),
            open_storage=open_failing,
            run_sync=run_inline,
        ) as node:
            await node.wait_leader()
            assert await node.propose(b"a=1") == b""
            storage_holder[0].fail_after = storage_holder[0].saves

            try:
                await node.propose(b"a=2")
            except ProposalOutcomeUnknown as exc:
                outcome.append(exc)
            with pytest.raises(NodeStopped):
                await node.propose(b"a=3")
            await trio.sleep_forever()
    assert info.group_contains(WalFailed)
    assert len(outcome) == 1
    cause = outcome[0].__cause__
    assert isinstance(cause, BaseExceptionGroup) and cause.subgroup(WalFailed) is not None


async def test_node_with_worker_thread_storage_on_the_real_clock(tmp_path: Path) -> None:
    """The production configuration: saves run in a worker thread while the loop goes on."""
    network = MemoryNetwork()
    machines = {n: KV() for n in IDS}
    options = NodeOptions(tick_interval=0.01)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes: dict[int, RaftNode] = {}

            async def run(node_id: int, task_status: trio.TaskStatus[RaftNode]) -> None:
                async with open_raft_node(
                    RaftConfig(id=node_id),
                    voters=IDS,
                    directory=tmp_path / str(node_id),
                    transport=network.transport(node_id),
                    state_machine=machines[node_id],
                    options=options,
                ) as node:
                    task_status.started(node)
                    await trio.sleep_forever()

            for node_id in IDS:
                nodes[node_id] = await nursery.start(run, node_id)
            leader_id = await nodes[1].wait_leader()
            while nodes[leader_id].status().role is not Role.LEADER:
                leader_id = await nodes[1].wait_leader()
                await trio.sleep(0.01)
            leader = nodes[leader_id]
            results: list[bytes] = []

            async def client(i: int) -> None:
                results.append(await leader.propose(b"t%d=%d" % (i, i)))

            async with trio.open_nursery() as clients:
                for i in range(50):
                    clients.start_soon(client, i)
            assert len(results) == 50
            for node in nodes.values():
                await node.wait_applied(leader.status().commit)
            assert all(len(m.data) == 50 for m in machines.values())
            nursery.cancel_scope.cancel()


async def test_node_idle_cluster_does_not_fsync(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Heartbeats only move the commit hint, which needs no fsync of its own."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        await c.converge(leader.status().commit)
        before = {n: node.status().saves for n, node in c.nodes.items()}
        await trio.sleep(200 * TICK)  # virtual time: 200 heartbeat rounds
        assert {n: node.status().saves for n, node in c.nodes.items()} == before
        assert leader.status().role is Role.LEADER


async def test_node_deposed_leaders_uncommitted_proposal_has_unknown_outcome(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Section 5.3 / dissertation 6.2: a partitioned leader steps down (check-quorum)
    with an uncommitted entry. It cannot know whether the next leader will commit
    it, so its proposer gets ProposalOutcomeUnknown at once (never success, never a
    plain failure); here the new leader's log overwrites it."""
    async with cluster(tmp_path) as c:
        old = await c.leader()
        await old.propose(b"a=1")
        c.network.isolate(old.id)
        outcome: list[ProposalOutcomeUnknown] = []

        async def doomed() -> None:
            try:
                await old.propose(b"lost=1")
            except ProposalOutcomeUnknown as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            await trio.testing.wait_all_tasks_blocked()
            others = [n for n in c.nodes.values() if n is not old]
            new = None
            while new is None:
                new = next((n for n in others if n.status().role is Role.LEADER), None)
                await trio.sleep(TICK)
            await new.propose(b"won=1")
            await new.propose(b"won=2")
            c.network.heal()
        assert len(outcome) == 1
        assert outcome[0].index == 3  # after the no-op (1) and a=1 (2)
        await c.converge(new.status().commit)
        for machine in c.machines.values():
            assert machine.data == {b"a": b"1", b"won": b"2"}


async def test_node_group_commit_shares_fsyncs_across_a_burst(tmp_path: Path) -> None:
    """While one batch is being fsynced in the worker thread, the next one gathers:
    a burst of proposals costs far fewer saves than proposals."""
    network = MemoryNetwork()
    with trio.fail_after(30):
        async with open_raft_node(
            RaftConfig(id=1),
            voters=[1],
            directory=tmp_path / "1",
            transport=network.transport(1),
            state_machine=KV(),
            options=NodeOptions(tick_interval=0.01, max_pending_proposals=1000),
            rng=random.Random(1),
        ) as node:
            await node.wait_leader()
            await node.propose(b"warm=up")
            before = node.status().saves
            async with trio.open_nursery() as clients:
                for i in range(300):
                    clients.start_soon(node.propose, b"g%d=%d" % (i, i))
            saves = node.status().saves - before
            assert 1 <= saves < 300 // 4


async def test_node_membership_change_and_leadership_transfer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Dissertation 4.1 (single-server changes) and 3.10 (leadership transfer) via the driver."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        await leader.change_membership(Membership(voters=frozenset({1, 2, 3, 4})))
        newcomer = await c.start(4)
        await leader.propose(b"a=2")
        await newcomer.wait_applied(leader.status().commit)
        assert c.machines[4].data == {b"a": b"2"}

        leader.transfer_leadership(4)
        while newcomer.status().role is not Role.LEADER:
            await trio.sleep(TICK)
        with pytest.raises(NotLeader) as info:
            await leader.propose(b"a=stale")
        assert info.value.leader_hint == 4

        remaining = frozenset({1, 2, 3, 4}) - {leader.id}
        await newcomer.change_membership(Membership(voters=remaining))
        await c.crash(leader.id)
        await newcomer.propose(b"a=3")
        await c.converge(newcomer.status().commit)
        assert {n: m.data for n, m in c.machines.items() if n in remaining} == {
            n: {b"a": b"3"} for n in remaining
        }


async def test_a_node_reports_what_recovery_cut_off_its_log(tmp_path: Path) -> None:
    """A torn tail is truncated (a crash's unacknowledged batch), and the node says so
    (``RaftNode.torn_tail``), so its driver can tell the operator."""

    async def open_node(check: Any) -> None:
        async with open_raft_node(
            RaftConfig(id=1), voters=[1], directory=tmp_path / "1",
            transport=MemoryNetwork().transport(1), state_machine=KV(),
            options=NodeOptions(tick_interval=TICK), rng=random.Random(1), run_sync=run_inline,
        ) as node:
            await check(node)

    async def write(node: RaftNode) -> None:
        assert node.torn_tail is None  # a fresh directory: nothing cut
        await node.wait_leader()
        for i in range(3):
            await node.propose(f"k{i}=v".encode())

    await open_node(write)
    segment = max((tmp_path / "1").glob("wal-*.log"))
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size - 3)  # the last batch torn

    async def reopened(node: RaftNode) -> None:
        torn = node.torn_tail
        assert torn is not None and torn.path.name == segment.name
        assert 0 < torn.offset < size - 3 and torn.dropped_bytes == size - 3 - torn.offset

    await open_node(reopened)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([Entry(index=1, term=5), Entry(index=2, term=2)], "entry 2 has term 2, below the term 5"),
        ([Entry(index=1, term=1, kind=EntryKind.CONFIG, data=b"\xff\x00junk")],
         "configuration entry 1: malformed membership"),
        ([Entry(index=1, term=1, kind=EntryKind.CONFIG, data=b"v=;l=3")],
         "configuration entry 1: it has no voter"),
    ],
)
async def test_node_refuses_a_log_no_raft_node_writes_naming_its_directory(
    tmp_path: Path, entries: list[Entry], reason: str
) -> None:
    """The WAL keeps whatever it was given, checksummed; a log with a valid checksum but
    content no Raft node writes (a buggy writer, a hand-made file) is refused when the
    node is built on it, as WalCorrupted naming the directory (a replica adds the
    `cellmesh wipe` hint to that), not as a raw ValueError naming nothing."""
    from cellmesh.consensus import _walcodec as codec

    directory = tmp_path / "1"
    directory.mkdir()
    (directory / "STATE").write_bytes(codec.encode_state(codec.DirState(node=1)) * 2)
    header = codec.encode_frame(
        codec.FRAME_SEGMENT_HEADER,
        codec.encode_segment_header(0, codec.encode_hard_state(HardState())), 0)
    body = codec.encode_frame(
        codec.FRAME_BATCH,
        codec.encode_hard_state(HardState(term=5, vote=1)) + codec.encode_entries(1, entries),
        len(header))
    (directory / f"wal-{0:016x}-{1:016x}.log").write_bytes(header + body)
    with WriteAheadLog.open(directory)[0]:  # the storage returns exactly what it holds
        pass
    with pytest.raises(WalCorrupted, match=reason) as info:
        async with open_raft_node(
            RaftConfig(id=1), voters=[1], directory=directory,
            transport=MemoryNetwork().transport(1), state_machine=KV(), run_sync=run_inline,
        ):
            pytest.fail("the node opened")
    assert info.value.path == directory
    assert "the recovered log is not a Raft log" in str(info.value)
