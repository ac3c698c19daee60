"""Hot swap decisions: one swap of one cell as a pure state machine that returns plans.

Theory of operation
-------------------
A :class:`SwapState` decides the steps of replacing a running cell's process
by a process of its new code, the way :mod:`cellmesh.actors.policy` decides
restarts: every entry point takes an event (and ``now``, monotonic seconds)
and returns a *plan*, a list of :data:`Action` values the driver
(:mod:`cellmesh.actors._swap`) executes **in order**. It never acts, reads no
clock and imports no I/O, so every path is tested without processes.

The phases (OTP's release handler: suspend, ``code_change``, resume; Envoy's
hot restart: the new process initialises fully before the old one drains)::

    PREPARING ──dna_built──► PROVISIONING ──provisioned──► STARTING ──new_hello──►
    SUSPENDING ──old_out──► HANDING_OVER ──new_ready──► PROBATION ──timer──► COMMITTING ──► DONE
          (any failure before COMMITTING) ──► ROLLING_BACK ──► DONE

* **PREPARING**: the DNA entry of the new code is built (:class:`BuildDna`).
  Identical DNA ends the swap at once (``unchanged``); a cell with no process
  (dormant, stopped) has its sandboxes re-made for its next start
  (:class:`Retarget`, ``retargeted``).
* **PROVISIONING**: the standby (old code) is retired and the free backend id
  is re-made with the new DNA (:class:`Provision`).
* **STARTING**: the new process runs and imports its code
  (:class:`SpawnNew`); the old one still serves. The new process says hello
  (``SwapIn``) once its class is imported and instantiated.
* **SUSPENDING**: the old process is told to suspend (:class:`OrderSuspend`):
  it stops accepting (new connections wait in the root's listen backlog),
  sends ``goaway`` to its connections, lets its in-flight calls finish and
  exports its state (``SwapOut``); it then waits for the verdict.
* **HANDING_OVER**: the state goes to the new process (:class:`GiveState`),
  which runs ``on_start`` and ``on_swap_in`` and reports ready.
* **PROBATION**: the new process serves (it accepts from the same listening
  socket); the old one, still suspended with its state, waits ``grace``
  seconds. A crash of the new process now rolls back.
* **COMMITTING**: the cell's instance adopts the new process
  (:class:`AdoptNew`: the supervisor never sees an exit), the old process is
  told to exit (:class:`ReleaseOld`), and once it has, the freed id is
  re-made with the new DNA and a standby started (:class:`Restore`).
* **ROLLING_BACK**: the new process is killed (:class:`KillNew`), the old one
  resumes serving with its state (:class:`ResumeOld`, or it resumed on its
  own when its own step failed), and once the new process is reaped the
  freed id is re-made with the old DNA (:class:`Restore`).

Every phase before PROBATION is bounded by one deadline (``timeout`` after
the start; :class:`SetTimer`); PROBATION by ``grace``; the waits of
ROLLING_BACK and COMMITTING by :data:`SETTLE_SECONDS`, after which a process
that does not cooperate is killed (a suspended old version that never
reports back is killed and restarted by its supervisor). So a hostile old or
new version cannot hold a swap longer than ``timeout + grace`` plus two
settle periods.

Events that do not apply to the current phase change nothing and return an
empty plan (cells are untrusted: a message out of turn is ignored, and the
driver refuses it to the sender). :meth:`SwapState.finish` ends in exactly
one :class:`Finish`.
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

import attrs

#: How long a rollback or a commit waits for a process to do its part.
SETTLE_SECONDS: Final = 5.0
#: At most this much of the time left is kept back from a suspend order, so the
#: old process reports its own failure before the swap's deadline passes.
SUSPEND_MARGIN: Final = 0.5


def suspend_seconds(deadline: float, now: float) -> float:
    """The time an old process gets to drain and export, ordered at ``now``."""
    left = deadline - now
    return max(0.05, left - min(SUSPEND_MARGIN, 0.2 * left))


class Phase(enum.Enum):
    """Where a swap is (see the module docstring)."""

    PREPARING = "preparing"
    RETARGETING = "retargeting"
    PROVISIONING = "provisioning"
    STARTING = "starting"
    SUSPENDING = "suspending"
    HANDING_OVER = "handing over"
    PROBATION = "probation"
    COMMITTING = "committing"
    ROLLING_BACK = "rolling back"
    DONE = "done"


class Outcome(enum.Enum):
    """How a swap ended."""

    #: The new version serves; the old process exited.
    SWAPPED = "swapped"
    #: The DNA is identical to what runs: nothing was done.
    UNCHANGED = "unchanged"
    #: The cell has no process: its next start runs the new DNA.
    RETARGETED = "retargeted"
    #: The new version failed; the old one serves again, with its state.
    ROLLED_BACK = "rolled_back"
    #: The swap could not start (bad DNA), or the cell itself stopped meanwhile.
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        """True for the outcomes ``cellmesh swap`` exits 0 for."""
        return self in (Outcome.SWAPPED, Outcome.UNCHANGED, Outcome.RETARGETED)


class _Old(enum.Enum):
    SERVING = "serving"
    ORDER_QUEUED = "order queued"
    ORDER_DELIVERED = "order delivered"
    SUSPENDED = "suspended"
    RELEASED = "released"
    GONE = "gone"


class _New(enum.Enum):
    NONE = "none"
    SPAWNED = "spawned"
    HELLO = "hello"
    GIVEN = "given"
    READY = "ready"
    ADOPTED = "adopted"
    GONE = "gone"


# --------------------------------------------------------------------------
# Actions.


@attrs.frozen(kw_only=True)
class BuildDna:
    """Build the new code's DNA entry; report ``dna_built`` or ``dna_failed``."""


@attrs.frozen(kw_only=True)
class Retarget:
    """The cell has no process: re-make its sandboxes with the new DNA; report
    ``retargeted`` (or ``dna_failed``)."""


@attrs.frozen(kw_only=True)
class Provision:
    """Retire the standby, re-make the free id with the new DNA; report
    ``provisioned`` or ``provision_failed``."""


@attrs.frozen(kw_only=True)
class SpawnNew:
    """Spawn the new process on the free id in swap mode and watch it (its exit
    is ``new_exited``); a spawn error is ``spawn_failed``."""


@attrs.frozen(kw_only=True)
class OrderSuspend:
    """Tell the old process to suspend; it must report by ``deadline`` (monotonic)."""

    deadline: float


@attrs.frozen(kw_only=True)
class CancelOrder:
    """Withdraw an order the old process has not picked up yet."""


@attrs.frozen(kw_only=True)
class GiveState:
    """Answer the new process's hello with the old process's identity and state."""


@attrs.frozen(kw_only=True)
class RefuseNew:
    """Answer the new process's pending hello (if any) with a refusal."""

    reason: str


@attrs.frozen(kw_only=True)
class KillNew:
    """SIGKILL the new process (no-op once it exited)."""


@attrs.frozen(kw_only=True)
class ResumeOld:
    """Answer the suspended old process: resume serving, with your state."""


@attrs.frozen(kw_only=True)
class ReleaseOld:
    """Answer the suspended old process: exit (your successor serves)."""


@attrs.frozen(kw_only=True)
class KillOld:
    """SIGKILL the old process (it did not do its part in time); ``why`` is the
    reason its exit is reported with."""

    why: str = "the old version did not do its part of the swap in time"


@attrs.frozen(kw_only=True)
class AdoptNew:
    """The cell's instance (the supervisor's child handle) now stands for the new process.

    The driver MUST do this synchronously when the plan is returned, before
    anything else waits on the new process: from here on the instance is the
    new process's only waiter, and its exit is the cell's exit.
    """


@attrs.frozen(kw_only=True)
class SetTimer:
    """Report ``tick(now)`` once the monotonic clock reaches ``at`` (replaces any timer)."""

    at: float


@attrs.frozen(kw_only=True)
class Restore:
    """Re-make the freed id with the DNA now in force and start a standby; report ``restored``.

    ``committed``: the new DNA is in force (the old id is freed), else the old
    one (the new id is freed).
    """

    committed: bool


@attrs.frozen(kw_only=True)
class Finish:
    """The swap is over: answer the operator, log the event."""

    outcome: Outcome
    cause: str = ""


Action: TypeAlias = (
    BuildDna | Retarget | Provision | SpawnNew | OrderSuspend | CancelOrder | GiveState
    | RefuseNew | KillNew | ResumeOld | ReleaseOld | KillOld | AdoptNew | SetTimer | Restore
    | Finish
)

#: Actions the driver executes synchronously (no await between the event and them).
SYNC_ACTIONS: Final = (
    CancelOrder, GiveState, RefuseNew, KillNew, ResumeOld, ReleaseOld, KillOld, AdoptNew,
    SetTimer,
)


# --------------------------------------------------------------------------
# The state machine.


@attrs.define(eq=False)
class SwapState:
    """The decisions of one swap (see the module docstring).

    ``timeout``: seconds from :meth:`start` until the new version must be
    ready (covers the DNA build, the new process's start, the old one's drain
    and hand-over, ``on_start`` and ``on_swap_in``); ``grace``: seconds the new
    version serves on probation before the old process is let go (0: commit
    at once).
    """

    timeout: float
    grace: float
    phase: Phase = attrs.field(init=False, default=Phase.PREPARING)
    outcome: Outcome | None = attrs.field(init=False, default=None)
    cause: str = attrs.field(init=False, default="")
    started_at: float = attrs.field(init=False, default=0.0)
    serving_at: float | None = attrs.field(init=False, default=None)
    new_version: str = attrs.field(init=False, default="")
    _deadline: float = attrs.field(init=False, default=0.0)
    _timer: float | None = attrs.field(init=False, default=None)
    _old: _Old = attrs.field(init=False, default=_Old.SERVING)
    _new: _New = attrs.field(init=False, default=_New.NONE)
    _new_report: str = attrs.field(init=False, default="")
    _restoring: bool = attrs.field(init=False, default=False)
    _settle_killed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")

    # ------------------------------------------------------------ queries

    @property
    def done(self) -> bool:
        """True once the plan with :class:`Finish` was returned."""
        return self.phase is Phase.DONE

    @property
    def awaiting_hello(self) -> bool:
        """The new process's ``SwapIn`` is expected now."""
        return self.phase is Phase.STARTING and self._new is _New.SPAWNED

    @property
    def awaiting_old(self) -> bool:
        """The old process's ``SwapOut`` is expected now (it was ordered to suspend)."""
        return self._old in (_Old.ORDER_QUEUED, _Old.ORDER_DELIVERED)

    @property
    def awaiting_ready(self) -> bool:
        """The new process's ``CellReady`` is expected now."""
        return self.phase is Phase.HANDING_OVER and self._new is _New.GIVEN

    @property
    def new_serving(self) -> bool:
        """The new process serves (probation or later) and was not rolled back."""
        return self._new in (_New.READY, _New.ADOPTED)

    @property
    def timer_at(self) -> float | None:
        """When the driver must report :meth:`tick` next (monotonic), or None."""
        return self._timer

    # ------------------------------------------------------------ the start

    def start(self, now: float) -> list[Action]:
        """Begin: build the DNA entry. The deadline runs from here."""
        self.started_at = now
        self._deadline = now + self.timeout
        return [BuildDna()]

    def dna_built(self, *, unchanged: bool, running: bool, now: float) -> list[Action]:
        """The DNA entry exists; ``unchanged``: same digest as in force; ``running``:
        the cell has a serving process now."""
        if self.phase is not Phase.PREPARING:
            return []
        if unchanged:
            return self._finish(Outcome.UNCHANGED, "")
        if not running:
            self.phase = Phase.RETARGETING
            return [Retarget()]
        self.phase = Phase.PROVISIONING
        return [*self._set_timer(self._deadline), Provision()]

    def dna_failed(self, cause: str) -> list[Action]:
        """The new DNA could not be read or built (nothing was changed)."""
        if self.phase not in (Phase.PREPARING, Phase.RETARGETING):
            return []
        return self._finish(Outcome.FAILED, cause)

    def retargeted(self) -> list[Action]:
        """The sandboxes of a cell without a process were re-made with the new DNA."""
        if self.phase is not Phase.RETARGETING:
            return []
        return self._finish(Outcome.RETARGETED, "")

    def provisioned(self, now: float) -> list[Action]:
        """The free id holds the new DNA: start the new process."""
        if self.phase is not Phase.PROVISIONING:
            return []
        self.phase = Phase.STARTING
        self._new = _New.SPAWNED
        return [SpawnNew()]

    def provision_failed(self, cause: str, now: float) -> list[Action]:
        """The new version's sandbox could not be made."""
        if self.phase is not Phase.PROVISIONING:
            return []
        return self._rollback(f"could not make the new version's sandbox: {cause}", now)

    def spawn_failed(self, cause: str, now: float) -> list[Action]:
        """The new process could not be spawned."""
        if self.phase is not Phase.STARTING or self._new is not _New.SPAWNED:
            return []
        self._new = _New.GONE
        return self._rollback(f"could not start the new version: {cause}", now)

    # ------------------------------------------------------------ the new process

    def new_hello(self, version: str, now: float) -> list[Action]:
        """The new process imported its code and asks for the hand-over."""
        if not self.awaiting_hello:
            return []
        self._new = _New.HELLO
        self.new_version = version
        self.phase = Phase.SUSPENDING
        self._old = _Old.ORDER_QUEUED
        return [OrderSuspend(deadline=self._deadline)]

    def new_ready(self, now: float) -> list[Action]:
        """The new process ran ``on_start`` and ``on_swap_in`` and serves."""
        if not self.awaiting_ready:
            return []
        self._new = _New.READY
        self.serving_at = now
        if self.grace <= 0:
            return self._commit(now)
        self.phase = Phase.PROBATION
        return self._set_timer(now + self.grace)

    def new_failed(self, stage: str, type_name: str, message: str, now: float) -> list[Action]:
        """The new process reports why it fails (before it exits); roll back now."""
        if self._new in (_New.NONE, _New.GONE, _New.ADOPTED) or self.phase is Phase.DONE:
            return []
        detail = f"{type_name}: {message}" if type_name else message
        self._new_report = f"the new version failed in {stage}: {detail}"
        if self.phase is Phase.ROLLING_BACK:
            return []
        return self._rollback(self._new_report, now)

    def new_exited(self, text: str, now: float) -> list[Action]:
        """The new process exited (or was reaped after :class:`KillNew`)."""
        if self._new in (_New.NONE, _New.GONE, _New.ADOPTED):
            return []
        was = self._new
        self._new = _New.GONE
        if self.phase is Phase.ROLLING_BACK:
            return self._settle_rollback(now)
        if self._new_report:
            cause = self._new_report
        elif was is _New.READY:
            took = now - (self.serving_at if self.serving_at is not None else now)
            cause = f"the new version crashed {took * 1000:.0f} ms after taking over: {text}"
        else:
            cause = f"the new version exited before it was ready: {text}"
        return self._rollback(cause, now)

    # ------------------------------------------------------------ the old process

    def order_delivered(self) -> None:
        """The old process picked up its suspend order."""
        if self._old is _Old.ORDER_QUEUED:
            self._old = _Old.ORDER_DELIVERED

    def old_out(self, now: float) -> list[Action]:
        """The old process drained its calls, exported its state and waits for the verdict."""
        if not self.awaiting_old:
            return []
        self._old = _Old.SUSPENDED
        if self.phase is Phase.ROLLING_BACK:
            self._old = _Old.SERVING
            return [ResumeOld(), *self._settle_rollback(now)]
        self.phase = Phase.HANDING_OVER
        self._new = _New.GIVEN
        return [GiveState()]

    def old_failed(self, cause: str, now: float) -> list[Action]:
        """The old process could not suspend or export (it resumed serving on its own)."""
        if not self.awaiting_old:
            return []
        self._old = _Old.SERVING
        if self.phase is Phase.ROLLING_BACK:
            self.cause += f" (and the old version could not hand over: {cause})"
            return self._settle_rollback(now)
        return self._rollback(f"the old version could not hand over: {cause}", now)

    def old_exited(self, text: str, now: float) -> list[Action]:
        """The old process exited. In probation that commits at once; before, the cell
        itself went down (its supervisor reacts) and the swap is abandoned."""
        if self._old is _Old.GONE or self.phase is Phase.DONE:
            return []
        self._old = _Old.GONE
        if self.phase is Phase.COMMITTING:
            return self._settle_commit()
        if self.phase is Phase.PROBATION:
            return self._commit(now)
        cause = f"the old version exited during the swap: {text}"
        if self.phase is Phase.ROLLING_BACK:
            # Its supervisor restarts it: service comes back, its state does not.
            self.outcome = Outcome.FAILED
            self.cause = f"{self.cause}; {cause}" if self.cause else cause
            return self._settle_rollback(now)
        if self.phase in (Phase.PREPARING, Phase.RETARGETING):
            return []  # nothing of the swap runs yet: the next step sees no process
        return self._abandon(cause, now)

    # ------------------------------------------------------------ time, stops, restore

    def tick(self, now: float) -> list[Action]:
        """The timer set by the last :class:`SetTimer` is due (early reports are ignored)."""
        if self._timer is None or now < self._timer:
            return []
        self._timer = None
        if self.phase in (Phase.PROVISIONING, Phase.STARTING, Phase.SUSPENDING,
                          Phase.HANDING_OVER):
            return self._rollback(
                f"the new version was not ready within {self.timeout:g} s "
                f"(still {self.phase.value})", now,
            )
        if self.phase is Phase.PROBATION:
            return self._commit(now)
        if self.phase is Phase.ROLLING_BACK:
            plan: list[Action] = []
            if self._new not in (_New.NONE, _New.GONE):
                plan.append(KillNew())
            if self._old is _Old.ORDER_DELIVERED and not self._settle_killed:
                # A suspended old version that never reports back: restarting it
                # (its supervisor does) restores service; its state is lost.
                self._settle_killed = True
                self.cause += "; the old version did not resume in time and was killed"
                plan.append(KillOld(why="killed by the swap: the old version did not resume "
                                        "in time after the swap failed"))
            return plan + self._set_timer(now + SETTLE_SECONDS)
        if self.phase is Phase.COMMITTING and self._old is not _Old.GONE:
            return [KillOld(why="killed by the swap: the old version did not exit after "
                                "the swap committed"), *self._set_timer(now + SETTLE_SECONDS)]
        return []

    def stop_requested(self, now: float) -> list[Action]:
        """The cell is being stopped (its supervisor, ``down``, the root stopping)."""
        if self.phase is Phase.PROBATION:
            return self._commit(now)
        if self.phase is Phase.PREPARING:
            return self._finish(Outcome.FAILED, "the cell is being stopped")
        if self.phase in (Phase.RETARGETING, Phase.DONE, Phase.COMMITTING, Phase.ROLLING_BACK):
            return []
        return self._abandon("the cell is being stopped", now)

    def restored(self) -> list[Action]:
        """The freed id was re-made (or that failed and was logged): the swap ends."""
        if not self._restoring:
            return []
        self._restoring = False
        assert self.outcome is not None
        return self._finish(self.outcome, self.cause)

    # ------------------------------------------------------------ internals

    def _set_timer(self, at: float) -> list[Action]:
        self._timer = at
        return [SetTimer(at=at)]

    def _finish(self, outcome: Outcome, cause: str) -> list[Action]:
        self.phase = Phase.DONE
        self.outcome = outcome
        self.cause = cause
        self._timer = None
        return [Finish(outcome=outcome, cause=cause)]

    def _commit(self, now: float) -> list[Action]:
        """PROBATION is over (or cut short): the new process is the cell's from now on."""
        self.phase = Phase.COMMITTING
        self._new = _New.ADOPTED
        self.outcome = Outcome.SWAPPED
        plan: list[Action] = [AdoptNew()]
        if self._old is _Old.GONE:
            return plan + self._settle_commit()
        self._old = _Old.RELEASED
        return [*plan, ReleaseOld(), *self._set_timer(now + SETTLE_SECONDS)]

    def _settle_commit(self) -> list[Action]:
        self._timer = None
        self._restoring = True
        return [Restore(committed=True)]

    def _rollback(self, cause: str, now: float) -> list[Action]:
        """Undo: kill the new process, make the old one serve again, then restore."""
        self.phase = Phase.ROLLING_BACK
        self.outcome = Outcome.ROLLED_BACK
        self.cause = cause
        return self._undo(now)

    def _abandon(self, cause: str, now: float) -> list[Action]:
        """The old process is gone or going (the cell stops): undo the new side only."""
        self.phase = Phase.ROLLING_BACK
        self.outcome = Outcome.FAILED
        self.cause = cause
        return self._undo(now)

    def _undo(self, now: float) -> list[Action]:
        plan: list[Action] = []
        if self._new is _New.HELLO:
            plan.append(RefuseNew(reason=self.cause))
        if self._new not in (_New.NONE, _New.GONE):
            plan.append(KillNew())
        if self._old is _Old.ORDER_QUEUED:
            plan.append(CancelOrder())
            self._old = _Old.SERVING
        elif self._old is _Old.SUSPENDED:
            plan.append(ResumeOld())
            self._old = _Old.SERVING
        self._timer = None  # the settle period replaces the deadline
        return plan + self._settle_rollback(now)

    def _settle_rollback(self, now: float) -> list[Action]:
        """Restore once the new process is gone and the old one is not mid-order."""
        if self._new not in (_New.NONE, _New.GONE) or self._old is _Old.ORDER_DELIVERED:
            if self._timer is None:
                return self._set_timer(now + SETTLE_SECONDS)
            return []
        if self._restoring:
            return []
        self._timer = None
        self._restoring = True
        return [Restore(committed=False)]


__all__ = [
    "SETTLE_SECONDS",
    "SUSPEND_MARGIN",
    "SYNC_ACTIONS",
    "Action",
    "AdoptNew",
    "BuildDna",
    "CancelOrder",
    "Finish",
    "GiveState",
    "KillNew",
    "KillOld",
    "Outcome",
    "OrderSuspend",
    "Phase",
    "Provision",
    "RefuseNew",
    "ReleaseOld",
    "Restore",
    "ResumeOld",
    "Retarget",
    "SetTimer",
    "SpawnNew",
    "SwapState",
    "suspend_seconds",
]
