"""The hand-over codec of a hot swap (cellmesh.actors._handover): round trips and garbage."""

from __future__ import annotations

import contextlib
import os

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cellmesh
from cellmesh.actors._handover import MAX_BLOBS, decode_state, encode_state
from cellmesh.errors import FieldError
from cellmesh.wire.codec import VESICLE_TAG
from cellmesh.wire.vesicle import map_vesicle


@cellmesh.protein("t.handover.State")
class State:
    total: int
    blob: bytes
    names: list[str]


def carried(state: object) -> object:
    """Encode ``state`` and decode it as the new process would (blobs mapped)."""
    encoded = encode_state(state)
    try:
        views = [map_vesicle(os.dup(b.fileno()), len(b)) for b in encoded.blobs]
        return decode_state(encoded.name, encoded.fingerprint, encoded.data, views)
    finally:
        encoded.close()


def test_handover_small_state_round_trips_in_cbor() -> None:
    state = State(total=7, blob=b"abc", names=["x"])
    encoded = encode_state(state)
    assert encoded.blobs == () and encoded.size == len(encoded.data or b"")
    assert carried(state) == state


def test_handover_large_fields_travel_as_vesicles_not_in_the_cbor() -> None:
    blob = os.urandom(1 << 20)
    encoded = encode_state(State(total=1, blob=blob, names=[]))
    assert encoded.data is not None and len(encoded.data) < 200
    assert len(encoded.blobs) == 1 and encoded.size > len(blob)
    encoded.close()
    got = carried(State(total=1, blob=blob, names=[]))
    assert isinstance(got, State) and bytes(got.blob) == blob


def test_handover_no_state_is_none() -> None:
    assert encode_state(None).data is None
    assert decode_state("", "", None) is None


def test_handover_unknown_or_changed_protein_arrives_raw() -> None:
    # A protein this code does not define (the old code's), one large field:
    blob = os.urandom(100_000)
    data = cbor2.dumps(["t.handover.Gone", 3, cbor2.CBORTag(VESICLE_TAG, [0, len(blob)])])
    raw = decode_state("t.handover.Gone", "ab" * 8, data, [blob])
    assert isinstance(raw, cellmesh.RawState)
    assert (raw.wire_name, raw.fingerprint, raw.fields[0]) == ("t.handover.Gone", "ab" * 8, 3)
    assert bytes(raw.fields[1]) == blob
    # A protein this code defines with another schema (fingerprint):
    encoded = encode_state(State(total=4, blob=b"", names=["a"]))
    other = decode_state(encoded.name, "0" * 16, encoded.data)
    assert isinstance(other, cellmesh.RawState) and other.fields == [4, b"", ["a"]]


def test_handover_refs_must_match_the_blobs() -> None:
    data = cbor2.dumps(["t.handover.State", 1, cbor2.CBORTag(VESICLE_TAG, [0, 99]), []])
    with pytest.raises(ValueError, match="not valid CBOR"):
        decode_state("t.handover.State", cellmesh.fingerprint(State), data, [b"short"])


def test_handover_refuses_what_is_not_a_protein() -> None:
    with pytest.raises(TypeError, match="must return a protein or None"):
        encode_state({"total": 1})


def test_handover_too_many_large_fields_are_refused() -> None:
    @cellmesh.protein("t.handover.Many")
    class Many:
        parts: list[bytes]

    with pytest.raises(FieldError, match=f"more than {MAX_BLOBS}"):
        encode_state(Many(parts=[bytes(70_000)] * (MAX_BLOBS + 1)))


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    name=st.sampled_from(["t.handover.State", "t.handover.Other"]),
    blobs=st.lists(st.binary(max_size=20), max_size=3),
)
def test_handover_garbage_state_raises_only_value_error(
    data: bytes, name: str, blobs: list[bytes]
) -> None:
    """Garbage in, only ValueError out (or a RawState for a protein this code lacks)."""
    print_ = cellmesh.fingerprint(State)
    with contextlib.suppress(ValueError):
        decode_state(name, print_, data, blobs)
