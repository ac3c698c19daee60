"""Replicated cells as real processes (``python -m cellmesh.actors.runtime``, the client
listener as fd 3 and the peer listener as fd 4, as the root starts them): kill -9,
SIGSTOP longer than the election timeout, restarts, with concurrent clients.

Checked: every read sums to the total, every acknowledged write is in the final state
exactly once, the history is linearizable, the replicas end byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from cellmesh import OutcomeUnknown, Synapse
from cellmesh.testing import process_replica_group
from cellmesh.testing.bank import (
    Applied,
    Balances,
    BankModel,
    Deposit,
    GetApplied,
    GetBalances,
    Receipt,
    Transfer,
)
from cellmesh.testing.kvcell import Get, Put, Value
from cellmesh.testing.lincheck import KVModel, Operation, check_operations

pytestmark = pytest.mark.slow

ACCOUNTS = ("a", "b", "c")
START = 100
TOTAL = START * len(ACCOUNTS)
#: Resend a call unanswered for this long (a paused leader breaks nothing).
RETRY_AFTER = 0.3
#: Longer than the election timeout (10-20 ticks of 20 ms).
PAUSE = 1.0


async def _total_in(syn: Synapse) -> dict[str, int]:
    reply = await syn.fire(GetBalances())
    assert isinstance(reply, Balances)
    return reply.balances


async def wait_ops(progress: Callable[[], int], more: int) -> None:
    """Wait until ``more`` further operations completed."""
    target = progress() + more
    while progress() < target:
        await trio.sleep(0.01)  # clients are working


async def test_replicated_processes_bank_survives_kill_pause_and_restart() -> None:
    history: list[Operation[tuple[Any, ...], Any]] = []
    acknowledged: set[str] = set()
    with process_replica_group("cellmesh.testing.bank:Bank", name="bank") as g, \
            trio.fail_after(240):
        async with Synapse.grow("bank", socket_dir=g.socket_dir) as setup:
            for account in ACCOUNTS:
                await setup.fire(Deposit(id=f"init-{account}", account=account, amount=START))
        done = 0
        stop = trio.Event()

        async def client(cid: int) -> None:
            nonlocal done
            rng = random.Random(cid)
            async with Synapse.grow("bank", socket_dir=g.socket_dir,
                                    retry_after=RETRY_AFTER) as syn:
                i = 0
                while not stop.is_set():
                    i += 1
                    call = trio.current_time()
                    if rng.random() < 0.3:
                        reply = await syn.fire(GetBalances())
                        assert isinstance(reply, Balances)
                        assert sum(reply.balances.values()) == TOTAL
                        output: Any = tuple(sorted(reply.balances.items()))
                        op: tuple[Any, ...] = ("read",)
                    else:
                        src, dst = rng.sample(ACCOUNTS, 2)
                        amount = rng.randrange(1, 40)
                        tid = f"{cid}.{i}"
                        op = ("transfer", src, dst, amount)
                        try:
                            receipt = await syn.fire(Transfer(id=tid, src=src, dst=dst,
                                                              amount=amount))
                        except OutcomeUnknown:
                            history.append(Operation(client=cid, input=op, output=None,
                                                     call=call, ret=None))
                            cid += 1000  # one outstanding operation per client
                            continue
                        assert isinstance(receipt, Receipt)
                        output = receipt.ok
                        acknowledged.add(tid)
                    history.append(Operation(client=cid, input=op, output=output, call=call,
                                             ret=trio.current_time()))
                    done += 1

        async def nemesis() -> None:
            await wait_ops(lambda: done, 40)
            leader = await g.leader()
            g.kill(leader)  # kill -9 the leader
            await wait_ops(lambda: done, 40)
            g.start(leader)
            await wait_ops(lambda: done, 40)
            leader = await g.leader()
            g.pause(leader)  # SIGSTOP longer than an election timeout
            await trio.sleep(PAUSE)
            await wait_ops(lambda: done, 20)  # the others elected a leader and serve
            g.resume(leader)
            await wait_ops(lambda: done, 40)
            leader = await g.leader()
            follower = next(r for r in g.members if r != leader)
            g.kill(follower)  # kill -9 a follower
            await wait_ops(lambda: done, 40)
            g.start(follower)
            await wait_ops(lambda: done, 40)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(nemesis)
            for cid in range(5):
                nursery.start_soon(client, cid)

        async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
            assert sum((await _total_in(syn)).values()) == TOTAL
            counts = await syn.fire(GetApplied())
            assert isinstance(counts, Applied)
        digests = await g.wait_converged()
    # Exactly once: every acknowledged transfer was applied once, none twice.
    assert [t for t in acknowledged if counts.counts.get(t) != 1] == []
    assert [t for t, n in counts.counts.items() if n != 1] == []
    assert len({d.sha256 for d in digests}) == 1
    assert len({d.applied_index for d in digests}) == 1
    model = BankModel(tuple((a, START) for a in ACCOUNTS))
    assert check_operations(model, history).ok


async def test_replicated_processes_kv_survive_kill_9_of_the_leader() -> None:
    """Sections 5.2 and 5.4 end to end (ported from the retired key=value server's
    test): after kill -9 of the leader a new one is elected, no acknowledged write is
    lost, and the killed replica restarts from its WAL and catches up."""
    with process_replica_group("cellmesh.testing.kvcell:KVCell", name="kv") as g, \
            trio.fail_after(120):
        async with Synapse.grow("kv", socket_dir=g.socket_dir) as syn:
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(syn.fire, Put(key=f"k{i}", value=str(i)))
            await syn.fire(Put(key="last", value="before-kill"))
            leader = await g.leader()
            g.kill(leader)
            new_leader = await g.leader([r for r in g.members if r != leader])
            assert new_leader != leader
            assert await syn.fire(Get(key="last")) == Value(value="before-kill")
            assert await syn.fire(Get(key="k49")) == Value(value="49")
            await syn.fire(Put(key="last", value="after-kill"))
            g.start(leader)
            await g.wait_converged()
            assert await syn.fire(Get(key="last")) == Value(value="after-kill")


async def test_replicated_processes_kv_history_with_leader_kill_is_linearizable() -> None:
    """Ported from the retired process-cluster test: clients put and get while the
    leader is killed; the recorded history is linearizable for a key-value map."""
    history: list[Operation[Any, str]] = []
    with process_replica_group("cellmesh.testing.kvcell:KVCell", name="kv") as g, \
            trio.fail_after(120):
        killed = trio.Event()

        async def client(cid: int) -> None:
            rng = random.Random(cid)
            async with Synapse.grow("kv", socket_dir=g.socket_dir,
                                    retry_after=RETRY_AFTER) as syn:
                for i in range(40):
                    key = rng.choice(("a", "b", "c"))
                    call = trio.current_time()
                    if rng.random() < 0.6:
                        value = f"{cid}.{i}"
                        await syn.fire(Put(key=key, value=value))
                        history.append(Operation(client=cid, input=("put", key, value),
                                                 output=None, call=call,
                                                 ret=trio.current_time()))
                    else:
                        got = await syn.fire(Get(key=key))
                        assert isinstance(got, Value)
                        history.append(Operation(client=cid, input=("get", key, None),
                                                 output=got.value, call=call,
                                                 ret=trio.current_time()))

        async def killer() -> None:
            while len(history) < 40:
                await trio.sleep(0.005)  # clients are working
            g.kill(await g.leader())
            killed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            for cid in range(4):
                nursery.start_soon(client, cid)
        assert killed.is_set()
    assert len(history) == 4 * 40  # sessions: no call failed or went unknown
    result = check_operations(KVModel(), history)
    assert result.ok, result
    # The history constrains the checker: a forged read is caught.
    index = next(i for i, op in enumerate(history) if op.input[0] == "get")
    forged = list(history)
    forged[index] = Operation(client=history[index].client, input=history[index].input,
                              output="forged", call=history[index].call,
                              ret=history[index].ret)
    assert not check_operations(KVModel(), forged).ok


def _damage(wal_dir: Path) -> Path:
    """Flip a byte in the middle of the first WAL segment; return the file."""
    segment = sorted(p for p in wal_dir.glob("wal-*.log") if p.stat().st_size > 64)[0]
    data = bytearray(segment.read_bytes())
    middle = 64
    data[middle] ^= 0xFF
    segment.write_bytes(bytes(data))
    return segment


async def test_replicated_process_with_a_damaged_wal_refuses_to_start_and_the_group_serves(
) -> None:
    with process_replica_group("cellmesh.testing.kvcell:KVCell", name="kv") as g, \
            trio.fail_after(120):
        async with Synapse.grow("kv", socket_dir=g.socket_dir) as syn:
            for i in range(30):
                await syn.fire(Put(key=f"k{i}", value="x" * 50))
            await g.wait_converged()
            leader = await g.leader()
            victim = next(r for r in g.members if r != leader)
            g.terminate(victim)
            damaged = _damage(g.data_dir(victim) / "raft")
            proc = g.start(victim)
            code = await proc.wait_async()
            assert code == 1
            last = g.log_text(victim).strip().splitlines()[-1]
            # The last line names the cause and the damaged file (the root shows it).
            assert str(damaged) in last
            kind = last.split(":", 1)[0]  # (damage with valid frames after it: corruption)
            assert kind.startswith("cellmesh.consensus.") and kind.endswith(".WalCorrupted"), last
            # ... and the operator's way out, not the library's.
            assert last.endswith(f"; to rebuild it from its peers: cellmesh wipe kv/{victim}")
            g.procs.pop(victim)
            assert await syn.fire(Put(key="still", value="serving")) == Value(value="")
            assert await syn.fire(Get(key="still")) == Value(value="serving")
