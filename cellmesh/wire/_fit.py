"""Whether a message fits a frame, and the errors that say why one does not.

A sender must not send an item too large for its peer's frame limit
(docs/protocol.md 2): :func:`body_fits` decides for one call or signal
(cheaply for small flat bodies, exactly near the limit), :func:`too_large_text`
words the refusal, and the ``unencodable_*`` helpers name the field whose
text cannot travel as UTF-8. Pure; re-exported by :mod:`cellmesh.wire.codec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import cbor2

from ..errors import FieldError
from ._cliptext import show_value
from ._columns import MAX_ID
from ._kinds import Body, Kind


def unencodable_text(items: list[list[Any]], exc: UnicodeEncodeError) -> FieldError:
    """The :class:`FieldError` for items whose encoding raised ``exc``: text that
    cannot travel as UTF-8 (a lone surrogate), naming the first protein that has it."""
    name = "?"
    for item in items:
        try:
            cbor2.dumps(item)
        except UnicodeEncodeError:
            body = item[3] if item[0] == Kind.COLUMNS else item[-1]
            name = body if isinstance(body, str) else str(body[0]) if body else "?"
            break
    return FieldError(name, text_problem(exc))


def text_problem(exc: UnicodeEncodeError) -> str:
    """What is wrong with a str value that raised ``exc`` when encoded as UTF-8."""
    return (
        f"a str value cannot be encoded as UTF-8 ({exc.reason}: {exc.object[exc.start:exc.end]!r}"
        f" at index {exc.start}); text must be valid Unicode, without lone surrogates"
    )


#: The most a call or signal's envelope adds to its body when it travels alone:
#: ``[1, id, body]`` is an array head, the kind and an id of at most 9 bytes (a
#: signal's ``[4, body]`` takes 2). A batch or a columns item that does not fit
#: is split down to such plain items (:func:`encode_chunks`), so this is all the
#: room a message needs beyond its body.
LONE_ENVELOPE: Final = 11
#: The room :func:`body_fits` keeps beyond its cheap bound of the body's values:
#: the envelope and the body's own array head (at most 9 bytes).
_CHEAP_ROOM: Final = LONE_ENVELOPE + 9
_SMALL_INT: Final = 1 << 64


def body_fits(body: Body, max_frame_size: int, field_names: Sequence[str] = ()) -> bool:
    """True if a call or signal carrying ``body`` fits one frame of ``max_frame_size``.

    That is, if ``[1, id, body]`` with the largest id (:func:`lone_size`)
    fits: the largest frame the message can need, since batches and columns
    items that do not fit are split down to plain items (:func:`encode_chunks`).
    So a message is refused only if it cannot fit even alone (within the
    8 bytes a smaller id would save; a signal within 9), and one that passes
    is always sent.

    Exact where it matters and cheap where it does not: a flat body of
    scalars, short text and bytes is bounded without encoding it (its values'
    worst-case CBOR sizes are summed), and only a body whose bound comes
    near the limit, or that nests arrays or maps, is encoded to measure it.
    Raises :class:`FieldError` for text that cannot be encoded (a lone
    surrogate), naming the field when ``field_names`` (the protein's, in
    order) are given.
    """
    bound = _CHEAP_ROOM
    for value in body:
        kind = type(value)
        if kind is int:
            if not -_SMALL_INT < value < _SMALL_INT:
                break
            bound += 9
        elif kind is str:
            if not value.isascii():
                try:
                    value.encode()  # a lone surrogate cannot travel
                except UnicodeEncodeError as exc:
                    raise unencodable_field(body, exc, field_names) from None
            bound += 4 * len(value) + 9
        elif kind is bytes:
            bound += len(value) + 9
        elif kind is float:
            bound += 9
        elif value is None or kind is bool:
            bound += 1
        else:
            break
    else:
        if bound <= max_frame_size:
            return True
    return lone_size(body, field_names) <= max_frame_size


def lone_size(body: Body, field_names: Sequence[str] = ()) -> int:
    """The exact payload size of ``[1, MAX_ID, body]``: the largest frame a call
    or signal carrying ``body`` travels in (see :func:`body_fits`).

    Encodes the body: for a message near the limit, or to report one too
    large. Raises :class:`FieldError` as :func:`body_fits` does.
    """
    try:
        return len(cbor2.dumps([Kind.CALL, MAX_ID, body]))
    except UnicodeEncodeError as exc:
        raise unencodable_field(body, exc, field_names) from None


def too_large_text(what: str, size: int, limit: int, body: object = None) -> str:
    """The message of the error for ``what`` (``"a reply (p.Name)"``), an item
    whose frame would be ``size`` bytes, too large for the peer's ``limit``.

    ``body`` is the protein value it carries, if any: only bytes fields can
    travel outside a frame (as vesicles, docs/protocol.md section 13), so
    the advice depends on whether it holds any; an item without a body (an
    error frame) gets none.
    """
    text = f"{what} of {size:,} bytes does not fit the peer's {limit:,}-byte frame limit"
    if body is None:
        return text
    if _holds_bytes(body):
        return (f"{text}; send large bytes as a vesicle (a bytes field of vesicle_threshold "
                "bytes or more travels as one)")
    return f"{text} (only bytes fields can travel outside a frame, as vesicles)"


def _holds_bytes(value: object) -> bool:
    """True if ``value`` (an encoded body) holds a byte string, at any depth."""
    todo = [value]
    while todo:
        value = todo.pop()
        if type(value) is bytes:
            return True
        if type(value) is list:
            todo += value
        elif type(value) is dict:
            todo += value.keys()
            todo += value.values()
    return False


#: How :func:`too_large_text` names an item, by kind (others are "a frame of kind K").
_ITEM_WHAT: Final = {
    Kind.CALL: "a call", Kind.REPLY: "a reply", Kind.SIGNAL: "a signal",
    Kind.ERROR: "an error frame", Kind.CANCEL: "a cancel frame", Kind.CREDIT: "a credit frame",
    Kind.GOAWAY: "a goaway frame", Kind.HELLO: "a hello",
}


def item_body(item: list[Any]) -> object:
    """The protein value a call, reply or signal item carries (None for others)."""
    kind = item[0]
    if kind == Kind.SIGNAL:
        return item[1]
    if kind in (Kind.CALL, Kind.REPLY):
        return item[2]
    return None


def item_what(item: list[Any]) -> str:
    """``"a call (p.Name)"``, ``"an error frame (ValueError, code 30)"``: an item
    (built by this process), as an error names it."""
    what = _ITEM_WHAT.get(item[0], f"a frame of kind {show_value(item[0])}")
    if item[0] == Kind.ERROR and len(item) == 6:
        return f"{what} ({item[3]}, code {item[2]})"
    body = item_body(item)
    if type(body) is list and body and type(body[0]) is str:
        what = f"{what} ({body[0]})"  # (a wire name of our own registry)
    return what


def check_text(body: Body, field_names: Sequence[str]) -> None:
    """Raise :class:`FieldError` naming the field if a top-level ``str`` value of
    ``body`` cannot travel (a lone surrogate); ASCII text costs one C call."""
    for value in body:
        if type(value) is str and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                raise unencodable_field(body, exc, field_names) from None


def unencodable_field(
    body: Body, exc: UnicodeEncodeError, field_names: Sequence[str]
) -> FieldError:
    """The :class:`FieldError` for a ``body`` whose encoding raised ``exc``, naming
    the first field (of ``field_names``) that holds the text at fault."""
    for name, value in zip(field_names, body[1:], strict=False):
        try:
            cbor2.dumps(value)
        except UnicodeEncodeError:
            return text_field_error(str(body[0]), name, exc)
    return FieldError(str(body[0]), text_problem(exc))


def text_field_error(wire_name: str, field: str, exc: UnicodeEncodeError) -> FieldError:
    """The :class:`FieldError` of protein ``wire_name`` whose field ``field`` holds
    text that cannot travel (``exc``)."""
    return FieldError(wire_name, f"field {field!r}: {text_problem(exc)}", field)


__all__ = [
    "LONE_ENVELOPE", "body_fits", "check_text", "item_body", "item_what", "lone_size",
    "text_field_error", "text_problem", "too_large_text", "unencodable_field",
    "unencodable_text",
]
