"""The report of ``cellmesh bench wire``: summaries, ratios against targets, the table.

Pure functions over the JSON-ready dicts :func:`cellmesh.bench.wire.run_wire_bench`
builds; no I/O. Throughput is summarised as the median across rounds, round-trip
times by pooling every sample (median, p99), bulk transfers by the median of all
transfers. The headline ratio of a comparison is the median over rounds of the
ratio *within* each round (the two measurements ran back to back, so drift in
machine load cancels); the ratio of the two medians is kept alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from ._params import WireParams
from ._profile import CATEGORIES
from ._stats import median, percentile

__all__ = [
    "MiB", "TARGETS", "Target", "compare", "cpu_per_op", "format_report", "profile_table",
    "summarize",
]

MiB: Final = 1 << 20


@attrs.frozen(kw_only=True)
class Target:
    """One compared metric: cellmesh vs a baseline, and the ratio it must reach."""

    metric: str
    cellmesh: str
    baseline: str
    stat: str  # key into a measurement summary
    higher_is_better: bool
    target: float | None  # the ratio to reach (as a speed-up / slowdown factor)
    ratio_kind: str  # "x" = cellmesh/baseline, "speedup" = baseline/cellmesh


TARGETS: Final[tuple[Target, ...]] = (
    Target(
        metric='16 tasks x fire vs wake-up floor (16)',
        cellmesh='cm_fire16',
        baseline='floor_wake16',
        stat='msgs_per_s',
        higher_is_better=True,
        target=0.5,
        ratio_kind='x',
    ),
    Target(
        metric='16 tasks x fire, spinning off, vs floor',
        cellmesh='cm_fire16_nospin',
        baseline='floor_wake16',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='16 tasks x fire vs raw, 16 in flight',
        cellmesh='cm_fire16',
        baseline='raw_window16',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='16 tasks x fire vs raw pipelined',
        cellmesh='cm_fire16',
        baseline='raw_pipeline',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='256 tasks x fire vs wake-up floor (256)',
        cellmesh='cm_fire256',
        baseline='floor_wake256',
        stat='msgs_per_s',
        higher_is_better=True,
        target=0.5,
        ratio_kind='x',
    ),
    Target(
        metric='256 tasks x fire, handler awaits, vs wake-up floor (256)',
        cellmesh='cm_fire256_await',
        baseline='floor_wake256',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='256 tasks x fire, handler awaits, vs handler does not',
        cellmesh='cm_fire256_await',
        baseline='cm_fire256',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='256 tasks x fire vs raw, 256 in flight',
        cellmesh='cm_fire256',
        baseline='raw_window256',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='256 tasks x fire vs raw pipelined',
        cellmesh='cm_fire256',
        baseline='raw_pipeline',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='signal loop vs checkpoint floor',
        cellmesh='cm_signal_loop',
        baseline='floor_checkpoint',
        stat='msgs_per_s',
        higher_is_better=True,
        target=0.75,
        ratio_kind='x',
    ),
    Target(
        metric='signal_nowait loop vs raw one-way',
        cellmesh='cm_signal_nowait',
        baseline='raw_oneway',
        stat='msgs_per_s',
        higher_is_better=True,
        target=0.5,
        ratio_kind='x',
    ),
    Target(
        metric='fire_many bytes+str vs raw pipelined',
        cellmesh='cm_pipeline_rec',
        baseline='raw_pipeline',
        stat='msgs_per_s',
        higher_is_better=True,
        target=1.0,
        ratio_kind='x',
    ),
    Target(
        metric='fire_many bytes+str vs raw, same fields',
        cellmesh='cm_pipeline_rec',
        baseline='raw_pipeline_rec',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='RTT median, 1 outstanding call',
        cellmesh='cm_rtt',
        baseline='trio_pingpong',
        stat='median_us',
        higher_is_better=False,
        target=1.25,
        ratio_kind='x',
    ),
    Target(
        metric='RTT median, spinning off (CELL_SPIN_US=0)',
        cellmesh='cm_rtt_nospin',
        baseline='trio_pingpong',
        stat='median_us',
        higher_is_better=False,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='RTT p99, 1 outstanding call',
        cellmesh='cm_rtt',
        baseline='trio_pingpong',
        stat='p99_us',
        higher_is_better=False,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='fire_many ints vs raw pipelined',
        cellmesh='cm_pipeline',
        baseline='raw_pipeline',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='signal_many vs raw one-way',
        cellmesh='cm_signal',
        baseline='raw_oneway',
        stat='msgs_per_s',
        higher_is_better=True,
        target=1.0,
        ratio_kind='x',
    ),
    Target(
        metric='{size} transfer: vesicle vs inline',
        cellmesh='cm_vesicle',
        baseline='cm_inline',
        stat='median_ms',
        higher_is_better=False,
        target=10.0,
        ratio_kind='speedup',
    ),
    Target(
        metric='(floor) RTT median vs blocking 8 B',
        cellmesh='cm_rtt',
        baseline='unix_pingpong',
        stat='median_us',
        higher_is_better=False,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='(ref) pipelined vs pyzmq DEALER/ROUTER',
        cellmesh='cm_pipeline',
        baseline='zmq_pipeline',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='(ref) signals vs pyzmq one-way',
        cellmesh='cm_signal',
        baseline='zmq_oneway',
        stat='msgs_per_s',
        higher_is_better=True,
        target=None,
        ratio_kind='x',
    ),
    Target(
        metric='(floor) {size} vesicle vs raw sendall',
        cellmesh='cm_vesicle',
        baseline='raw_bulk',
        stat='median_ms',
        higher_is_better=False,
        target=None,
        ratio_kind='speedup',
    ),
)
"""Natural patterns first (issue 15), then the batch APIs, latency and bulk."""


# --------------------------------------------------------------------------
# Summaries, ratios, formatting.


def summarize(shape: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise one measurement's per-round raw results (see :mod:`.wire_client`)."""
    if shape == "rtt":
        pooled = [ns / 1000.0 for res in results for ns in res["rtt_ns"]]
        return {
            "samples": len(pooled),
            "median_us": median(pooled),
            "p99_us": percentile(pooled, 99),
            "min_us": min(pooled),
            "round_medians_us": [median([ns / 1000.0 for ns in res["rtt_ns"]]) for res in results],
            "round_p99_us": [
                percentile([ns / 1000.0 for ns in res["rtt_ns"]], 99) for res in results
            ],
        }
    if shape == "rate":
        rates = [res["msgs"] / res["seconds"] for res in results]
        return {
            "msgs_per_round": results[0]["msgs"],
            "msgs_per_s": median(rates),
            "round_msgs_per_s": rates,
        }
    times = [t for res in results for t in res["seconds"]]
    size = results[0]["bytes"]
    med = median(times)
    return {
        "bytes": size,
        "transfers": len(times),
        "median_ms": med * 1000.0,
        "mib_per_s": size / MiB / med,
        "all_ms": [t * 1000.0 for t in times],
        "round_median_ms": [median(res["seconds"]) * 1000.0 for res in results],
    }


def cpu_per_op(shape: str, results: list[dict[str, Any]], p: WireParams) -> dict[str, Any]:
    """CPU microseconds per operation, client and server, median across rounds.

    Measured over the whole round (connect, warm-up, timed part) and divided by
    all operations of the round, warm-up included; an operation is one call,
    one message, or one bulk transfer.
    """
    if shape == "rtt":
        ops = p.rtt_samples + p.rtt_warmup
    elif shape == "rate":
        ops = results[0]["msgs"] + p.warmup_msgs
    else:
        ops = p.bulk_transfers + p.bulk_warmup
    return {
        "ops_per_round": ops,
        "client_cpu_us_per_op": median([r["client_cpu_ns"] / 1000.0 / ops for r in results]),
        "server_cpu_us_per_op": median([r["server_cpu_ns"] / 1000.0 / ops for r in results]),
    }


def profile_table(
    profiles: dict[str, dict[str, Any]], measurements: dict[str, Any]
) -> dict[str, Any]:
    """Per-message CPU split by category, for each profiled measurement and side.

    The split comes from the profiled round's samples; the microseconds from
    the CPU per message measured in the unprofiled rounds (so the profiler's
    own overhead is not counted).
    """
    table: dict[str, Any] = {}
    for name, prof in profiles.items():
        if "error" in prof:
            table[name] = {"error": prof["error"]}
            continue
        m = measurements.get(name, {})
        entry: dict[str, Any] = {}
        for side, key in (("client", "client_cpu_us_per_op"), ("cell", "server_cpu_us_per_op")):
            counts = prof.get(side, {})
            total = sum(counts.values())
            cpu = m.get(key)
            entry[side] = {
                "samples": total,
                "cpu_us_per_msg": cpu,
                "split": {c: counts.get(c, 0) / total for c in CATEGORIES} if total else {},
            }
        table[name] = entry
    return table


def compare(measurements: dict[str, Any], bulk_bytes: int) -> list[dict[str, Any]]:
    """Compute each :data:`TARGETS` row from the measurement summaries."""
    size = f"{bulk_bytes / MiB:g} MiB"
    rows: list[dict[str, Any]] = []
    for t in TARGETS:
        cm = measurements.get(t.cellmesh, {}).get(t.stat)
        base = measurements.get(t.baseline, {}).get(t.stat)
        ratio: float | None = None
        of_medians: float | None = None
        met: bool | None = None
        paired: list[float] = []
        if cm is not None and base is not None and cm > 0 and base > 0:
            of_medians = _ratio(t, cm, base)
            per_round = _ROUND_KEYS[t.stat]
            paired = [
                _ratio(t, c, b)
                for c, b in zip(
                    measurements[t.cellmesh][per_round],
                    measurements[t.baseline][per_round],
                    strict=False,
                )
            ]
            # The headline ratio pairs each cellmesh round with the baseline
            # round that ran right next to it, so drift in machine load
            # cancels; the ratio of the two medians is kept alongside.
            ratio = median(paired) if paired else of_medians
            if t.target is not None:
                if t.ratio_kind == "speedup" or t.higher_is_better:
                    met = ratio >= t.target
                else:
                    met = ratio <= t.target
        rows.append(
            {
                "metric": t.metric.format(size=size),
                "cellmesh": t.cellmesh,
                "baseline": t.baseline,
                "stat": t.stat,
                "cellmesh_value": cm,
                "baseline_value": base,
                "ratio": ratio,
                "ratio_of_medians": of_medians,
                "ratio_kind": t.ratio_kind,
                "round_ratios": paired,
                "target": t.target,
                "target_text": _target_text(t),
                "met": met,
            }
        )
    return rows


_ROUND_KEYS: Final = {
    "median_us": "round_medians_us",
    "p99_us": "round_p99_us",
    "msgs_per_s": "round_msgs_per_s",
    "median_ms": "round_median_ms",
}


def _ratio(t: Target, cm: float, base: float) -> float:
    return base / cm if t.ratio_kind == "speedup" else cm / base


def _target_text(t: Target) -> str:
    if t.target is None:
        return "-"
    if t.ratio_kind == "speedup":
        return f">= {t.target:g}x faster"
    return f"{'>=' if t.higher_is_better else '<='} {t.target:g}x"


def _fmt_value(m: dict[str, Any], stat: str) -> str:
    if "skipped" in m:
        return "n/a"
    if "error" in m:
        return "FAILED"
    v = m.get(stat)
    if v is None:
        return "n/a"
    if stat.endswith("_us"):
        return f"{v:,.1f} us"
    if stat == "msgs_per_s":
        return f"{v:,.0f} msg/s"
    if stat == "median_ms":
        return f"{v:,.1f} ms ({m['mib_per_s']:,.0f} MiB/s)"
    return f"{v:g}"


def _fmt_ratio(row: dict[str, Any], key: str = "ratio") -> str:
    r = row[key]
    if r is None:
        return "-"
    if row["ratio_kind"] != "speedup":
        return f"{r:.2f}x"
    return f"{r:.2f}x faster" if r >= 1.0 else f"{1.0 / r:.2f}x slower"


def _fmt_range(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    if not profile:
        return []
    out = [
        "",
        "profile: CPU per message (us), client | cell, split by sampling one extra round",
        "(encode: bodies, columns, frames; syscalls: send/recv/epoll; scheduling: Trio's run",
        " loop, task switches, wake-ups; dispatch: decode, routing, handlers, reply matching;",
        " spin: polling the sockets before sleeping, instead of an idle core's wake-up",
        " (CELL_SPIN_US); other: the benchmark loop itself)",
    ]
    header = ["measurement", "side", "CPU/msg", *CATEGORIES, "samples"]
    rows: list[list[str]] = []
    for name, entry in profile.items():
        if "error" in entry:
            rows.append([name, "-", "FAILED", *["-"] * len(CATEGORIES), "-"])
            continue
        for side in ("client", "cell"):
            part = entry[side]
            cpu = part["cpu_us_per_msg"]
            split = part["split"]
            cells = [
                f"{cpu * split[c]:.2f}" if cpu is not None and split else "-" for c in CATEGORIES
            ]
            rows.append([
                name if side == "client" else "", side,
                f"{cpu:.2f}" if cpu is not None else "-", *cells, str(part["samples"]),
            ])
    return out + _table(header, rows)


def format_report(report: dict[str, Any]) -> str:
    """Render a report from :func:`run_wire_bench` as the human-readable table."""
    h = report["host"]
    p = report["params"]
    ms = report["measurements"]
    out = [
        f"cellmesh bench wire -- {h['date']} -- Python {h['python']} ({h['implementation']}) -- "
        f"{h['cpu_count']} CPUs ({h['cpus_usable']} usable) -- {h['platform']}",
        f"cbor2 {h['cbor2']}, trio {h['trio']}, cellmesh {h['cellmesh']} ({h['cellmesh_git']}); "
        f"{p['rounds']} interleaved rounds, {h['elapsed_s']} s; "
        f"load avg {h['loadavg_start'][0]:.2f} -> {h['loadavg_end'][0]:.2f}",
        "each measurement: client and server in separate processes over AF_UNIX",
        "",
    ]
    rows = []
    for row in report["comparisons"]:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        rows.append(
            [
                row["metric"],
                _fmt_value(ms[row["cellmesh"]], row["stat"]),
                _fmt_value(ms[row["baseline"]], row["stat"]),
                row["baseline"],
                _fmt_ratio(row),
                _fmt_range(row["round_ratios"]),
                _fmt_ratio(row, "ratio_of_medians"),
                row["target_text"],
                met,
            ]
        )
    out += _table(
        [
            "metric",
            "cellmesh",
            "baseline",
            "baseline is",
            "ratio",
            "per round",
            "of medians",
            "target",
            "met?",
        ],
        rows,
    )
    targeted = [r for r in report["comparisons"] if r["target"] is not None]
    met_count = sum(1 for r in targeted if r["met"])
    out.append("")
    out.append(f"targets met: {met_count}/{len(targeted)}")
    out.append(
        "ratio = cellmesh/baseline ('x faster' = baseline time / cellmesh time), the median over"
        " rounds of the ratio within each round (the two ran back to back, so load drift"
        " cancels);\nper round = its min-max; of medians = the ratio of the two value columns"
    )
    if report["cellmesh_skipped"]:
        out.append(f"cellmesh side skipped: {report['cellmesh_skipped']}")
    if report["reference_skipped"]:
        out.append(f"pyzmq reference skipped: {report['reference_skipped']}")
    out += _profile_lines(report.get("profile", {}))
    out.append("")
    out.append("measurements (per-round values; RTT = per-round medians):")
    for name, m in ms.items():
        if "skipped" in m:
            detail = "skipped"
        elif "error" in m:
            detail = "FAILED: " + m["error"].strip().splitlines()[-1][:200]
        elif m["shape"] == "rtt":
            detail = (
                f"median {m['median_us']:.1f} us, p99 {m['p99_us']:.1f} us, min {m['min_us']:.1f}"
                f" us over {m['samples']} samples; rounds: "
                + " ".join(f"{v:.1f}" for v in m["round_medians_us"])
            )
        elif m["shape"] == "rate":
            detail = (
                f"{m['msgs_per_s']:,.0f} msg/s median of {m['msgs_per_round']} msgs x rounds: "
                + " ".join(f"{v / 1000:.0f}k" for v in m["round_msgs_per_s"])
            )
        else:
            detail = (
                f"{m['median_ms']:.1f} ms = {m['mib_per_s']:,.0f} MiB/s for {m['bytes'] / MiB:g}"
                " MiB; transfers (ms): " + " ".join(f"{v:.1f}" for v in m["all_ms"])
            )
        out.append(f"  {name:<14} {m['describe']}")
        out.append(f"  {'':<14}   {detail}")
        if "client_cpu_us_per_op" in m:
            unit = {"rtt": "call", "rate": "msg", "bulk": "transfer"}[m["shape"]]
            out.append(
                f"  {'':<14}   CPU per {unit}: client {m['client_cpu_us_per_op']:,.1f} us,"
                f" server {m['server_cpu_us_per_op']:,.1f} us"
            )
    return "\n".join(out) + "\n"
