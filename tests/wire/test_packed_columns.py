"""Packed str and bytes columns (docs/protocol.md sections 3, 4.1, 11.3, 16.7).

Round trips, the hello announcement that keeps them interoperable, the
examples of the spec byte for byte, and garbage in: only MalformedFrame out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cellmesh
from cellmesh.errors import MalformedFrame, RemoteProtocolError
from cellmesh.wire import codec
from cellmesh.wire.batching import coalesce
from cellmesh.wire.codec import (
    TAG_BYTES_COLUMN,
    TAG_SINT64_LE,
    TAG_TEXT_COLUMN,
    FrameDecoder,
    Hello,
    Kind,
    bytes_column,
    columns_item,
    encode_chunks,
    frame_bytes,
    text_column,
    typed_array,
)
from cellmesh.wire.proteins import DecodeContext, EncodeContext, ProteinRegistry, schema_of

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def hex_dump(data: bytes) -> str:
    return "\n".join(
        f"{i:04x}  " + " ".join(f"{b:02x}" for b in data[i : i + 16])
        for i in range(0, len(data), 16)
    )


def decode_one(data: bytes) -> list[Any]:
    decoder = FrameDecoder()
    # Past a first frame: only the first (the hello) is held to MAX_HELLO_SIZE.
    decoder.feed(frame_bytes([Kind.CREDIT, 0, 0]))
    assert decoder.next_frame() is not codec.NEED_DATA
    decoder.feed(data)
    frame = decoder.next_frame()
    assert not isinstance(frame, codec._NeedData)
    (item,) = frame.items
    return item


registry = ProteinRegistry()


@cellmesh.protein("test.packed.Key", registry=registry)
class Key:
    id: int
    key: bytes
    name: str


def test_packed_columns_spec_examples_match_the_encoder() -> None:
    text = DOC.read_text()
    cols = [typed_array([1, 2], TAG_SINT64_LE), bytes_column([b"\x01\x02", b"\x03\x04"]),
            text_column(["ab", "c"])]
    frame = frame_bytes(columns_item(Kind.CALL, "example.Key", [7, 8], cols, 2))
    assert hex_dump(frame) in text
    hello = Hello(version=1, name="client", proteins={"example.Point": "8dd972b7f2a4225d"},
                  max_frame_size=65536, packed_columns=1)
    assert hex_dump(frame_bytes(hello.to_wire())) in text
    plain = " ".join(f"{b:02x}" for b in cbor2.dumps([b"\x01\x02", b"\x03\x04"]))
    assert f"`{plain}`" in text
    plain = " ".join(f"{b:02x}" for b in cbor2.dumps(["ab", "c"]))
    assert f"`{plain}`" in text


def test_packed_columns_tag_numbers_are_stable() -> None:
    assert (TAG_TEXT_COLUMN, TAG_BYTES_COLUMN) == (0x63656C6D, 0x63656C6E)


@SETTINGS
@given(values=st.lists(st.text(st.characters(blacklist_characters="\x00",
                                             blacklist_categories=("Cs",))),
                       min_size=1, max_size=30))
def test_packed_columns_text_round_trips(values: list[str]) -> None:
    packed = text_column(values)
    assert packed is not None
    item = decode_one(frame_bytes(columns_item(Kind.SIGNAL, "t", None, [packed], len(values))))
    assert item[5] == [values]


@SETTINGS
@given(width=st.integers(1, 40), count=st.integers(1, 2100), data=st.data())
def test_packed_columns_fixed_width_bytes_round_trip(width: int, count: int,
                                                      data: st.DataObject) -> None:
    seed = data.draw(st.binary(min_size=width, max_size=width))
    values = [bytes((b + i) % 256 for b in seed) for i in range(count)]
    packed = bytes_column(values)
    assert packed is not None
    item = decode_one(frame_bytes(columns_item(Kind.SIGNAL, "b", None, [packed], count)))
    assert item[5] == [values]


def test_packed_columns_fall_back_to_plain_arrays_when_they_do_not_apply() -> None:
    assert text_column(["a\x00b", "c"]) is None
    assert text_column([]) is None
    assert bytes_column([b"ab", b"c"]) is None  # two widths
    assert bytes_column([b"", b""]) is None  # zero width: count could not be bounded
    schema = schema_of(Key)
    columns = [[1, 2], [b"a", b"bc"], ["x\x00", "y"]]
    assert schema.pack_columns(columns, packed_text=True)[1:] == columns[1:]
    assert schema.pack_columns([[1, 2], [b"a", b"b"], ["x", "y"]], packed_text=False)[1:] == [
        [b"a", b"b"], ["x", "y"]]


def test_packed_columns_sent_only_to_a_peer_that_announced_them() -> None:
    schema = schema_of(Key)
    entries: list[Any] = [
        (Kind.CALL, i, schema, schema.encode(Key(i, b"kk", f"n{i}"), EncodeContext()))
        for i in (1, 2)
    ]
    (plain,) = coalesce(entries, packed=False)
    (packed,) = coalesce(entries, packed=True)
    assert plain[5][1:] == [[b"kk", b"kk"], ["n1", "n2"]]
    assert [c.tag for c in packed[5][1:]] == [TAG_BYTES_COLUMN, TAG_TEXT_COLUMN]
    # Both decode to the same messages.
    for item in (plain, packed):
        got = decode_one(frame_bytes(item))
        msgs = registry.decode_columns(got[3], got[5], got[2], DecodeContext())
        assert msgs == [Key(1, b"kk", "n1"), Key(2, b"kk", "n2")]


def test_packed_columns_hello_option_defaults_to_off_and_is_omitted_when_off() -> None:
    assert Hello.from_wire([0, 1, "x", {}, {}]).packed_columns == 0
    assert Hello.from_wire([0, 1, "x", {}, {"packed_columns": 1}]).packed_columns == 1
    assert "packed_columns" not in Hello(version=1, name="x", proteins={}).to_wire()[4]
    with pytest.raises(RemoteProtocolError):
        Hello.from_wire([0, 1, "x", {}, {"packed_columns": "yes"}])


def test_packed_columns_split_by_rows_keep_their_meaning() -> None:
    count = 40
    values = [f"name-{i}" for i in range(count)]
    keys = [i.to_bytes(4, "little") for i in range(count)]
    item = columns_item(Kind.CALL, "test.packed.Key", list(range(1, count + 1)),
                        [typed_array(list(range(count)), TAG_SINT64_LE), bytes_column(keys),
                         text_column(values)], count)
    chunks = encode_chunks([item], 256)
    assert len(chunks) > 1
    rows: list[list[Any]] = [[], [], []]
    for data, weight in chunks:
        got = decode_one(data)
        assert weight == got[2]
        for j in range(3):
            rows[j] += got[5][j]
    assert rows == [list(range(count)), keys, values]


@pytest.mark.parametrize("content", [
    [0, b""], [3, b"ab"], [2, b"abc"], [1, "ab"], ["1", b"a"], [1], [1, b"a", 2], b"ab", 5,
    [-1, b"ab"], [1.0, b"a"], [True, b"a"],
])
def test_packed_columns_malformed_bytes_column_is_malformed(content: Any) -> None:
    data = frame_bytes([Kind.SIGNAL, ["x", cbor2.CBORTag(TAG_BYTES_COLUMN, content)]])
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


@pytest.mark.parametrize("content", [b"ab", 5, ["a"], None])
def test_packed_columns_malformed_text_column_is_malformed(content: Any) -> None:
    data = frame_bytes([Kind.SIGNAL, ["x", cbor2.CBORTag(TAG_TEXT_COLUMN, content)]])
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


@SETTINGS
@given(content=st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=20) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4), max_leaves=8))
def test_packed_columns_fuzz_garbage_in_only_malformed_out(content: Any) -> None:
    for tag in (TAG_TEXT_COLUMN, TAG_BYTES_COLUMN):
        data = frame_bytes([Kind.SIGNAL, ["x", cbor2.CBORTag(tag, content)]])
        decoder = FrameDecoder()
        decoder.feed(data)
        try:
            frame = decoder.next_frame()
        except MalformedFrame:
            continue
        assert not isinstance(frame, codec._NeedData)
        value = frame.items[0][1][1]
        assert type(value) is list
        assert all(type(v) in (str, bytes) for v in value)
        # No amplification: never more values than bytes in the frame.
        assert len(value) <= len(data)


def test_packed_columns_a_count_wider_than_the_data_cannot_amplify() -> None:
    data = frame_bytes([Kind.SIGNAL, ["x", cbor2.CBORTag(TAG_BYTES_COLUMN, [10**9, b"a"])]])
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_packed_columns_slot_builder_is_used_only_for_plain_classes() -> None:
    own = ProteinRegistry()

    @cellmesh.protein("test.packed.Checked", registry=own)
    class Checked:
        n: int = attrs.field(validator=attrs.validators.ge(0))

    @cellmesh.protein("test.packed.Post", registry=own)
    class Post:
        n: int

        def __attrs_post_init__(self) -> None:
            object.__setattr__(self, "n", self.n)

    assert schema_of(Key)._slots is not None
    assert schema_of(Checked)._slots is None
    assert schema_of(Post)._slots is None
    with pytest.raises(cellmesh.errors.FieldError):
        own.decode_columns("test.packed.Checked", [[1, -1]], 2, DecodeContext())
    built = registry.decode_columns("test.packed.Key", [[1, 2], [b"a", b"b"], ["x", "y"]], 2,
                                    DecodeContext())
    assert built == [Key(1, b"a", "x"), Key(2, b"b", "y")]
    assert hash(built[0]) == hash(Key(1, b"a", "x"))
