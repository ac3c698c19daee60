"""The decode budget: what one frame may cost in memory once decoded, checked before it is.

Theory of operation
-------------------
CBOR is compact and Python objects are not: the byte ``0x80`` (an empty
array) decodes to a 64-byte list, ``0xa1 0x00 0x00`` to a 224-byte dict. A
16 MiB frame of empty arrays once took a cell to 1.25 GB and froze it for
seconds. So every frame has a *decode budget*:

    estimated cost of the decoded frame  <=  DECODE_RATIO * N + DECODE_SLACK

with ``N`` the payload size. A stricter bound holds for every prefix of the
payload: ``DECODE_RATIO`` times the bytes read so far, plus the slack, where
the bytes of a string past its first 64 count once (a string costs about
1 byte per byte, so a huge one cannot pay for a bomb hidden behind it). So
a bomb is refused after a short prefix, never after walking 16 MiB.

The *cost* of an item is an upper estimate of the CPython objects it
becomes, with the allocator's rounding and the 8-byte slot that holds it in
its parent (:func:`item_cost`; ``tests/wire/test_budget.py`` checks it
against ``tracemalloc``): 80 for an array, 72 to 232, or 120 plus 48 per
entry, for a map; 8 for what the interpreter caches (integers -5 to 256,
``true``/``false``/``null``, empty and one-character strings, byte strings
of at most one byte); 40 for another integer up to 32 bits or a float, 56
up to 64 bits; 56 plus the length for a byte string; 100 plus the length
for text (enough for the widest string representation); 56 for another
simple value. Ordinary traffic costs 1x (bulk bytes, typed arrays) to about
23x (a batch of small calls or null replies). With the ratio 40 no integer,
float or string can exceed the budget (the costliest, an uncached one-byte
integer, is exactly 40 per byte): only arrays and maps denser than about
one per two bytes (and simple values other than ``false``/``true``/``null``,
which no sender emits) can, which is what a bomb needs and no protein
produces.

Two checks share the budget:

* :func:`scan` walks the CBOR head structure in pure Python before cbor2
  allocates anything. It runs on frames above :data:`SCAN_ABOVE` bytes (a
  smaller frame cannot exceed its budget, see below) and on any frame whose
  maps have keys other than text or byte strings (see the codec: cbor2 first
  decodes strictly, text and byte string keys only). Besides the budget it
  refuses arrays, maps and tags as map keys (a tuple or ``frozendict`` key
  lets an attacker pick colliding hashes: quadratic time to build one map),
  indefinite lengths, reserved heads, nesting beyond ``MAX_DEPTH`` and any
  length that runs past the frame.
* The codec's tag hook charges what a typed array or a packed column
  expands to (known from its length before it is expanded) against what
  the scan left of the budget.

A frame of at most :data:`SCAN_ABOVE` bytes is decoded unscanned: at most
80 bytes of objects per byte (an empty array per byte), so at most
``80 * SCAN_ABOVE`` = 5 MiB, within ``DECODE_RATIO * N + DECODE_SLACK``
(the tag hook still charges its expansions).

Pure: no I/O, no clock; tables are built once at import.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from ..errors import MalformedFrame

#: Estimated decoded bytes allowed per payload byte (and per byte of every prefix).
DECODE_RATIO: Final = 40
#: Estimated decoded bytes allowed beyond ``DECODE_RATIO`` per byte.
DECODE_SLACK: Final = 4 * 1024 * 1024
#: Frames larger than this are scanned before they are decoded.
SCAN_ABOVE: Final = 64 * 1024
#: Nesting limit, as cbor2 counts it: a container or tag whose content lies
#: deeper than this many levels is refused (an empty one at the next level is fine).
_MAX_DEPTH: Final = 64

# Estimated costs in bytes (CPython 3.11, 64-bit, the allocator's 16-byte
# rounding included), each with the 8-byte slot holding the item in its parent.
_SLOT: Final = 8
_INT_COST: Final = 40  # up to 2**32 (an int of 28 or 32 bytes)
_WIDE_INT_COST: Final = 56  # up to 2**64
_FLOAT_COST: Final = 40
_SIMPLE_COST: Final = 56  # a CBORSimpleValue object
_ARRAY_COST: Final = 80  # the list (64) and the rounding of its item array
_BYTES_BASE: Final = 56
_TEXT_BASE: Final = 100  # the widest header; the characters take at most their UTF-8 bytes

#: A run of one-byte items (integers -24 ..= 23, empty strings, arrays and
#: maps, simple values): an array of them is charged at C speed.
_ONE_BYTE_RUN: Final = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\x80\xa0\xe0-\xf7]+")
_ONE_BYTE: Final = frozenset(b"".join(
    bytes(range(lo, hi + 1)) for lo, hi in ((0x00, 0x17), (0x20, 0x37), (0x40, 0x40),
                                            (0x60, 0x60), (0x80, 0x80), (0xa0, 0xa0),
                                            (0xe0, 0xf7))
))
#: Shorter runs are walked item by item (the C-speed path has a fixed cost);
#: longer ones are charged in pieces of at most _RUN_MAX items.
_RUN_MIN: Final = 32
_RUN_MAX: Final = 64 * 1024
#: Budget earned by a string's first 64 bytes beyond the 1 per byte of the rest.
_LONG_STRING: Final = (DECODE_RATIO - 1) * 64
#: One-byte items that cost more than a cached object's slot, by cost: uncached
#: integers, simple values (undefined among them: counted high, it is rare).
_COSTLY_INTS: Final = bytes(range(0x25, 0x38))
_SIMPLE_VALUES: Final = bytes(range(0xe0, 0xf4)) + b"\xf7"

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from

# Head byte tables. _HEAD_LEN: bytes of the head (1, 2, 3, 5, 9), 0 for a
# reserved or indefinite head. _FAST: for a scalar whose size and cost the
# head byte alone fixes and whose cost never exceeds DECODE_RATIO per byte,
# its cost minus DECODE_RATIO * head length (so it can only lower the debt);
# None for everything else (strings, containers, tags, the few costly
# one-byte scalars).
_KIND_BYTES: Final = 2
_KIND_TEXT: Final = 3
_KIND_ARRAY: Final = 4
_KIND_MAP: Final = 5
_KIND_TAG: Final = 6
_KIND_SCALAR: Final = 7
_KIND_BAD: Final = 8


def _scalar_cost(major: int, ai: int) -> int:
    if major == 0:
        return _SLOT if ai <= 24 else _WIDE_INT_COST if ai == 27 else _INT_COST  # 0 ..= 255 cached
    if major == 1:
        return _SLOT if ai <= 4 else _WIDE_INT_COST if ai == 27 else _INT_COST  # -1 ..= -5 cached
    if ai in (20, 21, 22):  # false, true, null
        return _SLOT
    if ai in (25, 26, 27):
        return _FLOAT_COST
    return _SIMPLE_COST


def _tables() -> tuple[list[int], list[int], list[int | None], list[int]]:
    head_len: list[int] = []
    kinds: list[int] = []
    fast: list[int | None] = []
    costs: list[int] = []
    for byte in range(256):
        major, ai = byte >> 5, byte & 31
        length = 1 if ai < 24 else {24: 2, 25: 3, 26: 5, 27: 9}.get(ai, 0)
        head_len.append(length)
        if not length:
            kinds.append(_KIND_BAD)
            fast.append(None)
            costs.append(0)
            continue
        if major in (0, 1, 7):
            cost = _scalar_cost(major, ai)
            kinds.append(_KIND_SCALAR)
            costs.append(cost)
            net = cost - DECODE_RATIO * length
            fast.append(net if net <= 0 else None)
            continue
        kinds.append({2: _KIND_BYTES, 3: _KIND_TEXT, 4: _KIND_ARRAY, 5: _KIND_MAP}.get(
            major, _KIND_TAG))
        fast.append(None)
        costs.append(0)
    return head_len, kinds, fast, costs


_HEAD_LEN, _KINDS, _FAST, _SCALAR_COSTS = _tables()


def map_cost(entries: int) -> int:
    """Estimated bytes of a decoded map of ``entries`` entries (its slot included)."""
    if not entries:
        return 72
    if entries <= 5:
        return 232
    return 120 + 48 * entries


def item_cost(head: int, argument: int) -> int:
    """Estimated bytes of the item whose head byte is ``head`` with ``argument``.

    The argument is the length of a string, array or map and the value of an
    integer; the cost of an array's or a map's entries is their own.
    """
    kind = _KINDS[head]
    if kind == _KIND_BYTES:
        return _SLOT if argument <= 1 else _BYTES_BASE + argument
    if kind == _KIND_TEXT:  # one-character strings are cached, as are one-byte bytes
        return _SLOT if argument <= 1 else _TEXT_BASE + argument
    if kind == _KIND_ARRAY:
        return _ARRAY_COST
    if kind == _KIND_MAP:
        return map_cost(argument)
    if kind == _KIND_SCALAR:
        if head in (0x18, 0x19, 0x1a, 0x1b) and argument <= 256:
            return _SLOT
        if head in (0x38, 0x39, 0x3a, 0x3b) and argument <= 4:
            return _SLOT
        return _SCALAR_COSTS[head]
    return 0  # a tag: its content is charged (and its expansion, by the tag hook)


def _run_cost(run: bytes) -> int:
    """Estimated cost of a run of one-byte items (see _ONE_BYTE_RUN), counted at C speed."""
    n = len(run)
    costly = n - len(run.translate(None, _COSTLY_INTS))
    simple = n - len(run.translate(None, _SIMPLE_VALUES))
    return (
        _SLOT * n
        + (_ARRAY_COST - _SLOT) * run.count(b"\x80")
        + (map_cost(0) - _SLOT) * run.count(b"\xa0")
        + (_INT_COST - _SLOT) * costly
        + (_SIMPLE_COST - _SLOT) * simple
    )


def allowance(size: int) -> int:
    """The decode budget of a frame of ``size`` payload bytes."""
    return DECODE_RATIO * size + DECODE_SLACK


def _over_budget(pos: int, end: int) -> str:
    return (
        f"the frame would decode to more than its decode budget ({DECODE_RATIO} bytes per "
        f"byte, +{DECODE_SLACK >> 20} MiB): refused after {pos} of {end} bytes"
    )


def _argument(buf: bytes | bytearray | memoryview, pos: int, length: int) -> int:
    if length == 2:
        return buf[pos + 1]
    if length == 3:
        return int(_U16(buf, pos + 1)[0])
    if length == 5:
        return int(_U32(buf, pos + 1)[0])
    return int(_U64(buf, pos + 1)[0])


def scan(buf: bytes | bytearray | memoryview) -> int:
    """Check the CBOR item ``buf`` (one frame's payload) against its decode budget.

    Returns the estimated cost of the decoded item.
    Raises :class:`~cellmesh.errors.MalformedFrame` for a prefix over budget
    (see the module doc), an array, map or tag used as a map key, an
    indefinite length or reserved head, nesting beyond 64 levels, a length
    that runs past the end, or bytes after the item. Never allocates in
    proportion to the frame (its stack is at most 64 levels deep).
    """
    end = len(buf)
    fast = _FAST
    one_byte = _ONE_BYTE
    run_of = _ONE_BYTE_RUN.match
    head_len = _HEAD_LEN
    kinds = _KINDS
    ratio = DECODE_RATIO
    slack = DECODE_SLACK
    pos = 0
    debt = 0  # estimated cost so far minus ratio * bytes so far
    remaining = 1  # items still to read at this level
    in_map = False  # this level is a map: every other item is a key
    stack: list[tuple[int, bool]] = []
    try:
        while True:
            if not remaining:
                if not stack:
                    break
                remaining, in_map = stack.pop()
                continue
            head = buf[pos]
            if remaining >= _RUN_MIN and not in_map and head in one_byte:
                # Many one-byte items in an array (a list of small integers, or
                # a bomb of empty arrays): charged all at once at C speed.
                match = run_of(buf, pos, pos + min(remaining, _RUN_MAX))
                assert match is not None  # head itself is a one-byte item
                length = match.end() - pos
                debt += _run_cost(bytes(buf[pos : pos + length])) - ratio * length
                pos += length
                remaining -= length
                if debt > slack:
                    raise MalformedFrame(_over_budget(pos, end))
                continue
            net = fast[head]
            remaining -= 1
            if net is not None:  # a plain scalar: the hot path
                pos += head_len[head]
                debt += net
                continue
            length = head_len[head]
            kind = kinds[head]
            if kind == _KIND_BAD:
                raise MalformedFrame(
                    f"CBOR head 0x{head:02x} at byte {pos} is indefinite or reserved"
                )
            argument = head & 31 if length == 1 else _argument(buf, pos, length)
            pos += length
            if kind <= _KIND_TEXT:
                pos += argument
                if pos > end:
                    raise MalformedFrame("a string runs past the end of the frame")
                # Past its first 64 bytes a string earns budget at its own cost
                # (1 per byte), so a huge string cannot pay for a bomb behind it.
                earned = ratio * argument if argument <= 64 else _LONG_STRING + argument
                debt += item_cost(head, argument) - ratio * length - earned
                continue
            if kind == _KIND_SCALAR:
                debt += item_cost(head, argument) - ratio * length
            else:
                if in_map and remaining & 1:  # entries left after a key: odd
                    raise MalformedFrame(
                        f"a map key at byte {pos - length} is an array, a map or a "
                        "tag (keys are text, byte strings, integers, floats or simple values)"
                    )
                if kind == _KIND_TAG:
                    opened, entries = True, 1
                    debt -= ratio * length
                elif kind == _KIND_ARRAY:
                    opened, entries = argument > 0, argument
                    debt += _ARRAY_COST - ratio * length
                else:
                    opened, entries = argument > 0, 2 * argument
                    debt += map_cost(argument) - ratio * length
                if opened:
                    if entries > end - pos:
                        raise MalformedFrame(
                            f"an item declares {entries} entries; the frame has "
                            f"{end - pos} bytes left"
                        )
                    if len(stack) >= _MAX_DEPTH:
                        raise MalformedFrame("CBOR nesting deeper than 64 levels")
                    stack.append((remaining, in_map))
                    remaining, in_map = entries, kind == _KIND_MAP
            if debt > slack:
                raise MalformedFrame(_over_budget(pos, end))
    except IndexError:
        raise MalformedFrame("the frame ends inside a CBOR item") from None
    if pos > end:
        raise MalformedFrame("the frame ends inside a CBOR item")
    if pos != end:
        raise MalformedFrame("bytes follow the frame's CBOR item (a frame holds exactly one)")
    return debt + ratio * end
