"""``cellmesh bench ...``: benchmarks that print their own baselines and ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import cyclopts

#: The largest value a bench's payload may have (bytes): beyond it the frames
#: carrying it are refused anyway.
MAX_PAYLOAD: Final = 16 * 1024 * 1024
#: The largest count a bench argument takes (a run of more would not end today).
MAX_COUNT: Final = 100_000_000


def _counts(*checks: tuple[str, int | None, int, bool] | tuple[str, int | None, int, bool, int]
            ) -> None:
    """ConfigError (exit 2) naming the first ``(flag, value, minimum, zero_skips[, top])``
    whose value is not an integer in ``minimum``..``top`` (default MAX_COUNT; 0 too,
    where it skips the part)."""
    from ..errors import ConfigError

    for flag, value, minimum, zero_skips, *rest in checks:
        if value is None or (zero_skips and value == 0):
            continue
        top = rest[0] if rest else MAX_COUNT
        if type(value) is not int or not minimum <= value <= top:
            skip = " (or 0 to skip it)" if zero_skips else ""
            raise ConfigError(flag, f"must be an integer from {minimum} to {top}{skip}, "
                                    f"got {value!r}")


def register(app: cyclopts.App) -> None:
    """Attach the ``bench`` command group to ``app``."""
    bench = cyclopts.App(name="bench", help="Benchmarks: each prints its baseline and the ratio.")

    @bench.command(name="wire")
    def _wire(*, json: bool = False, quick: bool = False) -> int:
        """Measure the wire layer against raw socket baselines and Trio floors; print ratios.

        Natural patterns first (N tasks each awaiting fire, signal and
        signal_nowait loops), then the batch APIs, latency and bulk; each
        against the Trio wake-up and checkpoint floors and the raw baselines
        of the same run, followed by a profile of where the CPU per message
        goes (client and cell). Client and server of every measurement run in
        separate processes; cellmesh and baseline rounds are interleaved. The
        full run takes about three to four minutes on a 2-core machine.

        Parameters
        ----------
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (under a minute): fewer rounds and messages.
        """
        from ..bench import wire

        return wire.main(json_output=json, quick=quick)

    @bench.command(name="spawn")
    def _spawn(
        *,
        rounds: int | None = None,
        sandbox: str = "both",
        json: bool = False,
        quick: bool = False,
    ) -> int:
        """Measure how soon a cell answers its first call: cold, warm, and after kill -9.

        Runs a real root in-process with real cell processes under each
        sandbox; the floor is a bare `python -c` started with Popen that
        answers one byte on an inherited listening socket (measured in the
        same run, before every sample). Also prints a profile of where the
        time goes. The full run takes a few minutes.

        Parameters
        ----------
        rounds
            Rounds of each measurement (default 30; 8 with --quick).
        sandbox
            bwrap, host or both.
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (8 rounds).
        """
        from ..bench import spawn
        from ..config import check_positive_int

        if rounds is not None:
            check_positive_int("--rounds", rounds)
        if sandbox not in ("bwrap", "host", "both"):
            from ..errors import ConfigError

            raise ConfigError("--sandbox", f"must be bwrap, host or both, got {sandbox!r}")
        return spawn.main(rounds=rounds, sandbox=sandbox, json_output=json, quick=quick)

    @bench.command(name="swap")
    def _swap(*, json: bool = False, quick: bool = False, sandbox: str | None = None) -> int:
        """Hot swaps under load: time to the new version serving, the slowest call, failures.

        A real root in-process, the load (callers in a tight loop, each on its
        own connection) in another process; 100 swaps of a counter that hands
        its state over, then 30 with a 10 MiB state, then the baseline: a
        restart that needs a new process. Prints the targets (no failed call,
        median swap -> serving <= 250 ms, slowest call during a swap <= 300 ms).
        The full run takes a few minutes.

        Parameters
        ----------
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (12 + 4 swaps, 8 callers).
        sandbox
            bwrap or host (default: bwrap when it works here).
        """
        from ..bench import swap

        if sandbox not in (None, "bwrap", "host"):
            from ..errors import ConfigError

            raise ConfigError("--sandbox", f"must be bwrap or host, got {sandbox!r}")
        return swap.main(json_output=json, quick=quick, sandbox=sandbox)

    @bench.command(name="raft")
    def _raft(
        *,
        ops: int | None = None,
        concurrency: int | None = None,
        sequential_ops: int | None = None,
        payload: int | None = None,
        tick: float | None = None,
        trials: int | None = None,
        wal_entries: int | None = None,
        json: bool = False,
        quick: bool = False,
    ) -> int:
        """Measure a 3-process Raft cluster (real WAL, fsync per batch) against PySyncObj.

        Prints pipelined throughput, single-op commit latency and failover
        time after kill -9 of the leader, each against PySyncObj (3 nodes on
        localhost, same run, its election timeouts set to ours; install it
        with `pip install -e .[bench]`), and WAL recovery time against SQLite
        reading back the same entries and a raw read of the WAL's files.

        Parameters
        ----------
        ops
            Operations of the pipelined run (default 20000; 2000 with --quick).
        concurrency
            Operations in flight in the pipelined run (default 256).
        sequential_ops
            Operations of the one-in-flight latency run (default 500; 100 with --quick).
        payload
            Value size in bytes (default 64).
        tick
            Raft tick in seconds; elections time out after 10-20 ticks
            (default 0.015: the Raft paper's 150-300 ms).
        trials
            Failover trials, kill -9 of the leader (default 20; 3 with --quick).
        wal_entries
            Entries in the WAL recovery measurement (default 1000000; 100000 with --quick).
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (well under a minute): fewer operations and trials.
        """
        from ..bench import raft as raft_bench
        from ..config import check_seconds

        _counts(("--ops", ops, 100, False), ("--concurrency", concurrency, 1, False),
                ("--payload", payload, 1, False, MAX_PAYLOAD),
                ("--sequential-ops", sequential_ops, 2, True), ("--trials", trials, 1, True),
                ("--wal-entries", wal_entries, 1, True))
        if tick is not None:
            check_seconds("--tick", tick)
        argv = []
        for flag, given in (("--ops", ops), ("--concurrency", concurrency),
                            ("--sequential-ops", sequential_ops), ("--payload", payload),
                            ("--tick", tick), ("--trials", trials),
                            ("--wal-entries", wal_entries)):
            if given is not None:
                argv += [flag, str(given)]
        argv += ["--json"] if json else []
        argv += ["--quick"] if quick else []
        return raft_bench.main(argv)

    @bench.command(name="replicated")
    def _replicated(
        *,
        json: bool = False,
        quick: bool = False,
        sandbox: str = "bwrap",
        ops: int | None = None,
        trials: int | None = None,
    ) -> int:
        """Measure a 3-replica replicated cell through a real root against raw Raft and PySyncObj.

        64 concurrent callers send small commands (real fsync); also the
        single-write latency and the time from kill -9 of the leader to the
        next acknowledged write. PySyncObj (3 nodes) and raw Raft (3 nodes
        over membranes, no root, no sessions) run in the same invocation;
        ratios and the issue's targets are printed. A full run takes a few
        minutes.

        Parameters
        ----------
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (3,000 commands, 3 failover trials).
        sandbox
            bwrap or host (through a root), or processes (replicas without a root).
        ops
            Commands of the loaded run (default 20,000).
        trials
            Failover trials (default 10).
        """
        from ..bench import replicated

        if sandbox not in ("bwrap", "host", "processes"):
            from ..errors import ConfigError

            raise ConfigError("--sandbox", f"must be bwrap, host or processes, got {sandbox!r}")
        overrides: dict[str, int] = {}
        _counts(("--ops", ops, 100, False), ("--trials", trials, 1, True))
        if ops is not None:
            overrides["ops"] = ops
        if trials is not None:
            overrides["trials"] = trials
        return replicated.main(json_output=json, quick=quick, sandbox=sandbox,
                               overrides=overrides)

    @bench.command(name="ledger")
    def _ledger(
        *,
        pure: bool = False,
        json: bool = False,
        quick: bool = False,
        profile: bool = False,
        data_dir: Path | None = None,
        sandbox: str = "bwrap",
    ) -> int:
        """Measure the ledger: the pure apply loop, SQLite, and the replicated cell, in one run.

        Feeds one seeded workload (batches of 8,000 transfers: single-phase,
        pending with timeouts, posts, voids, linked pairs, retries,
        overdrafts) to the pure state machine, to a SQLite ledger with the
        same checks (WAL, synchronous=FULL, one transaction per batch), and
        to the replicated ledger cell (3 replicas through a real root, each
        fsyncing its log; then 64 concurrent clients sending single
        transfers, against SQLite with 64 connections and with one writer
        thread doing group commits), checks that the result codes agree, and
        prints transfers/s and the ratios. The full run takes a few minutes.

        Parameters
        ----------
        pure
            Leave the replicated ledger out (pure and SQLite only).
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (fewer accounts, batches, rounds and clients' transfers).
        profile
            Also print where a pure round spends its time (cProfile).
        data_dir
            Where the SQLite file goes (default: the system temp dir). Use a
            real disk: on tmpfs an fsync costs nothing.
        sandbox
            Where the replicas run: bwrap (default) or host.
        """
        from ..bench import ledger
        from ..errors import ConfigError

        if data_dir is not None and not data_dir.is_dir():
            raise ConfigError("--data-dir", f"{data_dir} is not a directory")
        if sandbox not in ("bwrap", "host"):
            raise ConfigError("--sandbox", f"expected bwrap or host, got {sandbox!r}")
        return ledger.main(json_output=json, quick=quick, profile=profile, scratch=data_dir,
                           pure=pure, sandbox=sandbox)

    app.command(bench)
