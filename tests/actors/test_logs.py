"""Captured output: RotatingLog rotation, pump_output over a real pipe, read_log, following."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from cellmesh.actors.logs import (
    CONTINUATION_MARK,
    STAMP_LEN,
    LineStamper,
    LogFollower,
    LogRecord,
    RotatingLog,
    _StampParser,
    follow_log,
    format_event,
    logged_cells,
    merge_by_time,
    pump_output,
    read_log,
    rotated_files,
    stamp,
)
from cellmesh.errors import ConfigError


def _stream(log_dir: Path, name: str) -> bytes:
    """Every file of ``name``, oldest first, without its continuation mark, concatenated."""
    parts = [p.read_bytes() for _, p in rotated_files(log_dir, name)]
    live = log_dir / f"{name}.log"
    if live.exists():
        parts.append(live.read_bytes())
    return b"".join(part.removeprefix(CONTINUATION_MARK) for part in parts)


def _chunks(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.choice([0, 1, 3, 17, 40, 90, 200])
        body = bytes(rng.choice(b"abcdefgh\n") for _ in range(size))
        out.append(body + (f"<{i}>".encode() if rng.random() < 0.5 else b""))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_rotating_log_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    log = RotatingLog(tmp_path / "logs", "c1", max_bytes=256, keep=10_000)
    chunks = _chunks(seed, 400)
    for chunk in chunks:
        log.write(chunk)
    log.close()
    assert _stream(tmp_path / "logs", "c1") == b"".join(chunks)
    files = [p for _, p in rotated_files(tmp_path / "logs", "c1")]
    assert len(files) > 10
    assert all(p.stat().st_size <= 256 for p in [*files, tmp_path / "logs" / "c1.log"])
    assert log.dropped_bytes == 0


def test_rotating_log_cuts_at_a_newline_when_the_chunk_has_one(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=10)
    log.write(b"aaaa\nbbbb\ncccc")
    log.write(b"dddddddd\n")  # no newline fits in the room left: rotate first
    log.close()
    assert (tmp_path / "c.log.2").read_bytes() == b"aaaa\nbbbb\n"
    assert (tmp_path / "c.log.1").read_bytes() == b"cccc"
    assert (tmp_path / "c.log").read_bytes() == b"+dddddddd\n"  # continues "cccc"


def test_rotating_log_splits_a_line_longer_than_max_bytes(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=4)
    log.write(b"0123456789")
    log.close()
    # a file that starts in the middle of the line says so: the mark is not the cell's
    assert [p.read_bytes() for _, p in rotated_files(tmp_path, "c")] == [b"0123", b"+456"]
    assert (tmp_path / "c.log").read_bytes() == b"+789"


def test_rotating_log_keeps_at_most_keep_rotated_files(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=8, keep=3)
    data = b"".join(f"line{i:03}\n".encode() for i in range(50))  # 8 bytes a line
    for i in range(0, len(data), 5):
        log.write(data[i:i + 5])
    log.close()
    assert [n for n, _ in rotated_files(tmp_path, "c")] == [3, 2, 1]
    kept = _stream(tmp_path, "c")
    assert data.endswith(kept)
    assert len(kept) >= 3 * 8


def test_rotating_log_drops_files_beyond_a_lowered_keep(tmp_path: Path) -> None:
    for n in (1, 2, 3, 4, 5):
        (tmp_path / f"c.log.{n}").write_bytes(b"old\n")
    log = RotatingLog(tmp_path, "c", max_bytes=4, keep=2)
    log.write(b"abc\ndef\n")
    log.close()
    assert [n for n, _ in rotated_files(tmp_path, "c")] == [2, 1]


def test_rotating_log_files_are_private(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "logs", "c", max_bytes=4, keep=2)
    log.write(b"12345678\n")
    log.close()
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    for path in (tmp_path / "logs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_rotating_log_appends_to_an_existing_file_and_tightens_its_mode(tmp_path: Path) -> None:
    (tmp_path / "c.log").write_bytes(b"before\n")
    os.chmod(tmp_path / "c.log", 0o644)
    log = RotatingLog(tmp_path, "c", max_bytes=10)
    log.write(b"after\n")  # 7 + 6 > 10: rotates before writing
    log.close()
    assert (tmp_path / "c.log.1").read_bytes() == b"before\n"
    assert (tmp_path / "c.log").read_bytes() == b"after\n"
    assert stat.S_IMODE((tmp_path / "c.log.1").stat().st_mode) == 0o600


def test_rotating_log_counts_bytes_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    log = RotatingLog(tmp_path / "file" / "logs", "c")
    log.write(b"lost\n")
    assert log.dropped_bytes == 5
    assert isinstance(log.last_error, OSError)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"name": "../x"}, "name"), ({"max_bytes": 0}, "max_bytes"), ({"keep": 0}, "keep")],
)
def test_rotating_log_validates_its_arguments(
    tmp_path: Path, kwargs: dict[str, object], bad: str
) -> None:
    args: dict[str, object] = {"log_dir": tmp_path, "name": "c", **kwargs}
    with pytest.raises(ConfigError):
        RotatingLog(**args)  # type: ignore[arg-type]


async def test_pump_output_copies_a_pipe_until_eof(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=1000, keep=1000)
    rfd, wfd = os.pipe()
    payload = b"".join(f"line {i} {'x' * (i % 50)}\n".encode() for i in range(5000))
    payload += b"no newline at the end"
    lines: list[bytes] = []

    def writer() -> None:
        with os.fdopen(wfd, "wb") as f:
            f.write(payload)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, writer)
            await pump_output(rfd, log, on_line=lines.append, clock=lambda: 1_795_246_801.25)
    finally:
        os.close(rfd)
    log.close()
    assert len(payload) > 2 * 65536  # more than one pipe buffer
    stored = _stream(tmp_path, "c").split(b"\n")
    assert all(line.startswith(b"2026-11-21T07:40:01.250000Z ") for line in stored)
    assert b"\n".join(line[STAMP_LEN:] for line in stored) == payload
    assert lines == payload.split(b"\n")
    view = read_log(tmp_path, "c", lines=3)
    assert [r.ts for r in view.records] == [1_795_246_801.25] * 3
    assert view.lines[-1] == "no newline at the end"


async def test_pump_output_hands_long_lines_over_in_pieces(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c")
    rfd, wfd = os.pipe()
    long_line = b"z" * 200_000
    pieces: list[bytes] = []

    def writer() -> None:
        with os.fdopen(wfd, "wb") as f:
            f.write(long_line + b"\nend\n")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, writer)
            await pump_output(rfd, log, on_line=pieces.append)
    finally:
        os.close(rfd)
    log.close()
    assert b"".join(pieces[:-1]) == long_line
    assert all(len(p) <= 65536 for p in pieces)
    assert pieces[-1] == b"end"


def _event(ts: float, event: str, **fields: object) -> str:
    return json.dumps({"ts": ts, "event": event, "cell": "c", "cell_id": "c-1",
                       "backend": "host", **fields}) + "\n"


def test_format_event_shows_the_fields_that_matter() -> None:
    line = format_event({"ts": 1_795_246_801.5, "event": "exited", "cell": "c", "pid": 9,
                         "code": 1, "signal_name": None, "reason": "crash", "backend": "host"})
    assert line == "[2026-11-21T07:40:01Z] event exited pid=9 code=1 reason=crash"
    assert format_event({"event": "odd", "x": 1}) == "[?] event odd x=1"


def test_read_log_orders_rotated_files_and_merges_events(tmp_path: Path) -> None:
    (tmp_path / "c.log.2").write_bytes(stamp(900) + b"one\n")
    (tmp_path / "c.log.1").write_bytes(stamp(1900) + b"two\n")
    live = stamp(2900) + b"three\n" + stamp(2950) + b"four\n"
    (tmp_path / "c.log").write_bytes(live)
    (tmp_path / "c.events.jsonl").write_text(
        _event(3000, "exited", code=1, reason="crash")
        + _event(1500, "exited", code=0, reason="exit")
        + '{"torn'
    )
    view = read_log(tmp_path, "c")
    assert view.found
    assert view.lines == [  # by time: 900, 1500, 1900, 2900, 2950, 3000
        "one",
        "[1970-01-01T00:25:00Z] event exited code=0 reason=exit",
        "two",
        "three",
        "four",
        "[1970-01-01T00:50:00Z] event exited code=1 reason=crash",
    ]
    assert read_log(tmp_path, "c", lines=2).lines == view.lines[-2:]
    assert read_log(tmp_path, "c", lines=0).lines == []
    assert view.cursor.offset == len(live)


def test_read_log_tail_equals_the_end_of_the_whole(tmp_path: Path) -> None:
    for n, text in ((3, b"a1\na2\n"), (2, b"b1\n"), (1, b"c1\nc2\nc3\n")):
        (tmp_path / f"c.log.{n}").write_bytes(text)
        os.utime(tmp_path / f"c.log.{n}", (1000 * (4 - n), 1000 * (4 - n)))
    (tmp_path / "c.log").write_bytes(b"d1\n")
    (tmp_path / "c.events.jsonl").write_text(
        "".join(_event(ts, "started", pid=ts) for ts in (500, 1500, 2500, 3500, 4500))
    )
    whole = read_log(tmp_path, "c").lines
    assert len(whole) == 12
    for n in range(len(whole) + 2):
        assert read_log(tmp_path, "c", lines=n).lines == (whole[-n:] if n else []), n


def test_read_log_of_an_unknown_cell_finds_nothing(tmp_path: Path) -> None:
    view = read_log(tmp_path / "missing", "ghost")
    assert not view.found
    assert view.lines == []


def test_read_log_with_events_only_is_found(tmp_path: Path) -> None:
    (tmp_path / "c.events.jsonl").write_text(_event(0, "started", pid=7))
    view = read_log(tmp_path, "c")
    assert view.found
    assert view.lines == ["[1970-01-01T00:00:00Z] event started pid=7"]


def test_follower_continues_across_rotations_without_loss(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=32, keep=4)
    log.write(b"history\n")
    view = read_log(tmp_path, "c")
    follower = LogFollower(tmp_path, "c", view.cursor)
    assert follower.poll() == ""
    seen: list[str] = []
    sent: list[bytes] = []
    for i in range(60):
        chunk = f"msg {i:02}\n".encode()
        sent.append(chunk)
        log.write(chunk)
        if i % 7 == 0:  # up to two rotations between polls
            seen.append(follower.poll())
    seen.append(follower.poll())
    log.close()
    assert "".join(seen) == b"".join(sent).decode()


def test_follower_picks_up_a_rotation_between_read_and_poll(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=10, keep=3)
    log.write(b"abc\n")
    follower = LogFollower(tmp_path, "c", read_log(tmp_path, "c").cursor)
    log.write(b"def\n")  # same file
    log.write(b"ghi\n")  # rotates first
    log.close()
    assert follower.poll() == "def\nghi\n"


def test_follower_keeps_split_characters_and_reports_events(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "c")
    follower = LogFollower(tmp_path, "c", read_log(tmp_path, "c").cursor)
    snow = "\u2603".encode()
    log.write(b"x" + snow[:1])
    assert follower.poll() == ""  # a line is shown once its newline arrives
    log.write(snow[1:] + b"\n")
    assert follower.poll() == "x\u2603\n"
    events = tmp_path / "c.events.jsonl"
    line = _event(0, "started", pid=3)
    events.write_text(line[:10])  # torn: waits for the rest
    assert follower.poll() == ""
    events.write_text(line)
    assert follower.poll() == "[1970-01-01T00:00:00Z] event started pid=3\n"
    log.close()


async def test_follow_log_yields_new_text(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = RotatingLog(tmp_path, "c", max_bytes=8)
    log.write(b"old\n")
    cursor = read_log(tmp_path, "c").cursor
    got: list[str] = []
    agen = follow_log(tmp_path, "c", cursor, interval=1.0)
    try:
        log.write(b"new one\n")
        got.extend(r.text for r in await agen.__anext__())
        log.write(b"and two\n")
        got.extend(r.text for r in await agen.__anext__())
    finally:
        await agen.aclose()  # type: ignore[attr-defined]
        log.close()
    assert got == ["new one", "and two"]


def test_format_event_shows_swap_events_in_a_fixed_order() -> None:
    line = format_event({
        "ts": 1_795_246_801.5, "event": "swapped", "cell": "c", "outcome": "swapped",
        "from_dna": "3f2a9c0d1b7e", "to_dna": "8e41d07b55a2", "from_version": "1",
        "to_version": "2", "serving_ms": 96.4, "state_bytes": 2310, "cause": None,
    })
    assert line == (
        "[2026-11-21T07:40:01Z] event swapped outcome=swapped from_dna=3f2a9c0d1b7e "
        "to_dna=8e41d07b55a2 from_version=1 to_version=2 serving_ms=96.4 state_bytes=2310"
    )
    back = format_event({"event": "swap_rolled_back", "from_dna": "a", "to_dna": "b",
                         "cause": "the new version failed in on_swap_in: KeyError: 'x'"})
    assert back.endswith("cause=the new version failed in on_swap_in: KeyError: 'x'")


# ---------------------------------------------------------------- time stamps


def _unstamp(data: bytes) -> bytes:
    return b"\n".join(line[STAMP_LEN:] for line in data.split(b"\n"))


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_line_stamper_stamps_every_line_once_however_the_stream_is_cut(
    chunks: list[bytes],
) -> None:
    stamper = LineStamper()
    out = b"".join(stamper.stamp(c, 1_795_246_801.0 + i) for i, c in enumerate(chunks))
    whole = b"".join(chunks)
    if not whole:
        assert out == b""
        return
    assert _unstamp(out.removesuffix(b"\n")) == whole.removesuffix(b"\n")
    lines = out.removesuffix(b"\n").split(b"\n")
    assert len(lines) == len(whole.removesuffix(b"\n").split(b"\n"))
    assert all(len(line) >= STAMP_LEN and line[STAMP_LEN - 2:STAMP_LEN] == b"Z " for line in lines)


def test_stamp_is_utc_with_microseconds() -> None:
    assert stamp(1_795_246_801.5) == b"2026-11-21T07:40:01.500000Z "
    assert len(stamp(0.0)) == STAMP_LEN


def test_read_log_interleaves_output_and_events_by_time(tmp_path: Path) -> None:
    (tmp_path / "c.log").write_bytes(
        stamp(100.0) + b"starting\n" + stamp(200.0) + b"serving\n"
        + b"continuation without a stamp\n" + stamp(400.0) + b"stopping\n"
    )
    (tmp_path / "c.events.jsonl").write_text(
        _event(300, "exited", code=1, reason="crash") + _event(50, "started", pid=1)
        + _event(200, "started", pid=2)
    )
    view = read_log(tmp_path, "c")
    assert [(r.ts, r.stream) for r in view.records] == [
        (50.0, "event"), (100.0, "output"), (200.0, "output"), (200.0, "output"),
        (200.0, "event"), (300.0, "event"), (400.0, "output"),
    ]
    assert view.lines[1:4] == ["starting", "serving", "continuation without a stamp"]
    assert read_log(tmp_path, "c", lines=2).records == view.records[-2:]
    shown = view.records[1].display(timestamps=True)
    assert shown == "[1970-01-01T00:01:40.000000Z] starting"
    doc = view.records[5].to_json("c")
    assert doc["stream"] == "event" and doc["ts"] == 300.0 and doc["cell"] == "c"
    assert doc["time"] == "1970-01-01T00:05:00.000000Z"
    assert json.loads(json.dumps(view.records[1].to_json("c")))["text"] == "starting"


def test_merge_by_time_keeps_output_order_and_puts_untimed_events_last() -> None:
    out = [LogRecord(ts=t, text=str(t)) for t in (5.0, None, 3.0, 9.0)]
    ev = [LogRecord(ts=ts, text="e", event={}) for ts in (None, 4.0, 8.0)]
    merged = merge_by_time(out, ev)
    assert [r.text for r in merged if r.event is None] == ["5.0", "None", "3.0", "9.0"]
    assert [(r.ts, r.stream) for r in merged] == [
        (4.0, "event"), (5.0, "output"), (None, "output"), (3.0, "output"), (8.0, "event"),
        (9.0, "output"), (None, "event"),
    ]


def test_logged_cells_lists_names_with_output_or_events(tmp_path: Path) -> None:
    for name in ("cache.log", "cache.log.1", "web.events.jsonl", "other.txt"):
        (tmp_path / name).write_text("")
    assert logged_cells(tmp_path) == ["cache", "web"]
    assert logged_cells(tmp_path / "missing") == []


def test_a_cells_output_cannot_drive_the_terminal_or_pose_as_an_event() -> None:
    text = "\r[2026-01-01T00:00:00Z] event exited \x1b]0;t\x07\u200b\tok é"
    forged = LogRecord(ts=1.0, text=text)
    shown = forged.display()
    assert shown == "\\x0d[2026-01-01T00:00:00Z] event exited \\x1b]0;t\\x07\\u200b\tok é"
    assert forged.display(timestamps=True).endswith(shown)
    assert LogRecord(ts=1.0, text="plain").display() == "plain"


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_a_cell_cannot_forge_a_lines_time_with_a_carriage_return(chunks: list[bytes]) -> None:
    # Whatever a cell writes, each line read back carries the root's stamp of
    # its chunk: a b"\r" inside a line does not start a line of its own.
    forged = b"ok\r2099-01-01T00:00:00.000000Z dated 2099\n"
    stamper = LineStamper()
    data = b"".join(stamper.stamp(c, 100.0 + i) for i, c in enumerate([*chunks, forged]))
    records = _StampParser().records(data)
    assert all(r.ts is not None and 100.0 <= r.ts < 100.0 + len(chunks) + 1 for r in records)
    assert records[-1].text.endswith("\r2099-01-01T00:00:00.000000Z dated 2099")
