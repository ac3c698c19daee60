"""Benchmarks of cellmesh, each printing its raw baseline from the same run and the ratio.

Below only the CLI (docs/architecture.md): it may import every layer,
:mod:`cellmesh.testing` included.

One module per benchmark, each behind a ``cellmesh bench`` subcommand:

* :mod:`cellmesh.bench.wire` (``bench wire``) -- round-trip time, pipelined
  calls, one-way signals, 64 MiB vesicles, against raw sockets
  (:mod:`cellmesh.bench.baselines`);
* :mod:`cellmesh.bench.spawn` (``bench spawn``) -- cell start and restart
  through a real root, against a bare ``python -c`` floor;
* :mod:`cellmesh.bench.raft` (``bench raft``) -- a 3-process Raft cluster
  against PySyncObj;
* :mod:`cellmesh.bench.ledger` (``bench ledger``) -- the ledger state
  machine's apply loop against the same ledger in SQLite
  (:mod:`cellmesh.bench._ledger_sqlite`).

Benchmarks are scripts, never tests: nothing here asserts a speed.
"""

from __future__ import annotations

from ._params import FULL, QUICK, WireParams
from .wire import format_report, run_wire_bench

__all__ = ["FULL", "QUICK", "WireParams", "format_report", "run_wire_bench"]
