"""Proteins: typed message classes with stable wire names and schema fingerprints.

Theory of operation
-------------------
``@protein`` turns a class into a frozen attrs class and records it in a
:class:`ProteinRegistry` under a stable *wire name* (by default
``module.QualName``; pass one explicitly to keep it stable across renames).
On first use its annotations are compiled into a :class:`Schema`: one small
encode and decode function per field, plus a *fingerprint* (16 hex digits of
SHA-256 over a canonical text of the wire name, field names and field types).

On the wire a protein value is a CBOR array ``[wire_name, field1, field2, ...]``
in declaration order; nested proteins are nested arrays of the same shape.
Peers exchange fingerprints in their hello; a protein whose fingerprint
differs between the two sides is refused with :class:`SchemaMismatch` rather
than misread.

Field types: ``int``, ``float`` (an int is accepted and widened), ``str``,
``bytes`` (also bytearray, memoryview, :class:`~cellmesh.Vesicle` when
sending), ``bool`` (never confused with int), ``None``, ``list[T]``,
``tuple[T, ...]``, ``dict[K, V]`` with ``K`` str or int, unions/``Optional``
of these, and other proteins. Nothing is ever pickled, imported or evaluated
from the wire.

This module is pure: it does no I/O. Large bytes fields become vesicles via
the :class:`EncodeContext` the driver passes in, and vesicle references are
turned back into buffers by the :class:`DecodeContext`'s ``resolve`` callback.
"""

from __future__ import annotations

import hashlib
import operator
import types
import typing
from collections.abc import Callable, Collection
from typing import Any, Final, NoReturn, Protocol, TypeVar, overload

import attrs
import cbor2

from ..errors import ConfigError, FieldError, SchemaMismatch, UnknownProtein
from .codec import (
    MAX_VESICLES_PER_FRAME,
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    VESICLE_TAG,
    Body,
    VesicleRef,
    typed_array,
)

T = TypeVar("T")

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

    __slots__ = ("make_vesicle", "owned", "threshold", "vesicles")

    def __init__(
        self,
        threshold: int = DEFAULT_VESICLE_THRESHOLD,
        make_vesicle: Callable[[bytes | bytearray | memoryview], VesicleSource] | None = None,
    ) -> None:
        self.threshold = threshold if make_vesicle is not None else NO_VESICLES
        self.make_vesicle = make_vesicle
        self.vesicles: list[VesicleSource] = []
        self.owned: list[VesicleSource] = []


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


class _Bad(Exception):
    """Internal: a field value did not fit; carries the reason and the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _type_label(value: object) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------
# Field type compilation: each annotation becomes (canonical text, enc, dec).


@attrs.frozen
class _FieldType:
    text: str
    enc: _Enc
    dec: _Dec
    #: The field never needs conversion either way (only a type check).
    plain: bool
    #: For plain fields: the exact Python types accepted (lets codegen inline the check).
    exact: tuple[type, ...] = ()


def _scalar(py: type, text: str) -> _FieldType:
    def check(value: Any, ctx: Any) -> Any:
        if type(value) is not py:
            raise _Bad(f"expected {text}, got {_type_label(value)}")
        return value

    return _FieldType(text, check, check, True, (py,))


def _widen(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise _Bad(f"an int of {value.bit_length()} bits is too large for a float") from None


def _float_type() -> _FieldType:
    def convert(value: Any, ctx: Any) -> Any:
        if type(value) is float:
            return value
        if type(value) is int:
            return _widen(value)
        raise _Bad(f"expected float, got {_type_label(value)}")

    return _FieldType("float", convert, convert, False)


def _none_type() -> _FieldType:
    def check(value: Any, ctx: Any) -> Any:
        if value is not None:
            raise _Bad(f"expected null, got {_type_label(value)}")
        return None

    return _FieldType("null", check, check, True, (type(None),))


def _bytes_type() -> _FieldType:
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
                raise _Bad(f"more than {MAX_VESICLES_PER_FRAME} vesicles in one frame")
            value.seal()
            ctx.vesicles.append(value)
            return cbor2.CBORTag(VESICLE_TAG, [index, len(value)])
        else:
            raise _Bad(f"expected bytes, got {_type_label(value)}")
        assert ctx.make_vesicle is not None
        if len(ctx.vesicles) >= MAX_VESICLES_PER_FRAME:
            raise _Bad(f"more than {MAX_VESICLES_PER_FRAME} vesicles in one frame")
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
                raise _Bad("a vesicle arrived where none can be received")
            return ctx.resolve(value)
        raise _Bad(f"expected bytes, got {_type_label(value)}")

    return _FieldType("bytes", enc, dec, False)


def _list_type(elem: _FieldType, as_tuple: bool) -> _FieldType:
    text = f"list<{elem.text}>"
    e_enc, e_dec = elem.enc, elem.dec

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise _Bad(f"expected {text}, got {_type_label(value)}")
        return [e_enc(v, ctx) for v in value]

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not list:
            raise _Bad(f"expected {text}, got {_type_label(value)}")
        out = [e_dec(v, ctx) for v in value]
        return tuple(out) if as_tuple else out

    return _FieldType(text, enc, dec, False)


def _dict_type(key: _FieldType, val: _FieldType, where: str) -> _FieldType:
    if key.text not in ("str", "int"):
        raise TypeError(f"{where}: dict keys must be str or int, not {key.text}")
    text = f"map<{key.text},{val.text}>"
    k_dec, v_enc, v_dec = key.dec, val.enc, val.dec
    k_enc = key.enc

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not dict:
            raise _Bad(f"expected {text}, got {_type_label(value)}")
        return {k_enc(k, ctx): v_enc(v, ctx) for k, v in value.items()}

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not dict:
            raise _Bad(f"expected {text}, got {_type_label(value)}")
        return {k_dec(k, ctx): v_dec(v, ctx) for k, v in value.items()}

    return _FieldType(text, enc, dec, False)


def _union_type(options: list[_FieldType]) -> _FieldType:
    text = "union<" + ",".join(sorted({o.text for o in options})) + ">"
    # A canonical order, so the meaning never depends on declaration order (the
    # fingerprint does not): exact-type options first, then options that never
    # widen an int to a float, then the rest, each group by canonical text.
    options = sorted(options, key=lambda o: (not o.plain, "float" in o.text, o.text))

    def enc(value: Any, ctx: EncodeContext) -> Any:
        for option in options:
            try:
                return option.enc(value, ctx)
            except _Bad:
                continue
        raise _Bad(f"expected {text}, got {_type_label(value)}")

    def dec(value: Any, ctx: DecodeContext) -> Any:
        for option in options:
            try:
                return option.dec(value, ctx)
            except _Bad:
                continue
        raise _Bad(f"expected {text}, got {_type_label(value)}")

    plain = all(o.plain for o in options)
    exact = tuple(t for o in options for t in o.exact) if plain else ()
    return _FieldType(text, enc, dec, plain, exact)


def _protein_type(cls: type) -> _FieldType:
    name = wire_name(cls)

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not cls:
            raise _Bad(f"expected protein {name}, got {_type_label(value)}")
        return schema_of(cls).encode(value, ctx)

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not list or not value or value[0] != name:
            raise _Bad(f"expected protein {name}")
        if name in ctx.mismatched:
            raise _Bad(f"nested protein {name} has a different schema at the peer")
        return schema_of(cls).decode_fields(value, ctx)

    return _FieldType(name, enc, dec, False)


_SCALARS: Final[dict[Any, Callable[[], _FieldType]]] = {
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


def _compile_type(tp: Any, where: str) -> _FieldType:
    if tp in _SCALARS:
        return _SCALARS[tp]()
    if isinstance(tp, type) and is_protein(tp):
        return _protein_type(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union_type([_compile_type(a, where) for a in args])
    if origin is list and len(args) == 1:
        return _list_type(_compile_type(args[0], where), as_tuple=False)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _list_type(_compile_type(args[0], where), as_tuple=True)
    if origin is dict and len(args) == 2:
        return _dict_type(_compile_type(args[0], where), _compile_type(args[1], where), where)
    if origin is typing.Annotated:
        return _compile_type(args[0], where)
    raise TypeError(
        f"{where}: field type {tp!r} is not supported by proteins (use int, float, str, "
        "bytes, bool, None, list[T], tuple[T, ...], dict[str|int, T], unions, or proteins)"
    )


# --------------------------------------------------------------------------
# Schemas.


def _check_source(var: str, exact: tuple[type, ...]) -> str:
    """Source text of a condition that is true when ``var`` has a wrong type."""
    if exact == (type(None),):
        return f"{var} is not None"
    if len(exact) == 1:
        return f"type({var}) is not _t_{exact[0].__name__}"
    names = ", ".join(f"_t_{t.__name__}" for t in exact)
    return f"type({var}) not in ({names},)"


class Schema:
    """The compiled wire form of one protein class.

    ``encode`` and ``decode_fields`` are generated per class (as attrs does for
    ``__init__``): plain scalar fields get their type check inlined, other
    fields call their compiled converter. Generated code only ever references
    the class, its field names and the converters; nothing from the wire.
    """

    __slots__ = ("_ftypes", "_getters", "cls", "decode_fields", "encode", "field_names",
                 "fingerprint", "name", "text")

    encode: Callable[[Any, EncodeContext], Body]
    decode_fields: Callable[[Body, DecodeContext], Any]

    def __init__(self, cls: type, name: str) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = attrs.fields(cls)
        compiled = [
            _compile_type(hints[f.name], f"{cls.__qualname__}.{f.name}") for f in fields
        ]
        self.cls = cls
        self.name = name
        self.field_names = tuple(f.name for f in fields)
        self.text = name + "(" + ";".join(
            f"{f.name}:{c.text}" for f, c in zip(fields, compiled, strict=True)
        ) + ")"
        self.fingerprint = hashlib.sha256(self.text.encode()).hexdigest()[:16]
        self.encode, self.decode_fields = self._generate(compiled)
        self._ftypes = tuple(compiled)
        self._getters = tuple(operator.attrgetter(n) for n in self.field_names)

    # -- columnar form: many values of this protein as one array per field --

    def column_values(self, objs: list[Any], ctx: EncodeContext) -> list[list[Any]]:
        """Validate ``objs`` (all of this class) and return one value list per field.

        Values are in wire form (floats widened, nested proteins encoded); pass
        any slice of them to :meth:`pack_columns`. A bad value raises
        :class:`FieldError` naming the field, exactly as :meth:`encode` would.
        """
        columns: list[list[Any]] = []
        for getter, ftype in zip(self._getters, self._ftypes, strict=True):
            col = list(map(getter, objs))
            if ftype.text == "float":
                kinds = set(map(type, col))
                if not kinds <= {float}:
                    if not kinds <= {float, int}:
                        self._raise_first_bad(objs)
                    try:
                        col = [float(v) for v in col]  # ints widen, as in encode
                    except OverflowError:
                        self._raise_first_bad(objs)
                columns.append(col)
            elif ftype.plain and ftype.exact:
                if not set(map(type, col)) <= set(ftype.exact):
                    self._raise_first_bad(objs)
                columns.append(col)
            else:
                enc = ftype.enc
                try:
                    columns.append([enc(v, ctx) for v in col])
                except _Bad:
                    self._raise_first_bad(objs)
        return columns

    def pack_columns(self, columns: list[list[Any]]) -> list[Any]:
        """Wire form of column values: int/float columns as RFC 8746 typed arrays."""
        packed: list[Any] = []
        for col, ftype in zip(columns, self._ftypes, strict=True):
            tag = _TYPED_TAG.get(ftype.text)
            if tag is not None:
                try:
                    packed.append(typed_array(col, tag))
                    continue
                except OverflowError:  # an int beyond int64: a plain array
                    pass
            packed.append(col)
        return packed

    def _raise_first_bad(self, objs: list[Any]) -> NoReturn:
        probe = EncodeContext(NO_VESICLES)
        for obj in objs:
            self.encode(obj, probe)  # raises FieldError for the first bad object
        raise AssertionError("a column failed but every object encodes")

    def decode_columns(self, columns: list[Any], count: int, ctx: DecodeContext) -> list[Any]:
        """Build ``count`` instances from a columnar body (raises _Bad on a bad value)."""
        ftypes = self._ftypes
        if len(columns) != len(ftypes):
            raise _Bad(f"{self.name} has {len(ftypes)} fields, got {len(columns)} columns")
        values: list[list[Any]] = []
        for col, ftype, field in zip(columns, ftypes, self.field_names, strict=True):
            kinds = set(map(type, col))
            if ftype.plain and ftype.exact and kinds <= set(ftype.exact):
                values.append(col)
                continue
            if ftype.text == "float" and kinds <= {float}:
                values.append(col)
                continue
            dec = ftype.dec
            try:
                values.append([dec(v, ctx) for v in col])
            except _Bad as exc:
                raise _Bad(f"field {field!r}: {exc}", field) from None
        if not values:
            return [self.cls() for _ in range(count)]
        return list(map(self.cls, *values))

    def _generate(
        self, compiled: list[_FieldType]
    ) -> tuple[Callable[[Any, EncodeContext], Body], Callable[[Body, DecodeContext], Any]]:
        names = self.field_names
        scope: dict[str, Any] = {
            "_cls": self.cls,
            "_name": self.name,
            "_Bad": _Bad,
            "_FieldError": FieldError,
            "_label": _type_label,
            "_nfields": len(names),
        }
        for t in (int, str, bool, float, bytes, type(None)):
            scope[f"_t_{t.__name__}"] = t
        enc_lines = ["def encode(obj, ctx):"]
        dec_lines = [
            "def decode_fields(body, ctx):",
            "    if len(body) != _nfields + 1:",
            "        raise _Bad(f'{_name} has {_nfields} fields, got {len(body) - 1}')",
        ]
        for i, (field, ftype) in enumerate(zip(names, compiled, strict=True)):
            scope[f"_enc{i}"] = ftype.enc
            scope[f"_dec{i}"] = ftype.dec
            scope[f"_f{i}"] = field
            enc_lines.append(f"    v{i} = obj.{field}")
            dec_lines.append(f"    v{i} = body[{i + 1}]")
            if ftype.plain and ftype.exact:
                bad = _check_source(f"v{i}", ftype.exact)
                enc_lines += [
                    f"    if {bad}:",
                    f"        raise _FieldError(_name, f'field {{_f{i}!r}}: expected "
                    f"{ftype.text}, got {{_label(v{i})}}', _f{i})",
                ]
                dec_lines += [
                    f"    if {bad}:",
                    f"        raise _Bad(f'field {{_f{i}!r}}: expected {ftype.text}, "
                    f"got {{_label(v{i})}}', _f{i})",
                ]
            else:
                enc_lines += [
                    "    try:",
                    f"        v{i} = _enc{i}(v{i}, ctx)",
                    "    except _Bad as exc:",
                    f"        raise _FieldError(_name, f'field {{_f{i}!r}}: {{exc}}', _f{i}) "
                    "from None",
                ]
                dec_lines += [
                    "    try:",
                    f"        v{i} = _dec{i}(v{i}, ctx)",
                    "    except _Bad as exc:",
                    f"        raise _Bad(f'field {{_f{i}!r}}: {{exc}}', _f{i}) from None",
                ]
        values = "".join(f"v{i}, " for i in range(len(names)))
        enc_lines.append(f"    return [_name, {values}]")
        dec_lines.append(f"    return _cls({values})")
        source = "\n".join(enc_lines) + "\n\n" + "\n".join(dec_lines) + "\n"
        code = compile(source, f"<protein {self.name}>", "exec")
        exec(code, scope)  # generated from our own schema only; see class docstring
        return scope["encode"], scope["decode_fields"]


_TYPED_TAG: Final = {"int": TAG_SINT64_LE, "float": TAG_FLOAT64_LE}


def is_protein(cls: object) -> bool:
    """True if ``cls`` was decorated with :func:`protein`."""
    return isinstance(cls, type) and "__protein_name__" in cls.__dict__


def wire_name(cls: type) -> str:
    """The stable wire name of a protein class."""
    try:
        name: str = cls.__dict__["__protein_name__"]
    except KeyError:
        raise TypeError(
            f"{cls.__qualname__} is not a protein (decorate it with @protein)"
        ) from None
    return name


def schema_of(cls: type) -> Schema:
    """The compiled :class:`Schema` of a protein class (compiled once, on first use)."""
    schema = cls.__dict__.get("__protein_schema__")
    if schema is None:
        schema = Schema(cls, wire_name(cls))
        type.__setattr__(cls, "__protein_schema__", schema)
    return typing.cast(Schema, schema)


def fingerprint(cls: type) -> str:
    """The schema fingerprint of a protein class (16 hex digits)."""
    return schema_of(cls).fingerprint


class ProteinRegistry:
    """Wire name -> protein class, for decoding what arrives.

    Append-only: it records class *definitions*, like the import system does,
    and holds no per-connection or per-run state. Registering a different class
    under a taken wire name is refused, unless it is the same module-qualified
    class defined again (a module reload), which replaces the old one.
    Compiled schemas are cached here by name and by type for the hot path.
    """

    __slots__ = ("_by_name", "_by_type", "_fingerprints", "_schemas")

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}
        self._schemas: dict[str, Schema] = {}
        self._by_type: dict[type, Schema] = {}
        self._fingerprints: dict[str, str] | None = None

    def register(self, cls: type) -> None:
        """Record ``cls`` under its wire name (see the class docstring for conflicts)."""
        name = wire_name(cls)
        old = self._by_name.get(name)
        if old is not None and old is not cls and (
            old.__module__ != cls.__module__ or old.__qualname__ != cls.__qualname__
        ):
            raise ConfigError(
                "@protein",
                f"wire name {name!r} is already used by {old.__module__}.{old.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} needs another name",
            )
        self._by_name[name] = cls
        self._schemas.pop(name, None)
        if old is not None:
            self._by_type.pop(old, None)
        self._fingerprints = None

    def forget_modules(self, modules: Collection[str]) -> int:
        """Drop every class defined in one of ``modules``; return how many.

        For code that was unloaded (a cell's standby switching to new code in
        a hot swap evicts the old modules): their wire names are free again,
        for the new code to define as it likes.
        """
        gone = [n for n, c in self._by_name.items() if c.__module__ in modules]
        for name in gone:
            cls = self._by_name.pop(name)
            self._schemas.pop(name, None)
            self._by_type.pop(cls, None)
        if gone:
            self._fingerprints = None
        return len(gone)

    def get(self, name: str) -> type | None:
        """The class registered under ``name``, or None."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def fingerprints(self) -> dict[str, str]:
        """Every registered wire name with its fingerprint (what a hello carries)."""
        if self._fingerprints is None:
            self._fingerprints = {n: fingerprint(c) for n, c in self._by_name.items()}
        return dict(self._fingerprints)

    def mismatched(self, theirs: dict[str, str]) -> frozenset[str]:
        """Wire names both sides know whose fingerprints differ."""
        ours = self.fingerprints()
        return frozenset(n for n, fp in theirs.items() if n in ours and ours[n] != fp)

    def encode(self, obj: object, ctx: EncodeContext) -> Body:
        """Encode a protein instance as ``[wire_name, field...]``.

        Raises :class:`FieldError` for a field of the wrong type and TypeError
        for an object that is not a protein. The class need not be registered
        here (it only has to be a protein).
        """
        schema = self._by_type.get(type(obj))
        if schema is None:
            schema = self.schema_for(obj)
        return schema.encode(obj, ctx)

    def schema_for(self, obj: object) -> Schema:
        """The schema of a protein instance (TypeError if it is not one)."""
        schema = self._by_type.get(type(obj))
        if schema is None:
            cls = type(obj)
            if not is_protein(cls):
                raise TypeError(
                    f"{cls.__qualname__} is not a protein (decorate it with @protein)"
                )
            schema = self._by_type[cls] = schema_of(cls)
        return schema

    def _schema_named(
        self, name: str, ctx: DecodeContext, peer: dict[str, str] | None
    ) -> Schema:
        """The schema for wire name ``name`` (UnknownProtein / SchemaMismatch if unusable)."""
        schema = self._schemas.get(name)
        if schema is None:
            cls = self._by_name.get(name)
            if cls is None:
                raise UnknownProtein(name)
            schema = self._schemas[name] = schema_of(cls)
        if ctx.mismatched and name in ctx.mismatched:
            raise SchemaMismatch(name, schema.fingerprint, (peer or {}).get(name, "?"))
        return schema

    def decode_columns(
        self,
        name: str,
        columns: list[Any],
        count: int,
        ctx: DecodeContext,
        peer: dict[str, str] | None = None,
    ) -> list[Any]:
        """Decode a columnar body of ``count`` instances of protein ``name``.

        Raises :class:`UnknownProtein`, :class:`SchemaMismatch` or
        :class:`FieldError` (a bad value fails the whole column).
        """
        schema = self._schema_named(name, ctx, peer)
        try:
            return schema.decode_columns(columns, count, ctx)
        except _Bad as exc:
            raise FieldError(name, str(exc), exc.field) from None
        except (RecursionError, TypeError) as exc:
            raise FieldError(name, f"bad column values ({type(exc).__name__})") from None

    def decode(self, body: Body, ctx: DecodeContext, peer: dict[str, str] | None = None) -> Any:
        """Decode a body into a protein instance.

        Raises :class:`UnknownProtein`, :class:`SchemaMismatch` (``peer`` is the
        peer's fingerprint table, for the message) or :class:`FieldError`.
        """
        name = body[0]
        schema = self._schemas.get(name)
        if schema is None or ctx.mismatched:
            schema = self._schema_named(name, ctx, peer)
        try:
            return schema.decode_fields(body, ctx)
        except _Bad as exc:
            raise FieldError(name, str(exc), exc.field) from None
        except RecursionError:
            raise FieldError(name, "nesting too deep") from None


def encode_body(obj: object, ctx: EncodeContext) -> Body:
    """Encode a protein instance as ``[wire_name, field...]`` (FieldError if invalid)."""
    cls = type(obj)
    if not is_protein(cls):
        raise TypeError(f"{cls.__qualname__} is not a protein (decorate it with @protein)")
    return schema_of(cls).encode(obj, ctx)


#: The registry ``@protein`` records into unless given another.
PROTEINS: Final = ProteinRegistry()


@overload
@typing.dataclass_transform(frozen_default=True)
def protein(name: type[T], /) -> type[T]: ...
@overload
@typing.dataclass_transform(frozen_default=True)
def protein(
    name: str | None = None, /, *, registry: ProteinRegistry | None = None
) -> Callable[[type[T]], type[T]]: ...


@typing.dataclass_transform(frozen_default=True)
def protein(
    name: str | type[T] | None = None, /, *, registry: ProteinRegistry | None = None
) -> type[T] | Callable[[type[T]], type[T]]:
    """Make a class a protein: a frozen attrs class with a stable wire name.

    Use as ``@protein`` (wire name ``module.QualName``) or
    ``@protein("pkg.Name")`` (explicit; keeps the name stable across renames).
    Instances are immutable and may be built positionally or by keyword.
    The schema is compiled (and field types checked) on first use.
    """

    def apply(cls: type[T], explicit: str | None) -> type[T]:
        if not isinstance(cls, type):
            raise TypeError("@protein decorates classes")
        new_cls: type[T] = attrs.frozen(cls)
        wn = explicit if explicit is not None else f"{cls.__module__}.{cls.__qualname__}"
        if not wn or not isinstance(wn, str):
            raise ConfigError("@protein", f"wire name must be a non-empty string, got {wn!r}")
        type.__setattr__(new_cls, "__protein_name__", wn)
        (registry if registry is not None else PROTEINS).register(new_cls)
        return new_cls

    if isinstance(name, type):
        return apply(name, None)

    def decorator(cls: type[T]) -> type[T]:
        return apply(cls, name)

    return decorator
