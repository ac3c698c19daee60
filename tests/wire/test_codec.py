"""The sans-I/O frame codec: round trips, batching, limits and every malformed shape.

Checks cellmesh/wire/codec.py against docs/protocol.md sections 2-4 (framing,
frame kinds, CBOR restrictions). Synchronous and sleep-free: bytes in, frames out.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.errors import (
    ErrorCode,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
    UnknownFrameKind,
)
from cellmesh.wire import codec
from cellmesh.wire.codec import (
    ABSOLUTE_MAX_FRAME_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_DEPTH,
    MAX_HELLO_SIZE,
    MAX_ID,
    MIN_MAX_FRAME_SIZE,
    NEED_DATA,
    TAG_BYTES_COLUMN,
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    TAG_UINT64_LE,
    VESICLE_TAG,
    Call,
    Cancel,
    Credit,
    DecodedFrame,
    Error,
    FrameDecoder,
    GoAway,
    Hello,
    Kind,
    Reply,
    Signal,
    VesicleRef,
    body_fits,
    bytes_column,
    columns_item,
    encode_items,
    frame_bytes,
    frame_of,
    text_column,
    typed_array,
    validate_frame,
)

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# Strategies: wire values and typed frames.

ids = st.integers(1, MAX_ID)
uints = st.integers(0, MAX_ID)
texts = st.text(max_size=20)

# Values a protein field may hold on the wire (no NaN: NaN != NaN breaks equality).
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**200)  # bignums (tags 2/3)
    | st.integers(min_value=-(2**200), max_value=-(2**64) - 1)
    | st.floats(allow_nan=False)
    | texts
    | st.binary(max_size=20)
)
wire_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4)
    # Map keys: text or integers within 64 bits (docs/protocol.md section 3).
    | st.dictionaries(texts | st.integers(-(2**64), 2**64 - 1), children, max_size=4),
    max_leaves=12,
)
bodies = st.builds(lambda name, fields: [name, *fields], texts, st.lists(wire_values, max_size=5))

hellos = st.builds(
    Hello,
    version=uints,
    name=texts,
    proteins=st.dictionaries(texts, texts, max_size=5),
    max_frame_size=st.integers(MIN_MAX_FRAME_SIZE, ABSOLUTE_MAX_FRAME_SIZE),
    credit_calls=uints,
    credit_bytes=uints,
)
calls = st.builds(Call, ids, bodies)
replies = st.builds(Reply, ids, st.none() | bodies)
errors = st.builds(
    Error,
    id=st.none() | ids,
    code=uints,
    type_name=texts,
    message=texts,
    traceback=st.none() | texts,
)
signals = st.builds(Signal, bodies)
cancels = st.builds(Cancel, ids)
credits = st.builds(Credit, uints, uints)
goaways = st.builds(GoAway, uints, texts)
batchable = calls | replies | errors | signals | cancels | credits | goaways
frames = hellos | batchable


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def raw_frame(payload: bytes) -> bytes:
    return header(len(payload)) + payload


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[DecodedFrame]:
    """Feed ``data`` split at ``cuts``, draining frames after every chunk."""
    out: list[DecodedFrame] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        decoder.feed(data[start:end])
        while (frame := decoder.next_frame()) is not NEED_DATA:
            assert isinstance(frame, DecodedFrame)
            out.append(frame)
    return out


def decode_one(payload: bytes, **kwargs: Any) -> DecodedFrame:
    decoder = FrameDecoder(**kwargs)
    decoder.feed(raw_frame(payload))
    frame = decoder.next_frame()
    assert isinstance(frame, DecodedFrame)
    return frame


def decode_obj(obj: object) -> DecodedFrame:
    return decode_one(cbor2.dumps(obj))


# ---------------------------------------------------------------------------
# Round trips.


@SETTINGS
@given(frame=frames, data=st.data())
def test_codec_round_trips_every_frame_kind_in_any_chunking(
    frame: Any, data: st.DataObject
) -> None:
    wire = encode_items([frame.to_wire()], DEFAULT_MAX_FRAME_SIZE)
    assert len(wire) == 1
    stream = wire[0]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    decoded = feed_in_chunks(FrameDecoder(), stream, cuts)
    assert len(decoded) == 1
    (item,) = decoded[0].items
    assert frame_of(item) == frame
    assert decoded[0].size == len(stream) - HEADER_SIZE
    assert decoded[0].vesicles == 0


@SETTINGS
@given(items=st.lists(batchable, min_size=2, max_size=8), data=st.data())
def test_codec_round_trips_a_batch_in_one_frame(items: list[Any], data: st.DataObject) -> None:
    wire = encode_items([f.to_wire() for f in items], DEFAULT_MAX_FRAME_SIZE)
    assert len(wire) == 1
    assert cbor2.loads(wire[0][HEADER_SIZE:])[0] == Kind.BATCH
    cuts = data.draw(st.lists(st.integers(0, len(wire[0])), max_size=6))
    (decoded,) = feed_in_chunks(FrameDecoder(), wire[0], cuts)
    assert [frame_of(item) for item in decoded.items] == items


@SETTINGS
@given(sequence=st.lists(frames, min_size=1, max_size=6), data=st.data())
def test_codec_decodes_back_to_back_frames_in_order(
    sequence: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(frame_bytes(f.to_wire()) for f in sequence)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = FrameDecoder()
    decoded = feed_in_chunks(decoder, stream, cuts)
    assert [frame_of(d.items[0]) for d in decoded] == sequence
    assert decoder.buffered == 0


def test_codec_frame_bytes_has_a_big_endian_length_header() -> None:
    data = frame_bytes(Credit(1, 2).to_wire())
    assert data == bytes.fromhex("00000004") + bytes.fromhex("83060102")


def test_codec_encode_items_of_nothing_is_no_frames() -> None:
    assert encode_items([], DEFAULT_MAX_FRAME_SIZE) == []


def test_codec_single_item_is_a_plain_frame_not_a_batch() -> None:
    (data,) = encode_items([Cancel(7).to_wire()], DEFAULT_MAX_FRAME_SIZE)
    assert cbor2.loads(data[HEADER_SIZE:]) == [Kind.CANCEL, 7]


# ---------------------------------------------------------------------------
# Batching under a frame size limit.


@SETTINGS
@given(
    items=st.lists(
        st.builds(lambda i, n: Call(i, ["p", "x" * n]), ids, st.integers(0, 300)),
        min_size=1,
        max_size=40,
    ),
    limit=st.integers(340, 5000),
)
def test_codec_batches_split_to_fit_the_limit(items: list[Call], limit: int) -> None:
    wire_items = [c.to_wire() for c in items]
    encoded = encode_items(wire_items, limit)
    decoder = FrameDecoder(max_frame_size=limit)
    decoded = feed_in_chunks(decoder, b"".join(encoded), [])
    assert all(len(data) - HEADER_SIZE <= limit for data in encoded)
    assert [item for d in decoded for item in d.items] == wire_items
    if len(cbor2.dumps([Kind.BATCH, wire_items] if len(items) > 1 else wire_items[0])) <= limit:
        assert len(encoded) == 1


def test_codec_batch_that_fits_is_never_split() -> None:
    items = [Reply(i, ["r", i]).to_wire() for i in range(1, 101)]
    size = len(cbor2.dumps([Kind.BATCH, items]))
    assert len(encode_items(items, size)) == 1
    assert len(encode_items(items, size - 1)) == 2


def test_codec_single_item_too_large_to_send_is_a_local_error() -> None:
    item = Call(1, ["blob", b"x" * 5000]).to_wire()
    with pytest.raises(LocalProtocolError) as info:
        encode_items([item], MIN_MAX_FRAME_SIZE)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert not isinstance(info.value, RemoteProtocolError)


def test_codec_oversized_item_inside_a_batch_is_still_refused() -> None:
    items = [Cancel(1).to_wire(), Call(2, ["blob", b"x" * 5000]).to_wire()]
    with pytest.raises(LocalProtocolError):
        encode_items(items, MIN_MAX_FRAME_SIZE)


# ---------------------------------------------------------------------------
# Header-level limits.


def past_hello(decoder: FrameDecoder) -> FrameDecoder:
    """Consume a first frame: only frames after the hello obey max_frame_size."""
    decoder.feed(frame_bytes(Credit(1, 1).to_wire()))
    assert decoder.next_frame() is not NEED_DATA
    return decoder


def test_codec_first_frame_may_reach_the_hello_limit() -> None:
    decoder = FrameDecoder(max_frame_size=MIN_MAX_FRAME_SIZE)
    decoder.feed(header(MAX_HELLO_SIZE))
    assert decoder.next_frame() is NEED_DATA
    decoder = FrameDecoder(max_frame_size=MIN_MAX_FRAME_SIZE)
    decoder.feed(header(MAX_HELLO_SIZE + 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_codec_first_frame_is_held_to_the_hello_limit_whatever_the_frame_limit() -> None:
    """Before the hello, a peer gets MAX_HELLO_SIZE (64 KiB), never the 16 MiB frame limit."""
    assert MAX_HELLO_SIZE == 64 * 1024
    decoder = FrameDecoder()  # max_frame_size 16 MiB
    decoder.feed(header(MAX_HELLO_SIZE + 1))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.limit == MAX_HELLO_SIZE
    decoder = past_hello(FrameDecoder())
    decoder.feed(header(MAX_HELLO_SIZE + 1))
    assert decoder.next_frame() is NEED_DATA  # after the first frame: 16 MiB


def test_codec_frame_too_large_is_raised_from_the_header_alone() -> None:
    decoder = past_hello(FrameDecoder(max_frame_size=MIN_MAX_FRAME_SIZE))
    decoder.feed(header(MIN_MAX_FRAME_SIZE + 1))  # no payload byte has arrived
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.length == MIN_MAX_FRAME_SIZE + 1
    assert info.value.limit == MIN_MAX_FRAME_SIZE
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_codec_frame_of_exactly_the_limit_is_waited_for() -> None:
    decoder = FrameDecoder(max_frame_size=MIN_MAX_FRAME_SIZE)
    decoder.feed(header(MIN_MAX_FRAME_SIZE))
    assert decoder.next_frame() is NEED_DATA


def test_codec_largest_u32_length_is_refused_by_default() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_codec_limit_counts_the_payload_not_the_header() -> None:
    payload = cbor2.dumps([Kind.CALL, 1, ["p", "x" * 100]])
    frame = decode_one(payload, max_frame_size=len(payload))
    assert frame.size == len(payload)
    decoder = past_hello(FrameDecoder(max_frame_size=len(payload) - 1))
    decoder.feed(raw_frame(payload))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_codec_zero_length_frame_is_malformed() -> None:
    decoder = FrameDecoder()
    decoder.feed(header(0) + frame_bytes(Cancel(1).to_wire()))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_codec_partial_header_needs_data() -> None:
    decoder = FrameDecoder()
    for byte in frame_bytes(Cancel(1).to_wire())[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.feed(b"\x01")
    assert isinstance(decoder.next_frame(), DecodedFrame)


def test_codec_decoder_refuses_use_after_an_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(cbor2.dumps("not an array")))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()
    decoder.feed(frame_bytes(Cancel(1).to_wire()))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_codec_buffered_counts_unconsumed_bytes() -> None:
    one = frame_bytes(Cancel(1).to_wire())
    decoder = FrameDecoder()
    decoder.feed(one + one[:3])
    assert decoder.buffered == len(one) + 3
    assert isinstance(decoder.next_frame(), DecodedFrame)
    assert decoder.buffered == 3
    assert decoder.next_frame() is NEED_DATA


def test_codec_decoder_reports_its_limit() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert FrameDecoder(max_frame_size=5000).max_frame_size == 5000


# ---------------------------------------------------------------------------
# Malformed envelopes: each shape maps to one error class.

BODY = ["p"]
MALFORMED: list[tuple[str, object, type[RemoteProtocolError]]] = [
    ("not an array", 5, MalformedFrame),
    ("a map", {"kind": 1}, MalformedFrame),
    ("text", "call", MalformedFrame),
    ("empty array", [], MalformedFrame),
    ("text kind", ["call", 1, BODY], MalformedFrame),
    ("float kind", [1.0, 1, BODY], MalformedFrame),
    ("bool kind", [True, 1, BODY], MalformedFrame),
    ("null kind", [None], MalformedFrame),
    ("kind 42", [42], UnknownFrameKind),
    ("kind 255 with fields", [255, 1, BODY], UnknownFrameKind),
    ("negative kind", [-1, 1], UnknownFrameKind),
    ("bignum kind", [2**64, 1], UnknownFrameKind),
    # call [1, id, body]
    ("call short", [1, 1], MalformedFrame),
    ("call long", [1, 1, BODY, 0], MalformedFrame),
    ("call id 0", [1, 0, BODY], MalformedFrame),
    ("call id negative", [1, -5, BODY], MalformedFrame),
    ("call id 2**63", [1, 2**63, BODY], MalformedFrame),
    ("call id bool", [1, True, BODY], MalformedFrame),
    ("call id float", [1, 1.0, BODY], MalformedFrame),
    ("call id text", [1, "1", BODY], MalformedFrame),
    ("call body null", [1, 1, None], MalformedFrame),
    ("call body empty", [1, 1, []], MalformedFrame),
    ("call body int head", [1, 1, [1, 2]], MalformedFrame),
    ("call body text", [1, 1, "p"], MalformedFrame),
    ("call body map", [1, 1, {"p": 1}], MalformedFrame),
    # reply [2, id, body|null]
    ("reply short", [2, 1], MalformedFrame),
    ("reply id 0", [2, 0, None], MalformedFrame),
    ("reply body empty", [2, 1, []], MalformedFrame),
    ("reply body int", [2, 1, 0], MalformedFrame),
    ("reply body bytes head", [2, 1, [b"p"]], MalformedFrame),
    # error [3, id|null, code, type, message, traceback|null]
    ("error short", [3, None, 1, "T", "m"], MalformedFrame),
    ("error long", [3, None, 1, "T", "m", None, 0], MalformedFrame),
    ("error id 0", [3, 0, 1, "T", "m", None], MalformedFrame),
    ("error id text", [3, "1", 1, "T", "m", None], MalformedFrame),
    ("error code negative", [3, 1, -1, "T", "m", None], MalformedFrame),
    ("error code bool", [3, 1, False, "T", "m", None], MalformedFrame),
    ("error code text", [3, 1, "1", "T", "m", None], MalformedFrame),
    ("error type null", [3, 1, 1, None, "m", None], MalformedFrame),
    ("error message bytes", [3, 1, 1, "T", b"m", None], MalformedFrame),
    ("error traceback int", [3, 1, 1, "T", "m", 0], MalformedFrame),
    # signal [4, body]
    ("signal short", [4], MalformedFrame),
    ("signal with id", [4, 1, BODY], MalformedFrame),
    ("signal body null", [4, None], MalformedFrame),
    ("signal body empty", [4, []], MalformedFrame),
    # cancel [5, id]
    ("cancel short", [5], MalformedFrame),
    ("cancel long", [5, 1, 2], MalformedFrame),
    ("cancel id 0", [5, 0], MalformedFrame),
    ("cancel id null", [5, None], MalformedFrame),
    # credit [6, calls, bytes]
    ("credit short", [6, 1], MalformedFrame),
    ("credit negative calls", [6, -1, 0], MalformedFrame),
    ("credit negative bytes", [6, 0, -1], MalformedFrame),
    ("credit 2**63", [6, 2**63, 0], MalformedFrame),
    ("credit float", [6, 1.0, 0], MalformedFrame),
    ("credit bool", [6, True, 0], MalformedFrame),
    # goaway [7, code, reason]
    ("goaway short", [7, 32], MalformedFrame),
    ("goaway code text", [7, "32", "bye"], MalformedFrame),
    ("goaway code negative", [7, -32, "bye"], MalformedFrame),
    ("goaway reason null", [7, 32, None], MalformedFrame),
    # batch [8, [item, ...]]
    ("batch short", [8], MalformedFrame),
    ("batch long", [8, [[5, 1]], 0], MalformedFrame),
    ("batch of nothing", [8, []], MalformedFrame),
    ("batch not array", [8, {"a": 1}], MalformedFrame),
    ("batch item not array", [8, [5]], MalformedFrame),
    ("batch item empty", [8, [[]]], MalformedFrame),
    ("batch holds a hello", [8, [[0, 1, "n", {}, {}]]], MalformedFrame),
    ("batch holds a batch", [8, [[8, [[5, 1]]]]], MalformedFrame),
    ("batch holds unknown kind", [8, [[5, 1], [42]]], UnknownFrameKind),
    ("batch holds bad call", [8, [[1, 1, BODY], [1, 0, BODY]]], MalformedFrame),
    ("batch holds call with null body", [8, [[1, 1, None]]], MalformedFrame),
    ("batch holds bool kind", [8, [[True, 1, BODY]]], MalformedFrame),
    ("batch holds bad reply", [8, [[2, 1, []]]], MalformedFrame),
    ("batch holds bad credit", [8, [[6, 1, -1]]], MalformedFrame),
]

#: Tag problems are found while parsing CBOR, so only the decoder sees them.
TAGGED: list[tuple[str, object, type[RemoteProtocolError]]] = [
    ("vesicle tag not array", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, 0)]], MalformedFrame),
    ("vesicle tag short", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0])]], MalformedFrame),
    ("vesicle tag text", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, "5"])]], MalformedFrame),
    ("vesicle tag bool", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [False, 5])]], MalformedFrame),
    ("vesicle index 1 first", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [1, 5])]], MalformedFrame),
    ("vesicle length 0", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 0])]], MalformedFrame),
    ("vesicle length -1", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, -1])]], MalformedFrame),
    ("vesicle length 2**62+1", [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 2**62 + 1])]],
     MalformedFrame),
    ("vesicle index repeated",
     [2, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 5]), cbor2.CBORTag(VESICLE_TAG, [0, 5])]],
     MalformedFrame),
    # other tags
    ("tag 0 datetime", [2, 1, ["p", cbor2.CBORTag(0, "2020-01-01T00:00:00Z")]], MalformedFrame),
    ("tag 1 epoch", [2, 1, ["p", cbor2.CBORTag(1, 0)]], MalformedFrame),
    ("tag 4 decimal", [2, 1, ["p", cbor2.CBORTag(4, [1, 2])]], MalformedFrame),
    ("tag 24 embedded cbor", [2, 1, ["p", cbor2.CBORTag(24, b"\x01")]], MalformedFrame),
    ("tag 28 shareable", [2, 1, ["p", cbor2.CBORTag(28, [1])]], MalformedFrame),
    ("tag 29 sharedref", [2, 1, ["p", cbor2.CBORTag(29, 0)]], MalformedFrame),
    ("tag 32 uri", [2, 1, ["p", cbor2.CBORTag(32, "http://x")]], MalformedFrame),
    ("tag 37 uuid", [2, 1, ["p", cbor2.CBORTag(37, b"0" * 16)]], MalformedFrame),
    ("tag 258 set", [2, 1, ["p", cbor2.CBORTag(258, [1])]], MalformedFrame),
    ("tag 55799 self-describe", cbor2.CBORTag(55799, [5, 1]), MalformedFrame),
    ("tag on the frame", cbor2.CBORTag(VESICLE_TAG, [0, 1]), MalformedFrame),
    ("bignum tag on text", [2, 1, ["p", cbor2.CBORTag(2, "not bytes")]], MalformedFrame),
]


@pytest.mark.parametrize(
    ("obj", "error"), [pytest.param(o, e, id=name) for name, o, e in MALFORMED + TAGGED]
)
def test_codec_malformed_shape_raises_its_error(
    obj: object, error: type[RemoteProtocolError]
) -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(cbor2.dumps(obj)))
    with pytest.raises(error) as info:
        decoder.next_frame()
    assert type(info.value) is error
    assert info.value.code == error.code


@pytest.mark.parametrize(
    ("obj", "error"), [pytest.param(o, e, id=name) for name, o, e in MALFORMED]
)
def test_codec_validate_frame_agrees_with_the_decoder(
    obj: object, error: type[RemoteProtocolError]
) -> None:
    with pytest.raises(error):
        validate_frame(obj)


RAW_MALFORMED: list[tuple[str, bytes]] = [
    ("truncated array", b"\x83\x05"),
    ("truncated text", b"\x82\x07\x65ab"),
    ("invalid utf-8", b"\x83\x07\x00\x62\xff\xfe"),
    ("reserved additional info", b"\x1c"),
    ("break outside indefinite", b"\xff"),
    ("indefinite array", b"\x9f\x05\x01\xff"),
    ("indefinite map", b"\x83\x02\x01\x82\x61p\xbf\x61a\x01\xff"),
    ("indefinite bytes", b"\x83\x02\x01\x82\x61p\x5f\x41a\xff"),
    ("indefinite text", b"\x83\x02\x01\x82\x61p\x7f\x61a\xff"),
    ("huge declared array", b"\x83\x02\x01\x9b\x00\xff\xff\xff\xff\xff\xff\xff"),
    ("huge declared map", b"\x83\x02\x01\xbb\x00\xff\xff\xff\xff\xff\xff\xff"),
    ("huge declared bytes", b"\x83\x02\x01\x5b\x00\xff\xff\xff\xff\xff\xff\xff"),
    ("nesting deeper than the limit", b"\x81" * (MAX_DEPTH + 1) + b"\x00"),
    ("cyclic shared value", b"\x82\x02\xd8\x1c\x81\xd8\x1d\x00"),
]


@pytest.mark.parametrize("payload", [pytest.param(p, id=n) for n, p in RAW_MALFORMED])
def test_codec_invalid_cbor_is_malformed(payload: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(payload))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_codec_nesting_limit_counts_arrays_maps_and_tags() -> None:
    # [2, 1, ["p", [[...[x]...]]]]: the frame array is level 1, the body level 2.
    prefix = b"\x83\x02\x01\x82\x61p"
    fits = [
        prefix + b"\x81" * (MAX_DEPTH - 2) + b"\x00",  # 64 arrays
        prefix + b"\x81" * (MAX_DEPTH - 3) + b"\xa1\x00\x00",  # 63 arrays and a map
        prefix + b"\x81" * (MAX_DEPTH - 3) + b"\xc2\x41\x01",  # 63 arrays and a bignum tag
    ]
    too_deep = [
        prefix + b"\x81" * (MAX_DEPTH - 1) + b"\x00",
        prefix + b"\x81" * (MAX_DEPTH - 2) + b"\xa1\x00\x00",
        prefix + b"\x81" * (MAX_DEPTH - 2) + b"\xc2\x41\x01",
    ]
    for payload in fits:
        assert decode_one(payload).items[0][:2] == [2, 1]
    for payload in too_deep:
        decoder = FrameDecoder()
        decoder.feed(raw_frame(payload))
        with pytest.raises(MalformedFrame):
            decoder.next_frame()


def test_codec_trailing_bytes_after_the_item_are_malformed() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(cbor2.dumps([Kind.CREDIT, 1, 2]) + b"\xff\x00"))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_codec_bignums_are_accepted_in_bodies() -> None:
    frame = decode_obj([Kind.REPLY, 1, ["p", 2**100, -(2**100)]])
    assert frame.items[0][2] == ["p", 2**100, -(2**100)]


def test_codec_vesicle_refs_are_counted_in_order() -> None:
    body = ["p", cbor2.CBORTag(VESICLE_TAG, [0, 10]), [cbor2.CBORTag(VESICLE_TAG, [1, 2**62])]]
    frame = decode_obj([Kind.CALL, 3, body])
    assert frame.vesicles == 2
    assert frame.items[0][2] == ["p", VesicleRef(0, 10), [VesicleRef(1, 2**62)]]


def test_codec_vesicle_indexes_restart_in_each_frame() -> None:
    one = frame_bytes([Kind.SIGNAL, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 1])]])
    decoder = FrameDecoder()
    decoder.feed(one + one)
    first, second = decoder.next_frame(), decoder.next_frame()
    assert isinstance(first, DecodedFrame) and isinstance(second, DecodedFrame)
    assert first.vesicles == second.vesicles == 1


def test_codec_vesicle_indexes_span_the_items_of_a_batch() -> None:
    items = [
        [Kind.CALL, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 1])]],
        [Kind.CALL, 2, ["p", cbor2.CBORTag(VESICLE_TAG, [1, 1])]],
    ]
    assert decode_obj([Kind.BATCH, items]).vesicles == 2
    restarted = [items[0], [Kind.CALL, 2, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 1])]]]
    with pytest.raises(MalformedFrame):
        decode_obj([Kind.BATCH, restarted])


# ---------------------------------------------------------------------------
# Hello validation.


def hello_item(**changes: Any) -> list[Any]:
    item = Hello(version=1, name="peer", proteins={"a.B": "0123456789abcdef"}).to_wire()
    fields = {"version": 1, "name": 2, "proteins": 3, "options": 4}
    for key, value in changes.items():
        if key in fields:
            item[fields[key]] = value
        else:
            item[4] = {**item[4], key: value}
    return item


BAD_HELLOS: list[tuple[str, list[Any]]] = [
    ("four elements", hello_item()[:4]),
    ("six elements", [*hello_item(), None]),
    ("negative version", hello_item(version=-1)),
    ("text version", hello_item(version="1")),
    ("bool version", hello_item(version=True)),
    ("null name", hello_item(name=None)),
    ("bytes name", hello_item(name=b"peer")),
    ("proteins array", hello_item(proteins=[["a.B", "x"]])),
    ("protein name int", hello_item(proteins={1: "x"})),
    ("fingerprint bytes", hello_item(proteins={"a.B": b"x"})),
    ("options array", hello_item(options=[])),
    ("options null", hello_item(options=None)),
    ("max frame below minimum", hello_item(max_frame_size=MIN_MAX_FRAME_SIZE - 1)),
    ("max frame above u32", hello_item(max_frame_size=ABSOLUTE_MAX_FRAME_SIZE + 1)),
    ("max frame text", hello_item(max_frame_size="big")),
    ("max frame float", hello_item(max_frame_size=65536.0)),
    ("negative call credit", hello_item(credit_calls=-1)),
    ("bool call credit", hello_item(credit_calls=True)),
    ("byte credit 2**63", hello_item(credit_bytes=2**63)),
    ("byte credit null", hello_item(credit_bytes=None)),
]


@pytest.mark.parametrize("item", [pytest.param(i, id=n) for n, i in BAD_HELLOS])
def test_codec_bad_hello_raises_handshake_error(item: list[Any]) -> None:
    with pytest.raises(HandshakeError) as info:
        Hello.from_wire(item)
    assert info.value.code == ErrorCode.BAD_HANDSHAKE
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(item))
    with pytest.raises(HandshakeError):
        decoder.next_frame()


def test_codec_hello_options_default_and_ignore_unknown_keys() -> None:
    hello = Hello.from_wire([Kind.HELLO, 1, "p", {}, {"future": [1, 2], 7: "x"}])
    assert hello == Hello(version=1, name="p", proteins={})
    assert hello.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert hello.credit_calls == hello.credit_bytes == 0


def test_codec_hello_accepts_any_version_number() -> None:
    # The codec only checks the shape; the driver compares versions (VersionMismatch).
    assert Hello.from_wire(hello_item(version=99)).version == 99


def test_codec_hello_limits_are_inclusive() -> None:
    assert Hello.from_wire(hello_item(max_frame_size=MIN_MAX_FRAME_SIZE)).max_frame_size == (
        MIN_MAX_FRAME_SIZE
    )
    top = Hello.from_wire(hello_item(max_frame_size=ABSOLUTE_MAX_FRAME_SIZE))
    assert top.max_frame_size == ABSOLUTE_MAX_FRAME_SIZE


def test_codec_hello_is_returned_as_an_item() -> None:
    frame = decode_one(frame_bytes(hello_item())[HEADER_SIZE:])
    assert frame_of(frame.items[0]) == Hello.from_wire(hello_item())


def test_codec_kind_numbers_are_stable() -> None:
    # New kinds may be added; the numbers of docs/protocol.md section 4 never change.
    numbers = {k.name: k.value for k in Kind}
    assert {name: numbers.get(name) for name in (
        "HELLO", "CALL", "REPLY", "ERROR", "SIGNAL", "CANCEL", "CREDIT", "GOAWAY", "BATCH",
    )} == {
        "HELLO": 0, "CALL": 1, "REPLY": 2, "ERROR": 3, "SIGNAL": 4,
        "CANCEL": 5, "CREDIT": 6, "GOAWAY": 7, "BATCH": 8,
    }
    assert 42 not in numbers.values() and 255 not in numbers.values()


def test_codec_vesicle_tag_number_is_stable() -> None:
    assert VESICLE_TAG == int.from_bytes(b"cell", "big") == 1_667_591_276


# ---------------------------------------------------------------------------
# docs/protocol.md section 16 must show what the encoder really produces.

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def hex_dump(data: bytes) -> str:
    """The dump format of docs/protocol.md: offset, then up to 16 bytes a line."""
    return "\n".join(
        f"{i:04x}  " + " ".join(f"{b:02x}" for b in data[i : i + 16])
        for i in range(0, len(data), 16)
    )


def test_codec_hex_examples_in_the_protocol_document_match_the_encoder() -> None:
    point = "example.Point"
    fps = {point: "8dd972b7f2a4225d"}
    client = Hello(version=1, name="client", proteins=fps, max_frame_size=65536)
    server = Hello(version=1, name="pinger", proteins=fps, max_frame_size=16 * 1024 * 1024,
                   credit_calls=4096, credit_bytes=32 * 1024 * 1024)
    call = frame_bytes(Call(1, [point, 3, -4, "p", ["a", "b"]]).to_wire())
    (batch,) = encode_items(
        [Reply(1, [point, 3, -4, None, []]).to_wire(), Reply(2, None).to_wire()], 65536
    )
    credit = frame_bytes(Credit(1, len(call) - HEADER_SIZE).to_wire())
    text = DOC.read_text()
    for data in (frame_bytes(client.to_wire()), frame_bytes(server.to_wire()), call, batch,
                 credit):
        assert hex_dump(data) in text
    cols = [typed_array([3, 5], TAG_SINT64_LE), typed_array([-4, 6], TAG_SINT64_LE),
            ["p", None], [[], ["a"]]]
    columns = frame_bytes(columns_item(Kind.CALL, point, [7, 8], cols, 2))
    assert hex_dump(columns) in text
    spaced = " ".join(f"{b:02x}" for b in frame_bytes(Cancel(1).to_wire()))
    assert f"`{spaced}`" in text
    # 16.5 and 16.7: a hello announcing packed columns, and packed str/bytes columns.
    packed_hello = Hello(version=1, name="client", proteins=fps, max_frame_size=65536,
                         packed_columns=1)
    assert hex_dump(frame_bytes(packed_hello.to_wire())) in text
    key_cols = [typed_array([1, 2], TAG_SINT64_LE), bytes_column([b"\x01\x02", b"\x03\x04"]),
                text_column(["ab", "c"])]
    key_frame = frame_bytes(columns_item(Kind.CALL, "example.Key", [7, 8], key_cols, 2))
    assert hex_dump(key_frame) in text


# ---------------------------------------------------------------------------
# Columns (kind 9) and RFC 8746 typed arrays (docs/protocol.md 3, 4.10, 11.3).


@st.composite
def columns_items(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    """A columns item as sent, and the item a receiver must decode from it."""
    kind = draw(st.sampled_from([Kind.CALL, Kind.REPLY, Kind.SIGNAL]))
    count = draw(st.integers(1, 6))
    name = draw(texts)
    plain_ids = None
    sent_ids: Any = None
    if kind != Kind.SIGNAL:
        plain_ids = draw(st.lists(ids, min_size=count, max_size=count, unique=True))
        sent_ids = typed_array(plain_ids, TAG_UINT64_LE) if draw(st.booleans()) else plain_ids
    sent_cols: list[Any] = []
    plain_cols: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        column_kind = draw(st.sampled_from(["int64", "float64", "any"]))
        if column_kind == "int64":
            col: list[Any] = draw(st.lists(st.integers(-(2**63), 2**63 - 1),
                                           min_size=count, max_size=count))
            sent_cols.append(typed_array(col, TAG_SINT64_LE))
        elif column_kind == "float64":
            col = draw(st.lists(st.floats(allow_nan=False), min_size=count, max_size=count))
            sent_cols.append(typed_array(col, TAG_FLOAT64_LE))
        else:
            col = draw(st.lists(wire_values, min_size=count, max_size=count))
            sent_cols.append(col)
        plain_cols.append(col)
    sent = [Kind.COLUMNS, kind, count, name, sent_ids, sent_cols]
    if sent_ids is not None and type(sent_ids) is list:
        assert columns_item(kind, name, plain_ids, sent_cols, count)[5] == sent_cols
    return sent, [int(Kind.COLUMNS), int(kind), count, name, plain_ids, plain_cols]


@SETTINGS
@given(pair=columns_items(), data=st.data())
def test_codec_columns_round_trip_with_plain_and_typed_arrays(
    pair: tuple[list[Any], list[Any]], data: st.DataObject
) -> None:
    sent, expected = pair
    stream = frame_bytes(sent)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    (frame,) = feed_in_chunks(FrameDecoder(), stream, cuts)
    assert frame.items == [expected]
    (batch,) = feed_in_chunks(FrameDecoder(), frame_bytes([Kind.BATCH, [sent, [5, 1]]]), [])
    assert batch.items == [expected, [5, 1]]


def test_codec_columns_item_layout() -> None:
    item = columns_item(Kind.REPLY, "p", [1, 2], [[True, False]], 2)
    assert item[:4] == [Kind.COLUMNS, Kind.REPLY, 2, "p"]
    assert item[4] == cbor2.CBORTag(TAG_UINT64_LE, bytes([1, 0, 0, 0, 0, 0, 0, 0,
                                                          2, 0, 0, 0, 0, 0, 0, 0]))
    assert columns_item(Kind.SIGNAL, "p", None, [], 3)[4] is None


def test_codec_typed_arrays_decode_to_plain_lists() -> None:
    body = ["p", typed_array([0, 2**63 - 1], TAG_UINT64_LE),
            typed_array([-(2**63), -1, 2**63 - 1], TAG_SINT64_LE),
            typed_array([1.5, -0.0, float("inf")], TAG_FLOAT64_LE),
            cbor2.CBORTag(TAG_SINT64_LE, b"")]
    frame = decode_obj([Kind.REPLY, 1, body])
    assert frame.items[0][2] == ["p", [0, 2**63 - 1], [-(2**63), -1, 2**63 - 1],
                                 [1.5, -0.0, float("inf")], []]


def test_codec_typed_array_helper_refuses_out_of_range_values() -> None:
    with pytest.raises(OverflowError):
        typed_array([2**64], TAG_UINT64_LE)
    with pytest.raises(OverflowError):
        typed_array([2**63], TAG_SINT64_LE)


COLS = [Kind.COLUMNS]
BAD_COLUMNS: list[tuple[str, object]] = [
    ("five elements", [*COLS, 1, 1, "p", [1]]),
    ("seven elements", [*COLS, 1, 1, "p", [1], [[0]], None]),
    ("kind error", [*COLS, 3, 1, "p", [1], [[0]]]),
    ("kind cancel", [*COLS, 5, 1, "p", [1], [[0]]]),
    ("kind columns", [*COLS, 9, 1, "p", [1], [[0]]]),
    ("kind bool", [*COLS, True, 1, "p", [1], [[0]]]),
    ("count 0", [*COLS, 1, 0, "p", [], []]),
    ("count negative", [*COLS, 4, -1, "p", None, []]),
    ("count 2**63", [*COLS, 4, 2**63, "p", None, []]),
    ("count bool", [*COLS, 4, True, "p", None, [[0]]]),
    ("count float", [*COLS, 4, 1.0, "p", None, [[0]]]),
    ("name bytes", [*COLS, 4, 1, b"p", None, [[0]]]),
    ("name null", [*COLS, 4, 1, None, None, [[0]]]),
    ("call ids null", [*COLS, 1, 1, "p", None, [[0]]]),
    ("reply ids short", [*COLS, 2, 2, "p", [1], [[0, 0]]]),
    ("call ids long", [*COLS, 1, 1, "p", [1, 2], [[0]]]),
    ("call id 0", [*COLS, 1, 1, "p", [0], [[0]]]),
    ("call id bool", [*COLS, 1, 1, "p", [True], [[0]]]),
    ("call id 2**63", [*COLS, 1, 1, "p", [2**63], [[0]]]),
    ("signal with ids", [*COLS, 4, 1, "p", [1], [[0]]]),
    ("columns not array", [*COLS, 4, 1, "p", None, {"x": [0]}]),
    ("column not array", [*COLS, 4, 1, "p", None, [0]]),
    ("column short", [*COLS, 4, 2, "p", None, [[0, 1], [0]]]),
    ("column long", [*COLS, 4, 1, "p", None, [[0, 1]]]),
    ("uint64 id above 2**63-1", [*COLS, 1, 1, "p", cbor2.CBORTag(TAG_UINT64_LE, b"\xff" * 8),
                                 [[0]]]),
    ("typed array of 7 bytes", [2, 1, ["p", cbor2.CBORTag(TAG_SINT64_LE, b"\x00" * 7)]]),
    ("typed array of text", [2, 1, ["p", cbor2.CBORTag(TAG_FLOAT64_LE, "12345678")]]),
    ("typed array of a list", [2, 1, ["p", cbor2.CBORTag(TAG_SINT64_LE, [1])]]),
    ("typed array as map key", [2, 1, ["p", {cbor2.CBORTag(TAG_SINT64_LE, b"\x00" * 8): 1}]]),
    ("big-endian sint64 typed array", [2, 1, ["p", cbor2.CBORTag(75, b"\x00" * 8)]]),
    ("uint8 typed array", [2, 1, ["p", cbor2.CBORTag(64, b"\x00")]]),
    ("columns in a batch with a bad kind", [Kind.BATCH, [[*COLS, 6, 1, "p", None, []]]]),
]


@pytest.mark.parametrize("obj", [pytest.param(o, id=n) for n, o in BAD_COLUMNS])
def test_codec_malformed_columns_and_typed_arrays(obj: object) -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(cbor2.dumps(obj)))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_codec_columns_of_a_protein_without_fields_has_no_columns() -> None:
    frame = decode_obj([Kind.COLUMNS, Kind.SIGNAL, 3, "p", None, []])
    assert frame.items == [[9, 4, 3, "p", None, []]]


# ---------------------------------------------------------------------------
# Messages near the frame limit: refused only when they cannot fit alone.


def lone_size(body: list[Any]) -> int:
    """The size of the largest frame a message needs: ``[1, MAX_ID, body]``, alone."""
    return len(cbor2.dumps([Kind.CALL, MAX_ID, body]))


def largest_text(limit: int) -> str:
    """The longest text whose call ``[1, MAX_ID, ["p", text]]`` fits ``limit`` exactly."""
    n = limit
    while lone_size(["p", "x" * n]) > limit:
        n -= 1
    assert lone_size(["p", "x" * n]) == limit  # (one more character would not fit)
    return "x" * n


def test_codec_body_fits_refuses_only_what_cannot_fit_in_a_frame_alone() -> None:
    limit = MIN_MAX_FRAME_SIZE
    text = largest_text(limit)
    assert body_fits(["p", text], limit)  # the old bound kept ~80 bytes back
    assert codec.lone_size(["p", text]) == lone_size(["p", text]) == limit
    assert not body_fits(["p", text + "x"], limit)
    data = b"y" * (len(text) - 1)  # (and a null: the same size)
    assert lone_size(["p", data, None]) == limit and body_fits(["p", data, None], limit)
    assert not body_fits(["p", data, None, None], limit)
    # A nested body is measured as well; every small body passes the cheap bound.
    assert lone_size(["p", [text[1:]]]) == limit and body_fits(["p", [text[1:]]], limit)
    assert not body_fits(["p", [text]], limit)
    assert body_fits(["p", 1, 2.5, "s", b"b", None, True, 2**70], limit)


def one_row(sub: Kind, form: str, text: str) -> tuple[list[Any], list[Any]]:
    """A columns item of one row (``text`` then a value in the column ``form``)
    and the plain item it stands for."""
    columns: dict[str, tuple[Any, Any]] = {
        "plain": (None, [None]),
        "typed": (-5, typed_array([-5], TAG_SINT64_LE)),
        "packed text": ("t", text_column(["t"])),
        "packed bytes": (b"b", bytes_column([b"b"])),
    }
    value, column = columns[form]
    ids = None if sub == Kind.SIGNAL else [7]
    item = columns_item(sub, "p", ids, [text_column([text]), column], 1)
    body = ["p", text, value]
    return item, [Kind.SIGNAL, body] if sub == Kind.SIGNAL else [sub, 7, body]


@pytest.mark.parametrize("sub", [Kind.CALL, Kind.REPLY, Kind.SIGNAL])
@pytest.mark.parametrize("form", ["plain", "typed", "packed text", "packed bytes"])
def test_codec_one_row_columns_item_too_large_travels_as_its_plain_item(
    sub: Kind, form: str
) -> None:
    limit = MIN_MAX_FRAME_SIZE
    n = limit
    while len(cbor2.dumps(one_row(sub, form, "x" * n)[1])) > limit:
        n -= 1
    item, plain = one_row(sub, form, "x" * n)  # the plain item fits exactly
    assert len(cbor2.dumps(item)) > limit == len(cbor2.dumps(plain))
    (data,) = encode_items([item], limit)  # it used to be refused
    assert decode_one(data[HEADER_SIZE:]).items == [plain]


def test_codec_a_batch_of_messages_that_fit_alone_is_split_down_to_plain_frames() -> None:
    limit = MIN_MAX_FRAME_SIZE
    text = largest_text(limit)
    items = [columns_item(Kind.CALL, "p", [1, 2, 3], [text_column([text] * 3)], 3),
             [Kind.SIGNAL, ["p", text]], Cancel(9).to_wire()]
    frames = encode_items(items, limit)
    assert all(len(data) - HEADER_SIZE <= limit for data in frames)
    got = [item for data in frames for item in decode_one(data[HEADER_SIZE:]).items]
    assert got == [[Kind.CALL, i, ["p", text]] for i in (1, 2, 3)] + items[1:]


def test_codec_too_large_errors_name_the_item_its_size_and_apt_advice() -> None:
    limit = MIN_MAX_FRAME_SIZE
    error = Error(id=3, code=30, type_name="RuntimeError", message="e" * 5000).to_wire()
    with pytest.raises(LocalProtocolError) as info:
        encode_items([error], limit)
    size = len(cbor2.dumps(error))
    assert str(info.value) == (
        f"an error frame (RuntimeError, code 30) of {size:,} bytes does not fit the "
        f"peer's {limit:,}-byte frame limit"  # (no vesicle can carry an error frame)
    )
    with pytest.raises(LocalProtocolError, match=r"^a reply \(p\) of 5,0\d\d bytes does not "
                       r"fit the peer's 4,096-byte frame limit; send large bytes as a vesicle"):
        encode_items([[Kind.REPLY, 1, ["p", [b"x" * 5000]]]], limit)
    with pytest.raises(LocalProtocolError, match=r"^a signal \(p\) .*only bytes fields can "
                       r"travel outside a frame, as vesicles"):
        encode_items([[Kind.SIGNAL, ["p", "x" * 5000]]], limit)


# ---------------------------------------------------------------------------
# Huge integers from a peer: the right error, and a message that says why.

HUGE = 2 ** (8 * 2000) - 1  # 4,817 decimal digits: more than Python will print

HUGE_INTS: list[tuple[str, object, type[RemoteProtocolError], str]] = [
    ("frame kind", [HUGE], UnknownFrameKind, "unknown frame kind an integer of 16,000 bits"),
    ("negative frame kind", [-HUGE], UnknownFrameKind, "a negative integer of 16,000 bits"),
    ("kind in a batch", [Kind.BATCH, [[HUGE, 1]]], UnknownFrameKind, "integer of 16,000 bits"),
    ("call id", [Kind.CALL, HUGE, ["p"]], MalformedFrame, "call id must be in 1..2**63-1"),
    ("reply id", [Kind.REPLY, HUGE, None], MalformedFrame, "reply id must be in"),
    ("error id", [Kind.ERROR, HUGE, 30, "X", "y", None], MalformedFrame, "error id must be"),
    ("error code", [Kind.ERROR, None, HUGE, "X", "y", None], MalformedFrame, "error code"),
    ("cancel id", [Kind.CANCEL, HUGE], MalformedFrame, "cancel id must be in"),
    ("columns kind", [Kind.COLUMNS, HUGE, 1, "p", [1], []], MalformedFrame,
     "carries calls, replies or signals"),
    ("columns count", [Kind.COLUMNS, 1, HUGE, "p", [1], []], MalformedFrame,
     "count must be positive"),
    ("call id in a list", [Kind.CALL, [HUGE], ["p"]], MalformedFrame,
     "got a list holding an integer too long to show"),
    ("hello version", [Kind.HELLO, HUGE, "x", {}, {}], HandshakeError, "hello version"),
    ("hello max_frame_size", [Kind.HELLO, 1, "x", {}, {"max_frame_size": HUGE}],
     HandshakeError, "hello option max_frame_size must be an integer in 0..2**63-1"),
    ("hello sessions", [Kind.HELLO, 1, "x", {}, {"sessions": HUGE}], HandshakeError,
     "sessions must be a boolean"),
    ("vesicle index", [Kind.REPLY, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [-HUGE, 1])]],
     MalformedFrame, "vesicle index a negative integer of 16,000 bits out of order"),
    ("vesicle length", [Kind.REPLY, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, HUGE])]],
     MalformedFrame, "vesicle length an integer of 16,000 bits is out of range"),
    ("packed bytes count", [Kind.COLUMNS, Kind.REPLY, 1, "p", [1],
                            [cbor2.CBORTag(TAG_BYTES_COLUMN, [HUGE, b"ab"])]],
     MalformedFrame, "a packed bytes column of an integer of 16,000 bits values"),
]


@pytest.mark.parametrize(
    ("obj", "error", "text"), [pytest.param(o, e, t, id=n) for n, o, e, t in HUGE_INTS]
)
def test_codec_a_huge_integer_gets_its_own_error_and_a_message_naming_it(
    obj: object, error: type[RemoteProtocolError], text: str
) -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(cbor2.dumps(obj)))
    with pytest.raises(error) as info:
        decoder.next_frame()
    assert type(info.value) is error  # (it was MALFORMED_FRAME for a huge kind)
    message = str(info.value)
    assert text in message
    assert "integer too long to show" in message or "integer of 16,000 bits" in message
    assert "limit" not in message and len(message) < 200  # not Python's ValueError text


def test_codec_show_value_is_short_and_never_raises() -> None:
    from cellmesh.wire.codec import show_value

    assert show_value(2**63 - 1) == "9223372036854775807"
    assert show_value(-(2**128) + 1) == str(-(2**128) + 1)
    assert show_value(2**128) == "an integer of 129 bits"
    assert show_value(-HUGE) == "a negative integer of 16,000 bits"
    assert show_value({"a": [HUGE]}) == "a dict holding an integer too long to show"
    assert show_value("abc") == "'abc'" and show_value(True) == "True"
    long = show_value("x" * 10_000)
    assert len(long) == 200 and long.endswith("...")
