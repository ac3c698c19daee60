"""Smoke test of ``cellmesh bench spawn``: it runs real cells and produces numbers (never speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellmesh.bench.spawn import SpawnParams, format_report, run_spawn_bench
from cellmesh.cli import main as cli_main

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


def test_spawn_bench_host_produces_positive_numbers() -> None:
    report = run_spawn_bench(SpawnParams(rounds=2, sandboxes=("host",), profile_samples=1))
    host = report["sandboxes"]["host"]
    for kind, key in (("cold", "connect_to_reply"), ("cold", "root_to_reply"),
                      ("warm", "connect_to_reply"), ("restart", "kill_to_reply"),
                      ("restart_no_standby", "kill_to_reply")):
        assert "error" not in host[kind], host[kind]
        summary = host[kind][key]
        assert summary["samples"] == 2
        assert 0 < summary["median_ms"] <= summary["p99_ms"]
        assert summary["ratio"] > 0
        assert host[kind]["floor"]["median_ms"] > 0
    assert "error" not in host["profile"], host["profile"]
    assert host["profile"]["import_runtime"]["median_ms"] > 0
    assert report["floor"]["samples"] == 8  # 2 rounds x 4 measurements
    assert {(t["measurement"], t["sandbox"]) for t in report["targets"]} >= {("restart", "host")}
    json.dumps(report)  # the --json document is serialisable
    text = format_report(report)
    assert "warm: connect -> first reply" in text
    assert "reported by tractor, not measured here" in text


def test_cli_bench_spawn_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "spawn", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--rounds", "--sandbox", "--quick", "--json"):
        assert option in out
