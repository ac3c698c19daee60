"""A replica restarts from its own data whatever the group's membership has become.

A group bootstrapped with replicas 0, 1, 2, shrunk to 1 (``replicas grp 1``:
0 is left) and grown back to 3 (0, 3, 4), still hands replica 0 its first
voters in ``CELL_REPLICA_BOOTSTRAP`` (0, 1, 2), while ``CELL_REPLICA_PEERS``
lists today's members. The bootstrap is used only on an empty data dir
(docs/replicated.md, the replica contract): replica 0 restarting from its
log must come back -- after a kill, after a full stop and start of the
mesh, and after ``cellmesh wipe`` (its identity file kept) -- and catch up.
Before, it exited 2 on every restart (``names replica 1, which
CELL_REPLICA_PEERS has no path for``) until it was given up.

Real root, real replica processes (``replicacells.Observer``, host sandbox).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replicas_root import GROUP, group_toml, note, observed, rows, running, until
from test_root import leaves

from cellmesh import Synapse
from cellmesh.actors._replica_runtime import IDENTITY, prepare_data_dir
from cellmesh.actors._replica_spec import ReplicaSpec
from cellmesh.actors.control import Ack, ChangeReplicas, GroupStatus, KillCell, WipeReplica
from cellmesh.actors.root import Root
from cellmesh.errors import ConfigError

#: Replica 0's env after ``replicas 1`` then ``replicas 3``: today's peers, the first voters.
REGROWN = {
    "CELL_REPLICA_ID": "0",
    "CELL_REPLICA_PEERS": "0=/p/0.sock,3=/p/3.sock,4=/p/4.sock",
    "CELL_REPLICA_BOOTSTRAP": "0,1,2",
}


# -------------------------------------------------------------------- the contract


def test_replica_spec_takes_first_voters_that_have_left() -> None:
    spec = ReplicaSpec.from_env(REGROWN, Path("/data"))
    assert spec.bootstrap == (0, 1, 2) and sorted(spec.peers) == [0, 3, 4]


def test_replica_spec_checks_the_first_voters_where_they_are_used(tmp_path: Path) -> None:
    """An empty data dir bootstraps: every first voter needs a peer path (named error)."""
    spec = ReplicaSpec.from_env(REGROWN, tmp_path / "empty")
    with pytest.raises(ConfigError) as info:
        prepare_data_dir(spec)
    assert info.value.source == "CELL_REPLICA_BOOTSTRAP"
    assert "names replica 1, which CELL_REPLICA_PEERS has no path for" in str(info.value)
    assert not (tmp_path / "empty" / IDENTITY).exists()  # nothing written


def test_replica_data_dir_with_an_identity_ignores_the_bootstrap(tmp_path: Path) -> None:
    """A restart: the identity written at the first start wins; the env's bootstrap is unread."""
    first = ReplicaSpec.from_env(
        {**REGROWN, "CELL_REPLICA_PEERS": "0=/p/0.sock,1=/p/1.sock,2=/p/2.sock"}, tmp_path
    )
    assert prepare_data_dir(first) == (0, 1, 2)
    later = ReplicaSpec.from_env(REGROWN, tmp_path)
    assert prepare_data_dir(later) == (0, 1, 2)


env_values = st.text(alphabet=st.sampled_from("0123456789,=/-.a 1"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(peers=env_values, bootstrap=env_values, join=st.sampled_from(["", "0", "1"]))
def test_replica_spec_bootstrap_garbage_raises_only_config_error(
    peers: str, bootstrap: str, join: str
) -> None:
    """Garbage in, only ConfigError out -- from the env and from the first voters alike."""
    env = {"CELL_REPLICA_ID": "0", "CELL_REPLICA_PEERS": f"0=/p/0,{peers}",
           "CELL_REPLICA_BOOTSTRAP": bootstrap, "CELL_REPLICA_JOIN": join}
    try:
        spec = ReplicaSpec.from_env(env, Path("/data"))
        voters = spec.first_voters()
    except ConfigError as exc:
        assert exc.source.startswith("CELL_REPLICA_")
    else:
        assert all(v in spec.peers for v in voters)


# -------------------------------------------------------------------- the root


def group(root: Root) -> GroupStatus:
    (only,) = root.status().groups
    return only


def has_leader(root: Root) -> bool:
    return group(root).leader is not None


async def change(root: Root, count: int) -> str:
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
        ack = await ctl.fire(ChangeReplicas(name=GROUP, count=count))
    assert isinstance(ack, Ack), ack
    return ack.text


async def regrow(root: Root) -> None:
    """3 -> 1 -> 3: members 0, 3, 4; replica 0 keeps its data (and its first voters 0, 1, 2)."""
    assert await change(root, 1) == "grp: 3 -> 1 replica; removed grp/1, grp/2"
    assert await change(root, 3) == "grp: 1 -> 3 replicas; added grp/3, grp/4"
    assert group(root).members == [0, 3, 4]


async def serving(root: Root, replica: int, index: int) -> None:
    """Wait until ``replica`` runs as a voter of 0, 3, 4 having applied ``index``; fail
    at once, with its error, if it is given up instead."""
    name = f"{GROUP}/{replica}"

    def settled() -> bool:
        info = rows(root)[name].replica
        return bool(info.given_up) or (
            info.role in ("leader", "follower") and (info.applied_index or 0) >= index
        )

    await until(root, settled)
    info = rows(root)[name].replica
    assert not info.given_up, f"{name} given up: {info.error}"
    assert info.voters == [0, 3, 4] and info.error == ""


async def all_serving(root: Root, index: int) -> None:
    for replica in (0, 3, 4):
        await serving(root, replica, index)


async def test_replica_regrown_group_restarts_an_original_replica_from_its_data() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        async with running(group_toml(), home=home) as root:
            await until(root, lambda: has_leader(root))
            await note(root, "bootstrapped")
            await regrow(root)
            await all_serving(root, await note(root, "regrown"))
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                assert "killed grp/0" in (await ctl.fire(KillCell(name="grp/0"))).text
            index = await note(root, "while grp/0 restarts")
            await until(root, lambda: rows(root)["grp/0"].restarts >= 1)
            await serving(root, 0, index)
            assert rows(root)["grp/0"].restarts == 1
            seen = observed(root, 0)
            # what made it fail: its first voters are no longer all peers
            assert seen["starts"] == 2
            assert seen["env"]["CELL_REPLICA_BOOTSTRAP"] == "0,1,2"
            assert sorted(map(int, seen["probes"])) == [0, 3, 4]
            last = await note(root, "before the stop")
        # the whole mesh stopped and started again: every replica from its own data
        async with running(group_toml(), home=home) as root:
            await all_serving(root, last)
            await all_serving(root, await note(root, "after the start"))
            assert [rows(root)[f"grp/{i}"].restarts for i in (0, 3, 4)] == [0, 0, 0]
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_replica_regrown_group_wipes_an_original_replica() -> None:
    """``cellmesh wipe grp/0`` keeps its identity (first voters 0, 1, 2): it rejoins all the
    same (as a joiner: this path worked before the fix too; it guards the stale ids)."""
    async with running(group_toml()) as root:
        await until(root, lambda: has_leader(root))
        await regrow(root)
        index = await note(root, "regrown")
        async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
            ack = await ctl.fire(WipeReplica(name="grp/0"))
        assert isinstance(ack, Ack), ack
        assert ack.text == "wiped grp/0: it rejoined empty and caught up from its peers"
        await serving(root, 0, index)
        assert (root.paths.data_dir / GROUP / "0" / IDENTITY).exists()
        await serving(root, 0, await note(root, "after the wipe"))


async def test_replica_group_of_a_plain_cell_says_how_many_could_not_start() -> None:
    """A plain Cell with ``replicas = 3``: no replica starts; the refusal does not claim one did."""
    toml = (f'[cells.{GROUP}]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n'
            "replicas = 3\nstandby = false\n")
    with pytest.raises(BaseExceptionGroup) as caught:
        async with running(toml):
            pass
    text = " ".join(str(e) for e in leaves(caught.value, BaseException))
    assert re.search(r"[23] of 3 replicas could not start \(a majority is 2\)", text), text
    assert "could start" not in text
    assert "not a cellmesh.ReplicatedCell subclass" in text


def _spec(data: Path) -> ReplicaSpec:
    return ReplicaSpec.from_env(
        {**REGROWN, "CELL_REPLICA_PEERS": "0=/p/0.sock,1=/p/1.sock,2=/p/2.sock"}, data
    )


@pytest.mark.parametrize("loss", ["raft dir deleted", "raft dir emptied"])
def test_a_replica_whose_raft_dir_was_lost_is_refused_not_started_fresh(
    tmp_path: Path, loss: str
) -> None:
    """Its identity says it ran: starting it as a fresh voter could elect a leader
    without entries it acknowledged (docs/consensus.md, "Fresh node or lost state?")."""
    from cellmesh.consensus.wal import WalStateLost

    assert prepare_data_dir(_spec(tmp_path)) == (0, 1, 2)
    raft = tmp_path / "raft"
    assert (raft / "STATE").exists()  # claimed at the first start
    shutil.rmtree(raft)
    if loss == "raft dir emptied":
        raft.mkdir()
    with pytest.raises(WalStateLost, match="its votes and entries were lost"):
        prepare_data_dir(_spec(tmp_path))


def test_an_interrupted_first_start_is_finished_not_refused(tmp_path: Path) -> None:
    """A crash after the identity was written, before the log was claimed: the next
    start claims it (no false alarm), and from then on a lost log is refused."""
    import cbor2

    (tmp_path / IDENTITY).write_bytes(
        cbor2.dumps({"replica": 0, "bootstrap": [0, 1, 2], "claimed": False})
    )
    assert prepare_data_dir(_spec(tmp_path)) == (0, 1, 2)
    assert cbor2.loads((tmp_path / IDENTITY).read_bytes())["claimed"] is True
    assert (tmp_path / "raft" / "STATE").exists()
