"""Benchmark cellmesh Raft (3 processes) against PySyncObj; see cellmesh/bench/raft.py.

Usage: .venv/bin/python scripts/bench_raft.py [--ops N] [--concurrency N] [--trials N]
       [--wal-entries N] [--tick SECONDS] [--payload BYTES]
"""

from cellmesh.bench.raft import main

if __name__ == "__main__":
    main()
