"""The root's side of replicated cells, with stand-in replicas (``replicacells.FakeReplica``).

What the root promises a replica and the operator, independent of Raft:
one sandboxed process per replica with its own data dir, the group's client
listener as fd 3 for all of them, each one's own peer listener as fd 4, the
peer directory reachable from the group's sandboxes and from nobody else's,
per-replica supervision (a crash restarts that replica alone; one that
cannot start is given up while the group serves on), status rows, kill and
logs by ``X/i``, and the group record. Raft itself runs in
``test_replicas_root_bank.py`` with the real ``ReplicatedCell``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import replicacells
import trio
from replicacells import AskRoot, Describe, Description, Lie, Probe, Probed, Role

from cellmesh import RemoteCellError, Synapse
from cellmesh.actors.control import ChangeReplicas, KillCell, ReplicaStats, WipeReplica
from cellmesh.actors.errors import RootRequestError
from cellmesh.actors.root import Root
from cellmesh.sandbox import read_events
from cellmesh.testing.mesh import open_root

GROUP = "grp"


def group_toml(replicas: int = 3, extra: str = "", *, standby: bool = False) -> str:
    return (
        f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:FakeReplica"\n'
        f"replicas = {replicas}\nstandby = {'true' if standby else 'false'}\n{extra}\n"
    )


OUTSIDER = (
    '[cells.out]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
    f'calls = ["{GROUP}"]\nstandby = false\n'
)


@asynccontextmanager
async def running(
    toml: str, *, sandbox: str = "host", home: Path | None = None
) -> AsyncIterator[Root]:
    """A root serving ``toml`` on ``home`` (a new one under /tmp unless given)."""
    own = home is None
    where = home if home is not None else Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(replicacells.__file__), where / "replicacells.py")
        async with open_root(where, toml, sandbox=sandbox) as root:
            yield root
    finally:
        if own:
            shutil.rmtree(where, ignore_errors=True)


def peer(root: Root, replica: int) -> Path:
    return root.paths.socket_dir / ".replicas" / GROUP / f"{replica}.sock"


async def ask(root: Root, replica: int, msg: object) -> object:
    """Call replica ``replica`` itself, through its peer socket."""
    async with Synapse.grow(GROUP, socket_path=peer(root, replica)) as syn:
        return await syn.fire(msg)


async def describe(root: Root, replica: int) -> Description:
    reply = await ask(root, replica, Describe())
    assert isinstance(reply, Description)
    return reply


def rows(root: Root) -> dict[str, object]:
    return {c.name: c for c in root.status().cells}


async def until(root: Root, predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Wait on the slots' change events until ``predicate()`` holds (or fail after timeout)."""
    with trio.fail_after(timeout):
        while not predicate():
            async with trio.open_nursery() as nursery:
                for slot in list(root.slots.values()):
                    nursery.start_soon(_wake, slot.changed, nursery.cancel_scope)
                nursery.start_soon(_tick, nursery.cancel_scope)


async def _wake(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _tick(scope: trio.CancelScope) -> None:
    # stats arrive as signals (no slot change): look again at least every 200 ms
    await trio.sleep(0.2)
    scope.cancel()


def state(root: Root, name: str) -> str:
    return next(c.state for c in root.status().cells if c.name == name)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", ["host", "bwrap"])
async def test_replicas_root_one_process_per_replica_with_the_contract(
    sandbox: str, bwrap_usable: str | None
) -> None:
    if sandbox == "bwrap" and bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    async with running(group_toml(), sandbox=sandbox) as root:
        assert sorted(n for n in root.slots) == ["grp/0", "grp/1", "grp/2"]
        found = [await describe(root, i) for i in range(3)]
        assert [d.replica for d in found] == [0, 1, 2]
        assert len({d.token for d in found}) == 3  # three processes
        inside = "/run/cell/peers" if sandbox == "bwrap" else str(peer(root, 0).parent)
        peers = ",".join(f"{i}={inside}/{i}.sock" for i in range(3))
        for d in found:
            env = d.env
            assert d.name == GROUP and env["CELL_NAME"] == GROUP
            assert env["CELL_REPLICA_ID"] == str(d.replica)
            assert env["CELL_REPLICA_PEERS"] == peers
            assert env["CELL_REPLICA_BOOTSTRAP"] == "0,1,2"
            assert "CELL_REPLICA_JOIN" not in env
            assert env["CELL_GO_FD"] == "5"
            assert int(env["CELL_LISTEN_FDS"]) >= 2
            # fd 3: the group's client listener, the same for all; fd 4: its own peer socket
            assert d.fd3 == f"unix:{root.paths.socket_path(GROUP)}"
            assert d.fd4 == f"unix:{peer(root, d.replica)}"
            assert d.data_files == ["starts"]
            host_data = root.paths.data_dir / GROUP / str(d.replica)
            assert (host_data / "starts").read_text() == "1"
        # every replica reaches every other one's peer socket by its inside path
        for j in range(3):
            for i in range(3):
                reply = await ask(root, j, Probe(path=f"{inside}/{i}.sock"))
                assert reply == Probed(ok=True, error="", peer=i)
        # clients reach the group at its one socket
        async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
            got = {(await syn.fire(Describe())).replica for _ in range(4)}
        assert got <= {0, 1, 2}
        record = json.loads((root.paths.data_dir / GROUP / "group.json").read_text())
        assert (record["members"], record["next_id"]) == ([0, 1, 2], 3)
        assert record["initial"] == [0, 1, 2]
        status = root.status()
        (group,) = status.groups
        assert (group.name, group.members, group.target, group.supervisor) == (
            GROUP, [0, 1, 2], 3, "root"
        )
        by_name = {c.name: c for c in status.cells}
        assert by_name["grp/1"].supervisor == GROUP and by_name["grp/1"].replica is not None


async def test_replicas_root_peer_sockets_are_out_of_reach_of_other_cells(
    bwrap_usable: str | None,
) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)
    async with running(group_toml() + OUTSIDER, sandbox="bwrap") as root:
        async with Synapse.grow("out", socket_dir=root.paths.socket_dir) as syn:
            for path in ("/run/cell/peers/0.sock", str(peer(root, 0))):
                reply = await syn.fire(Probe(path=path))
                assert not reply.ok and "FileNotFoundError" in reply.error, reply
            # ... while the group itself, which it may call, answers
            assert (await syn.fire(Describe())).name == GROUP
        # the root (and this test, as the root's uid) may reach any peer socket
        assert (await describe(root, 2)).replica == 2


async def test_replicas_root_status_shows_role_term_indexes_and_lag() -> None:
    async with running(group_toml()) as root:
        await ask(root, 0, Role(role="leader", term=4, leader=0, commit_index=90,
                                applied_index=88, last_index=100))
        await ask(root, 1, Role(role="follower", term=4, leader=0, commit_index=90,
                                applied_index=70, last_index=95))

        def shown() -> bool:
            r = rows(root)
            return r["grp/1"].replica.role == "follower" and r["grp/0"].replica.role == "leader"

        await until(root, shown)
        r = rows(root)
        lead, follow, idle = (r[f"grp/{i}"].replica for i in range(3))
        assert (lead.role, lead.term, lead.commit_index, lead.applied_index, lead.lag) == (
            "leader", 4, 90, 88, 12
        )
        assert (follow.term, follow.leader, follow.applied_index, follow.lag) == (4, 0, 70, 30)
        assert follow.voters == [0, 1, 2] and follow.error == "" and not follow.given_up
        assert (idle.role, idle.lag) == ("follower", 100)  # applied 0 of the leader's 100
        (group,) = root.status().groups
        assert (group.leader, group.term) == (0, 4)
        # the group has had a leader: the record says so (no bootstrap from now on)
        record = json.loads((root.paths.data_dir / GROUP / "group.json").read_text())
        assert record["bootstrapped"] is True


def lying(replica: int, **kw: object) -> ReplicaStats:
    fields: dict[str, object] = {
        "replica": replica, "role": "leader", "term": 99, "leader": replica,
        "commit_index": 1, "applied_index": 1, "last_index": 10**9, "voters": [0, 1, 2],
        "learners": [],
    }
    fields.update(kw)
    return ReplicaStats(**fields)  # type: ignore[arg-type]


async def test_replicas_root_attack_stats_that_lie_are_dropped() -> None:
    """A replica cannot speak for another, invent roles, or grow the root's memory;
    a plain cell cannot pose as a replica nor change a group over its umbilical."""
    async with running(group_toml() + OUTSIDER) as root:
        await ask(root, 0, Role(role="leader", term=2, leader=0, commit_index=5,
                                applied_index=5, last_index=5))
        await until(root, lambda: rows(root)["grp/0"].replica.role == "leader")
        for lie in (lying(0), lying(1, role="emperor"), lying(1, voters=list(range(65))),
                    lying(1, term=-1)):
            await ask(root, 1, Lie(stats=lie))
        async with Synapse.grow("out", socket_dir=root.paths.socket_dir) as out:
            await out.fire(Lie(stats=lying(1)))
            answer = await out.fire(AskRoot(count=5))
        assert answer.text.startswith("refused: ") and "is not a cell request" in answer.text
        # a well-formed report from replica 1 itself is taken: the lies before it were not
        await ask(root, 1, Role(role="follower", term=2, leader=0, commit_index=5,
                                applied_index=4, last_index=5))
        await until(root, lambda: rows(root)["grp/1"].replica.role == "follower")
        r = rows(root)
        assert (r["grp/0"].replica.role, r["grp/0"].replica.term) == ("leader", 2)
        assert r["grp/1"].replica.lag == 1 and r["out"].replica is None
        (group,) = root.status().groups
        assert (group.leader, group.term, group.members) == (0, 2, [0, 1, 2])


async def test_replicas_root_kill_restarts_that_replica_alone() -> None:
    async with running(group_toml()) as root:
        before = {i: (await describe(root, i)).token for i in range(3)}
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            ack = await ctl.fire(KillCell(name="grp/1"))
            assert "killed grp/1" in ack.text
            with pytest.raises(RemoteCellError, match="is a replicated cell: name one replica "
                               r"\(grp/0, grp/1, grp/2\)"):
                await ctl.fire(KillCell(name=GROUP))
        after = {i: (await describe(root, i)).token for i in range(3)}
        assert after[0] == before[0] and after[2] == before[2]
        assert after[1] != before[1]
        r = rows(root)
        assert [r[f"grp/{i}"].restarts for i in range(3)] == [0, 1, 0]
        assert "killed by SIGKILL" in r["grp/1"].replica.error or r["grp/1"].replica.error == ""
        assert (root.paths.data_dir / GROUP / "1" / "starts").read_text() == "2"  # same data
        assert any(rec.cell == "grp/1" for rec in root.status().restart_log)


async def test_replicas_root_logs_are_filed_per_replica() -> None:
    async with running(group_toml()) as root:
        log_dir = root.paths.log_dir
        await until(root, (log_dir / "grp..1.events.jsonl").exists)
        events = read_events(log_dir / "grp..1.events.jsonl")
        assert events[0]["event"] == "started" and events[0]["cell_id"] == "grp..1"
        assert not (log_dir / "grp.events.jsonl").exists()


async def test_replicas_root_a_replica_that_cannot_start_is_given_up_and_the_group_serves(
) -> None:
    async with running(group_toml()) as root:
        poison = root.paths.data_dir / GROUP / "2" / "poison"
        poison.write_text("wal-0001.log: corrupt at byte 4242: checksum mismatch")
        root.backend.kill(root.slots["grp/2"].instance.cell_id, as_crash=True)

        def given_up() -> bool:
            info = rows(root)["grp/2"].replica
            return info.given_up and "corrupt at byte 4242" in info.error

        await until(root, given_up)
        info = rows(root)["grp/2"].replica
        assert info.error.startswith("exit code 1")
        assert state(root, "grp/2") == "stopped"
        assert state(root, "grp/0") == "running" and state(root, "grp/1") == "running"
        async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
            assert {(await syn.fire(Describe())).replica for _ in range(6)} <= {0, 1}
        assert any(r.cell == "grp/2" and "given up" in r.reason
                   for r in root.status().restart_log)


async def test_replicas_root_up_with_a_broken_replica_starts_on_the_majority() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home) as root:
            data = root.paths.data_dir / GROUP
        (data / "1" / "poison").write_text("corrupt at byte 7")
        async with running(group_toml(), home=home) as root:
            info = rows(root)["grp/1"].replica
            assert info.given_up and "corrupt at byte 7" in info.error
            assert state(root, "grp/0") == "running"
            (data / "2" / "poison").write_text("corrupt at byte 9")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(group_toml(), home=home):
                pass
        texts = " ".join(str(e) for e in _leaves(caught.value))
        assert "only 1 of 3 replicas started (a majority is 2)" in texts
        assert "grp/1" in texts and "grp/2" in texts
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        exc = todo.pop()
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        else:
            out.append(exc)
            if exc.__cause__ is not None:
                out.append(exc.__cause__)
    return out


async def test_replicas_root_keeps_a_standby_per_replica() -> None:
    async with running(group_toml(standby=True)) as root:
        await until(root, lambda: all(
            root.slots[f"grp/{i}"].standby is not None for i in range(3)))
        before = await describe(root, 1)
        root.backend.kill(root.slots["grp/1"].instance.cell_id, as_crash=True)
        after = await describe(root, 1)  # served by the standby, same env
        assert after.token != before.token
        assert after.env["CELL_REPLICA_ID"] == "1" and after.fd4 == before.fd4


async def test_replicas_root_refuses_a_data_dir_of_a_plain_cell() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        (home / "data" / GROUP).mkdir(parents=True)
        (home / "data" / GROUP / "old.db").write_text("x")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(group_toml(), home=home):
                pass
        (err,) = [e for e in _leaves(caught.value) if isinstance(e, RootRequestError)]
        assert "holds data but no group.json" in str(err)
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
                with pytest.raises(RemoteCellError, match=re.escape(text)):
                    await ctl.fire(msg)
            # one change at a time: while one holds the group, others are refused
            group = root._replicas.groups[GROUP]
            async with group.lock:
                group.change = "3 -> 5: adding grp/3"
                for msg in (ChangeReplicas(name=GROUP, count=5), WipeReplica(name="grp/1")):
                    with pytest.raises(RemoteCellError, match=re.escape(
                            "a membership change is in progress (3 -> 5: adding grp/3)")):
                        await ctl.fire(msg)


async def test_replicas_root_a_group_data_dir_is_not_given_to_a_plain_cell() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home):
            pass
        plain = (f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
                 "data = true\nstandby = false\n")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with running(plain, home=home):
                pass
        texts = " ".join(str(e) for e in _leaves(caught.value))
        assert "holds a replicated cell's data (group.json)" in texts
    finally:
        shutil.rmtree(home, ignore_errors=True)
