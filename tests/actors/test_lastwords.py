"""The root's last-words file: records, summaries, and what a reader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellmesh.actors.control import RestartRecord
from cellmesh.actors.errors import DnaSourceError, SupervisorEscalation
from cellmesh.actors.lastwords import (
    LastWords,
    last_words_path,
    read_last_words,
    why_it_ended,
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


class _Root:
    def __init__(self, paths: Paths, log: list[RestartRecord]) -> None:
        self.paths = paths
        self.restart_log = log

    async def run(self, *, task_status: object) -> None:  # pragma: no cover - unused
        raise NotImplementedError


def test_why_it_ended_names_the_error_inside_trios_one_member_groups(paths: Paths) -> None:
    root = _Root(paths, [])
    error = DnaSourceError("/m/cells/pw.txt", "is a symlink; cell code must be plain files")
    wrapped = BaseExceptionGroup("nursery", [ExceptionGroup("inner", [error])])
    assert why_it_ended(root, wrapped) == f"DnaSourceError: {error}"
    assert why_it_ended(root, OverflowError("x")) == "OverflowError: x"


def test_why_it_ended_names_the_failure_beneath_a_sub_supervisor_that_gave_up(
    paths: Paths,
) -> None:
    log = [RestartRecord(at=1.0, cell="u", reason="exit code 3"),
           RestartRecord(at=2.0, cell="v", reason="exit code 7")]
    escalation = SupervisorEscalation("reached_max_restart_intensity", child_id="s")
    assert why_it_ended(_Root(paths, log), escalation) == (
        "the top supervisor gave up (reached_max_restart_intensity, child 's'); "
        "the last failure: v: exit code 7"
    )
    log.append(RestartRecord(at=3.0, cell="s", reason="exit code 1: boom"))
    assert why_it_ended(_Root(paths, log), escalation).endswith("its last exit: exit code 1: boom")
