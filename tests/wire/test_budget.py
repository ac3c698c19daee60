"""The decode budget (cellmesh/wire/_budget.py): no frame decodes past 40x its size.

Every bomb here is fed to a real :class:`FrameDecoder` (past its hello, so
the 16 MiB frame limit applies) and must be refused with ``MalformedFrame``
while ``tracemalloc`` shows that nothing in proportion to the frame was
allocated; every legitimate shape must decode. The cost model itself is
checked against ``tracemalloc`` on hypothesis-generated items.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.errors import MalformedFrame
from cellmesh.wire import _budget, _cbor
from cellmesh.wire.codec import (
    NEED_DATA,
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    DecodedFrame,
    FrameDecoder,
    Hello,
    Kind,
    bytes_column,
    columns_item,
    frame_bytes,
    text_column,
    typed_array,
)

MIB = 1024 * 1024


def opened(max_frame_size: int = 16 * MIB) -> FrameDecoder:
    """A decoder past its first frame (the hello), as a connection's is."""
    decoder = FrameDecoder(max_frame_size=max_frame_size)
    decoder.feed(frame_bytes([Kind.CREDIT, 0, 0]))
    assert decoder.next_frame() is not NEED_DATA
    return decoder


def array_of(count: int, body: bytes) -> bytes:
    """A CBOR array head of ``count`` entries followed by ``body``."""
    return b"\x9a" + struct.pack(">I", count) + body


def decode_traced(payload: bytes) -> tuple[DecodedFrame | None, BaseException | None, int]:
    """Decode one frame holding ``payload``; (frame, error, peak bytes allocated meanwhile)."""
    decoder = opened()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            frame = decoder.next_frame()
        except MalformedFrame as exc:
            return None, exc, tracemalloc.get_traced_memory()[1] - base
        assert isinstance(frame, DecodedFrame)
        return frame, None, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------
# Bombs.

N = 16 * MIB - 64

BOMBS: dict[str, Callable[[], bytes]] = {
    # The bomb: 16 MiB of empty arrays (1.25 GB, 4-7 s of CPU, before).
    "empty arrays": lambda: array_of(N, b"\x80" * N),
    "empty maps": lambda: array_of(N, b"\xa0" * N),
    "one-entry maps": lambda: array_of(N // 3, b"\xa1\x00\x00" * (N // 3)),
    "arrays of one empty array": lambda: array_of(N // 2, b"\x81\x80" * (N // 2)),
    "nested triples": lambda: array_of(N // 4, b"\x83\x80\x80\x80" * (N // 4)),
    "a call whose body is the bomb": lambda: b"\x83\x01\x01\x82\x61p" + array_of(N, b"\x80" * N),
    "simple values": lambda: array_of(N, b"\xe0" * N),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_budget_bombs_are_refused_before_they_are_allocated(name: str) -> None:
    payload = BOMBS[name]()
    frame, error, peak = decode_traced(payload)
    assert frame is None and error is not None
    assert "decode budget" in str(error) or "bytes per byte" in str(error)
    # Nothing in proportion to the 16 MiB frame (1.25 GB before): the scan
    # allocates no objects per item.
    assert peak < MIB, f"{name}: {peak} bytes allocated while refusing it"


def test_budget_a_bomb_is_refused_after_a_short_prefix() -> None:
    """The budget holds for every prefix: the scan stops within the first few hundred KB."""
    with pytest.raises(MalformedFrame) as info:
        _budget.scan(memoryview(array_of(N, b"\x80" * N)))
    refused_after = int(str(info.value).split("refused after ")[1].split()[0])
    assert refused_after < (_budget.DECODE_SLACK // 40) * 2


def test_budget_bomb_hidden_behind_a_cheap_string_is_still_refused() -> None:
    """Cheap bytes earn budget, but never enough for 80 bytes per byte of containers."""
    text = "x" * (N // 2)
    body = cbor2.dumps(text)
    payload = array_of(1 + N // 2, body + b"\x80" * (N // 2))
    frame, error, peak = decode_traced(payload)
    assert frame is None and error is not None
    assert peak < MIB


def test_budget_frames_at_the_hello_size_limit_need_no_scan() -> None:
    """A frame of SCAN_ABOVE bytes cannot exceed its budget, whatever it holds."""
    worst = 80 * _budget.SCAN_ABOVE  # an empty array per byte
    assert worst <= _budget.allowance(_budget.SCAN_ABOVE)
    count = _budget.SCAN_ABOVE - 5
    _, error, _ = decode_traced(array_of(count, b"\x80" * count))
    assert error is None or "decode budget" not in str(error)  # refused for its shape only


# --------------------------------------------------------------------------
# Legitimate frames decode, small and large (scanned).


def _pings(n: int) -> list[Any]:
    return [Kind.BATCH, [[Kind.CALL, i, ["bench.Ping", i]] for i in range(1, n + 1)]]


LEGIT: dict[str, Callable[[], list[Any]]] = {
    "4096 calls in a batch": lambda: _pings(4096),
    "16384 null replies": lambda: [Kind.BATCH, [[Kind.REPLY, i, None] for i in range(1, 16385)]],
    "fieldless signals": lambda: [Kind.BATCH, [[Kind.SIGNAL, ["app.Tick"]]] * 20000],
    "points": lambda: [Kind.BATCH, [[Kind.CALL, i, ["example.Point", 3, -4, "p", ["a", "b"]]]
                                    for i in range(1, 8001)]],
    "columns with empty list fields": lambda: columns_item(
        Kind.CALL, "t.Lists", list(range(1, 4097)), [[[]] * 4096, [[]] * 4096, [[]] * 4096], 4096
    ),
    "typed and packed columns": lambda: columns_item(
        Kind.CALL, "t.Rec", list(range(1, 4097)),
        [typed_array(list(range(4096)), TAG_SINT64_LE),
         typed_array([0.5] * 4096, TAG_FLOAT64_LE),
         text_column([f"name{i}" for i in range(4096)]),
         bytes_column([i.to_bytes(2, "big") for i in range(4096)])],
        4096,
    ),
    "a million small ints": lambda: [Kind.CALL, 1, ["t.Ints", list(range(-5, 20)) * 40000]],
    "small negative ints": lambda: [Kind.CALL, 1, ["t.Ints", [-10] * 500000]],
    "a dict keyed by ints": lambda: [Kind.CALL, 1, ["t.Map", {i: str(i) for i in range(50000)}]],
    "many short strings": lambda: [Kind.CALL, 1, ["t.Strs", ["ab", "c", ""] * 100000]],
    "an 8 MiB blob": lambda: [Kind.CALL, 1, ["t.Blob", bytes(8 * MIB)]],
}


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_budget_legitimate_frames_decode(name: str) -> None:
    item = LEGIT[name]()
    payload = cbor2.dumps(item)
    frame, error, _ = decode_traced(payload)
    assert error is None, f"{name} refused: {error}"
    assert frame is not None


def test_budget_small_frames_with_integer_keys_decode_through_the_scan() -> None:
    """A small frame keyed by integers fails the strict decoder, is scanned, then decodes."""
    frame = decode_traced(cbor2.dumps([Kind.CALL, 7, ["t.Map", {1: "a", -3: "b", 2**63: "c"}]]))
    assert frame[1] is None and frame[0] is not None
    assert frame[0].items[0][2][1] == {1: "a", -3: "b", 2**63: "c"}


def test_budget_a_hello_listing_1400_proteins_fits_the_hello_limit() -> None:
    proteins = {f"app.module{i:04d}.Message": f"{i:016x}" for i in range(1400)}
    data = frame_bytes(Hello(version=1, name="cell", proteins=proteins).to_wire())
    assert len(data) <= 64 * 1024
    decoder = FrameDecoder()
    decoder.feed(data)
    assert isinstance(decoder.next_frame(), DecodedFrame)


# --------------------------------------------------------------------------
# Map keys: no arrays, maps or tags (their hashes can be made to collide).

BAD_KEYS = {
    "an array": b"\xa1\x82\x01\x02\x00",
    "a map": b"\xa1\xa1\x01\x02\x00",
    "a bignum": b"\xa1\xc2\x49\x01" + bytes(8) + b"\x00",
    "a typed array": b"\xa1\xd8\x47\x48" + bytes(8) + b"\x00",
    "a vesicle": b"\xa1\xda\x63\x65\x6c\x6c\x82\x00\x01\x00",
}


@pytest.mark.parametrize("large", [False, True], ids=["small frame", "scanned frame"])
@pytest.mark.parametrize("what", sorted(BAD_KEYS))
def test_budget_containers_and_tags_as_map_keys_are_malformed(what: str, large: bool) -> None:
    pad = cbor2.dumps("x" * (70 * 1024)) if large else cbor2.dumps("x")
    payload = b"\x84\x01\x01\x83\x61p" + pad + BAD_KEYS[what] + b"\xf6"
    frame, error, _ = decode_traced(payload)
    assert frame is None and isinstance(error, MalformedFrame)


@pytest.mark.parametrize("large", [False, True], ids=["small frame", "scanned frame"])
def test_budget_scalar_map_keys_are_fine(large: bool) -> None:
    keys: dict[Any, int] = {"t": 1, b"b": 2, 5: 3, -7: 4, 2.5: 5, None: 6, True: 7}
    pad = "x" * (70 * 1024) if large else "x"
    frame, error, _ = decode_traced(cbor2.dumps([Kind.CALL, 1, ["p", pad, keys]]))
    assert error is None and frame is not None
    assert frame.items[0][2][2] == keys


def test_budget_colliding_tuple_keys_are_refused_before_the_map_is_built() -> None:
    """2000 tuple keys (a collision attack needs them): refused at the first one."""
    entries = b"".join(b"\x81\x19" + struct.pack(">H", i) + b"\x00" for i in range(2000))
    payload = b"\x83\x01\x01\x82\x61p\xb9" + struct.pack(">H", 2000) + entries
    frame, error, peak = decode_traced(payload)
    assert frame is None and isinstance(error, MalformedFrame)
    assert "key" in str(error)
    assert peak < 256 * 1024


# --------------------------------------------------------------------------
# The scan agrees with cbor2 on the profile (nesting, lengths, trailing bytes).

PREFIX = b"\x83\x02\x01\x83\x61p"  # [2, 1, ["p", <nesting>, <padding>]]: a reply
PAD = cbor2.dumps("x" * (70 * 1024))


@pytest.mark.parametrize("levels, inner, ok", [
    (62, b"\x00", True),  # 64 levels of arrays with content: fine
    (63, b"\x00", False),
    (62, b"\x80", True),  # an empty array one level deeper: fine (cbor2's count)
    (61, b"\xc2\x41\x01", True),  # a tag at level 64
    (62, b"\xc2\x41\x01", False),
])
@pytest.mark.parametrize("large", [False, True], ids=["small frame", "scanned frame"])
def test_budget_nesting_limit_matches_cbor2(levels: int, inner: bytes, ok: bool,
                                            large: bool) -> None:
    payload = PREFIX + b"\x81" * levels + inner + (PAD if large else b"\xf6")
    _, error, _ = decode_traced(payload)
    assert (error is None) is ok, error


@pytest.mark.parametrize("payload", [
    b"\x9f\xff",  # indefinite array
    b"\x5f\x41\x00\xff",  # indefinite bytes
    b"\x1c",  # reserved head
    b"\x9a\x00\x10\x00\x00\x00",  # declares more entries than the frame has bytes
    b"\x7a\x00\x10\x00\x00abc",  # a string running past the end
    b"\x80\x80",  # a second item
])
def test_budget_scan_refuses_what_cbor2_refuses(payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        _budget.scan(memoryview(payload))
    frame, error, _ = decode_traced(payload)
    assert frame is None and isinstance(error, MalformedFrame)


# --------------------------------------------------------------------------
# The cost model is an upper bound of what cbor2 allocates.

leaves = (
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
    | st.integers(2**64, 2**100) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.binary(max_size=12)
)
values = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=6)
    | st.dictionaries(st.text(max_size=6) | st.integers(-(2**63), 2**63), kids, max_size=6),
    max_leaves=40,
)


@settings(max_examples=200, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(values, min_size=1, max_size=30))
def test_budget_cost_model_bounds_what_cbor2_allocates(value: list[Any]) -> None:
    payload = cbor2.dumps(value)
    estimate = _budget.scan(memoryview(payload))
    decoder = _cbor.PayloadDecoder()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        decoded = decoder.decode(memoryview(payload))
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert decoded == value
    # The decoder keeps a copy of the payload and a read buffer: allowed for.
    assert used <= estimate + len(payload) + 8192


# --------------------------------------------------------------------------
# Whatever the decoder raises is a malformed frame; interrupts pass through.


class PanicException(BaseException):
    """Stands in for pyo3's PanicException (a BaseException cbor2's Rust code may raise)."""


PanicException.__module__ = "pyo3_runtime"
VESICLE_CALL = frame_bytes([Kind.CALL, 1, ["p", cbor2.CBORTag(1_667_591_276, [0, 4096])]])


def test_budget_a_panic_inside_the_decoder_is_a_malformed_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def panic(self: object, tag: object, immutable: bool) -> object:
        raise PanicException("the decoder panicked")

    monkeypatch.setattr(_cbor.FrameTags, "__call__", panic)
    decoder = opened()
    decoder.feed(VESICLE_CALL)
    with pytest.raises(MalformedFrame, match="panicked"):
        decoder.next_frame()
    with pytest.raises(MalformedFrame):  # and the connection is over
        decoder.next_frame()


def test_budget_a_panic_raised_by_cbor2_itself_is_a_malformed_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Panicking:
        """Stands in for cbor2's decoder when its Rust code panics."""

        fp: object = None

        def decode(self) -> object:
            raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(_cbor, "_cbor_decoder", lambda tags, strict: Panicking())
    decoder = FrameDecoder()
    decoder.feed(frame_bytes([Kind.CANCEL, 3]))
    with pytest.raises(MalformedFrame, match="PanicException"):
        decoder.next_frame()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_budget_interrupts_raised_during_decoding_are_never_swallowed(
    monkeypatch: pytest.MonkeyPatch, interrupt: type[BaseException]
) -> None:
    def stop(self: object, tag: object, immutable: bool) -> object:
        raise interrupt

    monkeypatch.setattr(_cbor.FrameTags, "__call__", stop)
    decoder = opened()
    decoder.feed(VESICLE_CALL)
    with pytest.raises(interrupt):
        decoder.next_frame()


# --------------------------------------------------------------------------
# Tag expansions are charged before they happen.


def test_budget_packed_text_column_expansion_is_charged() -> None:
    """A 1 MiB packed text column of empty strings would be 100+ MB: refused."""
    item = [Kind.SIGNAL, ["p", cbor2.CBORTag(1_667_591_277, "\0" * MIB)]]
    frame, error, peak = decode_traced(cbor2.dumps(item))
    assert frame is None and error is not None and "budget" in str(error)
    assert peak < 4 * MIB


def test_budget_typed_array_expansion_is_charged_against_what_is_left() -> None:
    tags = _cbor.FrameTags()
    tags.allowance = 1000
    with pytest.raises(MalformedFrame, match="budget"):
        tags(cbor2.CBORTag(79, bytes(8 * 100)), False)
    tags.allowance = 10_000
    assert tags(cbor2.CBORTag(79, bytes(8 * 100)), False) == [0] * 100


@pytest.mark.parametrize("message", ["PyObject pointer is null", "index out of bounds"])
def test_a_panic_of_cbor2_out_of_memory_is_a_memory_error_not_the_peers_fault(
    message: str,
) -> None:
    """cbor2's pyo3 panic for a failed allocation is this process's state: MemoryError (the
    runtime exits as a memory kill), not MALFORMED_FRAME blaming the peer. Any other panic
    is still the peer's bytes."""
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    class Panicking:
        fp: Any = None

        def decode(self) -> Any:
            raise panic(message)

    decoder = _cbor.PayloadDecoder()
    decoder._strict = Panicking()  # type: ignore[assignment]
    payload = memoryview(cbor2.dumps([1, 2, 3]))
    if message == "PyObject pointer is null":
        with pytest.raises(MemoryError) as info:
            decoder.decode(payload)
        assert isinstance(info.value.__cause__, panic)
    else:
        with pytest.raises(MalformedFrame, match="PanicException: index out of bounds"):
            decoder.decode(payload)
