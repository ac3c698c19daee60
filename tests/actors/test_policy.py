"""The pure restart policy against OTP's supervisor semantics, synchronously.

Section names cite the Erlang/OTP ``supervisor`` manual (STDLIB) and the OTP
Design Principles chapter "Supervisor Behaviour". Plans are compared as lists
of ``(verb, child id)`` pairs so each expectation reads like the manual.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cellmesh.actors.errors import (
    ChildAlreadyPresent,
    ChildRunning,
    InvalidSupervisorSpec,
    NotSupported,
    SupervisorRequestError,
    SupervisorStopped,
    UnknownChild,
)
from cellmesh.actors.policy import (
    FAILED_TO_START,
    MAX_INTENSITY,
    AbnormalExit,
    Action,
    Backoff,
    ChildKind,
    ChildSpec,
    ChildStatus,
    Escalate,
    ExitReason,
    NormalExit,
    RemoveChild,
    Restart,
    Shutdown,
    ShutdownExit,
    StartChild,
    StopChild,
    Strategy,
    SupervisorSpec,
    SupervisorState,
    is_abnormal,
)

CRASH = AbnormalExit(text="exit code 1")
REASONS: dict[str, ExitReason] = {
    "normal": NormalExit(),
    "shutdown": ShutdownExit(),
    "abnormal": CRASH,
}
STATIC = [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE]


def steps(plan: list[Action]) -> list[tuple[str, str]]:
    """A plan as readable ``(verb, id)`` pairs."""
    out: list[tuple[str, str]] = []
    for action in plan:
        if isinstance(action, StartChild):
            out.append(("start", action.child_id))
        elif isinstance(action, StopChild):
            out.append(("stop", action.child_id))
        elif isinstance(action, RemoveChild):
            out.append(("remove", action.child_id))
        else:
            out.append(("escalate", action.reason))
    return out


def confirm(state: SupervisorState, plan: list[Action]) -> list[Action]:
    """Execute ``plan`` as a driver whose starts all succeed; return it."""
    for action in plan:
        if isinstance(action, StartChild):
            state.child_started(action.child_id)
    return plan


def children(*ids: str, restart: Restart = Restart.PERMANENT) -> tuple[ChildSpec, ...]:
    return tuple(ChildSpec(id=i, restart=restart) for i in ids)


def running_sup(
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    specs: tuple[ChildSpec, ...] = children("a", "b", "c"),
    *,
    intensity: int = 1,
    period: float = 5.0,
    backoff: Backoff | None = None,
) -> SupervisorState:
    state = SupervisorState(
        SupervisorSpec(
            strategy=strategy, intensity=intensity, period=period, children=specs, backoff=backoff
        )
    )
    confirm(state, state.start())
    return state


def status(state: SupervisorState) -> dict[str, ChildStatus]:
    return {info.child_id: info.status for info in state.which_children()}


# --------------------------------------------------------------------------
# Start and stop order.


def test_policy_start_in_order_and_shutdown_in_reverse() -> None:
    """Supervision Principles: started left to right, terminated right to left."""
    state = SupervisorState(SupervisorSpec(children=children("a", "b", "c")))
    assert steps(state.start()) == [("start", "a"), ("start", "b"), ("start", "c")]
    started_early = state.started
    assert not started_early
    for cid in "abc":
        state.child_started(cid)
    assert state.started
    assert steps(state.shutdown()) == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert state.stopped


def test_policy_shutdown_skips_children_not_running() -> None:
    state = running_sup(specs=children("a", "b", "c"))
    confirm(state, state.terminate_child("b"))
    assert steps(state.shutdown()) == [("stop", "c"), ("stop", "a")]


def test_policy_stop_actions_carry_the_child_shutdown() -> None:
    """Child specification: shutdown defaults to 5000 ms for workers, infinity for supervisors."""
    specs = (
        ChildSpec(id="w"),
        ChildSpec(id="s", kind=ChildKind.SUPERVISOR),
        ChildSpec(id="k", shutdown=Shutdown.brutal_kill()),
    )
    state = running_sup(specs=specs)
    plan = state.shutdown()
    assert [(a.child_id, a.shutdown) for a in plan if isinstance(a, StopChild)] == [
        ("k", Shutdown.brutal_kill()),
        ("s", Shutdown.infinity()),
        ("w", Shutdown.timeout(5.0)),
    ]


def test_policy_init_start_failure_stops_started_children_and_escalates() -> None:
    """A child failing to start at supervisor start: started ones stop, supervisor fails."""
    state = SupervisorState(SupervisorSpec(children=children("a", "b", "c", "d")))
    state.start()
    state.child_started("a")
    state.child_started("b")
    plan = state.start_failed("c", "boom", now=0.0)
    assert steps(plan) == [("stop", "b"), ("stop", "a"), ("escalate", FAILED_TO_START)]
    last = plan[-1]
    assert isinstance(last, Escalate)
    assert (last.child_id, last.detail) == ("c", "boom")
    assert state.stopped
    with pytest.raises(SupervisorStopped):
        state.child_exited("a", CRASH, now=0.0)


def test_policy_empty_supervisor_is_started_at_once() -> None:
    state = SupervisorState(SupervisorSpec())
    assert state.start() == []
    assert state.started
    assert state.shutdown() == []


# --------------------------------------------------------------------------
# Strategy x restart type x exit reason, exhaustively.


def expected_plan(
    strategy: Strategy, restart: Restart, reason: str
) -> list[tuple[str, str]]:
    """What OTP does when the middle child ``b`` of ``a, b, c`` exits."""
    wanted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and reason == "abnormal")
    if not wanted:
        return [("remove", "b")] if restart is Restart.TEMPORARY else []
    if strategy is Strategy.ONE_FOR_ONE:
        return [("start", "b")]
    if strategy is Strategy.ONE_FOR_ALL:
        return [("stop", "c"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")]
    return [("stop", "c"), ("start", "b"), ("start", "c")]


@pytest.mark.parametrize(
    ("strategy", "restart", "reason"),
    list(itertools.product(STATIC, list(Restart), list(REASONS))),
    ids=lambda v: getattr(v, "value", v),
)
def test_policy_matrix_static_strategies(strategy: Strategy, restart: Restart, reason: str) -> None:
    """Restart Strategies x Child specification (restart): all 27 combinations."""
    specs = (ChildSpec(id="a"), ChildSpec(id="b", restart=restart), ChildSpec(id="c"))
    state = running_sup(strategy, specs, intensity=10)
    plan = state.child_exited("b", REASONS[reason], now=0.0)
    assert steps(plan) == expected_plan(strategy, restart, reason)
    confirm(state, plan)
    if restart is Restart.TEMPORARY:
        assert "b" not in status(state)
    else:
        restarted = bool(plan)
        assert status(state)["b"] is (ChildStatus.RUNNING if restarted else ChildStatus.STOPPED)
    assert status(state)["a"] is ChildStatus.RUNNING
    assert status(state)["c"] is ChildStatus.RUNNING


@pytest.mark.parametrize(
    ("restart", "reason"),
    list(itertools.product(list(Restart), list(REASONS))),
    ids=lambda v: getattr(v, "value", v),
)
def test_policy_matrix_simple_one_for_one(restart: Restart, reason: str) -> None:
    """simple_one_for_one: one_for_one over dynamic children; exited ones are removed."""
    state = running_sup(
        Strategy.SIMPLE_ONE_FOR_ONE, (ChildSpec(id="w", restart=restart),), intensity=10
    )
    for _ in range(3):
        confirm(state, state.start_child(()))
    plan = state.child_exited("w-2", REASONS[reason], now=0.0)
    wanted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and reason == "abnormal")
    assert steps(plan) == ([("start", "w-2")] if wanted else [("remove", "w-2")])
    confirm(state, plan)
    assert state.running() == (("w-1", "w-2", "w-3") if wanted else ("w-1", "w-3"))


@pytest.mark.parametrize(("name", "reason"), list(REASONS.items()))
def test_policy_is_abnormal_follows_otp(name: str, reason: ExitReason) -> None:
    """Child specification: transient restarts unless the reason is normal or shutdown."""
    assert is_abnormal(reason) is (name == "abnormal")


# --------------------------------------------------------------------------
# Group restarts and the siblings' restart types.


def test_policy_one_for_all_removes_temporary_siblings_and_restarts_transient_ones() -> None:
    """Restart types: a temporary child is never restarted, even when a sibling's death
    makes the supervisor stop it; a transient sibling stopped by the supervisor comes back."""
    specs = (
        ChildSpec(id="t", restart=Restart.TEMPORARY),
        ChildSpec(id="a"),
        ChildSpec(id="tr", restart=Restart.TRANSIENT),
        ChildSpec(id="z"),
    )
    state = running_sup(Strategy.ONE_FOR_ALL, specs)
    plan = state.child_exited("a", CRASH, now=0.0)
    assert steps(plan) == [
        ("stop", "z"), ("stop", "tr"), ("stop", "t"), ("remove", "t"),
        ("start", "a"), ("start", "tr"), ("start", "z"),
    ]
    confirm(state, plan)
    assert state.running() == ("a", "tr", "z")


def test_policy_rest_for_one_touches_only_later_children() -> None:
    """rest_for_one: the rest (started after the failed child) is stopped and restarted."""
    specs = (
        ChildSpec(id="t0", restart=Restart.TEMPORARY),
        ChildSpec(id="a"),
        ChildSpec(id="b"),
        ChildSpec(id="t1", restart=Restart.TEMPORARY),
        ChildSpec(id="c"),
    )
    state = running_sup(Strategy.REST_FOR_ONE, specs)
    plan = state.child_exited("b", CRASH, now=0.0)
    assert steps(plan) == [
        ("stop", "c"), ("stop", "t1"), ("remove", "t1"), ("start", "b"), ("start", "c"),
    ]
    confirm(state, plan)
    assert state.running() == ("t0", "a", "b", "c")


def test_policy_start_child_before_a_sibling_takes_its_place_in_the_order() -> None:
    """A child added ``before`` another runs, restarts and stops where it was put."""
    state = running_sup(Strategy.REST_FOR_ONE, children("b", "c"), intensity=5)
    confirm(state, state.start_child(ChildSpec(id="d"), before="c"))
    assert state.running() == ("b", "d", "c")
    plan = state.child_exited("d", CRASH, now=0.0)  # the rest after d: c
    assert steps(plan) == [("stop", "c"), ("start", "d"), ("start", "c")]
    confirm(state, plan)
    plan = state.child_exited("c", CRASH, now=0.0)
    assert steps(plan) == [("start", "c")]
    confirm(state, plan)
    confirm(state, state.start_child(ChildSpec(id="e"), before="nobody"))  # unknown: last
    assert [i.child_id for i in state.which_children()] == ["b", "d", "c", "e"]
    assert [s[1] for s in steps(state.shutdown())] == ["e", "c", "d", "b"]


def test_policy_rest_for_one_last_child_restarts_alone() -> None:
    state = running_sup(Strategy.REST_FOR_ONE)
    plan = state.child_exited("c", CRASH, now=0.0)
    assert steps(plan) == [("start", "c")]
    confirm(state, plan)


def test_policy_rest_for_one_first_child_restarts_everything() -> None:
    state = running_sup(Strategy.REST_FOR_ONE)
    assert steps(state.child_exited("a", CRASH, now=0.0)) == [
        ("stop", "c"), ("stop", "b"), ("start", "a"), ("start", "b"), ("start", "c"),
    ]


def test_policy_group_restart_also_starts_children_that_were_not_running() -> None:
    """OTP's one_for_all starts every child spec it holds, including one stopped by
    terminate_child or a transient one that ended normally."""
    specs = (ChildSpec(id="a"), ChildSpec(id="b", restart=Restart.TRANSIENT), ChildSpec(id="c"))
    state = running_sup(Strategy.ONE_FOR_ALL, specs, intensity=5)
    assert state.child_exited("b", NormalExit(), now=0.0) == []
    confirm(state, state.terminate_child("c"))
    assert state.running() == ("a",)
    plan = state.child_exited("a", CRASH, now=0.0)
    assert steps(plan) == [("start", "a"), ("start", "b"), ("start", "c")]


# --------------------------------------------------------------------------
# Restart intensity: a sliding window per supervisor.


@pytest.mark.parametrize("intensity", [0, 1, 2, 5])
@pytest.mark.parametrize("strategy", STATIC)
def test_policy_intensity_boundary(intensity: int, strategy: Strategy) -> None:
    """Tuning the intensity and period: exactly intensity restarts in period are allowed;
    one more terminates all children (reverse order) and the supervisor."""
    state = running_sup(strategy, intensity=intensity)
    for _ in range(intensity):
        plan = state.child_exited("b", CRASH, now=1.0)
        assert not any(isinstance(a, Escalate) for a in plan)
        confirm(state, plan)
    plan = state.child_exited("b", CRASH, now=1.0)
    assert steps(plan) == [("stop", "c"), ("stop", "a"), ("escalate", MAX_INTENSITY)]
    assert state.stopped
    last = plan[-1]
    assert isinstance(last, Escalate)
    assert last.child_id == "b"
    assert last.exit_reason == ShutdownExit(detail=MAX_INTENSITY)


def test_policy_intensity_defaults_are_otps() -> None:
    """Supervisor flags: intensity defaults to 1 and period to 5."""
    spec = SupervisorSpec()
    assert (spec.strategy, spec.intensity, spec.period, spec.backoff) == (
        Strategy.ONE_FOR_ONE, 1, 5.0, None,
    )


def test_policy_window_includes_its_oldest_edge() -> None:
    """A restart exactly ``period`` seconds old still counts (OTP keeps R >= Now - Period)."""
    state = running_sup()
    confirm(state, state.child_exited("a", CRASH, now=0.0))
    plan = state.child_exited("a", CRASH, now=5.0)
    assert steps(plan)[-1] == ("escalate", MAX_INTENSITY)


def test_policy_window_expires_just_after_period() -> None:
    state = running_sup()
    confirm(state, state.child_exited("a", CRASH, now=0.0))
    assert steps(state.child_exited("a", CRASH, now=5.001)) == [("start", "a")]


def test_policy_window_slides() -> None:
    """Only restarts within the last period count, not restarts since some reset."""
    state = running_sup(intensity=2, period=5.0)
    for now in (0.0, 3.0, 6.0):  # at 6.0 the window [1, 6] holds 3.0 and 6.0
        plan = state.child_exited("a", CRASH, now=now)
        assert steps(plan) == [("start", "a")]
        confirm(state, plan)
    assert state.restarts_in_window(6.0) == 2
    plan = state.child_exited("b", CRASH, now=7.0)  # [2, 7]: 3.0, 6.0, 7.0
    assert steps(plan)[-1] == ("escalate", MAX_INTENSITY)


def test_policy_window_is_per_supervisor_not_per_child() -> None:
    state = running_sup(intensity=1)
    confirm(state, state.child_exited("a", CRASH, now=0.0))
    assert steps(state.child_exited("c", CRASH, now=1.0))[-1] == ("escalate", MAX_INTENSITY)


def test_policy_exits_that_need_no_restart_do_not_count() -> None:
    specs = (ChildSpec(id="a"), ChildSpec(id="t", restart=Restart.TRANSIENT))
    state = running_sup(specs=specs, intensity=1)
    assert state.child_exited("t", NormalExit(), now=0.0) == []
    confirm(state, state.child_exited("a", CRASH, now=0.0))
    assert state.restarts_in_window(0.0) == 1


def test_policy_failed_restart_is_retried_and_counts() -> None:
    """A restart whose start fails is retried; each attempt is a restart for intensity."""
    state = running_sup(intensity=2)
    assert steps(state.child_exited("b", CRASH, now=0.0)) == [("start", "b")]
    assert status(state)["b"] is ChildStatus.STARTING
    assert steps(state.start_failed("b", "boom", now=0.0)) == [("start", "b")]
    plan = state.start_failed("b", "boom", now=0.0)
    assert steps(plan) == [("stop", "c"), ("stop", "a"), ("escalate", MAX_INTENSITY)]


def test_policy_failed_group_restart_retries_the_whole_group() -> None:
    """one_for_all: a start failing mid-plan abandons it; the retry stops what started."""
    state = running_sup(Strategy.ONE_FOR_ALL, intensity=5)
    state.child_exited("a", CRASH, now=0.0)
    state.child_started("a")
    plan = state.start_failed("b", "boom", now=0.0)
    assert status(state)["c"] is ChildStatus.STARTING
    assert steps(plan) == [("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")]
    confirm(state, plan)
    assert state.running() == ("a", "b", "c")


def test_policy_failed_rest_for_one_restart_retries_from_the_failed_child() -> None:
    specs = children("a", "b", "c", "d")
    state = running_sup(Strategy.REST_FOR_ONE, specs, intensity=5)
    state.child_exited("b", CRASH, now=0.0)
    state.child_started("b")
    plan = state.start_failed("c", "boom", now=0.0)
    assert steps(plan) == [("start", "c"), ("start", "d")]


# --------------------------------------------------------------------------
# Nested supervisors.


def test_policy_nested_escalation_restarts_a_permanent_child_supervisor() -> None:
    """Escalation ends the child supervisor with reason shutdown; its parent applies
    the child's restart type, and the parent's own intensity window counts it."""
    parent = running_sup(
        Strategy.ONE_FOR_ONE,
        (ChildSpec(id="db"), ChildSpec(id="sub", kind=ChildKind.SUPERVISOR)),
        intensity=1,
    )
    for now, parent_escalates in ((0.0, False), (1.0, True)):
        sub = running_sup(Strategy.ONE_FOR_ONE, children("x"), intensity=0)
        escalate = sub.child_exited("x", CRASH, now=now)[-1]
        assert isinstance(escalate, Escalate)
        plan = parent.child_exited("sub", escalate.exit_reason, now=now)
        if parent_escalates:
            assert steps(plan) == [("stop", "db"), ("escalate", MAX_INTENSITY)]
        else:
            assert steps(plan) == [("start", "sub")]
            confirm(parent, plan)


def test_policy_nested_escalation_of_a_transient_child_supervisor_is_not_restarted() -> None:
    """OTP: the escalating supervisor exits with ``shutdown``, a normal reason for transient."""
    parent = running_sup(
        specs=(ChildSpec(id="sub", kind=ChildKind.SUPERVISOR, restart=Restart.TRANSIENT),)
    )
    sub = running_sup(Strategy.ONE_FOR_ONE, children("x"), intensity=0)
    escalate = sub.child_exited("x", CRASH, now=0.0)[-1]
    assert isinstance(escalate, Escalate)
    assert parent.child_exited("sub", escalate.exit_reason, now=0.0) == []
    assert status(parent)["sub"] is ChildStatus.STOPPED


# --------------------------------------------------------------------------
# Requests: start_child, terminate_child, restart_child, delete_child.


def test_policy_start_child_appends_in_start_order() -> None:
    state = running_sup(specs=children("a", "b"))
    plan = state.start_child(ChildSpec(id="z"))
    assert steps(plan) == [("start", "z")]
    confirm(state, plan)
    assert [i.child_id for i in state.which_children()] == ["a", "b", "z"]
    assert steps(state.shutdown()) == [("stop", "z"), ("stop", "b"), ("stop", "a")]


def test_policy_start_child_refuses_a_known_id() -> None:
    """start_child: {error, already_present} / {error, {already_started, Child}}."""
    state = running_sup(specs=children("a", "b"))
    with pytest.raises(ChildAlreadyPresent) as running:
        state.start_child(ChildSpec(id="a"))
    assert running.value.running
    confirm(state, state.terminate_child("b"))
    with pytest.raises(ChildAlreadyPresent) as present:
        state.start_child(ChildSpec(id="b"))
    assert not present.value.running


def test_policy_start_child_failure_forgets_the_spec_without_counting() -> None:
    state = running_sup(specs=children("a"), intensity=0)
    state.start_child(ChildSpec(id="z"))
    assert state.start_failed("z", "boom", now=0.0) == []
    assert [i.child_id for i in state.which_children()] == ["a"]
    assert state.restarts_in_window(0.0) == 0


def test_policy_terminate_child_keeps_spec_then_restart_and_delete() -> None:
    """terminate_child keeps a non-temporary spec; restart_child / delete_child use it."""
    state = running_sup(specs=children("a", "b"), intensity=0)
    assert steps(state.terminate_child("a")) == [("stop", "a")]
    assert status(state)["a"] is ChildStatus.STOPPED
    assert state.terminate_child("a") == []
    plan = state.restart_child("a")
    assert steps(plan) == [("start", "a")]
    confirm(state, plan)
    assert state.restarts_in_window(0.0) == 0  # a manual restart is not a restart
    with pytest.raises(ChildRunning):
        state.restart_child("a")
    with pytest.raises(ChildRunning):
        state.delete_child("a")
    confirm(state, state.terminate_child("a"))
    assert steps(state.delete_child("a")) == [("remove", "a")]
    with pytest.raises(UnknownChild):
        state.restart_child("a")


def test_policy_restart_child_failure_leaves_it_stopped() -> None:
    state = running_sup(specs=children("a"), intensity=0)
    confirm(state, state.terminate_child("a"))
    state.restart_child("a")
    assert state.start_failed("a", "boom", now=0.0) == []
    assert status(state)["a"] is ChildStatus.STOPPED
    assert not state.stopped


def test_policy_terminate_temporary_child_removes_it() -> None:
    """terminate_child: a temporary child's spec is deleted when it terminates."""
    state = running_sup(specs=children("a", "t", restart=Restart.TEMPORARY))
    assert steps(state.terminate_child("t")) == [("stop", "t"), ("remove", "t")]
    assert [i.child_id for i in state.which_children()] == ["a"]


def test_policy_unknown_children_are_refused() -> None:
    state = running_sup()
    for call in (state.terminate_child, state.restart_child, state.delete_child):
        with pytest.raises(UnknownChild):
            call("nope")
    with pytest.raises(UnknownChild):
        state.child_exited("nope", CRASH, now=0.0)


def test_policy_driver_contract_violations_are_refused() -> None:
    state = running_sup(specs=children("a", "b"))
    confirm(state, state.terminate_child("a"))
    with pytest.raises(SupervisorRequestError):
        state.child_exited("a", CRASH, now=0.0)  # not running
    with pytest.raises(SupervisorRequestError):
        state.child_started("b")  # not being started
    state.restart_child("a")
    with pytest.raises(SupervisorRequestError):
        state.child_exited("b", CRASH, now=0.0)  # a start is unconfirmed
    with pytest.raises(SupervisorRequestError):
        state.terminate_child("a")
    fresh = SupervisorState(SupervisorSpec())
    with pytest.raises(SupervisorRequestError):
        fresh.shutdown()
    fresh.start()
    with pytest.raises(SupervisorRequestError):
        fresh.start()


def test_policy_stopped_supervisor_refuses_everything() -> None:
    state = running_sup()
    state.shutdown()
    with pytest.raises(SupervisorStopped):
        state.start_child(ChildSpec(id="z"))
    with pytest.raises(SupervisorStopped):
        state.shutdown()


# --------------------------------------------------------------------------
# simple_one_for_one.


def test_policy_simple_one_for_one_dynamic_children() -> None:
    """simple_one_for_one: no child at start; start_child appends args to the template's."""
    template = ChildSpec(id="conn", args=("base",), restart=Restart.TRANSIENT)
    spec = SupervisorSpec(strategy=Strategy.SIMPLE_ONE_FOR_ONE, children=(template,))
    state = SupervisorState(spec)
    assert state.start() == []
    plan = state.start_child(("x",))
    assert isinstance(plan[0], StartChild)
    assert plan[0].spec == ChildSpec(id="conn-1", args=("base", "x"), restart=Restart.TRANSIENT)
    confirm(state, plan)
    confirm(state, state.start_child(("y",)))
    assert state.child_spec("conn-2").args == ("base", "y")
    assert steps(state.terminate_child("conn-1")) == [("stop", "conn-1"), ("remove", "conn-1")]
    confirm(state, state.start_child(()))
    assert state.running() == ("conn-2", "conn-3")  # ids are never reused
    with pytest.raises(NotSupported):
        state.restart_child("conn-2")
    with pytest.raises(NotSupported):
        state.delete_child("conn-2")
    with pytest.raises(NotSupported):
        state.start_child(ChildSpec(id="other"))
    assert steps(state.shutdown()) == [("stop", "conn-3"), ("stop", "conn-2")]


def test_policy_simple_one_for_one_failed_dynamic_start_is_forgotten() -> None:
    state = running_sup(Strategy.SIMPLE_ONE_FOR_ONE, (ChildSpec(id="w"),))
    state.start_child(())
    assert state.start_failed("w-1", "boom", now=0.0) == []
    assert state.which_children() == ()


def test_policy_static_start_child_refuses_args() -> None:
    state = running_sup()
    with pytest.raises(NotSupported):
        state.start_child(("x",))


# --------------------------------------------------------------------------
# Backoff (beyond OTP).


def test_policy_backoff_is_off_by_default() -> None:
    state = running_sup(intensity=3)
    plan = state.child_exited("a", CRASH, now=0.0)
    assert isinstance(plan[0], StartChild)
    assert plan[0].delay == 0.0


def test_policy_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=1.5)
    state = running_sup(Strategy.ONE_FOR_ALL, intensity=10, backoff=backoff)
    delays = []
    for now in (0.0, 0.1, 0.2, 0.3):
        plan = state.child_exited("b", CRASH, now=now)
        starts = [a for a in plan if isinstance(a, StartChild)]
        delays.append([a.delay for a in starts])
        confirm(state, plan)
    # Only the first start of each restart plan waits.
    assert delays == [[0.5, 0, 0], [1.0, 0, 0], [1.5, 0, 0], [1.5, 0, 0]]


def test_policy_backoff_resets_with_the_window() -> None:
    state = running_sup(intensity=10, period=5.0, backoff=Backoff(initial=1.0, maximum=60.0))
    for now in (0.0, 1.0):
        confirm(state, state.child_exited("a", CRASH, now=now))
    plan = state.child_exited("a", CRASH, now=100.0)
    assert isinstance(plan[0], StartChild)
    assert plan[0].delay == 1.0


def test_policy_backoff_huge_exponent_stays_finite() -> None:
    assert Backoff(initial=1.0, factor=10.0, maximum=7.0).delay(10_000) == 7.0


@pytest.mark.parametrize("factor", [1e5, 1e200, 1.7e308])
def test_policy_backoff_huge_factor_is_the_maximum_not_an_overflow(factor: float) -> None:
    backoff = Backoff(initial=0.01, factor=factor, maximum=1.0)
    assert [backoff.delay(n) for n in (1, 3, 66, 10_000)] == [0.01, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------
# Spec validation.


@pytest.mark.parametrize(
    "make",
    [
        lambda: SupervisorSpec(intensity=-1),
        lambda: SupervisorSpec(intensity=True),
        lambda: SupervisorSpec(period=0),
        lambda: SupervisorSpec(children=children("a", "a")),
        lambda: SupervisorSpec(strategy=Strategy.SIMPLE_ONE_FOR_ONE),
        lambda: SupervisorSpec(strategy=Strategy.SIMPLE_ONE_FOR_ONE, children=children("a", "b")),
        lambda: ChildSpec(id=""),
        lambda: Shutdown.timeout(-1),
        lambda: Shutdown(kind="timeout"),
        lambda: Shutdown(kind="infinity", seconds=3.0),
        lambda: Shutdown(kind="later"),  # type: ignore[arg-type]
        lambda: Backoff(initial=1.0, factor=0.5),
        lambda: Backoff(initial=5.0, maximum=1.0),
    ],
)
def test_policy_invalid_specs_are_config_errors(make: object) -> None:
    assert callable(make)
    with pytest.raises(InvalidSupervisorSpec):
        make()


# --------------------------------------------------------------------------
# A state-machine test: a fake driver executes every plan against a model.

_RESTARTS = st.sampled_from(list(Restart))
_REASONS = st.sampled_from(list(REASONS.values()))


def _wanted(restart: Restart, reason: ExitReason) -> bool:
    return restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and is_abnormal(reason))


class SupervisionMachine(RuleBasedStateMachine):
    """Invariants: at most one instance per child id; the live set is what the state
    calls running; starts within a plan go in start order and stops in reverse order;
    the supervisor escalates for intensity exactly when an independent count of
    restarts in ``[now - period, now]`` exceeds ``intensity``."""

    state: SupervisorState
    live: set[str]
    order: list[str]
    restart_times: list[float]
    now: float
    escalated: str | None
    fresh: int

    @initialize(
        strategy=st.sampled_from(list(Strategy)),
        intensity=st.integers(0, 6),
        period=st.sampled_from([1.0, 5.0]),
        restarts=st.lists(_RESTARTS, min_size=1, max_size=5),
        data=st.data(),
    )
    def setup(
        self,
        strategy: Strategy,
        intensity: int,
        period: float,
        restarts: list[Restart],
        data: st.DataObject,
    ) -> None:
        if strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            restarts = restarts[:1]
        specs = tuple(ChildSpec(id=f"c{i}", restart=r) for i, r in enumerate(restarts))
        self.state = SupervisorState(
            SupervisorSpec(strategy=strategy, intensity=intensity, period=period, children=specs)
        )
        self.live = set()
        self.order = [] if strategy is Strategy.SIMPLE_ONE_FOR_ONE else [s.id for s in specs]
        self.restart_times = []
        self.now = 0.0
        self.escalated = None
        self.fresh = 0
        self.execute(self.state.start(), data, restart_plan=False)

    # -------------------------------------------------------------- the driver

    def position(self, child_id: str) -> int:
        return self.order.index(child_id)

    def expect_intensity_escalation(self) -> bool:
        self.restart_times.append(self.now)
        low = self.now - self.state.spec.period
        return sum(1 for t in self.restart_times if t >= low) > self.state.spec.intensity

    def execute(self, plan: list[Action], data: st.DataObject, *, restart_plan: bool) -> None:
        while plan:
            starts = [self.position(a.child_id) for a in plan if isinstance(a, StartChild)]
            stops = [self.position(a.child_id) for a in plan if isinstance(a, StopChild)]
            assert starts == sorted(starts)
            assert stops == sorted(stops, reverse=True)
            replacement: list[Action] = []
            for action in plan:
                if isinstance(action, StartChild):
                    assert action.child_id not in self.live, "two instances of one child"
                    if data.draw(st.integers(0, 5), label=f"start {action.child_id} fails") == 5:
                        if restart_plan:
                            escalate = self.expect_intensity_escalation()
                        replacement = self.state.start_failed(action.child_id, "boom", self.now)
                        known = {i.child_id for i in self.state.which_children()}
                        if action.child_id not in known:  # a failed start_child forgets it
                            assert not restart_plan
                            self.order.remove(action.child_id)
                        if restart_plan:
                            assert any(isinstance(a, Escalate) for a in replacement) is escalate
                        break
                    self.live.add(action.child_id)
                    self.state.child_started(action.child_id)
                elif isinstance(action, StopChild):
                    self.live.remove(action.child_id)
                elif isinstance(action, RemoveChild):
                    assert action.child_id not in self.live
                    self.order.remove(action.child_id)
                else:
                    assert self.live == set(), "escalated with children alive"
                    self.escalated = action.reason
            plan = replacement

    # -------------------------------------------------------------- rules

    @precondition(lambda self: not self.state.stopped and bool(self.live))
    @rule(data=st.data(), reason=_REASONS, dt=st.sampled_from([0.0, 0.5, 1.0, 5.0, 6.0]))
    def crash(self, data: st.DataObject, reason: ExitReason, dt: float) -> None:
        self.now += dt
        child_id = data.draw(st.sampled_from(sorted(self.live)), label="exits")
        restart = self.state.child_spec(child_id).restart
        self.live.remove(child_id)
        wanted = _wanted(restart, reason)
        escalate = wanted and self.expect_intensity_escalation()
        plan = self.state.child_exited(child_id, reason, self.now)
        assert any(isinstance(a, Escalate) for a in plan) is escalate
        if not wanted:
            assert all(isinstance(a, RemoveChild) for a in plan)
        self.execute(plan, data, restart_plan=wanted)

    @precondition(lambda self: not self.state.stopped and bool(self.order))
    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.order), label="terminate")
        self.execute(self.state.terminate_child(child_id), data, restart_plan=False)
        assert child_id not in self.live

    @precondition(
        lambda self: not self.state.stopped
        and self.state.spec.strategy is not Strategy.SIMPLE_ONE_FOR_ONE
        and any(c not in self.live for c in self.order)
    )
    @rule(data=st.data(), delete=st.booleans())
    def restart_or_delete(self, data: st.DataObject, delete: bool) -> None:
        child_id = data.draw(
            st.sampled_from([c for c in self.order if c not in self.live]), label="stopped"
        )
        request = self.state.delete_child if delete else self.state.restart_child
        plan = request(child_id)
        self.execute(plan, data, restart_plan=False)

    @precondition(lambda self: not self.state.stopped)
    @rule(data=st.data(), restart=_RESTARTS)
    def add(self, data: st.DataObject, restart: Restart) -> None:
        if self.state.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            plan = self.state.start_child(())
        else:
            self.fresh += 1
            plan = self.state.start_child(ChildSpec(id=f"n{self.fresh}", restart=restart))
        new = plan[0]
        assert isinstance(new, StartChild)
        self.order.append(new.child_id)
        self.execute(plan, data, restart_plan=False)

    @precondition(lambda self: not self.state.stopped)
    @rule(data=st.data())
    def shutdown(self, data: st.DataObject) -> None:
        self.execute(self.state.shutdown(), data, restart_plan=False)
        assert self.live == set()

    @rule(dt=st.sampled_from([0.5, 5.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    # -------------------------------------------------------------- invariants

    @invariant()
    def live_matches_running(self) -> None:
        assert set(self.state.running()) == self.live
        assert all(i.status is not ChildStatus.STARTING for i in self.state.which_children())

    @invariant()
    def start_order_is_preserved(self) -> None:
        assert [i.child_id for i in self.state.which_children()] == self.order

    @invariant()
    def stopped_means_nothing_alive(self) -> None:
        if self.state.stopped:
            assert self.live == set()
        if self.escalated is not None:
            assert self.state.stopped


SupervisionMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, derandomize=True
)
test_policy_state_machine = SupervisionMachine.TestCase
