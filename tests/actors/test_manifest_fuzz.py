"""Fuzzing the manifest parser. Invariant: garbage in, a Manifest or ManifestError out.

(a) arbitrary text, and text spliced from TOML fragments, goes through
    :func:`parse_manifest`;
(b) structured, nearly valid manifests are generated as dicts, fed to
    :func:`manifest_from_dict` and, emitted as TOML by a tiny emitter, to
    :func:`parse_manifest`: both paths must agree. Every manifest that parses
    must form a supervision tree (each cell and supervisor has one parent).
"""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.actors.manifest import Manifest, ManifestError, manifest_from_dict, parse_manifest

PATH = Path("/fuzz/cellmesh.toml")
FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def outcome(text: str) -> Manifest | ManifestError:
    try:
        return parse_manifest(text, path=PATH)
    except ManifestError as exc:
        return exc


def check_tree(m: Manifest) -> None:
    """Each cell and nested supervisor is a child of exactly one supervisor."""
    listed = [c for s in (m.top, *m.supervisors.values()) for c in s.children]
    assert sorted(listed) == sorted([*m.cells, *m.supervisors])
    for name in listed:
        assert m.parent_of(name) in ("root", *m.supervisors)
    for cell in m.cells.values():  # what a replicated cell is promised to be
        if cell.replicas is not None:
            assert cell.replicas in (1, 3, 5, 7)
            assert cell.data and cell.activation == "eager" and cell.max_children == 0
    assert all(t.replicas is None for t in m.templates.values())


# --------------------------------------------------------------------------
# (a) text


@FUZZ
@given(st.text(max_size=200))
def test_manifest_fuzz_arbitrary_text_gives_manifest_or_error(text: str) -> None:
    result = outcome(text)
    if isinstance(result, Manifest):
        check_tree(result)


FRAGMENTS = [
    "[root]", "[supervisor]", "[supervisors.s]", "[supervisors.t]", "[cells.a]", "[cells.b]",
    "[templates.w]", "[cells.root]", '[cells."x y"]', 'dna = "a.py"', "dna = 1", 'dna = ""',
    'children = ["a", "s"]', 'children = ["b"]', 'children = ["s"]', 'children = ["t"]',
    'strategy = "simple_one_for_one"', 'strategy = "rest_for_one"', 'template = "w"',
    'calls = ["a", "w"]', 'templates = ["w"]', "max_children = 2", "max_children = -1",
    'network = ["example.com:443", "[::1]:80"]', 'network = ["::1:80"]', 'network = "host"',
    'limits = {memory = "256M", cpu = 0.5}', "limits = {memory = 0}", "intensity = true",
    "period = 0", "period = inf", "shutdown = nan", 'shutdown = "brutal_kill"', "shutdown = 1e400",
    'secrets = [{name = "A", key = "k"}]', 'env = {A = "1"}', "backoff = {initial = 1}",
    'restart = "forever"', 'activation = "on_demand"', 'entry = "a.b:C"', "data = true",
    'sandbox = "stub"', "log_max_bytes = 99999999999999999999", "x = [[[", "= 1", '"',
    "replicas = 3", "replicas = 4", "replicas = true", "data = false",
]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14))
def test_manifest_fuzz_spliced_fragments_give_manifest_or_error(lines: list[str]) -> None:
    result = outcome("\n".join(lines) + "\n")
    if isinstance(result, Manifest):
        check_tree(result)


# --------------------------------------------------------------------------
# (b) structured dicts, and the same dicts emitted as TOML


def emit_str(text: str) -> str:
    """A TOML basic string: escape backslash, quote and control characters."""
    out = []
    for c in text:
        if c in '\\"' or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def emit_value(value: object) -> str:
    """TOML for the subset generated here (inline tables and arrays only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 'inf', '-inf', '0.5', '1e+20' are all TOML
    if isinstance(value, str):
        return emit_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(emit_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{emit_str(k)} = {emit_value(v)}" for k, v in value.items()) + "}"


def emit(doc: dict[str, object]) -> str:
    return "".join(f"{emit_str(k)} = {emit_value(v)}\n" for k, v in doc.items())


GOOD_NAMES = st.sampled_from(["a", "b", "db", "w", "s", "t", "a.b"])
BAD_NAMES = st.sampled_from(["root", "mitosis", "x y"])
NAMES = st.integers(0, 9).flatmap(lambda i: GOOD_NAMES if i else BAD_NAMES)
WORDS = st.sampled_from(
    [
        "permanent", "transient", "temporary", "forever", "one_for_one", "one_for_all",
        "rest_for_one", "simple_one_for_one", "brutal_kill", "infinity", "eager", "on_demand",
        "none", "host", "256M", "1G", "0", "a.py", "pkg", "a:B", "a.b:C", "example.com:443",
        "[::1]:80", "1.2.3.4:0", "env", "file", "auto", "bwrap", "A", "B=C", "k/x", "",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-3, max_value=70000),
    st.integers(),
    st.floats(),
    WORDS,
    NAMES,
    st.text(max_size=6).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
)
KEYS = st.one_of(WORDS, NAMES, st.sampled_from(["memory", "cpu", "name", "key", "initial"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)


def maybe(good: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly a plausible value, sometimes anything."""
    return st.integers(0, 9).flatmap(lambda i: good if i else VALUES)


NAME_LISTS = st.lists(NAMES, max_size=3)
SHUTDOWNS = st.one_of(st.sampled_from(["brutal_kill", "infinity"]), st.floats(0, 60))
LIMITS = st.fixed_dictionaries(
    {},
    optional={
        "memory": maybe(st.sampled_from(["256M", "1G", 4096])),
        "cpu": maybe(st.floats(0.1, 4)),
        "pids": maybe(st.integers(1, 100)),
        "open_files": maybe(st.integers(1, 100)),
    },
)
SECRET = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["A", "B"])), "key": maybe(st.sampled_from(["k", "j"]))},
    optional={"deliver": maybe(st.sampled_from(["env", "file"])), "ttl": maybe(st.floats(1, 9))},
)
CELL_OPTIONAL: dict[str, st.SearchStrategy[object]] = {
    "entry": maybe(st.sampled_from(["a:B", "a.b:C"])),
    "restart": maybe(st.sampled_from(["permanent", "transient", "temporary"])),
    "shutdown": maybe(SHUTDOWNS),
    "calls": maybe(NAME_LISTS),
    "env": maybe(st.dictionaries(st.sampled_from(["A", "B", "C=D"]), WORDS, max_size=2)),
    "limits": maybe(LIMITS),
    "secrets": maybe(st.lists(SECRET, max_size=2)),
    "data": maybe(st.booleans()),
    "network": maybe(st.one_of(st.just("host"), st.lists(WORDS, max_size=2))),
    "max_children": maybe(st.integers(0, 3)),
    "templates": maybe(NAME_LISTS),
    "start_timeout": maybe(st.floats(0.1, 30)),
    "replicas": maybe(st.sampled_from([1, 3, 5, 7, 2, 9])),
}
CELL = st.fixed_dictionaries({"dna": maybe(st.sampled_from(["a.py", "pkg", "/abs/x.py"]))},
                             optional=CELL_OPTIONAL)  # fmt: skip
SUPERVISOR = st.fixed_dictionaries(
    {},
    optional={
        "strategy": maybe(st.sampled_from(["one_for_one", "rest_for_one", "simple_one_for_one"])),
        "intensity": maybe(st.integers(0, 5)),
        "period": maybe(st.floats(0.1, 60)),
        "backoff": maybe(st.fixed_dictionaries({"initial": st.floats(0, 1)})),
        "children": maybe(NAME_LISTS),
        "restart": maybe(st.sampled_from(["permanent", "temporary"])),
        "shutdown": maybe(SHUTDOWNS),
        "template": maybe(st.just("w")),
    },
)
TOP_SUPERVISOR = st.one_of(
    SUPERVISOR.map(lambda t: {k: v for k, v in t.items() if k in ("strategy", "children")}),
    SUPERVISOR,
)
DOCS = st.fixed_dictionaries(
    {},
    optional={
        "typo": st.nothing(),
        "root": maybe(st.fixed_dictionaries({}, optional={"allow_spawn": st.booleans()})),
        "supervisor": maybe(TOP_SUPERVISOR),
        "supervisors": maybe(st.dictionaries(NAMES, SUPERVISOR, max_size=3)),
        "cells": maybe(st.dictionaries(NAMES, CELL, max_size=4)),
        "templates": maybe(st.dictionaries(NAMES, CELL, max_size=2)),
    },
)


def from_dict(doc: dict[str, object]) -> Manifest | ManifestError:
    try:
        return manifest_from_dict(doc, path=PATH)
    except ManifestError as exc:
        return exc


@FUZZ
@given(DOCS)
def test_manifest_fuzz_structured_dicts_agree_with_their_toml(doc: dict[str, object]) -> None:
    direct = from_dict(doc)
    via_text = outcome(emit(doc))
    if isinstance(direct, Manifest):
        check_tree(direct)
        assert via_text == direct
    else:
        assert isinstance(via_text, ManifestError), str(direct)
        assert (via_text.key, via_text.problem) == (direct.key, direct.problem)
