"""Decoding one frame's CBOR under the profile of docs/protocol.md section 3, within budget.

Theory of operation
-------------------
:class:`PayloadDecoder` turns one frame's payload into a Python value or
raises :class:`~cellmesh.errors.MalformedFrame`, and nothing else, whatever
the bytes (the decoder's own failures, ``BaseException`` subclasses such as
a Rust panic from cbor2 included; only ``KeyboardInterrupt``,
``SystemExit`` and ``GeneratorExit`` pass through).

The profile is enforced by cbor2's options (definite lengths only, no
duplicate keys, 64 levels) and by the tag hook (:class:`FrameTags`: typed
arrays, packed columns and vesicle refs, every other tag refused). The
decode budget of :mod:`cellmesh.wire._budget` is enforced in two steps:

1. A frame above ``SCAN_ABOVE`` bytes is scanned first (``_budget.scan``),
   then decoded.
2. A smaller frame is decoded at once by a *strict* cbor2 decoder, which
   accepts only text and byte string map keys. Should it fail (a map keyed
   by integers, or any error), the frame is scanned -- which refuses arrays,
   maps and tags as keys, whose hashes an attacker can make collide -- and
   decoded again by a decoder that accepts the other key types. So the
   common frame pays nothing for the key rule, and a frame keyed by
   integers (a ``dict[int, V]`` field) pays one scan.

The tag hook charges what a typed array or packed column expands to
against what is left of the frame's budget before it expands it.

Pure: no I/O.
"""

from __future__ import annotations

import io
from typing import Any, Final

import attrs
import cbor2

from ..errors import MalformedFrame
from . import _budget
from ._cliptext import show_value
from ._columns import (
    TAG_BYTES_COLUMN,
    TAG_TEXT_COLUMN,
    TYPED_ARRAYS,
    bytes_column_values,
    typed_array_values,
)

#: CBOR nesting deeper than this is refused (bounds decoder recursion).
MAX_DEPTH: Final = 64
#: At most this many vesicles (descriptors) may travel with one frame.
MAX_VESICLES_PER_FRAME: Final = 64
#: Private-use CBOR tag marking a vesicle reference ``[index, length]``.
VESICLE_TAG: Final = 1_667_591_276  # "cell" in ASCII, a first-come-first-served tag
#: Exceptions that are never a decoding failure: they pass through untouched.
_NOT_OURS: Final = (KeyboardInterrupt, SystemExit, GeneratorExit)
#: What an expansion may cost (see _budget): the list, and per value a slot and an
#: int or a float (typed arrays) or a string (packed text, its characters apart).
_LIST_COST: Final = _budget.item_cost(0x80, 0)
_TYPED_ELEMENT_COST: Final = 56
_TEXT_PART_COST: Final = _budget.item_cost(0x78, 0)
_VESICLE_REF_COST: Final = 64
_RATIO: Final = _budget.DECODE_RATIO
_SLACK: Final = _budget.DECODE_SLACK
_SCAN_ABOVE: Final = _budget.SCAN_ABOVE
_OURS_OR_INTERRUPT: Final = (MalformedFrame, *_NOT_OURS)
_TRAILING: Final = "bytes follow the frame's CBOR item (a frame holds exactly one)"


@attrs.frozen
class VesicleRef:
    """A vesicle inside a decoded body: the ``index``-th descriptor of its frame."""

    index: int
    length: int


def _reject_tag(value: object, immutable: bool = False) -> Any:
    raise MalformedFrame("CBOR semantic tags are not allowed (except the vesicle tag)")


#: cbor2 decodes these tags itself; every one is refused except bignums (2, 3).
_BUILTIN_TAGS: Final = (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258,
                        260, 261, 1004, 55799)
_SEMANTIC_DECODERS: Final = dict.fromkeys(_BUILTIN_TAGS, _reject_tag)


class FrameTags:
    """Per-frame tag hook: expands typed arrays and packed columns within the budget,
    turns vesicle tags into refs and counts them.

    ``allowance`` is what is left of the frame's decode budget; set it (and
    ``count`` to 0) before each frame.
    """

    __slots__ = ("allowance", "count")

    def __init__(self) -> None:
        self.count = 0
        self.allowance = 0

    def _charge(self, cost: int, what: str) -> None:
        self.allowance -= cost
        if self.allowance < 0:
            raise MalformedFrame(f"{what} would take the frame past its decode budget")

    def __call__(self, tag: cbor2.CBORTag, immutable: bool) -> VesicleRef | list[Any]:
        value = tag.value
        typecode = TYPED_ARRAYS.get(tag.tag)
        if typecode is not None:
            if type(value) is bytes:  # the hot path: inline, no call
                self.allowance -= _LIST_COST + _TYPED_ELEMENT_COST * (len(value) >> 3)
                if self.allowance < 0:
                    raise MalformedFrame("a typed array would take the frame past its budget")
            return typed_array_values(value, typecode)
        if tag.tag == TAG_TEXT_COLUMN:
            if type(value) is not str:
                raise MalformedFrame("a packed text column must wrap a text string")
            self._charge(
                _LIST_COST + _TEXT_PART_COST * (value.count("\0") + 1) + len(value),
                "a packed text column",
            )
            return value.split("\0")
        if tag.tag == TAG_BYTES_COLUMN:
            values = bytes_column_values(value, self._charge)
            return values
        if tag.tag != VESICLE_TAG:
            raise MalformedFrame(f"CBOR tag {tag.tag} is not allowed")
        if (
            (type(value) is not list and type(value) is not tuple)
            or len(value) != 2
            or type(value[0]) is not int
            or type(value[1]) is not int
        ):
            raise MalformedFrame("a vesicle tag must wrap [index, length] (two integers)")
        index, length = value
        if index >= MAX_VESICLES_PER_FRAME:
            raise MalformedFrame(f"more than {MAX_VESICLES_PER_FRAME} vesicles in one frame")
        if index != self.count:
            raise MalformedFrame(
                f"vesicle index {show_value(index)} out of order (expected {self.count})"
            )
        if not 0 < length <= 2**62:
            raise MalformedFrame(f"vesicle length {show_value(length)} is out of range")
        self._charge(_VESICLE_REF_COST, "a vesicle")
        self.count += 1
        return VesicleRef(index, length)


def is_lost_memory_error(exc: BaseException) -> bool:
    """True for the panic cbor2 (a Rust extension built with pyo3) raises when a
    Python allocation it made failed: ``pyo3_runtime.PanicException: PyObject
    pointer is null``. The MemoryError is lost, not chained, but a NULL object
    pointer is what a failed allocation gives, so this process is out of
    memory: nothing a peer's bytes did."""
    kind = type(exc)
    return (
        kind.__name__ == "PanicException"
        and kind.__module__ == "pyo3_runtime"
        and "pointer is null" in str(exc)
    )


def _cbor_decoder(tags: FrameTags, *, strict: bool) -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        io.BytesIO(b""),
        tag_hook=tags,
        semantic_decoders=_SEMANTIC_DECODERS,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=strict,
    )


class PayloadDecoder:
    """Decodes frame payloads, one at a time, for one connection (see the module doc)."""

    __slots__ = ("_lenient", "_strict", "tags")

    def __init__(self) -> None:
        self.tags = FrameTags()
        self._strict = _cbor_decoder(self.tags, strict=True)  # reused: one per connection
        self._lenient = _cbor_decoder(self.tags, strict=False)

    def decode(self, payload: memoryview) -> Any:
        """The CBOR item that is exactly ``payload``; MalformedFrame for anything else.

        ``tags.count`` is the number of vesicle refs in it afterwards.
        """
        size = len(payload)
        tags = self.tags
        try:
            if size <= _SCAN_ABOVE:
                # The hot path, inline: the strict decoder, no scan.
                tags.count = 0
                tags.allowance = _RATIO * size + _SLACK
                source = io.BytesIO(payload)
                strict = self._strict
                strict.fp = source
                try:
                    item = strict.decode()
                except cbor2.CBORDecodeError as exc:
                    if isinstance(exc.__cause__, _OURS_OR_INTERRUPT):
                        raise  # our own verdict (a tag, the budget), or an interrupt: final
                    # A key that is not text (or a real error): look closer.
                    return self._decode(self._lenient, payload, _budget.scan(payload))
                if source.tell() == size:
                    return item
            else:
                return self._decode(self._lenient, payload, _budget.scan(payload))
        except MalformedFrame:
            raise
        except cbor2.CBORDecodeError as exc:
            # cbor2 wraps whatever a hook raised, interrupts included.
            cause = exc.__cause__
            if isinstance(cause, (*_NOT_OURS, MemoryError)):
                raise cause from None
            if isinstance(cause, MalformedFrame):
                raise MalformedFrame(str(cause)) from None
            why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise MalformedFrame(f"invalid CBOR: {exc}{why}") from None
        except (*_NOT_OURS, MemoryError):
            raise  # (out of memory is this process's state, not the peer's bytes)
        except BaseException as exc:  # anything else the decoder raised, a panic included
            if is_lost_memory_error(exc):
                raise MemoryError("cbor2 could not allocate while decoding a frame") from exc
            raise MalformedFrame(f"invalid CBOR: {type(exc).__name__}: {exc}") from None
        raise MalformedFrame(_TRAILING)

    def _decode(self, decoder: cbor2.CBORDecoder, payload: memoryview, cost: int) -> Any:
        tags = self.tags
        tags.count = 0
        tags.allowance = _budget.allowance(len(payload)) - cost
        source = io.BytesIO(payload)
        decoder.fp = source
        item = decoder.decode()
        if source.tell() != len(payload):
            raise MalformedFrame(_TRAILING)
        return item
