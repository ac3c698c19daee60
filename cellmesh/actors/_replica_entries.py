"""What a replicated cell writes into its Raft log: batches of operations, and their results.

Theory of operation
-------------------
One Raft entry holds one *batch*: the leader's timestamp and any number of
operations from any number of clients (group commit: concurrent commands
share an entry, a write and an fsync). Its data is the CBOR array::

    [1, timestamp_ns, [op, op, ...]]

with each ``op`` one of::

    [0, session, seq, floor, command]   a command (``command`` = the CBOR bytes of
                                        the protein body; ``session`` 0 = no session)
    [1]                                 open a session
    [2, session]                        close a session
    [3, replica, path]                  record replica ``replica``'s peer socket path

Applying a batch yields one result per op, and the entry's result (handed
to the proposer) is the CBOR array of them::

    [0, body | null]        the command's reply (a protein body, or null)
    [1, type_name, message] the command's ``apply`` raised
    [2, verdict]            not applied: "expired" (unknown session) or "stale"
    [3, session]            the session opened
    [4]                     done (close session, address)

Decoders raise only :class:`ValueError` on anything malformed. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Final

import attrs
import cbor2

FORMAT: Final = 1
#: Session ids, sequence numbers and floors are below this (a CBOR uint64, signed-safe).
MAX_COUNTER: Final = 1 << 63


class OpKind(enum.IntEnum):
    """The first element of an op."""

    COMMAND = 0
    OPEN_SESSION = 1
    CLOSE_SESSION = 2
    ADDRESS = 3


class ResultKind(enum.IntEnum):
    """The first element of an op's result."""

    OK = 0
    RAISED = 1
    NOT_APPLIED = 2
    SESSION = 3
    DONE = 4


def command_op(session: int, seq: int, floor: int, command: bytes) -> list[Any]:
    """A command op (``session`` 0: a command outside any session)."""
    return [OpKind.COMMAND, session, seq, floor, command]


def open_session_op(proposed: int) -> list[Any]:
    """An op opening a new session whose id is ``proposed`` (in ``[1, 2**63)``): a
    random number the proposing replica drew, so that no client can guess another
    client's session (see :meth:`~cellmesh.actors._replica_sessions.SessionTable.open`).
    Logs written before ids were drawn hold ``[1]``: the table's counter then gives it.
    """
    return [OpKind.OPEN_SESSION, proposed]


def close_session_op(session: int) -> list[Any]:
    """An op closing ``session``."""
    return [OpKind.CLOSE_SESSION, session]


def address_op(replica: int, path: str) -> list[Any]:
    """An op recording where replica ``replica``'s peer socket is."""
    return [OpKind.ADDRESS, replica, path]


@attrs.frozen(kw_only=True)
class Batch:
    """A decoded entry: the leader's timestamp and the ops, in order."""

    timestamp: int
    ops: tuple[list[Any], ...]


def encode_batch(timestamp: int, ops: Sequence[list[Any]]) -> bytes:
    """The entry data for ``ops`` proposed at ``timestamp`` (ns)."""
    return cbor2.dumps([FORMAT, timestamp, list(ops)])


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {type(value).__name__}")
    return value


def check_op(op: Any) -> list[Any]:
    """Validate one op's shape; return it, or raise ``ValueError``."""
    if type(op) is not list or not op:
        raise ValueError("an op must be a non-empty array")
    kind = _int(op[0], "op kind")
    if kind == OpKind.COMMAND:
        if len(op) != 5 or type(op[4]) is not bytes:
            raise ValueError("a command op is [0, session, seq, floor, bytes]")
        for value, what in zip(op[1:4], ("session", "seq", "floor"), strict=True):
            if not 0 <= _int(value, what) < MAX_COUNTER:
                raise ValueError(f"{what} must be in [0, 2**63)")
    elif kind == OpKind.OPEN_SESSION:
        if len(op) == 2:
            if not 0 < _int(op[1], "proposed session id") < MAX_COUNTER:
                raise ValueError("a proposed session id must be in [1, 2**63)")
        elif len(op) != 1:
            raise ValueError("an open-session op is [1, proposed id] (or [1] in older logs)")
    elif kind == OpKind.CLOSE_SESSION:
        if len(op) != 2:
            raise ValueError("a close-session op is [2, session]")
        if not 0 <= _int(op[1], "session") < MAX_COUNTER:
            raise ValueError("session must be in [0, 2**63)")
    elif kind == OpKind.ADDRESS:
        if len(op) != 3 or type(op[2]) is not str:
            raise ValueError("an address op is [3, replica, path]")
        if not 0 <= _int(op[1], "replica") < MAX_COUNTER:
            raise ValueError("replica must be in [0, 2**63)")
    else:
        raise ValueError(f"unknown op kind {kind}")
    return op


def decode_op(data: bytes) -> list[Any]:
    """One op from its CBOR bytes (a forwarded op); ``ValueError`` on anything malformed."""
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ValueError(f"op is not valid CBOR: {exc}") from None
    return check_op(value)


def decode_batch(data: bytes) -> Batch:
    """Parse :func:`encode_batch` output; ``ValueError`` on anything else."""
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ValueError(f"entry is not valid CBOR: {exc}") from None
    if type(value) is not list or len(value) != 3 or value[0] != FORMAT:
        raise ValueError("entry is not a [1, timestamp, ops] batch")
    timestamp = _int(value[1], "timestamp")
    ops = value[2]
    if type(ops) is not list:
        raise ValueError("batch ops must be an array")
    return Batch(timestamp=timestamp, ops=tuple(check_op(op) for op in ops))


def encode_results(results: Sequence[list[Any]]) -> bytes:
    """The entry result handed to the proposer."""
    return cbor2.dumps(list(results))


def decode_results(data: bytes, count: int) -> list[list[Any]]:
    """Parse :func:`encode_results` output holding ``count`` results; ``ValueError`` otherwise."""
    try:
        value = cbor2.loads(data)
    except Exception as exc:
        raise ValueError(f"results are not valid CBOR: {exc}") from None
    if type(value) is not list or len(value) != count:
        raise ValueError(f"expected {count} results")
    for result in value:
        if type(result) is not list or not result or type(result[0]) is not int:
            raise ValueError("a result must be a non-empty array starting with its kind")
    return value


__all__ = [
    "FORMAT",
    "MAX_COUNTER",
    "Batch",
    "OpKind",
    "ResultKind",
    "address_op",
    "check_op",
    "close_session_op",
    "command_op",
    "decode_batch",
    "decode_op",
    "decode_results",
    "encode_batch",
    "encode_results",
    "open_session_op",
]
