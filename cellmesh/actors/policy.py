"""Restart policy: OTP supervisor decisions as a pure, synchronous state machine.

Theory of operation
-------------------
A :class:`SupervisorState` holds what an OTP supervisor holds -- the child
specifications in start order, which children run, and the times of recent
restarts -- and decides; it never acts. Every entry point returns a *plan*:
a list of :data:`Action` values that the driver
(:mod:`cellmesh.actors.supervisor`) executes **in order**:

* :class:`StartChild` -- start ``spec`` (after ``delay`` seconds, when restart
  backoff is on). The driver MUST report the outcome before it feeds the
  state anything else: :meth:`SupervisorState.child_started` on success,
  :meth:`SupervisorState.start_failed` on failure. On failure the driver
  abandons the rest of the current plan and executes the plan
  ``start_failed`` returns instead.
* :class:`StopChild` -- stop the child with its ``shutdown`` and wait until it
  has exited. Its exit is the supervisor's own doing and is NOT reported back.
* :class:`RemoveChild` -- the child is forgotten (temporary, dynamic, or
  deleted); the driver drops its bookkeeping.
* :class:`Escalate` -- the supervisor gives up. All its children were stopped
  by the plan's preceding :class:`StopChild` actions; the driver ends the
  supervisor, and its parent sees the exit :attr:`Escalate.exit_reason`.

The state assumes the optimistic outcome of a plan at once (a started child
is ``STARTING`` until confirmed, a stopped one is ``STOPPED`` immediately), so
the driver can execute without consulting it again.

Time is a float of monotonic seconds passed in by the caller (``now``); the
module reads no clock and imports no I/O.

Semantics (Erlang/OTP ``supervisor`` manual, "Supervision Principles",
"Restart Strategies", "Child specification"; OTP Design Principles,
"Supervisor Behaviour"):

* children start in list order and stop in reverse order;
* ``one_for_one``: only the failed child is restarted; ``one_for_all``: the
  other running children are stopped in reverse start order, then every child
  is started in order; ``rest_for_one``: the running children started after
  the failed one are stopped in reverse order, then the failed child and those
  after it are started in order; ``simple_one_for_one``: ``one_for_one`` over
  dynamically added instances of one template;
* ``permanent`` children are always restarted, ``transient`` ones only after
  an abnormal exit (``normal`` and ``shutdown`` exits are normal), and
  ``temporary`` ones never: they are removed when they exit and when a group
  restart stops them;
* each restart is recorded at ``now``; when more than ``intensity`` restarts
  lie in the window ``[now - period, now]`` the supervisor stops all children
  in reverse start order and escalates with reason ``shutdown`` (OTP: "the
  termination reason for the supervisor itself in that case will be
  shutdown"). A restart whose start fails is retried at once and the retry is
  one more restart, so a child that cannot start exhausts the intensity;
* a child that fails to start while the supervisor starts stops the children
  already started (reverse order) and the supervisor fails to start;
* restart backoff (not OTP, off by default): the first start of a restart
  plan carries ``delay = min(maximum, initial * factor ** (n - 1))`` where
  ``n`` counts the restarts in the window including this one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import attrs

from .errors import (
    ChildAlreadyPresent,
    ChildRunning,
    InvalidSupervisorSpec,
    NotSupported,
    SupervisorRequestError,
    SupervisorStopped,
    UnknownChild,
)

#: OTP's default shutdown timeout for workers is 5000 ms.
DEFAULT_WORKER_SHUTDOWN_SECONDS: Final = 5.0

#: The :class:`Escalate` reason when the restart intensity is exceeded.
MAX_INTENSITY: Final = "reached_max_restart_intensity"

#: The :class:`Escalate` reason when a child fails to start at supervisor start.
FAILED_TO_START: Final = "failed_to_start_child"


class Strategy(enum.Enum):
    """How the failure of one child affects its siblings."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class Restart(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildKind(enum.Enum):
    """A worker, or a supervisor (whose default shutdown is ``infinity``)."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


class ChildStatus(enum.Enum):
    """Where a child is: started and confirmed, being started, or not running."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"


@attrs.frozen(kw_only=True)
class Shutdown:
    """How a child is stopped: ``brutal_kill``, ``timeout`` (``seconds``), or ``infinity``.

    ``timeout``: ask it to stop (SIGTERM), wait up to ``seconds``, then kill it
    (SIGKILL). ``infinity``: ask and wait as long as it takes (meant for
    sub-supervisors). Build with :meth:`brutal_kill`, :meth:`timeout`,
    :meth:`infinity`.
    """

    kind: Literal["brutal_kill", "timeout", "infinity"]
    seconds: float | None = None

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        if kind == "timeout":
            if self.seconds is None or not self.seconds >= 0.0:
                raise InvalidSupervisorSpec(
                    "shutdown", f"timeout needs seconds >= 0, got {self.seconds!r}"
                )
        elif kind in ("brutal_kill", "infinity"):
            if self.seconds is not None:
                raise InvalidSupervisorSpec("shutdown", f"{kind} takes no seconds")
        else:
            raise InvalidSupervisorSpec("shutdown", f"unknown kind {kind!r}")

    @classmethod
    def brutal_kill(cls) -> Shutdown:
        """Kill at once (SIGKILL)."""
        return cls(kind="brutal_kill")

    @classmethod
    def timeout(cls, seconds: float) -> Shutdown:
        """Ask to stop, wait up to ``seconds``, then kill."""
        return cls(kind="timeout", seconds=float(seconds))

    @classmethod
    def infinity(cls) -> Shutdown:
        """Ask to stop and wait without limit."""
        return cls(kind="infinity")


@attrs.frozen(kw_only=True)
class ChildSpec:
    """One child: its id, restart type, shutdown, kind, and start arguments.

    ``shutdown=None`` means OTP's default: ``timeout(5)`` for a worker,
    ``infinity`` for a supervisor (see :attr:`effective_shutdown`). ``args``
    are opaque to the policy; the driver's factory interprets them. For a
    ``simple_one_for_one`` template, the args given to ``start_child`` are
    appended to the template's.
    """

    id: str
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown | None = None
    kind: ChildKind = ChildKind.WORKER
    args: tuple[object, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidSupervisorSpec("child id", f"must be a non-empty string, got {self.id!r}")

    @property
    def effective_shutdown(self) -> Shutdown:
        """The shutdown to apply, with OTP's per-kind default filled in."""
        if self.shutdown is not None:
            return self.shutdown
        if self.kind is ChildKind.SUPERVISOR:
            return Shutdown.infinity()
        return Shutdown.timeout(DEFAULT_WORKER_SHUTDOWN_SECONDS)


@attrs.frozen(kw_only=True)
class Backoff:
    """Restart delay (beyond OTP): ``initial * factor ** (n - 1)`` capped at ``maximum``."""

    initial: float
    factor: float = 2.0
    maximum: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not (self.initial >= 0.0 and self.factor >= 1.0 and self.maximum >= self.initial):
            raise InvalidSupervisorSpec(
                "backoff", "needs initial >= 0, factor >= 1 and maximum >= initial"
            )

    def delay(self, restarts_in_window: int) -> float:
        """The delay before the ``restarts_in_window``-th restart of the current window."""
        exponent = max(0, restarts_in_window - 1)
        try:
            delay = self.initial * self.factor ** min(exponent, 64)
        except OverflowError:  # a large factor: the delay is past any maximum
            return self.maximum
        return min(self.maximum, delay)


@attrs.frozen(kw_only=True)
class SupervisorSpec:
    """A supervisor: strategy, restart intensity window, children, optional backoff.

    Defaults are OTP's: ``one_for_one``, at most 1 restart in 5 seconds.
    ``simple_one_for_one`` takes exactly one child spec, the template of its
    dynamic children. Child ids must be unique.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    children: tuple[ChildSpec, ...] = ()
    backoff: Backoff | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int):
            raise InvalidSupervisorSpec("intensity", f"must be an int, got {self.intensity!r}")
        if self.intensity < 0:
            raise InvalidSupervisorSpec("intensity", f"must be >= 0, got {self.intensity}")
        if not self.period > 0:
            raise InvalidSupervisorSpec("period", f"must be > 0, got {self.period!r}")
        ids = [child.id for child in self.children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InvalidSupervisorSpec("children", f"duplicate child ids {duplicates}")
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(self.children) != 1:
            raise InvalidSupervisorSpec(
                "children", "simple_one_for_one takes exactly one child spec (the template)"
            )


# --------------------------------------------------------------------------
# Exit reasons.


@attrs.frozen(kw_only=True)
class NormalExit:
    """The child finished its work (exit code 0; OTP ``normal``)."""


@attrs.frozen(kw_only=True)
class ShutdownExit:
    """The child was told to stop, or a sub-supervisor gave up (OTP ``shutdown``).

    Counts as a normal exit for ``transient`` children.
    """

    detail: str = ""


@attrs.frozen(kw_only=True)
class AbnormalExit:
    """The child crashed: ``text`` says how (exit code, signal, exception)."""

    text: str


ExitReason: TypeAlias = NormalExit | ShutdownExit | AbnormalExit


def is_abnormal(reason: ExitReason) -> bool:
    """True unless ``reason`` is ``normal`` or ``shutdown`` (OTP's rule for transient)."""
    return isinstance(reason, AbnormalExit)


# --------------------------------------------------------------------------
# Actions.


@attrs.frozen(kw_only=True)
class StartChild:
    """Start ``spec`` after ``delay`` seconds; then report the outcome to the state."""

    spec: ChildSpec
    delay: float = 0.0

    @property
    def child_id(self) -> str:
        """The id of the child to start."""
        return self.spec.id


@attrs.frozen(kw_only=True)
class StopChild:
    """Stop the running child ``child_id`` with ``shutdown`` and wait for its exit."""

    child_id: str
    shutdown: Shutdown


@attrs.frozen(kw_only=True)
class RemoveChild:
    """Forget ``child_id``: it will not be started again."""

    child_id: str


@attrs.frozen(kw_only=True)
class Escalate:
    """Give up: the supervisor ends; every child was stopped by the preceding actions.

    ``reason`` is :data:`MAX_INTENSITY` or :data:`FAILED_TO_START`;
    ``child_id`` names the child involved; ``detail`` the start error, if any.
    """

    reason: str
    child_id: str
    detail: str = ""

    @property
    def exit_reason(self) -> ShutdownExit:
        """How the supervisor's parent sees this supervisor exit (OTP: ``shutdown``)."""
        return ShutdownExit(detail=self.reason)


Action: TypeAlias = StartChild | StopChild | RemoveChild | Escalate


@attrs.frozen(kw_only=True)
class ChildInfo:
    """One row of :meth:`SupervisorState.which_children`."""

    child_id: str
    status: ChildStatus
    kind: ChildKind
    restart: Restart


# --------------------------------------------------------------------------
# The state machine.

_StartCause = Literal["init", "add", "manual", "restart"]


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    status: ChildStatus = ChildStatus.STOPPED
    cause: _StartCause | None = None


@attrs.define(eq=False)
class SupervisorState:
    """The decisions of one OTP supervisor over its children (see the module docstring).

    Lifecycle: ``start()`` once, then any of the event and request methods,
    until ``shutdown()`` or an :class:`Escalate` ends it; after that every
    method raises :class:`~cellmesh.actors.errors.SupervisorStopped`.
    Invariants: a child id names at most one child; ``which_children()`` lists
    children in start order; the state never holds more restart times than
    ``intensity + 1``.
    """

    spec: SupervisorSpec
    _order: list[str] = attrs.field(init=False, factory=list)
    _children: dict[str, _Child] = attrs.field(init=False, factory=dict)
    _restarts: list[float] = attrs.field(init=False, factory=list)
    _phase: Literal["new", "starting", "running", "stopped"] = attrs.field(
        init=False, default="new"
    )
    _next_dynamic: int = attrs.field(init=False, default=1)

    # ------------------------------------------------------------ queries

    @property
    def stopped(self) -> bool:
        """True once ``shutdown()`` ran or the supervisor escalated."""
        return self._phase == "stopped"

    @property
    def started(self) -> bool:
        """True from the confirmation of every child of ``start()`` until the end."""
        return self._phase == "running"

    def which_children(self) -> tuple[ChildInfo, ...]:
        """Every known child in start order (OTP ``which_children``)."""
        return tuple(
            ChildInfo(
                child_id=cid,
                status=self._children[cid].status,
                kind=self._children[cid].spec.kind,
                restart=self._children[cid].spec.restart,
            )
            for cid in self._order
        )

    def running(self) -> tuple[str, ...]:
        """Ids of confirmed running children, in start order."""
        return tuple(c for c in self._order if self._children[c].status is ChildStatus.RUNNING)

    def child_spec(self, child_id: str) -> ChildSpec:
        """The spec of a known child (for dynamic children: the template with its args)."""
        return self._get(child_id).spec

    def restarts_in_window(self, now: float) -> int:
        """How many recorded restarts lie in ``[now - period, now]``."""
        low = now - self.spec.period
        return sum(1 for t in self._restarts if t >= low)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> list[Action]:
        """Plan the start of every static child, in order (nothing for simple_one_for_one)."""
        if self._phase != "new":
            raise SupervisorRequestError("", "start() was already called")
        if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            self._phase = "running"
            return []
        plan: list[Action] = []
        for child in self.spec.children:
            self._order.append(child.id)
            self._children[child.id] = _Child(
                spec=child, status=ChildStatus.STARTING, cause="init"
            )
            plan.append(StartChild(spec=child))
        self._phase = "starting" if plan else "running"
        return plan

    def shutdown(self) -> list[Action]:
        """Plan the supervisor's own termination: stop every running child, reverse order."""
        self._check_live()
        plan = self._stop_all_reverse()
        self._phase = "stopped"
        return plan

    # ------------------------------------------------------------ driver feedback

    def child_started(self, child_id: str) -> None:
        """The driver started ``child_id`` as planned: it is now running."""
        self._check_live()
        child = self._get(child_id)
        if child.status is not ChildStatus.STARTING:
            raise SupervisorRequestError(child_id, "was not being started")
        child.status = ChildStatus.RUNNING
        child.cause = None
        if self._phase == "starting" and not self._any_starting():
            self._phase = "running"

    def start_failed(self, child_id: str, reason: str, now: float) -> list[Action]:
        """The driver could not start ``child_id``: the plan to execute instead.

        Every other child still ``STARTING`` in the abandoned plan becomes
        ``STOPPED``. Then, by what the start was for: at supervisor start, the
        started children are stopped (reverse order) and the supervisor
        escalates with :data:`FAILED_TO_START`; for ``start_child`` the child is
        forgotten and for ``restart_child`` it stays stopped (the driver tells
        the caller; the plan is empty); for a restart, the restart is retried
        per the strategy and counts toward the intensity.
        """
        self._check_live()
        child = self._get(child_id)
        if child.status is not ChildStatus.STARTING:
            raise SupervisorRequestError(child_id, "was not being started")
        cause = child.cause
        for other in self._children.values():
            if other.status is ChildStatus.STARTING:
                other.status = ChildStatus.STOPPED
                other.cause = None
        if cause == "init":
            plan = self._stop_all_reverse()
            self._phase = "stopped"
            plan.append(Escalate(reason=FAILED_TO_START, child_id=child_id, detail=reason))
            return plan
        if cause == "add":
            self._forget(child_id)
            return []
        if cause == "manual":
            return []
        return self._restart(child_id, now)

    def child_exited(self, child_id: str, reason: ExitReason, now: float) -> list[Action]:
        """A running child exited on its own: the plan that OTP's rules call for.

        Not for exits the supervisor caused with :class:`StopChild`. The driver
        reports exits only between plans (never while a start is unconfirmed).
        """
        self._check_live()
        child = self._get(child_id)
        if child.status is not ChildStatus.RUNNING:
            raise SupervisorRequestError(child_id, "is not running")
        if self._any_starting():
            raise SupervisorRequestError(child_id, "exit reported while a start is unconfirmed")
        child.status = ChildStatus.STOPPED
        restart = child.spec.restart
        wanted = restart is Restart.PERMANENT or (
            restart is Restart.TRANSIENT and is_abnormal(reason)
        )
        if not wanted:
            if restart is Restart.TEMPORARY or self._simple:
                self._forget(child_id)
                return [RemoveChild(child_id=child_id)]
            return []
        return self._restart(child_id, now)

    # ------------------------------------------------------------ requests

    def start_child(self, spec_or_args: ChildSpec | tuple[object, ...], *,
                    before: str | None = None) -> list[Action]:
        """Add a child and plan its start (OTP ``start_child``).

        For ``simple_one_for_one`` pass a tuple of extra args: a new child is
        made from the template with id ``<template id>-<n>`` (``n`` counts up
        from 1, never reused) and ``args = template.args + extra``. Otherwise
        pass a :class:`ChildSpec`; it goes last in start order, or just before
        child ``before`` when that one is known (a manifest reload adding a
        cell between two others: the order is what ``rest_for_one`` and
        shutdown follow). The single
        :class:`StartChild` of the plan names the new id. If the start fails
        the child is forgotten (report it with :meth:`start_failed`).
        """
        self._check_live()
        if self._simple:
            if not isinstance(spec_or_args, tuple):
                raise NotSupported("", "simple_one_for_one start_child takes a tuple of args")
            template = self.spec.children[0]
            child_id = f"{template.id}-{self._next_dynamic}"
            self._next_dynamic += 1
            spec = attrs.evolve(template, id=child_id, args=template.args + spec_or_args)
        else:
            if not isinstance(spec_or_args, ChildSpec):
                raise NotSupported("", f"{self.spec.strategy.value} start_child takes a ChildSpec")
            spec = spec_or_args
            existing = self._children.get(spec.id)
            if existing is not None:
                raise ChildAlreadyPresent(
                    spec.id, running=existing.status is not ChildStatus.STOPPED
                )
        if before is not None and before in self._children and not self._simple:
            self._order.insert(self._order.index(before), spec.id)
        else:
            self._order.append(spec.id)
        self._children[spec.id] = _Child(spec=spec, status=ChildStatus.STARTING, cause="add")
        return [StartChild(spec=spec)]

    def terminate_child(self, child_id: str) -> list[Action]:
        """Stop a child on request (OTP ``terminate_child``); it is not restarted.

        A temporary child, or a dynamic one, is also forgotten; another keeps
        its spec (``STOPPED``) for :meth:`restart_child` or :meth:`delete_child`.
        Terminating a stopped child plans nothing.
        """
        self._check_live()
        child = self._get(child_id)
        if child.status is ChildStatus.STARTING:
            raise SupervisorRequestError(child_id, "is being started")
        plan: list[Action] = []
        if child.status is ChildStatus.RUNNING:
            plan.append(StopChild(child_id=child_id, shutdown=child.spec.effective_shutdown))
            child.status = ChildStatus.STOPPED
        if child.spec.restart is Restart.TEMPORARY or self._simple:
            self._forget(child_id)
            plan.append(RemoveChild(child_id=child_id))
        return plan

    def restart_child(self, child_id: str) -> list[Action]:
        """Start a stopped child again (OTP ``restart_child``); not a restart for intensity."""
        self._check_live()
        if self._simple:
            raise NotSupported(child_id, "restart_child does not apply to simple_one_for_one")
        child = self._get(child_id)
        if child.status is not ChildStatus.STOPPED:
            raise ChildRunning(child_id)
        child.status = ChildStatus.STARTING
        child.cause = "manual"
        return [StartChild(spec=child.spec)]

    def retune(
        self, *, intensity: int, period: float, backoff: Backoff | None
    ) -> None:
        """Change the restart intensity window and backoff (a manifest reload).

        Restarts already recorded stay; the new window applies to the next
        exit. Raises :class:`InvalidSupervisorSpec` for bad values.
        """
        self._check_live()
        self.spec = attrs.evolve(self.spec, intensity=intensity, period=period, backoff=backoff)
        self._restarts = self._restarts[-(intensity + 1):] if intensity >= 0 else []

    def update_child(
        self, child_id: str, *, restart: Restart, shutdown: Shutdown | None
    ) -> None:
        """Change a known child's restart type and shutdown (a manifest reload).

        Applies from its next exit or stop; a running child is not touched.
        """
        self._check_live()
        child = self._get(child_id)
        child.spec = attrs.evolve(child.spec, restart=restart, shutdown=shutdown)

    def delete_child(self, child_id: str) -> list[Action]:
        """Forget a stopped child's spec (OTP ``delete_child``)."""
        self._check_live()
        if self._simple:
            raise NotSupported(child_id, "delete_child does not apply to simple_one_for_one")
        child = self._get(child_id)
        if child.status is not ChildStatus.STOPPED:
            raise ChildRunning(child_id)
        self._forget(child_id)
        return [RemoveChild(child_id=child_id)]

    # ------------------------------------------------------------ internals

    @property
    def _simple(self) -> bool:
        return self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE

    def _check_live(self) -> None:
        if self._phase == "new":
            raise SupervisorRequestError("", "start() has not been called")
        if self._phase == "stopped":
            raise SupervisorStopped()

    def _get(self, child_id: str) -> _Child:
        child = self._children.get(child_id)
        if child is None:
            raise UnknownChild(child_id)
        return child

    def _any_starting(self) -> bool:
        return any(c.status is ChildStatus.STARTING for c in self._children.values())

    def _forget(self, child_id: str) -> None:
        del self._children[child_id]
        self._order.remove(child_id)

    def _stop_all_reverse(self) -> list[Action]:
        plan: list[Action] = []
        for cid in reversed(self._order):
            child = self._children[cid]
            if child.status is ChildStatus.RUNNING:
                plan.append(StopChild(child_id=cid, shutdown=child.spec.effective_shutdown))
            child.status = ChildStatus.STOPPED
            child.cause = None
        return plan

    def _record_restart(self, now: float) -> bool:
        """Record a restart at ``now``; False when the intensity is exceeded."""
        low = now - self.spec.period
        self._restarts = [t for t in self._restarts if t >= low]
        self._restarts.append(now)
        return len(self._restarts) <= self.spec.intensity

    def _restart(self, child_id: str, now: float) -> list[Action]:
        """Plan the restart of the stopped child ``child_id`` per the strategy."""
        if not self._record_restart(now):
            plan = self._stop_all_reverse()
            self._phase = "stopped"
            plan.append(Escalate(reason=MAX_INTENSITY, child_id=child_id))
            return plan
        delay = 0.0
        if self.spec.backoff is not None:
            delay = self.spec.backoff.delay(len(self._restarts))
        strategy = self.spec.strategy
        if strategy is Strategy.ONE_FOR_ALL:
            group = list(self._order)
        elif strategy is Strategy.REST_FOR_ONE:
            group = self._order[self._order.index(child_id) :]
        else:
            group = [child_id]
        plan = self._stop_group(group)
        starts: list[Action] = []
        for cid in self._order:
            if cid in group:
                child = self._children[cid]
                child.status = ChildStatus.STARTING
                child.cause = "restart"
                starts.append(StartChild(spec=child.spec, delay=delay if not starts else 0.0))
        return plan + starts

    def _stop_group(self, group: Sequence[str]) -> list[Action]:
        """Stop the running members of ``group`` in reverse order; forget the temporary ones."""
        plan: list[Action] = []
        for cid in reversed(list(group)):
            child = self._children[cid]
            if child.status is ChildStatus.RUNNING:
                plan.append(StopChild(child_id=cid, shutdown=child.spec.effective_shutdown))
                child.status = ChildStatus.STOPPED
            if child.spec.restart is Restart.TEMPORARY:
                self._forget(cid)
                plan.append(RemoveChild(child_id=cid))
        return plan


__all__ = [
    "DEFAULT_WORKER_SHUTDOWN_SECONDS",
    "FAILED_TO_START",
    "MAX_INTENSITY",
    "AbnormalExit",
    "Action",
    "Backoff",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "ChildStatus",
    "Escalate",
    "ExitReason",
    "NormalExit",
    "RemoveChild",
    "Restart",
    "ShutdownExit",
    "Shutdown",
    "StartChild",
    "StopChild",
    "Strategy",
    "SupervisorSpec",
    "SupervisorState",
    "is_abnormal",
]
