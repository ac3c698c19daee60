"""Smoke test of ``cellmesh bench swap``: a tiny real run produces numbers (never speed)."""

from __future__ import annotations

import array
import json
from pathlib import Path

import pytest

from cellmesh.bench._swap_load import summarise
from cellmesh.bench.swap import SwapParams, format_report, run_swap_bench
from cellmesh.cli import main as cli_main

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


def test_swap_bench_load_splits_calls_by_swap_window() -> None:
    starts = array.array("d", [0.0, 1.0, 2.0, 3.0, 9.0])
    durations = array.array("d", [0.1, 0.5, 0.2, 0.01, 0.3])
    # windows [1.4, 1.6] (overlaps the call at 1.0-1.5) and [2.9, 3.05] (the call at 3.0)
    got = summarise(starts, durations, [[2.9, 3.05], [1.4, 1.6]])
    assert got["calls"] == 5 and got["calls_during_swaps"] == 2
    assert got["slowest_during_swap_ms"] == pytest.approx(500.0)
    assert got["steady_max_ms"] == pytest.approx(300.0)
    assert summarise(array.array("d"), array.array("d"), [])["slowest_during_swap_ms"] is None


def test_swap_bench_host_produces_numbers() -> None:
    params = SwapParams(swaps=2, big_swaps=1, replicated_swaps=1, callers=2, restarts=1,
                        sandbox="host", settle=0.0)
    doc = run_swap_bench(params)
    small = doc["runs"]["small_state"]
    assert small["outcomes"] == {"swapped": 2} and small["failed"] == 0
    assert small["serving_median_ms"] > 0 and small["calls"] > 0
    assert doc["runs"]["ten_mib_state"]["state_bytes"] > 10 << 20
    replicated = doc["runs"]["replicated_3"]
    assert replicated["outcomes"] == {"swapped": 1} and replicated["failed"] == 0
    assert replicated["total_median_ms"] > 0 and replicated["calls_during_swaps"] > 0
    assert doc["baseline"]["median_ms"] > 0
    json.dumps(doc)  # the --json document is serialisable
    text = format_report(doc)
    assert "command -> serving, median" in text and "targets met:" in text
    assert "3 replicas" in text and "whole swap, median" in text


def test_cli_bench_swap_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "swap", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--json" in out
