"""Field types of proteins: how each annotation encodes, decodes and is named.

Pure (no I/O): the encode/decode contexts carry what the driver supplies
(how to make a vesicle, how to resolve one). :func:`compile_type` turns an
annotation into a :class:`FieldType` (canonical text for the fingerprint,
an encoder, a decoder); nested proteins are compiled by the caller's
``nested`` hook, which keeps this module below :mod:`cellmesh.wire.proteins`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, Final, Protocol

import attrs
import cbor2

from .codec import MAX_VESICLES_PER_FRAME, VESICLE_TAG, VesicleRef

#: Bytes fields at or above this size travel as sealed memfds by default.
DEFAULT_VESICLE_THRESHOLD: Final = 64 * 1024
#: Disable vesicles: everything travels inline.
NO_VESICLES: Final = 2**63


class BytesLike(Protocol):
    """What a bytes field accepts when sending: anything exposing a byte buffer."""

    def __len__(self) -> int: ...


class VesicleSource(Protocol):
    """A payload that can travel as a sealed memfd (implemented by Vesicle)."""

    def __len__(self) -> int: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...

    def seal(self) -> None: ...

    def tobytes(self) -> bytes: ...


class EncodeContext:
    """Per-frame encoding state: the vesicle threshold and the fds to attach.

    ``make_vesicle`` turns bytes into a sealed :class:`VesicleSource` (the
    driver supplies it: memfds are I/O). Vesicles appended to ``vesicles`` must
    be sent with the frame; those in ``owned`` were created here and must be
    closed once the frame is sent.
    """

    __slots__ = ("depth", "make_vesicle", "owned", "threshold", "vesicles")

    def __init__(
        self,
        threshold: int = DEFAULT_VESICLE_THRESHOLD,
        make_vesicle: Callable[[bytes | bytearray | memoryview], VesicleSource] | None = None,
    ) -> None:
        self.threshold = threshold if make_vesicle is not None else NO_VESICLES
        self.make_vesicle = make_vesicle
        self.vesicles: list[VesicleSource] = []
        self.owned: list[VesicleSource] = []
        #: Arrays and maps open around the value being encoded, below the body's own
        #: array (counted only inside fields that can hold a nested protein).
        self.depth = 0


class DecodeContext:
    """Per-frame decoding state: how to resolve vesicle refs, which schemas differ."""

    __slots__ = ("mismatched", "resolve")

    def __init__(
        self,
        resolve: Callable[[VesicleRef], memoryview] | None = None,
        mismatched: frozenset[str] = frozenset(),
    ) -> None:
        self.resolve = resolve
        self.mismatched = mismatched


_Enc = Callable[[Any, EncodeContext], Any]
_Dec = Callable[[Any, DecodeContext], Any]


class Bad(Exception):
    """Internal: a field value did not fit; carries the reason and the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooDeep(Bad):
    """Internal: a value nests deeper than a frame may (no union option can fix that)."""


#: How deep the arrays and maps inside a body may nest, the body's own array not
#: counted: the receiver refuses a frame nested deeper than ``MAX_DEPTH`` (64)
#: levels of arrays, maps and tags. A body sits at most 4 levels down (in a
#: batch: the frame, the item list, the item, the body), and a value at the
#: bottom may add 2 (a vesicle reference: its tag and its array), so a body the
#: sender accepts fits every form: 4 + 58 + 2 = 64.
MAX_BODY_NESTING: Final = 58


def enter(ctx: EncodeContext) -> int:
    """One more array or map open around the value being encoded (TooDeep past the limit)."""
    depth = ctx.depth + 1
    if depth > MAX_BODY_NESTING:
        raise TooDeep(
            f"nested more than {MAX_BODY_NESTING} arrays or maps deep inside the message "
            "(a frame may nest at most 64 levels, docs/protocol.md section 3)"
        )
    ctx.depth = depth
    return depth


def type_label(value: object) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------
# Field type compilation: each annotation becomes (canonical text, enc, dec).


@attrs.frozen
class FieldType:
    text: str
    enc: _Enc
    dec: _Dec
    #: The field never needs conversion either way (only a type check).
    plain: bool
    #: For plain fields: the exact Python types accepted (lets codegen inline the check).
    exact: tuple[type, ...] = ()
    #: The value can hold a nested protein, so its depth is not bounded by its
    #: annotation: its encoder counts the arrays and maps it opens (``ctx.depth``).
    nests: bool = False


def _scalar(py: type, text: str) -> FieldType:
    def check(value: Any, ctx: Any) -> Any:
        if type(value) is not py:
            raise Bad(f"expected {text}, got {type_label(value)}")
        return value

    return FieldType(text, check, check, True, (py,))


def _widen(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise Bad(f"an int of {value.bit_length()} bits is too large for a float") from None


def _float_type() -> FieldType:
    def convert(value: Any, ctx: Any) -> Any:
        if type(value) is float:
            return value
        if type(value) is int:
            return _widen(value)
        raise Bad(f"expected float, got {type_label(value)}")

    return FieldType("float", convert, convert, False)


def _none_type() -> FieldType:
    def check(value: Any, ctx: Any) -> Any:
        if value is not None:
            raise Bad(f"expected null, got {type_label(value)}")
        return None

    return FieldType("null", check, check, True, (type(None),))


def _bytes_type() -> FieldType:
    def enc(value: Any, ctx: EncodeContext) -> Any:
        kind = type(value)
        if kind is bytes or kind is bytearray:
            if len(value) < ctx.threshold:
                return value
        elif kind is memoryview:
            if value.nbytes < ctx.threshold:
                return value.tobytes()
        elif hasattr(value, "fileno") and hasattr(value, "seal") and hasattr(value, "tobytes"):
            if len(value) < ctx.threshold:
                return value.tobytes()
            index = len(ctx.vesicles)
            if index >= MAX_VESICLES_PER_FRAME:
                raise Bad(f"more than {MAX_VESICLES_PER_FRAME} vesicles in one frame")
            value.seal()
            ctx.vesicles.append(value)
            return cbor2.CBORTag(VESICLE_TAG, [index, len(value)])
        else:
            raise Bad(f"expected bytes, got {type_label(value)}")
        assert ctx.make_vesicle is not None
        if len(ctx.vesicles) >= MAX_VESICLES_PER_FRAME:
            raise Bad(f"more than {MAX_VESICLES_PER_FRAME} vesicles in one frame")
        vesicle = ctx.make_vesicle(value)
        ctx.owned.append(vesicle)
        index = len(ctx.vesicles)
        ctx.vesicles.append(vesicle)
        return cbor2.CBORTag(VESICLE_TAG, [index, len(vesicle)])

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is bytes:
            return value
        if type(value) is VesicleRef:
            if ctx.resolve is None:
                raise Bad("a vesicle arrived where none can be received")
            return ctx.resolve(value)
        raise Bad(f"expected bytes, got {type_label(value)}")

    return FieldType("bytes", enc, dec, False)


def _counted(enc: _Enc) -> _Enc:
    """``enc`` for a container that may hold a nested protein: counts the level it opens."""

    def enc_counted(value: Any, ctx: EncodeContext) -> Any:
        depth = enter(ctx)
        try:
            return enc(value, ctx)
        finally:
            ctx.depth = depth - 1

    return enc_counted


def _list_type(elem: FieldType, as_tuple: bool) -> FieldType:
    text = f"list<{elem.text}>"
    e_enc, e_dec = elem.enc, elem.dec

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise Bad(f"expected {text}, got {type_label(value)}")
        return [e_enc(v, ctx) for v in value]

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not list:
            raise Bad(f"expected {text}, got {type_label(value)}")
        out = [e_dec(v, ctx) for v in value]
        return tuple(out) if as_tuple else out

    if elem.nests:
        return FieldType(text, _counted(enc), dec, False, nests=True)
    return FieldType(text, enc, dec, False)


#: Integer map keys travel as plain CBOR integers (docs/protocol.md section 3:
#: a bignum may not be a map key), so they must fit in 64 bits.
_MAP_KEY_RANGE: Final = range(-(2**64), 2**64)


def _map_int_key(value: Any, ctx: Any) -> Any:
    if type(value) is not int:
        raise Bad(f"expected int, got {type_label(value)}")
    if value not in _MAP_KEY_RANGE:
        raise Bad(f"map key {value} does not fit in 64 bits (keys cannot be bignums)")
    return value


def _dict_type(key: FieldType, val: FieldType, where: str) -> FieldType:
    if key.text not in ("str", "int"):
        raise TypeError(f"{where}: dict keys must be str or int, not {key.text}")
    text = f"map<{key.text},{val.text}>"
    k_dec, v_enc, v_dec = key.dec, val.enc, val.dec
    k_enc = key.enc
    if key.text == "int":
        k_enc = _map_int_key

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not dict:
            raise Bad(f"expected {text}, got {type_label(value)}")
        return {k_enc(k, ctx): v_enc(v, ctx) for k, v in value.items()}

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not dict:
            raise Bad(f"expected {text}, got {type_label(value)}")
        return {k_dec(k, ctx): v_dec(v, ctx) for k, v in value.items()}

    if val.nests:
        return FieldType(text, _counted(enc), dec, False, nests=True)
    return FieldType(text, enc, dec, False)


def _union_type(options: list[FieldType]) -> FieldType:
    text = "union<" + ",".join(sorted({o.text for o in options})) + ">"
    # A canonical order, so the meaning never depends on declaration order (the
    # fingerprint does not): exact-type options first, then options that never
    # widen an int to a float, then the rest, each group by canonical text.
    options = sorted(options, key=lambda o: (not o.plain, "float" in o.text, o.text))

    def enc(value: Any, ctx: EncodeContext) -> Any:
        for option in options:
            try:
                return option.enc(value, ctx)
            except TooDeep:
                raise
            except Bad:
                continue
        raise Bad(f"expected {text}, got {type_label(value)}")

    def dec(value: Any, ctx: DecodeContext) -> Any:
        for option in options:
            try:
                return option.dec(value, ctx)
            except Bad:
                continue
        raise Bad(f"expected {text}, got {type_label(value)}")

    plain = all(o.plain for o in options)
    exact = tuple(t for o in options for t in o.exact) if plain else ()
    return FieldType(text, enc, dec, plain, exact, nests=any(o.nests for o in options))


_SCALARS: Final[dict[Any, Callable[[], FieldType]]] = {
    int: lambda: _scalar(int, "int"),
    str: lambda: _scalar(str, "str"),
    bool: lambda: _scalar(bool, "bool"),
    float: _float_type,
    bytes: _bytes_type,
    bytearray: _bytes_type,
    memoryview: _bytes_type,
    type(None): _none_type,
    None: _none_type,
}


def compile_type(
    tp: Any, where: str, nested: Callable[[Any], FieldType | None]
) -> FieldType:
    """The field type of annotation ``tp`` (TypeError naming ``where`` if unsupported).

    ``nested(tp)`` returns the field type of a nested protein class, or None
    when ``tp`` is not one.
    """
    if tp in _SCALARS:
        return _SCALARS[tp]()
    inner = nested(tp)
    if inner is not None:
        return inner
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union_type([compile_type(a, where, nested) for a in args])
    if origin is list and len(args) == 1:
        return _list_type(compile_type(args[0], where, nested), as_tuple=False)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _list_type(compile_type(args[0], where, nested), as_tuple=True)
    if origin is dict and len(args) == 2:
        key = compile_type(args[0], where, nested)
        return _dict_type(key, compile_type(args[1], where, nested), where)
    if origin is typing.Annotated:
        return compile_type(args[0], where, nested)
    raise TypeError(
        f"{where}: field type {_shown(tp)} is not supported by proteins (use int, float, "
        "str, bytes, bool, None, list[T], tuple[T, ...], dict[str|int, T], unions, or proteins)"
    )


def _shown(tp: Any) -> str:
    """An annotation as a message names it: a class by its (module-qualified) name, as
    written (``datetime.datetime``, ``set``), anything else as its repr (``set[int]``)."""
    if isinstance(tp, type) and not typing.get_args(tp):
        module = tp.__module__
        return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"
    return repr(tp)
