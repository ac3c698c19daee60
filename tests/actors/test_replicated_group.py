"""Replica groups served in the test's Trio run (real sockets, real WALs, real fsync):
clients never see Raft, writes apply exactly once across failures, reads are
linearizable, snapshots, membership, and hostile clients and peers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import cbor2
import pytest
import trio

import cellmesh
from cellmesh import Cell, OutcomeUnknown, RemoteCellError, Synapse
from cellmesh.actors._replica_admin import most_up_to_date
from cellmesh.actors._replica_entries import ResultKind, command_op
from cellmesh.actors.control import ReplicaStats
from cellmesh.actors.replicated_proteins import (
    AddReplica,
    AdminRefused,
    Forward,
    ReplicaStatusRequest,
)
from cellmesh.actors.runtime import serve_cell
from cellmesh.testing import open_replica_group
from cellmesh.testing.bank import (
    Applied,
    Balances,
    Bank,
    Deposit,
    GetApplied,
    GetBalances,
    Receipt,
    Transfer,
)
from cellmesh.testing.kvcell import Get, GetStale, KVCell, Put, Value
from cellmesh.transport.session import OpenSession, SessionCall, SessionFault, SessionOpened
from cellmesh.wire.proteins import PROTEINS, DecodeContext, EncodeContext, fingerprint

pytestmark = pytest.mark.slow


async def applied(syn: Synapse) -> Counter[str]:
    reply = await syn.fire(GetApplied())
    assert isinstance(reply, Applied)
    return Counter(reply.counts)


async def balances(syn: Synapse) -> dict[str, int]:
    reply = await syn.fire(GetBalances())
    assert isinstance(reply, Balances)
    return reply.balances


async def test_replicated_group_serves_writes_and_reads_and_replicas_converge() -> None:
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                receipt = await syn.fire(Deposit(id="d1", account="a", amount=100))
                assert isinstance(receipt, Receipt) and receipt.ok
                assert (await syn.fire(Transfer(id="t1", src="a", dst="b", amount=30))).ok
                assert not (await syn.fire(Transfer(id="t2", src="b", dst="a", amount=99))).ok
                assert await balances(syn) == {"a": 70, "b": 30}
                with pytest.raises(RemoteCellError) as info:
                    await syn.fire(Deposit(id="neg", account="a", amount=-1))
                assert "ValueError: a deposit must not be negative" in str(info.value)
            digests = await g.wait_converged()
            assert len({d.sha256 for d in digests}) == 1
            stats = [await g.stats(r) for r in g.members]
            assert sorted(s.role for s in stats) == ["follower", "follower", "leader"]
            assert all(s.voters == [0, 1, 2] and s.learners == [] for s in stats)


class Teller(Cell):
    """A plain cell calling the bank, as any cell of a mesh would."""

    @cellmesh.receptor
    async def deposit(self, msg: Deposit) -> Receipt:
        reply = await self.call("bank", msg)
        assert isinstance(reply, Receipt)
        return reply


async def test_replicated_group_is_called_by_name_from_another_cell() -> None:
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g, trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve_cell(
                Teller(), name="teller", socket_dir=g.socket_dir, task_status=task_status,
            ))
            async with Synapse.grow("teller", socket_dir=g.socket_dir) as teller:
                assert (await teller.fire(Deposit(id="x", account="a", amount=5))).ok
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert await balances(syn) == {"a": 5}
            nursery.cancel_scope.cancel()


async def test_replicated_group_clients_follow_a_leadership_transfer() -> None:
    """Only the leader accepts. After a leadership transfer the old leader sends its
    connections a goaway: calls in flight finish (forwarded to the new leader), new
    calls go over a new connection to the new leader; each write applies once."""
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await syn.fire(Deposit(id="d0", account="a", amount=10))).ok
                old = await g.leader()
                ids = [f"w{i}" for i in range(20)]
                async with trio.open_nursery() as nursery:
                    for i in ids[:10]:
                        nursery.start_soon(syn.fire, Deposit(id=i, account="a", amount=1))
                    await g.transfer(None)
                    for i in ids[10:]:
                        nursery.start_soon(syn.fire, Deposit(id=i, account="a", amount=1))
                assert await g.leader() != old
                counts = await applied(syn)
                assert all(counts[i] == 1 for i in ids)
                assert await balances(syn) == {"a": 30}
            await g.wait_converged()


async def test_replicated_group_follower_forwards_commands_to_the_leader() -> None:
    """A follower's router forwards an op over the peer sockets (Forward) and returns
    the leader's result: what a connection left on a former leader relies on."""
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            leader = await g.leader()
            follower = next(r for r in g.members if r != leader)
            runtime = g.cells[follower]._replica
            assert runtime is not None
            body = cbor2.dumps(PROTEINS.encode(Deposit(id="f", account="a", amount=7),
                                               EncodeContext()))
            result = await runtime.router.submit(command_op(0, 0, 0, body))
            assert result[0] == ResultKind.OK
            receipt = PROTEINS.decode(result[1], DecodeContext())
            assert isinstance(receipt, Receipt) and receipt.ok
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await applied(syn))["f"] == 1


async def test_replicated_group_leader_loss_is_invisible_and_writes_apply_once() -> None:
    """The leader stops in the middle of concurrent writes: the synapse resends what was
    in flight (same session, same seq) to the next leader; no call fails, each applies
    exactly once; the stopped replica restarts from its WAL and converges."""
    with trio.fail_after(90):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                await syn.fire(Deposit(id="seed", account="a", amount=1000))
                leader = await g.leader()
                done = 0

                async def writer(w: int) -> None:
                    nonlocal done
                    for i in range(15):
                        await syn.fire(Transfer(id=f"{w}.{i}", src="a", dst=f"b{w}", amount=1))
                        done += 1

                async with trio.open_nursery() as nursery:
                    for w in range(8):
                        nursery.start_soon(writer, w)
                    while done < 30:
                        await trio.sleep(0.005)
                    await g.stop(leader)
                counts = await applied(syn)
                assert [k for k, n in counts.items() if n != 1] == []
                assert len(counts) == 8 * 15 + 1
                assert sum((await balances(syn)).values()) == 1000
                await g.start(leader)
            await g.wait_converged()


async def test_replicated_group_reads_are_linearizable_and_stale_reads_opt_in() -> None:
    with trio.fail_after(60):
        async with open_replica_group(KVCell, name="kv") as g:
            async with Synapse.grow("kv", socket_dir=g.socket_dir) as syn:
                for i in range(10):
                    await syn.fire(Put(key="k", value=str(i)))
                    # A read after an acknowledged write sees it (ReadIndex).
                    assert await syn.fire(Get(key="k")) == Value(value=str(i))
                assert await syn.fire(GetStale(key="k")) == Value(value="9")
                assert await syn.fire(Put(key="k", value="x")) == Value(value="9")


class SnappyBank(Bank):
    """Snapshots (and compacts the log) every 5 entries."""

    snapshot_every = 5


class ThreadSnappyBank(SnappyBank):
    """The same, its snapshots built off the event loop (``snapshot_job``)."""

    def __init__(self) -> None:
        super().__init__()
        self.built_in: list[int] = []  # thread idents of the builds

    def snapshot_job(self) -> Callable[[], bytes]:
        balances, applied = dict(self.balances), dict(self.applied)

        def build() -> bytes:
            self.built_in.append(threading.get_ident())
            return cbor2.dumps([balances, applied], canonical=True)

        return build


@pytest.mark.parametrize("cls", [SnappyBank, ThreadSnappyBank])
async def test_replicated_group_lagging_replica_catches_up_from_a_snapshot(
    cls: type[SnappyBank],
) -> None:
    """Section 7: the leader compacted past what a stopped follower has, so the
    follower is sent the snapshot (state, sessions and all) and then the rest;
    built on the loop (``snapshot()``) or in a worker thread (``snapshot_job``)."""
    with trio.fail_after(60):
        async with open_replica_group(cls, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                await syn.fire(Deposit(id="d", account="a", amount=1))
                leader = await g.leader()
                follower = next(r for r in g.members if r != leader)
                await g.stop(follower)
                for i in range(40):
                    await syn.fire(Deposit(id=f"d{i}", account="a", amount=1))
                await g.start(follower)
                await g.wait_converged()
                assert sum((await applied(syn)).values()) == 41
            cell = g.cells[follower]
            assert isinstance(cell, Bank) and cell.balances == {"a": 41}
            leading = g.cells[leader]
            if isinstance(leading, ThreadSnappyBank):
                # the node's snapshots (the harness's comparisons build on the loop)
                assert set(leading.built_in) - {threading.get_ident()}


async def test_replicated_group_grows_and_shrinks_one_replica_at_a_time() -> None:
    """Membership (diss. 4.1, 4.2.1): a replica started empty joins as a learner, catches
    up, and is promoted; removing the leader hands leadership to another voter."""
    with trio.fail_after(90):
        async with open_replica_group(Bank, replicas=1, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                for i in range(10):
                    await syn.fire(Deposit(id=f"d{i}", account="a", amount=1))
                for new in (1, 2):
                    await g.start(new, join=True)
                    done = await g.add(new)
                    assert "voter" in done.detail
                stats = await g.stats(2)
                assert stats.voters == [0, 1, 2] and stats.role in ("follower", "leader")
                await g.wait_converged([0, 1, 2])
                await g.remove(0)
                while True:
                    leader = await g.leader([1, 2])
                    if (await g.stats(leader)).voters == [1, 2]:
                        break
                assert (await syn.fire(Deposit(id="after", account="a", amount=1))).ok
                await g.wait_converged([1, 2])


def test_replicated_group_transfer_target_is_a_live_then_up_to_date_voter() -> None:
    match = {1: 40, 2: 50, 3: 50, 4: None}
    heard = {1: True, 2: False, 3: True, 4: True}
    pick = lambda voters: most_up_to_date(voters, match.get, heard.__getitem__)  # noqa: E731
    assert pick({1, 2, 3, 4}) == 3  # 2 is as far along, but silent
    assert pick({1, 4}) == 1  # a voter the leader tracks no index of counts as behind
    assert pick({2}) == 2  # a silent voter is still a candidate when it is the only one
    heard[2] = True
    assert pick({1, 2, 3}) == 2  # equals: the lowest id


async def test_replicated_group_hands_leadership_to_a_live_voter_not_a_stopped_one() -> None:
    """``TransferLeadership(to=None)`` with the lowest-id follower down: the other one
    takes over (it used to pick the lowest id and time out on the stopped replica)."""
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await syn.fire(Deposit(id="d0", account="a", amount=1))).ok
                old = await g.leader()
                down, live = sorted(r for r in g.members if r != old)
                await g.stop(down)
                for i in range(5):  # the live follower's log moves past the stopped one's
                    assert (await syn.fire(Deposit(id=f"w{i}", account="a", amount=1))).ok
                done = await g.transfer(None)
                assert done.detail == f"replica {live} leads"
                assert await g.leader([old, live]) == live
                assert (await syn.fire(Deposit(id="after", account="a", amount=1))).ok


async def test_replicated_group_admin_requests_at_a_follower_name_the_leader() -> None:
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            leader = await g.leader()
            follower = next(r for r in g.members if r != leader)
            refused = await g.ask(follower, AddReplica(id=9, path="/nowhere/9.sock"))
            assert isinstance(refused, AdminRefused)
            assert (refused.code, refused.leader) == ("not_leader", leader)
            bad = await g.ask(leader, AddReplica(id=-1, path=""))
            assert isinstance(bad, AdminRefused) and bad.code == "invalid"
            stats = await g.ask(follower, ReplicaStatusRequest())
            assert isinstance(stats, ReplicaStats) and stats.leader == leader


class ShortSessions(Bank):
    """Sessions expire after 50 ms of log time; at most 4 exist."""

    session_ttl = 0.05
    max_sessions = 4


async def test_replicated_group_expired_session_is_replaced_transparently() -> None:
    with trio.fail_after(60):
        async with open_replica_group(ShortSessions, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await syn.fire(Deposit(id="a", account="a", amount=1))).ok
                assert syn._sessions is not None
                first = syn._sessions.session
                # The session's TTL passes (in log time: the leader's clock); another
                # client's write then applies with a timestamp past it.
                await trio.sleep(ShortSessions.session_ttl * 1.5)
                async with Synapse.grow("bank", socket_dir=g.socket_dir) as other:
                    await other.fire(Deposit(id="o", account="o", amount=0))
                # The first copy met an expired session: certainly not applied, so the
                # synapse moved the call to a new session; the caller sees a receipt.
                assert (await syn.fire(Deposit(id="b", account="a", amount=1))).ok
                assert syn._sessions.session != first
                counts = await applied(syn)
                assert counts["a"] == 1 and counts["b"] == 1


async def test_replicated_group_bounds_sessions_and_survives_hostile_clients() -> None:
    """Attack surface: forged envelopes, undecodable bodies, schema mismatches, unknown
    proteins, session 0, out-of-range counters, malformed forwarded ops on the peer
    socket and a flood of sessions: each is refused with an error reply, nothing bad
    reaches the log, and the group keeps serving with a bounded session table."""
    with trio.fail_after(60):
        async with open_replica_group(ShortSessions, name="bank") as g:
            body = cbor2.dumps(PROTEINS.encode(Deposit(id="h", account="a", amount=1),
                                               EncodeContext()))
            good_fp = fingerprint(Deposit)
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as raw:
                raw._sessions = None  # speak the envelopes by hand
                opened = await raw.fire(OpenSession())
                assert isinstance(opened, SessionOpened)
                sid = opened.session
                hostile = [
                    SessionCall(session=sid, seq=1, floor=1, fingerprint=good_fp, body=b"\xff"),
                    SessionCall(session=sid, seq=1, floor=1, fingerprint="0" * 16, body=body),
                    SessionCall(session=sid, seq=1, floor=1, fingerprint=good_fp,
                                body=cbor2.dumps(["no.such.Protein", 1])),
                    SessionCall(session=0, seq=1, floor=1, fingerprint=good_fp, body=body),
                    SessionCall(session=sid, seq=-5, floor=1, fingerprint=good_fp, body=body),
                    SessionCall(session=sid, seq=2**70, floor=1, fingerprint=good_fp, body=body),
                ]
                for msg in hostile:
                    with pytest.raises(RemoteCellError):
                        await raw.fire(msg)
            leader = await g.leader()
            async with g.peer(leader) as peer:
                for junk in (b"", b"\xff", cbor2.dumps([0, 1]), cbor2.dumps([9, 9, 9, 9, 9])):
                    with pytest.raises(RemoteCellError):
                        await peer.fire(Forward(op=junk))
            for _ in range(10):
                async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                    assert (await syn.fire(Deposit(id="ok", account="a", amount=0))).ok
            cell = g.cells[leader]
            assert cell._replica is not None
            assert len(cell._replica.machine.sessions) <= ShortSessions.max_sessions
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await applied(syn))["h"] == 0
            await g.wait_converged()


async def test_replicated_group_a_client_cannot_write_in_another_clients_session() -> None:
    """A session id is the capability to write in that session. Ids came from a
    counter: an attacker opened a session, took its id minus one (the victim's),
    sent the victim's next seq with its own command, and the victim's write was then
    answered from the table (the attacker's reply) and never applied; a forged floor
    made every later write of the victim OutcomeUnknown. Now ids are random: the
    neighbours of the attacker's own id are sessions nobody has."""
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as victim, \
                    Synapse.grow("bank", socket_dir=g.socket_dir) as raw:
                assert (await victim.fire(Deposit(id="v1", account="v", amount=1))).ok
                raw._sessions = None  # speak the envelopes by hand
                ids = {(await raw.fire(OpenSession())).session for _ in range(8)}
                assert len(ids) == 8 and all(0 < i < 2**63 for i in ids)
                assert max(ids) - min(ids) > 2**32  # drawn, not counted
                evil = cbor2.dumps(PROTEINS.encode(Deposit(id="evil", account="e", amount=9),
                                                   EncodeContext()))
                for sid in sorted({i + d for i in ids for d in (-2, -1, 1, 2)} - ids):
                    forged = await raw.fire(SessionCall(
                        session=sid, seq=2, floor=10**6, fingerprint=fingerprint(Deposit),
                        body=evil))
                    assert forged == SessionFault(kind="expired", detail=forged.detail)
                assert (await victim.fire(Deposit(id="v2", account="v", amount=1))).ok
                assert (await victim.fire(Deposit(id="v3", account="v", amount=1))).ok
                book = await applied(victim)
                assert book["v2"] == 1 and book["v3"] == 1 and "evil" not in book
            await g.wait_converged()


class SmallFrames(Bank):
    """A bank whose client socket takes frames of at most 1 MiB."""

    membrane_options: ClassVar[dict[str, Any]] = {"max_frame_size": 1 << 20}


async def test_replicated_group_refuses_session_bodies_past_the_frame_limit_or_budget() -> None:
    """A session call's body is opaque bytes, and bytes of 64 KiB or more travel as a
    vesicle, which the frame limit does not see: an audit's 60 MiB bodies reached the
    log and killed leader after leader, and a 4 MiB body of empty arrays (a CBOR bomb
    the frame check would have refused) was decoded with no budget. Now a body over
    the cell's max_frame_size, or over its decode budget, is refused before the log."""
    with trio.fail_after(60):
        async with open_replica_group(SmallFrames, name="bank") as g:
            fp = fingerprint(Deposit)
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as raw:
                raw._sessions = None  # speak the envelopes by hand
                sid = (await raw.fire(OpenSession())).session
                big = cbor2.dumps(["cellmesh.testing.bank.Deposit", "x" * (2 << 20), "a", 1])
                with pytest.raises(RemoteCellError, match=r"2,097,\d+ bytes is larger than "
                                   r"this replicated cell's frame limit \(1,048,576 bytes"):
                    await raw.fire(SessionCall(session=sid, seq=1, floor=1, fingerprint=fp,
                                               body=big))
                bomb = b"\x9a\x00\x0f\x42\x40" + b"\x80" * 1_000_000  # 10**6 empty arrays
                with pytest.raises(RemoteCellError, match="session call body refused"):
                    await raw.fire(SessionCall(session=sid, seq=2, floor=1, fingerprint=fp,
                                               body=bomb))
            async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
                assert (await syn.fire(Deposit(id="ok", account="a", amount=1))).ok
                assert "x" * 10 not in str(await applied(syn))
            await g.wait_converged()


async def test_replicated_group_outcome_unknown_when_the_group_never_answers() -> None:
    """With every replica stopped after the call left, no answer can come: after
    give_up_after the caller gets OutcomeUnknown, never success or plain failure."""
    with trio.fail_after(60):
        async with open_replica_group(Bank, name="bank") as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir, retry_after=0.1,
                                    give_up_after=1.0) as syn:
                await syn.fire(Deposit(id="d", account="a", amount=1))
                followers = [r for r in g.members if r != await g.leader()]
                for r in followers:
                    await g.stop(r)  # no quorum: the next write cannot commit
                with pytest.raises(OutcomeUnknown):
                    await syn.fire(Deposit(id="lost", account="a", amount=1))


class ClockBank(Bank):
    """Reads the wall clock in apply (caught by the determinism check)."""

    def apply(self, command: Any, meta: cellmesh.CommandMeta) -> Receipt:
        import time

        super().apply(command, meta)
        return Receipt(ok=True, index=meta.index, timestamp=time.time_ns())


async def test_replicated_group_determinism_check_stops_a_replica_that_reads_the_clock() -> None:
    with trio.fail_after(60), pytest.raises(BaseException) as info:
        async with open_replica_group(ClockBank, name="bank",
                                      env={"CELL_REPLICA_CHECK": "1"}) as g:
            async with Synapse.grow("bank", socket_dir=g.socket_dir, give_up_after=5) as syn:
                await syn.fire(Deposit(id="d", account="a", amount=1))
            await trio.sleep_forever()
    assert isinstance(info.value, BaseExceptionGroup)
    match, _ = info.value.split(cellmesh.NondeterminismDetected)
    assert match is not None
