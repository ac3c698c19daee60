"""Smoke test of ``cellmesh bench raft``: it runs, produces numbers, prints JSON (never speed)."""

from __future__ import annotations

import json

import pytest

from cellmesh.bench.raft import QUICK, RaftBenchParams, format_raft_report, run_raft_bench
from cellmesh.cli import main as cli_main


def test_raft_bench_tiny_run_produces_a_json_report() -> None:
    params = RaftBenchParams(
        ops=40, concurrency=8, sequential_ops=0, payload=16, tick=0.02, trials=1, wal_entries=500
    )
    report = run_raft_bench(params)
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
