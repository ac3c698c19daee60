"""The root's last-words file: records, summaries, and what a reader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellmesh._util import innermost
from cellmesh.actors.control import RestartRecord
from cellmesh.actors.errors import DnaSourceError, SupervisorEscalation
from cellmesh.actors.lastwords import (
    LastWords,
    last_words_path,
    read_last_words,
    why_it_ended,
    without_cancelled,
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


def test_a_clean_stop_with_a_reason_says_it() -> None:
    words = LastWords(pid=7, state="stopped", started_at=0.0, stopped_at=100.0, clean=True,
                      reason="SIGTERM before the mesh was up")
    assert words.summary(now=165.0, alive=False) == (
        "the last root (pid 7) stopped 1m05s ago on request (SIGTERM before the mesh was up)"
    )


async def _cancelled_group(*, failing: BaseException | None = None) -> BaseExceptionGroup:
    """What a cancelled nursery raises (caught inside the cancelled scope): its tasks'
    Cancelled, and ``failing`` from a task that raised it as it was cancelled."""

    async def task(raise_instead: BaseException | None) -> None:
        try:
            await trio.sleep_forever()
        finally:
            if raise_instead is not None:
                raise raise_instead

    caught: list[BaseExceptionGroup] = []
    try:
        with trio.CancelScope() as scope:
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(task, None)
                    nursery.start_soon(task, failing)
                    await trio.sleep(0)
                    scope.cancel()
            except BaseExceptionGroup as group:
                caught.append(group)
                raise
    except BaseExceptionGroup:  # the scope absorbed the Cancelled, not ``failing``
        assert failing is not None
    return caught[0]


async def test_a_group_of_nothing_but_cancelled_is_a_cancellation(paths: Paths) -> None:
    group = await _cancelled_group()
    assert len(group.exceptions) == 4
    assert without_cancelled(group) is None
    mixed = await _cancelled_group(failing=OverflowError("boom"))
    rest = without_cancelled(mixed)
    assert rest is not None and innermost(rest).args == ("boom",)
    # the reason names the error, not the group of it and the Cancelled it came with
    assert why_it_ended(_Root(paths, []), mixed) == "OverflowError: boom"
    assert without_cancelled(OverflowError("x")) is not None
