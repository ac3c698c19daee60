"""The report pipe's records (pure): what a cell says about its exit, bounded and printable."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cellmesh.actors.exitcause import (
    MAX_MESSAGE,
    MAX_TYPE,
    Failure,
    Reports,
    clean,
    failure_record,
    loaded_record,
    parse_reports,
)


def test_records_round_trip() -> None:
    data = loaded_record() + failure_record("start", "ValueError", "boom")
    assert parse_reports(data) == Reports(
        loaded=True, failure=Failure(stage="start", type_name="ValueError", message="boom")
    )
    config = failure_record("config", "ConfigError", "module 'x' not found", source="CELL_ENTRY")
    assert parse_reports(config).failure == Failure(
        stage="config", type_name="ConfigError", message="module 'x' not found",
        source="CELL_ENTRY",
    )


def test_parse_reports_a_later_load_clears_an_earlier_failure() -> None:
    # A standby that could not preload one version of the code, then loaded
    # another (a hot swap's ``s TOKEN DIGEST``): the old failure is not why it exits.
    preload_failed = failure_record("import", "ImportError", "version a is broken")
    assert parse_reports(preload_failed + loaded_record()) == Reports(loaded=True, failure=None)
    crashed = preload_failed + loaded_record() + failure_record("run", "KeyError", "'k'")
    assert parse_reports(crashed).failure == Failure(
        stage="run", type_name="KeyError", message="'k'"
    )


def test_describe_names_the_manifest_key_or_the_exception() -> None:
    def d(stage: str, source: str | None = None, message: str = "boom") -> str:
        failure = Failure(stage=stage, type_name="ValueError", message=message,  # type: ignore[arg-type]
                          source=source)
        return failure.describe("cells.kv")

    assert d("config", "CELL_ENTRY", "module 'kv.x' not found") == (
        "cells.kv.entry: module 'kv.x' not found"
    )
    assert d("config", "CELL_DNA_DIR") == "cells.kv.dna: boom"
    assert d("config", "CELL_NAME") == "cells.kv: CELL_NAME: boom"
    assert d("config") == "cells.kv: boom"
    assert d("import") == "cells.kv.entry: importing the cell's code raised ValueError: boom"
    assert d("start") == "ValueError in on_start: boom"
    assert d("construct") == "ValueError in the constructor: boom"
    assert d("start", message="") == "ValueError in on_start"
    assert d("setup") == "ValueError while starting: boom"  # the runtime's steps, not on_start
    assert d("run") == "ValueError: boom"


def test_the_last_failure_wins_and_a_torn_line_is_ignored() -> None:
    data = (failure_record("run", "A", "first") + failure_record("run", "B", "second")
            + b'{"event":"failed","stage":"run","type":"C"')
    failure = parse_reports(data).failure
    assert failure is not None and failure.type_name == "B"


def test_a_hostile_record_is_cut_and_cleaned() -> None:
    doc = {"event": "failed", "stage": "sideways", "type": "\x1b[31m" + "T" * 5000,
           "message": "line\nbreak\x07" + "m" * 50_000, "source": ["not", "a", "str"]}
    failure = parse_reports(json.dumps(doc).encode() + b"\n").failure
    assert failure is not None
    assert failure.stage == "run"  # an unknown stage is a crash
    assert len(failure.type_name) == MAX_TYPE and failure.type_name.isprintable()
    assert len(failure.message) == MAX_MESSAGE and failure.message.isprintable()
    assert failure.message.startswith("line?break?")
    assert failure.source is None


def test_clean_bounds_and_replaces_control_characters() -> None:
    assert clean("a\tb\x1bc", 100) == "a?b?c"
    assert clean("x" * 10, 8) == "xxxxx..."
    assert clean(None, 8) == ""


@given(st.binary(max_size=4096))
def test_parse_reports_never_raises_on_garbage(data: bytes) -> None:
    reports = parse_reports(data)
    assert isinstance(reports, Reports)
    if reports.failure is not None:
        assert len(reports.failure.type_name) <= MAX_TYPE
        assert len(reports.failure.message) <= MAX_MESSAGE


@given(st.lists(st.dictionaries(
    st.sampled_from(["event", "stage", "type", "message", "source"]),
    st.one_of(st.none(), st.text(max_size=50), st.integers(), st.booleans(),
              st.sampled_from(["failed", "loaded", "run", "config"])),
), max_size=5))
def test_parse_reports_takes_any_json_objects(docs: list[dict[str, object]]) -> None:
    data = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    reports = parse_reports(data)
    assert reports.loaded == any(d.get("event") == "loaded" for d in docs)
