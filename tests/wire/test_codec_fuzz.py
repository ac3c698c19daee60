"""Fuzzing the frame decoder (house rule 10).

Invariant under test, for ANY sequence of bytes fed in ANY chunking:
``FrameDecoder.next_frame`` returns a DecodedFrame whose items validate, or
NEED_DATA, or raises a ``RemoteProtocolError`` subclass -- never anything
else. After it raised once, it keeps raising (the connection is dead).

Second invariant, for bombs (a frame repeating one item pattern, small or
large, maybe behind a string): what decoding allocates stays within the
frame's decode budget (tracemalloc); and a frame decoded without the budget
scan is refused or accepted exactly as the same item in a frame large enough
to be scanned.

Inputs: arbitrary bytes; mutated valid frames (bit flips, truncation,
insertion, deletion, header rewrites); a valid header around random CBOR
built with ``st.recursive`` (any tags including 2/3/28/29, the vesicle tag
and RFC 8746 typed arrays, floats, nested arrays and maps); columns frames
(kind 9); and raw CBOR token streams that declare huge lengths, use
indefinite-length items, share values cyclically (tags 28/29) or nest deeper
than MAX_DEPTH. Deterministic: ``derandomize=True``.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.errors import RemoteProtocolError
from cellmesh.wire import _budget
from cellmesh.wire.codec import (
    MAX_DEPTH,
    MAX_ID,
    MIN_MAX_FRAME_SIZE,
    NEED_DATA,
    TAG_SINT64_LE,
    VESICLE_TAG,
    DecodedFrame,
    FrameDecoder,
    Kind,
    columns_item,
    frame_bytes,
    typed_array,
    validate_frame,
)

FUZZ = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

LIMIT = 64 * 1024


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def check_invariant(stream: bytes, cuts: list[int], max_frame_size: int = LIMIT) -> None:
    """Feed ``stream`` split at ``cuts``; only frames, NEED_DATA or protocol errors."""
    decoder = FrameDecoder(max_frame_size=max_frame_size)
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    for start, end in itertools.pairwise(bounds):
        decoder.feed(stream[start:end])
        try:
            while (frame := decoder.next_frame()) is not NEED_DATA:
                assert isinstance(frame, DecodedFrame)
                assert 0 < frame.size <= max_frame_size
                assert frame.vesicles >= 0
                assert frame.items
                for item in frame.items:
                    # Every item handed out is a non-batch frame that validates again.
                    assert type(item) is list and type(item[0]) is int
                    assert item[0] != Kind.BATCH
                    validate_frame(item)
        except RemoteProtocolError:
            # The decoder is now broken for good.
            try:
                decoder.next_frame()
            except RemoteProtocolError:
                return
            raise AssertionError("decoder accepted input after raising") from None


cut_lists = st.lists(st.integers(0, 2**16), max_size=8)

# ---------------------------------------------------------------------------
# Valid frames to mutate.

_ids = st.integers(1, MAX_ID)
_body = st.builds(
    lambda name, fields: [name, *fields],
    st.text(max_size=8),
    st.lists(st.integers() | st.text(max_size=8) | st.binary(max_size=8) | st.none(), max_size=4),
)
valid_items = st.one_of(
    st.builds(lambda i, b: [Kind.CALL, i, b], _ids, _body),
    st.builds(lambda i, b: [Kind.REPLY, i, b], _ids, st.none() | _body),
    st.builds(
        lambda i, c: [Kind.ERROR, i, c, "T", "msg", None], st.none() | _ids, st.integers(0, 40)
    ),
    st.builds(lambda b: [Kind.SIGNAL, b], _body),
    st.builds(lambda i: [Kind.CANCEL, i], _ids),
    st.builds(lambda c, b: [Kind.CREDIT, c, b], st.integers(0, MAX_ID), st.integers(0, MAX_ID)),
    st.builds(lambda c: [Kind.GOAWAY, c, "bye"], st.integers(0, 40)),
    st.just([Kind.HELLO, 1, "peer", {"a.B": "0123456789abcdef"}, {"max_frame_size": 65536}]),
    st.just([Kind.CALL, 1, ["p", cbor2.CBORTag(VESICLE_TAG, [0, 4096])]]),
    st.builds(
        lambda n, i, c: columns_item(Kind.CALL, "p", list(range(i, i + n)),
                                     [typed_array(c[:n] + [0] * (n - len(c[:n])), TAG_SINT64_LE),
                                      ["x"] * n], n),
        st.integers(1, 5), _ids.filter(lambda i: i < MAX_ID - 10),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
    ),
    st.builds(lambda n: columns_item(Kind.SIGNAL, "p", None, [[1.5] * n], n), st.integers(1, 5)),
)
valid_frames = st.one_of(
    valid_items.map(frame_bytes),
    st.lists(valid_items.filter(lambda i: i[0] != Kind.HELLO), min_size=2, max_size=4).map(
        lambda items: frame_bytes([Kind.BATCH, items])
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(valid_frames, min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header", "byte"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "header":
            # Keep the payload, lie about its length.
            data[0:4] = header(draw(st.integers(0, 2**32 - 1)))
    return bytes(data)


# ---------------------------------------------------------------------------
# Random CBOR values, including tags, built with st.recursive.

_tag_numbers = st.sampled_from(
    [0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 52, 54, 64, 71, 75, 79, 86,
     100, 256, 258, 260, 261, 1004, 55799, VESICLE_TAG, 2**32, 2**63]
) | st.integers(0, 2**64 - 1)
_keys = st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.binary(max_size=6)
cbor_leaves = (
    st.none()
    | st.booleans()
    | st.just(cbor2.undefined)
    | st.integers(0, 255).filter(lambda v: v not in range(20, 32)).map(cbor2.CBORSimpleValue)
    | st.integers(-(2**64), 2**64 - 1)
    | st.integers(min_value=2**64, max_value=2**300)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.sampled_from(list(Kind)).map(int)
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(_keys, children, max_size=4)
    | st.builds(cbor2.CBORTag, _tag_numbers, children)
    | st.builds(
        lambda i, n: cbor2.CBORTag(VESICLE_TAG, [i, n]), st.integers(-1, 3), st.integers(-1, 2**63)
    )
    | st.builds(lambda k, rest: [k, *rest], st.integers(-1, 10), st.lists(children, max_size=6))
    # RFC 8746 typed arrays, well-formed or not (71/79/86 are accepted)
    | st.builds(cbor2.CBORTag, st.sampled_from([64, 71, 72, 75, 79, 86, 87]),
                st.binary(max_size=40) | children),
    max_leaves=25,
)


def dumps(value: Any) -> bytes:
    return cbor2.dumps(value)


# ---------------------------------------------------------------------------
# Raw CBOR token streams: what an encoder would never produce.


def _head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    raise ValueError(arg)


_tokens = st.one_of(
    # any head: major type and argument, including lengths far beyond the frame
    st.builds(_head, st.integers(0, 7), st.integers(0, 2**64 - 1)),
    st.builds(_head, st.integers(2, 5), st.sampled_from([2**31, 2**32 - 1, 2**63, 2**64 - 1])),
    # indefinite-length starts and the break byte
    st.sampled_from([b"\x5f", b"\x7f", b"\x9f", b"\xbf", b"\xff"]),
    # reserved additional information 28-30 in every major type
    st.builds(lambda m, i: bytes([m << 5 | i]), st.integers(0, 7), st.integers(28, 30)),
    # value sharing: shareable(28) and sharedref(29) heads
    st.sampled_from([b"\xd8\x1c", b"\xd8\x1d\x00", b"\xd8\x1d\x01", b"\xd8\x19\x00"]),
    st.builds(lambda t: _head(6, t), _tag_numbers),
    st.binary(min_size=1, max_size=4),
)
token_streams = st.lists(_tokens, max_size=20).map(b"".join)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """Nesting of arrays/maps/tags beyond MAX_DEPTH, optionally inside a valid envelope."""
    depth = draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH * 4))
    opener = draw(st.sampled_from([b"\x81", b"\xa1\x00", b"\xc2", b"\xd8\x1c\x81", b"\x9f"]))
    core = opener * depth + b"\x00"
    if draw(st.booleans()):
        core = b"\x83\x02\x01\x82\x61p" + core  # [2, 1, ["p", <deep>]]
    return core


# ---------------------------------------------------------------------------
# The fuzz tests.


@FUZZ
@given(data=st.binary(max_size=512), cuts=cut_lists)
def test_fuzz_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    check_invariant(data, cuts)
    check_invariant(data, cuts, max_frame_size=MIN_MAX_FRAME_SIZE)


@FUZZ
@given(payload=st.binary(min_size=1, max_size=512), cuts=cut_lists)
def test_fuzz_valid_header_around_arbitrary_bytes(payload: bytes, cuts: list[int]) -> None:
    check_invariant(header(len(payload)) + payload, cuts)


@FUZZ
@given(data=mutated(), cuts=cut_lists)
def test_fuzz_mutated_valid_frames(data: bytes, cuts: list[int]) -> None:
    check_invariant(data, cuts)


@FUZZ
@given(value=cbor_values, cuts=cut_lists)
def test_fuzz_valid_header_around_random_cbor(value: Any, cuts: list[int]) -> None:
    payload = dumps(value)
    check_invariant(header(len(payload)) + payload, cuts)


@FUZZ
@given(
    kind=st.integers(-1, 10),
    fields=st.lists(cbor_values, max_size=6),
    cuts=cut_lists,
)
def test_fuzz_frame_kinds_with_random_fields(kind: int, fields: list[Any], cuts: list[int]) -> None:
    check_invariant(frame_bytes([kind, *fields]), cuts)
    check_invariant(frame_bytes([Kind.BATCH, [[kind, *fields]]]), cuts)


@FUZZ
@given(tokens=token_streams, prefix=st.sampled_from([b"", b"\x83\x02\x01", b"\x82\x08\x81"]),
       cuts=cut_lists)
def test_fuzz_raw_cbor_token_streams(tokens: bytes, prefix: bytes, cuts: list[int]) -> None:
    payload = prefix + tokens
    if payload:
        check_invariant(header(len(payload)) + payload, cuts)


@FUZZ
@given(payload=deep(), cuts=cut_lists)
def test_fuzz_nesting_beyond_the_depth_limit(payload: bytes, cuts: list[int]) -> None:
    check_invariant(header(len(payload)) + payload, cuts)


@FUZZ
@given(
    frames=st.lists(valid_frames | mutated() | cbor_values.map(lambda v: frame_bytes([v])),
                    min_size=1, max_size=4),
    cuts=cut_lists,
)
def test_fuzz_streams_of_mixed_frames(frames: list[bytes], cuts: list[int]) -> None:
    check_invariant(b"".join(frames), cuts)


def test_fuzz_cyclic_shared_values_are_refused() -> None:
    # 28(["p", 29(0)]): a value that contains itself.
    payload = b"\x83\x02\x01\xd8\x1c\x82\x61p\xd8\x1d\x00"
    check_invariant(header(len(payload)) + payload, [])


def test_fuzz_huge_bignum_in_a_small_frame_is_bounded_by_the_frame() -> None:
    digits = b"\xff" * (MIN_MAX_FRAME_SIZE - 16)
    payload = b"\x83\x02\x01\x82\x61p\xc2\x59" + len(digits).to_bytes(2, "big") + digits
    check_invariant(header(len(payload)) + payload, [], max_frame_size=MIN_MAX_FRAME_SIZE)


# ---------------------------------------------------------------------------
# The decode budget (wire/_budget.py): garbage in, only protocol errors out, and
# never more memory than the budget, whatever the frame's size and shape.

#: Item patterns a bomb repeats: containers dense enough to exceed the budget,
#: scalars that are not, and mixes.
_bomb_patterns = st.sampled_from([
    b"\x80", b"\xa0", b"\x81\x80", b"\xa1\x00\x00", b"\x83\x80\x80\x80", b"\x81\x81\x80",
    b"\x25", b"\xe0", b"\x00", b"\xf6", b"\x61a", b"\x42ab", b"\x19\x01\x01", b"\xf9\x3c\x00",
    b"\xa1\x81\x00\x00", b"\xa1\xc2\x41\x01\x00", b"\xd8\x47\x48" + bytes(8),
]) | st.binary(min_size=1, max_size=6)


@st.composite
def bombs(draw: st.DrawFn) -> bytes:
    """One frame: an array of a repeated pattern, maybe behind a string, small or large."""
    pattern = draw(_bomb_patterns)
    size = draw(st.sampled_from([200, 4000, 60_000, 70_000, 300_000]))
    count = max(1, size // len(pattern))
    body = pattern * count
    padding = b""
    if draw(st.booleans()):
        padding = dumps("x" * draw(st.sampled_from([10, 100, 100_000])))
    items = count + (1 if padding else 0)
    if draw(st.booleans()):
        items += draw(st.integers(-2, 2))  # lie about the count
    payload = _head(4, max(items, 0)) + padding + body
    if draw(st.booleans()):
        payload = b"\x83\x01\x01\x82\x61p" + payload  # as a call's field
    return header(len(payload)) + payload


def check_bounded(stream: bytes, cuts: list[int]) -> None:
    """check_invariant, measuring what decoding allocates beyond the stream itself."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        check_invariant(stream, cuts, max_frame_size=16 * 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # The decoder's buffer, a copy of the payload, then at most the budget.
    assert peak <= 3 * len(stream) + _budget.allowance(len(stream)) + 65536, peak


BOMB_FUZZ = settings(FUZZ, max_examples=60)


@BOMB_FUZZ
@given(stream=bombs(), cuts=st.lists(st.integers(0, 2**20), max_size=3))
def test_fuzz_bombs_only_raise_protocol_errors_and_stay_in_budget(
    stream: bytes, cuts: list[int]
) -> None:
    # After a first frame: only the hello is held to 64 KiB.
    check_bounded(frame_bytes([Kind.CREDIT, 0, 0]) + stream, cuts)


@FUZZ
@given(value=cbor_values)
def test_fuzz_the_scan_agrees_with_cbor2_on_the_profile(value: Any) -> None:
    """A frame decoded unscanned and the same item in a scanned frame (padded past
    SCAN_ABOVE) are refused, or accepted, alike."""
    small = frame_bytes([Kind.REPLY, 1, ["p", value]])
    large = frame_bytes([Kind.REPLY, 1, ["p", value, "x" * (_budget.SCAN_ABOVE + 16)]])
    verdicts = []
    for stream in (small, large):
        decoder = FrameDecoder()
        decoder.feed(frame_bytes([Kind.CREDIT, 0, 0]) + stream)
        decoder.next_frame()
        try:
            frame = decoder.next_frame()
            verdicts.append(isinstance(frame, DecodedFrame))
        except RemoteProtocolError:
            verdicts.append(False)
    assert verdicts[0] == verdicts[1], (value, verdicts)
