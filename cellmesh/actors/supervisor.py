"""Supervisor: the Trio driver that carries out the restart policy's plans.

Theory of operation
-------------------
A :class:`Supervisor` owns one :class:`~cellmesh.actors.policy.SupervisorState`
and a nursery for its children. It is a thin loop:

1. ``run()`` plans the start of every child and executes the plan, then
   reports itself started (``task_status``);
2. it waits for the next event -- a child exit (one watcher task per child
   awaits :meth:`ChildHandle.wait`, which for OS processes wakes on the
   process's pidfd the moment it dies) or a request (``start_child``,
   ``terminate_child``, ``stop`` ...);
3. it feeds the event to the state and executes the returned plan in order:
   starting a child through the :class:`ChildFactory` (reporting success or
   failure back at once, as the policy requires), stopping one with its
   :class:`~cellmesh.actors.policy.Shutdown`, or escalating.

Events are handled one at a time, so a plan is never interleaved with another.
An exit that arrives for a child the supervisor stopped itself, or for an
instance that has since been replaced, is recognised by handle identity and
dropped.

Stopping a child: ``brutal_kill`` -> :meth:`ChildHandle.kill`; ``timeout(s)``
-> :meth:`ChildHandle.terminate`, wait up to ``s`` seconds, then ``kill``;
``infinity`` -> ``terminate`` and wait. For OS processes that is SIGKILL,
SIGTERM / wait / SIGKILL, SIGTERM / wait. Children are stopped one at a
time in the plan's order, except the dynamic children of a
``simple_one_for_one`` supervisor, which are stopped concurrently (as OTP
does), so many slow children cost one shutdown timeout.

Ending: ``stop()`` stops every child in reverse start order and ``run()``
returns. Escalation (restart intensity exceeded, or a child failing to start
at supervisor start) stops every child in reverse start order and ``run()``
raises :class:`~cellmesh.actors.errors.SupervisorEscalation`. Cancellation of
``run()`` stops every child the same way inside a shielded scope before the
cancellation propagates, so no child outlives its supervisor.

Nesting: :class:`SupervisorChildHandle` runs a sub-supervisor as a child. Its
escalation is seen by the parent as the exit ``ShutdownExit`` (OTP's reason
``shutdown``); ``terminate`` asks it to stop its children in order, ``kill``
cancels it (its children are then killed at once).
"""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs
import trio

from ..errors import CellmeshError
from .errors import (
    ChildStartFailed,
    SupervisorEscalation,
    SupervisorRequestError,
    SupervisorStopped,
)
from .policy import (
    AbnormalExit,
    Action,
    Backoff,
    ChildInfo,
    ChildSpec,
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
)


class ChildHandle(Protocol):
    """One started child, as the supervisor sees it.

    Contract: ``wait`` returns once the child has exited and may be awaited
    again, and concurrently, returning the same reason; ``terminate`` asks the
    child to stop (SIGTERM) and ``kill`` stops it at once (SIGKILL); both are
    no-ops once it has exited and never block.
    """

    async def wait(self) -> ExitReason:
        """Wait until the child has exited; return why."""
        ...

    def terminate(self) -> None:
        """Ask the child to stop."""
        ...

    def kill(self) -> None:
        """Stop the child at once."""
        ...


class ChildFactory(Protocol):
    """Starts children: the seam where the sandbox (or a test fake) plugs in.

    ``start`` returns once the child runs (or raises any :class:`Exception`
    when it cannot be started: that is a start failure for the policy).
    ``nursery`` is the supervisor's children nursery, for children that are
    Trio tasks (sub-supervisors); process-backed factories ignore it.
    """

    async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
        """Start the child described by ``spec``."""
        ...


@attrs.frozen(kw_only=True)
class SupervisorEvent:
    """A lifecycle fact, for logs and tests: ``kind`` is one of
    ``started``, ``start_failed``, ``exited``, ``stopping``, ``stopped``,
    ``removed``, ``escalated``, ``delaying``; a ``delaying`` event's ``delay``
    is its backoff in seconds (``detail`` says the same, for logs)."""

    kind: str
    child_id: str
    detail: str = ""
    delay: float | None = None


@attrs.define(eq=False)
class _ChildExit:
    child_id: str
    handle: ChildHandle
    reason: ExitReason


@attrs.define(eq=False)
class _Request:
    plan: Callable[[], list[Action]]
    new_child: bool = False
    stop: bool = False
    done: trio.Event = attrs.Factory(trio.Event)
    child_id: str = ""
    error: BaseException | None = None


_Event = _ChildExit | _Request


@attrs.define(eq=False)
class Supervisor:
    """Runs ``spec``'s children through ``factory`` with OTP semantics (module docstring).

    ``on_event`` is called synchronously with every :class:`SupervisorEvent`.
    Requests (``start_child`` ...) may come from any task; they are queued and
    executed by the ``run()`` task in arrival order.
    """

    _spec: SupervisorSpec
    _factory: ChildFactory
    _on_event: Callable[[SupervisorEvent], None] | None = None
    _state: SupervisorState = attrs.field(init=False)
    _handles: dict[str, ChildHandle] = attrs.field(init=False, factory=dict)
    _send: trio.MemorySendChannel[_Event] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[_Event] = attrs.field(init=False)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _failures: dict[str, str] = attrs.field(init=False, factory=dict)
    _running: bool = attrs.field(init=False, default=False)
    _closed: bool = attrs.field(init=False, default=False)
    _brutal: bool = attrs.field(init=False, default=False)
    _started: bool = attrs.field(init=False, default=False)
    #: Set by a stop or kill: no further start of a plan in progress.
    _stopping: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._state = SupervisorState(self._spec)
        self._send, self._receive = trio.open_memory_channel[_Event](math.inf)

    # ------------------------------------------------------------ queries

    @property
    def spec(self) -> SupervisorSpec:
        """The supervisor's specification."""
        return self._spec

    @property
    def started(self) -> bool:
        """True once every initial child started (``run()`` reported itself started)."""
        return self._started

    def which_children(self) -> tuple[ChildInfo, ...]:
        """Every known child in start order, with its status."""
        return self._state.which_children()

    def handle(self, child_id: str) -> ChildHandle | None:
        """The handle of the running instance of ``child_id``, if any."""
        return self._handles.get(child_id)

    # ------------------------------------------------------------ running

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order and supervise them until ``stop()`` or escalation.

        Calls ``task_status.started(self)`` once every child started. Returns
        after ``stop()``; raises
        :class:`~cellmesh.actors.errors.SupervisorEscalation` after stopping
        every child when the supervisor gives up (including a child failing to
        start here, before ``started``). On cancellation every child is
        stopped (shielded) before the cancellation propagates.
        """
        if self._running or self._closed:
            raise SupervisorRequestError("", "run() may be called once")
        self._running = True
        escalation: SupervisorEscalation | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._execute(self._state.start())
                    self._started = True
                    task_status.started(self)
                    await self._loop()
                except SupervisorEscalation as exc:
                    escalation = exc
                finally:
                    self._closed = True
                    with trio.CancelScope(shield=True):
                        await self._teardown()
                    nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            self._send.close()
            self._fail_pending()
        if escalation is not None:
            raise escalation

    def request_stop(self) -> None:
        """Ask the supervisor to stop its children (reverse order) and end ``run()``.

        A plan in progress (a crash loop's restarts, each failing) is dropped
        before its next start: the stop never waits behind it.
        """
        if self._closed:
            return
        self._stopping.set()
        self._send.send_nowait(_Request(plan=self._state.shutdown, stop=True))

    def kill(self) -> None:
        """Make the teardown brutal: remaining children are killed, not asked to stop."""
        self._brutal = True
        self._stopping.set()

    async def stop(self) -> None:
        """Stop every child in reverse start order and end ``run()``; wait until done.

        Before ``run()`` it only marks the supervisor ended; after, it is a no-op.
        """
        if not self._running:
            self._closed = True
            return
        self._stopping.set()
        await self._request(_Request(plan=self._state.shutdown, stop=True), allow_closed=True)

    async def start_child(self, spec_or_args: ChildSpec | tuple[object, ...], *,
                          before: str | None = None) -> str:
        """Add and start a child (OTP ``start_child``); return its id.

        It goes last in start order, or before child ``before`` if known
        (:meth:`SupervisorState.start_child`). Raises
        :class:`~cellmesh.actors.errors.ChildStartFailed` when the start
        fails (the child is then forgotten), and the policy's request errors.
        """
        request = _Request(plan=lambda: self._state.start_child(spec_or_args, before=before),
                           new_child=True)
        await self._request(request)
        return request.child_id

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child with its shutdown; it is not restarted (OTP ``terminate_child``)."""
        await self._request(_Request(plan=lambda: self._state.terminate_child(child_id)))

    async def restart_child(self, child_id: str) -> None:
        """Start a stopped child again (OTP ``restart_child``)."""
        await self._request(
            _Request(plan=lambda: self._state.restart_child(child_id), child_id=child_id)
        )

    async def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec (OTP ``delete_child``)."""
        await self._request(_Request(plan=lambda: self._state.delete_child(child_id)))

    def retune(self, *, intensity: int, period: float, backoff: Backoff | None) -> None:
        """Change the restart intensity, period and backoff from now on (a reload)."""
        self._state.retune(intensity=intensity, period=period, backoff=backoff)
        self._spec = self._state.spec

    def update_child(
        self, child_id: str, *, restart: Restart, shutdown: Shutdown | None
    ) -> None:
        """Change a child's restart type and shutdown from its next exit (a reload)."""
        self._state.update_child(child_id, restart=restart, shutdown=shutdown)

    # ------------------------------------------------------------ internals

    def _emit(
        self, kind: str, child_id: str, detail: str = "", delay: float | None = None
    ) -> None:
        if self._on_event is not None:
            self._on_event(
                SupervisorEvent(kind=kind, child_id=child_id, detail=detail, delay=delay)
            )

    async def _request(self, request: _Request, *, allow_closed: bool = False) -> None:
        if self._closed:
            if allow_closed:
                return
            raise SupervisorStopped()
        self._send.send_nowait(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    def _fail_pending(self) -> None:
        while True:
            try:
                event = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(event, _Request):
                if not event.stop:
                    event.error = SupervisorStopped()
                event.done.set()

    async def _loop(self) -> None:
        while True:
            event = await self._receive.receive()
            if isinstance(event, _ChildExit):
                if self._handles.get(event.child_id) is not event.handle:
                    continue  # we stopped it ourselves, or it was already replaced
                del self._handles[event.child_id]
                self._emit("exited", event.child_id, _describe(event.reason))
                plan = self._state.child_exited(event.child_id, event.reason, trio.current_time())
                await self._execute(plan)
                continue
            try:
                plan = event.plan()
            except SupervisorRequestError as exc:
                event.error = exc
                event.done.set()
                continue
            if event.new_child and plan and isinstance(plan[0], StartChild):
                event.child_id = plan[0].child_id
            self._failures.clear()
            try:
                await self._execute(plan)
            finally:
                if event.child_id in self._failures:
                    failure = ChildStartFailed.reason_of(
                        event.child_id, self._failures[event.child_id])
                    event.error = ChildStartFailed(event.child_id, failure)
                event.done.set()
            if event.stop:
                return

    async def _execute(self, plan: list[Action]) -> None:
        """Execute ``plan`` in order; on a failed start, switch to the replacement plan."""
        while plan:
            replacement: list[Action] = []
            index = 0
            while index < len(plan):
                action = plan[index]
                index += 1
                if isinstance(action, StartChild):
                    if self._stopping.is_set():
                        return  # a stop waits: the rest is moot (its shutdown settles it)
                    failed = await self._start(action)
                    if failed is not None:
                        replacement = failed
                        break
                elif isinstance(action, StopChild):
                    batch = [(action.child_id, action.shutdown)]
                    while index < len(plan) and isinstance(plan[index], StopChild):
                        more = plan[index]
                        assert isinstance(more, StopChild)
                        batch.append((more.child_id, more.shutdown))
                        index += 1
                    await self._stop_children(batch)
                elif isinstance(action, RemoveChild):
                    self._handles.pop(action.child_id, None)
                    self._emit("removed", action.child_id)
                else:
                    self._escalate(action)
            plan = replacement

    async def _stop_children(self, batch: list[tuple[str, Shutdown]]) -> None:
        """Stop ``batch`` in the given order; simple_one_for_one children all at once.

        OTP stops the dynamic children of a simple_one_for_one supervisor
        concurrently (in no particular order), so N slow children cost one
        shutdown timeout, not N.
        """
        if self._spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(batch) > 1:
            async with trio.open_nursery() as nursery:
                for child_id, shutdown in batch:
                    nursery.start_soon(self._stop_one, child_id, shutdown)
        else:
            for child_id, shutdown in batch:
                await self._stop_one(child_id, shutdown)

    async def _stop_one(self, child_id: str, shutdown: Shutdown) -> None:
        handle = self._handles.get(child_id)
        if handle is None:
            return
        # Popped only once it has exited: a cancelled stop leaves it for the
        # teardown to stop again.
        self._emit("stopping", child_id, "brutal_kill" if self._brutal else shutdown.kind)
        await _stop_handle(handle, shutdown, brutal=self._brutal)
        self._handles.pop(child_id, None)
        self._emit("stopped", child_id)

    async def _start(self, action: StartChild) -> list[Action] | None:
        """Start one child; None on success, else the plan ``start_failed`` returned."""
        assert self._nursery is not None
        child_id = action.child_id
        if action.delay > 0:
            self._emit("delaying", child_id, f"{action.delay:g}s", action.delay)
            with trio.move_on_after(action.delay):
                await self._stopping.wait()
            if self._stopping.is_set():
                return []  # not started; the stop's shutdown settles it
        try:
            handle = await self._factory.start(action.spec, self._nursery)
        except Exception as exc:
            # Our own errors say what failed; a foreign one needs its type.
            reason = str(exc) if isinstance(exc, CellmeshError) else f"{type(exc).__name__}: {exc}"
            self._failures[child_id] = reason
            self._emit("start_failed", child_id, reason)
            return self._state.start_failed(child_id, reason, trio.current_time())
        self._handles[child_id] = handle
        self._state.child_started(child_id)
        self._emit("started", child_id)
        self._nursery.start_soon(self._watch, child_id, handle)
        return None

    def _escalate(self, action: Escalate) -> None:
        self._emit("escalated", action.child_id, action.reason)
        raise SupervisorEscalation(action.reason, child_id=action.child_id, detail=action.detail)

    async def _watch(self, child_id: str, handle: ChildHandle) -> None:
        reason = await handle.wait()
        # If the supervisor has ended, its teardown already waited for this child.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(_ChildExit(child_id=child_id, handle=handle, reason=reason))

    async def _teardown(self) -> None:
        """Stop every child still running, in reverse start order (called shielded)."""
        if not self._state.stopped:
            with contextlib.suppress(SupervisorRequestError):
                self._state.shutdown()
        ordered = [info.child_id for info in self._state.which_children()]
        rest = [cid for cid in self._handles if cid not in ordered]
        batch = [
            (child_id, self._state_spec_shutdown(child_id))
            for child_id in [*reversed(ordered), *rest]
            if child_id in self._handles
        ]
        await self._stop_children(batch)

    def _state_spec_shutdown(self, child_id: str) -> Shutdown:
        try:
            return self._state.child_spec(child_id).effective_shutdown
        except SupervisorRequestError:
            return Shutdown.brutal_kill()


async def _stop_handle(handle: ChildHandle, shutdown: Shutdown, *, brutal: bool) -> None:
    """Stop ``handle`` per ``shutdown`` and wait until it has exited."""
    if brutal or shutdown.kind == "brutal_kill":
        handle.kill()
        await handle.wait()
        return
    handle.terminate()
    if shutdown.kind == "infinity":
        await handle.wait()
        return
    assert shutdown.seconds is not None
    with trio.move_on_after(shutdown.seconds):
        await handle.wait()
        return
    handle.kill()
    await handle.wait()


def _describe(reason: ExitReason) -> str:
    if isinstance(reason, NormalExit):
        return "normal"
    if isinstance(reason, ShutdownExit):
        return f"shutdown {reason.detail}".rstrip()
    return reason.text


# --------------------------------------------------------------------------
# OS processes.


def exit_reason_from_returncode(returncode: int) -> ExitReason:
    """0 is ``normal``; a non-zero code or a signal is abnormal."""
    if returncode == 0:
        return NormalExit()
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return AbnormalExit(text=f"killed by {name}")
    return AbnormalExit(text=f"exit code {returncode}")


@attrs.define(eq=False)
class ProcessHandle:
    """A child that is an OS process started with :func:`trio.lowlevel.open_process`.

    ``wait`` sleeps on the process's pidfd (Linux), so a death is seen at
    once; the process is reaped by Trio.
    """

    _process: trio.Process

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    async def wait(self) -> ExitReason:
        """Wait for the process to exit; map its return code."""
        return exit_reason_from_returncode(await self._process.wait())

    def terminate(self) -> None:
        """SIGTERM, unless it has already exited."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, unless it has already exited."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)


@attrs.define(eq=False)
class ProcessFactory:
    """Starts each child as ``command(spec)`` (argv) in a new session.

    ``env`` replaces the environment when given. A command that cannot be
    executed (missing binary) is a start failure. This is the plain-process
    backing; the sandbox's spawn backs the same :class:`ChildFactory` seam.
    """

    _command: Callable[[ChildSpec], Sequence[str]]
    _env: Mapping[str, str] | None = None

    async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ProcessHandle:
        """Start the process; raises ``OSError`` when it cannot be executed."""
        process = await trio.lowlevel.open_process(
            list(self._command(spec)),
            stdin=subprocess.DEVNULL,
            env=None if self._env is None else dict(self._env),
            start_new_session=True,
        )
        return ProcessHandle(process)


# --------------------------------------------------------------------------
# Nested supervisors.


@attrs.define(eq=False)
class SupervisorChildHandle:
    """A sub-supervisor running as a child task in its parent's children nursery.

    The task is shielded from outside cancellation: its parent stops it in
    order (``terminate`` = stop its children in reverse order; ``kill`` =
    cancel it, killing its children at once). ``wait`` returns
    ``ShutdownExit`` after a stop or an escalation (OTP's ``shutdown``) and
    ``AbnormalExit`` if the supervisor failed otherwise.
    """

    _supervisor: Supervisor
    _scope: trio.CancelScope = attrs.field(
        init=False, factory=lambda: trio.CancelScope(shield=True)
    )
    _done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _reason: ExitReason = attrs.field(init=False, factory=ShutdownExit)

    @classmethod
    async def start(
        cls,
        spec: SupervisorSpec,
        factory: ChildFactory,
        nursery: trio.Nursery,
        *,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> SupervisorChildHandle:
        """Start a sub-supervisor in ``nursery``; return once all its children started.

        Raises the sub-supervisor's :class:`SupervisorEscalation` when one of
        its children fails to start (a start failure for the parent).
        """
        handle = cls(Supervisor(spec, factory, on_event))
        await nursery.start(handle._run)
        return handle

    @property
    def supervisor(self) -> Supervisor:
        """The sub-supervisor (for requests such as ``start_child``)."""
        return self._supervisor

    async def _run(self, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        try:
            with self._scope:
                await self._supervisor.run(task_status=task_status)
            if self._scope.cancelled_caught:
                self._reason = ShutdownExit(detail="killed")
        except SupervisorEscalation as exc:
            if not self._supervisor.started:
                raise
            self._reason = ShutdownExit(detail=exc.reason)
        except Exception as exc:
            if not self._supervisor.started:
                raise
            self._reason = AbnormalExit(text=f"{type(exc).__name__}: {exc}")
        finally:
            self._done.set()

    async def wait(self) -> ExitReason:
        """Wait until the sub-supervisor has ended."""
        await self._done.wait()
        return self._reason

    def terminate(self) -> None:
        """Ask it to stop its children in reverse order and end."""
        self._supervisor.request_stop()

    def kill(self) -> None:
        """Cancel it; its children are killed at once."""
        self._supervisor.kill()
        self._scope.cancel()


__all__ = [
    "ChildFactory",
    "ChildHandle",
    "ProcessFactory",
    "ProcessHandle",
    "Supervisor",
    "SupervisorChildHandle",
    "SupervisorEvent",
    "exit_reason_from_returncode",
]
