"""The CLI for replicated cells: status columns, `replicas`, `wipe`, `kill X/i`, `logs X/i`.

Rendering is pure (StatusReply values in); the commands talk to a fake root
(a real membrane on a private socket directory) that records the requests.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console
from test_ops import app_main, sockdir

from cellmesh import open_membrane
from cellmesh.actors.control import (
    Ack,
    CellStatus,
    ChangeReplicas,
    GroupStatus,
    KillCell,
    ReplicaInfo,
    StatusReply,
    WipeReplica,
)
from cellmesh.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from cellmesh.cli._ops import group_lines, rates, status_json, status_table, top_frame
from cellmesh.cli._swap import swap_targets

__all__ = ["app_main", "sockdir"]  # fixtures, imported


def info(replica: int, **kw: Any) -> ReplicaInfo:
    fields: dict[str, Any] = {
        "group": "ledger", "replica": replica, "role": "follower", "term": 3, "leader": 0,
        "commit_index": 120, "applied_index": 118, "last_index": 121, "lag": 3,
        "voters": [0, 1, 2], "learners": [], "error": "", "given_up": False,
    }
    fields.update(kw)
    return ReplicaInfo(**fields)


def row(name: str, replica: ReplicaInfo | None = None, **kw: Any) -> CellStatus:
    fields: dict[str, Any] = {
        "name": name, "supervisor": "ledger" if replica else "root", "state": "running",
        "pid": 100, "restarts": 0, "uptime": 5.0, "msgs_in": 10, "msgs_out": 10, "rss": 1 << 20,
        "cpu_percent": 1.0, "rtt_p50_us": 50.0, "rtt_p99_us": 90.0, "backend": "bwrap",
        "dna": "abc", "replica": replica,
    }
    fields.update(kw)
    return CellStatus(**fields)


REPLY = StatusReply(
    root_pid=7, uptime=60.0, manifest="/m.toml",
    cells=[
        row("web"),
        row("ledger/0", info(0, role="leader", applied_index=121, lag=0)),
        row("ledger/1", info(1)),
        row("ledger/2", info(2, role="unknown", term=None, leader=None, commit_index=None,
                             applied_index=None, last_index=None, lag=None, voters=[],
                             error="exit code 1: WalCorrupted: /d/wal-1.log: corrupt at byte "
                             "4096: checksum mismatch", given_up=True),
            state="stopped", pid=None),
    ],
    restart_log=[],
    groups=[GroupStatus(name="ledger", supervisor="root", members=[0, 1, 2], target=5,
                        leader=0, term=3, change="3 -> 5: adding ledger/3", error="")],
)


def text(renderable: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=220, no_color=True).print(renderable)
    return buf.getvalue()


def test_status_table_shows_role_term_commit_applied_lag_per_replica() -> None:
    lines = text(status_table(REPLY)).splitlines()
    assert lines[0].split()[-5:] == ["ROLE", "TERM", "COMMIT", "APPLIED", "LAG"]
    cols = {line.split()[0]: line.split() for line in lines[1:]}
    assert cols["web"][-5:] == ["-", "-", "-", "-", "-"]
    assert cols["ledger/0"][-5:] == ["leader", "3", "120", "121", "0"]
    assert cols["ledger/1"][-5:] == ["follower", "3", "120", "118", "3"]
    assert cols["ledger/1"][1] == "ledger"  # supervised by its group
    assert lines[-1].split()[-6:] == ["given", "up", "-", "-", "-", "-"]


def test_status_table_of_a_mesh_without_replicas_keeps_its_columns() -> None:
    plain = StatusReply(root_pid=7, uptime=1.0, manifest="", cells=[row("web")],
                        restart_log=[])
    assert "ROLE" not in text(status_table(plain))
    assert text(group_lines(plain)).strip() == ""


def test_group_lines_name_members_leader_change_and_failures() -> None:
    out = text(group_lines(REPLY))
    assert ("ledger: 3 replicas (ledger/0, ledger/1, ledger/2), leader ledger/0 (term 3), "
            "target 5") in out
    assert "changing: 3 -> 5: adding ledger/3" in out
    assert ("ledger/2 given up: exit code 1: WalCorrupted: /d/wal-1.log: corrupt at byte 4096: "
            "checksum mismatch") in out


def test_status_json_has_the_replica_fields_and_groups() -> None:
    doc = status_json(REPLY)
    assert json.loads(json.dumps(doc)) == doc
    cells = {c["name"]: c for c in doc["cells"]}  # type: ignore[attr-defined,index]
    assert cells["web"]["replica"] is None
    assert cells["ledger/1"]["replica"] == {
        "group": "ledger", "id": 1, "role": "follower", "term": 3, "leader": 0,
        "commit_index": 120, "applied_index": 118, "last_index": 121, "lag": 3,
        "voters": [0, 1, 2], "learners": [], "error": "", "given_up": False,
    }
    assert cells["ledger/2"]["replica"]["given_up"] is True
    assert doc["groups"] == [{
        "name": "ledger", "supervisor": "root", "members": [0, 1, 2], "target": 5,
        "leader": 0, "term": 3, "change": "3 -> 5: adding ledger/3", "error": "",
    }]


def test_top_frame_shows_the_replica_columns_and_group_lines() -> None:
    out = text(top_frame(REPLY, rates(REPLY, REPLY, 1.0), interval=1.0))
    header = next(line for line in out.splitlines() if line.startswith("CELL"))
    assert header.split()[-5:] == ["ROLE", "TERM", "COMMIT", "APPLIED", "LAG"]
    lead = next(line for line in out.splitlines() if line.startswith("ledger/0"))
    assert lead.split()[-5:] == ["leader", "3", "120", "121", "0"]
    assert "leader ledger/0 (term 3)" in out


# ---------------------------------------------------------------- commands


@pytest.fixture
async def root(sockdir: Path) -> AsyncIterator[list[object]]:
    """A fake root: answers every request with an Ack naming it; yields what it received."""
    seen: list[object] = []

    async def handler(msg: object) -> Ack:
        seen.append(msg)
        return Ack(text=f"did {type(msg).__name__}")

    async with open_membrane("mitosis", handler, socket_dir=sockdir):
        yield seen


async def run(argv: list[str]) -> int:
    return await trio.to_thread.run_sync(main, argv)


async def test_replicas_command_sends_change_replicas(
    root: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(["replicas", "ledger", "5"]) == EXIT_OK
    assert root == [ChangeReplicas(name="ledger", count=5)]
    assert "cellmesh: did ChangeReplicas" in capsys.readouterr().out


async def test_wipe_and_kill_take_a_replica_name(root: list[object]) -> None:
    assert await run(["wipe", "ledger/1"]) == EXIT_OK
    assert await run(["kill", "ledger/2"]) == EXIT_OK
    assert await run(["kill", "web"]) == EXIT_OK
    assert root == [WipeReplica(name="ledger/1"), KillCell(name="ledger/2"), KillCell(name="web")]


@pytest.mark.parametrize("argv", [
    ["replicas", "ledger", "4"], ["replicas", "ledger", "9"], ["replicas", "ledger", "0"],
    ["replicas", "bad name", "3"], ["replicas", "ledger", "x"], ["replicas", "ledger"],
    ["wipe", "ledger"], ["wipe", "ledger/x"], ["wipe", "ledger/01"], ["wipe", "../x/1"],
    ["kill", "ledger/"], ["kill", "le dger/1"], ["logs", "ledger/-1"],
])  # fmt: skip
async def test_replica_commands_refuse_bad_arguments(root: list[object], argv: list[str]) -> None:
    assert await run(argv) == EXIT_USAGE
    assert root == []


def test_replicas_without_a_root_fails(sockdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replicas", "ledger", "3"]) == EXIT_FAILURE
    assert "no root is running" in capsys.readouterr().err


def test_logs_of_a_replica_reads_its_own_files(
    sockdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = sockdir / "home" / "logs"
    logs.mkdir(parents=True)
    (logs / "ledger..1.log").write_text("replica one\n")
    (logs / "ledger..1.events.jsonl").write_text(json.dumps({
        "ts": 4_000_000_000, "event": "exited", "cell": "ledger..1", "cell_id": "ledger..1",
        "backend": "bwrap", "pid": 9, "code": 1, "reason": "crash"}) + "\n")
    (logs / "ledger..0.events.jsonl").write_text("")
    assert main(["logs", "ledger/1"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0] == "replica one"
    assert main(["logs", "ledger"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "it is a replicated cell, name one replica (ledger/0, ledger/1)" in err


def test_swap_all_swaps_a_replicated_cell_once_in_the_roots_order() -> None:
    assert swap_targets(REPLY) == ["web", "ledger"]
    assert swap_targets(StatusReply(
        root_pid=7, uptime=1.0, manifest="/m.toml", restart_log=[],
        cells=[row("ledger/0", info(0)), row("ledger/1", info(1)), row("cache"),
               row("ledger/2", info(2))],
    )) == ["ledger", "cache"]
