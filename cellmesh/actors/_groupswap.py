"""The hot swap of a replicated cell: carries out the plans of :mod:`cellmesh.actors.groupswap`.

Theory of operation
-------------------
``cellmesh swap X`` on a replicated cell reaches :meth:`GroupSwapper.swap`.
It builds the new DNA once, holds the group's lock (no membership change or
other swap runs meanwhile; ``status`` shows the step in the group's
``change`` column), and feeds a :class:`~cellmesh.actors.groupswap.GroupSwap`
the answers to its actions, one at a time:

* :class:`~cellmesh.actors.groupswap.Survey`: the members whose process runs,
  and the leader a majority of the members' stats name
  (:func:`agreed_leader`: one replica's word -- its umbilical is its own --
  never decides who leads);
* :class:`~cellmesh.actors.groupswap.Transfer`: ``TransferLeadership`` at the
  leader's peer socket (as ``cellmesh replicas`` does);
* :class:`~cellmesh.actors.groupswap.Preload`: link the code into the
  replica's DNA directory, make it the slot's, and have a standby import it
  (the replica keeps serving; a bad import stops the swap here);
* :class:`~cellmesh.actors.groupswap.Restart`: stop the replica's supervisor
  and start a fresh one (the standby takes over: the start is a pipe write);
  the restart is not counted as one, and monitors of the replica get no
  ``CellDown`` for it (the root skips the exits and start failures of a
  replica whose slot shows a swap phase: a new process that fails is the
  swap's rollback cause, not a crash in the restart log or ``status``);
* :class:`~cellmesh.actors.groupswap.CatchUp`: the replica's runtime, asked
  on its peer socket (``ReplicaStatusRequest``), must answer that it applied
  the commit index the other members had when it became ready, **and** the
  leader (``ReplicaProgressRequest``) must confirm its match index reached
  it. The stats a replica sends on its umbilical are not used: any code in
  its sandbox -- the new version may be hostile -- can send those. Then
  ``grace`` seconds of probation: an exit then fails the step.

History: each member's ``previous_dna`` changes only if the swap changed its
code in the end (:meth:`GroupSwapper._settle`), so ``--rollback`` goes back to
the code before the last swap that took effect, as for a plain cell.

Every wait is bounded by ``timeout`` per step, every remote request by its
connect timeout. The swap runs in a task of the root (interrupting the
operator's command does not stop it); a root that stops cancels it and the
report says where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Final

import attrs
import trio

from ..errors import CellmeshError
from ..sandbox import CellBackend
from ..sandbox._events import EventKind, EventSink
from ..transport.synapse import Synapse
from . import replicated_proteins as rp
from ._cells import CellInstance, CellSlot, reason_text
from ._launch import Launcher
from ._replicas import Replicas
from ._replicas_changes import NotLeaderHere, PeerAdmin
from ._replicas_group import Group, GroupHandle, Member
from ._tasks import Background
from .control import ReplicaStats, SwapReport
from .dna import DnaEntry, DnaHold
from .errors import DnaError, RootRequestError
from .groupswap import (
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
    rollback_target,
)
from .manifest import CellDecl
from .membership import is_voter, replica_name
from .policy import AbnormalExit
from .swap import Outcome

#: How long to wait for a retired standby to exit before its backend id is free.
STANDBY_EXIT: Final = 5.0
#: A peer-socket request gives up after this long (the replica is dead or stopped).
ASK_TIMEOUT: Final = 5.0
#: The catch-up check asks again after this long, doubling up to POLL_MAX seconds.
POLL_FIRST: Final = 0.02
POLL_MAX: Final = 0.5


@attrs.define(eq=False)
class _Run:
    """One group swap in progress: what the driver holds besides the decisions."""

    group: Group
    handle: GroupHandle
    core: GroupSwap
    entry: DnaEntry
    old: dict[int, DnaEntry]
    #: Each member's declaration before the swap (its ``previous_decl`` if it changes code).
    old_decl: dict[int, CellDecl]
    #: Each member's ``previous_dna`` / ``previous_decl`` before the swap: kept by a member
    #: whose code the swap did not change in the end (:meth:`GroupSwapper._settle`).
    previous: dict[int, tuple[DnaEntry | None, CellDecl | None]]
    timeout: float
    grace: float
    started: float
    from_version: str
    to_version: str = ""
    failed_tail: list[str] = attrs.Factory(list)
    timeline: dict[str, float] = attrs.Factory(dict)
    #: A member's restart count when the swap first restarted it, until it caught up.
    restarts: dict[int, int] = attrs.Factory(dict)


@attrs.define(eq=False)
class GroupSwapper:
    """Swaps the root's replicated cells (module doc)."""

    replicas: Replicas
    launcher: Launcher
    backend: CellBackend
    tasks: Background
    log: Callable[[str], None]
    events: EventSink
    admin: PeerAdmin = attrs.Factory(PeerAdmin)

    async def swap(self, name: str, *, timeout: float, grace: float,
                   rollback: bool = False) -> SwapReport:
        """Swap replicated cell ``name`` to its DNA's current content (or back: ``rollback``).

        Returns the report once the swap is over (also when it rolled back);
        raises :class:`RootRequestError` when it cannot begin (a membership
        change or another swap of the group runs, nothing to roll back to).
        """
        if not (timeout > 0 and grace >= 0):
            raise RootRequestError(name, "a swap needs timeout > 0 and grace >= 0")
        group = self.replicas.group_of(name)
        if group.lock.locked():
            raise RootRequestError(
                name, f"a membership change or swap of this group is in progress "
                f"({group.change or 'starting'}); wait for it to finish"
            )
        done = trio.Event()
        box: list[SwapReport | BaseException] = []

        async def task() -> None:
            try:
                box.append(await self._swap(group, timeout, grace, rollback))
            except CellmeshError as exc:
                box.append(exc)
            finally:
                done.set()

        self.tasks.start_soon(task, name=f"swap of {name}")
        await done.wait()
        await self.launcher.pruner.settled()  # the cache holds no more than the group needs
        result = box[0] if box else RootRequestError(name, "the swap was cancelled")
        if isinstance(result, BaseException):
            raise result
        return result

    async def _swap(self, group: Group, timeout: float, grace: float,
                    rollback: bool) -> SwapReport:
        async with group.lock:
            group.change = "swap: building the DNA"
            group.touch()
            # Pins each member's code and the code before it (what a rollback goes back
            # to) and the new code in the DNA cache until the members' slots say what
            # they run (``_settle``).
            hold = self.launcher.dna.hold()
            for m in group.members.values():
                for entry in (m.slot.dna, m.slot.previous_dna):
                    if entry is not None:
                        hold.add(entry.digest)
            try:
                return await self._locked(group, timeout, grace, rollback, hold)
            finally:
                for m in group.members.values():
                    m.slot.swap_phase = ""
                group.change = ""
                group.touch()
                try:
                    with trio.CancelScope(shield=True):
                        await self._prune(group)
                finally:  # the DNA directories first: an entry linked there is kept
                    hold.release()
                    self.launcher.pruner.request()

    async def _prune(self, group: Group) -> None:
        """Keep each replica's code in force and the one before it in its DNA directory."""
        for m in group.members.values():
            slot = m.slot
            keep = {e.digest for e in (slot.dna, slot.previous_dna) if e is not None}
            if slot.created:
                try:
                    await self.launcher.prune(slot, keep)
                except OSError as exc:
                    self.log(f"root: swap of {group.name}: could not prune the DNA of "
                             f"{slot.name}: {exc}")

    async def _locked(self, group: Group, timeout: float, grace: float,
                      rollback: bool, hold: DnaHold) -> SwapReport:
        started = trio.current_time()
        members = dict(group.members)
        old = {i: m.slot.dna for i, m in members.items() if m.slot.dna is not None}
        versions = {m.slot.version for m in members.values() if m.slot.version}
        from_version = versions.pop() if len(versions) == 1 else ""
        core = GroupSwap(group=group.name, rollback=rollback)
        if rollback:
            entry = self._rollback_entry(group)
        else:
            try:
                entry = await self.launcher.build(group.decl, hold)
            except (DnaError, OSError) as exc:
                return self._report(group, core, None, Finish(
                    outcome=Outcome.FAILED, cause=str(exc), new_code=(), old_code=tuple(old)
                ), started=started, from_version=from_version, old=old)
        handle = group.handle
        if all(e.digest == entry.digest for e in old.values()) and len(old) == len(members):
            return self._report(group, core, None, Finish(
                outcome=Outcome.UNCHANGED, cause="", new_code=(), old_code=tuple(members)
            ), started=started, from_version=from_version, old=old)
        if handle is None or not handle.running:
            for m in members.values():
                await self._retarget(m, entry)
            return self._report(group, core, None, Finish(
                outcome=Outcome.RETARGETED, cause="", new_code=tuple(members), old_code=()
            ), started=started, from_version=from_version, old=old, to_dna=entry.digest)
        run = _Run(group=group, handle=handle, core=core, entry=entry, old=old,
                   old_decl={i: m.slot.decl for i, m in members.items()},
                   previous={i: (m.slot.previous_dna, m.slot.previous_decl)
                             for i, m in members.items()},
                   timeout=timeout, grace=grace, started=started, from_version=from_version)
        self.log(f"root: swap of {group.name}: to DNA {entry.digest[:12]}, one replica at a time")
        leader = await self._leader(group, None, timeout)
        there = [i for i, e in old.items() if e.digest == entry.digest]
        plan = core.start(members, self._running(group), leader, on_new_code=there)
        finish: Finish | None = None
        try:
            while finish is None:
                assert plan, "every action but Finish is answered by an event"
                action, rest = plan[0], plan[1:]
                if isinstance(action, Finish):
                    finish = action
                    break
                follow = await self._act(run, action)
                plan = rest + follow
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                ended = core.aborted("the root is stopping")
                finish = ended[-1] if ended and isinstance(ended[-1], Finish) else Finish(
                    outcome=Outcome.FAILED, cause="the root is stopping", new_code=(),
                    old_code=(),
                )
                self._report(group, core, run, finish, started=started,
                             from_version=from_version, old=old)
            raise
        finally:
            self._settle(run)
        return self._report(group, core, run, finish, started=started,
                            from_version=from_version, old=old)

    @staticmethod
    def _rollback_entry(group: Group) -> DnaEntry:
        """The DNA ``--rollback`` goes back to (:func:`rollback_target`)."""
        known: dict[str, DnaEntry] = {}
        codes: dict[int, tuple[str, str | None]] = {}
        for i, m in group.members.items():
            now, before = m.slot.dna, m.slot.previous_dna
            for e in (now, before):
                if e is not None:
                    known[e.digest] = e
            if now is None:  # (a member always has a DNA; a bug otherwise)
                raise RootRequestError(group.name, f"{m.slot.name} has no DNA")
            codes[i] = (now.digest, before.digest if before is not None else None)
        try:
            return known[rollback_target(group.name, codes)]
        except ValueError as exc:
            raise RootRequestError(group.name, str(exc)) from None

    # ------------------------------------------------------------ actions

    async def _act(self, run: _Run, action: Action) -> list[Action]:
        core, group = run.core, run.group
        if isinstance(action, Retarget):
            await self._retarget(group.members[action.replica], run.entry)
            return []
        if isinstance(action, Survey):
            group.change = f"swap: {self._progress(run)}"
            group.touch()
            leader = await self._leader(group, action.not_leader, run.timeout)
            if leader is None:
                return core.aborted(
                    f"no leader that a majority of {group.name}'s replicas agree on within "
                    f"{run.timeout:g} s"
                )
            return core.surveyed(self._running(group), leader)
        if isinstance(action, Transfer):
            group.change = (f"swap: moving the leadership off "
                            f"{replica_name(group.name, action.leader)}")
            group.touch()
            cause = await self._transfer(run, action)
            return core.transferred() if cause is None else core.transfer_failed(cause)
        if isinstance(action, Finish):  # (the caller ends at a Finish)
            return [action]
        member = group.members.get(action.replica)
        if member is None:  # (the lock keeps members; a bug otherwise)
            return core.aborted(f"{replica_name(group.name, action.replica)} is gone")
        name = replica_name(group.name, action.replica)
        if isinstance(action, Preload):
            group.change = f"swap: {name} importing the {'new' if action.new else 'old'} code"
            group.touch()
            entry = run.entry if action.new else run.old.get(action.replica, run.entry)
            cause = await self._preload(run, member, entry)
            return core.preloaded() if cause is None else core.preload_failed(cause)
        if isinstance(action, Restart):
            group.change = f"swap: restarting {name}"
            group.touch()
            if action.new:
                self._event(member.slot, "swap_started", to_dna=run.entry.digest[:12])
            run.restarts.setdefault(action.replica, member.slot.restarts)
            cause = await self._restart(run, member)
            if cause is not None:
                run.failed_tail = [member.part.failure()] if member.part.failure() else []
                return core.restart_failed(cause)
            return core.restarted()
        assert isinstance(action, CatchUp)
        group.change = f"swap: {name} catching up"
        group.touch()
        t0 = trio.current_time()
        instance = member.slot.instance
        cause = await self._catch_up(run, member)
        if cause is not None:
            run.failed_tail = [member.part.failure()] if member.part.failure() else []
            if not _serving(member.slot, instance):
                # It exited, and its supervisor restarts it on the code that failed: stop
                # that now (the rollback starts it on the old code, with a fresh budget).
                await run.handle.stop_member(member)
            return core.catch_up_failed(cause)
        # A process of the swap's that crashed since its restart (and that its supervisor
        # restarted) was the swap's failure, not a restart of the replica: the count goes
        # back once the replica caught up (on the old code, after a rollback) or at the end.
        member.slot.restarts = run.restarts.pop(action.replica, member.slot.restarts)
        run.timeline[name] = round((trio.current_time() - run.started) * 1000.0, 1)
        if action.replica in core.new_code:
            run.to_version = member.slot.version
            self._event(member.slot, "swapped", to_dna=run.entry.digest[:12],
                        to_version=member.slot.version or None,
                        catch_up_ms=round((trio.current_time() - t0) * 1000.0, 1))
        return core.caught_up()

    async def _retarget(self, m: Member, entry: DnaEntry) -> None:
        """``m`` has no process: its next start runs ``entry``."""
        slot = m.slot
        if slot.created:
            await self.launcher.link(slot, entry)
        self.launcher.retire(slot)
        self._install(slot, entry)

    @staticmethod
    def _install(slot: CellSlot, entry: DnaEntry) -> None:
        if slot.dna is not None and slot.dna.digest != entry.digest:
            slot.previous_dna, slot.previous_decl = slot.dna, slot.decl
        slot.dna, slot.dna_digest = entry, entry.digest

    @staticmethod
    def _settle(run: _Run) -> None:
        """Each member's history once the swap is over, however it ended.

        A member whose code the swap changed remembers the code it ran before
        (``--rollback`` goes back to it); a member on the code it ran before
        the swap -- never swapped, its new code did not import, or rolled
        back -- keeps the history it had, so a swap that did not take effect
        leaves nothing behind (docs/swap.md). Restart counts the swap saved
        are put back.
        """
        for i, m in run.group.members.items():
            slot = m.slot
            if i in run.restarts:
                slot.restarts = run.restarts.pop(i)
            before = run.old.get(i)
            if before is None or slot.dna is None or i not in run.previous:
                continue
            if slot.dna.digest == before.digest:
                slot.previous_dna, slot.previous_decl = run.previous[i]
            else:
                slot.previous_dna, slot.previous_decl = before, run.old_decl[i]

    async def _preload(self, run: _Run, m: Member, entry: DnaEntry) -> str | None:
        """Make ``entry`` the code of ``m``'s next start, with a standby that imported it.

        On failure the slot is back on the code it ran; returns the cause.
        """
        slot = m.slot
        before = slot.dna
        timeout = run.timeout
        try:
            await self.launcher.link(slot, entry)
            await self._retire(slot)
            slot.dna, slot.dna_digest = entry, entry.digest  # (its history: _settle)
            pipe = self.launcher.preload(slot)
            if pipe is None:
                return None  # no free id for a standby now: the restart spawns afresh
            with trio.move_on_after(timeout) as scope:
                reports = await pipe.wait_loaded()
            if scope.cancelled_caught:
                cause = f"its code did not import within {timeout:g} s"
            elif reports.failure is not None:
                cause = reports.failure.describe(slot.key)
            elif not reports.loaded:
                cause = "its process ended before its code was imported"
            else:
                return None
        except (CellmeshError, OSError) as exc:
            cause = f"{type(exc).__name__}: {exc}"
        tail = list(slot.standby.tail) if slot.standby is not None else []
        with contextlib.suppress(CellmeshError, OSError):
            await self._retire(slot)
        if before is not None:
            slot.dna, slot.dna_digest = before, before.digest
        run.failed_tail = tail
        return cause

    async def _retire(self, slot: CellSlot) -> None:
        """Retire ``slot``'s standby and wait (bounded) until its backend id is free."""
        standby = slot.standby
        self.launcher.retire(slot)
        if standby is None:
            return
        with trio.move_on_after(STANDBY_EXIT):
            while self.backend.process_id(standby.cell_id) is not None:
                await trio.sleep(0.01)  # it reads EOF on its go pipe and exits
            return
        with contextlib.suppress(CellmeshError):
            self.backend.kill(standby.cell_id)

    async def _restart(self, run: _Run, m: Member) -> str | None:
        """Stop ``m`` and start it again (on the code its slot now has); the cause on failure."""
        slot = m.slot
        restarts = slot.restarts
        slot.swap_phase = "restarting"
        slot.touch()
        try:
            await run.handle.stop_member(m)
            with trio.move_on_after(run.timeout) as scope:
                await run.handle.start_member(m)
            if scope.cancelled_caught:
                await run.handle.stop_member(m)
                return f"not ready within {run.timeout:g} s"
            return None
        except CellmeshError as exc:
            return m.part.failure() or str(exc)
        finally:
            slot.restarts = restarts  # a swap is not a restart

    async def _catch_up(self, run: _Run, m: Member) -> str | None:
        """Wait until ``m`` caught up with the group and passed its probation (module doc)."""
        group, slot = run.group, m.slot
        instance = slot.instance
        others = [s.commit_index for i, s in group.stats().items() if i != m.id]
        target = max(others, default=0)
        confirmed = -1
        answered: ReplicaStats | None = None
        pause = POLL_FIRST
        with trio.move_on_after(run.timeout):
            while True:
                if not _serving(slot, instance):
                    return f"it exited: {_why_exited(m, instance)}"
                # Its runtime's answer on its peer socket, not its umbilical stats:
                # any code in its sandbox can send those.
                reply = await self._ask(group, m.id, rp.ReplicaStatusRequest())
                if isinstance(reply, ReplicaStats) and reply.replica == m.id:
                    answered = reply
                    if reply.applied_index >= target and is_voter(reply):
                        confirmed = await self._confirm(group, m.id, target)
                        if confirmed >= target:
                            break
                with trio.move_on_after(pause):  # ask again soon, or at a change
                    await slot.changed.wait()
                pause = min(POLL_MAX, pause * 2)
            slot.swap_phase = "probation"
            slot.touch()
            with trio.move_on_after(run.grace):
                while _serving(slot, instance):
                    await slot.changed.wait()
                return f"it exited in its probation: {_why_exited(m, instance)}"
            slot.swap_phase = ""
            if instance is not None:
                self.launcher.ensure_standby(slot, busy=instance.cell_id)
            return None
        said = "did not answer" if answered is None else (
            f"answers index {answered.applied_index} applied")
        claims = m.part.stats
        if claims is not None and (answered is None
                                   or claims.applied_index != answered.applied_index):
            said += f" (its stats claim {claims.applied_index})"
        seen = "did not confirm any" if confirmed < 0 else f"confirms index {confirmed}"
        return (f"not within {run.timeout:g} s: it {said}, the leader {seen}, of the "
                f"group's commit index {target}")

    async def _confirm(self, group: Group, replica: int, target: int) -> int:
        """The leader's match index of ``replica`` (``target`` when ``replica`` itself is
        the leader a majority agrees on; -1: no answer)."""
        leader = agreed_leader(group.stats(), len(group.members))
        if leader is None:
            return -1
        if leader == replica:
            return target
        reply = await self._ask(group, leader, rp.ReplicaProgressRequest(id=replica))
        if isinstance(reply, rp.ReplicaProgress) and reply.replica == replica:
            return reply.match
        return -1

    async def _ask(self, group: Group, replica: int, msg: object) -> object:
        """One request on ``replica``'s peer socket; None when it cannot be answered."""
        with trio.move_on_after(ASK_TIMEOUT):
            try:
                async with Synapse.grow(group.name, socket_path=group.peer_path(replica),
                                        client_name="root", connect_timeout=ASK_TIMEOUT) as syn:
                    return await syn.fire(msg)
            except CellmeshError:
                return None
        return None

    async def _transfer(self, run: _Run, action: Transfer) -> str | None:
        """Move the leadership from ``action.leader`` to ``action.to``; the cause on failure."""
        group = run.group
        with trio.move_on_after(run.timeout):
            try:
                await self.admin.transfer(group.name, group.peer_path(action.leader), action.to)
            except NotLeaderHere as exc:
                if exc.leader_hint == action.leader:
                    return str(exc)
                return None  # it no longer leads: the next survey sees who does
            except CellmeshError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None
        return f"no answer within {run.timeout:g} s"

    async def _leader(self, group: Group, not_leader: int | None, timeout: float) -> int | None:
        """Wait (bounded) for a leader a majority agrees on, other than ``not_leader``."""
        with trio.move_on_after(timeout):
            while True:
                leader = agreed_leader(group.stats(), len(group.members))
                if leader is not None and leader != not_leader and \
                        leader in self._running(group):
                    return leader
                with trio.move_on_after(1.0):
                    await group.changed.wait()
        return None

    @staticmethod
    def _running(group: Group) -> list[int]:
        return [i for i, m in group.members.items() if m.running]

    @staticmethod
    def _progress(run: _Run) -> str:
        core = run.core
        current = core.current
        where = "" if current is None else f" (next: {replica_name(run.group.name, current)})"
        return f"{core.phase.value}, {len(core.on_new_code)} of {len(run.group.members)} " \
               f"on the new code{where}"

    # ------------------------------------------------------------ the end

    def _report(self, group: Group, core: GroupSwap, run: _Run | None, finish: Finish, *,
                started: float, from_version: str, old: Mapping[int, DnaEntry],
                to_dna: str = "") -> SwapReport:
        now = trio.current_time()
        outcome = finish.outcome
        olds = {e.digest for e in old.values()}
        to_dna = run.entry.digest if run is not None else to_dna
        report = SwapReport(
            name=group.name, outcome=outcome.value, cause=finish.cause,
            from_dna=olds.pop() if len(olds) == 1 else "", to_dna=to_dna,
            from_version=from_version, to_version=run.to_version if run is not None else "",
            serving_ms=(now - started) * 1000.0 if outcome is Outcome.SWAPPED else None,
            total_ms=(now - started) * 1000.0, state_bytes=None,
            log_tail=[] if outcome.ok or run is None else run.failed_tail,
            timeline={} if run is None else dict(run.timeline),
        )
        where = f"root: swap of {group.name}"
        if outcome is Outcome.SWAPPED:
            self.log(f"{where}: every replica runs DNA {to_dna[:12]} after "
                     f"{report.total_ms:.0f} ms")
        elif not outcome.ok:
            self.log(f"{where}: {outcome.value.replace('_', ' ')}: {finish.cause}")
            kind: EventKind = "swap_failed" if outcome is Outcome.FAILED else "swap_rolled_back"
            for m in group.members.values():
                self._event(m.slot, kind, cause=finish.cause)
        return report

    def _event(self, slot: CellSlot, kind: EventKind, **fields: object) -> None:
        self.events.emit(slot.stem, kind, dict(fields))

def _why_exited(m: Member, instance: CellInstance | None) -> str:
    """Why ``instance``, ``m``'s process under probation, ended: its own exit reason.

    Not only the replica's record of its last failure: by the time the swap
    looks, its supervisor may have restarted it, and the new process's ready
    cleared that record ("no cause reported", under load).
    """
    reason = instance.exit_reason if instance is not None else None
    if reason is None or not isinstance(reason, AbnormalExit):
        return m.part.failure() or "no cause reported"
    text = reason_text(reason)
    bare = text.startswith("exit code ") and text[10:].isdigit()
    return f"{text}: {m.part.last_line}" if bare and m.part.last_line else text


def _serving(slot: CellSlot, instance: CellInstance | None) -> bool:
    """``instance`` is still ``slot``'s and has not exited."""
    return instance is not None and slot.instance is instance and instance.state != "exited"


__all__ = ["ASK_TIMEOUT", "POLL_FIRST", "POLL_MAX", "STANDBY_EXIT", "GroupSwapper"]
