"""Smoke test of ``cellmesh bench raft``: it runs, produces numbers, prints JSON (never speed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cellmesh.bench.raft import (
    QUICK,
    RaftBenchParams,
    fill_sqlite,
    format_raft_report,
    pysyncobj_throughput,
    read_sqlite,
    run_raft_bench,
)
from cellmesh.cli import main as cli_main


@pytest.fixture(scope="module")
def tiny_report() -> dict[str, Any]:
    """One tiny run of every measurement, shared by the tests that read its report."""
    params = RaftBenchParams(
        ops=40, concurrency=8, sequential_ops=0, payload=16, tick=0.02, trials=1, wal_entries=500
    )
    return run_raft_bench(params)


def test_raft_bench_tiny_run_produces_a_json_report(tiny_report: dict[str, Any]) -> None:
    report = tiny_report
    json.dumps(report)  # the --json document is serialisable
    (run,) = report["runs"]
    for key in ("cellmesh_fsync", "cellmesh_no_fsync"):
        assert run[key]["ops"] == 40 and run[key]["ops_per_s"] > 0
        assert run[key]["p99_ms"] >= run[key]["p50_ms"] > 0
        assert run[key]["leader_wal_batches"] >= 1
    assert (run["pysyncobj"] is None) == (run["cellmesh_fsync_vs_pysyncobj"] is None)
    assert report["failover"]["trials"] == 1 and report["failover"]["median_ms"] > 0
    assert report["wal_recovery"]["entries"] == 500
    text = format_raft_report(report)
    assert "raw Raft (fdatasync per batch)" in text and "failover" in text


def test_raft_bench_reports_the_failover_and_recovery_baselines(
    tiny_report: dict[str, Any],
) -> None:
    """The failover trials run on PySyncObj too (timed like raw Raft), and WAL recovery
    next to SQLite and the raw read of the WAL's files; each prints its ratio."""
    report = tiny_report
    failover = report["failover"]
    assert failover["election_timeout_ms"] == pytest.approx([200.0, 400.0])
    assert failover["heartbeat_ms"] == pytest.approx(20.0)
    base = failover["pysyncobj"]
    if base is None:  # PySyncObj (an optional bench dependency) is not installed
        assert failover["median_vs_pysyncobj"] is None and not report["pysyncobj_installed"]
    else:
        assert base["trials"] == 1 and len(base["samples_ms"]) == 1
        assert base["max_ms"] >= base["median_ms"] >= base["min_ms"] > 0
        assert base["election_timeout_ms"] == failover["election_timeout_ms"]  # set to match
        assert base["heartbeat_ms"] == failover["heartbeat_ms"]
        assert failover["median_vs_pysyncobj"] == pytest.approx(
            failover["median_ms"] / base["median_ms"]
        )
    recovery = report["wal_recovery"]
    assert recovery["sqlite"]["rows"] == 500 and recovery["sqlite"]["seconds"] > 0
    assert recovery["raw_read"]["bytes"] == recovery["wal_bytes"] > 500 * 16
    assert recovery["raw_read"]["files"] == recovery["wal_files"] >= 1
    sqlite_seconds = recovery["sqlite"]["seconds"]
    assert recovery["vs_sqlite"] == pytest.approx(recovery["seconds"] / sqlite_seconds)
    assert recovery["vs_raw_read"] > 0
    text = format_raft_report(report)
    assert "Raft failover" in text and "election timeout 400-800 ms" not in text
    assert text.count("election timeout 200-400 ms") == (2 if base is not None else 1)
    assert ("vs PySyncObj n/a" in text) == (base is None)
    assert "SQLite (WAL mode, every row)" in text and "raw read of the WAL files" in text
    assert "vs SQLite" in text and "vs raw read" in text and "lower is better" in text


def test_raft_bench_without_pysyncobj_prints_no_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pysyncobj", None)  # "import pysyncobj" raises ImportError
    assert pysyncobj_throughput(ops=10, concurrency=1, payload=8) is None
    params = RaftBenchParams(
        ops=0, concurrency=1, sequential_ops=0, payload=16, tick=0.02, trials=1, wal_entries=100
    )
    report = run_raft_bench(params)
    assert not report["pysyncobj_installed"]
    assert report["failover"]["pysyncobj"] is None
    assert report["failover"]["median_vs_pysyncobj"] is None
    assert report["failover"]["median_ms"] > 0
    text = format_raft_report(report)
    failover_rows = text[text.index("Raft failover"):text.index("WAL recovery")]
    assert "no baseline" in failover_rows and "vs PySyncObj n/a" in failover_rows


def test_sqlite_recovery_baseline_reads_back_every_row(tmp_path: Path) -> None:
    """Across transactions of 1000 rows, the last one partial: exactly N rows, in order."""
    path = tmp_path / "log.db"
    fill_sqlite(path, 2345, 16)
    rows = read_sqlite(path)
    assert len(rows) == 2345
    assert [idx for idx, _term, _data in rows] == list(range(1, 2346))
    assert all(term == 1 and data == b"x" * 16 for _idx, term, data in rows)
    assert all(type(data) is bytes for _idx, _term, data in rows)


def test_raft_bench_quick_is_shorter_than_the_full_run() -> None:
    assert QUICK.ops < RaftBenchParams().ops and QUICK.trials < RaftBenchParams().trials


def test_cli_bench_raft_offers_json_and_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "raft", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--json" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["raft", "--payload", "99999999999999999999"], "--payload"),
        (["raft", "--sequential-ops", "1"], "--sequential-ops"),  # a quantile needs two
        (["raft", "--sequential-ops", "-1"], "--sequential-ops"),
        (["raft", "--trials", "-1"], "--trials"),
        (["raft", "--wal-entries", "-3"], "--wal-entries"),
        (["raft", "--ops", "5"], "--ops"),  # its warm-up of ops // 10 never ended
        (["replicated", "--trials", "-1"], "--trials"),
        (["replicated", "--ops", "5"], "--ops"),
    ],
)
def test_cli_bench_refuses_bad_counts_naming_the_flag(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """They gave tracebacks (OverflowError, StatisticsError, AssertionError) after the
    run, or hung; now exit 2 at once with one line naming the flag."""
    assert cli_main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cellmesh: error: {named}: must be an integer from ") and (
        err.count("\n") == 1
    ), err
