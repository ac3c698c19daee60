"""The pure rules of replicated cells: names, the group record, replica env, plans, the view."""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.actors.control import ReplicaStats
from cellmesh.actors.errors import RootRequestError
from cellmesh.actors.membership import (
    AddMember,
    GroupRecord,
    GroupRecordError,
    GroupView,
    PromotionCheck,
    RemoveMember,
    TransferLeadership,
    is_voter,
    majority,
    next_step,
    parse_replica_name,
    quorum_gap,
    replica_env,
    replica_name,
    replica_stem,
    stats_problem,
)


def stats(replica: int, **kw: object) -> ReplicaStats:
    fields: dict[str, object] = {
        "replica": replica, "role": "follower", "term": 1, "leader": 0, "commit_index": 5,
        "applied_index": 5, "last_index": 5, "voters": [0, 1, 2], "learners": [],
    }
    fields.update(kw)
    return ReplicaStats(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# names


def test_membership_names_round_trip() -> None:
    assert replica_name("ledger", 1) == "ledger/1"
    assert replica_stem("ledger", 12) == "ledger..12"
    assert parse_replica_name("ledger/12") == ("ledger", 12)
    assert parse_replica_name("a.b/0") == ("a.b", 0)


@pytest.mark.parametrize("text", ["ledger", "ledger/", "/1", "ledger/01", "ledger/-1",
                                  "ledger/1/2", "ledger/x", "ledger/1 ", "l/" + "9" * 15])
def test_membership_parse_refuses_what_is_not_a_replica(text: str) -> None:
    assert parse_replica_name(text) is None


def test_membership_majority() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5, 7)] == [1, 2, 2, 3, 3, 4]


# --------------------------------------------------------------------------
# the record


def test_membership_record_allocates_ids_never_reused() -> None:
    record = GroupRecord.create(3)
    assert (record.members, record.next_id, record.initial) == ((0, 1, 2), 3, (0, 1, 2))
    record, new = record.allocate()
    assert (new, record.members, record.joining) == (3, (0, 1, 2, 3), (3,))
    record = record.joined(3).without(1)
    record, again = record.allocate()
    assert again == 4 and record.members == (0, 2, 3, 4)  # 1 is gone for good
    assert record.rejoining(2).joining == (2, 4)


def test_membership_record_json_round_trips() -> None:
    record = GroupRecord(members=(0, 2, 5), next_id=6, initial=(0, 1, 2), bootstrapped=True,
                         joining=(5,))
    assert GroupRecord.from_json(record.to_json(), source="g.json") == record


@pytest.mark.parametrize(("doc", "problem"), [
    ("[", "is not JSON"),
    ("[]", "is not a JSON object"),
    ('{"version": 2}', "has version 2"),
    ('{"version": 1, "next_id": 0}', "next_id 0 is not a positive id"),
    ('{"version": 1, "next_id": 3, "members": [0, 3], "initial": [0]}', "outside 0..2"),
    ('{"version": 1, "next_id": 3, "members": [0, 0], "initial": [0]}', "lists an id twice"),
    ('{"version": 1, "next_id": 3, "members": [], "initial": [0]}', "has no members"),
    ('{"version": 1, "next_id": 3, "members": [0], "initial": [0], "joining": [1],'
     ' "bootstrapped": false}', "are not all members"),
    ('{"version": 1, "next_id": 3, "members": [0], "initial": [0], "bootstrapped": 1}',
     "is not a boolean"),
    ('{"version": 1, "next_id": 3, "members": "0", "initial": [0]}', "not a list"),
    ('{"version": 1, "next_id": 3, "members": [true], "initial": [0]}', "outside"),
])  # fmt: skip
def test_membership_record_refuses_damage_naming_the_file(doc: str, problem: str) -> None:
    with pytest.raises(GroupRecordError) as caught:
        GroupRecord.from_json(doc, source="/d/g.json")
    assert caught.value.subject == "/d/g.json" and problem in caught.value.problem


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(
    st.text(max_size=80),
    st.dictionaries(st.sampled_from(["version", "members", "next_id", "initial", "joining",
                                     "bootstrapped", "x"]),
                    st.one_of(st.integers(-2, 20), st.booleans(), st.none(),
                              st.lists(st.integers(-1, 20), max_size=20)), max_size=7)
    .map(json.dumps),
))
def test_membership_record_fuzz_only_record_errors(doc: str) -> None:
    """Garbage in, a GroupRecord or GroupRecordError out; a record keeps its invariants."""
    try:
        record = GroupRecord.from_json(doc, source="g.json")
    except GroupRecordError:
        return
    assert record.members and set(record.joining) <= set(record.members)
    assert all(0 <= i < record.next_id for i in (*record.members, *record.initial))


# --------------------------------------------------------------------------
# env


PATHS = {i: f"/run/cell/peers/{i}.sock" for i in range(8)}


def test_membership_env_of_a_new_group_bootstraps_the_initial_voters() -> None:
    env = replica_env(1, GroupRecord.create(3), PATHS, data_empty=True)
    assert env == {
        "CELL_REPLICA_ID": "1",
        "CELL_REPLICA_PEERS": "0=/run/cell/peers/0.sock,1=/run/cell/peers/1.sock,"
                              "2=/run/cell/peers/2.sock",
        "CELL_REPLICA_BOOTSTRAP": "0,1,2",
    }


def test_membership_env_joins_once_the_group_had_a_leader() -> None:
    record = GroupRecord.create(3)
    grown, new = record.allocate()
    assert replica_env(new, grown, PATHS, data_empty=True)["CELL_REPLICA_JOIN"] == "1"
    booted = GroupRecord.create(3)
    booted = GroupRecord(members=booted.members, next_id=3, initial=booted.initial,
                         bootstrapped=True)
    # an initial voter whose data is gone must not bootstrap a second time
    amnesiac = replica_env(2, booted, PATHS, data_empty=True)
    assert amnesiac["CELL_REPLICA_JOIN"] == "1" and "CELL_REPLICA_BOOTSTRAP" not in amnesiac
    healthy = replica_env(2, booted, PATHS, data_empty=False)
    assert "CELL_REPLICA_JOIN" not in healthy
    # its env does not change when the group gets its first leader (its standby stays good)
    assert healthy == replica_env(2, GroupRecord.create(3), PATHS, data_empty=False)
    grown, new = booted.allocate()
    joined = grown.joined(new)
    later = replica_env(new, joined, PATHS, data_empty=False)
    assert "CELL_REPLICA_JOIN" not in later and "CELL_REPLICA_BOOTSTRAP" not in later


# --------------------------------------------------------------------------
# plans


def test_membership_plan_grows_one_at_a_time() -> None:
    assert next_step((0, 1, 2), 5, leader=0) == AddMember()
    assert next_step((0, 1, 2, 3, 4), 5, leader=0) is None


def test_membership_plan_shrinks_highest_ids_first_leader_last() -> None:
    assert next_step((0, 1, 2, 3, 4), 3, leader=0) == RemoveMember(replica=4)
    assert next_step((0, 1, 2, 3, 4), 3, leader=4) == RemoveMember(replica=3)
    assert next_step((0, 1, 2, 4), 3, leader=4) == TransferLeadership(leader=4)
    assert next_step((0, 1, 2, 4), 3, leader=1) == RemoveMember(replica=4)
    assert next_step((0, 1, 2), 1, leader=2) == RemoveMember(replica=1)


@pytest.mark.parametrize("count", [0, 2, 9, -1, True, 3.0])
def test_membership_plan_refuses_a_bad_count(count: object) -> None:
    with pytest.raises(RootRequestError, match="expected an odd number from 1 to 7"):
        next_step((0, 1, 2), count, leader=0)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sets(st.integers(0, 30), min_size=1, max_size=7), st.sampled_from([1, 3, 5, 7]),
       st.integers(0, 40))
def test_membership_plan_always_reaches_the_target(
    start: set[int], target: int, seed: int
) -> None:
    """Executing the plans, with the leader moving when asked, reaches ``target`` members
    in ``|len - target|`` changes (plus transfers), never removing the current leader."""
    members = sorted(start)
    next_id = max(members) + 1
    leader: int | None = members[seed % len(members)]
    changes = 0
    for _ in range(40):
        step = next_step(members, target, leader)
        if step is None:
            break
        if isinstance(step, AddMember):
            members.append(next_id)
            next_id += 1
            changes += 1
        elif isinstance(step, RemoveMember):
            assert step.replica != leader and step.replica in members
            members.remove(step.replica)
            changes += 1
        else:
            assert step.leader == leader
            leader = next(i for i in members if i != leader)
    assert len(members) == target
    assert changes == abs(len(start) - target)


# --------------------------------------------------------------------------
# stats and the view


def test_membership_stats_checks() -> None:
    assert stats_problem(stats(1), 1) is None
    assert stats_problem(stats(0), 1) == "claims to be replica 0"
    assert stats_problem(stats(1, role="king"), 1) == "unknown role 'king'"
    assert stats_problem(stats(1, voters=list(range(65))), 1) == "lists more than 64 ids"
    assert stats_problem(stats(1, term=-1), 1) == "negative term, index or id"
    for huge in ({"term": 10**309}, {"last_index": 2**63}, {"voters": [2**64]},
                 {"leader": 10**400}):
        assert stats_problem(stats(1, **huge), 1) == "term, index or id beyond 2**63-1"
    assert stats_problem(stats(1, term=2**63 - 1), 1) is None


def test_membership_view_takes_the_highest_term_leader_and_computes_lag() -> None:
    old = stats(0, role="leader", term=2, last_index=50)
    new = stats(1, role="leader", term=3, last_index=60)
    behind = stats(2, applied_index=41)
    view = GroupView.of([old, new, behind])
    assert (view.leader, view.term, view.leader_last_index) == (1, 3, 60)
    assert view.lag(behind) == 19 and view.lag(None) is None
    assert view.config({1: new}) == ((0, 1, 2), ())
    assert GroupView.of([behind]).leader is None and GroupView.of([behind]).lag(behind) is None


def test_membership_voter_is_its_own_view() -> None:
    assert is_voter(stats(1))
    assert not is_voter(stats(1, role="learner"))
    assert not is_voter(stats(3))  # not in its voters
    assert not is_voter(None)


def test_membership_a_rejoining_replica_replaying_an_old_configuration_is_not_promoted() -> None:
    """A wiped replica replays the log from its start, where it was a voter: the
    leader, which has it as a learner, decides (the wipe once reported success
    while the replica stayed a learner, leaving the group two voters)."""
    check = PromotionCheck(0)
    leader = stats(1, role="leader", term=4, leader=1, last_index=200, commit_index=200,
                   applied_index=200, voters=[1, 2], learners=[0])
    replaying = stats(0, term=4, leader=1, applied_index=9, commit_index=103, last_index=103)
    assert is_voter(replaying)  # its own (old) view says voter ...
    assert not check({0: replaying, 1: leader})  # ... the leader's says learner
    promoted = attrs.evolve(leader, voters=[0, 1, 2], learners=[], last_index=230)
    # promoted by the leader, but not yet applied here: the entry may not even be here
    assert not check({0: replaying, 1: promoted})
    at = attrs.evolve(replaying, applied_index=229, commit_index=229, last_index=230)
    assert not check({0: at, 1: attrs.evolve(promoted, last_index=260)})  # the mark stays 230
    assert check({0: attrs.evolve(at, applied_index=230), 1: promoted})
    # it must say so itself too: a learner's own view while the leader lists it
    assert not check({0: attrs.evolve(at, applied_index=240, role="learner"), 1: promoted})


def test_membership_promotion_check_forgets_its_mark_when_the_leader_changes() -> None:
    check = PromotionCheck(0)
    old = stats(1, role="leader", term=4, leader=1, last_index=50)
    joiner = stats(0, term=4, leader=1, applied_index=40)
    assert not check({0: joiner, 1: old})  # mark: (term 4, index 50)
    # a new leader whose log is longer (the old one's promotion may be lost: the
    # new leader's own configuration and log end are what count)
    new = stats(2, role="leader", term=5, leader=2, last_index=80)
    assert not check({0: attrs.evolve(joiner, applied_index=60, term=5), 2: new})
    assert check({0: attrs.evolve(joiner, applied_index=80, term=5), 2: new})
    # a leader that dropped it again: not a voter, whatever it says
    dropped = attrs.evolve(new, voters=[1, 2], last_index=81)
    assert not check({0: attrs.evolve(joiner, applied_index=90, term=5), 2: dropped})
    # no leader known: no
    assert not check({0: joiner})


def test_membership_quorum_gap_counts_voters_only() -> None:
    def wipe(voters: list[int], up: list[int], replica: int) -> object:
        return quorum_gap(voters, up, replica, stopped_first=True)

    # 3 voters, all up: any one may go
    assert wipe([0, 1, 2], [0, 1, 2], 1) is None
    # one of the others down: not the one that leaves
    assert wipe([0, 1, 2], [0, 1], 1) == ([2], 2)
    # a learner that answers is no vote: voters {1, 2} cannot stop 1
    assert wipe([1, 2], [0, 1, 2], 1) == ([], 2)
    # a learner leaving takes no vote with it
    assert wipe([1, 2], [1, 2], 0) is None
    assert wipe([1, 2], [1], 0) == ([2], 2)
    # 5 voters: two others may be down
    assert wipe([0, 1, 2, 3, 4], [0, 1, 2], 0) == ([3, 4], 3)
    assert wipe([0, 1, 2, 3, 4], [0, 1, 2, 3], 0) is None


def test_membership_quorum_gap_of_a_removal_counts_the_voters_left() -> None:
    def remove(voters: list[int], up: list[int], replica: int) -> object:
        return quorum_gap(voters, up, replica, stopped_first=False)

    # 3 -> 1: the removal of 1 from {0, 1} commits with 0 alone (it runs until then)
    assert remove([0, 1], [0, 1], 1) is None
    assert remove([0, 1, 2], [0, 1, 2], 2) is None
    assert remove([0, 1, 2], [0, 2], 2) == ([1], 2)
    # a learner answering does not stand in for voter 1
    assert remove([0, 1, 2], [0, 2, 3], 2) == ([1], 2)
    # removing a learner needs the voters' majority
    assert remove([0, 1, 2], [0, 1, 3], 3) is None
    assert remove([0, 1, 2], [0, 3], 3) == ([1, 2], 2)


def test_membership_record_file_survives_an_unfinished_first_write(tmp_path: Path) -> None:
    from cellmesh.actors._replicas_group import load_record

    data = tmp_path / "grp"
    data.mkdir()
    (data / ".group.json.tmp").write_text('{"half')  # the root died writing it
    record = load_record(data, 3)
    assert record == GroupRecord.create(3)
    assert load_record(data, 5) == record  # read back, not created again
    assert sorted(p.name for p in data.iterdir()) == ["group.json"]


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another uid needs root")
def test_membership_a_plain_cells_empty_data_dir_is_taken_back_for_its_group(
    tmp_path: Path,
) -> None:
    """A cell that had `data = true` is made replicated: its data dir belongs to its old
    uid (bwrap handed it over). Empty, the root takes it back and the group starts (its
    replicas' dirs go under it, and those need a parent of ours); holding data, it is
    refused naming what to do. (It used to fail each replica with 'must be owned by uid
    0', after writing group.json: a revert to the plain cell was then refused too.)"""
    from cellmesh.actors._replicas_group import GroupRecordError, load_record

    data = tmp_path / "grp"
    data.mkdir(mode=0o700)
    os.chown(data, 2046820400, 2046820400)
    assert load_record(data, 3) == GroupRecord.create(3)
    st = data.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (os.getuid(), 0o700)
    busy = tmp_path / "busy"
    busy.mkdir(mode=0o700)
    (busy / "kept.db").write_text("the plain cell's data")
    os.chown(busy, 2046820400, 2046820400)
    with pytest.raises(GroupRecordError, match=r"holds data but no group\.json"):
        load_record(busy, 3)
    assert busy.stat().st_uid == 2046820400 and not (busy / "group.json").exists()


def _identity(data: Path, replica: int) -> None:
    import cbor2

    (data / "replica.cbor").write_bytes(cbor2.dumps({"replica": replica, "bootstrap": [0, 1, 2]}))


def test_membership_wipe_uses_the_consensus_wipe_and_keeps_the_identity(tmp_path: Path) -> None:
    from cellmesh.actors._replicas_group import wipe_data_dir
    from cellmesh.consensus._walstate import prepare_directory, read_state

    data = tmp_path / "1"
    raft = data / "raft"
    data.mkdir()
    _identity(data, 1)
    prepare_directory(raft, node=2, join=False)
    (raft / "wal-0000000000000001-0000000000000001.log").write_bytes(b"x" * 64)
    (data / "observed.json").write_text("{}")
    if os.geteuid() == 0:  # as under bwrap: the replica's uid owns its data dir
        for entry in (data, *data.rglob("*")):
            os.lchown(entry, 65534, 65534)
    assert wipe_data_dir(data, 1) == "its log wiped (joining), its identity kept"
    assert sorted(p.name for p in data.iterdir()) == ["raft", "replica.cbor"]
    owner = data.stat().st_uid
    assert all(p.lstat().st_uid == owner for p in data.rglob("*"))  # STATE is the replica's
    assert not list(raft.glob("wal-*.log"))
    state = read_state(raft)
    assert state is not None and state.joining and state.node == 2


@pytest.mark.parametrize("case", ["damaged identity", "another replica's", "no log"])
def test_membership_wipe_empties_what_it_cannot_repair(tmp_path: Path, case: str) -> None:
    from cellmesh.actors._replicas_group import wipe_data_dir

    data = tmp_path / "1"
    data.mkdir()
    if case == "damaged identity":
        (data / "replica.cbor").write_bytes(b"\xff\x00garbage")
        (data / "raft").mkdir()
    elif case == "another replica's":
        _identity(data, 7)
        (data / "raft").mkdir()
    else:
        _identity(data, 1)
    (data / "raft" if (data / "raft").exists() else data / "x").mkdir(exist_ok=True)
    assert wipe_data_dir(data, 1) == "its data directory emptied"
    assert list(data.iterdir()) == []
    assert wipe_data_dir(tmp_path / "missing", 1) == "its data directory emptied"


async def test_a_replica_that_does_not_catch_up_is_named_by_its_replica_id() -> None:
    """The leader's refusal names the replica as the operator knows it (bank/2 is
    replica 2), not by its Raft node id (3): a failed wipe said "node 3"."""
    from types import SimpleNamespace

    from cellmesh.actors._replica_admin import PeerSide
    from cellmesh.consensus import Role
    from cellmesh.consensus.errors import CatchUpFailed

    node = SimpleNamespace(status=lambda: SimpleNamespace(role=Role.LEADER, leader=1))
    side = PeerSide(replica=SimpleNamespace(node=node), on_packet=None)  # type: ignore[arg-type]

    async def change() -> str:
        raise CatchUpFailed(3, "no progress")

    refused = await side._change("add replica 2", change)
    assert refused.reason == "replica 2 did not catch up with the log: no progress"
