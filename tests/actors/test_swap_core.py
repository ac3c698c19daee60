"""The hot swap's decisions (cellmesh.actors.swap) without processes: every path, and fuzzed.

Each test feeds events to a SwapState and checks the plans it returns, as
the driver would execute them. Time is a float passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.actors.swap import (
    SETTLE_SECONDS,
    Action,
    AdoptNew,
    BuildDna,
    CancelOrder,
    Finish,
    GiveState,
    KillNew,
    KillOld,
    OrderSuspend,
    Outcome,
    Phase,
    Provision,
    RefuseNew,
    ReleaseOld,
    Restore,
    ResumeOld,
    Retarget,
    SetTimer,
    SpawnNew,
    SwapState,
)

TIMEOUT = 10.0
GRACE = 1.0


def kinds(plan: list[Action]) -> list[type]:
    return [type(a) for a in plan]


def started(now: float = 0.0) -> SwapState:
    core = SwapState(timeout=TIMEOUT, grace=GRACE)
    assert kinds(core.start(now)) == [BuildDna]
    return core


def at_phase(phase: Phase) -> SwapState:
    """A swap driven along the happy path up to ``phase``."""
    core = started()
    steps: list[tuple[Phase, Callable[[], list[Action]]]] = [
        (Phase.PROVISIONING, lambda: core.dna_built(unchanged=False, running=True, now=0.1)),
        (Phase.STARTING, lambda: core.provisioned(0.2)),
        (Phase.SUSPENDING, lambda: core.new_hello("2", 0.3)),
        (Phase.HANDING_OVER, lambda: core.old_out(0.4)),
        (Phase.PROBATION, lambda: core.new_ready(0.5)),
    ]
    for target, step in steps:
        if core.phase is phase:
            break
        step()
        assert core.phase is target
    assert core.phase is phase
    return core


def finish_of(plan: list[Action]) -> Finish:
    assert isinstance(plan[-1], Finish), plan
    return plan[-1]


# ------------------------------------------------------------------ happy paths


def test_swap_core_happy_path_plans_each_step_in_order() -> None:
    core = started()
    assert kinds(core.dna_built(unchanged=False, running=True, now=0.1)) == [SetTimer, Provision]
    assert core.timer_at == TIMEOUT  # one deadline for everything before probation
    assert kinds(core.provisioned(0.2)) == [SpawnNew]
    assert core.awaiting_hello
    plan = core.new_hello("v2", 0.3)
    assert plan == [OrderSuspend(deadline=TIMEOUT)] and core.new_version == "v2"
    assert core.awaiting_old
    core.order_delivered()
    assert kinds(core.old_out(0.4)) == [GiveState] and core.awaiting_ready
    assert core.new_ready(0.5) == [SetTimer(at=0.5 + GRACE)]
    assert core.phase is Phase.PROBATION and core.new_serving and core.serving_at == 0.5
    assert core.tick(0.5 + GRACE - 0.01) == []  # early: ignored
    assert kinds(core.tick(0.5 + GRACE)) == [AdoptNew, ReleaseOld, SetTimer]
    assert core.phase is Phase.COMMITTING
    assert core.old_exited("exit code 0", 1.6) == [Restore(committed=True)]
    assert core.restored() == [Finish(outcome=Outcome.SWAPPED, cause="")]
    assert core.done


def test_swap_core_grace_zero_commits_when_ready() -> None:
    core = SwapState(timeout=TIMEOUT, grace=0.0)
    core.start(0.0)
    core.dna_built(unchanged=False, running=True, now=0.0)
    core.provisioned(0.0)
    core.new_hello("", 0.0)
    core.old_out(0.0)
    assert kinds(core.new_ready(0.1)) == [AdoptNew, ReleaseOld, SetTimer]


def test_swap_core_identical_dna_does_nothing() -> None:
    core = started()
    assert core.dna_built(unchanged=True, running=True, now=0.1) == [
        Finish(outcome=Outcome.UNCHANGED)
    ]
    assert core.done and core.outcome is Outcome.UNCHANGED and core.outcome.ok


def test_swap_core_cell_without_process_is_retargeted() -> None:
    core = started()
    assert core.dna_built(unchanged=False, running=False, now=0.1) == [Retarget()]
    assert core.retargeted() == [Finish(outcome=Outcome.RETARGETED)]


def test_swap_core_bad_dna_fails_without_touching_anything() -> None:
    core = started()
    assert core.dna_failed("no such file") == [Finish(outcome=Outcome.FAILED, cause="no such file")]
    assert not Outcome.FAILED.ok


# ------------------------------------------------------------------ rollbacks


@pytest.mark.parametrize(
    ("phase", "event", "cause", "new_gone"),
    [
        (Phase.PROVISIONING, lambda c: c.provision_failed("EPERM", 1.0), "sandbox: EPERM", True),
        (Phase.STARTING, lambda c: c.spawn_failed("ENOENT", 1.0), "could not start", True),
        (Phase.STARTING, lambda c: c.new_exited("exit code 1", 1.0), "before it was ready",
         True),
        (Phase.STARTING, lambda c: c.new_failed("the import", "SyntaxError", "bad", 1.0),
         "failed in the import: SyntaxError: bad", False),
        (Phase.STARTING, lambda c: c.tick(TIMEOUT), "not ready within 10 s (still starting)",
         False),
        (Phase.SUSPENDING, lambda c: c.tick(TIMEOUT), "still suspending", False),
        (Phase.SUSPENDING, lambda c: c.old_failed("on_swap_out failed: KeyError", 1.0),
         "the old version could not hand over: on_swap_out failed", False),
        (Phase.HANDING_OVER, lambda c: c.new_failed("on_swap_in", "ValueError", "x", 1.0),
         "failed in on_swap_in: ValueError: x", False),
        (Phase.HANDING_OVER, lambda c: c.tick(TIMEOUT), "still handing over", False),
        (Phase.PROBATION, lambda c: c.new_exited("exit code 1", 0.7),
         "crashed 200 ms after taking over: exit code 1", True),
    ],
)
def test_swap_core_each_failure_rolls_back_and_names_the_cause(
    phase: Phase, event: Callable[[SwapState], list[Action]], cause: str, new_gone: bool
) -> None:
    core = at_phase(phase)
    plan = event(core)
    assert core.phase is Phase.ROLLING_BACK and core.outcome is Outcome.ROLLED_BACK
    assert cause in core.cause
    assert AdoptNew not in kinds(plan) and ReleaseOld not in kinds(plan)
    spawned = phase in (Phase.STARTING, Phase.SUSPENDING, Phase.HANDING_OVER, Phase.PROBATION)
    if spawned and not new_gone:
        assert KillNew in kinds(plan)
    # the old version serves again: resumed if it was suspended, order withdrawn if queued
    if phase in (Phase.HANDING_OVER, Phase.PROBATION):
        assert ResumeOld in kinds(plan)
    if phase is Phase.SUSPENDING and "old version" not in cause:
        assert CancelOrder in kinds(plan)
    if not new_gone and spawned:
        assert Restore not in kinds(plan)  # not before the new process is reaped
        plan = core.new_exited("killed by SIGKILL", 1.1)
    assert plan[-1] == Restore(committed=False)
    finish = finish_of(core.restored())
    assert finish.outcome is Outcome.ROLLED_BACK and cause in finish.cause


def test_swap_core_hello_pending_is_refused_on_rollback() -> None:
    core = at_phase(Phase.SUSPENDING)
    plan = core.tick(TIMEOUT)
    assert plan[0] == RefuseNew(reason=core.cause)


def test_swap_core_reported_failure_wins_over_the_exit_that_follows() -> None:
    core = at_phase(Phase.HANDING_OVER)
    core.new_failed("on_swap_in", "ValueError", "bad state", 1.0)
    core.new_exited("exit code 1", 1.1)
    assert "ValueError: bad state" in finish_of(core.restored()).cause


def test_swap_core_old_mid_drain_at_rollback_is_resumed_when_it_reports() -> None:
    core = at_phase(Phase.SUSPENDING)
    core.order_delivered()
    plan = core.new_exited("exit code 1", 1.0)
    assert kinds(plan) == [SetTimer]  # waits for the old process's report
    assert core.old_out(1.2) == [ResumeOld(), Restore(committed=False)]
    assert finish_of(core.restored()).outcome is Outcome.ROLLED_BACK


def test_swap_core_old_failure_after_rollback_needs_no_resume() -> None:
    core = at_phase(Phase.SUSPENDING)
    core.order_delivered()
    core.new_exited("exit code 1", 1.0)
    assert core.old_failed("calls still in flight", 1.2) == [Restore(committed=False)]


def test_swap_core_old_that_never_reports_after_rollback_is_killed() -> None:
    core = at_phase(Phase.SUSPENDING)
    core.order_delivered()
    core.new_exited("exit code 1", 1.0)
    assert core.tick(1.0 + SETTLE_SECONDS - 0.1) == []
    plan = core.tick(1.0 + SETTLE_SECONDS)
    assert KillOld in kinds(plan) and SetTimer in kinds(plan)
    (kill,) = [a for a in plan if isinstance(a, KillOld)]  # its exit names the swap, not
    assert "killed by the swap" in kill.why and "did not resume" in kill.why  # "on request"
    assert core.old_exited("killed by SIGKILL", 7.0) == [Restore(committed=False)]
    finish = finish_of(core.restored())
    assert finish.outcome is Outcome.FAILED and "did not resume in time" in finish.cause


def test_swap_core_new_that_survives_its_kill_is_killed_again() -> None:
    core = at_phase(Phase.STARTING)
    core.tick(TIMEOUT)
    assert kinds(core.tick(TIMEOUT + SETTLE_SECONDS)) == [KillNew, SetTimer]


# ------------------------------------------------------------------ the old process


@pytest.mark.parametrize("phase", [Phase.PROVISIONING, Phase.STARTING, Phase.SUSPENDING,
                                   Phase.HANDING_OVER])
def test_swap_core_old_exit_before_probation_abandons_the_swap(phase: Phase) -> None:
    core = at_phase(phase)
    plan = core.old_exited("killed by SIGKILL", 1.0)
    assert core.outcome is Outcome.FAILED and "old version exited" in core.cause
    assert AdoptNew not in kinds(plan)
    if phase is not Phase.PROVISIONING:
        assert KillNew in kinds(plan)
        plan = core.new_exited("killed", 1.1)
    assert plan[-1] == Restore(committed=False)
    assert finish_of(core.restored()).outcome is Outcome.FAILED


def test_swap_core_old_exit_in_probation_commits_at_once() -> None:
    core = at_phase(Phase.PROBATION)
    assert core.old_exited("killed by SIGKILL", 0.6) == [AdoptNew(), Restore(committed=True)]
    assert finish_of(core.restored()).outcome is Outcome.SWAPPED


def test_swap_core_released_old_that_lingers_is_killed() -> None:
    core = at_phase(Phase.PROBATION)
    core.tick(0.5 + GRACE)
    plan = core.tick(0.5 + GRACE + SETTLE_SECONDS)
    assert kinds(plan) == [KillOld, SetTimer]
    assert "did not exit after the swap committed" in plan[0].why  # type: ignore[union-attr]
    assert core.old_exited("killed", 9.0) == [Restore(committed=True)]


def test_swap_core_old_exit_while_preparing_is_left_to_the_next_step() -> None:
    core = started()
    assert core.old_exited("exit code 1", 0.1) == []
    assert kinds(core.dna_built(unchanged=False, running=False, now=0.2)) == [Retarget]


# ------------------------------------------------------------------ stops


@pytest.mark.parametrize("phase", [Phase.PROVISIONING, Phase.STARTING, Phase.SUSPENDING,
                                   Phase.HANDING_OVER])
def test_swap_core_stop_before_probation_abandons(phase: Phase) -> None:
    core = at_phase(phase)
    core.stop_requested(1.0)
    assert core.phase is Phase.ROLLING_BACK and core.outcome is Outcome.FAILED
    assert core.cause == "the cell is being stopped"


def test_swap_core_stop_in_probation_commits_so_the_stop_reaches_the_new_process() -> None:
    core = at_phase(Phase.PROBATION)
    assert kinds(core.stop_requested(0.6)) == [AdoptNew, ReleaseOld, SetTimer]


def test_swap_core_stop_while_preparing_finishes_at_once() -> None:
    core = started()
    assert finish_of(core.stop_requested(0.1)).outcome is Outcome.FAILED


# ------------------------------------------------------------------ hostile order


def test_swap_core_messages_out_of_turn_change_nothing() -> None:
    core = started()
    assert core.new_hello("x", 0.1) == []
    assert core.old_out(0.1) == []
    assert core.new_ready(0.1) == []
    assert core.old_failed("x", 0.1) == []
    assert core.new_exited("x", 0.1) == []
    core = at_phase(Phase.SUSPENDING)
    assert core.new_hello("again", 0.5) == []  # a second hello
    assert core.new_ready(0.5) == []  # ready before it got the state
    core = at_phase(Phase.PROBATION)
    assert core.old_out(0.6) == []  # a second export


def test_swap_core_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SwapState(timeout=0.0, grace=1.0)
    with pytest.raises(ValueError, match="grace"):
        SwapState(timeout=1.0, grace=-1.0)


# ------------------------------------------------------------------ fuzzed sequences

EVENTS: list[Callable[[SwapState, float], list[Action]]] = [
    lambda c, t: c.dna_built(unchanged=False, running=True, now=t),
    lambda c, t: c.dna_built(unchanged=False, running=False, now=t),
    lambda c, t: c.dna_failed("bad"),
    lambda c, t: c.retargeted(),
    lambda c, t: c.provisioned(t),
    lambda c, t: c.provision_failed("x", t),
    lambda c, t: c.spawn_failed("x", t),
    lambda c, t: c.new_hello("v", t),
    lambda c, t: c.new_ready(t),
    lambda c, t: c.new_failed("on_start", "E", "m", t),
    lambda c, t: c.new_exited("exit code 1", t),
    lambda c, t: (c.order_delivered(), [])[1],
    lambda c, t: c.old_out(t),
    lambda c, t: c.old_failed("x", t),
    lambda c, t: c.old_exited("exit code 1", t),
    lambda c, t: c.tick(t),
    lambda c, t: c.stop_requested(t),
    lambda c, t: c.restored(),
]


def _drain_to_end(core: SwapState, now: float, plans: list[Action]) -> float:
    """Answer every outstanding duty cooperatively until the swap finishes."""
    for _ in range(50):
        if core.done:
            return now
        now += SETTLE_SECONDS + TIMEOUT + GRACE
        if core.phase is Phase.PREPARING:
            plans += core.dna_failed("x")
        plans += core.tick(now)
        plans += core.new_exited("killed", now)
        plans += core.old_out(now)
        if KillOld in kinds(plans):
            plans += core.old_exited("killed", now)
        plans += core.restored()
        plans += core.retargeted()
    raise AssertionError(f"the swap never finished (phase {core.phase})")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(EVENTS) - 1), st.floats(0, 0.5)), max_size=30))
def test_swap_core_any_event_order_keeps_its_promises(steps: list[tuple[int, float]]) -> None:
    core = started()
    now = 0.0
    plans: list[Action] = []
    for index, dt in steps:
        now += dt
        finished_before = core.done
        plan = EVENTS[index](core, now)
        if finished_before:
            assert plan == []  # nothing happens after the end
        plans += plan
    _drain_to_end(core, now, plans)
    k = kinds(plans)
    assert k.count(Finish) == 1 and isinstance(plans[-1], Finish)
    finish = plans[-1]
    assert finish.outcome is core.outcome
    assert k.count(OrderSuspend) <= 1 and k.count(GiveState) <= 1 and k.count(AdoptNew) <= 1
    assert not (ResumeOld in k and ReleaseOld in k)  # one verdict
    if ReleaseOld in k:
        assert k.index(AdoptNew) < k.index(ReleaseOld)
    if AdoptNew in k:
        assert finish.outcome is Outcome.SWAPPED
    if finish.outcome is Outcome.ROLLED_BACK and GiveState in k:
        assert ResumeOld in k  # the old version got its verdict: serve on
    if finish.outcome in (Outcome.ROLLED_BACK, Outcome.FAILED) and SpawnNew in k:
        assert AdoptNew not in k
    if Restore in k:
        restore = plans[k.index(Restore)]
        assert isinstance(restore, Restore)
        assert restore.committed == (finish.outcome is Outcome.SWAPPED)


def test_swap_core_suspend_orders_leave_a_margin_before_the_deadline() -> None:
    from cellmesh.actors.swap import SUSPEND_MARGIN, suspend_seconds

    assert suspend_seconds(10.0, 0.0) == 10.0 - SUSPEND_MARGIN
    assert suspend_seconds(1.0, 0.0) == pytest.approx(0.8)
    assert suspend_seconds(1.0, 2.0) == 0.05  # past the deadline: a token amount
