"""Proteins: typed message classes with stable wire names and schema fingerprints.

Theory of operation
-------------------
``@protein`` turns a class into a frozen attrs class and records it in a
:class:`ProteinRegistry` under a stable *wire name* (by default
``module.QualName``; pass one explicitly to keep it stable across renames).
The decorator checks that each field's type is one proteins support (a
:class:`TypeError` naming the class, the field and the type otherwise; a
field whose annotation names something not defined yet, such as a protein
declared further down, is checked when the schema compiles). On first use
its annotations are compiled into a :class:`Schema`: one small encode and
decode function per field, plus a *fingerprint* (16 hex digits of SHA-256
over a canonical text of the wire name, field names and field types).

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
import inspect
import operator
import sys
import types
import typing
from collections import ChainMap, deque
from collections.abc import Callable, Collection
from itertools import repeat
from typing import Any, Final, NoReturn, TypeVar, overload

import attrs

from ..errors import (
    ConfigError,
    FieldError,
    RemoteProtocolError,
    SchemaMismatch,
    UnknownProtein,
)
from ._fields import (
    DEFAULT_VESICLE_THRESHOLD,
    NO_VESICLES,
    BytesLike,
    DecodeContext,
    EncodeContext,
    VesicleSource,
    compile_type,
)
from ._fields import Bad as _Bad
from ._fields import FieldType as _FieldType
from ._fields import enter as _enter
from ._fields import type_label as _type_label
from .codec import (
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    Body,
    bytes_column,
    text_column,
    text_field_error,
    typed_array,
)

__all__ = [
    "DEFAULT_VESICLE_THRESHOLD", "NO_VESICLES", "PROTEINS", "BytesLike", "DecodeContext",
    "EncodeContext", "ProteinRegistry", "Schema", "VesicleSource", "encode_body", "fingerprint",
    "is_protein", "protein", "schema_of", "wire_name",
]

T = TypeVar("T")

def _protein_type(cls: type) -> _FieldType:
    name = wire_name(cls)

    def enc(value: Any, ctx: EncodeContext) -> Any:
        if type(value) is not cls:
            raise _Bad(f"expected protein {name}, got {_type_label(value)}")
        depth = _enter(ctx)  # the nested protein's array (TooDeep past the limit)
        try:
            return schema_of(cls).encode(value, ctx)  # FieldError naming the inner protein
        finally:
            ctx.depth = depth - 1

    def dec(value: Any, ctx: DecodeContext) -> Any:
        if type(value) is not list or not value or value[0] != name:
            raise _Bad(f"expected protein {name}")
        if name in ctx.mismatched:
            raise _Bad(f"nested protein {name} has a different schema at the peer")
        return schema_of(cls).decode_fields(value, ctx)

    return _FieldType(name, enc, dec, False, nests=True)


def _nested(tp: Any) -> _FieldType | None:
    return _protein_type(tp) if isinstance(tp, type) and is_protein(tp) else None


def _compile_type(tp: Any, where: str) -> _FieldType:
    return compile_type(tp, where, _nested)


def _field_hints(cls: type) -> dict[str, Any]:
    """The annotation of each field of protein ``cls`` that resolves now, resolved.

    Each annotation is resolved on its own, the way :func:`typing.get_type_hints`
    resolves a class's (the defining module's names, then the defining class's,
    then builtins), with ``cls``'s own name bound to ``cls`` (a recursive
    protein: the decorator runs before the module binds the name). A field
    whose annotation does not resolve yet (a protein declared further down)
    is left out: the schema checks it when it compiles, on first use.
    """
    fields = {f.name for f in attrs.fields(cls)}
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        annotations = inspect.get_annotations(base)  # its own, unevaluated
        module = sys.modules.get(base.__module__)
        names = ChainMap({cls.__name__: cls}, vars(module) if module is not None else {})
        namespace = dict(vars(base))
        for name, annotation in annotations.items():
            if name not in fields:
                continue
            hints.pop(name, None)  # an override that does not resolve is not the base's
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                resolved = typing.get_type_hints(
                    holder, globalns=namespace, localns=names, include_extras=True
                )
            except Exception:
                continue  # not resolvable yet: checked on first use
            hints[name] = resolved[name]
    return hints


def _check_field_types(cls: type) -> None:
    """Refuse a protein class with a field of a type proteins do not support.

    Raises :class:`TypeError` naming the class, the field and the type, when
    ``@protein`` runs (an unused protein with such a field would otherwise be
    found only by the first connection that computes every fingerprint).
    Only the types are checked: the schema is still compiled on first use.
    """
    for name, annotation in _field_hints(cls).items():
        _compile_type(annotation, f"{cls.__qualname__}.{name}")


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

    __slots__ = ("_ftypes", "_getters", "_slots", "cls", "decode_fields", "encode",
                 "field_names", "fingerprint", "fits_any_frame", "name", "text", "weigh")

    encode: Callable[[Any, EncodeContext], Body]
    decode_fields: Callable[[Body, DecodeContext], Any]

    def __init__(self, cls: type, name: str) -> None:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except NameError as exc:  # a forward reference to a name never defined
            raise NameError(
                f"protein {name} ({cls.__module__}.{cls.__qualname__}): a field's type "
                f"does not resolve: {exc}",
                name=exc.name,
            ) from None
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
        self._slots = _plain_slots(cls, self.field_names)
        self.fits_any_frame = _small_body_check(name, compiled)
        self.weigh = _weigher(compiled, self.field_names)

    # -- columnar form: many values of this protein as one array per field --

    def column_values(self, objs: list[Any], ctx: EncodeContext) -> list[list[Any]]:
        """Validate ``objs`` (all of this class) and return one value list per field.

        Values are in wire form (floats widened, nested proteins encoded); pass
        any slice of them to :meth:`pack_columns`. A bad value raises
        :class:`FieldError` naming the field, exactly as :meth:`encode` would.
        """
        columns: list[list[Any]] = []
        for name, getter, ftype in zip(
            self.field_names, self._getters, self._ftypes, strict=True
        ):
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
                if ftype.text == "str":
                    self._check_text(col, name)
                columns.append(col)
            elif (
                ftype.text == "bytes"
                and set(map(type, col)) <= {bytes}
                and max(map(len, col), default=0) < ctx.threshold
            ):
                columns.append(col)  # small byte strings travel as they are
            else:
                enc = ftype.enc
                try:
                    columns.append([enc(v, ctx) for v in col])
                except _Bad as exc:
                    self._raise_first_bad(objs, exc)
        return columns

    def pack_columns(self, columns: list[list[Any]], packed_text: bool = False) -> list[Any]:
        """Wire form of column values: int/float columns as RFC 8746 typed arrays.

        With ``packed_text`` (the peer announced it reads them), ``str`` and
        ``bytes`` columns use the packed forms of docs/protocol.md 11.3 where
        they apply (no U+0000 in the text; byte strings of one non-zero
        length); every other column is a plain array.
        """
        packed: list[Any] = []
        for col, ftype in zip(columns, self._ftypes, strict=True):
            text = ftype.text
            tag = _TYPED_TAG.get(text)
            if tag is not None:
                try:
                    packed.append(typed_array(col, tag))
                    continue
                except OverflowError:  # an int beyond int64: a plain array
                    pass
            elif packed_text and text == "str":
                form = text_column(col)
                if form is not None:
                    packed.append(form)
                    continue
            elif packed_text and text == "bytes":
                form = bytes_column(col)
                if form is not None:
                    packed.append(form)
                    continue
            packed.append(col)
        return packed

    def _check_text(self, col: list[str], field: str) -> None:
        """FieldError naming ``field`` if a value of text column ``col`` cannot travel
        (a lone surrogate): found before anything is sent, at C speed for ASCII."""
        joined = "".join(col)
        if joined.isascii():
            return
        try:
            joined.encode()
        except UnicodeEncodeError:
            for value in col:
                try:
                    value.encode()
                except UnicodeEncodeError as exc:
                    raise text_field_error(self.name, field, exc) from None

    def _raise_first_bad(self, objs: list[Any], cause: _Bad | None = None) -> NoReturn:
        probe = EncodeContext(NO_VESICLES)
        for obj in objs:
            self.encode(obj, probe)  # raises FieldError for the first bad object
        # Each object encodes alone: what failed is a limit of one frame that
        # they share (more vesicles together than one frame may carry).
        raise FieldError(self.name, str(cause or "the messages do not fit one frame together"),
                         cause.field if cause is not None else None)

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
            if (kinds <= {float} and ftype.text == "float") or (kinds <= {bytes} and (
                ftype.text == "bytes"
            )):
                values.append(col)
                continue
            dec = ftype.dec
            try:
                values.append([dec(v, ctx) for v in col])
            except _Bad as exc:
                raise _Bad(f"field {field!r}: {exc}", field) from None
        if not values:
            return [self.cls() for _ in range(count)]
        if self._slots is None:
            return list(map(self.cls, *values))
        # The class's __init__ only stores each argument in its slot (checked
        # once, in _plain_slots): build the instances and fill each slot with a
        # whole column at C speed, half the cost of one __init__ call per row.
        objs: list[Any] = list(map(object.__new__, repeat(self.cls, count)))
        for setter, column in zip(self._slots, values, strict=True):
            deque(map(setter, objs, column), maxlen=0)
        return objs

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


#: Integers inside this bound encode in at most 9 bytes (CBOR heads up to 64 bits).
_SMALL_INT: Final = 1 << 64
#: A body this small fits a frame of the smallest legal limit (4096 bytes) in any form.
_SMALL_BODY: Final = 2048


def _small_body_check(name: str, compiled: list[_FieldType]) -> Callable[[Body], bool] | None:
    """A cheap test that a body of this protein fits any legal frame, for numeric schemas.

    For a protein whose fields are all int, float, bool or None, a body is at
    most ``len(name) + 9`` bytes per field plus a few, as long as every int is
    within 64 bits: the test checks only that. Other proteins return None
    (the caller measures their bodies).
    """
    texts = [c.text for c in compiled]
    if any(t not in ("int", "float", "bool", "null") for t in texts):
        return None
    if 4 * len(name) + 16 + 20 * len(texts) > _SMALL_BODY:
        return None
    positions = [i + 1 for i, t in enumerate(texts) if t == "int"]
    if not positions:
        return lambda body: True
    test = " and ".join(f"-_B < body[{i}] < _B" for i in positions)
    scope: dict[str, Any] = {"_B": _SMALL_INT}
    exec(compile(f"def fits(body):\n    return {test}\n", f"<fits {name}>", "exec"), scope)
    return typing.cast(Callable[[Body], bool], scope["fits"])


def _weigher(compiled: list[_FieldType], names: tuple[str, ...]) -> Callable[[Any], int] | None:
    """A cheap estimate of an instance's encoded size, for schemas where one exists.

    Numbers, booleans and None count 9 bytes, ``bytes`` and ``str`` fields
    9 plus their length; a schema with any other field (lists, maps, nested
    proteins, unions) has no cheap estimate (None). A membrane uses it to
    bound the answers it holds before encoding them (see
    :mod:`cellmesh.transport._answers`). It may raise for a field of the wrong
    type; callers treat that as unknown.
    """
    fixed = 16
    terms = []
    for ftype, name in zip(compiled, names, strict=True):
        if ftype.text in ("int", "float", "bool", "null"):
            fixed += 9
        elif ftype.text in ("bytes", "str"):
            fixed += 9
            terms.append(f" + len(obj.{name})")  # an attrs field name: an identifier
        else:
            return None
    scope: dict[str, Any] = {}
    exec(compile(f"def weigh(obj):\n    return {fixed}{''.join(terms)}\n", "<weigh>", "exec"),
         scope)
    return typing.cast(Callable[[Any], int], scope["weigh"])


def _plain_slots(
    cls: type, names: tuple[str, ...]
) -> tuple[Callable[[Any, Any], None], ...] | None:
    """The slot setters of ``cls``'s fields, if its ``__init__`` does nothing but fill them.

    That holds for a slotted attrs class whose fields have no validator or
    converter and that has no ``__attrs_pre_init__``/``__attrs_post_init__``
    and no cached hash. Anything else (None) is always built through
    ``__init__``.
    """
    if any(hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__")):
        return None
    if "__attrs_cached_hash__" in getattr(cls, "__slots__", ()):
        return None
    setters = []
    for field in attrs.fields(cls):
        descriptor = cls.__dict__.get(field.name)
        if (
            field.validator is not None
            or field.converter is not None
            or not isinstance(descriptor, types.MemberDescriptorType)
        ):
            return None
        setters.append(descriptor.__set__)
    if tuple(f.name for f in attrs.fields(cls)) != names:
        return None
    return tuple(setters)


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
        :class:`FieldError` (a bad value fails the whole column);
        :class:`~cellmesh.errors.VesicleError` for a bad vesicle descriptor.
        """
        schema = self._schema_named(name, ctx, peer)
        try:
            return schema.decode_columns(columns, count, ctx)
        except _Bad as exc:
            raise FieldError(name, str(exc), exc.field) from None
        except RemoteProtocolError:
            raise  # a bad vesicle descriptor: the connection's fault (BAD_VESICLE)
        except Exception as exc:
            # ValueError or anything else: a validator of the user's class (or
            # its __attrs_post_init__) refused a value; never the connection's fault.
            raise FieldError(name, f"bad column values ({type(exc).__name__}: {exc})") from None

    def decode(self, body: Body, ctx: DecodeContext, peer: dict[str, str] | None = None) -> Any:
        """Decode a body into a protein instance.

        Raises :class:`UnknownProtein`, :class:`SchemaMismatch` (``peer`` is the
        peer's fingerprint table, for the message) or :class:`FieldError`;
        :class:`~cellmesh.errors.VesicleError` for a bad vesicle descriptor (a
        connection-level error, docs/protocol.md section 13).
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
        except RemoteProtocolError:
            raise  # a bad vesicle descriptor: the connection's fault (BAD_VESICLE), not the call's
        except Exception as exc:  # a validator of the user's class refused a value
            raise FieldError(name, f"refused by the class: {type(exc).__name__}: {exc}") from None


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
    A field of a type proteins do not support is a :class:`TypeError` here,
    naming the class, the field and the type (one whose annotation does not
    resolve yet is checked on first use); the schema is compiled on first use.
    """

    def apply(cls: type[T], explicit: str | None) -> type[T]:
        if not isinstance(cls, type):
            raise TypeError("@protein decorates classes")
        new_cls: type[T] = attrs.frozen(cls)
        wn = explicit if explicit is not None else f"{cls.__module__}.{cls.__qualname__}"
        if not wn or not isinstance(wn, str):
            raise ConfigError("@protein", f"wire name must be a non-empty string, got {wn!r}")
        type.__setattr__(new_cls, "__protein_name__", wn)
        _check_field_types(new_cls)  # before it is registered: a refused class is not
        (registry if registry is not None else PROTEINS).register(new_cls)
        return new_cls

    if isinstance(name, type):
        return apply(name, None)

    def decorator(cls: type[T]) -> type[T]:
        return apply(cls, name)

    return decorator
