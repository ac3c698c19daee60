"""Values shared by the replicated cell and its runtime (a leaf: no import cycles).

:class:`CommandMeta` is what ``apply`` receives beside the command;
:class:`QuerySpec` describes one query method; :class:`StateMachineCell` is
the face of a :class:`~cellmesh.ReplicatedCell` the replica runtime uses
(typed as a Protocol so the runtime never imports the class module, which
imports the runtime lazily).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import attrs

from ..errors import CellmeshError


@attrs.frozen(kw_only=True)
class CommandMeta:
    """Facts about the command being applied, equal on every replica.

    ``index``: the Raft index of the log entry holding the command (several
    commands may share one entry: group commit). ``timestamp``: nanoseconds
    since the epoch, assigned by the leader that proposed the entry and made
    strictly increasing across ``apply`` calls at apply time (so it never
    goes backwards, even across leader changes whose clocks disagree).
    """

    index: int
    timestamp: int


class NondeterminismDetected(CellmeshError):
    """The determinism check found ``apply`` giving different results on equal states.

    Raised (and the replica stopped) only when the check is on
    (``ReplicatedCell.check_determinism`` or ``CELL_REPLICA_CHECK=1``).
    ``command`` is the command's protein type name; ``what`` says which
    differed: ``"result"`` or ``"state"``.
    """

    def __init__(self, command: str, what: str) -> None:
        super().__init__(
            f"apply({command}) is not deterministic: applied twice to equal states, "
            f"it gave different {what}s (a wall clock, randomness, I/O or iteration "
            "over an unordered set in apply?)"
        )
        self.command = command
        self.what = what


@attrs.frozen
class QuerySpec:
    """One query of a class: its method name and whether it may be stale."""

    method: str
    stale: bool


class StateMachineCell(Protocol):
    """What the replica runtime uses of a ReplicatedCell (see its docstring)."""

    commands: ClassVar[tuple[type, ...]]
    session_ttl: ClassVar[float]
    max_sessions: ClassVar[int]
    max_session_results: ClassVar[int]
    max_result_bytes: ClassVar[int]
    snapshot_every: ClassVar[int | None]
    tick_interval: ClassVar[float]
    check_determinism: ClassVar[bool]
    _query_table: ClassVar[dict[type, QuerySpec]]

    def apply(self, command: Any, meta: CommandMeta) -> Any:
        """Apply one committed command."""
        ...

    def snapshot(self) -> bytes:
        """The whole state."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state."""

    async def _deliver_cell_down(self, down: Any) -> None:
        """Deliver a CellDown to the cell's hook."""


__all__ = ["CommandMeta", "NondeterminismDetected", "QuerySpec", "StateMachineCell"]
