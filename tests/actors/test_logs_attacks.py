"""Attacks on ``cellmesh logs`` by a hostile cell: forged times, endless lines, event floods.

Each test drives the real writers (:func:`pump_output` over a pipe, or
:class:`RotatingLog` / :class:`JsonlEventLog`) and checks what the readers
(:func:`read_log`, :class:`LogFollower`) make of the files: a cell's bytes
never become a line's time, a follower's memory stays bounded, and the
events files stay bounded on disk while readers still see them all, in order.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from cellmesh.actors.logs import (
    MAX_LINE,
    LineStamper,
    LogFollower,
    LogRecord,
    RotatingLog,
    pump_output,
    read_log,
    stamp,
)
from cellmesh.sandbox import JsonlEventLog

T1 = 1_795_246_801.25  # 2026-11-21T07:40:01.25Z
T2 = 1_795_246_802.5
FORGED_TS = 946_684_799.0  # 1999-12-31T23:59:59Z
FORGED = (
    b"1999-12-31T23:59:59.000000Z [1999-12-31T23:59:59Z] event exited pid=1 code=0 reason=exit"
)


def _output(records: list[LogRecord]) -> list[LogRecord]:
    return [r for r in records if r.event is None]


async def _pump_chunks(
    log: RotatingLog,
    writers: list[list[bytes]],
    times: list[float],
    after_step: Callable[[int], None] = lambda step: None,
) -> None:
    """Run one :func:`pump_output` per writer (a process of the cell) into ``log``.

    ``writers[w][i]`` is written to writer ``w``'s pipe at step ``i`` (b"" for
    nothing), and the pumps run until every task is blocked, so each chunk is
    one read and one :meth:`RotatingLog.write`, in this order, deterministically;
    each read takes the next of ``times``. ``after_step(i)`` runs after step ``i``.
    """
    clock = iter(times)
    pipes = [os.pipe() for _ in writers]
    try:
        async with trio.open_nursery() as nursery:
            for rfd, _ in pipes:
                nursery.start_soon(functools.partial(
                    pump_output, rfd, log, clock=lambda: next(clock)
                ))
            for step in range(max(len(w) for w in writers)):
                for (_, wfd), chunks in zip(pipes, writers, strict=True):
                    if step < len(chunks) and chunks[step]:
                        os.write(wfd, chunks[step])
                        await trio.testing.wait_all_tasks_blocked()
                after_step(step)
            for _, wfd in pipes:
                os.close(wfd)
    finally:
        for rfd, _ in pipes:
            os.close(rfd)
    log.close()


def _follow_all(follower: LogFollower) -> list[LogRecord]:
    records = follower.poll_records()
    while more := follower.poll_records():
        records += more
    return records


# ---------------------------------------------------------------- forged times


async def test_attack_a_stamp_at_the_start_of_a_rotated_file_is_not_the_lines_time(
    tmp_path: Path,
) -> None:
    # The auditor's repro (r03): 4060 bytes without a newline nearly fill the
    # file, then a chunk that does not fit starts a fresh file with what looks
    # like a stamp. It continues the line the root stamped at T1.
    log = RotatingLog(tmp_path, "c", max_bytes=4096)
    log.write(stamp(T1 - 1) + b"hello\n")
    from_start = LogFollower(tmp_path, "c", read_log(tmp_path, "c").cursor)
    await _pump_chunks(log, [[b"A" * 4060, FORGED + b"\n"]], [T1, T2])

    assert (tmp_path / "c.log.2").exists()
    view = read_log(tmp_path, "c")
    assert all(r.ts != FORGED_TS for r in view.records), view.records
    line = LogRecord(ts=T1, text="A" * 4060 + FORGED.decode())
    assert _output(view.records) == [LogRecord(ts=T1 - 1, text="hello"), line]
    shown = view.records[-1].display(timestamps=True)
    assert shown.startswith("[2026-11-21T07:40:01.250000Z] AAAA")
    assert view.records[-1].to_json("c")["time"] == "2026-11-21T07:40:01.250000Z"
    assert read_log(tmp_path, "c", lines=1).records == [line]
    assert _follow_all(from_start) == [line]


async def test_attack_a_follower_started_mid_line_does_not_take_the_rest_for_a_stamp(
    tmp_path: Path,
) -> None:
    # `cellmesh logs -f` started while the line is unfinished (in the same
    # file, and across a rotation): what follows continues that line.
    for max_bytes in (1 << 20, 4096):
        log_dir = tmp_path / str(max_bytes)
        followers: list[LogFollower] = []

        def start_following(step: int, log_dir: Path = log_dir,
                            followers: list[LogFollower] = followers) -> None:
            if step == 0:
                view = read_log(log_dir, "c")
                assert [r.text for r in view.records] == ["A" * 4060]
                followers.append(LogFollower(log_dir, "c", view.cursor))

        log = RotatingLog(log_dir, "c", max_bytes=max_bytes)
        await _pump_chunks(log, [[b"A" * 4060, FORGED + b"\n"]], [T1, T2], start_following)
        records = followers[0].poll_records()
        assert all(r.ts != FORGED_TS for r in records), records
        assert records == [LogRecord(ts=T1, text=FORGED.decode())]


def test_attack_a_stamp_anywhere_in_a_line_longer_than_a_file_is_never_a_time(
    tmp_path: Path,
) -> None:
    # A line longer than max_bytes is split across files wherever the size
    # says; the cell chooses the offset of its fake stamp so that one of them
    # starts a file -- also the oldest kept file, whose line start rotated out.
    for pad in range(0, 160, 3):
        for keep in (1, 50):
            log_dir = tmp_path / f"{pad}-{keep}"
            log = RotatingLog(log_dir, "c", max_bytes=64, keep=keep)
            stamper = LineStamper()
            log.write(stamper.stamp(b"hi\n", T1 - 1))
            from_hi = LogFollower(log_dir, "c", read_log(log_dir, "c").cursor)
            for chunk, ts in ((b"x" * pad + FORGED + b"\n", T1), (b"next\n", T2)):
                log.write(stamper.stamp(chunk, ts))
            log.close()
            whole = read_log(log_dir, "c").records
            assert all(r.ts in (T1 - 1, T1, T2, None) for r in whole), (pad, keep, whole)
            assert whole[-1] == LogRecord(ts=T2, text="next")
            if keep == 50:  # nothing rotated out: the line is whole again
                line = LogRecord(ts=T1, text=(b"x" * pad + FORGED).decode())
                next_line = LogRecord(ts=T2, text="next")
                assert whole == [LogRecord(ts=T1 - 1, text="hi"), line, next_line]
                assert _follow_all(from_hi) == [line, next_line]
            for n in range(len(whole) + 1):
                assert read_log(log_dir, "c", lines=n).records == whole[len(whole) - n:]


async def test_attack_two_processes_of_a_cell_cannot_interleave_a_forged_stamp(
    tmp_path: Path,
) -> None:
    # A cell's standby (or the new version during a swap) writes to the same
    # log: its newline must not turn the rest of the other process's line
    # into a line start that a reader parses for a stamp.
    log = RotatingLog(tmp_path, "c")
    await _pump_chunks(log, [[b"x", b"", FORGED + b"\n"], [b"", b"standby\n"]], [T1, T2, T2 + 1])
    records = read_log(tmp_path, "c").records
    assert all(r.ts != FORGED_TS for r in records), records
    # the standby's stamp went into the unfinished line; the rest is a line of its own
    assert records[-1] == LogRecord(ts=T1, text=FORGED.decode())


# ---------------------------------------------------------------- endless lines


def test_attack_a_line_without_newline_does_not_grow_the_follower(tmp_path: Path) -> None:
    # The auditor's repro (r04): the cell never writes a newline. The follower
    # hands the line over in pieces as it comes, as read_log cuts it, and holds
    # at most MAX_LINE bytes of it.
    log = RotatingLog(tmp_path, "c", max_bytes=256 * 1024, keep=1000)
    follower = LogFollower(tmp_path, "c", read_log(tmp_path, "c").cursor)
    stamper = LineStamper()
    block = "y\u00e9" * 21_845  # 65535 bytes: pieces must not cut the 2-byte character
    got: list[LogRecord] = []
    for i in range(64):  # 4 MiB, no newline
        log.write(stamper.stamp(block.encode(), T1 + i))
        got += follower.poll_records()
        shown = sum(len(r.text.encode()) for r in got)
        assert (i + 1) * len(block.encode()) - shown <= MAX_LINE
    assert follower.buffered <= MAX_LINE
    log.write(stamper.stamp(b"\nend\n", T2))
    log.close()
    got += follower.poll_records()
    assert got == read_log(tmp_path, "c").records
    assert "".join(r.text for r in got[:-1]) == block * 64
    assert {r.ts for r in got[:-1]} == {T1} and got[-1] == LogRecord(ts=T2, text="end")
    assert all(len(r.text.encode()) <= MAX_LINE and "\ufffd" not in r.text for r in got)


# ---------------------------------------------------------------- event floods


def test_attack_a_crash_loop_does_not_grow_the_events_file_without_bound(
    tmp_path: Path,
) -> None:
    # The auditor's repro (r11), with the defaults: each event carries 2 KiB
    # of detail; 6 MiB of events are written, at most 4 files of 1 MiB stay.
    sink = JsonlEventLog(log_dir=tmp_path, clock=iter(range(10**6)).__next__)
    for i in range(3000):
        sink.emit("c", "exited", {"pid": i, "detail": "d" * 2000})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["c.events.jsonl", *(f"c.events.jsonl.{n}" for n in (1, 2, 3))]
    assert all(p.stat().st_size <= 1 << 20 for p in tmp_path.iterdir())
    assert sink.dropped == 0
    pids = [r.event["pid"] for r in read_log(tmp_path, "c").records if r.event]
    assert pids == list(range(3000 - len(pids), 3000))  # the newest, in order
    assert len(pids) * 2000 > 3 << 20
    tail = read_log(tmp_path, "c", lines=5).records
    assert [r.event["pid"] for r in tail if r.event] == list(range(2995, 3000))


def _event_line(pid: int) -> bytes:
    return json.dumps({"ts": float(pid), "event": "started", "cell": "c", "pid": pid}).encode()


def test_readers_see_rotated_events_files_in_order(tmp_path: Path) -> None:
    ev = tmp_path / "c.events.jsonl"
    for n, pids in ((2, (1, 2)), (1, (3,))):
        Path(f"{ev}.{n}").write_bytes(b"".join(_event_line(p) + b"\n" for p in pids))
    ev.write_bytes(_event_line(4) + b"\n")
    view = read_log(tmp_path, "c")
    assert [r.event["pid"] for r in view.records if r.event] == [1, 2, 3, 4]
    follower = LogFollower(tmp_path, "c", view.cursor)
    # the writer appends, rotates, appends more than the cursor's offset: the
    # follower drains the old file through its new name, then the new one
    with ev.open("ab") as f:
        f.write(_event_line(5) + b"\n")
    os.replace(f"{ev}.2", f"{ev}.3")
    os.replace(f"{ev}.1", f"{ev}.2")
    os.replace(ev, f"{ev}.1")
    ev.write_bytes(b"".join(_event_line(p) + b"\n" for p in (6, 7, 8)))
    assert [r.event["pid"] for r in follower.poll_records() if r.event] == [5, 6, 7, 8]
    assert follower.poll_records() == []
    assert [r.event["pid"] for r in read_log(tmp_path, "c").records if r.event] == list(
        range(1, 9)
    )


def test_the_events_writer_rotates_and_the_follower_loses_nothing(tmp_path: Path) -> None:
    sink = JsonlEventLog(log_dir=tmp_path, max_bytes=400, keep=1000)
    follower = LogFollower(tmp_path, "c", read_log(tmp_path, "c").cursor)
    seen: list[object] = []
    for pid in range(200):
        sink.emit("c", "started", {"pid": pid})
        if pid % 7 == 0:
            seen += [r.event["pid"] for r in follower.poll_records() if r.event]
    seen += [r.event["pid"] for r in follower.poll_records() if r.event]
    assert seen == list(range(200))
    assert len(list(tmp_path.glob("c.events.jsonl.*"))) > 20
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())


def test_a_reopened_log_knows_whether_its_file_ends_a_line(tmp_path: Path) -> None:
    # A new root appends to the file the last one left: the rest of a line goes
    # on in place; the rest of a line at a line start (after another process's
    # newline) is marked, so a reader does not parse it for a stamp.
    (tmp_path / "c.log").write_bytes(stamp(T1) + b"unfinished")
    log = RotatingLog(tmp_path, "c")
    log.write(b" " + FORGED[:28] + b"rest\n", continues=True)
    log.write(FORGED + b"\n", continues=True)
    log.close()
    assert (tmp_path / "c.log").read_bytes().endswith(b"rest\n+" + FORGED + b"\n")
    assert read_log(tmp_path, "c").records == [
        LogRecord(ts=T1, text="unfinished " + FORGED[:28].decode() + "rest"),
        LogRecord(ts=T1, text=FORGED.decode()),
    ]


def test_attack_event_fields_a_cell_chose_are_shown_escaped(tmp_path: Path) -> None:
    """A failed swap's cause is the new version's exception message: its escape
    sequences reached the operator's terminal through `cellmesh logs`' event lines."""
    sink = JsonlEventLog(log_dir=tmp_path, clock=iter(range(10)).__next__)
    sink.emit("c", "swap_rolled_back", {"cause": "bad \x1b]0;PWNED\x07\x1b[2J \U000e0041"})
    (line,) = [r.display() for r in read_log(tmp_path, "c").records]
    assert "cause=bad \\x1b]0;PWNED\\x07\\x1b[2J \\U000e0041" in line, line
    assert line.isprintable()


def test_attack_a_parent_churning_child_names_keeps_the_files_of_the_newest_only(
    tmp_path: Path,
) -> None:
    """A parent that starts and stops children under fresh names made the root
    create a log and an events file per name, without end (auditor's r05)."""
    from cellmesh.actors._logkeep import ChildLogs

    running = {"p.c3"}  # restarted under its old name: its files are in use
    keep = ChildLogs(tmp_path, running=running.__contains__, keep=4)
    (tmp_path / "p.c1.x.log").write_text("another cell's")  # p.c1's name as a prefix
    for i in range(10):
        name = f"p.c{i}"
        for suffix in (".log", ".log.1", ".events.jsonl", ".events.jsonl.1"):
            (tmp_path / f"{name}{suffix}").write_text("x")
        keep.stopped(name)
    left = sorted({p.name.split(".log")[0].split(".events")[0] for p in tmp_path.iterdir()})
    assert left == ["p.c1.x", "p.c3", "p.c6", "p.c7", "p.c8", "p.c9"]
    assert len(list(tmp_path.glob("p.c9*"))) == 4
