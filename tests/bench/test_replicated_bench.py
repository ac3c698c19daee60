"""Smoke test of ``cellmesh bench replicated``: it runs, measures every part, and reports
(never speed: numbers are only checked to exist and be sane)."""

from __future__ import annotations

import json

import pytest

from cellmesh.bench.replicated import Params, format_report, measure

pytestmark = pytest.mark.slow


async def test_replicated_bench_measures_throughput_latency_and_failover() -> None:
    params = Params(ops=300, concurrency=16, connections=4, sequential_ops=20, trials=1,
                    rounds=2, sandbox="processes")
    rep = await measure(params)
    json.dumps(rep)
    thr = rep["throughput"]
    assert thr["ops"] == 300 and thr["ops_per_s"] > 0
    assert 1 <= thr["entries"] <= 300 + 10 and thr["ops_per_entry"] >= 1
    assert rep["single"]["p50_ms"] > 0
    assert len(rep["failover_s"]) == 1 and rep["failover_s"][0] > 0
    raw = rep.pop("raw_raft")
    assert raw["ops"] == 300 and raw["ops_per_entry"] == 1.0
    assert len(rep["round_ratios_vs_raw"]) == 2
    result = {
        "params": {"ops": 300, "concurrency": 16, "connections": 4},
        "pysyncobj": None, "raw_raft": raw, "raw_raft_single": rep.pop("raw_raft_single"),
        "replicated": rep,
        "ratios": {"vs_pysyncobj": None, "vs_raw_raft": thr["ops_per_s"] / 300.0,
                   "single_p50_ms": rep["single"]["p50_ms"], "single_p50_vs_raw_raft": 1.0,
                   "failover_median_ms": rep["failover_s"][0] * 1e3},
        "targets": {"vs_pysyncobj": 3.0, "vs_raw_raft": 0.5, "single_p50_ms": 3.0,
                    "failover_median_ms": 500.0},
    }
    text = format_report(result)
    assert "not measured (pip install pysyncobj)" in text
    assert "ops/entry" in text and "failover" in text and "vs raw Raft" in text
