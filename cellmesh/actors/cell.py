"""Cell: the actor users write -- receptors, lifecycle hooks, calls to cells and the root.

Theory of operation
-------------------
A :class:`Cell` subclass declares *receptors*: ``async def`` methods marked
with :func:`receptor`, each handling one protein type (taken from the first
message parameter's annotation, or given as ``@receptor(Protein)``). They
are collected once, when the class is created (``__init_subclass__``), into
a protein -> method-name table; a bad or duplicate receptor is a
``TypeError`` at class creation, not at the first message.

The runtime (:mod:`cellmesh.actors.runtime`) instantiates the class, binds
it to a :class:`CellContext` (name, the cell's nursery, the synapse cache,
the umbilical to the root) and serves :meth:`CellContext.receptors` on the
cell's membrane. The membrane dispatches on the type table directly (the
handler is a :class:`~cellmesh.Receptors`), so a receptor that does not
suspend runs inline in the connection's reader; the only per-message cost
the cell adds is one counter check that samples every n-th message's
service time (see :class:`CellReceptors`).

Calls to other cells go through one cached :class:`~cellmesh.Synapse` per
target, grown on first use by a holder task that lives until the cell stops
(a Synapse owns a nursery, so it must be opened and closed by one task).
Root requests (monitors, links, dynamic children) go over the umbilical
synapse; without one they raise :class:`NoRoot`.

Hot swap (docs/swap.md): ``version`` names a class's code for its
successors; ``on_swap_out`` returns the state the old instance hands over
once its calls have drained, ``on_swap_in`` receives it in the new instance
(after ``on_start``) with the old one's :class:`CellVersion` -- OTP's
``code_change``. A state whose protein the new code does not know (or knows
with another schema) arrives as a :class:`RawState` for it to convert.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from time import perf_counter_ns
from typing import Any, ClassVar, Final, TypeVar, overload

import attrs
import trio

from ..config import check_cell_name
from ..errors import CellmeshError, CellUnavailable
from ..transport._client_core import NO_SOCKET
from ..transport._dispatch import Handler, Receptors
from ..transport.membrane import Membrane
from ..transport.synapse import Synapse
from ..wire.proteins import is_protein
from ..wire.replies import R, Request, reply_types, return_problem
from ._stats import DEFAULT_SAMPLE_EVERY, ServiceTimes
from .control import (
    Ack,
    CellDown,
    Demonitor,
    Link,
    Monitor,
    MonitorRef,
    StartChild,
    StopChild,
    Unlink,
)

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

_MARK: Final = "__cellmesh_receptor__"


class NoRoot(CellmeshError):
    """A root request (monitor, link, child) was made but no root can answer it.

    ``umbilical`` is the umbilical socket path, or None when the cell runs
    standalone (no ``CELL_UMBILICAL``); ``reason`` says why it cannot be used.
    """

    def __init__(self, umbilical: str | None, reason: str) -> None:
        where = "no CELL_UMBILICAL (standalone cell)" if umbilical is None else umbilical
        super().__init__(f"no root to ask: {reason} ({where})")
        self.umbilical = umbilical
        self.reason = reason


class BadRootReply(CellmeshError):
    """The root answered a request with a protein the request does not allow.

    ``request`` and ``reply`` are the type names.
    """

    def __init__(self, request: str, reply: str) -> None:
        super().__init__(f"the root answered {request} with {reply}")
        self.request = request
        self.reply = reply


def _explained(exc: CellUnavailable) -> CellUnavailable:
    """``exc`` as a cell calling another sees it: a socket that is not there may
    also mean the target is not this cell's to call (it is not in its ``calls``)."""
    if exc.reason != NO_SOCKET:
        return exc
    return CellUnavailable(exc.cell, exc.socket_path, NOT_CALLABLE)


#: Why a cell found no socket for a cell it called.
NOT_CALLABLE: Final = (
    "no such socket: that cell is not running, or this cell may not call it (a cell "
    "reaches only the cells its manifest entry lists in `calls`, the running instances of "
    "the templates listed there, and its own dynamic children)"
)


@attrs.frozen(kw_only=True)
class CellVersion:
    """The identity of a cell's code: its DNA digest (SHA-256 hex) and ``Cell.version``."""

    dna: str
    version: str


@attrs.frozen(kw_only=True)
class RawState:
    """A handed-over state the new code cannot decode as a protein it knows.

    ``wire_name`` and ``fingerprint`` name the old code's protein; ``fields``
    are its decoded CBOR field values in declaration order (vesicles arrive
    as ``bytes``). ``on_swap_in`` converts it, or raises to roll back.
    """

    wire_name: str
    fingerprint: str
    fields: list[Any]


@attrs.define(eq=False)
class _Mark:
    """What :func:`receptor` recorded on a function; ``resolved`` caches the protein."""

    declared: type | None
    resolved: type | None = None

    @property
    def words(self) -> tuple[str, str]:
        """What messages call the method, and its explicit form."""
        return "receptor", "@receptor(Protein)"


@overload
def receptor(target: F) -> F: ...
@overload
def receptor(target: type) -> Callable[[F], F]: ...
def receptor(target: Any) -> Any:
    """Mark an ``async def`` method of a :class:`Cell` as the receptor of a protein.

    ``@receptor`` takes the protein from the annotation of the first parameter
    after ``self`` (resolved with :func:`typing.get_type_hints`, so string
    annotations and ``from __future__ import annotations`` work);
    ``@receptor(Protein)`` names it explicitly. The method's return value is
    the reply (a protein, or None). Checked when the class is created.
    """
    if isinstance(target, type):
        if not is_protein(target):
            raise TypeError(f"@receptor({target.__qualname__}): not a protein class")
        declared = target

        def decorator(func: F) -> F:
            _mark(func, declared)
            return func

        return decorator
    _mark(target, None)
    return target


def _mark(func: Any, declared: type | None) -> None:
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@receptor needs an async def function, got {func!r}")
    setattr(func, _MARK, _Mark(declared))


def _resolve(owner: type, attr: str, func: Any, mark: _Mark, localns: dict[str, Any]) -> type:
    """The protein of receptor ``owner.attr`` (cached on its mark)."""
    if mark.resolved is not None:
        return mark.resolved
    kind, explicit = mark.words
    where = f"{owner.__qualname__}.{attr}"
    if mark.declared is not None:
        proto = mark.declared
    else:
        params = list(inspect.signature(func).parameters.values())
        if len(params) < 2:
            raise TypeError(f"{kind} {where} must take (self, msg)")
        param = params[1].name
        try:
            hints = _type_hints(func, {**localns, owner.__name__: owner})
        except Exception as exc:
            raise TypeError(
                f"{kind} {where}: cannot resolve the annotation of {param!r} "
                f"({type(exc).__name__}: {exc}); define the protein before the cell "
                f"or use {explicit}"
            ) from None
        if param not in hints:
            raise TypeError(
                f"{kind} {where}: parameter {param!r} has no annotation; "
                f"annotate it with the protein or use {explicit}"
            )
        proto = hints[param]
        if not (isinstance(proto, type) and is_protein(proto)):
            raise TypeError(
                f"{kind} {where}: annotation {proto!r} of {param!r} is not a protein "
                "(decorate the class with @cellmesh.protein)"
            )
    _check_return(kind, where, func, proto, {**localns, owner.__name__: owner})
    mark.resolved = proto
    return proto


#: Return annotations that fit any declared reply: ``Any`` (not checked) and the
#: bottom type (a receptor that always raises).
_FITS_ANY: Final = (Any, typing.NoReturn, typing.Never)


def _check_return(
    kind: str, where: str, func: Any, proto: type, localns: dict[str, Any]
) -> None:
    """The ``-> annotation`` of a receptor (``kind``: "receptor", or "query" for a
    replicated cell's query) must fit its request's declared reply type.

    When ``proto`` declares its reply (``Request[Reply]``), every type the
    annotation allows must be a declared reply type (a protein, or None): a
    :class:`TypeError` names the receptor, what it returns and the declared
    reply otherwise -- ``-> int`` or ``-> dict[str, int]`` too, which the
    caller would only meet as an error reply. ``Any``, a type variable and
    ``NoReturn``/``Never`` fit any reply; an annotation that does not resolve
    is not judged (as before).
    """
    if "return" not in getattr(func, "__annotations__", {}):
        return
    try:
        returned = _type_hints(func, localns).get("return")
    except Exception:
        return  # unresolvable return annotations are not ours to judge
    accepted = reply_types(proto)
    if accepted is None:
        return  # it declares no reply: any return annotation fits
    options = _options(type(None) if returned is None else returned)
    foreign = [t for t in options if not _replyable(t) and not _open(t)]
    if foreign:
        shown = " | ".join(map(_shown, foreign))
        if len(foreign) < len(options):
            shown += f" (in {_shown(returned)})"
        raise TypeError(
            f"{kind} {where}: returns {shown} but {_shown(proto)} declares the reply "
            f"{' | '.join(map(_shown, accepted))}"
        )
    typed = [t for t in options if _replyable(t)]
    if not typed:
        return
    problem = return_problem(proto, typing.Union[tuple(typed)])  # noqa: UP007 - a runtime tuple
    if problem is not None:
        raise TypeError(f"{kind} {where}: {problem}")


def _options(tp: object) -> list[object]:
    """The types a return annotation allows: a union's options, each on its own."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [t for option in typing.get_args(tp) for t in _options(option)]
    return [tp]


def _replyable(tp: object) -> bool:
    """A protein class or None: something a reply may be."""
    return tp is type(None) or is_protein(tp)


def _open(tp: object) -> bool:
    """``Any``, a type variable or the bottom type: fits whatever the request declares."""
    return any(tp is t for t in _FITS_ANY) or isinstance(tp, TypeVar)


def _shown(tp: object) -> str:
    """``tp`` as a message names it: a protein by its wire name, a class by its name."""
    if tp is type(None) or tp is None:
        return "None"
    name = getattr(tp, "__protein_name__", None) if is_protein(tp) else None
    if isinstance(name, str):
        return name
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp)


def _type_hints(func: Any, localns: dict[str, Any]) -> dict[str, Any]:
    return typing.get_type_hints(func, localns=localns)


def _collect(cls: type, localns: dict[str, Any]) -> dict[type, str]:
    """Protein -> method name over ``cls``'s MRO (a subclass's method of the same
    name replaces the base's receptor; two names for one protein are an error)."""
    table: dict[type, str] = {}
    by_name: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            mark = getattr(value, _MARK, None)
            if not isinstance(mark, _Mark):
                continue
            proto = _resolve(klass, attr, value, mark, localns if klass is cls else {})
            if proto is CellDown:
                raise TypeError(
                    f"receptor {klass.__qualname__}.{attr}: CellDown is handled by Cell; "
                    "override on_cell_down instead"
                )
            old = by_name.pop(attr, None)
            if old is not None:
                del table[old]
            if proto in table:
                raise TypeError(
                    f"{cls.__qualname__}: protein {proto.__qualname__} has two receptors, "
                    f"{table[proto]!r} and {attr!r}"
                )
            table[proto] = attr
            by_name[attr] = proto
    return table


class CellReceptors(Receptors):
    """A cell instance's receptors, sampling every ``every``-th message's service time.

    The membrane calls :meth:`lookup` once per message (call or signal). On
    all but every ``every``-th it returns the bound method itself (cost: a
    counter decrement and a test); on the sampled one it returns a wrapper
    that records receipt-to-return in ``times`` (nanoseconds, suspensions
    included, whether the receptor returns or raises).
    """

    __slots__ = ("_every", "_left", "_plain", "_timed", "times")

    def __init__(
        self,
        handlers: dict[type, Handler],
        times: ServiceTimes,
        every: int = DEFAULT_SAMPLE_EVERY,
    ) -> None:
        super().__init__(handlers)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.times = times
        self._every = every
        self._left = every
        self._plain = dict(handlers)
        self._timed = {cls: self._timer(h) for cls, h in handlers.items()}

    def _timer(self, handler: Handler) -> Handler:
        record = self.times.record

        async def timed(msg: Any) -> Any:
            start = perf_counter_ns()
            try:
                return await handler(msg)
            finally:
                record(perf_counter_ns() - start)

        return timed

    def lookup(self, cls: type) -> Handler | None:
        """The handler for ``cls`` (a timing wrapper on sampled messages), or None."""
        self._left -= 1
        if self._left:
            return self._plain.get(cls)
        self._left = self._every
        return self._timed.get(cls)


@attrs.define(eq=False)
class CellContext:
    """What a running cell is bound to: set up and owned by the runtime.

    ``nursery`` is the cell's own nursery (cancelled at stop, after
    ``on_stop``); ``synapse_nursery`` holds the cached synapses' holder tasks
    (closed after ``on_stop``). ``stop_requested`` is set to ask the runtime
    to stop normally; ``stop_reason`` says who asked first. ``env`` is the
    process env contract (a replica reads its ``CELL_REPLICA_*`` there).
    """

    name: str
    nursery: trio.Nursery
    synapse_nursery: trio.Nursery
    socket_dir: Path
    data_dir: Path | None
    umbilical: Synapse | None
    umbilical_path: str | None
    stop_requested: trio.Event
    stop_reason: str = ""
    env: Mapping[str, str] = attrs.field(factory=dict)
    #: The process's go token from the root ("" standalone): names it in swaps.
    token: str = ""
    #: Set when a swap committed: the process exits without ``on_stop``.
    swapped_out: bool = False
    #: True while the cell's ``on_start`` runs (a failure then is "in on_start").
    in_on_start: bool = False
    _synapses: dict[str, Synapse] = attrs.field(factory=dict)
    _growing: dict[str, trio.Lock] = attrs.field(factory=dict)
    _holds: dict[str, trio.CancelScope] = attrs.field(factory=dict)

    def request_stop(self, reason: str) -> None:
        """Ask the runtime to drain and stop (normal exit); the first reason is kept."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    async def synapse(self, name: str) -> Synapse:
        """The cached synapse to cell ``name``, grown on first use."""
        syn = self._synapses.get(name)
        if syn is not None:
            return syn
        lock = self._growing.setdefault(name, trio.Lock())
        async with lock:
            syn = self._synapses.get(name)
            if syn is None:
                syn = await self.synapse_nursery.start(self._hold, name)
                self._synapses[name] = syn
        return syn

    def socket_path(self, name: str) -> Path:
        """Where cell ``name`` listens: ``$CELL_SOCKET_DIR/<name>.sock``, or, for a
        dynamic child of this cell inside a sandbox, ``$CELL_SOCKET_DIR/children/<name>.sock``."""
        path = self.socket_dir / f"{name}.sock"
        if not path.exists():
            child = self.socket_dir / "children" / f"{name}.sock"
            if child.exists():
                return child
        return path

    async def _hold(self, name: str, *, task_status: trio.TaskStatus[Synapse]) -> None:
        check_cell_name(name)
        path = self.socket_path(name)
        with trio.CancelScope() as scope:
            async with Synapse.grow(name, socket_path=path, client_name=self.name) as syn:
                self._holds[name] = scope
                task_status.started(syn)
                await trio.sleep_forever()

    def forget(self, name: str) -> None:
        """Close and drop the cached synapse to ``name`` (a child this cell stopped):
        a parent that churns children by name keeps one synapse per live callee,
        not one per name it ever called."""
        self._synapses.pop(name, None)
        self._growing.pop(name, None)
        scope = self._holds.pop(name, None)
        if scope is not None:
            scope.cancel()

    def root_lost(self) -> bool:
        """True (and a stop is requested) when the umbilical connection broke."""
        if self.umbilical is not None and not self.umbilical.connected:
            self.request_stop("the umbilical connection to the root broke")
            return True
        return False

    async def ask_root(self, msg: Any) -> Any:
        """Send a request to the root; :class:`NoRoot` when there is none (any more)."""
        syn = self.umbilical
        if syn is None:
            raise NoRoot(None, f"{type(msg).__name__} needs a root")
        if self.root_lost():
            raise NoRoot(self.umbilical_path, "the umbilical connection broke")
        try:
            return await syn.fire(msg)
        except CellUnavailable as exc:
            self.request_stop("the umbilical connection to the root broke")
            raise NoRoot(self.umbilical_path, f"the umbilical failed: {exc.reason}") from exc

    def receptors(self, cell: Cell, times: ServiceTimes, every: int) -> CellReceptors:
        """The dispatcher the membrane serves for ``cell`` (plus the built-in CellDown)."""
        handlers: dict[type, Handler] = {
            proto: getattr(cell, attr) for proto, attr in type(cell)._receptor_table.items()
        }
        handlers[CellDown] = cell._deliver_cell_down
        return CellReceptors(handlers, times, every)


class Cell:
    """Base class of a cell: subclass it, add receptors, override the hooks.

    ``on_start`` runs before the membrane serves (``self.nursery`` is usable);
    ``on_stop`` after the membrane drained on a normal stop; ``on_cell_down``
    for each :class:`~cellmesh.CellDown` (monitors, trapped links).
    ``trap_exits`` decides what a failing linked cell does to this one: kill it
    (False, the default) or deliver ``CellDown`` (True).
    """

    trap_exits: ClassVar[bool] = False
    #: This code's version, given to a successor's ``on_swap_in`` (docs/swap.md).
    version: ClassVar[str] = ""
    #: :class:`~cellmesh.MembraneOptions` fields for this cell's membrane, e.g.
    #: ``{"max_frame_size": 1 << 20, "idle_timeout": 300}`` (docs/security.md,
    #: "Denial of service": the bounds every connection gets).
    membrane_options: ClassVar[dict[str, Any]] = {}
    _receptor_table: ClassVar[dict[type, str]] = {}
    _ctx: CellContext | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        frame = sys._getframe(1)  # the scope holding the class statement
        localns = dict(frame.f_locals) if frame.f_code.co_name != "<module>" else {}
        cls._receptor_table = _collect(cls, localns)

    # -- lifecycle hooks (override) -----------------------------------------

    async def on_start(self) -> None:
        """Initialise before serving (OTP ``init``); raising crashes the cell (exit 1)."""

    async def on_stop(self) -> None:
        """Clean up after the membrane drained, on SIGTERM or :meth:`stop`."""

    async def on_cell_down(self, down: CellDown) -> None:
        """A monitored (or trapped linked) cell stopped."""

    async def on_swap_out(self) -> Any:
        """Hot swap, old instance: return the state to hand over (a protein), or None.

        Runs after every call in flight was answered and while no new call
        is accepted; the instance's own tasks still run. It must not tear
        anything down: if the new version fails, this instance serves on
        with its state. Raising rolls the swap back. After a committed swap
        the process exits without ``on_stop`` (its role continues in the new
        version, as in OTP's code change).
        """
        return None

    async def on_swap_in(self, state: Any, old: CellVersion) -> None:
        """Hot swap, new instance: take over ``state`` (after ``on_start``, before serving).

        ``state`` is the protein the old instance's ``on_swap_out`` returned
        (None when it returned None or has no hook), or a :class:`RawState`
        when this code does not know its protein's schema; ``old`` names the
        old code. Transform it as needed (OTP's ``code_change``); raising
        rolls the swap back and the old version serves on.
        """

    async def _deliver_cell_down(self, down: CellDown) -> None:
        await self.on_cell_down(down)

    # -- runtime hooks (a kind of cell, like ReplicatedCell, overrides them) ----

    @asynccontextmanager
    async def _open_runtime(self, ctx: CellContext) -> AsyncIterator[None]:
        """What runs around this cell's serving (from before ``on_start`` to after
        ``on_stop``); a plain cell needs nothing."""
        del ctx
        yield

    def _membrane_handler(self, ctx: CellContext, times: ServiceTimes, every: int) -> Handler:
        """The dispatcher the cell's membrane serves."""
        return ctx.receptors(self, times, every)

    def _membrane_options(self) -> Mapping[str, Any]:
        """The ``open_membrane`` keywords for the cell's membrane (its :attr:`membrane_options`)."""
        return type(self).membrane_options

    def _membrane_opened(self, membrane: Membrane) -> None:
        """The cell's membrane serves from now on (until the runtime stops it)."""

    # -- runtime state ---------------------------------------------------------

    def _bind(self, ctx: CellContext) -> None:
        self._ctx = ctx

    def _context(self) -> CellContext:
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError(
                f"{type(self).__qualname__} is not running: its runtime API works "
                "once the cell runtime serves it"
            )
        return ctx

    @property
    def name(self) -> str:
        """The cell's name (``CELL_NAME``)."""
        return self._context().name

    @property
    def nursery(self) -> trio.Nursery:
        """The cell's own nursery; its tasks are cancelled at stop (after on_stop).

        A task that raises crashes the cell (exit 1).
        """
        return self._context().nursery

    @property
    def data_dir(self) -> Path | None:
        """The cell's durable-state directory (``CELL_DATA_DIR``), or None."""
        return self._context().data_dir

    # -- other cells -------------------------------------------------------

    async def call(self, cell_name: str, msg: Request[R]) -> R:
        """Call cell ``cell_name`` with ``msg`` and return its reply.

        Uses one cached synapse per target (``$CELL_SOCKET_DIR/<cell>.sock``).
        A ``Request[R]`` returns an ``R`` (checked: :class:`~cellmesh.UnexpectedReply`).
        Raises :class:`~cellmesh.CellUnavailable` / :class:`~cellmesh.RemoteCellError`.
        """
        try:
            syn = await self._context().synapse(cell_name)
            return await syn.fire(msg)
        except CellUnavailable as exc:
            raise _explained(exc) from None

    async def signal(self, cell_name: str, msg: Any) -> None:
        """Send a one-way ``msg`` to cell ``cell_name``."""
        try:
            syn = await self._context().synapse(cell_name)
            await syn.signal(msg)
        except CellUnavailable as exc:
            raise _explained(exc) from None

    # -- root requests -----------------------------------------------------

    async def _ask(self, msg: Any, expect: type | tuple[type, ...]) -> Any:
        reply = await self._context().ask_root(msg)
        if not isinstance(reply, expect):
            raise BadRootReply(type(msg).__name__, type(reply).__name__)
        return reply

    async def monitor(self, name: str) -> int:
        """Watch cell ``name``: ``on_cell_down`` runs once when it stops. Returns the ref."""
        reply = await self._ask(Monitor(target=name), MonitorRef)
        return int(reply.ref)

    async def demonitor(self, ref: int) -> None:
        """Cancel monitor ``ref``; no ``CellDown`` arrives for it afterwards."""
        await self._ask(Demonitor(ref=ref), (Ack, type(None)))

    async def link(self, name: str) -> None:
        """Link with cell ``name`` (behaviour on its failure: see ``trap_exits``)."""
        await self._ask(Link(target=name, trap_exits=type(self).trap_exits), (Ack, type(None)))

    async def unlink(self, name: str) -> None:
        """Remove the link with cell ``name``."""
        await self._ask(Unlink(target=name), (Ack, type(None)))

    async def start_child(self, template: str, suffix: str) -> str:
        """Start a dynamic child ``<name>.<suffix>`` from manifest template ``template``."""
        reply = await self._ask(StartChild(template=template, suffix=suffix), Ack)
        return str(reply.text)

    async def stop_child(self, name: str) -> None:
        """Stop (and forget) dynamic child ``name`` of this cell; the synapse this
        cell kept to it, if it called it, is closed."""
        await self._ask(StopChild(name=name), (Ack, type(None)))
        self._context().forget(name)

    async def stop(self) -> None:
        """Ask the runtime to stop this cell normally (drain, ``on_stop``, exit 0).

        Returns at once: the stop proceeds when the caller (perhaps a receptor
        whose call the drain waits for) returns.
        """
        self._context().request_stop("the cell asked to stop")
        await trio.lowlevel.checkpoint()


__all__ = [
    "BadRootReply",
    "Cell",
    "CellContext",
    "CellReceptors",
    "CellVersion",
    "NoRoot",
    "RawState",
    "receptor",
]
