"""The ledger: a double-entry, exactly-once state machine (and, later, its cell).

Layer 7 (docs/architecture.md, docs/ledger.md). It may import the leaves,
:mod:`cellmesh.wire` (proteins) and :mod:`cellmesh.actors`; never the facade,
testing, bench or cli.

:class:`LedgerState` is the pure state machine: ``apply(command, meta)`` for
writes (:class:`CreateAccounts`, :class:`CreateTransfers`, :class:`Pulse`),
``query(request)`` for reads, ``snapshot()``/``restore()``. Its modules
import no I/O (``tests/ledger/test_ledger_purity.py``).
"""

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
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    GetAccountTransfers,
    GetTotals,
    LedgerTotals,
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

__all__ = [
    "AMOUNT_MAX",
    "BATCH_MAX",
    "Account",
    "AccountFlags",
    "AccountResult",
    "AccountsReply",
    "ApplyMeta",
    "CreateAccounts",
    "CreateAccountsReply",
    "CreateTransfers",
    "CreateTransfersReply",
    "EntryMeta",
    "FilterFlags",
    "GetAccountTransfers",
    "GetTotals",
    "InvalidQuery",
    "LedgerError",
    "LedgerState",
    "LedgerTotals",
    "LookupAccounts",
    "LookupPending",
    "LookupTransfers",
    "PendingReply",
    "PendingStatus",
    "Pulse",
    "PulseReply",
    "Rejected",
    "SnapshotError",
    "TotalsReply",
    "Transfer",
    "TransferFlags",
    "TransferResult",
    "TransfersReply",
]
