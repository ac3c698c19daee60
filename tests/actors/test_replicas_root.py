"""The root's side of replicated cells, with a small real ReplicatedCell (``Observer``).

What the root promises a replica and the operator: one sandboxed process
per replica with its own data dir, the group's client listener as fd 3 for
all of them, each one's own peer listener as fd 4, the peer directory
reachable from the group's sandboxes and from nobody else's, per-replica
supervision (a crash restarts that replica alone; one that cannot start is
given up while the group serves on), status rows with the Raft columns,
kill and logs by ``X/i``, the group record, and the refusals. Each replica
reports what it was given in ``observed.json`` in its own data directory.
The bank under faults and membership changes are in
``test_replicas_root_bank.py`` and ``test_replicas_root_membership.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import replicacells
import trio
from replicacells import AskRoot, Describe, Downs, Lie, Note, Noted, Probe, Watch
from test_root import leaves

from cellmesh import Synapse
from cellmesh.actors._replicas_changes import PeerAdmin
from cellmesh.actors.control import (
    ChangeReplicas,
    KillCell,
    ReplicaStats,
    StopMesh,
    WipeReplica,
)
from cellmesh.actors.errors import RootRequestError
from cellmesh.actors.root import Root
from cellmesh.cli._client import RootRefused, RootStopped, ask_root, control_call
from cellmesh.sandbox import read_events
from cellmesh.testing.mesh import MeshStopped, open_root

GROUP = "grp"


def group_toml(replicas: int = 3, *, standby: bool = False) -> str:
    return (
        f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:Observer"\n'
        f"replicas = {replicas}\nstandby = {'true' if standby else 'false'}\n"
        "start_timeout = 60\n\n"
    )


OUTSIDER = (
    '[cells.out]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
    f'calls = ["{GROUP}"]\nstandby = false\n'
)


@asynccontextmanager
async def running(
    toml: str, *, sandbox: str = "host", home: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> AsyncIterator[Root]:
    """A root serving ``toml`` on ``home`` (a new one under /tmp unless given)."""
    own = home is None
    where = home if home is not None else Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(replicacells.__file__), where / "replicacells.py")
        async with open_root(where, toml, sandbox=sandbox, stop_timeout=20, log=log) as root:
            yield root
    finally:
        if own:
            shutil.rmtree(where, ignore_errors=True)


def rows(root: Root) -> dict[str, Any]:
    return {c.name: c for c in root.status().cells}


def state(root: Root, name: str) -> str:
    return str(rows(root)[name].state)


async def until(root: Root, predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Wait (on the slots' and groups' change events) until ``predicate()`` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            async with trio.open_nursery() as nursery:
                events = [s.changed for s in root.slots.values()]
                events += [g.changed for g in root._replicas.groups.values()]
                for event in events:
                    nursery.start_soon(_wake, event, nursery.cancel_scope)


async def _wake(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def leader(root: Root) -> int | None:
    return root._replicas.groups[GROUP].view().leader


async def healthy(root: Root, count: int = 3) -> None:
    """Every replica runs and reports; there is a leader."""

    def ok() -> bool:
        group = root._replicas.groups[GROUP]
        return group.view().leader is not None and len(group.stats()) == count

    await until(root, ok)


def observed(root: Root, replica: int) -> dict[str, Any]:
    path = root.paths.data_dir / GROUP / str(replica) / "observed.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def peer(root: Root, replica: int) -> Path:
    return root.paths.socket_dir / ".replicas" / GROUP / f"{replica}.sock"


async def note(root: Root, text: str) -> int:
    async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
        reply = await syn.fire(Note(text=text))
    assert isinstance(reply, Noted)
    return reply.index


# --------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_replicas_root_one_process_per_replica_with_the_contract(
    sandbox: str, bwrap_usable: str | None
) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    async with running(group_toml(), sandbox=sandbox) as root:
        assert sorted(root.slots) == ["grp/0", "grp/1", "grp/2"]
        await healthy(root)
        seen = [observed(root, i) for i in range(3)]
        assert len({o["pid"] for o in seen} | {r.pid for r in rows(root).values()}) >= 3
        inside = "/run/cell/peers" if sandbox == "bwrap" else str(peer(root, 0).parent)
        peers = ",".join(f"{i}={inside}/{i}.sock" for i in range(3))
        for i, o in enumerate(seen):
            env = o["env"]
            assert o["name"] == GROUP and env["CELL_NAME"] == GROUP
            assert env["CELL_REPLICA_ID"] == str(i)
            assert env["CELL_REPLICA_PEERS"] == peers
            assert env["CELL_REPLICA_BOOTSTRAP"] == "0,1,2"
            assert "CELL_REPLICA_JOIN" not in env
            assert env["CELL_GO_FD"] == "5"
            assert int(env["CELL_LISTEN_FDS"]) >= 2
            assert env["CELL_DATA_DIR"] == ("/cell/data" if sandbox == "bwrap" else
                                            str(root.paths.data_dir / GROUP / str(i)))
            # fd 3: the group's client listener, the same for all; fd 4: its own peer socket
            assert o["fd3"] == f"unix:{root.paths.socket_path(GROUP)}"
            assert o["fd4"] == f"unix:{peer(root, i)}"
            # every replica reaches every peer socket by the path it was given
            assert o["probes"] == {"0": "", "1": "", "2": ""}
        # clients reach the group at its one socket; what one writes all apply
        assert await note(root, "hello") > 0
        async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
            assert (await syn.fire(Describe())).name == GROUP
        record = json.loads((root.paths.data_dir / GROUP / "group.json").read_text())
        assert (record["members"], record["next_id"]) == ([0, 1, 2], 3)
        assert record["initial"] == [0, 1, 2] and record["bootstrapped"] is True
        (group,) = root.status().groups
        assert (group.name, group.members, group.target, group.supervisor) == (
            GROUP, [0, 1, 2], 3, "root"
        )
        assert rows(root)["grp/1"].supervisor == GROUP


async def test_replicas_root_peer_sockets_are_out_of_reach_of_other_cells(
    bwrap_usable: str | None,
) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    async with running(group_toml() + OUTSIDER, sandbox="bwrap") as root:
        await healthy(root)
        async with Synapse.grow("out", socket_dir=root.paths.socket_dir) as syn:
            for path in ("/run/cell/peers/0.sock", str(peer(root, 0))):
                reply = await syn.fire(Probe(path=path))
                assert not reply.ok and "FileNotFoundError" in reply.error, reply
            # ... while the group itself, which it may call, answers
            assert (await syn.fire(Describe())).name == GROUP
        # the replicas themselves reached each other's (the contract test checks all)
        assert observed(root, 2)["probes"] == {"0": "", "1": "", "2": ""}


async def test_replicas_root_status_shows_role_term_indexes_and_lag() -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        index = 0
        for n in range(5):
            index = await note(root, f"n{n}")

        def caught_up() -> bool:
            infos = [rows(root)[f"grp/{i}"].replica for i in range(3)]
            return all(i.applied_index is not None and i.applied_index >= index for i in infos)

        await until(root, caught_up)
        infos = [rows(root)[f"grp/{i}"].replica for i in range(3)]
        lead = leader(root)
        assert sorted(i.role for i in infos) == ["follower", "follower", "leader"]
        assert infos[lead].role == "leader" and len({i.term for i in infos}) == 1
        for info in infos:
            assert info.leader == lead and info.voters == [0, 1, 2] and info.learners == []
            assert info.commit_index >= index and info.lag is not None and info.lag >= 0
            assert info.error == "" and not info.given_up
        (group,) = root.status().groups
        assert (group.leader, group.term) == (lead, infos[0].term)


async def test_replicas_root_attack_lies_are_dropped() -> None:
    """A replica cannot speak for another, invent roles, or grow the root's memory;
    a plain cell can neither pose as a replica nor change a group over its umbilical."""
    async with running(group_toml() + OUTSIDER) as root:
        await healthy(root)
        slot = root.slots["grp/1"]
        assert slot.replica is not None
        before = slot.replica.stats

        def lie(**kw: object) -> ReplicaStats:
            fields: dict[str, object] = {
                "replica": 1, "role": "leader", "term": 99, "leader": 1, "commit_index": 1,
                "applied_index": 1, "last_index": 10**9, "voters": [0, 1, 2], "learners": [],
            }
            fields.update(kw)
            return ReplicaStats(**fields)  # type: ignore[arg-type]

        for bad in (lie(replica=0), lie(role="emperor"), lie(voters=list(range(65))),
                    lie(term=-1), lie(learners=[-1])):
            root._replicas.on_stats(slot, bad)
            assert slot.replica.stats is before
        async with Synapse.grow("out", socket_dir=root.paths.socket_dir) as out:
            await out.fire(Lie(stats=lie()))
            answer = await out.fire(AskRoot(count=5))
        assert answer.text.startswith("refused: ") and "is not a cell request" in answer.text
        assert rows(root)["out"].replica is None
        assert all(r.replica.term != 99 for n, r in rows(root).items() if n != "out")
        (group,) = root.status().groups
        assert group.members == [0, 1, 2] and group.term != 99


async def test_replicas_root_kill_restarts_that_replica_alone() -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        before = {i: rows(root)[f"grp/{i}"].pid for i in range(3)}
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            ack = await ctl.fire(KillCell(name="grp/1"))
            assert "killed grp/1" in ack.text
            with pytest.raises(RootRefused, match="is a replicated cell: name one replica "
                               r"\(grp/0, grp/1, grp/2\)"):
                await ask_root(ctl, KillCell(name=GROUP))
        await until(root, lambda: rows(root)["grp/1"].restarts == 1
                    and state(root, "grp/1") == "running")
        await healthy(root)
        after = {i: rows(root)[f"grp/{i}"].pid for i in range(3)}
        assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
        assert [rows(root)[f"grp/{i}"].restarts for i in range(3)] == [0, 1, 0]
        assert observed(root, 1)["starts"] == 2 and observed(root, 0)["starts"] == 1
        assert any(rec.cell == "grp/1" and "SIGKILL" in rec.reason
                   for rec in root.status().restart_log)
        assert await note(root, "after") > 0


async def test_replicas_root_logs_are_filed_per_replica() -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        log_dir = root.paths.log_dir
        events = read_events(log_dir / "grp..1.events.jsonl")
        assert events[0]["event"] == "started" and events[0]["cell_id"] == "grp..1"
        assert not (log_dir / "grp.events.jsonl").exists()


async def test_replicas_root_a_replica_that_cannot_start_is_given_up_and_the_group_serves(
) -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        poison = root.paths.data_dir / GROUP / "2" / "poison"
        poison.write_text("wal-0001.log: corrupt at byte 4242: checksum mismatch")
        slot = root.slots["grp/2"]
        assert slot.instance is not None
        root.backend.kill(slot.instance.cell_id, as_crash=True)

        def given_up() -> bool:
            info = rows(root)["grp/2"].replica
            return bool(info.given_up and "corrupt at byte 4242" in info.error)

        await until(root, given_up)
        info = rows(root)["grp/2"].replica
        assert info.error == ("exit code 1: RuntimeError in on_start: wal-0001.log: corrupt at "
                              "byte 4242: checksum mismatch")
        assert info.role == "unknown" and state(root, "grp/2") == "stopped"
        assert state(root, "grp/0") == "running" and state(root, "grp/1") == "running"
        assert await note(root, "still serving") > 0
        assert any(r.cell == "grp/2" and "given up" in r.reason
                   for r in root.status().restart_log)


async def test_replicas_root_up_with_a_broken_replica_starts_on_the_majority() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home) as root:
            await healthy(root)
            await note(root, "before")
            data = root.paths.data_dir / GROUP
        (data / "1" / "poison").write_text("corrupt at byte 7")
        async with running(group_toml(), home=home) as root:
            # the group is up once a majority is; the broken one is given up meanwhile
            await until(root, lambda: rows(root)["grp/1"].replica.given_up)
            info = rows(root)["grp/1"].replica
            assert "corrupt at byte 7" in info.error
            assert state(root, "grp/0") == "running"
            assert await note(root, "after") > 0
        (data / "2" / "poison").write_text("corrupt at byte 9")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(group_toml(), home=home):
                pass
        texts = " ".join(str(e) for e in leaves(caught.value, BaseException))
        assert "2 of 3 replicas could not start (a majority is 2)" in texts
        assert "grp/1: exit code 1: RuntimeError in on_start: corrupt at byte 7" in texts
        assert "grp/2: exit code 1: RuntimeError in on_start: corrupt at byte 9" in texts
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replicas_root_keeps_a_standby_per_replica() -> None:
    async with running(group_toml(standby=True)) as root:
        await healthy(root)
        await until(root, lambda: all(
            root.slots[f"grp/{i}"].standby is not None for i in range(3)))
        standby = root.slots["grp/1"].standby
        assert standby is not None and standby.cell_id in ("grp..1", "grp..1..b")
        root.backend.kill(root.slots["grp/1"].instance.cell_id, as_crash=True)
        await until(root, lambda: observed(root, 1)["starts"] == 2)
        assert observed(root, 1)["pid"] == standby.pid  # the standby took over
        assert observed(root, 1)["env"]["CELL_REPLICA_ID"] == "1"
        await healthy(root)


async def test_replicas_root_refuses_a_data_dir_of_a_plain_cell() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        (home / "data" / GROUP).mkdir(parents=True)
        (home / "data" / GROUP / "old.db").write_text("x")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(group_toml(), home=home):
                pass
        (err,) = [e for e in leaves(caught.value, BaseException) if isinstance(e, RootRequestError)]
        assert "holds data but no group.json" in str(err)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replicas_root_a_group_data_dir_is_not_given_to_a_plain_cell() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home) as root:
            await healthy(root)
        plain = (f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
                 "data = true\nstandby = false\n")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(plain, home=home):
                pass
        texts = " ".join(str(e) for e in leaves(caught.value, BaseException))
        assert "holds a replicated cell's data (group.json)" in texts
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replicas_root_refuses_membership_requests_it_cannot_honour() -> None:
    async with running(group_toml() + OUTSIDER) as root:
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            for msg, text in (
                (ChangeReplicas(name="out", count=3), "out: is not a replicated cell"),
                (ChangeReplicas(name="nope", count=3), "nope: is not a replicated cell"),
                (ChangeReplicas(name=GROUP, count=4), "expected an odd number from 1 to 7"),
                (WipeReplica(name=GROUP), "expected a replica name like ledger/1"),
                (WipeReplica(name="grp/7"), "grp/7: no such replica (members: grp/0, grp/1"),
                (WipeReplica(name="out/0"), "out: is not a replicated cell"),
            ):
                with pytest.raises(RootRefused, match=re.escape(text)):
                    await ask_root(ctl, msg)
            # one change at a time: while one holds the group, others are refused
            group = root._replicas.groups[GROUP]
            async with group.lock:
                group.change = "3 -> 5: adding grp/3"
                for msg in (ChangeReplicas(name=GROUP, count=5), WipeReplica(name="grp/1")):
                    with pytest.raises(RootRefused, match=re.escape(
                            "a membership change is in progress (3 -> 5: adding grp/3)")):
                        await ask_root(ctl, msg)


async def test_replicas_root_refuses_a_plain_entry_for_a_replicated_cell() -> None:
    """The runtime refuses a replica whose entry is not a ReplicatedCell; the root says why."""
    toml = (f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
            "replicas = 1\nstandby = false\n")
    with pytest.raises(BaseExceptionGroup) as caught:
        async with running(toml):
            pass
    texts = " ".join(str(e) for e in leaves(caught.value, BaseException))
    assert "grp/0: exit code 2" in texts and "not a cellmesh.ReplicatedCell subclass" in texts


async def test_replicas_root_a_group_that_loses_its_quorum_fails_to_its_supervisor() -> None:
    """Two of three replicas given up: the group exits abnormally; its supervisor restarts
    it, the restart cannot reach a majority either, and the supervisor gives up in turn."""
    lines: list[str] = []
    with pytest.raises(BaseExceptionGroup) as caught:
        async with running(group_toml(), log=lines.append) as root:
            await healthy(root)
            for i in (1, 2):
                (root.paths.data_dir / GROUP / str(i) / "poison").write_text(f"broken {i}")
            for i in (1, 2):
                slot = root.slots[f"grp/{i}"]
                assert slot.instance is not None
                root.backend.kill(slot.instance.cell_id, as_crash=True)
            await trio.sleep_forever()  # the root ends on its own: the block is cancelled
    (escalation,) = [e for e in leaves(caught.value, BaseException)
                     if type(e).__name__ == "SupervisorEscalation"]
    assert "reached_max_restart_intensity (child 'grp')" in str(escalation)
    log = [f"{r.cell}: {r.reason}" for r in root.restart_log]
    assert "grp: lost its quorum: grp/1, grp/2 given up" in log, log
    assert any("replicated cell grp lost its quorum (grp/1, grp/2 given up)" in line
               for line in lines), lines  # in root.log too
    assert any(r.startswith("grp: failed to start") and "2 of 3 replicas could not start" in r
               for r in log), log


async def test_replicas_root_wipe_rebuilds_the_leader_from_its_peers() -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        for n in range(5):
            await note(root, f"n{n}")
        old = leader(root)
        assert old is not None
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            ack = await ctl.fire(WipeReplica(name=f"grp/{old}"))
        assert ack.text == f"wiped grp/{old}: it rejoined empty and caught up from its peers"
        assert leader(root) != old  # it handed its leadership over first
        info = rows(root)[f"grp/{old}"].replica
        assert info.role == "follower" and old in info.voters and info.error == ""
        # it started empty, as a joiner, and holds the whole log again
        seen = observed(root, old)
        assert seen["starts"] == 1 and seen["env"]["CELL_REPLICA_JOIN"] == "1"
        record = json.loads((root.paths.data_dir / GROUP / "group.json").read_text())
        assert record["members"] == [0, 1, 2] and record["joining"] == []
        assert await note(root, "after") > 0


async def test_replicas_root_wipe_is_refused_without_a_quorum_of_the_others() -> None:
    async with running(group_toml()) as root:
        await healthy(root)
        (root.paths.data_dir / GROUP / "2" / "poison").write_text("broken")
        slot = root.slots["grp/2"]
        assert slot.instance is not None
        root.backend.kill(slot.instance.cell_id, as_crash=True)
        await until(root, lambda: rows(root)["grp/2"].replica.given_up)
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            with pytest.raises(RootRefused, match=re.escape(
                    "grp/1: grp/2 not running or not answering: without grp/1 the group "
                    "would have no quorum to rebuild it; start them first")):
                await ask_root(ctl, WipeReplica(name="grp/1"))
        assert state(root, "grp/1") == "running"  # untouched
        (group,) = root.status().groups
        assert group.change == "" and "no quorum" in group.error


async def test_replicas_root_wipe_counts_voters_not_running_members() -> None:
    """A member that runs and answers but does not vote (removed from the leader's
    configuration behind the root's back, or a learner a failed join left) cannot
    stand in for a voter: wiping one of the two voters left would stop it before
    its removal commits, and the group would have no leader."""
    async with running(group_toml()) as root:
        await healthy(root)
        group = root._replicas.groups[GROUP]
        old = leader(root)
        assert old is not None
        other = next(i for i in range(3) if i != old)
        await root._replicas.changes.admin.remove(GROUP, group.peer_path(old), other)
        await until(root, lambda: other not in group.view().config(group.stats())[0])
        assert rows(root)[f"grp/{other}"].state == "running"  # it runs and answers
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            with pytest.raises(RootRefused) as refused:
                await ask_root(ctl, WipeReplica(name=f"grp/{old}"))
        voters = sorted(i for i in range(3) if i != other)
        assert (f"grp/{old}: the group has 2 voters (grp/{voters[0]}, grp/{voters[1]}): "
                f"without grp/{old} the others are fewer than the 2 votes a change needs "
                f"to rebuild it; grp/{other} does not vote: `cellmesh wipe grp/{other}` has it "
                "rejoin as a voter") in str(refused.value)
        assert state(root, f"grp/{old}") == "running" and leader(root) == old  # untouched
        # the hint works: the member that does not vote rejoins as a voter
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            ack = await ask_root(ctl, WipeReplica(name=f"grp/{other}"))
        assert "it rejoined empty and caught up" in ack.text
        assert group.view().config(group.stats())[0] == (0, 1, 2)
        assert await note(root, "after") > 0


async def test_replicas_root_a_paused_replica_does_not_count_towards_a_changes_quorum() -> None:
    """A stopped (SIGSTOP) process still runs to its supervisor, but it cannot vote:
    a wipe, or a shrink, that needs it is refused before anything is done."""
    async with running(group_toml()) as root:
        await healthy(root)
        group = root._replicas.groups[GROUP]
        pid = next(c.pid for c in root.status().cells if c.name == "grp/2")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await until(root, lambda: not group.members[2].answering(trio.current_time()),
                        timeout=30)
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                with pytest.raises(RootRefused, match=re.escape(
                        "grp/1: grp/2 not running or not answering: without grp/1")):
                    await ask_root(ctl, WipeReplica(name="grp/1"))
            assert state(root, "grp/1") == "running" and 1 in group.record.members
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await note(root, "after") > 0  # the group serves on, whole


async def test_replicas_root_a_group_is_up_once_a_majority_is_ready() -> None:
    """A replica that takes forever to start does not hold the group (nor the mesh) back."""
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home) as root:
            await healthy(root)
        (home / "data" / GROUP / "2" / "hang").write_text("")
        with trio.fail_after(30):  # far less than its start_timeout (60 s)
            async with running(group_toml(), home=home) as root:
                assert state(root, "grp/2") == "starting"
                assert state(root, "grp/0") == "running" and state(root, "grp/1") == "running"
                assert await note(root, "served by two") > 0
                slot = root.slots["grp/2"]
                assert slot.instance is not None
                root.backend.kill(slot.instance.cell_id)  # do not wait for its shutdown
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replicas_root_refuses_a_peer_socket_path_too_long_for_unix() -> None:
    name = "g" * 47  # the longest name a replicated cell may have
    toml = (f'[cells.{name}]\ndna = "replicacells.py"\nentry = "replicacells:Observer"\n'
            "replicas = 1\nstandby = false\n")
    # a home whose socket dir fits the group's own socket, not its peers' (.replicas/<name>/)
    base = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    home = base / ("h" * (107 - len(str(base)) - len("/run/") - len(name) - len(".sock") - 2))
    home.mkdir()
    try:
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(toml, home=home):
                pass
        texts = " ".join(str(e) for e in leaves(caught.value, BaseException))
        assert f"cells.{name}: socket path" in texts and "107-byte limit" in texts
        assert "/.umbilical/" in texts or "/.replicas/" in texts
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_replicas_root_a_replica_can_be_monitored_by_its_name() -> None:
    async with running(group_toml() + OUTSIDER) as root:
        await healthy(root)
        async with Synapse.grow("out", socket_dir=root.paths.socket_dir) as out:
            assert await out.fire(Watch(target="grp/1")) == Downs(downs=[])
            slot = root.slots["grp/1"]
            assert slot.instance is not None
            root.backend.kill(slot.instance.cell_id, as_crash=True)

            await until(root, lambda: rows(root)["grp/1"].restarts >= 1)
            with trio.fail_after(30):
                await root.wait_celldowns_settled()
            reply = await out.fire(Watch(target=""))
            assert isinstance(reply, Downs)
            (down,) = reply.downs
            assert down.startswith("grp/1:") and "SIGKILL" in down


class _Unanswered:
    """A :class:`~cellmesh.actors._replicas_changes.ReplicaAdmin` whose additions and
    removals the leader never answers: a membership request in flight when the root
    stops (transfers go through)."""

    def __init__(self) -> None:
        self.asked = trio.Event()
        self.real = PeerAdmin()

    async def add(self, group: str, peer: Path, replica: int, path: str) -> None:
        self.asked.set()
        await trio.sleep_forever()

    async def remove(self, group: str, peer: Path, replica: int) -> None:
        self.asked.set()
        await trio.sleep_forever()

    async def transfer(self, group: str, peer: Path, to: int | None) -> None:
        await self.real.transfer(group, peer, to)


def _record(home: Path) -> tuple[object, ...]:
    rec = json.loads((home / "data" / GROUP / "group.json").read_text())
    return rec["members"], rec["joining"], rec["next_id"]


async def _stopped_during(
    home: Path, request_of: Callable[[Root], Any], *, asked: Callable[[Root], bool]
) -> tuple[float, str]:
    """Serve the group on ``home``; once it is healthy send ``request_of(root)`` as the CLI
    does, with the leader not answering membership requests (:class:`_Unanswered`); once
    it was asked and ``asked(root)`` holds, stop the root with a StopMesh of timeout 4 (as
    ``cellmesh down --timeout 4``). How long the root took to stop, and what the CLI's
    client said of the request."""
    said: list[str] = []

    async def request(paths: Any, msg: Any) -> None:
        with pytest.raises(RootStopped) as info:
            await control_call(paths, msg)
        said.append(str(info.value))

    async with trio.open_nursery() as client:  # (it outlives the root: it sees it end)
        with pytest.raises(MeshStopped):
            async with running(group_toml(), home=home) as root:
                await healthy(root)
                admin = _Unanswered()
                root._replicas.changes.admin = admin
                client.start_soon(request, root.paths, request_of(root))
                await admin.asked.wait()
                await until(root, lambda: asked(root))
                async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                    began = trio.current_time()
                    await ctl.fire(StopMesh(timeout=4))
                await trio.sleep_forever()  # the root ends: the block is cancelled
        took = trio.current_time() - began
    return took, said[0]


async def _consistent(home: Path) -> None:
    """A root on ``home`` brings the group to the manifest's 3 members, joins complete, and
    every replica's configuration has exactly those voters."""

    def settled(root: Root) -> bool:
        group = root._replicas.groups[GROUP]
        stats = group.stats()
        return (group.record.members == (0, 1, 2) and not group.record.joining
                and group.change == "" and group.view().leader is not None
                and sorted(stats) == [0, 1, 2]
                and all(sorted(s.voters) == [0, 1, 2] and not s.learners
                        for s in stats.values()))

    async with running(group_toml(), home=home) as root:
        await until(root, lambda: settled(root), timeout=90)
        assert await note(root, "after") > 0
    assert _record(home) == ([0, 1, 2], [], _record(home)[2])


async def test_replicas_root_a_stop_during_a_grow_keeps_its_timeout_and_the_add_joining() -> None:
    """`cellmesh down --timeout 4` while `cellmesh replicas grp 5` waits for the leader to
    add grp/3: the root stops promptly (its shielded undo used to wait 10 s for a leader
    of the group the stop had just ended); the client says the root stopped on request
    and what became of the change (it said the root "is running but did not serve this
    request"); the record keeps grp/3 joining, and the next start completes its join and
    brings the group back to the manifest's 3 members, consistently."""
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        took, said = await _stopped_during(
            home, lambda root: ChangeReplicas(name=GROUP, count=5),
            asked=lambda root: state(root, "grp/3") == "running",
        )
        assert took < 8, f"the stop took {took:.1f} s"
        assert said == (
            f"the root (pid {os.getpid()}) stopped on request (`cellmesh down`, or a signal) "
            "while it served this request: the change stopped part-way: the next `up` "
            "completes the join of a replica it was adding, then applies the manifest's "
            "`replicas` (the root's log says how far it got)"
        )
        assert _record(home) == ([0, 1, 2, 3], [3], 4)
        assert (home / "data" / GROUP / "3").is_dir()  # kept, for its join
        await _consistent(home)
        assert not (home / "data" / GROUP / "3").exists()  # joined, then removed again
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replicas_root_a_stop_during_a_wipe_leaves_the_replica_to_be_added_back() -> None:
    """A wipe cut short by the root's stop once the replica is stopped (the leader was
    asked to remove it) leaves it recorded joining -- it stayed a plain member, which the
    leader may have removed: a member the group had forgotten -- and the client says what
    became of it; the next start has the leader take it back."""
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        wiped: list[int] = []

        def wipe_a_follower(root: Root) -> WipeReplica:
            wiped.append(next(i for i in (0, 1, 2) if i != leader(root)))
            return WipeReplica(name=f"{GROUP}/{wiped[0]}")

        _, said = await _stopped_during(
            home, wipe_a_follower, asked=lambda root: state(root, f"grp/{wiped[0]}") != "running",
        )
        assert said == (
            f"the root (pid {os.getpid()}) stopped on request (`cellmesh down`, or a signal) "
            "while it served this request: the wipe stopped part-way: the next `up` has the "
            "leader add the replica back; wipe it again then if its data was not wiped yet "
            "(the root's log says whether it was)"
        )
        assert _record(home) == ([0, 1, 2], wiped, 3)
        await _consistent(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
