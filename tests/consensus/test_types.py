"""The consensus value types: :func:`make_entry`, the fast constructor WAL recovery uses."""

from __future__ import annotations

import attrs
import pytest

from cellmesh.consensus.types import Entry, EntryKind, make_entry


@pytest.mark.parametrize("kind", list(EntryKind))
def test_make_entry_builds_the_same_value_as_the_constructor(kind: EntryKind) -> None:
    made = make_entry(7, 3, kind, b"cmd")
    built = Entry(index=7, term=3, kind=kind, data=b"cmd")
    assert type(made) is Entry
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert attrs.evolve(made, term=4) == Entry(index=7, term=4, kind=kind, data=b"cmd")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.term = 9  # type: ignore[misc]


def test_entry_has_nothing_make_entry_would_skip() -> None:
    """make_entry bypasses attrs' __init__: right only while Entry checks and converts nothing."""
    assert not hasattr(Entry, "__attrs_post_init__")
    assert not hasattr(Entry, "__attrs_pre_init__")
    for field in attrs.fields(Entry):
        assert field.validator is None and field.converter is None, field.name
    assert [f.name for f in attrs.fields(Entry)] == ["index", "term", "kind", "data"]
