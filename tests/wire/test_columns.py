"""Columnar frames (kind 9) and RFC 8746 typed arrays: round trips and refusals."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.errors import FieldError, MalformedFrame
from cellmesh.wire.codec import (
    MAX_ID,
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    TAG_UINT64_LE,
    FrameDecoder,
    Kind,
    columns_item,
    encode_items,
    typed_array,
)
from cellmesh.wire.proteins import DecodeContext, EncodeContext, ProteinRegistry, protein

REG = ProteinRegistry()


@protein("t.col.Row", registry=REG)
class Row:
    i: int
    x: float
    s: str
    flag: bool
    maybe: int | None
    tags: list[str]


def decode_one(payload: bytes) -> list[list[Any]]:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    frame = decoder.next_frame()
    assert not isinstance(frame, type(None))
    return frame.items  # type: ignore[union-attr]


def frames_of(items: list[list[Any]]) -> list[list[Any]]:
    decoder = FrameDecoder()
    for data in encode_items(items, 1 << 20):
        decoder.feed(data)
    out = []
    while True:
        frame = decoder.next_frame()
        if not hasattr(frame, "items"):
            return out
        out += frame.items  # type: ignore[union-attr]


rows = st.builds(
    Row,
    i=st.integers(min_value=-(2**80), max_value=2**80),
    x=st.floats(allow_nan=False) | st.integers(min_value=-(2**53), max_value=2**53),
    s=st.text(max_size=8),
    flag=st.booleans(),
    maybe=st.none() | st.integers(),
    tags=st.lists(st.text(max_size=3), max_size=3),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(rows, min_size=1, max_size=40))
def test_columns_round_trip(objs: list[Row]) -> None:
    from cellmesh.wire.proteins import schema_of

    schema = schema_of(Row)
    values = schema.column_values(objs, EncodeContext())
    ids = list(range(1, len(objs) + 1))
    item = columns_item(Kind.CALL, "t.col.Row", ids, schema.pack_columns(values), len(objs))
    (decoded,) = frames_of([item])
    assert decoded[:4] == [Kind.COLUMNS, Kind.CALL, len(objs), "t.col.Row"]
    assert decoded[4] == ids
    out = REG.decode_columns(decoded[3], decoded[5], decoded[2], DecodeContext())
    expected = [Row(o.i, float(o.x), o.s, o.flag, o.maybe, o.tags) for o in objs]
    assert out == expected
    assert all(type(r.x) is float and type(r.i) is int for r in out)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=50))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_typed_sint64_round_trips(values: list[int]) -> None:
    data = cbor2.dumps([Kind.COLUMNS, Kind.SIGNAL, len(values), "p", None,
                        [typed_array(values, TAG_SINT64_LE)]])
    (decoded,) = decode_one(data)
    assert decoded[5] == [values]


def test_typed_float64_and_uint64() -> None:
    floats = [0.5, -1e300, float("inf")]
    data = cbor2.dumps([Kind.COLUMNS, Kind.REPLY, 3, "p", typed_array([1, 2, MAX_ID],
                        TAG_UINT64_LE), [typed_array(floats, TAG_FLOAT64_LE)]])
    (decoded,) = decode_one(data)
    assert decoded[4] == [1, 2, MAX_ID]
    assert decoded[5] == [floats]


def shaped(item: list[Any]) -> bytes:
    return cbor2.dumps(item)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ([Kind.COLUMNS, Kind.CANCEL, 1, "p", [1], [[1]]], "calls, replies or signals"),
        ([Kind.COLUMNS, Kind.CALL, 0, "p", [], []], "count must be positive"),
        ([Kind.COLUMNS, Kind.CALL, 2, "p", [1], [[1, 2]]], "needs 2 call ids"),
        ([Kind.COLUMNS, Kind.CALL, 1, "p", [0], [[1]]], "call ids"),
        ([Kind.COLUMNS, Kind.CALL, 2, "p", [1, 2], [[1]]], "arrays of 2 values"),
        ([Kind.COLUMNS, Kind.SIGNAL, 1, "p", [1], [[1]]], "null ids"),
        ([Kind.COLUMNS, Kind.CALL, 1, 7, [1], [[1]]], "wire name"),
        ([Kind.COLUMNS, Kind.CALL, 1, "p", [1]], "6 elements"),
    ],
)
def test_malformed_columns_are_refused(item: list[Any], problem: str) -> None:
    with pytest.raises(MalformedFrame, match=problem):
        decode_one(shaped(item))


@pytest.mark.parametrize(
    "tag_value",
    [b"\x00" * 7, "not bytes", [1, 2]],
)
def test_bad_typed_arrays_are_refused(tag_value: object) -> None:
    data = cbor2.dumps([Kind.CREDIT, cbor2.CBORTag(TAG_SINT64_LE, tag_value), 1])
    with pytest.raises(MalformedFrame, match="typed array"):
        decode_one(data)


def test_uint64_above_max_id_is_refused() -> None:
    big = struct.pack("<Q", 2**64 - 1)
    data = cbor2.dumps([Kind.COLUMNS, Kind.CALL, 1, "p", cbor2.CBORTag(TAG_UINT64_LE, big),
                        [[1]]])
    with pytest.raises(MalformedFrame):
        decode_one(data)


def test_column_of_wrong_type_is_a_field_error_for_the_run() -> None:
    columns = [[1, 2], [1.0, 2.0], ["a", "b"], [True, 1], [None, 3], [[], []]]
    with pytest.raises(FieldError, match="'flag'"):
        REG.decode_columns("t.col.Row", columns, 2, DecodeContext())
    with pytest.raises(FieldError, match="6 fields, got 2 columns"):
        REG.decode_columns("t.col.Row", columns[:2], 2, DecodeContext())


def test_column_ints_too_large_for_float_field() -> None:
    from cellmesh.wire.proteins import schema_of

    objs = [Row(1, 10**400, "", False, None, [])]  # type: ignore[arg-type]
    with pytest.raises(FieldError, match="too large for a float"):
        schema_of(Row).column_values(objs * 2, EncodeContext())
