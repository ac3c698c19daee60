"""ReplicatedCell: a cell whose state is a deterministic state machine replicated by Raft.

Theory of operation
-------------------
The user writes a state machine, nothing else::

    class Bank(cellmesh.ReplicatedCell):
        commands = (Deposit, Transfer)            # the proteins that are writes

        def apply(self, command, meta):           # sync, deterministic
            ...                                   # meta.index, meta.timestamp
            return Receipt(...)                   # a protein, or None

        @cellmesh.query                           # read-only, sync
        def balance(self, q: GetBalance) -> Balance: ...

        def snapshot(self) -> bytes: ...
        def restore(self, data: bytes) -> None: ...

Clients call the group by its name like any cell (``Synapse.grow("bank")``,
``self.call("bank", Deposit(...))``): a command is appended to the group's
Raft log, applied by every replica in log order, and answered once a
majority has it durably; a query runs on a replica once it has applied
everything committed before the query arrived (ReadIndex). Terms, leaders,
logs, forwarding and retries stay inside; see ``docs/replicated.md``.

This module holds the user's side only: the class, the :func:`query`
marker and :class:`CommandMeta`. It imports nothing of the Raft machinery,
so ``import cellmesh`` stays cheap; the replica runtime
(:mod:`cellmesh.actors._replica_runtime`) is loaded when a replica starts.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, overload

import attrs

from ..wire.proteins import is_protein
from ._replica_types import CommandMeta, NondeterminismDetected, QuerySpec
from .cell import _MARK, Cell, _Mark, _resolve

if TYPE_CHECKING:
    from ..transport._dispatch import Handler
    from ..transport.membrane import Membrane
    from ._replica_runtime import ReplicaRuntime
    from ._stats import ServiceTimes
    from .cell import CellContext

Q = TypeVar("Q", bound=Callable[..., Any])

_QUERY_MARK: Final = "__cellmesh_query__"


@attrs.define(eq=False)
class _QueryMark(_Mark):
    """What :func:`query` recorded on a method."""

    stale: bool = False

    @property
    def words(self) -> tuple[str, str]:
        """What messages call the method, and its explicit form."""
        return "query", "@cellmesh.query(Protein)"


@overload
def query(target: Q, /) -> Q: ...
@overload
def query(target: type, /, *, stale: bool = False) -> Callable[[Q], Q]: ...
@overload
def query(*, stale: bool = False) -> Callable[[Q], Q]: ...
def query(target: Any = None, /, *, stale: bool = False) -> Any:
    """Mark a *synchronous* method of a :class:`ReplicatedCell` as a read-only query.

    The protein comes from the annotation of the parameter after ``self``
    (``@query``) or is named (``@query(Protein)``). The method must not
    change the state: it runs on one replica only. By default a query is
    linearizable (it sees every command acknowledged before it was sent);
    ``@query(stale=True)`` answers from the replica's local state at once,
    which may lag behind the group (faster, no round trip; see
    ``docs/replicated.md``).
    """
    if target is None:
        return lambda func: _mark_query(func, None, stale)
    if isinstance(target, type):
        if not is_protein(target):
            raise TypeError(f"@query({target.__qualname__}): not a protein class")
        declared = target
        return lambda func: _mark_query(func, declared, stale)
    return _mark_query(target, None, stale)


def _mark_query(func: Any, declared: type | None, stale: bool) -> Any:
    if not callable(func) or inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"@query needs a plain (synchronous) method, got {func!r}: a query reads "
            "the state as it is and must not suspend"
        )
    setattr(func, _QUERY_MARK, _QueryMark(declared, stale=stale))
    return func


def _collect_queries(cls: type, localns: dict[str, Any]) -> dict[type, QuerySpec]:
    table: dict[type, QuerySpec] = {}
    by_name: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            mark = getattr(value, _QUERY_MARK, None)
            if not isinstance(mark, _QueryMark):
                continue
            proto = _resolve(klass, attr, value, mark, localns if klass is cls else {})
            old = by_name.pop(attr, None)
            if old is not None:
                del table[old]
            if proto in table:
                raise TypeError(
                    f"{cls.__qualname__}: protein {proto.__qualname__} has two queries, "
                    f"{table[proto].method!r} and {attr!r}"
                )
            table[proto] = QuerySpec(attr, mark.stale)
            by_name[attr] = proto
    return table


_MUST_OVERRIDE: Final = ("apply", "snapshot", "restore")


class ReplicatedCell(Cell):
    """Base class of a replicated cell: a deterministic state machine, run by a Raft group.

    Declare the write proteins in ``commands``; implement :meth:`apply`,
    :meth:`snapshot` and :meth:`restore`; mark read-only methods with
    :func:`query`. Rules for ``apply`` (checked by ``check_determinism``):
    same state + same command + same meta -> same result and same new state,
    on every replica, every time. No wall clock (use ``meta.timestamp``), no
    randomness (derive it from the command or ``meta``), no I/O, no calls to
    other cells, no iteration over sets of objects hashed by identity.

    Class attributes (all optional except ``commands``):

    * ``commands``: the protein classes accepted as writes.
    * ``session_ttl`` (seconds of log time, default 3600): a client session
      idle that long expires; ``max_sessions`` (65536),
      ``max_session_results`` (8192 per session) and ``max_result_bytes``
      (64 MiB of recorded answers in all, an eighth per session) bound the
      deduplication table.
    * ``snapshot_every`` (entries, default 10000): snapshot the state and
      compact the log this often; ``None`` never does. A large state's
      ``snapshot()`` holds the replica's loop (no heartbeats meanwhile);
      define ``snapshot_job()`` to build it in a worker thread instead
      (docs/replicated.md, "Snapshots off the event loop").
    * ``tick_interval`` (seconds, default 0.02): one Raft tick; the election
      timeout is 10-20 ticks.
    * ``check_determinism`` (default False): apply every command twice, on
      the state and on a copy restored from a snapshot, and stop the replica
      with :class:`NondeterminismDetected` if results or states differ
      (slow: for tests; ``CELL_REPLICA_CHECK=1`` turns it on too).

    ``@receptor`` methods are refused: every message to the group is either
    a command (replicated) or a query (read-only).
    """

    commands: ClassVar[tuple[type, ...]] = ()
    session_ttl: ClassVar[float] = 3600.0
    max_sessions: ClassVar[int] = 65536
    max_session_results: ClassVar[int] = 8192
    max_result_bytes: ClassVar[int] = 64 * 1024 * 1024
    snapshot_every: ClassVar[int | None] = 10_000
    tick_interval: ClassVar[float] = 0.02
    check_determinism: ClassVar[bool] = False
    _replicated: ClassVar[bool] = True
    _query_table: ClassVar[dict[type, QuerySpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if isinstance(getattr(value, _MARK, None), _Mark):
                    raise TypeError(
                        f"{cls.__qualname__}.{attr}: a ReplicatedCell has no @receptor "
                        "methods; list write proteins in `commands` (handled by apply) "
                        "and mark reads with @cellmesh.query"
                    )
        frame = sys._getframe(1)  # the scope holding the class statement
        localns = dict(frame.f_locals) if frame.f_code.co_name != "<module>" else {}
        super().__init_subclass__(**kwargs)
        cls._query_table = _collect_queries(cls, localns)
        commands = cls.__dict__.get("commands", cls.commands)
        if not isinstance(commands, tuple):
            raise TypeError(
                f"{cls.__qualname__}.commands must be a tuple of protein classes, "
                f"got {type(commands).__name__}"
            )
        for command in commands:
            if not (isinstance(command, type) and is_protein(command)):
                raise TypeError(f"{cls.__qualname__}.commands: {command!r} is not a protein class")
            if command in cls._query_table:
                raise TypeError(
                    f"{cls.__qualname__}: {command.__qualname__} is both a command and "
                    f"a query ({cls._query_table[command].method!r})"
                )
        if len(set(commands)) != len(commands):
            raise TypeError(f"{cls.__qualname__}.commands lists a protein twice")
        for hook in ("apply", "snapshot", "snapshot_job", "restore"):
            func = getattr(cls, hook, None)
            if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
                raise TypeError(
                    f"{cls.__qualname__}.{hook} must be a plain (synchronous) method: every "
                    "replica runs it in log order, to completion, without suspending"
                )
        if commands:
            missing = [
                name for name in _MUST_OVERRIDE
                if getattr(cls, name) is getattr(ReplicatedCell, name)
            ]
            if missing:
                raise TypeError(
                    f"{cls.__qualname__} declares commands but does not define "
                    f"{', '.join(missing)}"
                )

    # -- the state machine (override) ----------------------------------------

    def apply(self, command: Any, meta: CommandMeta) -> Any:
        """Apply one committed command; return its reply (a protein or None).

        Called on every replica, in log order, synchronously. Must be
        deterministic (see the class docstring). An exception is a result
        too: the caller gets a :class:`~cellmesh.RemoteCellError`, and every
        replica raised the same, so raise *before* changing anything.
        """
        raise TypeError(f"{type(self).__qualname__} must define apply(command, meta)")

    def snapshot(self) -> bytes:
        """The whole state as bytes; equal states must give equal bytes."""
        raise TypeError(f"{type(self).__qualname__} must define snapshot()")

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a :meth:`snapshot` result."""
        raise TypeError(f"{type(self).__qualname__} must define restore(data)")

    # -- acting from inside the group ------------------------------------------

    async def wait_leading(self) -> None:
        """Return once this replica leads its group (at once if it does now).

        For work one replica should do on the group's behalf (a timer that
        proposes a housekeeping command, say). Leadership may end at any
        moment after this returns: whatever the work proposes must be
        harmless when proposed twice, or by a replica that no longer leads.
        """
        await self._runtime().accept_gate()

    async def propose(self, command: Any) -> Any:
        """Append ``command`` (a protein listed in ``commands``) to the group's log; its reply.

        Never from ``apply`` or a query. The command goes through the log like
        a client's, outside any session: it is applied once per call, and it
        is not resent after an unknown outcome (the error says which: a
        :class:`~cellmesh.errors.CellmeshError`; the replica may have lost
        its leadership). An ``apply`` that raised raises here too.
        """
        if type(command) not in type(self).commands:
            raise TypeError(f"{type(self).__qualname__}.propose: {type(command).__qualname__} "
                            "is not one of its commands")
        return await self._runtime().client.plain_command(command)

    # -- runtime hooks (used by serve_cell) ----------------------------------

    @asynccontextmanager
    async def _open_runtime(self, ctx: CellContext) -> AsyncIterator[None]:
        from ._replica_runtime import open_replica_runtime

        async with open_replica_runtime(self, ctx) as runtime:
            self._replica = runtime
            try:
                yield
            finally:
                self._replica = None

    def _membrane_handler(self, ctx: CellContext, times: ServiceTimes, every: int) -> Handler:
        return self._runtime().client_handler(times, every)

    def _membrane_options(self) -> Mapping[str, Any]:
        return {**type(self).membrane_options, **self._runtime().client_membrane_options()}

    def _membrane_opened(self, membrane: Membrane) -> None:
        self._runtime().client_membrane = membrane

    def _runtime(self) -> ReplicaRuntime:
        runtime = self._replica
        if runtime is None:
            raise RuntimeError("the replica runtime is not open")
        return runtime

    _replica: ReplicaRuntime | None = None


__all__ = ["CommandMeta", "NondeterminismDetected", "QuerySpec", "ReplicatedCell", "query"]
