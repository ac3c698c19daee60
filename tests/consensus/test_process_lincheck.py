"""A real 3-process cluster, kill -9 of the leader during writes, checked for linearizability.

Raft §8 (client interaction) end to end: clients write and read through
whichever node they believe leads while the leader is killed mid-stream. An
operation answered NotLeader did not happen and is not recorded; one whose
node died before answering has an unknown outcome (``ret=None``). The
recorded history must be linearizable for a key-value map.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import trio

from cellmesh.consensus.errors import NotLeader
from cellmesh.consensus.serve import RaftClient, ServerError, open_raft_client
from cellmesh.testing.cluster import find_leader, process_cluster
from cellmesh.testing.lincheck import KVModel, Operation, check_operations

KEYS = ("a", "b", "c")
CLIENTS = 4
OPS_PER_CLIENT = 60


async def test_history_with_leader_kill_9_is_linearizable() -> None:
    history: list[Operation[Any, str]] = []
    with process_cluster(tick=0.02) as cluster, trio.fail_after(120):
        for node in cluster.voters:
            await cluster.wait_serving(node)
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[int, RaftClient] = {
                n: await stack.enter_async_context(open_raft_client(cluster.client_path(n)))
                for n in cluster.voters
            }
            leader = await find_leader(clients)
            alive = dict(clients)
            killed = trio.Event()
            done = 0

            async def client(cid: int) -> None:
                nonlocal done
                rng = random.Random(cid)
                target = leader
                for i in range(OPS_PER_CLIENT):
                    key = rng.choice(KEYS)
                    write = rng.random() < 0.6
                    value = f"{cid}.{i}"
                    op_input = ("put", key, value) if write else ("get", key, None)
                    while True:
                        if target not in alive:
                            target = rng.choice(sorted(alive))
                        node = alive[target]
                        call = trio.current_time()
                        try:
                            if write:
                                await node.propose(f"{key}={value}".encode())
                                output = None
                            else:
                                output = (await node.read(key.encode())).decode()
                        except NotLeader as exc:
                            # It did not happen: try the hinted node.
                            target = exc.leader_hint if exc.leader_hint in alive else target
                            if exc.leader_hint not in alive:
                                target = rng.choice(sorted(alive))
                            await trio.sleep(0.01)
                            continue
                        except (trio.BrokenResourceError, ServerError, OSError):
                            # The node died (or dropped it) without an answer: unknown.
                            history.append(Operation(
                                client=cid, input=op_input, output=None, call=call, ret=None
                            ))
                            target = rng.choice(sorted(alive))
                            break
                        history.append(Operation(
                            client=cid, input=op_input, output=output,
                            call=call, ret=trio.current_time(),
                        ))
                        break
                    # A client with an unknown outcome is a new client from now on
                    # (lincheck allows one outstanding operation per client).
                    if history and history[-1].ret is None:
                        cid += 100
                done += 1

            async def killer() -> None:
                while len(history) < 40:
                    await trio.sleep(0.005)
                cluster.kill(leader)
                alive.pop(leader)
                killed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(killer)
                for cid in range(CLIENTS):
                    nursery.start_soon(client, cid)
            assert killed.is_set()
            assert done == CLIENTS
    completed = [op for op in history if op.ret is not None]
    assert len(completed) >= CLIENTS * OPS_PER_CLIENT // 2
    result = check_operations(KVModel(), history)
    assert result.ok, result
    # The history constrains the checker: one read made to return a value
    # nobody wrote is caught.
    index = next(i for i, op in enumerate(history) if op.input[0] == "get" and op.ret)
    forged = list(history)
    forged[index] = Operation(
        client=history[index].client, input=history[index].input, output="forged",
        call=history[index].call, ret=history[index].ret,
    )
    assert not check_operations(KVModel(), forged).ok
