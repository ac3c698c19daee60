"""The replicated cell's swap decisions (cellmesh.actors.groupswap) without processes, and fuzzed;
and the leader's answer to the catch-up question, in an in-process group.

Each test feeds events to a GroupSwap as the driver would and checks the
plans: the order (followers first, the leader last after a transfer), the
quorum rule, rollback in reverse order, and that any sequence of events
ends in exactly one Finish without ever stopping a replica the quorum needs.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cellmesh.actors.replicated_proteins as rp
from cellmesh import Synapse
from cellmesh.actors.control import ReplicaStats
from cellmesh.actors.groupswap import (
    Action,
    CatchUp,
    Finish,
    GroupSwap,
    Preload,
    Restart,
    Retarget,
    Survey,
    Transfer,
    agreed_leader,
    quorum_problem,
    rollback_target,
)
from cellmesh.actors.swap import Outcome
from cellmesh.testing import open_replica_group
from cellmesh.testing.bank import Bank, Deposit, Receipt

MEMBERS = (0, 1, 2)


def swap_one(core: GroupSwap, replica: int, running: set[int], leader: int,
             new: bool = True) -> list[Action]:
    """Drive the survey -> preload -> restart -> catch-up of ``replica``; the plan after."""
    assert core.surveyed(running, leader) == [Preload(replica=replica, new=new)]
    assert core.preloaded() == [Restart(replica=replica, new=new)]
    assert core.restarted() == [CatchUp(replica=replica)]
    return core.caught_up()


def test_swap_group_swaps_followers_first_then_the_leader_after_a_transfer() -> None:
    core = GroupSwap(group="bank")
    assert core.start(MEMBERS, MEMBERS, leader=1) == [Survey()]
    assert swap_one(core, 0, set(MEMBERS), 1) == [Survey()]
    assert swap_one(core, 2, set(MEMBERS), 1) == [Survey()]
    # the leader's turn: the leadership goes to the replica swapped last
    assert core.surveyed(set(MEMBERS), 1) == [Transfer(leader=1, to=2)]
    assert core.transferred() == [Survey(not_leader=1)]
    plan = swap_one(core, 1, set(MEMBERS), 2)
    assert plan == [Finish(outcome=Outcome.SWAPPED, cause="", new_code=MEMBERS, old_code=())]
    assert core.done and core.new_code == (0, 2, 1)


def test_swap_group_refuses_one_replica_no_leader_and_a_lost_quorum() -> None:
    (single,) = GroupSwap(group="g").start((0,), (0,), leader=0)
    assert isinstance(single, Finish) and single.outcome is Outcome.FAILED
    assert "single replica" in single.cause and "cellmesh replicas g 3" in single.cause
    (none,) = GroupSwap(group="g").start(MEMBERS, MEMBERS, leader=None)
    assert isinstance(none, Finish) and "has no leader now" in none.cause
    (lost,) = GroupSwap(group="g").start(MEMBERS, (0, 1), leader=0)
    assert isinstance(lost, Finish) and lost.outcome is Outcome.FAILED
    assert "g/2 not running" in lost.cause and "leave 1 of 3 running" in lost.cause
    # five replicas, one down: the other four can go one at a time
    core = GroupSwap(group="g")
    assert core.start(range(5), (0, 1, 2, 3), leader=0) == [Survey()]


def test_swap_group_retargets_a_member_without_a_process_at_the_end() -> None:
    core = GroupSwap(group="g")
    members = range(5)
    up = {0, 1, 2, 3}
    assert core.start(members, up, leader=3) == [Survey()]
    for replica in (0, 1):
        assert swap_one(core, replica, up, 3) == [Survey()]
    assert swap_one(core, 2, up, 3) == [Survey()]
    assert core.surveyed(up, 3) == [Transfer(leader=3, to=2)]
    assert core.transferred() == [Survey(not_leader=3)]
    plan = swap_one(core, 3, up, 2)
    assert plan[0] == Retarget(replica=4)
    assert isinstance(plan[1], Finish) and plan[1].outcome is Outcome.SWAPPED
    assert plan[1].new_code == (0, 1, 2, 3, 4)


def test_swap_group_stops_when_a_replica_went_down_meanwhile() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=2)
    assert swap_one(core, 0, set(MEMBERS), 2) == [Survey()]
    (end,) = core.surveyed({1, 2} - {2}, 2)  # replica 2 crashed meanwhile
    assert isinstance(end, Finish) and end.outcome is Outcome.FAILED
    assert "stopped before g/1" in end.cause and "g/2 not running" in end.cause
    assert "g/0 runs the new code, g/1, g/2 the old" in end.cause
    assert end.new_code == (0,) and end.old_code == (1, 2)


def test_swap_group_a_bad_import_rolls_back_without_restarting_the_failed_replica() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=2)
    assert swap_one(core, 0, set(MEMBERS), 2) == [Survey()]
    assert core.surveyed(set(MEMBERS), 2) == [Preload(replica=1, new=True)]
    # replica 1's standby cannot import: replica 0 goes back to the old code
    assert core.preload_failed("ImportError: no") == [Survey()]
    assert core.surveyed(set(MEMBERS), 2) == [Preload(replica=0, new=False)]
    assert core.preloaded() == [Restart(replica=0, new=False)]
    assert core.restarted() == [CatchUp(replica=0)]
    (end,) = core.caught_up()
    assert isinstance(end, Finish) and end.outcome is Outcome.ROLLED_BACK
    assert end.cause == ("the new version of g/1 did not import (the replica was not "
                         "stopped): ImportError: no")
    assert end.new_code == () and end.old_code == MEMBERS


def test_swap_group_rolls_back_in_reverse_order_the_failed_one_first() -> None:
    core = GroupSwap(group="g")
    members = range(5)
    core.start(members, members, leader=4)
    for replica in (0, 1):
        assert swap_one(core, replica, set(members), 4) == [Survey()]
    assert core.surveyed(set(members), 4) == [Preload(replica=2, new=True)]
    assert core.preloaded() == [Restart(replica=2, new=True)]
    assert core.restarted() == [CatchUp(replica=2)]
    assert core.catch_up_failed("not within 5 s") == [Survey()]
    order = []
    for _ in range(3):
        (preload,) = core.surveyed(set(members), 4)
        assert isinstance(preload, Preload) and not preload.new
        order.append(preload.replica)
        core.preloaded()
        core.restarted()
        plan = core.caught_up()
    assert order == [2, 1, 0]
    (end,) = plan
    assert isinstance(end, Finish) and end.outcome is Outcome.ROLLED_BACK
    assert end.cause == "the new version of g/2 did not catch up: not within 5 s"


def test_swap_group_rollback_moves_the_leadership_to_the_old_code() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=0)
    swap_one(core, 1, set(MEMBERS), 0)
    swap_one(core, 2, set(MEMBERS), 0)
    assert core.surveyed(set(MEMBERS), 0) == [Transfer(leader=0, to=2)]
    core.transferred()
    assert core.surveyed(set(MEMBERS), 2) == [Preload(replica=0, new=True)]
    core.preloaded()
    assert core.restart_failed("exit code 1: RuntimeError: no") == [Survey()]
    # replica 0 goes back first; then 2, which leads: the leadership goes to old code
    assert swap_one(core, 0, set(MEMBERS), 2, new=False) == [Survey()]
    assert core.surveyed(set(MEMBERS), 2) == [Transfer(leader=2, to=0)]
    core.transferred()
    assert swap_one(core, 2, set(MEMBERS), 0, new=False) == [Survey()]
    (end,) = swap_one(core, 1, set(MEMBERS), 0, new=False)
    assert isinstance(end, Finish) and end.outcome is Outcome.ROLLED_BACK
    assert end.cause == "the new version of g/0 did not start: exit code 1: RuntimeError: no"


def test_swap_group_a_failed_rollback_stops_and_says_who_runs_what() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=2)
    swap_one(core, 0, set(MEMBERS), 2)
    core.surveyed(set(MEMBERS), 2)
    core.preloaded()
    core.restarted()
    core.catch_up_failed("not within 5 s")
    core.surveyed(set(MEMBERS), 2)  # rolling back replica 1
    core.preloaded()
    (end,) = core.restart_failed("exit code 1")
    assert isinstance(end, Finish) and end.outcome is Outcome.FAILED
    assert end.cause.startswith("the new version of g/1 did not catch up: not within 5 s; "
                                "then, rolling back, the old version of g/1 did not start")
    assert "g/0, g/1 run the new code, g/2 the old" in end.cause


def test_swap_group_leaves_replicas_already_on_the_new_code_alone() -> None:
    """A group a stopped swap left mixed: the next swap restarts only the others, and the
    leadership may go to a replica that was on the new code before."""
    core = GroupSwap(group="g")
    assert core.start(MEMBERS, MEMBERS, leader=1, on_new_code=(0,)) == [Survey()]
    assert core.on_new_code == (0,) and core.new_code == ()
    assert core.surveyed(set(MEMBERS), 1) == [Preload(replica=2, new=True)]
    core.preloaded()
    core.restarted()
    assert core.caught_up() == [Survey()]
    # the leader's turn: the replica swapped last is preferred to the one already there
    assert core.surveyed(set(MEMBERS), 1) == [Transfer(leader=1, to=2)]
    core.transferred()
    (end,) = swap_one(core, 1, set(MEMBERS), 2)
    assert end == Finish(outcome=Outcome.SWAPPED, cause="", new_code=MEMBERS, old_code=())
    assert core.new_code == (2, 1)
    # the leader already there: only the followers; none there but the leader: it leads on
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=0, on_new_code=(0,))
    assert swap_one(core, 1, set(MEMBERS), 0) == [Survey()]
    (end,) = swap_one(core, 2, set(MEMBERS), 0)
    assert isinstance(end, Finish) and end.outcome is Outcome.SWAPPED
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=1, on_new_code=(0,))
    swap_one(core, 2, set(MEMBERS), 1)
    core.surveyed(set(MEMBERS), 1)
    assert core.transfer_failed("no") == [Survey()]  # rolls back 2, never 0
    (preload,) = core.surveyed(set(MEMBERS), 1)
    assert preload == Preload(replica=2, new=False)


def test_swap_group_every_running_replica_already_there_needs_no_quorum() -> None:
    core = GroupSwap(group="g")
    plan = core.start(MEMBERS, (0, 1), leader=None, on_new_code=(0, 1))
    assert plan == [Retarget(replica=2),
                    Finish(outcome=Outcome.SWAPPED, cause="", new_code=MEMBERS, old_code=())]


def test_swap_group_a_stopped_swap_says_both_ways_on() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=2)
    swap_one(core, 0, set(MEMBERS), 2)
    (end,) = core.surveyed({0, 1}, 0)  # replica 2 stopped meanwhile
    assert end.cause.endswith(  # type: ignore[union-attr]
        "g/0 runs the new code, g/1, g/2 the old: once every replica runs, `cellmesh swap g` "
        "swaps every replica to its declared code, or `cellmesh swap g --rollback` takes g/0 "
        "back")
    back = GroupSwap(group="g", rollback=True)
    back.start(MEMBERS, MEMBERS, leader=2)
    swap_one(back, 0, set(MEMBERS), 2)
    (end,) = back.surveyed({0, 1}, 0)
    assert isinstance(end, Finish) and "--rollback" not in end.cause
    assert end.cause.endswith("swaps every replica to its declared code")


def test_swap_group_rollback_target_is_the_code_the_last_swap_left() -> None:
    o, n, p = "o" * 64, "n" * 64, "p" * 64
    # a whole swap from o to n: back to o
    assert rollback_target("g", {0: (n, o), 1: (n, o), 2: (n, o)}) == o
    # a swap that stopped after g/0 (g/1, g/2 never swapped, or swapped long ago)
    assert rollback_target("g", {0: (n, o), 1: (o, None), 2: (o, None)}) == o
    assert rollback_target("g", {0: (n, o), 1: (o, p), 2: (o, p)}) == o
    with pytest.raises(ValueError, match="no swap of it took effect"):
        rollback_target("g", {0: (o, None), 1: (o, None)})
    # that stopped swap rolled back by hand: no code every replica ran before
    with pytest.raises(ValueError, match="no code in common") as info:
        rollback_target("g", {0: (o, n), 1: (o, p), 2: (o, p)})
    assert f"g/0 runs {o[:12]}, before it {n[:12]}" in str(info.value)
    assert "`cellmesh swap g` swaps every replica to its declared code" in str(info.value)
    # a rollback that stopped half-way: either way is a guess, so neither
    with pytest.raises(ValueError, match=f"it could mean {n[:12]} or {o[:12]}"):
        rollback_target("g", {0: (o, n), 1: (n, o), 2: (n, o)})


def test_swap_group_ignores_events_out_of_turn() -> None:
    core = GroupSwap(group="g")
    assert core.caught_up() == [] and core.transferred() == [] and core.preloaded() == []
    core.start(MEMBERS, MEMBERS, leader=0)
    assert core.restarted() == [] and core.catch_up_failed("x") == []
    assert core.transfer_failed("x") == [] and core.preload_failed("x") == []
    assert core.surveyed(set(MEMBERS), 0) == [Preload(replica=1, new=True)]
    assert core.surveyed(set(MEMBERS), 0) == []  # a second answer to one survey


def test_swap_group_transfer_failure_rolls_back_the_followers() -> None:
    core = GroupSwap(group="g")
    core.start(MEMBERS, MEMBERS, leader=0)
    swap_one(core, 1, set(MEMBERS), 0)
    swap_one(core, 2, set(MEMBERS), 0)
    assert core.surveyed(set(MEMBERS), 0) == [Transfer(leader=0, to=2)]
    assert core.transfer_failed("AdminRefused: failed") == [Survey()]
    assert core.cause == "could not move the leadership off g/0: AdminRefused: failed"
    assert swap_one(core, 2, set(MEMBERS), 0, new=False) == [Survey()]
    (end,) = swap_one(core, 1, set(MEMBERS), 0, new=False)
    assert isinstance(end, Finish) and end.outcome is Outcome.ROLLED_BACK


def _stats(replica: int, leader: int | None) -> ReplicaStats:
    return ReplicaStats(replica=replica, role="follower", term=1, leader=leader,
                        commit_index=0, applied_index=0, last_index=0, voters=[], learners=[])


def test_swap_group_agreed_leader_needs_a_majority_not_one_replicas_claim() -> None:
    assert agreed_leader({0: _stats(0, 0), 1: _stats(1, 0), 2: _stats(2, 2)}, 3) == 0
    assert agreed_leader({2: _stats(2, 2)}, 3) is None  # its own word
    assert agreed_leader({0: _stats(0, None), 1: _stats(1, 2), 2: _stats(2, 2)}, 3) == 2
    assert agreed_leader({}, 3) is None
    assert quorum_problem("g", MEMBERS, MEMBERS, 0) is None
    assert quorum_problem("g", MEMBERS, (0, 1), 0) == (
        "g/2 not running: stopping g/0 would leave 1 of 3 replicas running (a majority is 2)"
    )


_EVENTS = st.lists(st.tuples(
    st.sampled_from(["surveyed", "transferred", "transfer_failed", "preloaded",
                     "preload_failed", "restarted", "restart_failed", "caught_up",
                     "catch_up_failed", "aborted"]),
    st.frozensets(st.integers(0, 4)), st.one_of(st.none(), st.integers(0, 4)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.frozensets(st.integers(0, 4)), st.one_of(st.none(),
       st.integers(0, 4)), _EVENTS, st.frozensets(st.integers(0, 4)))
def test_swap_group_any_events_end_in_one_finish_and_keep_the_quorum(
    n: int, up: frozenset[int], leader: int | None,
    events: list[tuple[str, frozenset[int], int | None]], there: frozenset[int],
) -> None:
    """Invariants: at most one Finish, nothing after it; a Restart only when the survey just
    before left a majority running without it; a Transfer never to the leader itself; a
    member already on the new code is never restarted onto it, nor rolled back."""
    members = tuple(range(n))
    core = GroupSwap(group="g")
    plans = [core.start(members, up, leader, on_new_code=there)]
    last_running: frozenset[int] = up
    for name, running, lead in events:
        if name == "surveyed":
            last_running = running
            plan = core.surveyed(running, lead)
        elif name == "aborted":
            plan = core.aborted("stop")
        elif name.endswith("failed"):
            plan = getattr(core, name)("cause")
        else:
            plan = getattr(core, name)()
        for action in plan:
            if isinstance(action, Restart):
                left = len((last_running & set(members)) - {action.replica})
                assert left >= n // 2 + 1
            if isinstance(action, Transfer):
                assert action.leader != action.to
            if isinstance(action, (Preload, Restart, Retarget)):
                assert action.replica not in there
        plans.append(plan)
    finishes = [a for plan in plans for a in plan if isinstance(a, Finish)]
    assert len(finishes) <= 1
    if finishes:
        assert core.done
        after = [a for plan in plans[plans.index(next(p for p in plans if finishes[0] in p)) + 1:]
                 for a in plan]
        assert after == []
        assert set(finishes[0].new_code) | set(finishes[0].old_code) == set(members)


async def test_swap_group_progress_request_is_answered_by_the_leader_only() -> None:
    """``ReplicaProgressRequest``: the leader's match index of a replica (the catch-up proof)."""
    async with open_replica_group(Bank, name="bank") as g:
        leader = await g.leader()
        async with Synapse.grow("bank", socket_dir=g.socket_dir) as syn:
            for n in range(5):
                receipt = await syn.fire(Deposit(id=f"d{n}", account="a", amount=1))
                assert isinstance(receipt, Receipt)
        converged = await g.wait_converged()
        index = converged[0].applied_index
        follower = next(i for i in range(3) if i != leader)
        reply = await g.ask(leader, rp.ReplicaProgressRequest(id=follower))
        assert isinstance(reply, rp.ReplicaProgress) and reply.replica == follower
        assert reply.match >= index and reply.commit >= index
        own = await g.ask(leader, rp.ReplicaProgressRequest(id=leader))
        assert isinstance(own, rp.ReplicaProgress) and own.match >= index
        unknown = await g.ask(leader, rp.ReplicaProgressRequest(id=77))
        assert isinstance(unknown, rp.ReplicaProgress) and unknown.match == -1
        refused = await g.ask(follower, rp.ReplicaProgressRequest(id=leader))
        assert isinstance(refused, rp.AdminRefused) and refused.code == rp.NOT_LEADER
        assert refused.leader == leader
        bad = await g.ask(leader, rp.ReplicaProgressRequest(id=-1))
        assert isinstance(bad, rp.AdminRefused) and bad.code == rp.INVALID


def test_a_member_that_died_in_probation_is_reported_by_its_own_exit() -> None:
    """The swap names why the new version's process ended from that process's own
    exit reason: by the time it looks, under load, the supervisor may have restarted
    the replica and the new process's ready cleared the replica's failure record
    (the report said "no cause reported", seen in a full run)."""
    from types import SimpleNamespace

    from cellmesh.actors._cells import ReplicaPart
    from cellmesh.actors._groupswap import _why_exited
    from cellmesh.actors.policy import AbnormalExit, ShutdownExit

    part = ReplicaPart(  # (the parts saying why it failed are all this reads)
        group="bank", id=1, peer_listener=None, peer_path=None, peers_dir=None, data_dir=None,  # type: ignore[arg-type]
    )
    part.last_line = "RuntimeError: dies after it started"
    member: object = SimpleNamespace(part=part)  # the record: cleared by the restart
    died = SimpleNamespace(exit_reason=AbnormalExit(
        text="exit code 1: RuntimeError: dies after it started"))
    assert _why_exited(member, died) == "exit code 1: RuntimeError: dies after it started"  # type: ignore[arg-type]
    bare = SimpleNamespace(exit_reason=AbnormalExit(text="exit code 3"))
    assert _why_exited(member, bare) == "exit code 3: RuntimeError: dies after it started"  # type: ignore[arg-type]
    stopped = SimpleNamespace(exit_reason=ShutdownExit(detail="stopped"))
    assert _why_exited(member, stopped) == "no cause reported"  # type: ignore[arg-type]
    part.error = "exit code 1"
    assert _why_exited(member, None) == "exit code 1: RuntimeError: dies after it started"  # type: ignore[arg-type]
