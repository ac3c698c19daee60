"""Hot swap of a replicated cell: one replica at a time, as a pure state machine returning plans.

Theory of operation
-------------------
A replicated cell's state is its log, so swapping its code needs no state
hand-over: each replica is stopped and started again on the new code, and
the new process recovers from its own WAL and snapshot, then catches up
from the leader. What must be decided is the *order* and what to do when a
step fails; :class:`GroupSwap` decides it the way
:mod:`cellmesh.actors.swap` decides a plain cell's swap: every entry point
takes an event and returns a *plan*, a list of :data:`Action` values the
driver (:mod:`cellmesh.actors._groupswap`) executes **in order**, each
asynchronous action answered by exactly one event. No clock, no I/O.

The order (docs/swap.md, "Replicated cells")::

    for each running follower, then the leader:
        Survey            -> who runs, who leads (a majority must agree)
        [Transfer]        -> only for the leader: hand the leadership to a
                             replica that already runs the new code
        Preload           -> a standby of this replica imports the new code
                             (nothing is stopped yet: a bad import ends here)
        Restart           -> stop the replica, start it on the new code
        CatchUp           -> its applied index reaches the group's commit
                             index, confirmed by the leader's match index
    Retarget the members without a process (their next start runs the new code)
    Finish(SWAPPED)

Guarantees the plan keeps:

* **Quorum is never lost by the swap.** Before each replica is stopped the
  survey must show at least a majority of the members running *without* it
  (:func:`quorum_problem`); else the swap stops there. At the start this
  refuses a swap while a replica is down and stopping another would take
  the group below a majority; a group of one replica is refused outright.
* **The leader goes last**, after a transfer to a replica already running
  the new code; a follower is never restarted before the previous one
  caught up.
* **Rollback.** When a replica fails on the new code (its standby does not
  import, its process does not start, it does not catch up in time), the
  replicas already on the new code go back to the old one in reverse order
  (the failed one first, when it was restarted), each restarted and caught
  up the same way, and the swap ends ``rolled_back`` naming the replica and
  the cause. If a step of the rollback fails too, or the quorum rule
  forbids the next step, the swap stops (``failed``) and says which
  replicas run which code.
* **A mixed group** (a swap stopped half-way): the members already on the
  code a swap moves to are left alone (``on_new_code``), never restarted or
  rolled back; :func:`rollback_target` says which code ``--rollback``
  means for such a group.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import attrs

from .control import ReplicaStats
from .membership import majority, replica_name, replica_names
from .swap import Outcome

# --------------------------------------------------------------------------
# Actions


@attrs.frozen(kw_only=True)
class Survey:
    """Report which members have a running process and which one a majority names leader
    (:meth:`GroupSwap.surveyed`); ``not_leader``: wait for a leader other than this one."""

    not_leader: int | None = None


@attrs.frozen(kw_only=True)
class Transfer:
    """Ask ``leader`` to hand its leadership to ``to``; report ``transferred`` or
    ``transfer_failed``."""

    leader: int
    to: int


@attrs.frozen(kw_only=True)
class Preload:
    """Make ``replica`` run the new (``new``) or old code from its next start and have a
    standby import it; report ``preloaded`` or ``preload_failed`` (then the replica is
    back on the code it runs)."""

    replica: int
    new: bool


@attrs.frozen(kw_only=True)
class Restart:
    """Stop ``replica`` and start it again (on the code preloaded); report ``restarted``
    once it is ready, or ``restart_failed``."""

    replica: int
    new: bool


@attrs.frozen(kw_only=True)
class CatchUp:
    """Wait until ``replica`` has applied the group's commit index (as it was when the
    replica became ready) and the leader confirms it holds that much of the log;
    report ``caught_up`` or ``catch_up_failed``."""

    replica: int


@attrs.frozen(kw_only=True)
class Retarget:
    """``replica`` has no process: its next start runs the new code (no event follows)."""

    replica: int


@attrs.frozen(kw_only=True)
class Finish:
    """The swap is over. ``new_code`` / ``old_code``: the members on each version now."""

    outcome: Outcome
    cause: str
    new_code: tuple[int, ...]
    old_code: tuple[int, ...]


Action: TypeAlias = Survey | Transfer | Preload | Restart | CatchUp | Retarget | Finish


class Phase(enum.Enum):
    """Where a group swap is."""

    FORWARD = "swapping"
    ROLLBACK = "rolling back"
    DONE = "done"


class Step(enum.Enum):
    """What the current replica is waiting for."""

    SURVEY = "survey"
    TRANSFER = "transfer"
    PRELOAD = "preload"
    RESTART = "restart"
    CATCH_UP = "catch up"
    IDLE = "idle"


def quorum_problem(group: str, members: Iterable[int], running: Iterable[int],
                   stopping: int) -> str | None:
    """Why stopping ``stopping`` now would lose the group's quorum (None: it would not)."""
    ids = sorted(members)
    up = set(running) & set(ids)
    left = len(up - {stopping})
    need = majority(len(ids))
    if left >= need:
        return None
    down = [i for i in ids if i not in up and i != stopping]
    why = f"{replica_names(group, down)} not running: " if down else ""
    return (f"{why}stopping {replica_name(group, stopping)} would leave {left} of {len(ids)} "
            f"replicas running (a majority is {need})")


def agreed_leader(stats: Mapping[int, ReplicaStats], members: int) -> int | None:
    """The leader a majority of a group of ``members`` names in its stats (None: no agreement).

    Each replica reports the leader it follows; one replica's report (it sends
    it on its own umbilical, and may be the hostile new version) cannot make
    it the leader in the root's eyes.
    """
    votes: dict[int, int] = {}
    for s in stats.values():
        if s.leader is not None:
            votes[s.leader] = votes.get(s.leader, 0) + 1
    for leader, count in sorted(votes.items()):
        if count >= majority(members):
            return leader
    return None


def rollback_target(group: str, codes: Mapping[int, tuple[str, str | None]]) -> str:
    """The DNA digest ``cellmesh swap GROUP --rollback`` goes back to.

    ``codes`` maps each member to its DNA digest and the digest it ran before
    its last swap (None: never swapped). The target is the one code every
    member either runs or ran before its last swap, and that some member
    does not run: after a whole swap, the code every replica ran before it;
    after a swap that stopped half-way (docs/swap.md), the code the replicas
    it did not reach still run. Raises ValueError naming what each replica
    ran when no such code exists, or two do (a rollback that itself
    stopped half-way): then only a forward swap decides.
    """
    candidates = {d for pair in codes.values() for d in pair if d is not None}
    fits = sorted(
        d for d in candidates
        if all(d in pair for pair in codes.values()) and any(c != d for c, _ in codes.values())
    )
    if len(fits) == 1:
        return fits[0]
    if all(p is None for _, p in codes.values()):
        raise ValueError("has no previous DNA to roll back to: no swap of it took effect")

    def short(digest: str | None) -> str:
        return "nothing" if digest is None else digest[:12]

    ran = "; ".join(
        f"{replica_name(group, i)} runs {short(c)}, before it {short(p)}"
        for i, (c, p) in sorted(codes.items())
    )
    why = ("its replicas have no code in common to go back to" if not fits else
           f"it could mean {' or '.join(short(d) for d in fits)}")
    raise ValueError(f"has no previous DNA to roll back to ({why}: {ran}); "
                     f"`cellmesh swap {group}` swaps every replica to its declared code")


@attrs.define(eq=False)
class GroupSwap:
    """The decisions of one swap of replicated cell ``group`` (module doc).

    ``rollback``: this swap is a ``cellmesh swap --rollback`` (its "new code"
    is the code the group ran before); only the advice of a stopped swap
    differs.
    """

    group: str
    rollback: bool = False
    phase: Phase = attrs.field(init=False, default=Phase.FORWARD)
    step: Step = attrs.field(init=False, default=Step.IDLE)
    outcome: Outcome | None = attrs.field(init=False, default=None)
    cause: str = attrs.field(init=False, default="")
    _members: tuple[int, ...] = attrs.field(init=False, default=())
    _queue: list[int] = attrs.field(init=False, factory=list)
    _idle: list[int] = attrs.field(init=False, factory=list)
    #: Members that run the new code now, in the order they were swapped.
    _new: list[int] = attrs.field(init=False, factory=list)
    #: Members that ran the new code before this swap began (left alone).
    _already: tuple[int, ...] = attrs.field(init=False, default=())
    _restarted: bool = attrs.field(init=False, default=False)
    _leader: int | None = attrs.field(init=False, default=None)

    # ------------------------------------------------------------ queries

    @property
    def current(self) -> int | None:
        """The replica being swapped (or rolled back) now."""
        return self._queue[0] if self._queue and self.phase is not Phase.DONE else None

    @property
    def new_code(self) -> tuple[int, ...]:
        """The members this swap moved to the new code (and still there), in that order."""
        return tuple(self._new)

    @property
    def on_new_code(self) -> tuple[int, ...]:
        """Every member on the new code now: those it moved and those already there."""
        return tuple(i for i in self._members if i in self._new or i in self._already)

    @property
    def done(self) -> bool:
        """True once the plan with :class:`Finish` was returned."""
        return self.phase is Phase.DONE

    # ------------------------------------------------------------ events

    def start(self, members: Iterable[int], running: Iterable[int],
              leader: int | None, on_new_code: Iterable[int] = ()) -> list[Action]:
        """Begin with the group as it is: refuse, or plan the first survey.

        ``on_new_code``: members that already run the new code (a group a
        swap left mixed, or a rollback of one): they are not restarted, and
        the leadership may go to them.
        """
        self._members = tuple(sorted(members))
        self._already = tuple(sorted(set(on_new_code) & set(self._members)))
        up = sorted(set(running) & set(self._members))
        name = self.group
        if len(self._members) < 2:
            return self._finish(Outcome.FAILED, (
                "has a single replica: restarting it would stop the group; grow it first "
                f"(`cellmesh replicas {name} 3`)"
            ))
        self._idle = [i for i in self._members if i not in up and i not in self._already]
        todo = [i for i in up if i not in self._already]
        if not todo:  # every running replica is on the new code already
            return self._end_forward()
        need = majority(len(self._members))
        if len(up) - 1 < need:
            down = [i for i in self._members if i not in up]
            return self._finish(Outcome.FAILED, (
                f"cannot be swapped now: {replica_names(name, down)} not running, and stopping "
                f"another replica would leave {len(up) - 1} of {len(self._members)} running "
                f"(a majority is {need}); bring it back first (`cellmesh status`, "
                "`cellmesh wipe`)"
            ))
        if leader is None or leader not in up:
            return self._finish(Outcome.FAILED, "has no leader now (a majority of its replicas "
                                "must agree on one); try again once it has")
        self._queue = [i for i in todo if i != leader] + [i for i in todo if i == leader]
        return self._survey()

    def surveyed(self, running: Iterable[int], leader: int | None) -> list[Action]:
        """The group now: members with a running process, and the agreed leader (or None)."""
        if self.step is not Step.SURVEY or self.done:
            return []
        target = self._queue[0]
        up = set(running)
        problem = quorum_problem(self.group, self._members, up, target)
        if problem is not None:
            return self._halt(f"stopped before {replica_name(self.group, target)}: {problem}")
        if leader == target:
            to = self._transfer_target(up, target)
            if to is not None:
                self.step = Step.TRANSFER
                self._leader = target
                return [Transfer(leader=target, to=to)]
        self.step = Step.PRELOAD
        return [Preload(replica=target, new=self.phase is Phase.FORWARD)]

    def transferred(self) -> list[Action]:
        """The leader handed its leadership over: survey again (wait for the new leader)."""
        if self.step is not Step.TRANSFER:
            return []
        return self._survey(not_leader=self._leader)

    def transfer_failed(self, cause: str) -> list[Action]:
        """The leader could not hand its leadership over (nothing was stopped)."""
        if self.step is not Step.TRANSFER:
            return []
        what = (f"could not move the leadership off {self._name(self._queue[0])}: {cause}")
        return self._failed(what, restarted=False)

    def preloaded(self) -> list[Action]:
        """The replica's standby imported the code: restart the replica on it."""
        if self.step is not Step.PRELOAD:
            return []
        self.step = Step.RESTART
        target = self._queue[0]
        self._restarted = True
        return [Restart(replica=target, new=self.phase is Phase.FORWARD)]

    def preload_failed(self, cause: str) -> list[Action]:
        """The code did not import in the replica's standby (the replica was not stopped)."""
        if self.step is not Step.PRELOAD:
            return []
        return self._failed(f"{self._which()} of {self._name(self._queue[0])} did not import "
                            f"(the replica was not stopped): {cause}", restarted=False)

    def restarted(self) -> list[Action]:
        """The replica runs again (on the code preloaded) and reported ready."""
        if self.step is not Step.RESTART:
            return []
        target = self._queue[0]
        if self.phase is Phase.FORWARD:
            self._new.append(target)
        elif target in self._new:
            self._new.remove(target)
        self.step = Step.CATCH_UP
        return [CatchUp(replica=target)]

    def restart_failed(self, cause: str) -> list[Action]:
        """The replica did not start again on the code preloaded."""
        if self.step is not Step.RESTART:
            return []
        target = self._queue[0]
        if self.phase is Phase.FORWARD and target not in self._new:
            self._new.append(target)  # its slot runs the new code: it must go back
        return self._failed(f"{self._which()} of {self._name(target)} did not start: {cause}",
                            restarted=True)

    def caught_up(self) -> list[Action]:
        """The replica caught up with the group: on to the next one, or the end."""
        if self.step is not Step.CATCH_UP:
            return []
        self._queue.pop(0)
        self._restarted = False
        if self._queue:
            return self._survey()
        if self.phase is Phase.FORWARD:
            return self._end_forward()
        return self._finish(Outcome.ROLLED_BACK, self.cause)

    def catch_up_failed(self, cause: str) -> list[Action]:
        """The replica did not catch up in time (or crashed meanwhile)."""
        if self.step is not Step.CATCH_UP:
            return []
        return self._failed(f"{self._which()} of {self._name(self._queue[0])} did not catch "
                            f"up: {cause}", restarted=True)

    def aborted(self, cause: str) -> list[Action]:
        """The swap cannot go on (the root stops, the group stopped): end where it is."""
        if self.done:
            return []
        return self._halt(cause)

    # ------------------------------------------------------------ internals

    def _name(self, replica: int) -> str:
        return replica_name(self.group, replica)

    def _which(self) -> str:
        return "the new version" if self.phase is Phase.FORWARD else "the old version"

    def _end_forward(self) -> list[Action]:
        """Every running replica runs the new code: retarget the rest, and done."""
        plan: list[Action] = [Retarget(replica=i) for i in self._idle]
        self._new.extend(self._idle)
        return plan + self._finish(Outcome.SWAPPED, "")

    def _survey(self, not_leader: int | None = None) -> list[Action]:
        self.step = Step.SURVEY
        return [Survey(not_leader=not_leader)]

    def _transfer_target(self, up: set[int], leader: int) -> int | None:
        """Where the leadership goes: a running replica on the code the swap moves to."""
        others = [i for i in self._members if i in up and i != leader]
        if self.phase is Phase.FORWARD:
            preferred = [i for i in [*reversed(self._new), *self._already] if i in others]
        else:  # (a member that was on the new code before the swap stays there)
            preferred = [i for i in others if i not in self._new and i not in self._already]
        pick = preferred or others
        return pick[0] if pick else None

    def _failed(self, cause: str, *, restarted: bool) -> list[Action]:
        if self.phase is Phase.ROLLBACK:
            return self._halt(f"{self.cause}; then, rolling back, {cause}")
        self.phase = Phase.ROLLBACK
        self.outcome = Outcome.ROLLED_BACK
        self.cause = cause
        current = self._queue[0]
        undo = [i for i in reversed(self._new) if i != current]
        self._queue = ([current] if restarted and current in self._new else []) + undo
        self._restarted = False
        if not self._queue:
            return self._finish(Outcome.ROLLED_BACK, cause)
        return self._survey()

    def _halt(self, cause: str) -> list[Action]:
        new = self.on_new_code
        old = [i for i in self._members if i not in new]
        if new and old:
            runs = "runs" if len(new) == 1 else "run"
            names = replica_names(self.group, new)
            cause += (f"; {names} {runs} the new code, {replica_names(self.group, old)} the "
                      f"old: once every replica runs, `cellmesh swap {self.group}` swaps "
                      "every replica to its declared code")
            if not self.rollback:
                cause += f", or `cellmesh swap {self.group} --rollback` takes {names} back"
        return self._finish(Outcome.FAILED, cause)

    def _finish(self, outcome: Outcome, cause: str) -> list[Action]:
        self.phase = Phase.DONE
        self.step = Step.IDLE
        self.outcome = outcome
        self.cause = cause
        new = self.on_new_code
        old = tuple(i for i in self._members if i not in new)
        return [Finish(outcome=outcome, cause=cause, new_code=new, old_code=old)]


__all__ = [
    "Action",
    "CatchUp",
    "Finish",
    "GroupSwap",
    "Phase",
    "Preload",
    "Restart",
    "Retarget",
    "Step",
    "Survey",
    "Transfer",
    "agreed_leader",
    "quorum_problem",
    "rollback_target",
]
