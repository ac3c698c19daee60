"""The ledger: a double-entry, exactly-once state machine, its replicated cell and client.

Layer 7 (docs/architecture.md, docs/ledger.md). It may import the leaves,
:mod:`cellmesh.wire` (proteins) and :mod:`cellmesh.actors`; never the facade,
testing, bench or cli.

:class:`LedgerState` is the pure state machine: ``apply(command, meta)`` for
writes (:class:`CreateAccounts`, :class:`CreateTransfers`, :class:`Pulse`),
``query(request)`` for reads, ``snapshot()``/``restore()``. Its modules
import no I/O (``tests/ledger/test_ledger_purity.py``).

:class:`Ledger` (``entry = "cellmesh.ledger:Ledger"`` with ``replicas = 3``)
runs it as a replicated cell; :class:`LedgerClient` calls one. Both are
loaded on first use (``__getattr__``), so importing the state machine never
loads the actor runtime.
"""

from typing import Any, Final

from .codes import (
    AMOUNT_MAX,
    BATCH_MAX,
    AccountFlags,
    AccountResult,
    FilterFlags,
    PendingStatus,
    TransferFlags,
    TransferResult,
)
from .errors import InvalidQuery, LedgerError, SnapshotError
from .proteins import (
    Account,
    AccountsReply,
    BooksReport,
    CheckBooks,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    GetAccountTransfers,
    GetTotals,
    LedgerTotals,
    LimitViolation,
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    PendingReply,
    Pulse,
    PulseReply,
    Rejected,
    TotalsReply,
    Transfer,
    TransfersReply,
)
from .state import ApplyMeta, EntryMeta, LedgerState

#: Names served lazily: the driver modules (not pure) that hold them.
_DRIVERS: Final = {
    "AccountResults": "client",
    "Ledger": "cell",
    "LedgerClient": "client",
    "LedgerRejected": "client",
    "NotALedgerReply": "client",
    "Results": "client",
    "TransferResults": "client",
}


def __getattr__(name: str) -> Any:
    module = _DRIVERS.get(name)
    if module == "cell":
        from . import cell

        return getattr(cell, name)
    if module == "client":
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_DRIVERS})

__all__ = [
    "AMOUNT_MAX",
    "BATCH_MAX",
    "Account",
    "AccountResults",
    "AccountFlags",
    "AccountResult",
    "AccountsReply",
    "ApplyMeta",
    "BooksReport",
    "CheckBooks",
    "CreateAccounts",
    "CreateAccountsReply",
    "CreateTransfers",
    "CreateTransfersReply",
    "EntryMeta",
    "FilterFlags",
    "GetAccountTransfers",
    "GetTotals",
    "InvalidQuery",
    "Ledger",
    "LedgerClient",
    "LedgerError",
    "LedgerRejected",
    "LedgerState",
    "LedgerTotals",
    "LimitViolation",
    "LookupAccounts",
    "LookupPending",
    "LookupTransfers",
    "NotALedgerReply",
    "PendingReply",
    "PendingStatus",
    "Pulse",
    "PulseReply",
    "Rejected",
    "Results",
    "SnapshotError",
    "TotalsReply",
    "Transfer",
    "TransferFlags",
    "TransferResult",
    "TransferResults",
    "TransfersReply",
]
