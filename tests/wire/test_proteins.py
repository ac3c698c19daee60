"""Proteins: field types, strictness, errors, fingerprints and registries.

Checks cellmesh/wire/proteins.py against docs/protocol.md section 6. Every
protein here lives in a test-local ProteinRegistry, never the global one.
Pure: no sockets, no memfds (vesicle sources are faked).
"""

from __future__ import annotations

import hashlib
import typing
from typing import Annotated, Any

import attrs
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.errors import (
    ConfigError,
    ErrorCode,
    FieldError,
    ProteinError,
    SchemaMismatch,
    UnknownProtein,
)
from cellmesh.wire.codec import (
    TAG_FLOAT64_LE,
    TAG_SINT64_LE,
    VESICLE_TAG,
    DecodedFrame,
    FrameDecoder,
    Kind,
    VesicleRef,
    columns_item,
    frame_bytes,
    typed_array,
)
from cellmesh.wire.proteins import (
    NO_VESICLES,
    DecodeContext,
    EncodeContext,
    ProteinRegistry,
    encode_body,
    fingerprint,
    is_protein,
    protein,
    schema_of,
    wire_name,
)

SETTINGS = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REG = ProteinRegistry()


@protein("t.Scalars", registry=REG)
class Scalars:
    i: int
    f: float
    s: str
    b: bytes
    flag: bool
    nothing: None


@protein("t.Inner", registry=REG)
class Inner:
    x: int
    name: str


@protein("t.Containers", registry=REG)
class Containers:
    ints: list[int]
    words: tuple[str, ...]
    by_name: dict[str, float]
    by_id: dict[int, list[bytes]]
    maybe: int | None
    either: int | str | None
    inner: Inner
    inners: list[Inner]
    maybe_inner: Inner | None
    nested: list[list[tuple[int, ...]]]


@protein("t.Tree", registry=REG)
class Tree:
    label: str
    children: list[Tree]


@protein("t.Node", registry=REG)
class Node:
    value: int
    next: Node | None


@protein("t.IntOrBool", registry=REG)
class IntOrBool:
    v: int | bool


@protein("t.Floaty", registry=REG)
class Floaty:
    f: float
    fs: list[float]
    opt: float | None


@protein("t.Blob", registry=REG)
class Blob:
    data: bytes
    more: list[bytes]


@protein("t.Empty", registry=REG)
class Empty:
    pass


# ---------------------------------------------------------------------------
# Helpers.


def over_the_wire(body: list[Any]) -> list[Any]:
    """Send ``body`` in a call frame through the real codec and return what arrives."""
    decoder = FrameDecoder()
    decoder.feed(frame_bytes([Kind.CALL, 1, body]))
    frame = decoder.next_frame()
    assert isinstance(frame, DecodedFrame)
    received: list[Any] = frame.items[0][2]
    return received


def round_trip(obj: object, registry: ProteinRegistry = REG) -> Any:
    body = registry.encode(obj, EncodeContext())
    return registry.decode(over_the_wire(body), DecodeContext())


ints = st.integers()
floats = st.floats(allow_nan=False)
texts = st.text(max_size=20)
blobs = st.binary(max_size=40)
inners = st.builds(Inner, ints, texts)

scalars = st.builds(Scalars, ints, floats, texts, blobs, st.booleans(), st.none())
containers = st.builds(
    Containers,
    st.lists(ints, max_size=5),
    st.lists(texts, max_size=5).map(tuple),
    st.dictionaries(texts, floats, max_size=4),
    # int map keys travel as plain CBOR integers: at most 64 bits (protocol.md 3)
    st.dictionaries(st.integers(-(2**64), 2**64 - 1), st.lists(blobs, max_size=3), max_size=4),
    st.none() | ints,
    st.none() | ints | texts,
    inners,
    st.lists(inners, max_size=3),
    st.none() | inners,
    st.lists(st.lists(st.lists(ints, max_size=3).map(tuple), max_size=3), max_size=3),
)
trees = st.recursive(
    st.builds(Tree, texts, st.just([])),
    lambda kids: st.builds(Tree, texts, st.lists(kids, max_size=3)),
    max_leaves=15,
)
nodes = st.recursive(
    st.builds(Node, ints, st.none()),
    lambda tail: st.builds(Node, ints, tail),
    max_leaves=20,
)


# ---------------------------------------------------------------------------
# Round trips.


@SETTINGS
@given(obj=scalars | containers | trees | nodes | st.builds(IntOrBool, ints | st.booleans()))
def test_proteins_every_field_type_round_trips(obj: object) -> None:
    back = round_trip(obj)
    assert type(back) is type(obj)
    assert back == obj


@SETTINGS
@given(obj=containers)
def test_proteins_tuples_come_back_as_tuples_and_lists_as_lists(obj: Containers) -> None:
    back = round_trip(obj)
    assert type(back.words) is tuple
    assert type(back.ints) is list
    assert all(type(t) is tuple for row in back.nested for t in row)


@SETTINGS
@given(v=ints | st.booleans())
def test_proteins_union_of_int_and_bool_keeps_the_type(v: int | bool) -> None:
    back = round_trip(IntOrBool(v))
    assert type(back.v) is type(v)


def test_proteins_body_is_wire_name_then_fields_in_declaration_order() -> None:
    body = REG.encode(Inner(7, "seven"), EncodeContext())
    assert body == ["t.Inner", 7, "seven"]
    nested = REG.encode(Node(1, Node(2, None)), EncodeContext())
    assert nested == ["t.Node", 1, ["t.Node", 2, None]]
    assert REG.encode(Empty(), EncodeContext()) == ["t.Empty"]
    assert REG.decode(["t.Empty"], DecodeContext()) == Empty()


def test_proteins_tuple_and_list_fields_encode_as_arrays() -> None:
    body = REG.encode(
        Containers([1], ("a",), {}, {}, None, None, Inner(1, ""), [], None, [[(1, 2)]]),
        EncodeContext(),
    )
    assert cbor2.loads(cbor2.dumps(body))[2] == ["a"]
    assert body[10] == [[[1, 2]]]


def test_proteins_deep_recursive_protein_round_trips() -> None:
    node = None
    for i in range(40):
        node = Node(i, node)
    assert round_trip(node) == node


def test_proteins_bytes_like_values_encode_as_bytes() -> None:
    for value in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
        body = REG.encode(Blob(value, [value]), EncodeContext())  # type: ignore[arg-type, list-item]
        assert body == ["t.Blob", b"abc", [b"abc"]]
        assert cbor2.dumps(body) == cbor2.dumps(["t.Blob", b"abc", [b"abc"]])


def test_proteins_empty_containers_and_extremes_round_trip() -> None:
    obj = Scalars(-(2**200), float("inf"), "", b"", False, None)
    assert round_trip(obj) == obj
    assert round_trip(Floaty(-0.0, [float("-inf")], None)) == Floaty(-0.0, [float("-inf")], None)


# ---------------------------------------------------------------------------
# Strictness: bool vs int, int widened to float.


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (["t.Scalars", True, 1.0, "", b"", False, None], "i"),
        (["t.Scalars", 1, 1.0, "", b"", 1, None], "flag"),
        (["t.Scalars", 1, 1.0, "", b"", 0, None], "flag"),
        (["t.Scalars", 1, True, "", b"", False, None], "f"),
        (["t.Floaty", False, [], None], "f"),
        (["t.Floaty", 1.0, [True], None], "fs"),
        (["t.Containers", [1, False], [], {}, {}, None, None, ["t.Inner", 1, ""], [], None, []],
         "ints"),
        (["t.Containers", [], [], {}, {True: []}, None, None, ["t.Inner", 1, ""], [], None, []],
         "by_id"),
    ],
)
def test_proteins_bool_and_int_are_never_confused_when_decoding(
    body: list[Any], field: str
) -> None:
    with pytest.raises(FieldError) as info:
        REG.decode(body, DecodeContext())
    assert f"'{field}'" in info.value.problem


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (Scalars(True, 1.0, "", b"", False, None), "i"),
        (Scalars(1, 1.0, "", b"", 1, None), "flag"),  # type: ignore[arg-type]
        (Scalars(1, False, "", b"", False, None), "f"),
        (Floaty(1.0, [1.0, True], None), "fs"),
        (Inner(False, "x"), "x"),
    ],
)
def test_proteins_bool_and_int_are_never_confused_when_encoding(obj: object, field: str) -> None:
    with pytest.raises(FieldError) as info:
        REG.encode(obj, EncodeContext())
    assert f"'{field}'" in info.value.problem


@SETTINGS
@given(i=st.integers(-(2**53), 2**53))
def test_proteins_int_is_widened_to_float(i: int) -> None:
    decoded = REG.decode(["t.Floaty", i, [i], i], DecodeContext())
    assert type(decoded.f) is float and decoded.f == i
    assert type(decoded.fs[0]) is float
    assert type(decoded.opt) is float
    body = REG.encode(Floaty(i, [i], i), EncodeContext())
    assert all(type(v) is float for v in (body[1], body[2][0], body[3]))


def test_proteins_int_too_large_for_a_float_is_a_field_error() -> None:
    with pytest.raises(FieldError):
        REG.decode(["t.Floaty", 10**400, [], None], DecodeContext())


def test_proteins_encoding_int_too_large_for_a_float_is_a_field_error() -> None:
    with pytest.raises(FieldError):
        REG.encode(Floaty(10**400, [], None), EncodeContext())


@protein("t.FloatFirst", registry=REG)
class FloatFirst:
    v: float | int


@protein("t.IntFirst", registry=REG)
class IntFirst:
    v: int | float


def test_proteins_union_order_does_not_change_the_fingerprint_text() -> None:
    assert schema_of(FloatFirst).text.endswith("(v:union<float,int>)")
    assert schema_of(IntFirst).text.endswith("(v:union<float,int>)")
    assert round_trip(IntFirst(3)).v.__class__ is int


def test_proteins_union_keeps_an_int_an_int_whatever_the_order() -> None:
    assert type(round_trip(FloatFirst(3)).v) is int


# ---------------------------------------------------------------------------
# Errors: unknown proteins, field counts and types.


def test_proteins_unknown_wire_name_is_unknown_protein() -> None:
    with pytest.raises(UnknownProtein) as info:
        REG.decode(["t.Nope", 1], DecodeContext())
    assert info.value.wire_name == "t.Nope"
    assert info.value.code == ErrorCode.UNKNOWN_PROTEIN


def test_proteins_protein_known_elsewhere_is_unknown_here() -> None:
    other = ProteinRegistry()
    with pytest.raises(UnknownProtein):
        other.decode(["t.Inner", 1, "x"], DecodeContext())


@pytest.mark.parametrize(
    "body",
    [["t.Inner"], ["t.Inner", 1], ["t.Inner", 1, "x", None], ["t.Empty", 1]],
)
def test_proteins_wrong_field_count_is_a_field_error(body: list[Any]) -> None:
    with pytest.raises(FieldError) as info:
        REG.decode(body, DecodeContext())
    assert info.value.wire_name == body[0]
    assert info.value.code == ErrorCode.BAD_FIELDS
    assert "fields" in info.value.problem


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (["t.Inner", "1", "x"], ["x"]),
        (["t.Inner", 1, b"x"], ["name"]),
        (["t.Scalars", 1, "1.0", "", b"", False, None], ["f"]),
        (["t.Scalars", 1, 1.0, "", "b", False, None], ["b"]),
        (["t.Scalars", 1, 1.0, "", b"", False, 0], ["nothing"]),
        (["t.Node", 1, ["t.Node", "2", None]], ["next"]),  # a union hides the inner reason
        (["t.Node", 1, ["t.Inner", 2, ""]], ["next"]),
        (["t.Node", 1, ["t.Node", 2]], ["next"]),
        (["t.Node", 1, []], ["next"]),
        (["t.Tree", "a", [["t.Tree", "b", [["t.Tree", 3, []]]]]], ["children", "label"]),
        (["t.Containers", [], [], {1: 1.0}, {}, None, None, ["t.Inner", 1, ""], [], None, []],
         ["by_name"]),
        (["t.Containers", [], [], {}, {}, None, 1.5, ["t.Inner", 1, ""], [], None, []],
         ["either"]),
        (["t.Containers", [], [], {}, {}, None, None, ["t.Inner", 1, ""], {}, None, []],
         ["inners"]),
        (["t.Containers", [], ["a", 1], {}, {}, None, None, ["t.Inner", 1, ""], [], None, []],
         ["words"]),
        (["t.Blob", VesicleRef(0, 5), []], ["data"]),
    ],
)
def test_proteins_wrong_field_type_is_a_field_error_naming_the_field(
    body: list[Any], names: list[str]
) -> None:
    with pytest.raises(FieldError) as info:
        REG.decode(body, DecodeContext())
    assert info.value.wire_name == body[0]
    for name in names:
        assert f"'{name}'" in info.value.problem


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (Inner("1", "x"), "x"),  # type: ignore[arg-type]
        (Inner(1, None), "name"),  # type: ignore[arg-type]
        (Node(1, Inner(1, "")), "next"),  # type: ignore[arg-type]
        (Blob("text", []), "data"),  # type: ignore[arg-type]
        (Blob(b"", [1]), "more"),  # type: ignore[list-item]
        (Tree("a", [Tree("b", "c")]), "children"),  # type: ignore[arg-type]
        (Floaty("1", [], None), "f"),  # type: ignore[arg-type]
    ],
)
def test_proteins_encoding_a_bad_field_is_a_field_error_naming_it(obj: object, name: str) -> None:
    with pytest.raises(FieldError) as info:
        REG.encode(obj, EncodeContext())
    assert f"'{name}'" in info.value.problem
    with pytest.raises(FieldError):
        encode_body(obj, EncodeContext())


def test_proteins_encoding_a_non_protein_is_a_type_error() -> None:
    @attrs.frozen
    class Plain:
        x: int

    for obj in (Plain(1), 5, {"x": 1}):
        with pytest.raises(TypeError):
            REG.encode(obj, EncodeContext())
        with pytest.raises(TypeError):
            encode_body(obj, EncodeContext())


# ---------------------------------------------------------------------------
# Schema mismatch between registries.

A = ProteinRegistry()
B = ProteinRegistry()


@protein("t.Versioned", registry=A)
class VersionedA:
    x: int


@protein("t.Versioned", registry=B)
class VersionedB:
    x: str


@protein("t.Holder", registry=A)
class HolderA:
    v: VersionedA


@protein("t.Holder", registry=B)
class HolderB:
    v: VersionedB


def test_proteins_schema_mismatch_is_detected_from_fingerprints() -> None:
    theirs = A.fingerprints()
    mismatched = B.mismatched(theirs)
    # t.Holder's own text is the same (its field type is just the nested wire name).
    assert mismatched == frozenset({"t.Versioned"})
    body = A.encode(VersionedA(1), EncodeContext())
    with pytest.raises(SchemaMismatch) as info:
        B.decode(body, DecodeContext(None, mismatched), theirs)
    assert info.value.wire_name == "t.Versioned"
    assert info.value.ours == fingerprint(VersionedB)
    assert info.value.theirs == fingerprint(VersionedA)
    assert info.value.code == ErrorCode.SCHEMA_MISMATCH


def test_proteins_schema_mismatch_without_peer_table_still_raises() -> None:
    mismatched = B.mismatched(A.fingerprints())
    with pytest.raises(SchemaMismatch) as info:
        B.decode(["t.Versioned", "x"], DecodeContext(None, mismatched))
    assert info.value.theirs == "?"


def test_proteins_nested_mismatched_protein_is_a_field_error() -> None:
    mismatched = B.mismatched(A.fingerprints())
    body = A.encode(HolderA(VersionedA(1)), EncodeContext())
    with pytest.raises(FieldError) as info:
        B.decode(body, DecodeContext(None, mismatched))
    assert "'v'" in info.value.problem


def test_proteins_without_mismatch_context_a_different_schema_fails_on_fields() -> None:
    # Without the hello's fingerprints, the wrong schema shows up as a field error.
    with pytest.raises(FieldError):
        B.decode(A.encode(VersionedA(1), EncodeContext()), DecodeContext())


def test_proteins_mismatched_only_names_proteins_both_sides_know() -> None:
    theirs = {"t.Versioned": fingerprint(VersionedB), "t.Unknown": "0" * 16}
    assert B.mismatched(theirs) == frozenset()
    assert B.mismatched({}) == frozenset()


# ---------------------------------------------------------------------------
# Fingerprints.

GOLDEN = ProteinRegistry()


@protein("example.Point", registry=GOLDEN)
class Point:
    x: int
    y: int
    label: str | None
    tags: list[str]


def test_proteins_fingerprint_golden_value() -> None:
    text = "example.Point(x:int;y:int;label:union<null,str>;tags:list<str>)"
    assert schema_of(Point).text == text
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "8dd972b7f2a4225d"
    assert fingerprint(Point) == "8dd972b7f2a4225d"
    assert GOLDEN.fingerprints() == {"example.Point": "8dd972b7f2a4225d"}


def test_proteins_canonical_text_of_every_type() -> None:
    reg = ProteinRegistry()

    @protein("example.All", registry=reg)
    class All:
        a: int
        b: float
        c: str
        d: bytes
        e: bool
        f: None
        g: list[int]
        h: tuple[str, ...]
        i: dict[str, float]
        j: dict[int, bytes | None]
        k: Point
        m: Annotated[int, "meta"]
        n: bytearray
        o: typing.Optional[list[Point]]  # noqa: UP045 - the typing spelling on purpose
        p: bool | int | str

    assert schema_of(All).text == (
        "example.All(a:int;b:float;c:str;d:bytes;e:bool;f:null;g:list<int>;h:list<str>;"
        "i:map<str,float>;j:map<int,union<bytes,null>>;k:example.Point;m:int;n:bytes;"
        "o:union<list<example.Point>,null>;p:union<bool,int,str>)"
    )


def _variant(body: str) -> str:
    """Fingerprint of a class ``body`` defined fresh in its own registry."""
    namespace: dict[str, Any] = {}
    source = "class V:\n" + "".join(f"    {line}\n" for line in body.split(";"))
    exec(source, {"__name__": __name__}, namespace)
    name = namespace.pop("__wire_name__", None) or "t.V"
    return fingerprint(protein(name, registry=ProteinRegistry())(namespace["V"]))


BASE = "x: int;y: str"


@pytest.mark.parametrize(
    "changed",
    [
        "x: float;y: str",  # a field type
        "x: bool;y: str",
        "x: int;y: bytes",
        "x: list[int];y: str",
        "x: int | None;y: str",
        "z: int;y: str",  # a field name
        "y: str;x: int",  # field order
        "x: int",  # a removed field
        "x: int;y: str;z: int",  # an added field
    ],
)
def test_proteins_fingerprint_changes_with_the_schema(changed: str) -> None:
    assert _variant(changed) != _variant(BASE)


def test_proteins_fingerprint_changes_with_the_wire_name() -> None:
    base = fingerprint(protein("t.One", registry=ProteinRegistry())(type("V", (), {
        "__annotations__": {"x": "int"}})))
    other = fingerprint(protein("t.Two", registry=ProteinRegistry())(type("V", (), {
        "__annotations__": {"x": "int"}})))
    assert base != other


@pytest.mark.parametrize(
    "same",
    [
        "x: int;y: str",
        "x: 'int';y: 'str'",
        "x: Annotated[int, 'doc'];y: str",
        "x: int;y: str;def method(self): return 1",
    ],
)
def test_proteins_fingerprint_is_stable_across_equivalent_definitions(same: str) -> None:
    assert _variant(same) == _variant(BASE)


def test_proteins_fingerprint_ignores_list_vs_tuple_and_union_order() -> None:
    assert _variant("x: list[int]") == _variant("x: tuple[int, ...]")
    assert _variant("x: int | str | None") == _variant("x: None | str | int")


def test_proteins_fingerprint_is_sixteen_lowercase_hex_digits() -> None:
    for cls in (Scalars, Containers, Tree, Node, Empty):
        fp = fingerprint(cls)
        assert len(fp) == 16 and set(fp) <= set("0123456789abcdef")
        assert fp == hashlib.sha256(schema_of(cls).text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Registries and the decorator.


def test_proteins_registering_another_class_under_a_taken_name_is_refused() -> None:
    reg = ProteinRegistry()

    @protein("t.Taken", registry=reg)
    class First:
        x: int

    with pytest.raises(ConfigError) as info:

        @protein("t.Taken", registry=reg)
        class Second:
            x: int

    assert "t.Taken" in str(info.value)
    assert reg.get("t.Taken") is First


def test_proteins_redefining_the_same_class_replaces_it() -> None:
    reg = ProteinRegistry()

    def define(kind: type) -> type:
        @protein("t.Reloaded", registry=reg)
        class Reloaded:
            x: int

        return Reloaded

    first = define(int)
    second = define(str)
    assert first is not second
    assert reg.get("t.Reloaded") is second
    assert reg.decode(["t.Reloaded", 1], DecodeContext()).__class__ is second


def test_proteins_registering_the_same_class_twice_is_harmless() -> None:
    reg = ProteinRegistry()
    reg.register(Inner)
    reg.register(Inner)
    assert len(reg) == 1 and "t.Inner" in reg and reg.get("t.Inner") is Inner


def test_proteins_default_wire_name_is_module_and_qualname() -> None:
    reg = ProteinRegistry()

    @protein(registry=reg)
    class Local:
        x: int

    assert wire_name(Local) == f"{__name__}.{Local.__qualname__}"
    assert is_protein(Local) and not is_protein(int) and not is_protein(5)


def test_proteins_decorator_rejects_bad_names_and_non_classes() -> None:
    with pytest.raises(ConfigError):
        protein("", registry=ProteinRegistry())(type("X", (), {}))
    with pytest.raises(TypeError):
        protein("t.F", registry=ProteinRegistry())(len)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire_name(int)


def test_proteins_instances_are_frozen_and_positional_or_keyword() -> None:
    p = Inner(1, "a")
    assert p == Inner(x=1, name="a")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]


def test_proteins_registry_fingerprints_cover_every_registered_protein() -> None:
    table = REG.fingerprints()
    assert set(table) == {
        "t.Scalars", "t.Inner", "t.Containers", "t.Tree", "t.Node", "t.IntOrBool",
        "t.Floaty", "t.Blob", "t.Empty", "t.FloatFirst", "t.IntFirst",
    }
    assert all(table[name] == fingerprint(REG.get(name)) for name in table)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        ("set[int]", "x"),
        ("frozenset[int]", "x"),
        ("tuple[int, str]", "x"),
        ("tuple[int]", "x"),
        ("list", "x"),
        ("dict", "x"),
        ("object", "x"),
        ("typing.Any", "x"),
        ("complex", "x"),
        ("list[set[int]]", "x"),
        ("int | complex", "x"),
        ("dict[float, int]", "x"),
    ],
)
def test_proteins_unsupported_annotation_is_a_type_error_naming_the_field(
    annotation: str, field: str
) -> None:
    reg = ProteinRegistry()
    with pytest.raises(TypeError) as info:  # by @protein itself, not on first use
        protein("t.Bad", registry=reg)(
            type("Bad", (), {"__annotations__": {"ok": "int", field: annotation}})
        )
    assert f"Bad.{field}" in str(info.value)
    assert "t.Bad" not in reg  # a refused class is not registered


# ---------------------------------------------------------------------------
# Vesicles at the protein level (fake, pure sources).


class FakeVesicle:
    """Implements the VesicleSource protocol without an OS descriptor."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sealed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self.data)

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return 1000 + len(self.data)

    def seal(self) -> None:
        self.sealed = True

    def tobytes(self) -> bytes:
        return self.data


def make_fake(data: bytes | bytearray | memoryview) -> FakeVesicle:
    return FakeVesicle(bytes(data))


def test_proteins_large_bytes_become_vesicle_tags_in_order() -> None:
    ctx = EncodeContext(threshold=10, make_vesicle=make_fake)
    body = REG.encode(Blob(b"x" * 10, [b"small", b"y" * 20]), ctx)
    assert body[1] == cbor2.CBORTag(VESICLE_TAG, [0, 10])
    assert body[2] == [b"small", cbor2.CBORTag(VESICLE_TAG, [1, 20])]
    assert [v.tobytes() for v in ctx.vesicles] == [b"x" * 10, b"y" * 20]
    assert ctx.owned == ctx.vesicles


def test_proteins_vesicle_source_fields_are_sealed_and_not_owned() -> None:
    ctx = EncodeContext(threshold=10, make_vesicle=make_fake)
    big, small = FakeVesicle(b"z" * 50), FakeVesicle(b"tiny")
    body = REG.encode(Blob(big, [small]), ctx)  # type: ignore[arg-type, list-item]
    assert body[1] == cbor2.CBORTag(VESICLE_TAG, [0, 50])
    assert body[2] == [b"tiny"]
    assert big.sealed and not small.sealed
    assert ctx.vesicles == [big] and ctx.owned == []


def test_proteins_without_a_vesicle_maker_everything_is_inline() -> None:
    ctx = EncodeContext()
    assert ctx.threshold == NO_VESICLES
    body = REG.encode(Blob(b"x" * 100_000, []), ctx)
    assert body[1] == b"x" * 100_000 and ctx.vesicles == []


def test_proteins_vesicles_round_trip_through_the_codec() -> None:
    ctx = EncodeContext(threshold=8, make_vesicle=make_fake)
    obj = Blob(b"a" * 8, [b"b" * 9, b"c"])
    body = REG.encode(obj, ctx)
    decoder = FrameDecoder()
    decoder.feed(frame_bytes([Kind.CALL, 9, body]))
    frame = decoder.next_frame()
    assert isinstance(frame, DecodedFrame) and frame.vesicles == len(ctx.vesicles) == 2
    sources = list(ctx.vesicles)

    def resolve(ref: VesicleRef) -> memoryview:
        assert ref.length == len(sources[ref.index])
        return memoryview(sources[ref.index].tobytes())

    back = REG.decode(frame.items[0][2], DecodeContext(resolve))
    assert bytes(back.data) == obj.data and [bytes(m) for m in back.more] == obj.more


# ---------------------------------------------------------------------------
# Garbage bodies: only ProteinError subclasses come out.

garbage_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**1000), 2**1000)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(VesicleRef, st.integers(0, 3), st.integers(1, 100))
    | st.just(cbor2.undefined)
    | st.builds(cbor2.CBORSimpleValue, st.integers(0, 19))
    | st.sampled_from(sorted(REG.fingerprints()))
)
garbage = st.recursive(
    garbage_leaves,
    lambda kids: st.lists(kids, max_size=5)
    | st.dictionaries(st.text(max_size=4) | st.integers() | st.booleans() | st.floats(), kids,
                      max_size=3)
    | st.builds(lambda n, rest: [n, *rest], st.sampled_from(sorted(REG.fingerprints())),
                st.lists(kids, max_size=11)),
    max_leaves=30,
)


@settings(SETTINGS, max_examples=200)
@given(
    name=st.sampled_from(sorted(REG.fingerprints())) | st.text(max_size=8),
    fields=st.lists(garbage, max_size=11),
    mismatched=st.frozensets(st.sampled_from(sorted(REG.fingerprints())), max_size=2),
)
def test_proteins_garbage_bodies_raise_only_protein_errors(
    name: str, fields: list[Any], mismatched: frozenset[str]
) -> None:
    body = [name, *fields]
    try:
        value = REG.decode(body, DecodeContext(None, mismatched))
    except ProteinError as exc:
        assert isinstance(exc, (UnknownProtein, SchemaMismatch, FieldError))
    else:
        assert type(value) is REG.get(name)


@protein("t.ListUnion", registry=ProteinRegistry())
class ListUnion:
    v: list[float] | list[int]


def test_proteins_union_of_containers_does_not_depend_on_order() -> None:
    back = schema_of(ListUnion).decode_fields(["t.ListUnion", [1]], DecodeContext())
    assert type(back.v[0]) is int


# ---------------------------------------------------------------------------
# Columnar encoding (docs/protocol.md 4.10 and 11.3).


def columns_round_trip(objs: list[Any]) -> list[Any]:
    schema = schema_of(type(objs[0]))
    packed = schema.pack_columns(schema.column_values(objs, EncodeContext()))
    ids = list(range(1, len(objs) + 1))
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(columns_item(Kind.CALL, schema.name, ids, packed, len(objs))))
    frame = decoder.next_frame()
    assert isinstance(frame, DecodedFrame)
    _, _, count, name, got_ids, columns = frame.items[0]
    assert got_ids == ids and count == len(objs)
    return REG.decode_columns(name, columns, count, DecodeContext())


@SETTINGS
@given(
    objs=st.lists(scalars, min_size=1, max_size=6)
    | st.lists(containers, min_size=1, max_size=4)
    | st.lists(nodes, min_size=1, max_size=4)
    | st.lists(st.builds(Floaty, ints.filter(lambda i: abs(i) < 2**1000) | floats,
                         st.lists(floats, max_size=3), st.none() | floats),
               min_size=1, max_size=6)
)
def test_proteins_columns_round_trip(objs: list[Any]) -> None:
    back = columns_round_trip(objs)
    assert back == objs
    assert all(type(b) is type(o) for b, o in zip(back, objs, strict=True))
    if type(objs[0]) is Floaty:
        assert all(type(b.f) is float for b in back)


def test_proteins_columns_pack_numbers_as_typed_arrays() -> None:
    schema = schema_of(Floaty)
    packed = schema.pack_columns(
        schema.column_values([Floaty(1, [], None), Floaty(2.5, [], 1.0)], EncodeContext())
    )
    assert packed[0] == typed_array([1.0, 2.5], TAG_FLOAT64_LE)
    inner = schema_of(Inner)
    big = inner.pack_columns(inner.column_values([Inner(2**70, "a"), Inner(1, "b")],
                                                 EncodeContext()))
    assert big[0] == [2**70, 1]  # beyond int64: a plain array
    small = inner.pack_columns(inner.column_values([Inner(-5, "a"), Inner(1, "b")],
                                                   EncodeContext()))
    assert small[0] == typed_array([-5, 1], TAG_SINT64_LE)


@pytest.mark.parametrize(
    ("objs", "field"),
    [
        ([Inner(1, "a"), Inner(True, "b")], "x"),
        ([Inner(1, "a"), Inner(2, None)], "name"),  # type: ignore[arg-type]
        ([Floaty(1.0, [], None), Floaty(10**400, [], None)], "f"),
        ([Floaty(1.0, [], None), Floaty(False, [], None)], "f"),
        ([Node(1, None), Node(2, Inner(1, ""))], "next"),  # type: ignore[arg-type]
    ],
)
def test_proteins_columns_refuse_a_bad_value_naming_the_field(objs: list[Any], field: str) -> None:
    with pytest.raises(FieldError) as info:
        schema_of(type(objs[0])).column_values(objs, EncodeContext())
    assert f"'{field}'" in info.value.problem


@pytest.mark.parametrize(
    ("name", "columns", "count", "error"),
    [
        ("t.Nope", [[1]], 1, UnknownProtein),
        ("t.Inner", [[1]], 1, FieldError),  # one column for two fields
        ("t.Inner", [[1], ["a"], [None]], 1, FieldError),
        ("t.Inner", [[True], ["a"]], 1, FieldError),
        ("t.Inner", [[1.0], ["a"]], 1, FieldError),
        ("t.Inner", [[1, "2"], ["a", "b"]], 2, FieldError),
        ("t.Floaty", [[10**400], [[]], [None]], 1, FieldError),
        ("t.Floaty", [[True], [[]], [None]], 1, FieldError),
        ("t.Node", [[1], [["t.Inner", 1, ""]]], 1, FieldError),
        ("t.Blob", [[VesicleRef(0, 4)], [[]]], 1, FieldError),
    ],
)
def test_proteins_decode_columns_errors(
    name: str, columns: list[Any], count: int, error: type[ProteinError]
) -> None:
    with pytest.raises(error):
        REG.decode_columns(name, columns, count, DecodeContext())


def test_proteins_decode_columns_widens_ints_and_builds_fieldless_proteins() -> None:
    floaty = REG.decode_columns("t.Floaty", [[1, 2.5], [[], [3]], [None, 4]], 2,
                                DecodeContext())
    assert floaty == [Floaty(1.0, [], None), Floaty(2.5, [3.0], 4.0)]
    assert all(type(f.f) is float for f in floaty)
    assert REG.decode_columns("t.Empty", [], 3, DecodeContext()) == [Empty()] * 3


def test_proteins_decode_columns_respects_schema_mismatch() -> None:
    mismatched = B.mismatched(A.fingerprints())
    with pytest.raises(SchemaMismatch):
        B.decode_columns("t.Versioned", [["x"]], 1, DecodeContext(None, mismatched))


@settings(SETTINGS, max_examples=100)
@given(
    name=st.sampled_from(sorted(REG.fingerprints())) | st.text(max_size=8),
    count=st.integers(1, 4),
    data=st.data(),
)
def test_proteins_garbage_columns_raise_only_protein_errors(
    name: str, count: int, data: st.DataObject
) -> None:
    columns = data.draw(
        st.lists(st.lists(garbage, min_size=count, max_size=count), max_size=11)
    )
    try:
        values = REG.decode_columns(name, columns, count, DecodeContext())
    except ProteinError as exc:
        assert isinstance(exc, (UnknownProtein, SchemaMismatch, FieldError))
    else:
        assert len(values) == count
        assert all(type(v) is REG.get(name) for v in values)


def test_proteins_int_map_keys_beyond_64_bits_are_refused_when_sending() -> None:
    """A bignum may not be a map key on the wire (protocol.md 3): refused locally."""
    ok = Containers([], (), {}, {-(2**64): [], 2**64 - 1: []}, None, None, Inner(1, ""), [],
                    None, [])
    assert round_trip(ok) == ok
    with pytest.raises(FieldError, match="64 bits"):
        REG.encode(Containers([], (), {}, {2**64: []}, None, None, Inner(1, ""), [], None, []),
                   EncodeContext())


def test_registry_forget_modules_frees_the_wire_names_of_unloaded_code() -> None:
    registry = ProteinRegistry()

    @protein("t.forget.A", registry=registry)
    class A:
        x: int

    @protein("t.forget.B", registry=registry)
    class B:
        y: int

    fps = registry.fingerprints()
    assert registry.forget_modules({A.__module__ + ".elsewhere"}) == 0
    assert registry.forget_modules({A.__module__}) == 2
    assert registry.get("t.forget.A") is None and "t.forget.B" not in registry.fingerprints()
    assert fps  # (computed before: the cache was rebuilt, not reused)

    @protein("t.forget.A", registry=registry)  # another class may take the name now
    class Other:
        z: str

    assert registry.get("t.forget.A") is Other


def test_proteins_a_class_that_refuses_a_value_in_any_way_is_a_field_error() -> None:
    """Whatever a user's validator raises is the message's fault: a call-level
    BAD_FIELDS, never an exception that reaches the connection (issue 10)."""
    registry = ProteinRegistry()

    def picky(instance: object, attribute: object, value: int) -> None:
        if value < 0:
            raise KeyError("negative")

    @protein("t.picky.Picky", registry=registry)
    class Picky:
        n: int = attrs.field(validator=picky)

    assert registry.decode(["t.picky.Picky", 1], DecodeContext()) == Picky(1)
    with pytest.raises(FieldError, match="KeyError"):
        registry.decode(["t.picky.Picky", -1], DecodeContext())
    with pytest.raises(FieldError, match="KeyError"):
        registry.decode_columns("t.picky.Picky", [[1, -1]], 2, DecodeContext())


def test_a_schema_weighs_its_instances_where_a_cheap_estimate_exists() -> None:
    """Schema.weigh: the membrane's estimate of an answer's size before it is encoded
    (docs/protocol.md section 7): 16, plus 9 per field, plus the length of each bytes
    and str field; None for a schema with fields whose size is not cheap to know."""
    reg = ProteinRegistry()

    @protein("t.weigh.Flat", registry=reg)
    class Flat:
        n: int
        x: float
        ok: bool
        data: bytes
        _text: str

    @protein("t.weigh.Deep", registry=reg)
    class Deep:
        n: int
        items: list[bytes]

    weigh = schema_of(Flat).weigh
    assert weigh is not None
    assert weigh(Flat(1, 2.0, True, bytes(1000), "abc")) == 16 + 5 * 9 + 1000 + 3
    assert schema_of(Deep).weigh is None
