"""Smoke tests of the wire benchmark harness: it runs and produces numbers (never speed)."""

from __future__ import annotations

import json
import math

import attrs
import pytest

from cellmesh.bench import QUICK, format_report, run_wire_bench
from cellmesh.bench._stats import median, percentile
from cellmesh.cli import main as cli_main


def test_stats_median_and_nearest_rank_percentile() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        percentile(samples, 0)


def test_wire_bench_baselines_produce_numbers() -> None:
    params = QUICK.scaled(0.01, rounds=2)
    report = run_wire_bench(params, include_cellmesh=False, include_reference=False,
                            profile=False)
    ms = report["measurements"]
    for name in ("unix_pingpong", "trio_pingpong"):
        assert "error" not in ms[name], ms[name]
        assert ms[name]["samples"] == 2 * params.rtt_samples
        assert ms[name]["median_us"] > 0
        assert ms[name]["p99_us"] >= ms[name]["median_us"]
    for name in ("raw_pipeline", "raw_pipeline_rec", "raw_window16", "raw_window256",
                 "raw_oneway", "floor_wake16", "floor_wake256", "floor_checkpoint"):
        assert "error" not in ms[name], ms[name]
        assert len(ms[name]["round_msgs_per_s"]) == 2
        assert ms[name]["msgs_per_s"] > 0
    assert "error" not in ms["raw_bulk"], ms["raw_bulk"]
    assert ms["raw_bulk"]["bytes"] == params.bulk_bytes
    assert math.isfinite(ms["raw_bulk"]["mib_per_s"])
    assert "skipped" in ms["cm_rtt"]
    json.dumps(report)  # the --json document is serialisable
    text = format_report(report)
    assert "trio_pingpong" in text
    assert "targets met:" in text


def test_cli_bench_wire_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "wire", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out
    assert "--json" in out


def test_wire_bench_cellmesh_side_produces_numbers_and_a_profile() -> None:
    params = attrs.evolve(QUICK.scaled(0.01, rounds=1), profile_seconds=0.05)
    report = run_wire_bench(params, include_reference=False)
    assert report["cellmesh_skipped"] is None
    ms = report["measurements"]
    for name in ("cm_rtt", "cm_pipeline", "cm_signal", "cm_inline", "cm_vesicle", "cm_fire16",
                 "cm_fire256", "cm_signal_loop", "cm_signal_nowait", "cm_pipeline_rec",
                 "cm_rtt_nospin", "cm_fire16_nospin"):
        assert "error" not in ms[name], ms[name].get("error")
    assert ms["cm_rtt"]["samples"] == params.rtt_samples
    assert ms["cm_pipeline"]["msgs_per_s"] > 0
    assert ms["cm_signal"]["msgs_per_s"] > 0
    assert ms["cm_vesicle"]["bytes"] == ms["cm_inline"]["bytes"] == params.bulk_bytes
    rows = {row["metric"]: row for row in report["comparisons"]}
    assert all(row["ratio"] is not None for name, row in rows.items() if "pyzmq" not in name)
    profile = report["profile"]
    assert set(profile) == {"cm_fire16", "cm_fire256", "cm_signal_loop", "cm_signal_nowait",
                            "cm_pipeline_rec", "cm_rtt"}
    for entry in profile.values():
        assert "error" not in entry, entry
        assert entry["client"]["cpu_us_per_msg"] is not None
    text = format_report(report)
    assert "profile: CPU per message" in text
    assert "16 tasks x fire vs wake-up floor (16)" in text


def test_profile_classify_by_innermost_known_frame() -> None:
    import linecache
    import sys

    from cellmesh.bench._profile import classify

    def frame_in(filename: str, line: str) -> object:
        source = "import sys\ndef probe():\n    return sys._getframe()  # " + line + "\n"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        scope: dict[str, object] = {}
        exec(compile(source, filename, "exec"), scope)
        return scope["probe"]()  # type: ignore[operator]

    assert classify(frame_in("/x/cellmesh/transport/_outbox.py", "")) == "encode"  # type: ignore[arg-type]
    assert classify(frame_in("/x/site-packages/trio/_core/_run.py", "")) == "scheduling"  # type: ignore[arg-type]
    assert classify(frame_in("/x/cellmesh/transport/_channel.py", "sock.sendmsg(bufs)")) == (  # type: ignore[arg-type]
        "syscalls")
    assert classify(frame_in("/x/cellmesh/transport/_spin.py", "if poll(0, 1):")) == "spin"  # type: ignore[arg-type]
    assert classify(sys._getframe()) == "other"  # a test frame: nothing known on the stack
