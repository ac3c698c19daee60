"""Column forms: how a column of values packs into one CBOR item and back.

Pure (no I/O). RFC 8746 typed arrays carry int and float columns; the packed
text and bytes columns of docs/protocol.md section 11.3 carry ``str`` and
fixed-width ``bytes`` columns. Encoders return None (or raise, for typed
arrays) when a column does not fit a form, so the caller sends a plain
array; decoders turn a tag's content back into the plain list it means and
raise :class:`~cellmesh.errors.MalformedFrame` for anything else, never
producing more values than the frame has bytes.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Callable
from typing import Any, Final

import cbor2

from ..errors import MalformedFrame
from ._cliptext import show_value

MAX_ID: Final = 2**63 - 1
#: RFC 8746 typed arrays accepted (and sent in columnar frames): uint64, sint64
#: and float64, little endian. They decode to plain lists of int or float.
TAG_UINT64_LE: Final = 71
TAG_SINT64_LE: Final = 79
TAG_FLOAT64_LE: Final = 86
TYPED_ARRAYS: Final = {TAG_UINT64_LE: "Q", TAG_SINT64_LE: "q", TAG_FLOAT64_LE: "d"}
_BIG_ENDIAN_HOST: Final = sys.byteorder == "big"
#: Packed text column: one text string, the values joined by U+0000 (protocol.md 11.3).
TAG_TEXT_COLUMN: Final = 1_667_591_277
#: Packed bytes column: ``[count, data]``, ``count`` values of ``len(data) // count`` bytes.
TAG_BYTES_COLUMN: Final = 1_667_591_278
#: Bytes values cut per ``struct.unpack`` call when decoding a packed bytes column.
_UNPACK_CHUNK: Final = 1024



def typed_array(values: list[Any], tag: int) -> cbor2.CBORTag:
    """An RFC 8746 little-endian typed array of ``values`` (uint64, sint64 or float64).

    Raises OverflowError (uint64/sint64 out of range) or TypeError (not a
    number): callers fall back to a plain CBOR array.
    """
    packed = array.array(TYPED_ARRAYS[tag], values)
    if _BIG_ENDIAN_HOST:
        packed.byteswap()
    return cbor2.CBORTag(tag, packed.tobytes())


def text_column(values: list[str]) -> cbor2.CBORTag | None:
    """The packed form of a text column, or None if a value holds U+0000 (send it plain)."""
    joined = "\0".join(values)
    if joined.count("\0") != len(values) - 1:
        return None
    return cbor2.CBORTag(TAG_TEXT_COLUMN, joined)


def bytes_column(values: list[Any]) -> cbor2.CBORTag | None:
    """The packed form of a column of byte strings that all have one non-zero length,
    or None (send it plain)."""
    if not values:
        return None
    widths = set(map(len, values))
    if len(widths) != 1 or 0 in widths:
        return None
    return cbor2.CBORTag(TAG_BYTES_COLUMN, [len(values), b"".join(values)])


def slice_column(column: Any, lo: int, hi: int) -> Any:
    if isinstance(column, cbor2.CBORTag):
        if column.tag == TAG_TEXT_COLUMN:
            packed = text_column(column.value.split("\0")[lo:hi])
            assert packed is not None  # a slice of a valid column is valid
            return packed
        if column.tag == TAG_BYTES_COLUMN:
            count, data = column.value
            width = len(data) // count
            return cbor2.CBORTag(column.tag, [hi - lo, data[lo * width : hi * width]])
        return cbor2.CBORTag(column.tag, column.value[lo * 8 : hi * 8])  # 8-byte elements
    return column[lo:hi]


def typed_array_values(data: object, typecode: str) -> list[Any]:
    if type(data) is not bytes or len(data) % 8:
        raise MalformedFrame("a typed array must wrap a byte string of 8-byte elements")
    values = array.array(typecode)
    values.frombytes(data)
    if _BIG_ENDIAN_HOST:
        values.byteswap()
    result = values.tolist()
    if typecode == "Q" and result and max(result) > MAX_ID:
        raise MalformedFrame("a uint64 typed array holds a value above 2**63-1")
    return result


def bytes_column_values(
    value: object, charge: Callable[[int, str], None] | None = None
) -> list[bytes]:
    """The values of a packed bytes column ``[count, data]`` (MalformedFrame if bad).

    ``charge(cost, what)``, when given, is told what the values will cost in
    memory (estimated bytes) before they are made; it raises to refuse.
    """
    if (
        (type(value) is not list and type(value) is not tuple)
        or len(value) != 2
        or type(value[0]) is not int
        or type(value[1]) is not bytes
    ):
        raise MalformedFrame("a packed bytes column must wrap [count, data]")
    count, data = value
    # count <= len(data): every value has at least one byte, so a small frame
    # can never decode into a huge list.
    if not 0 < count <= len(data) or len(data) % count:
        raise MalformedFrame(
            f"a packed bytes column of {show_value(count)} values cannot hold {len(data)} bytes"
        )
    width = len(data) // count
    if charge is not None:
        # A one-byte value is the interpreter's cached object: only its slot.
        charge(80 + count * (8 if width == 1 else 56 + width), "a packed bytes column")
    out: list[bytes] = []
    step = width * _UNPACK_CHUNK
    fmt = f"{width}s" * _UNPACK_CHUNK
    for offset in range(0, len(data), step):
        piece = data[offset : offset + step]
        if len(piece) == step:
            out += struct.unpack(fmt, piece)
        else:
            out += struct.unpack(f"{width}s" * (len(piece) // width), piece)
    return out
