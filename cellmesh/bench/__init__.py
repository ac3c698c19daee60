"""Benchmarks of cellmesh, each printing its raw baseline from the same run and the ratio.

``cellmesh bench wire`` (:mod:`cellmesh.bench.wire`) measures the wire layer --
round-trip time, pipelined calls, one-way signals, 64 MiB vesicles -- against
raw sockets (:mod:`cellmesh.bench.baselines`). Benchmarks are scripts, never
tests: nothing here asserts a speed.
"""

from __future__ import annotations

from ._params import FULL, QUICK, WireParams
from .wire import format_report, run_wire_bench

__all__ = ["FULL", "QUICK", "WireParams", "format_report", "run_wire_bench"]
