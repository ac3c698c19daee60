"""The cell runtime: ``python -m cellmesh.actors.runtime`` runs one Cell as a process.

Theory of operation
-------------------
:func:`main` -> :func:`run_cell` reads the env contract (see
:mod:`cellmesh.actors.control`), imports the cell class from ``CELL_ENTRY``
(``CELL_DNA_DIR`` first on ``sys.path``) and runs :func:`serve_cell`:

1. connect the umbilical (``CELL_UMBILICAL``; absent = standalone);
2. ``on_start`` (the cell's nursery is open);
3. send ``CellReady(pid)`` to the root (init is done: a crash from here on
   is a crash, not a failed start; a runtime that binds its own socket sends
   it once the socket exists, after step 4's bind);
4. serve the membrane on the inherited listening socket (fd 3 when
   ``CELL_LISTEN_FDS`` >= 1: the first passed fd) or on
   ``$CELL_SOCKET_DIR/<name>.sock``, and send a ``CellStats`` signal every
   ``stats_interval`` seconds; the same tick notices a broken umbilical;
5. on SIGTERM/SIGINT, :meth:`~cellmesh.Cell.stop`, or a broken umbilical:
   drain the membrane (goaway; in-flight calls finish), ``on_stop``, cancel
   the cell's nursery, close the synapses.

Standby: with ``CELL_GO_FD``, :func:`main` first preloads the cell's code
and blocks on that pipe (:func:`wait_for_go`): the root keeps such a
process ready per cell, so a restart, an on-demand start or a hot swap
costs a pipe write instead of an interpreter start and the imports. The
pipe's commands (preload this code, serve, take over with that code) are
in :mod:`cellmesh.actors._standby`; what a swap adds to steps 2-5 is in
:mod:`cellmesh.actors._handover`.

Report pipe: with ``CELL_REPORT_FD`` (fd 5 under a root) the runtime says
``loaded`` once the cell's class is imported (a standby after its ``i
DIGEST``, every process again after go) and, just before it exits because
of a failure, the stage and the exception (:mod:`cellmesh.actors.exitcause`):
that is how the root's restart log, ``CellDown``, ``status``, a failed
``cellmesh up`` and a swap's rollback name the cause.

Exit codes: 0 normal stop (or a standby that was not needed); 1 crash (an
exception escaped ``on_start``, a task in the cell's nursery, or
``on_stop``; traceback on stderr); 2 bad env
contract (one line on stderr naming the variable); 137
(:data:`~cellmesh.sandbox.MEMORY_LIMIT_EXIT_CODE`) on MemoryError anywhere
the runtime can see it, via ``os._exit`` so nothing else runs.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final, NoReturn

import attrs
import trio

from .._util import open_service_nursery
from ..config import MEMORY_LIMIT_EXIT_CODE, Paths, check_cell_name, env_path
from ..errors import CellmeshError, CellUnavailable, ConfigError
from ..transport._sockets import listener_problem
from ..transport._spin import spin_window_from_env
from ..transport.membrane import Membrane, membrane_options, open_membrane
from ..transport.synapse import Synapse
from ..wire._cbor import is_lost_memory_error
from . import _handover, _standby
from ._replica_spec import ReplicaSpec
from ._standby import Go
from ._stats import DEFAULT_SAMPLE_EVERY, ServiceTimes
from .cell import Cell, CellContext, NoRoot
from .control import CellReady, CellStats, Handover
from .exitcause import REPORT_FD_ENV, Stage, failure_record, loaded_record

PROG: Final = "cellmesh.actors.runtime"
EXIT_OK: Final = 0
EXIT_CRASH: Final = 1
EXIT_CONFIG: Final = 2
#: The first inherited fd under socket activation (systemd's SD_LISTEN_FDS_START).
FIRST_LISTEN_FD: Final = 3
STATS_INTERVAL: Final = 1.0
#: How long a crashing new version on probation may finish its calls (docs/swap.md).
CRASH_DRAIN_GRACE: Final = 5.0
_MODULE_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MEMORY_NOTE: Final = (
    f"{PROG}: MemoryError: out of memory; exiting with {MEMORY_LIMIT_EXIT_CODE}\n".encode()
)
#: The report-pipe record of a MemoryError exit, made before any memory runs out.
_MEMORY_RECORD: Final = failure_record(
    "run", "MemoryError", f"out of memory (the runtime exits with {MEMORY_LIMIT_EXIT_CODE})"
)


# ---------------------------------------------------------------- MemoryError


def die_of_memory() -> NoReturn:
    """Best-effort one-line note on stderr and a ``failed`` record on the report pipe
    (so the root names the MemoryError even where exit code 137 reads as a SIGKILL:
    under bwrap), then ``os._exit(137)`` (no cleanup runs)."""
    try:  # noqa: SIM105 - no context manager object: allocate nothing here
        os.write(2, _MEMORY_NOTE)
    except BaseException:
        pass
    try:
        raw = os.environ.get(REPORT_FD_ENV, "")
        if raw.isascii() and raw.isdigit():
            os.write(int(raw), _MEMORY_RECORD)
    except BaseException:
        pass
    os._exit(MEMORY_LIMIT_EXIT_CODE)


def has_memory_error(exc: BaseException | None) -> bool:
    """True if ``exc`` is, contains (groups) or was caused by a MemoryError (or the
    panic of a Rust extension that lost one:
    :func:`~cellmesh.wire._cbor.is_lost_memory_error`)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, MemoryError) or is_lost_memory_error(item):
            return True
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        stack.extend((item.__cause__, item.__context__))
    return False


def _excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if has_memory_error(exc):
        die_of_memory()
    sys.__excepthook__(kind, exc, tb)


# ---------------------------------------------------------------- report pipe


def report_fd(env: Mapping[str, str]) -> int | None:
    """The report pipe's fd (``CELL_REPORT_FD``), made non-blocking; None without one."""
    raw = env.get(REPORT_FD_ENV, "")
    if not (raw.isascii() and raw.isdigit()):
        return None
    fd = int(raw)
    try:
        os.set_blocking(fd, False)  # a full pipe drops the record, never hangs the cell
    except OSError:
        return None
    return fd


def send_report(fd: int | None, record: bytes) -> None:
    """Write one record on the report pipe; best effort (see :mod:`.exitcause`)."""
    if fd is None:
        return
    with suppress(OSError):
        os.write(fd, record)


def type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, else ``module.Qualname``."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def crash_text(exc: BaseException) -> str:
    """The traceback of ``exc``; a group of one exception (the runtime's own nurseries
    wrap what the cell raised) shows that exception's traceback alone."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return "".join(traceback.format_exception(exc)).rstrip()


def report_failure(fd: int | None, stage: Stage, exc: BaseException) -> None:
    """Report the failure ``exc`` (a group reports its first leaf and how many more)."""
    first, more = exc, 0
    while isinstance(first, BaseExceptionGroup) and first.exceptions:
        more += len(first.exceptions) - 1
        first = first.exceptions[0]
    source = None
    if isinstance(first, ConfigError):
        source, message = first.source, first.problem
    elif isinstance(first, CellImportError) and first.__cause__ is not None:
        first = first.__cause__
        message = str(first)
    else:
        message = str(first)
    if more:
        message += f" (and {more} more)"
    send_report(fd, failure_record(stage, type_name(first), message, source=source))


# ---------------------------------------------------------------- env contract


class CellImportError(CellmeshError):
    """Importing the cell's module raised (its code is at fault: a crash, exit 1).

    The original exception is the ``__cause__``; ``module`` names the module.
    """

    def __init__(self, module: str) -> None:
        super().__init__(f"importing the cell module {module!r} failed")
        self.module = module


@attrs.frozen(kw_only=True)
class CellEnv:
    """The runtime env contract, validated. Build with :meth:`from_env`."""

    name: str
    module: str
    class_name: str | None
    dna_dir: Path | None
    listen_fd: int | None
    umbilical: str | None
    socket_dir: Path
    data_dir: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CellEnv:
        """Parse ``env``; :class:`~cellmesh.ConfigError` names the bad variable."""
        name = env.get("CELL_NAME")
        if not name:
            raise ConfigError("CELL_NAME", "is not set (the cell's name)")
        check_cell_name(name, source="CELL_NAME")
        entry = env.get("CELL_ENTRY")
        if not entry:
            raise ConfigError("CELL_ENTRY", "is not set (module:Class of the Cell subclass)")
        module, sep, class_name = entry.partition(":")
        if not _MODULE_RE.match(module) or (sep and not _MODULE_RE.match(class_name)):
            raise ConfigError(
                "CELL_ENTRY", f"{entry!r} is not 'module:Class' or 'module' (dotted names)"
            )
        fds = env.get("CELL_LISTEN_FDS", "")
        listen_fd: int | None = None
        if fds not in ("", "0"):
            if not (fds.isascii() and fds.isdigit()):
                raise ConfigError("CELL_LISTEN_FDS", f"must be a number of fds, got {fds!r}")
            start = env.get("CELL_LISTEN_FDS_START", str(FIRST_LISTEN_FD))
            if not start.isdigit():
                raise ConfigError("CELL_LISTEN_FDS_START", f"must be an fd number, got {start!r}")
            listen_fd = int(start)
        spin_window_from_env(env)  # CELL_SPIN_US: refused here, with the other variables
        paths = Paths.from_env(env)
        return cls(
            name=name,
            module=module,
            class_name=class_name if sep else None,
            dna_dir=env_path(env, "CELL_DNA_DIR"),
            listen_fd=listen_fd,
            umbilical=env.get("CELL_UMBILICAL") or None,
            socket_dir=paths.socket_dir,
            data_dir=env_path(env, "CELL_DATA_DIR"),
        )

    def load_class(self) -> type[Cell]:
        """Import the entry's module (``dna_dir`` first on ``sys.path``) and find the class."""
        if self.dna_dir is not None:
            path = os.fspath(self.dna_dir)
            if path in sys.path:
                sys.path.remove(path)
            sys.path.insert(0, path)
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            top = self.module.split(".")
            if exc.name not in {".".join(top[: i + 1]) for i in range(len(top))}:
                # The module exists but one of its own imports is missing: a crash.
                raise CellImportError(self.module) from exc
            raise ConfigError(
                "CELL_ENTRY",
                f"module {self.module!r} not found in the cell's code ({self.dna_dir})",
            ) from None
        except Exception as exc:
            raise CellImportError(self.module) from exc
        return self._pick(module)

    def _pick(self, module: ModuleType) -> type[Cell]:
        if self.class_name is None:
            found = [
                value for value in vars(module).values()
                if isinstance(value, type) and issubclass(value, Cell) and value is not Cell
                and value.__module__ == module.__name__
            ]
            if len(found) != 1:
                names = ", ".join(sorted(c.__qualname__ for c in found)) or "none"
                raise ConfigError(
                    "CELL_ENTRY",
                    f"module {self.module!r} must define exactly one Cell subclass "
                    f"(found: {names}); name it as 'module:Class'",
                )
            return found[0]
        value: Any = module
        for part in self.class_name.split("."):
            value = getattr(value, part, None)
        if value is None:
            raise ConfigError(
                "CELL_ENTRY", f"module {self.module!r} has no attribute {self.class_name!r}"
            )
        if not (isinstance(value, type) and issubclass(value, Cell)):
            raise ConfigError(
                "CELL_ENTRY", f"{self.module}:{self.class_name} is not a cellmesh.Cell subclass"
            )
        return value


# ---------------------------------------------------------------- serving


@attrs.define(eq=False)
class RunningCell:
    """A cell being served: its membrane, context and service-time samples."""

    cell: Cell
    context: CellContext
    membrane: Membrane
    times: ServiceTimes

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the cell to stop normally (drain, on_stop)."""
        self.context.request_stop(reason)

    def stats(self) -> CellStats:
        """A :class:`CellStats` now; takes (resets) the interval's service times.

        ``msgs_in`` = calls + signals received; ``msgs_out`` = answers sent to
        calls (replies + error replies): every accepted call is answered
        exactly once, so it is counted when accepted (calls in flight are
        included); ``errors`` = failed calls and signals (handler raised, no
        receptor, bad reply).
        """
        s = self.membrane.stats
        p50, p99 = self.times.take()
        buckets, total_us = self.times.take_histogram()
        return CellStats(
            msgs_in=s.calls + s.signals, msgs_out=s.calls, errors=s.errors,
            rtt_p50_us=p50, rtt_p99_us=p99, rtt_buckets=buckets, rtt_sum_us=total_us,
            token=self.context.token,
        )


async def serve_cell(
    cell: Cell,
    *,
    name: str,
    listen_fd: int | None = None,
    socket_dir: str | os.PathLike[str] | None = None,
    umbilical: str | None = None,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    stop_requested: trio.Event | None = None,
    stats_interval: float = STATS_INTERVAL,
    sample_every: int = DEFAULT_SAMPLE_EVERY,
    log: Callable[[str], None] | None = None,
    token: str = "",
    swap_in: bool = False,
    exit_on_memory_error: bool = False,
    task_status: trio.TaskStatus[RunningCell] = trio.TASK_STATUS_IGNORED,
) -> str:
    """Serve ``cell`` as ``name`` until it is asked to stop; return the stop reason.

    Order: umbilical, ``on_start``, ``CellReady``, membrane, (started), serve;
    then drain, ``on_stop``, cancel the cell's nursery, close the synapses.
    An exception from ``on_start``, ``on_stop`` or a cell task propagates
    (unwrapped when it is the only one). ``stop_requested`` may be set by the
    caller (signals) at any time, even before ``on_start`` returns. ``env``
    is the env contract the cell may read (a replica's ``CELL_REPLICA_*``).

    ``token`` is the process's go token (it names the process to the root;
    with one, the cell also polls the root for swap orders). ``swap_in``:
    this process takes over in a hot swap: before ``on_start`` it asks the
    root for the old version's state, after it calls ``on_swap_in``; a
    failure there is reported to the root before it propagates. A process
    whose swap committed stops without ``on_stop`` (docs/swap.md).

    ``exit_on_memory_error``: a receptor's MemoryError ends the process at once
    (exit 137, as a memory kill) -- what the cell runtime's process does. Off
    (in a test's process), the call fails like any other handler error
    (``RemoteCellError`` naming the MemoryError) and the process lives on.
    """
    check_cell_name(name)
    # Now, not when the membrane opens: with the root binding the socket, the
    # cell says it is ready before that, and a typo would crash it after `up`.
    # (The class's own options: a replicated cell adds its runtime's later.)
    membrane_options(dict(type(cell).membrane_options))
    stop = stop_requested if stop_requested is not None else trio.Event()
    sockets = Path(socket_dir) if socket_dir is not None else Paths.from_env().socket_dir
    times = ServiceTimes()
    async with AsyncExitStack() as stack:
        root: Synapse | None = None
        if umbilical is not None:
            root = await stack.enter_async_context(
                Synapse.grow("mitosis", socket_path=umbilical, client_name=name)
            )
        async with open_service_nursery() as service:
            tasks = _CellTasks(stop=stop)
            with tasks.main:
                nursery = await service.start(tasks.hold)
                ctx = CellContext(
                    name=name, nursery=nursery, synapse_nursery=service, socket_dir=sockets,
                    data_dir=data_dir, umbilical=root, umbilical_path=umbilical,
                    stop_requested=stop, env=dict(env) if env is not None else {},
                    token=token,
                )
                if stop.is_set():
                    ctx.stop_reason = "stop requested"
                cell._bind(ctx)
                async with cell._open_runtime(ctx):
                    handover: Handover | None = None
                    if swap_in and root is not None:
                        handover = await _handover.staged(
                            ctx, "the hand-over", _handover.take_over(ctx, cell)
                        )
                        ctx.in_on_start = True
                        await _handover.staged(ctx, "on_start", cell.on_start())
                        ctx.in_on_start = False
                        await _handover.staged(
                            ctx, "on_swap_in", _handover.apply_handover(cell, handover)
                        )
                        tasks.drain = handover.probation > 0
                    else:
                        ctx.in_on_start = True
                        await cell.on_start()
                        ctx.in_on_start = False
                    # Ready = init done (OTP), said before serving so a crash in
                    # the first calls is a crash, not a failed start -- except when
                    # we bind the socket ourselves: then only once it exists; and
                    # when taking over in a swap, where new calls wait for us:
                    # serve first, announce after (one round trip less waiting).
                    announce_first = root is not None and listen_fd is not None and not swap_in
                    if announce_first:
                        await _announce(ctx, cell)
                    receptors = cell._membrane_handler(ctx, times, sample_every)
                    async with open_membrane(
                        name, receptors, listen_fd=listen_fd, socket_dir=sockets, log=log,
                        on_handler_error=_die_if_out_of_memory if exit_on_memory_error else None,
                        **cell._membrane_options(),
                    ) as membrane:
                        cell._membrane_opened(membrane)
                        running = RunningCell(
                            cell=cell, context=ctx, membrane=membrane, times=times
                        )
                        if root is not None:
                            if not announce_first:
                                await _announce(ctx, cell)
                            service.start_soon(_report, running, root, stats_interval)
                            if token:
                                service.start_soon(_handover.serve_orders, ctx, cell, membrane)
                        if tasks.drain and handover is not None:
                            service.start_soon(tasks.end_probation, handover.probation)
                        task_status.started(running)
                        await stop.wait()
                        if tasks.error is not None:
                            # A crash on probation: the calls accepted are answered
                            # (drain) before the process exits and the swap rolls back.
                            await membrane.suspend(CRASH_DRAIN_GRACE)
                            await _handover.report_failure(
                                root, token, "its probation", tasks.error
                            )
                    if tasks.error is None and not ctx.swapped_out:
                        await cell.on_stop()
                nursery.cancel_scope.cancel()
            tasks.raise_crash()
            service.cancel_scope.cancel()
    return ctx.stop_reason


@attrs.define(eq=False)
class _CellTasks:
    """The cell's own nursery (``self.nursery``), held by a task of its own.

    A task there that raises cancels the cell's main flow at once (on_start,
    serving: connections close, no ``on_stop``), and the exception propagates
    from :func:`serve_cell` -- except on a swap's probation (``drain``): then
    the stop is requested instead, so the membrane drains first.
    """

    stop: trio.Event
    main: trio.CancelScope = attrs.Factory(trio.CancelScope)
    error: BaseException | None = None
    drain: bool = False

    async def hold(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        try:
            async with open_service_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        except BaseException as exc:
            if _only(exc, trio.Cancelled) is not None:
                raise
            self.error = exc
            if self.drain:
                self.stop.set()
            else:
                self.main.cancel()

    async def end_probation(self, seconds: float) -> None:
        """Stop draining on a crash after ``seconds`` (the swap's grace period)."""
        await trio.sleep(seconds)
        self.drain = False

    def raise_crash(self) -> None:
        if self.error is not None:
            raise self.error


def _die_if_out_of_memory(exc: BaseException) -> None:
    """A receptor ran out of memory: the process dies as a memory kill (exit 137)."""
    if has_memory_error(exc):
        die_of_memory()


async def _announce(ctx: CellContext, cell: Cell) -> None:
    with suppress(NoRoot):  # ask_root requested the stop
        await ctx.ask_root(
            CellReady(pid=os.getpid(), token=ctx.token, version=type(cell).version,
                      trap_exits=bool(type(cell).trap_exits))
        )


async def _report(running: RunningCell, root: Synapse, interval: float) -> None:
    """Every ``interval``: stop if the umbilical broke, else send ``CellStats``."""
    ctx = running.context
    while True:
        await trio.sleep(interval)
        if ctx.root_lost():
            return
        try:
            await root.signal(running.stats())
        except CellUnavailable:
            ctx.request_stop("the umbilical connection to the root broke")
            return


# ---------------------------------------------------------------- process


def _line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_cell(env: Mapping[str, str], go: Go | None = None) -> int:
    """Run the cell the env contract describes; return the process exit code.

    SIGTERM/SIGINT stop it normally. MemoryError anywhere -> ``os._exit(137)``.
    ``go`` is what the root said on the go pipe (None: start, no token).
    """
    go = go if go is not None else Go()
    env = go.environ(env)
    stop = trio.Event()
    reports = report_fd(env)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        spec: CellEnv | None = None
        try:
            spec = CellEnv.from_env(env)
            _check_listener(spec)
            cls = spec.load_class()
            _check_replicated(env, cls, spec)
        except ConfigError as exc:
            _line(f"{PROG}: {exc}")
            report_failure(reports, "config", exc)
            await _early_report(spec, go, "the import", exc)
            return EXIT_CONFIG
        except CellImportError as exc:
            if has_memory_error(exc):
                die_of_memory()
            _line(f"{PROG}: {exc}:\n{traceback.format_exc().rstrip()}")
            report_failure(reports, "import", exc)
            await _early_report(spec, go, "the import", exc.__cause__ or exc)
            return EXIT_CRASH
        send_report(reports, loaded_record())
        serving = _Started()
        in_constructor = False
        cell: Cell | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def watch_signals() -> None:
                    async for signum in signals:
                        _line(f"{PROG}: {spec.name}: {signal.Signals(signum).name}, stopping")
                        stop.set()

                nursery.start_soon(watch_signals)
                try:
                    cell = cls()
                except Exception as exc:
                    in_constructor = True
                    await _early_report(spec, go, "the constructor", exc)
                    raise
                reason = await serve_cell(
                    cell, name=spec.name, listen_fd=spec.listen_fd, socket_dir=spec.socket_dir,
                    umbilical=spec.umbilical, data_dir=spec.data_dir, env=env,
                    stop_requested=stop, log=_line, token=go.token, swap_in=go.swap,
                    exit_on_memory_error=True, task_status=serving,
                )
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            if has_memory_error(exc):
                die_of_memory()
            refused = _only(exc, _handover.SwapRefused)
            if refused is not None:
                _line(f"{PROG}: {spec.name}: {refused}; exiting")
                return EXIT_OK
            config = _config_error(exc)
            if config is not None:
                _line(f"{PROG}: {spec.name}: {config}")
                report_failure(reports, "config", config)
                return EXIT_CONFIG
            _line(f"{PROG}: cell {spec.name} crashed:\n{crash_text(exc)}")
            cell_ctx = cell._ctx if cell is not None else None
            stage: Stage = (
                "construct" if in_constructor
                else "start" if cell_ctx is not None and cell_ctx.in_on_start
                else "setup"  # the runtime's own steps: umbilical, replica log, membrane
            )
            report_failure(reports, "run" if serving.serving else stage, exc)
            _line(_cause_line(exc))  # the last line names the cause (the root shows it)
            return EXIT_CRASH
        if reason:
            _line(f"{PROG}: {spec.name} stopped: {reason}")
        return EXIT_OK


def _cause_line(exc: BaseException) -> str:
    """``Type: message`` of the first real failure inside ``exc`` (groups unwrapped)."""
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup):
        real = [e for e in leaf.exceptions if not isinstance(e, trio.Cancelled)]
        leaf = (real or list(leaf.exceptions))[0]
    cls = type(leaf)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return f"{name}: {leaf}"


def _config_error(exc: BaseException) -> ConfigError | None:
    """``exc`` if it is a ConfigError, or the first of a group holding only ConfigErrors."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(ConfigError)
        if match is not None and rest is None:
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            assert isinstance(leaf, ConfigError)
            return leaf
    return None


def _check_replicated(env: Mapping[str, str], cls: type[Cell], spec: CellEnv) -> None:
    """A replica (``CELL_REPLICA_ID`` set) must run a ReplicatedCell, and only a replica may."""
    replica = bool(env.get("CELL_REPLICA_ID"))
    replicated = bool(getattr(cls, "_replicated", False))
    if replica and not replicated:
        raise ConfigError(
            "CELL_ENTRY",
            f"{spec.module}:{cls.__qualname__} is not a cellmesh.ReplicatedCell subclass, "
            "but the cell has replicas (CELL_REPLICA_ID is set)",
        )
    if replicated and not replica:
        raise ConfigError(
            "CELL_REPLICA_ID",
            f"is not set, but {spec.module}:{cls.__qualname__} is a ReplicatedCell: "
            "give the cell `replicas = N` in the manifest",
        )
    if replica:
        ReplicaSpec.from_env(env, spec.data_dir)  # names a bad CELL_REPLICA_* before serving


async def _early_report(spec: CellEnv | None, go: Go, stage: str, exc: BaseException) -> None:
    """A process taking over in a swap fails before serving: tell the root why."""
    if go.swap and spec is not None and spec.umbilical is not None:
        await _handover.report_early_failure(spec.umbilical, spec.name, go.token, stage, exc)


class _Started:
    """The ``task_status`` :func:`run_cell` gives :func:`serve_cell`: did it start serving?"""

    serving = False

    def started(self, value: object = None) -> None:
        self.serving = True


def _only(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` if it is (a group of nothing but) one ``kind``, else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, kind) else None


def wait_for_go(env: Mapping[str, str]) -> Go | None:
    """Standby: preload the cell's code, then wait for the root's go (see :mod:`._standby`).

    Returns None when the root closed the pipe (not needed: exit quietly).
    A bad value is left for :func:`run_cell` to report.
    """
    return _standby.wait_for_go(env, _preload)


def _check_listener(spec: CellEnv) -> None:
    """The inherited membrane socket is there (step 1, before any of the cell's code runs):
    a ConfigError naming ``CELL_LISTEN_FDS`` if not, so the cell exits 2 at once."""
    if spec.listen_fd is None:
        return
    problem = listener_problem(spec.listen_fd)
    if problem is not None:
        raise ConfigError(
            "CELL_LISTEN_FDS",
            f"says the membrane's listening socket is inherited at fd {spec.listen_fd} "
            f"(CELL_LISTEN_FDS_START), but fd {problem}",
        )


def _preload(env: Mapping[str, str]) -> None:
    """Warm the imports of the code ``env`` names (a standby's ``i DIGEST``).

    Says on the report pipe whether they worked (``cellmesh up`` waits for
    that); :func:`run_cell` loads again after go and reports what it meets
    then (anything but a config or import error is only reported there).
    """
    reports = report_fd(env)
    try:
        CellEnv.from_env(env).load_class()
    except ConfigError as exc:
        report_failure(reports, "config", exc)
    except CellImportError as exc:
        report_failure(reports, "import", exc)
    except Exception:  # run_cell reports it after "go"
        pass
    else:
        send_report(reports, loaded_record())


def main() -> NoReturn:
    """Entry point of ``python -m cellmesh.actors.runtime``."""
    sys.excepthook = _excepthook
    try:
        go = wait_for_go(os.environ)
        if go is None:
            sys.exit(EXIT_OK)
        code = trio.run(run_cell, dict(os.environ), go)
    except BaseException as exc:
        if has_memory_error(exc):
            die_of_memory()
        raise
    sys.stderr.flush()
    sys.exit(code)


__all__ = [
    "EXIT_CONFIG",
    "EXIT_CRASH",
    "EXIT_OK",
    "CellEnv",
    "Go",
    "CellImportError",
    "RunningCell",
    "die_of_memory",
    "has_memory_error",
    "main",
    "run_cell",
    "serve_cell",
    "wait_for_go",
]


if __name__ == "__main__":
    main()
