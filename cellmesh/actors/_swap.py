"""The hot swap driver: carries out the plans of :mod:`cellmesh.actors.swap` on real processes.

Theory of operation
-------------------
The root owns one :class:`Swapper`. A swap request (``cellmesh swap``,
``reload``) becomes a :class:`SwapRun`: a :class:`~cellmesh.actors.swap.SwapState`
(the decisions) and one task that executes its plans. Events reach the
state from four places, each of which calls :meth:`Swapper._feed` and so
executes the resulting plan right away:

* the run's own task, when an awaited action finishes (the DNA build, the
  provisioning of a sandbox) or the state's timer is due;
* the umbilical of the cell (the root forwards :class:`~cellmesh.actors.control.NextOrder`,
  ``SwapIn``, ``SwapInFailed``, ``SwapOut`` and the new process's
  ``CellReady`` here: :meth:`Swapper.from_cell`, :meth:`Swapper.claims_ready`);
* the watcher task of the new process (its exit, until the instance adopts it);
* the cell's instance (:class:`~cellmesh.actors._cells.SwapWatch`): the old
  process's exit, and a stop requested by its supervisor.

An exit of either process reaches the state described by
:func:`~cellmesh.actors._cells.describe_exit`: with the failure the process
wrote on its report pipe (:mod:`cellmesh.actors.exitcause`), so a rollback
names the exception even when the process could not say it on the umbilical.

Plans run in order; the actions that wait (building, provisioning,
restoring) run one at a time in the run's nursery, the others at once.
:class:`~cellmesh.actors.swap.AdoptNew` is always executed synchronously, the
moment it is planned: that is what lets the old process's exit, seen by the
instance, hand the instance over to the new process without the supervisor
ever seeing an exit (monitors, links, dynamic children and the restart
intensity are untouched). Each process is waited on by exactly one task (a
pidfd has one waiter): the instance waits on the old process, the run on the
new one until the adoption, the instance after it.

Bounds: one swap per cell at a time; at most :data:`MAX_POLLS` pending
order polls per cell (a new poll ends the oldest one, which is answered
with no order: a process that died leaves its poll waiting until
:data:`POLL_SECONDS`, and refusing the new one would leave the cell's
serving process deaf to orders, so unswappable); the state a cell hands over is capped by
``[root] swap_max_state`` (checked before the root touches it: it arrives as
a mapped vesicle and is passed on as one); every wait is bounded by the
state's timers. A swap of a cell that is not running re-makes its sandboxes
for its next start.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import trio

from ..errors import CellmeshError
from ..sandbox import CellBackend
from ..sandbox._events import EventKind, EventSink
from ._cells import CellInstance, CellSlot, Launched, describe_exit
from ._launch import Launcher
from ._tasks import Background
from .control import (
    CellReady,
    CellStats,
    Handover,
    NextOrder,
    Suspend,
    SwapIn,
    SwapInFailed,
    SwapOut,
    SwapReport,
    SwapVerdict,
)
from .dna import DnaCache, DnaEntry, DnaHold, verify_entry
from .errors import DnaError, RootRequestError
from .exitcause import clean, keyed, version_text
from .manifest import CellDecl
from .swap import (
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
    Provision,
    RefuseNew,
    ReleaseOld,
    Restore,
    ResumeOld,
    Retarget,
    SetTimer,
    SpawnNew,
    SwapState,
    suspend_seconds,
)

#: Order polls a cell may have pending at once (its serving process and a successor;
#: a further poll ends the oldest).
MAX_POLLS: Final = 4
#: A pending order poll is answered with None after this long (the cell polls again).
POLL_SECONDS: Final = 60.0

_Message = NextOrder | SwapIn | SwapInFailed | SwapOut
#: The cell -> root requests the swapper answers.
MESSAGES: Final = (NextOrder, SwapIn, SwapInFailed, SwapOut)


@attrs.define(eq=False)
class _Poll:
    """One pending ``NextOrder`` of one process."""

    event: trio.Event = attrs.Factory(trio.Event)
    order: Suspend | None = None


@attrs.define(eq=False)
class SwapRun:
    """One swap of one cell in progress: the decisions and what the driver holds."""

    slot: CellSlot
    core: SwapState
    decl: CellDecl
    rollback: bool
    from_entry: DnaEntry | None
    from_decl: CellDecl
    from_version: str
    requested_at: float
    #: Pins the code in force, the new code and the rollback target in the DNA cache
    #: until the run is over (released by ``_finish``).
    hold: DnaHold
    entry: DnaEntry | None = None
    instance: CellInstance | None = None
    old: Launched | None = None
    new: Launched | None = None
    new_id: str = ""
    #: The new version runs in the cell's standby (same sandbox: only the code differs).
    reuse: bool = False
    new_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    hello: trio.Event = attrs.Factory(trio.Event)
    hello_error: str | None = None
    verdict: trio.Event = attrs.Factory(trio.Event)
    resume: bool = True
    state: tuple[str, str, Any, list[Any]] | None = None
    state_bytes: int | None = None
    queue: collections.deque[Action] = attrs.Factory(collections.deque)
    busy: bool = False
    timer_wake: trio.Event = attrs.Factory(trio.Event)
    nursery: trio.Nursery | None = None
    done: trio.Event = attrs.Factory(trio.Event)
    report: SwapReport | None = None
    #: Milliseconds from the start to the first entry of each phase.
    timeline: dict[str, float] = attrs.Factory(dict)


@attrs.define(eq=False)
class _Watch:
    """The :class:`~cellmesh.actors._cells.SwapWatch` a run puts on the serving instance."""

    swapper: Swapper
    run: SwapRun

    def process_exited(self, instance: CellInstance, cell_id: str, text: str) -> None:
        run = self.run
        if run.old is not None and cell_id == run.old.cell_id:
            with self.swapper.contained(run):
                self.swapper._feed(run, run.core.old_exited(text, _now()))

    def stop_requested(self, instance: CellInstance) -> None:
        with self.swapper.contained(self.run):
            self.swapper._feed(self.run, self.run.core.stop_requested(_now()))


def _now() -> float:
    return trio.current_time()


@attrs.define(eq=False)
class Swapper:
    """The root's hot swaps (see the module doc)."""

    backend: CellBackend
    launcher: Launcher
    dna: DnaCache
    tasks: Background
    log: Callable[[str], None]
    events: EventSink
    max_state: int
    #: True once the root is stopping (no standby is started then).
    stopping: Callable[[], bool] = lambda: False
    runs: dict[str, SwapRun] = attrs.Factory(dict)
    _orders: dict[tuple[str, str], float] = attrs.Factory(dict)
    _polls: dict[tuple[str, str], _Poll] = attrs.Factory(dict)

    # ------------------------------------------------------------ requests

    async def swap(
        self, slot: CellSlot, *, timeout: float, grace: float, decl: CellDecl | None = None,
        rollback: bool = False,
    ) -> SwapReport:
        """Swap ``slot`` to its DNA's current content (or ``decl``'s, or back: ``rollback``).

        Returns the report once the swap is over (also when it rolled back).
        Raises :class:`RootRequestError` when a swap of the cell is already
        running or a rollback has nothing to go back to.
        """
        if not (timeout > 0 and grace >= 0):  # (NaN fails both)
            raise RootRequestError(slot.name, "a swap needs timeout > 0 and grace >= 0")
        busy = self.runs.get(slot.name)
        if busy is not None:
            raise RootRequestError(
                slot.name,
                f"a swap of this cell is already in progress ({busy.core.phase.value}, "
                f"started {time.monotonic() - busy.requested_at:.1f} s ago); "
                "wait for it to finish",
            )
        if rollback and (slot.previous_dna is None or slot.previous_decl is None):
            raise RootRequestError(slot.name, "has no previous DNA to roll back to")
        run = SwapRun(
            slot=slot, core=SwapState(timeout=timeout, grace=grace),
            decl=(slot.previous_decl if rollback else decl) or slot.decl,
            rollback=rollback, from_entry=slot.dna, from_decl=slot.decl,
            from_version=slot.version, requested_at=time.monotonic(), hold=self.dna.hold(),
        )
        for entry in (slot.dna, slot.previous_dna):
            if entry is not None:
                run.hold.add(entry.digest)
        self.runs[slot.name] = run
        self.tasks.start_soon(self._drive, run, name=f"swap of {slot.name}")
        await run.done.wait()
        await self.launcher.pruner.settled()  # the cache holds no more than the cell needs
        assert run.report is not None
        return run.report

    async def settle(self, slot: CellSlot) -> None:
        """Wait until no swap of ``slot`` runs (before the root starts a process of it)."""
        while (run := self.runs.get(slot.name)) is not None:
            await run.done.wait()

    def serving_id(self, slot: CellSlot) -> str | None:
        """The backend id of the process serving ``slot`` while a swap's new one serves."""
        run = self.runs.get(slot.name)
        if run is None or run.new is None or not run.core.new_serving:
            return None
        return run.new.cell_id

    # ------------------------------------------------------------ from the cell

    def claims_ready(self, slot: CellSlot, msg: CellReady) -> bool:
        """True when ``msg`` is the readiness of a swap's new process (handled here)."""
        run = self.runs.get(slot.name)
        if run is None or run.new is None or not msg.token or msg.token != run.new.token:
            return False
        self._feed(run, run.core.new_ready(_now()))
        return True

    def ignores_stats(self, slot: CellSlot, msg: CellStats) -> bool:
        """True when ``msg`` comes from a process that does not serve the cell now."""
        run = self.runs.get(slot.name)
        if run is None or not msg.token:
            return False
        serving = run.new if run.core.new_serving else run.old
        return serving is not None and msg.token != serving.token

    async def from_cell(self, slot: CellSlot, msg: _Message) -> Any:
        """Answer a swap request from one of ``slot``'s processes."""
        if isinstance(msg, NextOrder):
            return await self._next_order(slot, msg.token)
        run = self.runs.get(slot.name)
        if isinstance(msg, SwapIn):
            if run is None or run.new is None or msg.token != run.new.token:
                raise RootRequestError(slot.name, "no swap is waiting for this process")
            self._feed(run, run.core.new_hello(version_text(msg.version), _now()))
            await run.hello.wait()
            if run.hello_error is not None:
                raise RootRequestError(slot.name, run.hello_error)
            state, run.state = run.state, None  # the reply holds the only reference
            name, print_, data, blobs = state if state is not None else ("", "", None, [])
            return Handover(
                dna=run.from_entry.digest if run.from_entry is not None else "",
                version=run.from_version, state_name=name, state_fingerprint=print_,
                state=data, blobs=blobs, probation=run.core.grace,
            )
        if isinstance(msg, SwapInFailed):
            if run is not None and run.new is not None and msg.token == run.new.token:
                # the new version's words: printable, bounded (it may be hostile)
                type_name, message = keyed(slot.key, clean(msg.type_name, 200),
                                           clean(msg.message, 2000, keep_newlines=True))
                self._feed(run, run.core.new_failed(clean(msg.stage, 100), type_name, message,
                                                    _now()))
            return None
        if run is None or run.old is None or msg.token != run.old.token:
            raise RootRequestError(slot.name, "no swap is waiting for this process's state")
        if not run.core.awaiting_old:
            raise RootRequestError(slot.name, "the swap did not ask for the state (now)")
        if msg.failure:
            failure = clean(msg.failure, 2000, keep_newlines=True)
            self._feed(run, run.core.old_failed(failure, _now()))
            return SwapVerdict(resume=True)
        size = None if msg.state is None else sum(
            memoryview(part).nbytes for part in (msg.state, *msg.blobs)
        )
        if size is not None and size > self.max_state:
            self._feed(run, run.core.old_failed(
                f"its state is {size} bytes, over the limit of {self.max_state} "
                "([root] swap_max_state)", _now(),
            ))
            return SwapVerdict(resume=True)
        run.state = (msg.state_name[:200], msg.state_fingerprint[:64], msg.state, msg.blobs)
        run.state_bytes = size
        self._feed(run, run.core.old_out(_now()))
        await run.verdict.wait()
        return SwapVerdict(resume=run.resume)

    async def _next_order(self, slot: CellSlot, token: str) -> Suspend | None:
        key = (slot.name, token)
        due = self._orders.pop(key, None)
        run = self.runs.get(slot.name)
        if due is not None and run is not None:
            run.core.order_delivered()
            return Suspend(seconds=suspend_seconds(due, _now()))
        if key in self._polls:
            raise RootRequestError(slot.name, "this process already waits for an order")
        waiting = [k for k in self._polls if k[0] == slot.name]  # oldest first
        if len(waiting) >= MAX_POLLS:
            # Most likely a dead process's (its poll outlives it): answer it with no
            # order. A live process whose poll this was simply polls again.
            self._polls.pop(waiting[0]).event.set()
        poll = _Poll()
        self._polls[key] = poll
        try:
            with trio.move_on_after(POLL_SECONDS):
                await poll.event.wait()
        finally:
            if self._polls.get(key) is poll:
                del self._polls[key]
        return poll.order

    # ------------------------------------------------------------ the run's task

    async def _drive(self, run: SwapRun) -> None:
        try:
            with self.contained(run):
                async with trio.open_nursery() as nursery:
                    run.nursery = nursery
                    nursery.start_soon(self._timer, run)
                    self._feed(run, run.core.start(_now()))
                    await run.done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            if not run.done.is_set():  # cancelled: the root is stopping
                with trio.CancelScope(shield=True):
                    self._abort(run, "the root is stopping")

    @contextlib.contextmanager
    def contained(self, run: SwapRun) -> Iterator[None]:
        """A failure of the swap's own code ends the swap, never the root (it is logged)."""
        try:
            yield
        except Exception as exc:
            self.log(f"root: swap of {run.slot.name}: internal error: {exc!r}")
            if not run.done.is_set():
                with contextlib.suppress(Exception):
                    self._abort(run, f"internal error in the swap: {exc!r}")
            if not run.done.is_set():  # even the abort failed: release every waiter
                run.hello.set()
                run.verdict.set()
                run.report = SwapReport(
                    name=run.slot.name, outcome=Outcome.FAILED.value,
                    cause=f"internal error in the swap: {exc!r}", from_dna="", to_dna="",
                    from_version=run.from_version, to_version="", serving_ms=None,
                    total_ms=0.0, state_bytes=None, log_tail=[], timeline={},
                )
                if self.runs.get(run.slot.name) is run:
                    del self.runs[run.slot.name]
                run.slot.swap_phase = ""
                run.done.set()

    async def _timer(self, run: SwapRun) -> None:
        while True:
            run.timer_wake = trio.Event()
            at = run.core.timer_at
            if at is None:
                await run.timer_wake.wait()
                continue
            with trio.move_on_at(at):
                await run.timer_wake.wait()
                continue
            self._feed(run, run.core.tick(_now()))

    async def _watch_new(self, run: SwapRun, cell_id: str) -> None:
        with run.new_scope:
            status = await self.backend.wait_async(cell_id)
            # What it reported on its report pipe (``exit code 1: ImportError: ...``).
            failure = run.slot.exit_failure(cell_id, status)
            text = describe_exit(status, failure, run.slot.key)
            self._feed(run, run.core.new_exited(text, _now()))

    # ------------------------------------------------------------ executing plans

    def _feed(self, run: SwapRun, plan: list[Action]) -> None:
        for action in plan:
            if isinstance(action, AdoptNew):
                self._adopt(run)  # at once: see the module doc
            else:
                run.queue.append(action)
        self._pump(run)
        slot = run.slot
        phase = "" if run.core.done else run.core.phase.value
        if slot.swap_phase != phase:
            if phase:
                run.timeline.setdefault(phase, (_now() - run.core.started_at) * 1000.0)
            slot.swap_phase = phase
            slot.touch()

    def _pump(self, run: SwapRun) -> None:
        while run.queue and not run.busy:
            action = run.queue.popleft()
            if isinstance(action, (BuildDna, Retarget, Provision, Restore)):
                run.busy = True
                assert run.nursery is not None
                run.nursery.start_soon(self._waiting_action, run, action)
                return
            more = self._act(run, action)
            if more:
                run.queue.extendleft(reversed(more))  # the outcome comes before the rest

    async def _waiting_action(
        self, run: SwapRun, action: BuildDna | Retarget | Provision | Restore
    ) -> None:
        try:
            if isinstance(action, BuildDna):
                plan = await self._build(run)
            elif isinstance(action, Retarget):
                plan = await self._retarget(run)
            elif isinstance(action, Provision):
                plan = await self._provision(run)
            else:
                plan = await self._restore(run, action.committed)
        finally:
            run.busy = False
        self._feed(run, plan)

    def _act(self, run: SwapRun, action: Action) -> list[Action]:
        """Execute one action that does not wait; return the plan of its outcome, if any."""
        core = run.core
        if isinstance(action, SpawnNew):
            assert run.entry is not None
            try:
                launched = self.launcher.take_standby(run.slot, run.entry) if run.reuse else None
                if launched is None:  # a new sandbox, or the standby died just now
                    launched = self.launcher.spawn_successor(run.slot, run.new_id, run.entry)
            except Exception as exc:
                return core.spawn_failed(f"{type(exc).__name__}: {exc}", _now())
            run.new = launched
            assert run.nursery is not None
            run.nursery.start_soon(self._watch_new, run, run.new_id)
        elif isinstance(action, OrderSuspend):
            assert run.old is not None
            key = (run.slot.name, run.old.token)
            poll = self._polls.get(key)
            if poll is not None and poll.order is None:
                poll.order = Suspend(seconds=suspend_seconds(action.deadline, _now()))
                poll.event.set()
                core.order_delivered()
            else:
                self._orders[key] = action.deadline
        elif isinstance(action, CancelOrder):
            if run.old is not None:
                self._orders.pop((run.slot.name, run.old.token), None)
        elif isinstance(action, GiveState):
            run.hello.set()
        elif isinstance(action, RefuseNew):
            if not run.hello.is_set():
                run.hello_error = action.reason
                run.hello.set()
        elif isinstance(action, KillNew):
            if run.new is not None:
                with contextlib.suppress(CellmeshError):
                    self.backend.kill(run.new.cell_id)
        elif isinstance(action, (ResumeOld, ReleaseOld)):
            run.resume = isinstance(action, ResumeOld)
            run.verdict.set()
        elif isinstance(action, KillOld):
            if run.old is not None:
                with contextlib.suppress(CellmeshError):
                    self.backend.kill(run.old.cell_id, as_crash=True, why=action.why)
        elif isinstance(action, SetTimer):
            run.timer_wake.set()
        elif isinstance(action, Finish):
            self._finish(run, action)
        return []

    def _adopt(self, run: SwapRun) -> None:
        """The instance stands for the new process from now on (synchronously)."""
        run.new_scope.cancel()  # unregisters our wait on its pidfd at once
        instance = run.instance
        if instance is not None and run.new is not None:
            instance.adopt(run.new)
        run.slot.version = run.core.new_version

    # ------------------------------------------------------------ waiting actions

    async def _build(self, run: SwapRun) -> list[Action]:
        slot = run.slot
        core = run.core
        try:
            entry = await self._previous(slot) if run.rollback else (
                await self.launcher.build(run.decl, run.hold)
            )
        except (DnaError, OSError) as exc:
            return core.dna_failed(str(exc))
        run.entry = entry
        instance = slot.instance
        unchanged = entry.digest == slot.dna_digest and run.decl == slot.decl and slot.created
        running = instance is not None and instance.state in ("starting", "running")
        if not unchanged:
            self._event(run, "swap_started")
        return core.dna_built(unchanged=unchanged, running=running, now=_now())

    @staticmethod
    async def _previous(slot: CellSlot) -> DnaEntry:
        """The entry that ran before the last swap, verified (DnaError if damaged)."""
        entry = slot.previous_dna
        assert entry is not None
        problems = await trio.to_thread.run_sync(verify_entry, entry.root, entry.digest)
        if problems:
            raise DnaError(
                f"the previous DNA entry {entry.digest[:12]} is damaged: "
                f"{'; '.join(problems[:3])}"
            )
        return entry

    async def _retarget(self, run: SwapRun) -> list[Action]:
        slot = run.slot
        assert run.entry is not None
        self.launcher.retire(slot)  # it preloaded the old code
        try:
            if slot.created:
                await self.launcher.link(slot, run.entry)
                if run.decl != slot.decl:
                    for cell_id in slot.cell_ids:
                        await self.launcher.provision(slot, cell_id, run.decl, run.entry)
        except Exception as exc:
            return run.core.dna_failed(f"could not re-make its sandbox: {exc}")
        self._install(run)
        await self._prune(slot)
        return run.core.retargeted()

    async def _provision(self, run: SwapRun) -> list[Action]:
        slot = run.slot
        core = run.core
        instance = slot.instance
        if instance is None or instance.state not in ("starting", "running"):
            return core.provision_failed("the cell stopped meanwhile", _now())
        run.instance = instance
        run.old = Launched(cell_id=instance.cell_id, pid=instance.pid or 0, token=instance.token)
        instance.swap = _Watch(self, run)
        assert run.entry is not None
        standby = slot.standby
        try:
            await self.launcher.link(slot, run.entry)
            if run.decl == slot.decl and standby is not None:
                # Same sandbox, other code: the standby takes over (no new process).
                run.reuse = True
                run.new_id = standby.cell_id
            else:
                run.new_id = next(i for i in slot.cell_ids if i != instance.cell_id)
                self.launcher.retire(slot)
                if run.decl != slot.decl:  # another sandbox (a reload changed the cell)
                    await self.launcher.provision(slot, run.new_id, run.decl, run.entry)
        except Exception as exc:
            return core.provision_failed(f"{type(exc).__name__}: {exc}", _now())
        return core.provisioned(_now())

    async def _restore(self, run: SwapRun, committed: bool) -> list[Action]:
        """Re-make the freed id for the declaration in force if it changed (its process
        has exited), and drop the versions of the DNA no process needs."""
        slot = run.slot
        if committed:
            self._install(run)
            freed = run.old.cell_id if run.old is not None else ""
            decl, entry = run.decl, run.entry
            remake = run.decl != run.from_decl
        else:
            freed = run.new_id
            decl, entry = run.from_decl, run.from_entry
            remake = run.decl != run.from_decl and bool(run.new_id)
        if remake and freed and entry is not None and slot.created:
            try:
                await self.launcher.provision(slot, freed, decl, entry)
            except Exception as exc:
                self.log(f"root: swap of {slot.name}: could not re-make {freed}: {exc}")
        await self._prune(slot)
        return run.core.restored()

    async def _prune(self, slot: CellSlot) -> None:
        """Keep the code in force and the one before it (``swap --rollback``) in the DNA dir."""
        keep = {e.digest for e in (slot.dna, slot.previous_dna) if e is not None}
        try:
            await self.launcher.prune(slot, keep)
        except OSError as exc:
            self.log(f"root: swap of {slot.name}: could not prune its DNA directory: {exc}")

    def _install(self, run: SwapRun) -> None:
        """The new DNA (and declaration) is the cell's from now on."""
        slot = run.slot
        assert run.entry is not None
        if run.from_entry is not None:
            slot.previous_dna, slot.previous_decl = run.from_entry, run.from_decl
        slot.dna = run.entry
        slot.dna_digest = run.entry.digest
        slot.decl = run.decl

    # ------------------------------------------------------------ the end

    def _finish(self, run: SwapRun, action: Finish) -> None:
        slot = run.slot
        core = run.core
        outcome = action.outcome
        if run.instance is not None:
            run.instance.swap = None
        if not run.hello.is_set():
            run.hello_error = action.cause or "the swap is over"
            run.hello.set()
        if not run.verdict.is_set():
            run.resume = True
            run.verdict.set()
        if run.old is not None:
            self._orders.pop((slot.name, run.old.token), None)
        run.state = None
        slot.swap_phase = ""
        run.hold.release()  # the slot references what it needs from now on
        self.launcher.pruner.request()
        instance = slot.instance
        if instance is not None and slot.created and not self.stopping():
            if instance.state in ("starting", "running"):
                self.launcher.ensure_standby(slot, busy=instance.cell_id)
            elif instance.state == "dormant":
                self.launcher.ensure_standby(slot, busy=None)
        now = _now()
        new_entry = run.entry
        served = core.serving_at is not None and outcome is Outcome.SWAPPED
        run.report = SwapReport(
            name=slot.name, outcome=outcome.value, cause=action.cause,
            from_dna=run.from_entry.digest if run.from_entry is not None else "",
            to_dna=new_entry.digest if new_entry is not None else "",
            from_version=run.from_version,
            to_version=core.new_version,
            serving_ms=(
                (core.serving_at - core.started_at) * 1000.0
                if served and core.serving_at is not None else None
            ),
            total_ms=(now - core.started_at) * 1000.0,
            state_bytes=run.state_bytes if served else None,
            log_tail=[] if outcome.ok or run.new is None else list(run.new.tail),
            timeline={k: round(v, 2) for k, v in run.timeline.items()},
        )
        self._log_outcome(run.report)
        kind: EventKind | None = {
            Outcome.SWAPPED: "swapped", Outcome.ROLLED_BACK: "swap_rolled_back",
            Outcome.FAILED: "swap_failed", Outcome.RETARGETED: "swapped",
            Outcome.UNCHANGED: None,
        }[outcome]
        if kind is not None:
            self._event(run, kind)
        if self.runs.get(slot.name) is run:
            del self.runs[slot.name]
        slot.touch()
        run.done.set()

    def _abort(self, run: SwapRun, cause: str) -> None:
        """The run's task is cancelled (the root stops): leave nothing running or waiting."""
        run.new_scope.cancel()
        if run.new is not None and not run.core.new_serving:
            with contextlib.suppress(CellmeshError):
                self.backend.kill(run.new.cell_id)
        self._finish(run, Finish(outcome=run.core.outcome or Outcome.FAILED, cause=cause))

    def _log_outcome(self, report: SwapReport) -> None:
        where = f"root: swap of {report.name}"
        if report.outcome == Outcome.SWAPPED.value:
            self.log(f"{where}: now DNA {report.to_dna[:12]} (version "
                     f"{report.to_version or '-'}; was {report.from_dna[:12]}), serving after "
                     f"{report.serving_ms or 0:.0f} ms")
        elif report.outcome in (Outcome.ROLLED_BACK.value, Outcome.FAILED.value):
            self.log(f"{where}: {report.outcome.replace('_', ' ')}: {report.cause}")

    def _event(self, run: SwapRun, kind: EventKind) -> None:
        report = run.report
        fields: dict[str, object] = {
            "from_dna": (run.from_entry.digest[:12] if run.from_entry is not None else None),
            "to_dna": run.entry.digest[:12] if run.entry is not None else None,
        }
        if report is not None:
            fields.update(
                outcome=report.outcome, cause=report.cause or None,
                from_version=report.from_version or None, to_version=report.to_version or None,
                serving_ms=None if report.serving_ms is None else round(report.serving_ms, 1),
                state_bytes=report.state_bytes,
            )
        if kind == "swapped" and run.new is not None:  # which process serves from now on
            with contextlib.suppress(Exception):
                fields["pid"] = self.backend.process_id(run.new.cell_id)
        self.events.emit(run.slot.name, kind, fields)


__all__ = ["MAX_POLLS", "MESSAGES", "POLL_SECONDS", "SwapRun", "Swapper"]
