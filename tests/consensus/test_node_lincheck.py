"""Linearizability of the driver under crashes, restarts and partitions (MockClock).

Concurrent clients put and get two keys through random nodes while a fault
task kills nodes (restarting them from their WAL) and cuts them off. The
recorded history must be linearizable for a key-value map (Raft section 8
and dissertation 6.4: committed writes and ReadIndex reads). Operations
whose outcome is unknown (node stopped, timed out) are recorded as such.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from cellmesh.consensus.core import RaftConfig
from cellmesh.consensus.errors import ConsensusError, NotLeader
from cellmesh.consensus.node import NodeOptions, NodeStopped, RaftNode, open_raft_node, run_inline
from cellmesh.consensus.transport import MemoryNetwork
from cellmesh.testing import KVModel, Operation, check_operations
from cellmesh.testing.kvsm import KeyValueMachine

# Seeds 3 and 6 catch a driver that answers reads from local state without
# ReadIndex (checked by hand with that mutant); the others add coverage.
IDS = (1, 2, 3)
TICK = 0.05
KVOp = Operation[tuple[str, str, str | None], str]


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_node_history_is_linearizable_under_faults(
    tmp_path: Path, seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    network = MemoryNetwork()
    nodes: dict[int, RaftNode] = {}
    scopes: dict[int, trio.CancelScope] = {}
    done: dict[int, trio.Event] = {}
    history: list[KVOp] = []
    options = NodeOptions(tick_interval=TICK)

    async def run_node(node_id: int, task_status: trio.TaskStatus[None]) -> None:
        try:
            with trio.CancelScope() as scope:
                async with open_raft_node(
                    RaftConfig(id=node_id),
                    voters=IDS,
                    directory=tmp_path / str(node_id),
                    transport=network.transport(node_id),
                    state_machine=KeyValueMachine(),
                    options=options,
                    rng=random.Random(rng.random()),
                    run_sync=run_inline,
                ) as node:
                    nodes[node_id] = node
                    scopes[node_id] = scope
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            done[node_id].set()

    async def start(nursery: trio.Nursery, node_id: int) -> None:
        done[node_id] = trio.Event()
        await nursery.start(run_node, node_id)

    async def crash(node_id: int) -> None:
        network.crash(node_id)
        del nodes[node_id]
        scopes.pop(node_id).cancel()
        await done[node_id].wait()

    async def client(cid: int) -> None:
        preferred: int | None = None
        recorded = 0
        for n in range(300):
            if recorded >= 20:
                return
            node = nodes.get(preferred if preferred is not None else rng.choice(IDS))
            preferred = None
            if node is None:
                await trio.sleep(TICK)  # client back-off: that node is down
                continue
            key = rng.choice("xy")
            call = trio.current_time()
            if rng.random() < 0.5:
                value = f"{cid}.{n}"
                put = ("put", key, value)
                try:
                    with trio.move_on_after(3) as timeout:
                        await node.propose(f"{key}={value}".encode())
                except NodeStopped:
                    history.append(KVOp(client=cid, input=put, output=None, call=call, ret=None))
                    recorded += 1
                    continue
                except NotLeader as exc:
                    preferred = exc.leader_hint
                    await trio.sleep(TICK)  # client back-off before retrying elsewhere
                    continue
                except ConsensusError:
                    await trio.sleep(TICK)  # dropped: certainly not applied
                    continue
                ret = None if timeout.cancelled_caught else trio.current_time()
                history.append(KVOp(client=cid, input=put, output=None, call=call, ret=ret))
                recorded += 1
            else:
                get = ("get", key, None)
                try:
                    with trio.move_on_after(3) as timeout:
                        out = await node.read(key.encode())
                except ConsensusError:
                    await trio.sleep(TICK)  # no leader known here: back off
                    continue
                if not timeout.cancelled_caught:
                    now = trio.current_time()
                    history.append(
                        KVOp(client=cid, input=get, output=out.decode(), call=call, ret=now)
                    )
                    recorded += 1

    async def faults(nursery: trio.Nursery) -> None:
        for _ in range(6):
            await trio.sleep(rng.uniform(0.5, 2.0))
            victim = rng.choice(IDS)
            if rng.random() < 0.5:
                await crash(victim)
                await trio.sleep(rng.uniform(0.2, 1.5))
                await start(nursery, victim)
            else:
                network.isolate(victim)
                await trio.sleep(rng.uniform(0.2, 1.5))
                network.heal()

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for node_id in IDS:
                await start(nursery, node_id)
            async with trio.open_nursery() as work:
                work.start_soon(faults, nursery)
                for cid in range(4):
                    work.start_soon(client, cid)
            nursery.cancel_scope.cancel()

    completed = [op for op in history if op.ret is not None]
    assert len(completed) > 20
    result = check_operations(KVModel(), history)
    assert result.ok, result.failing_part
