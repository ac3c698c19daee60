"""The Raft message codec: one :class:`Message` as one CBOR array, hostile input refused.

Theory of operation
-------------------
:func:`encode_message` lays a message out as a 14-element CBOR array (its
fields in declaration order; entries as ``[index, term, kind, data]``; a
snapshot as ``[index, term, voters, learners, data]`` or null).
:func:`decode_message` is the inverse and treats its input as hostile: it
checks every type and range and raises only
:class:`~cellmesh.errors.MalformedFrame`, whatever the bytes
(``tests/consensus/test_message_codec.py`` fuzzes it). The membrane
transport carries these bodies in ``cellmesh.raft.Packet`` proteins.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

import cbor2

from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.types import Entry, EntryKind, Snapshot, SnapshotMeta
from cellmesh.errors import MalformedFrame

_FIELDS: Final = 14
_ENTRY_FIELDS: Final = 4
_SNAPSHOT_FIELDS: Final = 5


def encode_message(m: Message) -> bytes:
    """The CBOR body carrying ``m`` (the inverse of :func:`decode_message`)."""
    snap = None
    if m.snapshot is not None:
        meta = m.snapshot.meta
        snap = [meta.index, meta.term, sorted(meta.voters), sorted(meta.learners), m.snapshot.data]
    return cbor2.dumps(
        [
            int(m.type),
            m.src,
            m.dst,
            m.term,
            m.log_term,
            m.index,
            [[e.index, e.term, int(e.kind), e.data] for e in m.entries],
            m.commit,
            m.reject,
            m.reject_hint,
            snap,
            m.read_seq,
            m.context,
            m.transfer,
        ]
    )


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedFrame(f"{what} must be a non-negative integer, got {value!r:.40}")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise MalformedFrame(f"{what} must be a boolean")
    return value


def _bytes(value: object, what: str) -> bytes:
    if type(value) is not bytes:
        raise MalformedFrame(f"{what} must be a byte string")
    return value


def _list(value: object, what: str, length: int | None = None) -> list[object]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise MalformedFrame(f"{what} must be an array" + (f" of {length}" if length else ""))
    return value


def decode_message(body: bytes) -> Message:
    """Decode one message body; raises only :class:`MalformedFrame` on bad input."""
    try:
        raw = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise MalformedFrame(f"frame is not valid CBOR: {exc}") from None
    fields = _list(raw, "message", _FIELDS)
    try:
        kind = MessageType(_int(fields[0], "type"))
    except ValueError:
        raise MalformedFrame(f"unknown message type {fields[0]!r}") from None
    entries = []
    for item in _list(fields[6], "entries"):
        index, term, entry_kind, data = _list(item, "entry", _ENTRY_FIELDS)
        try:
            ekind = EntryKind(_int(entry_kind, "entry kind"))
        except ValueError:
            raise MalformedFrame(f"unknown entry kind {entry_kind!r}") from None
        entries.append(
            Entry(
                index=_int(index, "entry index"),
                term=_int(term, "entry term"),
                kind=ekind,
                data=_bytes(data, "entry data"),
            )
        )
    snapshot = None
    if fields[10] is not None:
        index, term, voters, learners, data = _list(fields[10], "snapshot", _SNAPSHOT_FIELDS)
        snapshot = Snapshot(
            meta=SnapshotMeta(
                index=_int(index, "snapshot index"),
                term=_int(term, "snapshot term"),
                voters=frozenset(_int(v, "voter") for v in _list(voters, "voters")),
                learners=frozenset(_int(v, "learner") for v in _list(learners, "learners")),
            ),
            data=_bytes(data, "snapshot data"),
        )
    return Message(
        type=kind,
        src=_int(fields[1], "src"),
        dst=_int(fields[2], "dst"),
        term=_int(fields[3], "term"),
        log_term=_int(fields[4], "log_term"),
        index=_int(fields[5], "index"),
        entries=tuple(entries),
        commit=_int(fields[7], "commit"),
        reject=_bool(fields[8], "reject"),
        reject_hint=_int(fields[9], "reject_hint"),
        snapshot=snapshot,
        read_seq=_int(fields[11], "read_seq"),
        context=_bytes(fields[12], "context"),
        transfer=_bool(fields[13], "transfer"),
    )


__all__ = ["decode_message", "encode_message"]
