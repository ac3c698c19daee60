"""Sans-I/O framing of the cellmesh wire protocol: bytes in, frames out, and back.

Theory of operation
-------------------
A connection carries a stream of *frames*. Each frame is a 4-byte big-endian
unsigned length ``N`` followed by ``N`` bytes holding exactly one CBOR data
item: an array whose first element is the frame *kind* (see :class:`Kind`).
``docs/protocol.md`` is the normative description; this module is its
executable form.

:class:`FrameDecoder` is fed arbitrary chunks of bytes (``feed``) and hands
back complete, validated frames (``next_frame``) or :data:`NEED_DATA`. It never
performs I/O, never blocks, and for *any* input raises only subclasses of
:class:`~cellmesh.errors.RemoteProtocolError`. The envelope (kinds, ids,
codes, credit numbers) is validated here; protein bodies are only checked to
be ``[wire_name, field...]`` arrays and are decoded against a schema later
(:mod:`cellmesh.wire.proteins`), because a bad body fails one call, not the
connection.

Encoding goes through :func:`encode_items`, which turns wire items (plain
lists produced by the ``*.to_wire`` helpers) into one frame, or into a
``batch`` frame when there are several, splitting into more frames only when
one would exceed the peer's maximum frame size.

Vesicles (large payloads passed as file descriptors) appear inside protein
bodies as CBOR tag :data:`VESICLE_TAG` wrapping ``[index, length]``; the
decoder turns them into :class:`VesicleRef` values and counts them per frame
so the driver can pair them with the descriptors that arrived with the frame.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final, TypeAlias

import attrs
import cbor2

from ..errors import (
    ConfigError,
    ErrorCode,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
    UnknownFrameKind,
)
from ._cbor import (
    MAX_DEPTH,
    MAX_VESICLES_PER_FRAME,
    VESICLE_TAG,
    PayloadDecoder,
    VesicleRef,
)
from ._cliptext import show_value
from ._columns import (
    MAX_ID,
    TAG_BYTES_COLUMN,
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    TAG_TEXT_COLUMN,
    TAG_UINT64_LE,
    TYPED_ARRAYS,
    bytes_column,
    slice_column,
    text_column,
    typed_array,
    typed_array_values,
)
from ._fit import (
    LONE_ENVELOPE,
    body_fits,
    check_text,
    item_body,
    item_what,
    lone_size,
    text_field_error,
    text_problem,
    too_large_text,
    unencodable_field,
    unencodable_text,
)
from ._kinds import Body, Kind

# The column forms live in wire/_columns.py, the CBOR profile's decoding in
# wire/_cbor.py, frame kinds in wire/_kinds.py and whether a message fits a
# frame in wire/_fit.py; what they export here is part of this module's API.
__all__ = [
    "ABSOLUTE_MAX_FRAME_SIZE", "DEFAULT_MAX_FRAME_SIZE", "HEADER", "HEADER_SIZE", "MAX_DEPTH",
    "MAX_HELLO_SIZE", "MAX_ID", "MAX_VESICLES_PER_FRAME", "MIN_MAX_FRAME_SIZE", "NEED_DATA",
    "NeedData",
    "PROTOCOL_VERSION", "TAG_BYTES_COLUMN", "TAG_FLOAT64_LE", "TAG_SINT64_LE",
    "TAG_TEXT_COLUMN", "TAG_UINT64_LE", "VESICLE_TAG", "Body", "Call", "Cancel", "Credit",
    "DecodedFrame", "Error", "Frame", "FrameDecoder", "GoAway", "Hello", "Kind", "Reply",
    "LONE_ENVELOPE", "Signal", "VesicleRef", "body_fits", "bytes_column",
    "check_max_frame_size", "columns_item", "encode_chunks", "encode_items", "frame_bytes",
    "frame_of", "item_call_ids", "item_weight", "lone_size", "row_item", "show_value",
    "split_columns", "text_column", "too_large_text", "typed_array", "validate_frame",
    "check_text", "text_field_error", "text_problem", "unencodable_field", "unencodable_text",
]

PROTOCOL_VERSION: Final = 1
HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
#: No frame may ever exceed this, whatever a peer announces (the header is u32).
ABSOLUTE_MAX_FRAME_SIZE: Final = 2**32 - 1
#: Smallest maximum a peer may announce.
MIN_MAX_FRAME_SIZE: Final = 4096
#: The first frame of each direction (the hello, sent before limits are known,
#: or the error frame refusing one) may be this large whatever the negotiated
#: maximum, and no larger: a hello lists every protein fingerprint (about 45
#: bytes each), and a peer that has not said hello yet gets no more room.
MAX_HELLO_SIZE: Final = 64 * 1024




def check_max_frame_size(value: object) -> None:
    """Raise :class:`~cellmesh.errors.ConfigError` unless ``value`` is a valid frame limit."""
    if type(value) is not int or not MIN_MAX_FRAME_SIZE <= value <= ABSOLUTE_MAX_FRAME_SIZE:
        raise ConfigError(
            "max_frame_size",
            f"must be an int in [{MIN_MAX_FRAME_SIZE}, {ABSOLUTE_MAX_FRAME_SIZE}], "
            f"got {show_value(value)}",
        )


# ---------------------------------------------------------------------------
# Typed views of frames. The hot path works on validated raw items (lists);
# these classes are for control frames and for code that prefers objects.


def _expect(item: list[Any], length: int, name: str) -> None:
    if len(item) != length:
        raise MalformedFrame(f"a {name} frame has {length} elements, got {len(item)}")


def _is_id(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_ID


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_ID


def _is_body(value: object) -> bool:
    return type(value) is list and len(value) > 0 and type(value[0]) is str


@attrs.frozen(kw_only=True)
class Hello:
    """First frame on a connection, once from each side.

    ``proteins`` maps every wire name the sender knows to its schema
    fingerprint. ``max_frame_size`` is the largest frame the sender accepts.
    ``credit_calls``/``credit_bytes`` is the initial credit the sender grants
    the peer for calls and signals (0 for a side that serves nothing).
    ``packed_columns`` is 1 when the sender reads the packed ``str`` and
    ``bytes`` columns of docs/protocol.md 11.3 (0: send it plain arrays only);
    it travels as a hello option only when set.
    ``sessions`` (server only): the server deduplicates calls sent in client
    sessions, so a client may resend them (docs/protocol.md section 17);
    sent as the option ``"sessions": true`` only when set.
    """

    version: int
    name: str
    proteins: dict[str, str]
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    credit_calls: int = 0
    credit_bytes: int = 0
    packed_columns: int = 0
    sessions: bool = False

    @classmethod
    def from_wire(cls, item: list[Any]) -> Hello:
        """Validate a decoded hello item; raises HandshakeError naming the problem."""
        if len(item) != 5:
            raise HandshakeError(f"a hello frame has 5 elements, got {len(item)}")
        _, version, name, proteins, options = item
        if not _is_uint(version):
            raise HandshakeError(
                f"hello version must be an integer in 0..2**63-1, got {show_value(version)}"
            )
        if type(name) is not str:
            raise HandshakeError("hello peer name must be a text string")
        if type(proteins) is not dict or not all(
            type(k) is str and type(v) is str for k, v in proteins.items()
        ):
            raise HandshakeError("hello proteins must map text wire names to text fingerprints")
        if type(options) is not dict:
            raise HandshakeError("hello options must be a map")
        values: dict[str, int] = {}
        for key, default in (
            ("max_frame_size", DEFAULT_MAX_FRAME_SIZE),
            ("credit_calls", 0),
            ("credit_bytes", 0),
            ("packed_columns", 0),
        ):
            value = options.get(key, default)
            if not _is_uint(value):
                raise HandshakeError(
                    f"hello option {key} must be an integer in 0..2**63-1, got {show_value(value)}"
                )
            values[key] = value
        sessions = options.get("sessions", False)
        if type(sessions) is not bool:
            raise HandshakeError(
                f"hello option sessions must be a boolean, got {show_value(sessions)}"
            )
        if not MIN_MAX_FRAME_SIZE <= values["max_frame_size"] <= ABSOLUTE_MAX_FRAME_SIZE:
            raise HandshakeError(
                f"hello max_frame_size {values['max_frame_size']} is outside "
                f"[{MIN_MAX_FRAME_SIZE}, {ABSOLUTE_MAX_FRAME_SIZE}]"
            )
        return cls(version=version, name=name, proteins=proteins, sessions=sessions, **values)

    def to_wire(self) -> list[Any]:
        options: dict[str, int | bool] = {
            "max_frame_size": self.max_frame_size,
            "credit_calls": self.credit_calls,
            "credit_bytes": self.credit_bytes,
        }
        if self.packed_columns:
            options["packed_columns"] = self.packed_columns
        if self.sessions:
            options["sessions"] = True
        return [Kind.HELLO, self.version, self.name, self.proteins, options]


@attrs.frozen
class Call:
    """A request ``body`` expecting exactly one reply or error with the same ``id``."""

    id: int
    body: Body

    def to_wire(self) -> list[Any]:
        return [Kind.CALL, self.id, self.body]


@attrs.frozen
class Reply:
    """The result of call ``id``; ``body`` is None when the handler returned None."""

    id: int
    body: Body | None

    def to_wire(self) -> list[Any]:
        return [Kind.REPLY, self.id, self.body]


@attrs.frozen(kw_only=True)
class Error:
    """A failed call (``id`` set) or a fatal connection error (``id`` None).

    ``code`` is an :class:`~cellmesh.errors.ErrorCode`; ``type_name`` and
    ``message`` describe the failure as text; ``traceback`` is the remote
    traceback text when the failure was a handler exception.
    """

    id: int | None
    code: int
    type_name: str
    message: str
    traceback: str | None = None

    def to_wire(self) -> list[Any]:
        return [Kind.ERROR, self.id, self.code, self.type_name, self.message, self.traceback]


@attrs.frozen
class Signal:
    """A one-way message: no reply, no error, no id."""

    body: Body

    def to_wire(self) -> list[Any]:
        return [Kind.SIGNAL, self.body]


@attrs.frozen
class Cancel:
    """The caller gave up on call ``id``; the callee cancels its handler."""

    id: int

    def to_wire(self) -> list[Any]:
        return [Kind.CANCEL, self.id]


@attrs.frozen
class Credit:
    """The sender grants the peer ``calls`` more calls/signals and ``bytes`` more bytes."""

    calls: int
    bytes: int

    def to_wire(self) -> list[Any]:
        return [Kind.CREDIT, self.calls, self.bytes]


@attrs.frozen
class GoAway:
    """The sender will accept no new calls on this connection; reconnect for more."""

    code: int
    reason: str

    def to_wire(self) -> list[Any]:
        return [Kind.GOAWAY, self.code, self.reason]


Frame: TypeAlias = Hello | Call | Reply | Error | Signal | Cancel | Credit | GoAway


def frame_of(item: list[Any]) -> Frame:
    """The typed view of a validated item (as found in :attr:`DecodedFrame.items`)."""
    kind = item[0]
    if kind == Kind.CALL:
        return Call(item[1], item[2])
    if kind == Kind.REPLY:
        return Reply(item[1], item[2])
    if kind == Kind.ERROR:
        return Error(id=item[1], code=item[2], type_name=item[3], message=item[4],
                     traceback=item[5])
    if kind == Kind.SIGNAL:
        return Signal(item[1])
    if kind == Kind.CANCEL:
        return Cancel(item[1])
    if kind == Kind.CREDIT:
        return Credit(item[1], item[2])
    if kind == Kind.GOAWAY:
        return GoAway(item[1], item[2])
    return Hello.from_wire(item)


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by :meth:`FrameDecoder.next_frame` when no complete frame is buffered.
NEED_DATA: Final = _NeedData.NEED_DATA
#: The type of :data:`NEED_DATA` (for annotations).
NeedData: TypeAlias = _NeedData


# ---------------------------------------------------------------------------
# Encoding.


def split_columns(item: list[Any]) -> tuple[list[Any], list[Any]]:
    """Split a columns item of two or more rows into two halves (same meaning)."""
    kind, sub, count, name, ids, columns = item
    half = count // 2
    first = [kind, sub, half, name, None if ids is None else slice_column(ids, 0, half),
             [slice_column(c, 0, half) for c in columns]]
    second = [kind, sub, count - half, name,
              None if ids is None else slice_column(ids, half, count),
              [slice_column(c, half, count) for c in columns]]
    return first, second


def row_item(item: list[Any]) -> list[Any]:
    """The plain item a columns item of one row stands for: ``[kind, id, body]``,
    or ``[4, body]`` for a signal (same meaning, docs/protocol.md 4.10).

    Never larger than the columns item: each of its values loses the array or
    tag that held it as a column. Only for items this process built.
    """
    _, sub, _, name, ids, columns = item
    body = [name, *map(_row_value, columns)]
    if sub == Kind.SIGNAL:
        return [Kind.SIGNAL, body]
    return [sub, _row_value(ids), body]


def _row_value(column: Any) -> Any:
    """The first value of a column in any of its forms (plain array, typed array,
    packed text or bytes column)."""
    if isinstance(column, cbor2.CBORTag):
        if column.tag == TAG_TEXT_COLUMN:
            return column.value.split("\0", 1)[0]
        if column.tag == TAG_BYTES_COLUMN:
            count, data = column.value
            return data[: len(data) // count]
        return typed_array_values(column.value[:8], TYPED_ARRAYS[column.tag])[0]
    return column[0]


def item_call_ids(item: list[Any]) -> list[int]:
    """The call ids a wire item (built by this module's users) answers or carries."""
    kind = item[0]
    if kind == Kind.COLUMNS:
        ids = item[4]
        if ids is None:
            return []
        if isinstance(ids, cbor2.CBORTag):
            return typed_array_values(ids.value, TYPED_ARRAYS[ids.tag])
        return list(ids)
    if kind in (Kind.CALL, Kind.REPLY, Kind.ERROR, Kind.CANCEL) and item[1] is not None:
        return [item[1]]
    return []


def columns_item(kind: int, wire_name: str, ids: list[int] | None, columns: list[Any],
                 count: int) -> list[Any]:
    """A columnar item: ``count`` calls, replies or signals of one protein.

    ``ids`` holds the call ids (None for signals); ``columns`` one array per
    protein field, in declaration order, each ``count`` long.
    """
    wire_ids = None if ids is None else typed_array(ids, TAG_UINT64_LE)
    return [Kind.COLUMNS, kind, count, wire_name, wire_ids, columns]


def frame_bytes(item: list[Any]) -> bytes:
    """Encode one wire item as a complete frame (header + CBOR)."""
    payload = cbor2.dumps(item)
    return HEADER.pack(len(payload)) + payload


def item_weight(item: list[Any]) -> int:
    """How many calls and signals a wire item carries (what it costs in call credit)."""
    kind = item[0]
    if kind in (Kind.CALL, Kind.SIGNAL):
        return 1
    if kind == Kind.COLUMNS and item[1] != Kind.REPLY:
        return int(item[2])
    return 0


def encode_chunks(items: list[list[Any]], max_frame_size: int) -> list[tuple[bytes, int]]:
    """Encode wire items into as few frames as fit in ``max_frame_size``, with their weights.

    Returns ``(frame, calls and signals in it)`` pairs, in order. One item
    becomes a plain frame; several become one ``batch`` frame, split in
    halves while a frame would be too large (a columns item of several rows
    is split by rows, and a row that still does not fit travels as the
    plain item it stands for, :func:`row_item`). So a message that
    :func:`body_fits` passed is always framed, at worst alone. A single item
    that cannot fit raises :class:`~cellmesh.errors.LocalProtocolError` with
    code 2 (:func:`too_large_text` says why); text that cannot be encoded (a
    lone surrogate) raises :class:`~cellmesh.errors.FieldError` naming the
    protein that holds it.
    """
    if not items:
        return []
    try:
        payload = cbor2.dumps(items[0] if len(items) == 1 else [Kind.BATCH, items])
    except UnicodeEncodeError as exc:
        raise unencodable_text(items, exc) from None
    if len(payload) <= max_frame_size:
        weight = 0
        for item in items:
            weight += item_weight(item)
        return [(HEADER.pack(len(payload)) + payload, weight)]
    if len(items) == 1:
        item = items[0]
        if item[0] == Kind.COLUMNS:
            if item[2] > 1:
                return encode_chunks(list(split_columns(item)), max_frame_size)
            # One row that does not fit as a columns item may fit as the plain item
            # it stands for (never larger): a message that body_fits passed does.
            return encode_chunks([row_item(item)], max_frame_size)
        raise LocalProtocolError(
            too_large_text(item_what(item), len(payload), max_frame_size, item_body(item)),
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    half = len(items) // 2
    return encode_chunks(items[:half], max_frame_size) + encode_chunks(
        items[half:], max_frame_size
    )


def encode_items(items: list[list[Any]], max_frame_size: int) -> list[bytes]:
    """Encode wire items into as few frames as fit (see :func:`encode_chunks`)."""
    return [data for data, _ in encode_chunks(items, max_frame_size)]


# ---------------------------------------------------------------------------
# Validation of decoded items.


def _check_call(item: list[Any]) -> None:
    _expect(item, 3, "call")
    if not _is_id(item[1]):
        raise MalformedFrame(f"call id must be in 1..2**63-1, got {show_value(item[1])}")
    if not _is_body(item[2]):
        raise MalformedFrame("a call body must be a protein array [wire_name, field...]")


def _check_reply(item: list[Any]) -> None:
    _expect(item, 3, "reply")
    if not _is_id(item[1]):
        raise MalformedFrame(f"reply id must be in 1..2**63-1, got {show_value(item[1])}")
    if item[2] is not None and not _is_body(item[2]):
        raise MalformedFrame("a reply body must be null or a protein array [wire_name, field...]")


def _check_signal(item: list[Any]) -> None:
    _expect(item, 2, "signal")
    if not _is_body(item[1]):
        raise MalformedFrame("a signal body must be a protein array [wire_name, field...]")


def _check_error(item: list[Any]) -> None:
    _expect(item, 6, "error")
    _, call_id, code, type_name, message, traceback = item
    if call_id is not None and not _is_id(call_id):
        raise MalformedFrame(
            f"error id must be null or in 1..2**63-1, got {show_value(call_id)}"
        )
    if not _is_uint(code):
        raise MalformedFrame(f"error code must be in 0..2**63-1, got {show_value(code)}")
    if type(type_name) is not str or type(message) is not str:
        raise MalformedFrame("error type name and message must be text strings")
    if traceback is not None and type(traceback) is not str:
        raise MalformedFrame("error traceback must be null or a text string")


def _check_cancel(item: list[Any]) -> None:
    _expect(item, 2, "cancel")
    if not _is_id(item[1]):
        raise MalformedFrame(f"cancel id must be in 1..2**63-1, got {show_value(item[1])}")


def _check_credit(item: list[Any]) -> None:
    _expect(item, 3, "credit")
    if not (_is_uint(item[1]) and _is_uint(item[2])):
        raise MalformedFrame("credit amounts must be integers in 0..2**63-1")


def _check_columns(item: list[Any]) -> None:
    _expect(item, 6, "columns")
    _, kind, count, wire_name, ids, columns = item
    if kind not in (Kind.CALL, Kind.REPLY, Kind.SIGNAL) or type(kind) is not int:
        raise MalformedFrame(
            f"a columns frame carries calls, replies or signals, not {show_value(kind)}"
        )
    if type(count) is not int or not 0 < count <= MAX_ID:
        raise MalformedFrame(
            f"a columns frame count must be positive, at most 2**63-1, got {show_value(count)}"
        )
    if type(wire_name) is not str:
        raise MalformedFrame("a columns frame wire name must be a text string")
    if kind == Kind.SIGNAL:
        if ids is not None:
            raise MalformedFrame("a columns frame of signals has null ids")
    elif (
        type(ids) is not list
        or len(ids) != count
        or not set(map(type, ids)) <= _INT_ONLY  # (all in C: this runs per columns frame)
        or min(ids) <= 0
        or max(ids) > MAX_ID
    ):
        raise MalformedFrame(f"a columns frame needs {count} call ids in 1..2**63-1")
    elif len(set(ids)) != count:
        raise RemoteProtocolError(
            "a columns frame repeats a call id", code=ErrorCode.DUPLICATE_CALL_ID
        )
    if type(columns) is not list or not all(
        type(c) is list and len(c) == count for c in columns
    ):
        raise MalformedFrame(f"a columns frame needs arrays of {count} values per field")


_INT_ONLY: Final = frozenset({int})


def _check_goaway(item: list[Any]) -> None:
    _expect(item, 3, "goaway")
    if not _is_uint(item[1]) or type(item[2]) is not str:
        raise MalformedFrame("goaway must be [7, code, reason]")


_CHECKS: Final[dict[int, Any]] = {
    Kind.CALL: _check_call,
    Kind.REPLY: _check_reply,
    Kind.SIGNAL: _check_signal,
    Kind.ERROR: _check_error,
    Kind.CANCEL: _check_cancel,
    Kind.CREDIT: _check_credit,
    Kind.GOAWAY: _check_goaway,
    Kind.COLUMNS: _check_columns,
}


def _check_item(item: object) -> None:
    """Validate one non-hello, non-batch item (raises MalformedFrame/UnknownFrameKind)."""
    if type(item) is not list or not item:
        raise MalformedFrame("a frame must be a non-empty CBOR array")
    kind = item[0]
    if type(kind) is not int:
        raise MalformedFrame(f"frame kind must be an integer, got {type(kind).__name__}")
    check = _CHECKS.get(kind)
    if check is None:
        if kind == Kind.HELLO:
            raise MalformedFrame("a hello may only be the first frame, never inside a batch")
        if kind == Kind.BATCH:
            raise MalformedFrame("a batch cannot be inside a batch")
        raise UnknownFrameKind(f"unknown frame kind {show_value(kind)}")
    check(item)


def _check_batch(items: object) -> list[list[Any]]:
    """Validate a batch's items; the dominant call/reply shapes are checked inline."""
    if type(items) is not list or not items:
        raise MalformedFrame("a batch must hold a non-empty array of frames")
    for item in items:
        # Fast path for [1|2, id, body]: the shapes that dominate traffic.
        if type(item) is list and len(item) == 3:
            kind = item[0]
            call_id = item[1]
            body = item[2]
            if (
                kind in (1, 2)
                and type(kind) is int
                and type(call_id) is int
                and 0 < call_id <= MAX_ID
                and (
                    (type(body) is list and body and type(body[0]) is str)
                    or (body is None and kind == 2)
                )
            ):
                continue
        _check_item(item)
    return items


def validate_frame(item: object) -> list[list[Any]]:
    """Validate one decoded frame; return its items (a batch's, or the frame itself).

    A hello is returned as an item like any other (the driver decides whether
    one is allowed where it appears).
    """
    if type(item) is not list or not item:
        raise MalformedFrame("a frame must be a non-empty CBOR array")
    kind = item[0]
    if type(kind) is int:
        # Fast path for a lone [1|2, id, body] (one call or reply outstanding).
        if kind in (1, 2) and len(item) == 3:
            call_id = item[1]
            body = item[2]
            if (
                type(call_id) is int
                and 0 < call_id <= MAX_ID
                and (
                    (type(body) is list and body and type(body[0]) is str)
                    or (body is None and kind == 2)
                )
            ):
                return [item]
        if kind == Kind.BATCH:
            _expect(item, 2, "batch")
            return _check_batch(item[1])
        if kind == Kind.HELLO:
            Hello.from_wire(item)
            return [item]
    _check_item(item)
    return [item]


# ---------------------------------------------------------------------------
# Decoding.


@attrs.define(eq=False)
class DecodedFrame:
    """One received frame: its validated items, vesicle count and payload size.

    ``items`` holds the frame itself, or the items of a batch; each is a
    validated list ``[kind, ...]`` in the shape docs/protocol.md gives (use
    :func:`frame_of` for a typed view). ``vesicles`` is how many descriptors
    the frame references, ``size`` its payload length in bytes.
    """

    items: list[list[Any]]
    vesicles: int
    size: int


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, then call ``next_frame`` until NEED_DATA.

    Invariant: for any sequence of fed bytes, ``next_frame`` returns a
    :class:`DecodedFrame`, returns :data:`NEED_DATA`, or raises a
    :class:`~cellmesh.errors.RemoteProtocolError` subclass, and nothing else.
    After it has raised, the connection must be closed (the decoder refuses
    further use). Nothing fed can make it allocate more than the frame's
    decode budget (:mod:`cellmesh.wire._budget`) beyond the bytes themselves.
    """

    __slots__ = ("_broken", "_buf", "_limit", "_max_frame_size", "_payloads", "_pos")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._payloads = PayloadDecoder()  # reused: one per connection
        self._buf = bytearray()
        self._pos = 0
        self._broken = False
        self._max_frame_size = max_frame_size
        # The first frame is the hello (or the error refusing one): MAX_HELLO_SIZE.
        self._limit = MAX_HELLO_SIZE

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload accepted (checked against each header)."""
        return self._max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed as frames."""
        return len(self._buf) - self._pos

    def release(self) -> None:
        """Drop what is buffered (the connection is closed): its memory goes back now,
        not when a cycle collection finds the connection."""
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (any split of the stream is fine)."""
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> DecodedFrame | _NeedData:
        """Return the next complete frame, or :data:`NEED_DATA`.

        The first frame may be at most :data:`MAX_HELLO_SIZE` bytes, later ones
        ``max_frame_size``; every payload is decoded within its decode budget
        (:mod:`cellmesh.wire._budget`).
        """
        if self._broken:
            raise MalformedFrame("the decoder already failed; the connection must be closed")
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return NEED_DATA
        (length,) = HEADER.unpack_from(buf, pos)
        if length > self._limit:
            self._broken = True
            raise FrameTooLarge(length, self._limit)
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            return NEED_DATA
        self._pos = end
        if length == 0:
            self._broken = True
            raise MalformedFrame("a frame must hold one CBOR item; got an empty frame")
        payloads = self._payloads
        try:
            with memoryview(buf) as view, view[pos + HEADER_SIZE : end] as payload:
                item = payloads.decode(payload)
            items = validate_frame(item)
        except (MalformedFrame, UnknownFrameKind, HandshakeError):
            self._broken = True
            raise
        except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            self._broken = True  # validating an odd value (a decoded item is never huge)
            raise MalformedFrame(f"invalid frame: {type(exc).__name__}: {exc}") from None
        self._limit = self._max_frame_size
        return DecodedFrame(items, payloads.tags.count, length)
