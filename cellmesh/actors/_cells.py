"""Cell slots and instances: what the root keeps per cell, and the supervisor's child handle.

A :class:`CellSlot` is one cell the root knows (declared in the manifest, a
dynamic child, or spawned through the control API). It owns what outlives
any one process: the listening socket the root bound (socket activation: the
same socket is handed to every process of the cell, so a restart or a hot
swap never closes it), the path of the cell's umbilical, its DNA entry, its
counters and the restart count.

A :class:`CellInstance` is one process of a slot, and the
:class:`~cellmesh.actors.supervisor.ChildHandle` its supervisor holds. It
moves ``dormant`` -> ``starting`` -> ``running`` -> ``exited``:

* ``dormant``: an ``on_demand`` cell before its first connection. No process
  exists; :meth:`CellInstance.activate` (called by the root's activation
  watcher when the listener becomes readable) spawns it.
* ``starting``: the process runs; its ``on_start`` has not finished.
* ``running``: the cell sent ``CellReady`` on its umbilical.
* ``exited``: :meth:`CellInstance.wait` returns the OTP exit reason.

A hot swap (:mod:`cellmesh.actors._swap`) replaces the process behind an
instance without the supervisor seeing an exit: while a swap runs, the
instance consults its :class:`SwapWatch` when its process exits (the swap
may have made the instance :meth:`~CellInstance.adopt` the new process: then
the instance waits on that one) and before it signals a stop.

Exit statuses map to OTP reasons: ``exit`` (code 0) -> ``normal``; ``stop``
(we asked) -> ``shutdown``; ``crash`` and ``limit`` -> abnormal, with the
code, signal or limit in the text, followed by the failure the process
reported on its report pipe when it exited by itself (:mod:`.exitcause`).
The slot keeps the pipe of the last process spawned on each of its two
backend ids, so the process an instance waits on -- its first, a standby
it took over, or a swap's new version it adopted -- is always read from the
pipe of the id it runs on.

A replica of a replicated cell is a slot too (named ``X/<id>``), with a
:class:`ReplicaPart`: its peer socket, data directory and replica env. Its
listening socket is the group's client socket, shared by every replica and
owned by the group (``owns_listener`` is False); its files and backend ids
use its *stem* ``X..<id>``.
"""

from __future__ import annotations

import collections
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

import attrs
import trio

from ..config import check_cell_name
from ..errors import ConfigError
from ..sandbox import CellBackend, ExitStatus
from ._proc import ProcSample, totals, tree
from .control import CellDown, CellStats, CellStatus, ReplicaInfo, ReplicaStats
from .errors import ChildStartFailed, RootRequestError
from .exitcause import Failure, clean
from .membership import parse_replica_name
from .policy import AbnormalExit, ExitReason, NormalExit, ShutdownExit

if TYPE_CHECKING:
    from ._reports import ReportPipe
    from .dna import DnaEntry
    from .logs import RotatingLog
    from .manifest import CellDecl, Manifest

InstanceState = Literal["dormant", "starting", "running", "exited"]


def exit_reason(status: ExitStatus, failure: Failure | None = None, key: str = "") -> ExitReason:
    """The OTP exit reason of a classified process exit.

    A crash's text ends with the ``failure`` the cell reported, if any
    (``exit code 1: ValueError in on_start: boom``); ``key`` is the cell's
    manifest table, named by configuration failures.
    """
    if status.reason == "exit":
        return NormalExit()
    if status.reason == "stop":
        return ShutdownExit(detail=status.detail)
    return AbnormalExit(text=describe_exit(status, failure, key))


def describe_exit(status: ExitStatus, failure: Failure | None = None, key: str = "") -> str:
    """:func:`describe_status` followed by the ``failure`` the process reported, if any.

    ``exit code 1: ValueError in on_start: boom``; ``key`` (``cells.x``)
    names the manifest table in a configuration or import failure.

    A SIGKILL under a memory rlimit without the runtime's MemoryError report is
    a kill (``kill -9``, the kernel's OOM killer), not the limit: RLIMIT_AS sends
    no signal, and the runtime's own memory exit (137, which bwrap reports as a
    SIGKILL) always reports its MemoryError first.
    """
    if (status.reason == "limit" and status.limit == "memory"
            and status.signal == signal.SIGKILL and status.detail != "cgroup oom_kill"
            and (failure is None or failure.type_name != "MemoryError")):
        status = attrs.evolve(status, reason="crash", limit=None, detail="")
    text = describe_status(status)
    if failure is not None:
        text += f": {failure.describe(key)}"
    return text


def describe_status(status: ExitStatus) -> str:
    """A short operator-facing text: ``exit code 1``, ``killed by SIGKILL``, ``memory limit``."""
    if status.reason == "limit":
        return f"{status.limit or 'resource'} limit ({status.detail})"
    if status.signal is not None:
        text = f"killed by {status.to_json()['signal_name']}"
    else:
        text = f"exit code {status.code}"
    if status.detail and status.reason == "crash":
        text += f" ({status.detail})"
    return text


def reason_text(reason: ExitReason) -> str:
    """``normal``, ``shutdown`` or the crash description (CellDown's ``reason``)."""
    if isinstance(reason, NormalExit):
        return "normal"
    if isinstance(reason, ShutdownExit):
        return "shutdown"
    return reason.text


#: Longest last line of output kept as a replica's failure reason.
MAX_NOTE: Final = 600


@attrs.define(eq=False)
class ReplicaPart:
    """What a replica's slot holds besides a plain cell's (module doc).

    ``env`` is the ``CELL_REPLICA_*`` environment of its next process;
    ``env_version`` grows whenever it changes, so a sandbox (or a standby)
    made for an older env is made again. ``stats`` is its latest valid
    :class:`ReplicaStats`; ``last_line`` the last non-empty line of its output,
    copied into ``error`` when it fails; ``given_up`` is set when its
    supervisor stopped restarting it.
    """

    group: str
    id: int
    peer_listener: socket.socket
    peer_path: Path
    peers_dir: Path
    data_dir: Path
    env: dict[str, str] = attrs.Factory(dict)
    env_version: int = 0
    stats: ReplicaStats | None = None
    #: When ``stats`` arrived (``trio.current_time()``).
    stats_at: float = float("-inf")
    last_line: str = ""
    error: str = ""
    given_up: bool = False

    def set_env(self, env: Mapping[str, str]) -> int:
        """Use ``env`` from the next process on; return the (possibly new) env version."""
        if dict(env) != self.env:
            self.env = dict(env)
            self.env_version += 1
        return self.env_version

    def note_line(self, line: bytes) -> None:
        """Remember the last line of output that says something (bounded), for :attr:`error`.

        The frame of an exception group's traceback (``| `` prefixes, ``+---``
        rules) is stripped, so a crash's last line is its exception, e.g.
        ``WalCorrupted: .../wal-...log: corrupt at byte 4096: ...``.
        """
        text = line.decode("utf-8", "replace").strip().lstrip("|+ ").rstrip()
        if text and text.strip("-") and not text.startswith("^"):
            self.last_line = clean(text, MAX_NOTE)  # the cell's bytes: no escapes

    def failure(self) -> str:
        """Why it failed last (``""``: it did not).

        The exit as the root described it -- with the failure the process
        reported on its report pipe when it did -- and, for a bare exit code
        (nothing reported: the process died before it could say), its last
        line of output.
        """
        bare = self.error.startswith("exit code ") and self.error[10:].isdigit()
        if bare and self.last_line:
            return f"{self.error}: {self.last_line}"
        return self.error


def manifest_key(manifest: Manifest, name: str, decl: CellDecl) -> str:
    """Where cell ``name``'s ``decl`` comes from: ``cells.x``, ``templates.t`` or ``SpawnCell``."""
    if manifest.cells.get(name) == decl:
        return f"cells.{name}"
    for template, tmpl in manifest.templates.items():
        if attrs.evolve(tmpl, name=decl.name) == decl:
            return f"templates.{template}"
    return "SpawnCell"  # _metrics.SPAWN_KEY


def template_of(slot: CellSlot) -> str | None:
    """The template a dynamic child was started from (None for any other cell)."""
    key = slot.key
    if slot.parent is None or not key.startswith("templates."):
        return None
    return key[len("templates."):]


def in_group_swap(slot: CellSlot | None) -> bool:
    """``slot`` is a replica a group swap stops and starts now: its processes' exits and
    start failures are the swap's to report (its rollback cause), not the replica's."""
    return slot is not None and slot.replica is not None and bool(slot.swap_phase)


def with_failure(down: CellDown, failure: Failure | None) -> CellDown:
    """``down`` carrying the exception a crashed cell reported (none for config errors)."""
    if failure is None or failure.stage == "config":
        return down
    return CellDown(name=down.name, reason=down.reason, ref=down.ref,
                    error_type=failure.type_name, error_message=failure.message)


@attrs.define(eq=False)
class CellSlot:
    """One cell the root knows: its sockets, DNA, counters (see module doc)."""

    name: str
    supervisor: str
    listener: socket.socket
    socket_path: Path
    umbilical_path: Path
    decl: CellDecl
    parent: str | None = None
    #: Where its declaration comes from, for messages: ``cells.x``, ``templates.t``.
    key: str = ""
    #: Its id in its supervisor: the name, except under a simple_one_for_one
    #: supervisor, which numbers its children (``worker-3``).
    child_id: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))
    trap_exits: bool = False
    dna_digest: str = ""
    #: The DNA entry new processes of the cell run (set by the launcher's prepare).
    dna: DnaEntry | None = None
    #: What ran before the last committed swap (``cellmesh swap --rollback``).
    previous_dna: DnaEntry | None = None
    previous_decl: CellDecl | None = None
    #: ``Cell.version`` of the serving process (from its CellReady).
    version: str = ""
    #: The phase of a swap in progress ("" when none).
    swap_phase: str = ""
    created: bool = False
    activated: bool = False
    restarts: int = 0
    instance: CellInstance | None = None
    stats: CellStats | None = None
    children: set[str] = attrs.Factory(set)
    changed: trio.Event = attrs.Factory(trio.Event)
    cpu_sample: tuple[float, float] | None = None
    log: RotatingLog | None = None
    standby: Standby | None = None
    #: The report pipe of the last process spawned on each backend id.
    reports: dict[str, ReportPipe] = attrs.Factory(dict)
    #: The last abnormal exit (reason text) and when (Unix time), for status.
    last_exit: tuple[str, float] | None = None

    def failure(self, cell_id: str) -> Failure | None:
        """The failure the process on ``cell_id`` reported (read after it exited)."""
        pipe = self.reports.get(cell_id)
        return None if pipe is None else pipe.reports_nowait().failure

    def exit_failure(self, cell_id: str, status: ExitStatus) -> Failure | None:
        """What the exited process on ``cell_id`` said about its exit, if it may have.

        Only a process that exited by itself with an error may have reported
        why (a killed one cannot have: anything on its pipe is older), and a
        runtime that ran out of memory: its MemoryError record is its last
        word before ``os._exit(137)``, which the sandbox reads as a memory
        limit (under an rlimit) or, under bwrap, as a SIGKILL. Read before
        another process is spawned on ``cell_id``.
        """
        if status.reason == "crash" and status.signal is None:
            return self.failure(cell_id)
        if status.limit == "memory" or status.signal == signal.SIGKILL:
            failure = self.failure(cell_id)
            if failure is not None and failure.type_name == "MemoryError":
                return failure
        return None
    replica: ReplicaPart | None = None
    #: False when the listener belongs to someone else (a replicated cell's group).
    owns_listener: bool = True
    #: The replica env version each backend id was created with.
    spec_versions: dict[str, int] = attrs.Factory(dict)

    @property
    def stem(self) -> str:
        """The name of the slot's files and backend ids: its name, or ``X..<id>`` for a replica."""
        replica = self.replica
        return self.name if replica is None else f"{replica.group}..{replica.id}"

    @property
    def cell_ids(self) -> tuple[str, str]:
        """The two backend ids the slot's processes alternate between.

        The running process and the one waiting to replace it (its standby,
        or the new version during a hot swap) each have their own. ``..``
        cannot appear in a cell name the root accepts, so these never
        collide with another cell's id.
        """
        stem = self.stem
        return (stem, f"{stem}..b")

    @property
    def on_demand(self) -> bool:
        """Spawned at its first connection rather than at supervisor start."""
        return self.decl.activation == "on_demand"

    def report(
        self, pid: int | None, samples: Mapping[int, ProcSample], *, now: float, mono: float,
        backend: str, replica: ReplicaInfo | None = None,
    ) -> CellStatus:
        """This cell's row of ``cellmesh status``.

        ``pid`` is the serving process (None when none); RSS and CPU are
        summed over its process tree in ``samples``. CPU% needs the previous
        call's sample (kept here), so the first report of a process has none.
        """
        instance = self.instance
        state = "stopped" if instance is None or instance.state == "exited" else instance.state
        rss: int | None = None
        cpu_pct: float | None = None
        if pid is not None:
            rss, cpu = totals(tree(pid, samples), samples)
            last = self.cpu_sample
            if last is not None and mono > last[0]:
                cpu_pct = max(0.0, 100.0 * (cpu - last[1]) / (mono - last[0]))
            self.cpu_sample = (mono, cpu)
        else:
            self.cpu_sample = None
        stats = self.stats
        started = instance.started_at if instance is not None and pid is not None else None
        return CellStatus(
            name=self.name, supervisor=self.supervisor, state=state, pid=pid,
            restarts=self.restarts, uptime=None if started is None else mono - started,
            msgs_in=0 if stats is None else stats.msgs_in,
            msgs_out=0 if stats is None else stats.msgs_out,
            rss=rss, cpu_percent=cpu_pct,
            rtt_p50_us=None if stats is None else stats.rtt_p50_us,
            rtt_p99_us=None if stats is None else stats.rtt_p99_us,
            backend=backend, dna=self.dna_digest[:12], version=self.version,
            swap=self.swap_phase,
            last_exit=None if self.last_exit is None else self.last_exit[0],
            last_exit_at=None if self.last_exit is None else self.last_exit[1],
            replica=replica,
        )

    def touch(self) -> None:
        """Wake everything waiting for this slot's state to change."""
        self.changed.set()
        self.changed = trio.Event()


@attrs.define(eq=False)
class Standby:
    """A process of the cell that has started and imported its code, waiting on ``go``.

    Writing one byte to ``go`` makes it serve; closing ``go`` makes it exit.
    ``scope`` is the cancel scope of the task that watches it die while it waits.
    """

    cell_id: str
    pid: int
    go: int
    scope: trio.CancelScope
    tail: collections.deque[str] = attrs.Factory(collections.deque)
    #: The replica env version it was spawned with (0 for a plain cell).
    version: int = 0


@attrs.frozen(kw_only=True)
class Launched:
    """A process the launcher made serve: its backend id, pid, go token, last output lines."""

    cell_id: str
    pid: int
    token: str
    tail: collections.deque[str] = attrs.field(factory=collections.deque, eq=False)


class SwapWatch(Protocol):
    """What a swap in progress needs to hear from the instance it works on."""

    def process_exited(self, instance: CellInstance, cell_id: str, text: str) -> None:
        """The process on ``cell_id`` the instance waited on exited (it may adopt another).

        ``text`` describes the exit with the failure the process reported
        (:func:`describe_exit`).
        """
        ...

    def stop_requested(self, instance: CellInstance) -> None:
        """The instance is about to be terminated or killed."""
        ...


@attrs.define(eq=False)
class CellInstance:
    """One process of a slot; the supervisor's child handle (see module doc)."""

    slot: CellSlot
    backend: CellBackend
    spawn: Callable[[CellSlot], Launched]
    on_exit: Callable[[CellInstance, ExitReason], None]
    on_ready: Callable[[CellInstance], None]
    state: InstanceState = "dormant"
    cell_id: str = ""
    pid: int | None = None
    token: str = ""
    started_at: float | None = None
    swap: SwapWatch | None = None
    ready: trio.Event = attrs.Factory(trio.Event)
    _activate: trio.Event = attrs.Factory(trio.Event)
    _exited: trio.Event = attrs.Factory(trio.Event)
    _reason: ExitReason = attrs.Factory(NormalExit)
    _cancelled_dormant: bool = False
    #: The failure the process reported before it exited, if any.
    failure: Failure | None = None

    # ------------------------------------------------------------ ChildHandle

    async def wait(self) -> ExitReason:
        """Wait until this instance has ended (a dormant one ends when stopped)."""
        await self._exited.wait()
        return self._reason

    @property
    def exit_reason(self) -> ExitReason | None:
        """Why this instance ended (None while it has not)."""
        return self._reason if self._exited.is_set() else None

    def terminate(self) -> None:
        """SIGTERM the process; a dormant instance simply ends (``shutdown``)."""
        if self.state == "dormant":
            self._end_dormant()
        elif self.state != "exited":
            if self.swap is not None:
                self.swap.stop_requested(self)
            self.backend.terminate(self.cell_id)

    def kill(self) -> None:
        """SIGKILL the process; a dormant instance simply ends (``shutdown``)."""
        if self.state == "dormant":
            self._end_dormant()
        elif self.state != "exited":
            if self.swap is not None:
                self.swap.stop_requested(self)
            self.backend.kill(self.cell_id)

    def adopt(self, launched: Launched) -> None:
        """From now on this instance is ``launched`` (a hot swap committed).

        The caller must not be waiting on that process any more: the
        instance becomes its only waiter once the process it waits on now
        has exited.
        """
        self.cell_id, self.pid, self.token = launched.cell_id, launched.pid, launched.token
        self.started_at = time.monotonic()  # (for the uptime: a clock step leaves it be)
        self.slot.touch()

    # ------------------------------------------------------------ lifecycle

    def activate(self) -> None:
        """Spawn a dormant instance now (first connection to an on_demand cell)."""
        if self.state == "dormant" and not self._cancelled_dormant:
            self._activate.set()

    def mark_ready(self) -> None:
        """The cell reported ``CellReady``."""
        if self.state == "starting":
            self.state = "running"
            self.slot.touch()
            self.on_ready(self)
        self.ready.set()

    def start_process(self) -> None:
        """Spawn the process (from the Trio thread: the sandbox's parent-death
        signal is tied to the spawning thread)."""
        launched = self.spawn(self.slot)
        self.cell_id, self.pid, self.token = launched.cell_id, launched.pid, launched.token
        self.state = "starting"
        self.started_at = time.monotonic()  # (for the uptime: a clock step leaves it be)
        self.slot.activated = True
        self.slot.touch()

    async def run(self) -> None:
        """Own the instance until it ends: wake on activation, then on the pidfd.

        If the task is cancelled (its supervisor's nursery is torn down), the
        process is killed and reaped under a shield first: no process outlives
        its owner, and :meth:`wait` always returns.
        """
        try:
            if self.state == "dormant":
                await self._activate.wait()
                if self._cancelled_dormant:
                    return
                try:
                    self.start_process()
                except Exception as exc:
                    self._finish(AbnormalExit(text=f"spawn failed: {exc}"))
                    return
            while True:
                waited = self.cell_id
                status = await self.backend.wait_async(waited)
                failure = self.slot.exit_failure(waited, status)
                if self.swap is not None:
                    self.swap.process_exited(
                        self, waited, describe_exit(status, failure, self.slot.key)
                    )
                if self.cell_id == waited:
                    break
                # A swap made this instance adopt its new process: wait on that.
            self.failure = failure
            self._finish(exit_reason(status, failure, self.slot.key))
        finally:
            if not self._exited.is_set():
                with trio.CancelScope(shield=True):
                    await self._reap_after_cancel()

    async def _reap_after_cancel(self) -> None:
        if self.state == "dormant":
            self._finish(ShutdownExit(detail="cancelled while dormant"))
            return
        self.backend.kill(self.cell_id)
        with trio.move_on_after(10.0):
            status = await self.backend.wait_async(self.cell_id)
            self._finish(exit_reason(status))
            return
        self._finish(AbnormalExit(text="did not exit after SIGKILL"))

    async def wait_started(self) -> None:
        """Wait for ``CellReady`` (raise :class:`ChildStartFailed` on exit or timeout)."""
        name = self.slot.name
        with trio.move_on_after(self.slot.decl.start_timeout) as scope:
            async with trio.open_nursery() as nursery:

                async def exited() -> None:
                    await self._exited.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(exited)
                await self.ready.wait()
                nursery.cancel_scope.cancel()
        if self.ready.is_set() and self.state != "exited":
            return
        if scope.cancelled_caught:
            self.kill()
            await self._exited.wait()
            raise ChildStartFailed(
                name,
                f"not ready within {self.slot.decl.start_timeout:g} s "
                f"({self.slot.key}.start_timeout); an on_start that calls a cell which "
                f"starts after it waits for that cell (see `cellmesh logs {name}`)",
            )
        raise ChildStartFailed(
            name,
            f"exited before it was ready: {reason_text(self._reason)} "
            f"(see `cellmesh logs {name}`)",
        )

    def _end_dormant(self) -> None:
        self._cancelled_dormant = True
        self._activate.set()
        self._finish(ShutdownExit(detail="stopped while dormant"))

    def _finish(self, reason: ExitReason) -> None:
        if self._exited.is_set():
            return
        self.state = "exited"
        self._reason = reason
        self._exited.set()
        self.on_exit(self, reason)
        self.slot.touch()


def check_target(target: object) -> None:
    """A monitor or link target must be a cell name or a replica's ``X/i``: else
    :class:`RootRequestError`."""
    replica = parse_replica_name(target) if isinstance(target, str) else None
    try:
        check_cell_name(target if replica is None else replica[0], source="target")
    except ConfigError as exc:
        raise RootRequestError("target", exc.problem) from None


def may_link(slot: CellSlot, target: str) -> bool:
    """A link kills both sides: ``slot`` may link only to a cell the manifest lets it
    call (a replicated cell's replicas included), its own children and its parent."""
    replica = parse_replica_name(target)
    base = target if replica is None else replica[0]
    return base in slot.decl.calls or target in slot.children or target == slot.parent


__all__ = [
    "check_target",
    "may_link",
    "CellInstance",
    "CellSlot",
    "Launched",
    "ReplicaPart",
    "Standby",
    "SwapWatch",
    "describe_exit",
    "describe_status",
    "exit_reason",
    "manifest_key",
    "reason_text",
    "with_failure",
]
