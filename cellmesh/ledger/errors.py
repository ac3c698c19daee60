"""Errors of the ledger: a bad query, a snapshot that cannot be restored.

Writes never raise: every event gets a result code and a whole refused
command gets a :class:`~cellmesh.ledger.proteins.Rejected` reply, because a
replicated state machine must answer the same way on every replica. Reads
and restores are local, so they raise these (fields carry the facts).
"""

from __future__ import annotations

from ..errors import CellmeshError


class LedgerError(CellmeshError):
    """Root of the ledger's errors."""


class InvalidQuery(LedgerError, ValueError):
    """A read asked for something malformed; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SnapshotError(LedgerError):
    """Bytes given to ``restore`` are not a ledger snapshot this version can load.

    The state is left exactly as it was. ``problem`` says what was wrong.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"ledger snapshot: {problem}")
        self.problem = problem
