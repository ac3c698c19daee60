"""docs/ledger.md tells the truth: its code tables match the enums, its example runs.

The house rule "a table in the docs, each row reached by a test": the rows
are checked here against :mod:`cellmesh.ledger.codes`, and every code is
reached by a scenario in test_ledger_result_codes.py.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from cellmesh.ledger import (
    BATCH_MAX,
    AccountFlags,
    AccountResult,
    FilterFlags,
    PendingStatus,
    TransferFlags,
    TransferResult,
)
from cellmesh.ledger.codes import TRANSIENT_FAILURES

DOC = Path(__file__).parents[2] / "docs" / "ledger.md"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(title)
    following = re.compile(r"^#{2,3} ", re.MULTILINE).search(text, start + len(title))
    return text[start:following.start() if following else len(text)]


def _code_rows(title: str) -> list[tuple[int, str]]:
    return [(int(n), name) for n, name in
            re.findall(r"^\| (\d+) \| `([a-z0-9_]+)` \|", _section(title), re.MULTILINE)]


@pytest.mark.parametrize(("title", "codes"), [
    ("### create_accounts results", AccountResult),
    ("### create_transfers results", TransferResult),
])
def test_ledger_docs_result_code_table_matches_the_enum(title: str, codes: type[enum.IntEnum]
                                                        ) -> None:
    assert _code_rows(title) == [(int(c), c.name.lower()) for c in codes]


@pytest.mark.parametrize("flags", [AccountFlags, TransferFlags])
def test_ledger_docs_flag_table_matches_the_enum(flags: type[enum.IntFlag]) -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d+) \|", _section(f"| `{flags.__name__}`"),
                      re.MULTILINE)
    assert [(name, int(bit)) for name, bit in rows] == [
        (f.name, int(f)) for f in flags if f.value and f.name]


def test_ledger_docs_transient_rows_are_the_remembered_failures() -> None:
    """The rows marked "(transient)" are exactly the codes whose id is remembered."""
    marked = re.findall(r"^\| \d+ \| `([a-z0-9_]+)` \|.*\(transient\)",
                        _section("### create_transfers results"), re.MULTILINE)
    assert sorted(marked) == sorted(code.name.lower() for code in TRANSIENT_FAILURES)


def test_ledger_docs_name_the_other_enums_and_limits() -> None:
    text = DOC.read_text(encoding="utf-8")
    for member in PendingStatus:
        assert f"`{member.name}` ({int(member)})" in text
    for member in (FilterFlags.DEBITS, FilterFlags.CREDITS, FilterFlags.REVERSED):
        assert f"`{member.name}` ({int(member)}" in text
    assert f"`BATCH_MAX` = {BATCH_MAX}" in text


def test_ledger_docs_worked_example_runs() -> None:
    section = _section("## A worked example")
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    exec(compile(code, f"{DOC}:worked example", "exec"), {"__name__": "ledger_doc_example"})
