"""The Raft message codec (ported from the retired Unix transport's tests): round trips and
hostile bytes ("garbage in, only MalformedFrame out")."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.consensus.message_codec import decode_message, encode_message
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.types import Entry, EntryKind, Snapshot, SnapshotMeta
from cellmesh.errors import MalformedFrame

ids = st.integers(0, 2**63)
entries = st.builds(
    Entry,
    index=ids,
    term=ids,
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=50),
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=ids,
        term=ids,
        voters=st.frozensets(ids, max_size=4),
        learners=st.frozensets(ids, max_size=4),
    ),
    data=st.binary(max_size=50),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    src=ids,
    dst=ids,
    term=ids,
    log_term=ids,
    index=ids,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=ids,
    reject=st.booleans(),
    reject_hint=ids,
    snapshot=st.none() | snapshots,
    read_seq=ids,
    context=st.binary(max_size=20),
    transfer=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(message=messages)
def test_message_codec_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_message_codec_garbage_raises_only_malformed_frame(garbage: bytes) -> None:
    """Garbage in, only MalformedFrame out."""
    with contextlib.suppress(MalformedFrame):
        decode_message(garbage)


@settings(max_examples=200, deadline=None)
@given(message=messages, position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_message_codec_corrupted_bodies_raise_only_malformed_frame(
    message: Message, position: int, byte: int
) -> None:
    body = bytearray(encode_message(message))
    body[position % len(body)] = byte
    with contextlib.suppress(MalformedFrame):
        decode_message(bytes(body))
