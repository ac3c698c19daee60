"""The ledger's vocabulary: flags, result codes, field widths and batch limits.

Every value here is part of the ledger's contract with its clients (they
travel as plain ints in proteins) and is documented in docs/ledger.md. Codes
are never renumbered; new codes get new numbers. Result codes are numbered
in the order of the checks that produce them: when several failures apply to
one event, the event gets the first in that order (docs/ledger.md has the
table, in the same order).

Pure: no I/O.
"""

from __future__ import annotations

import enum
from typing import Final

#: Widths of the fields (unsigned). Values outside them -- ``flags`` included,
#: which is 16 bits wide -- are refused with ``field_out_of_range`` and never read
#: as flags; an unknown bit within ``flags``' 16 is ``reserved_flag``.
U128_MAX: Final = (1 << 128) - 1
U64_MAX: Final = (1 << 64) - 1
U32_MAX: Final = (1 << 32) - 1
U16_MAX: Final = (1 << 16) - 1
#: A post-pending transfer with this amount posts the whole pending amount.
AMOUNT_MAX: Final = U128_MAX
#: Timestamps (nanoseconds) stay below 2**63, like every expiry computed from them.
TIMESTAMP_LIMIT: Final = 1 << 63
NS_PER_SECOND: Final = 1_000_000_000
#: Most events in one create command, ids in one lookup, results of one query.
BATCH_MAX: Final = 8190


class AccountFlags(enum.IntFlag):
    """Bits of ``Account.flags``."""

    NONE = 0
    #: This event's outcome is linked to the next one's (a chain: all or nothing).
    LINKED = 1 << 0
    #: Refuse transfers that would make debits_pending + debits_posted > credits_posted.
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    #: Refuse transfers that would make credits_pending + credits_posted > debits_posted.
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    #: The account takes no new transfers (voiding its pending transfers still works).
    CLOSED = 1 << 3


#: Every account flag bit this version knows; any other bit is ``reserved_flag``.
ACCOUNT_FLAGS_KNOWN: Final = 0b1111


class TransferFlags(enum.IntFlag):
    """Bits of ``Transfer.flags``."""

    NONE = 0
    LINKED = 1 << 0
    #: Reserve the amount in debits_pending/credits_pending (phase one).
    PENDING = 1 << 1
    #: Post (some or all of) the pending transfer ``pending_id`` (phase two).
    POST_PENDING_TRANSFER = 1 << 2
    #: Void the pending transfer ``pending_id``, releasing its amount.
    VOID_PENDING_TRANSFER = 1 << 3
    #: Move at most ``amount``: as much as keeps debits <= credits on the debit account.
    BALANCING_DEBIT = 1 << 4
    #: Move at most ``amount``: as much as keeps credits <= debits on the credit account.
    BALANCING_CREDIT = 1 << 5
    #: Close the debit account when this (pending) transfer is created. Voiding it, or
    #: its expiry, reopens the account; it cannot be posted (as in TigerBeetle).
    CLOSING_DEBIT = 1 << 6
    #: Close the credit account when this (pending) transfer is created (as CLOSING_DEBIT).
    CLOSING_CREDIT = 1 << 7


TRANSFER_FLAGS_KNOWN: Final = 0xFF


class FilterFlags(enum.IntFlag):
    """Bits of ``AccountFilter.flags`` (get_account_transfers)."""

    NONE = 0
    #: Include transfers that debit the account.
    DEBITS = 1 << 0
    #: Include transfers that credit the account.
    CREDITS = 1 << 1
    #: Newest first.
    REVERSED = 1 << 2


FILTER_FLAGS_KNOWN: Final = 0b111


class PendingStatus(enum.IntEnum):
    """Where a pending transfer stands (``pending_status``)."""

    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


class AccountResult(enum.IntEnum):
    """The result of one ``create_accounts`` event (see docs/ledger.md for each)."""

    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    FIELD_OUT_OF_RANGE = 3
    TIMESTAMP_MUST_BE_ZERO = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 8
    DEBITS_PENDING_MUST_BE_ZERO = 9
    DEBITS_POSTED_MUST_BE_ZERO = 10
    CREDITS_PENDING_MUST_BE_ZERO = 11
    CREDITS_POSTED_MUST_BE_ZERO = 12
    LEDGER_MUST_NOT_BE_ZERO = 13
    CODE_MUST_NOT_BE_ZERO = 14
    EXISTS_WITH_DIFFERENT_FLAGS = 15
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 16
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 17
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 18
    EXISTS_WITH_DIFFERENT_LEDGER = 19
    EXISTS_WITH_DIFFERENT_CODE = 20
    EXISTS = 21


class TransferResult(enum.IntEnum):
    """The result of one ``create_transfers`` event (see docs/ledger.md for each)."""

    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    FIELD_OUT_OF_RANGE = 3
    TIMESTAMP_MUST_BE_ZERO = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    EXISTS_WITH_DIFFERENT_FLAGS = 8
    EXISTS_WITH_DIFFERENT_PENDING_ID = 9
    EXISTS_WITH_DIFFERENT_TIMEOUT = 10
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 11
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 12
    EXISTS_WITH_DIFFERENT_AMOUNT = 13
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 14
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 15
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 16
    EXISTS_WITH_DIFFERENT_LEDGER = 17
    EXISTS_WITH_DIFFERENT_CODE = 18
    EXISTS = 19
    ID_ALREADY_FAILED = 20
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 21
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 22
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 23
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 24
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 25
    ACCOUNTS_MUST_BE_DIFFERENT = 26
    PENDING_ID_MUST_BE_ZERO = 27
    PENDING_ID_MUST_NOT_BE_ZERO = 28
    PENDING_ID_MUST_NOT_BE_INT_MAX = 29
    PENDING_ID_MUST_BE_DIFFERENT = 30
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 31
    CLOSING_TRANSFER_MUST_BE_PENDING = 32
    LEDGER_MUST_NOT_BE_ZERO = 33
    CODE_MUST_NOT_BE_ZERO = 34
    DEBIT_ACCOUNT_NOT_FOUND = 35
    CREDIT_ACCOUNT_NOT_FOUND = 36
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 37
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 38
    PENDING_TRANSFER_NOT_FOUND = 39
    PENDING_TRANSFER_NOT_PENDING = 40
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 41
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 42
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 43
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = 44
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 45
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 46
    PENDING_TRANSFER_ALREADY_POSTED = 47
    PENDING_TRANSFER_ALREADY_VOIDED = 48
    PENDING_TRANSFER_EXPIRED = 49
    DEBIT_ACCOUNT_ALREADY_CLOSED = 50
    CREDIT_ACCOUNT_ALREADY_CLOSED = 51
    OVERFLOWS_DEBITS_PENDING = 52
    OVERFLOWS_CREDITS_PENDING = 53
    OVERFLOWS_DEBITS_POSTED = 54
    OVERFLOWS_CREDITS_POSTED = 55
    OVERFLOWS_DEBITS = 56
    OVERFLOWS_CREDITS = 57
    OVERFLOWS_TIMEOUT = 58
    EXCEEDS_CREDITS = 59
    EXCEEDS_DEBITS = 60


#: Failures that depend on the ledger's state at the time: a transfer id that
#: met one of them is remembered, and the same id later gets ``id_already_failed``
#: (so a retry can never turn an acknowledged failure into a success).
#:
#: The six balance overflows are among them: they read the balances, and a pending
#: balance falls when a reservation is voided or expires, after which the same event
#: could succeed (the posted overflows, whose balances never fall, follow the same
#: rule: every failure that reads a balance is remembered). ``overflows_timeout`` is
#: not: it follows from the event's timeout and the clock, which only moves forward,
#: so the same event can only fail again and the id stays free for a corrected one.
TRANSIENT_FAILURES: Final = frozenset({
    TransferResult.DEBIT_ACCOUNT_NOT_FOUND,
    TransferResult.CREDIT_ACCOUNT_NOT_FOUND,
    TransferResult.PENDING_TRANSFER_NOT_FOUND,
    TransferResult.DEBIT_ACCOUNT_ALREADY_CLOSED,
    TransferResult.CREDIT_ACCOUNT_ALREADY_CLOSED,
    TransferResult.OVERFLOWS_DEBITS_PENDING,
    TransferResult.OVERFLOWS_CREDITS_PENDING,
    TransferResult.OVERFLOWS_DEBITS_POSTED,
    TransferResult.OVERFLOWS_CREDITS_POSTED,
    TransferResult.OVERFLOWS_DEBITS,
    TransferResult.OVERFLOWS_CREDITS,
    TransferResult.EXCEEDS_CREDITS,
    TransferResult.EXCEEDS_DEBITS,
})
