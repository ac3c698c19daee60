"""The root's last-words file: records, summaries, and what a reader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellmesh.actors.lastwords import (
    LastWords,
    last_words_path,
    read_last_words,
    write_last_words,
)
from cellmesh.config import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.from_env({"CELL_HOME": str(tmp_path)})


def test_last_words_round_trip_through_the_file(paths: Paths) -> None:
    words = LastWords(pid=7, state="stopped", started_at=100.0, stopped_at=160.0,
                      clean=False, reason="the top supervisor gave up", manifest="/m.toml")
    write_last_words(paths, words)
    assert read_last_words(paths) == words
    assert last_words_path(paths).stat().st_mode & 0o777 == 0o600
    assert not list(last_words_path(paths).parent.glob(".root.last-words*"))  # no temp left


@pytest.mark.parametrize(
    ("words", "alive", "said"),
    [
        (LastWords(pid=7, state="stopped", started_at=0.0, stopped_at=100.0, clean=True),
         False, "the last root (pid 7) stopped 1m05s ago on request"),
        (LastWords(pid=7, state="stopped", started_at=0.0, stopped_at=160.0, reason="boom"),
         False, "the last root (pid 7) stopped 5s ago: boom"),
        (LastWords(pid=7, state="running", started_at=0.0), False,
         "the last root (pid 7, started 2m45s ago) ended without last words "
         "(killed by a signal?); see its log"),
        (LastWords(pid=7, state="running", started_at=0.0), True,
         "the last root (pid 7) is not answering"),
    ],
)
def test_last_words_summary(words: LastWords, alive: bool, said: str) -> None:
    assert words.summary(now=165.0, alive=alive) == said


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"pid": "7", "state": "stopped", "started_at": 1}',
     '{"pid": 7, "state": "exploded", "started_at": 1}',
     '{"pid": 7, "state": "stopped", "started_at": true}', "\udcff"],
)
def test_a_malformed_file_is_no_last_words(paths: Paths, text: str) -> None:
    last_words_path(paths).parent.mkdir(parents=True, exist_ok=True)
    last_words_path(paths).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert read_last_words(paths) is None


def test_no_file_is_no_last_words(paths: Paths) -> None:
    assert read_last_words(paths) is None
