"""Ledger benchmark: the pure state machine's apply loop against the same ledger in SQLite.

Theory of operation
-------------------
One deterministic workload (seeded) is built once and fed, round after
round, to two ledgers that start empty:

* **pure** -- :meth:`cellmesh.ledger.LedgerState.apply` of each
  ``CreateTransfers`` batch, in this process: the state machine alone, no
  encoding, no log, no disk. This is the ceiling the replicated ledger can
  reach (every replica runs this loop on every committed batch).
* **sqlite** -- the baseline a Python user would otherwise pick: the same
  batches with the same checks in stdlib ``sqlite3`` (WAL mode,
  ``synchronous=FULL``, one transaction per batch, one process;
  :mod:`cellmesh.bench._ledger_sqlite`), on a real file.

The workload: ``accounts`` accounts whose debits must not exceed their
credits, funded by one operator account (set-up, not timed), then
``batches`` batches of ``batch_size`` transfers: mostly single-phase,
some pending (some with a one-second timeout that expires during the run,
by the batch timestamps), posts (full and partial) and voids of earlier
pending transfers, linked pairs, retries of earlier ids (``exists``) and
a few overdrafts (``exceeds_credits``). Every batch's result codes must be
identical in both ledgers -- the run says so, or fails.

Figures: transfers/s per round (events / summed wall-clock apply time),
the median over rounds, and the median of the per-round ratios (rounds
alternate pure, sqlite, so drift in machine load cancels). Beside it,
transfers per CPU-second of this process: on a shared machine the pure
loop's wall time includes waiting for a core, while SQLite's includes its
fsyncs, which use no CPU. ``--profile`` adds the
top functions of a cProfile run of one pure round.

* **replicated** -- the same batches through the replicated ledger cell
  (``cellmesh.ledger:Ledger``, 3 replicas under bwrap through a real root,
  each fsyncing its log), one batch per command, then 64 concurrent clients
  sending single transfers: :mod:`cellmesh.bench.ledger_replicated`. Its
  ratios against SQLite and against the pure loop come from the same round.
  ``--pure`` leaves it out.
* **concurrent clients in SQLite** -- the baselines of the replicated
  mode's concurrent-clients row, run in the same round right after it: the
  same plan of single transfers (same accounts, ids and count) from the same
  number of client threads against the SQLite ledger above, every answered
  transfer committed and fsync'd, in two forms -- a connection per client
  and a transaction per transfer (what users write first), and one writer
  thread committing whatever the clients have queued as one transaction
  (group commit: the stronger one, and still simple). Each starts from a
  copy of one file holding the set-up and the measured batches (prepared
  once, untimed), as the replicated clients start after the batches; each
  prints its transfers/s, p50/p99 latency and the ratio replicated / SQLite
  (median of the per-round ratios), and its result codes must equal the
  replicated run's, transfer for transfer, or the run fails:
  :mod:`cellmesh.bench._ledger_singles`, where the choice of the two forms
  is argued. ``--pure`` leaves them out with the row they are the baseline
  of: alone they would compare nothing the batch rows do not.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

import attrs

from ..ledger import (
    AMOUNT_MAX,
    Account,
    AccountFlags,
    ApplyMeta,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    LedgerState,
    Transfer,
    TransferFlags,
)
from ._ledger_singles import FORMS, SinglesRun, remove_database, run_baselines, single_plan
from ._ledger_sqlite import SqliteLedger
from ._stats import median, percentile
from .ledger_replicated import ReplicatedParams, ReplicatedRound, run_replicated, summarize

SECOND: Final = 1_000_000_000
#: Leader time between two batches (a one-second timeout expires after ten).
BATCH_SPACING: Final = SECOND // 10
_EPOCH: Final = 1_700_000_000 * SECOND
_OPERATOR: Final = 1
_FUNDS: Final = 10_000_000
_LINKED: Final = int(TransferFlags.LINKED)
_PENDING: Final = int(TransferFlags.PENDING)
_POST: Final = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID: Final = int(TransferFlags.VOID_PENDING_TRANSFER)
#: Id spaces (all below 2**63: the SQLite baseline stores 64-bit INTEGERs).
_FUNDING_ID: Final = 1 << 62
_SECOND_OF_PAIR: Final = 1 << 61


@attrs.frozen(kw_only=True)
class LedgerParams:
    """Size of one run."""

    accounts: int = 10_000
    batches: int = 20
    batch_size: int = 8_000
    rounds: int = 5
    seed: int = 20_240_601


FULL: Final = LedgerParams()
QUICK: Final = LedgerParams(accounts=2_000, batches=5, rounds=2)
REPLICATED_FULL: Final = ReplicatedParams()
REPLICATED_QUICK: Final = ReplicatedParams(single_ops=640)


@attrs.frozen(kw_only=True)
class Workload:
    """The commands of one run: set-up (untimed) and the measured transfer batches."""

    setup: list[CreateAccounts | CreateTransfers]
    batches: list[CreateTransfers]

    @property
    def transfers(self) -> int:
        """Events in the measured batches."""
        return sum(len(b.events) for b in self.batches)


def build_workload(params: LedgerParams) -> Workload:
    """The deterministic workload of ``params`` (see the module doc)."""
    rng = random.Random(params.seed)
    limited = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    ids = list(range(2, params.accounts + 2))
    opening = [Account(id=_OPERATOR, ledger=1, code=1)]
    opening += [Account(id=a, ledger=1, code=1, flags=limited) for a in ids]
    funding = [Transfer(id=_FUNDING_ID + a, debit_account_id=_OPERATOR, credit_account_id=a,
                        amount=_FUNDS, ledger=1, code=1) for a in ids]
    size = params.batch_size
    setup: list[CreateAccounts | CreateTransfers] = [
        CreateAccounts(events=opening[i:i + size]) for i in range(0, len(opening), size)]
    setup += [CreateTransfers(events=funding[i:i + size]) for i in range(0, len(funding), size)]

    next_id = 1
    open_pending: list[Transfer] = []
    done: list[Transfer] = []
    batches: list[CreateTransfers] = []

    def pair() -> tuple[int, int]:
        debit = rng.choice(ids)
        credit = rng.choice(ids)
        while credit == debit:
            credit = rng.choice(ids)
        return debit, credit

    for _ in range(params.batches):
        events: list[Transfer] = []
        while len(events) < size:
            roll = rng.random()
            tid = (rng.getrandbits(28) << 32) | next_id  # scattered, unique by next_id
            next_id += 1
            debit, credit = pair()
            amount = rng.randrange(1, 1_000)
            if roll < 0.06:  # a pending transfer, a third of them with a 1 s timeout
                t = Transfer(id=tid, debit_account_id=debit, credit_account_id=credit,
                             amount=amount, ledger=1, code=1, flags=_PENDING,
                             timeout=1 if rng.random() < 0.33 else 0)
                open_pending.append(t)
                events.append(t)
            elif roll < 0.11 and open_pending:  # resolve an earlier pending transfer
                p = open_pending.pop(rng.randrange(len(open_pending)))
                kind = rng.random()
                flags, amt = ((_POST, AMOUNT_MAX) if kind < 0.4 else
                              (_POST, rng.randrange(0, p.amount + 1)) if kind < 0.7 else
                              (_VOID, 0))
                events.append(Transfer(id=tid, pending_id=p.id, amount=amt, flags=flags))
            elif roll < 0.13 and len(events) + 2 <= size:  # a linked pair
                events.append(Transfer(id=tid, debit_account_id=debit, credit_account_id=credit,
                                       amount=amount, ledger=1, code=1, flags=_LINKED))
                events.append(Transfer(id=tid | _SECOND_OF_PAIR, debit_account_id=credit,
                                       credit_account_id=debit, amount=amount // 2, ledger=1,
                                       code=1))
            elif roll < 0.14 and done:  # a client retry of an earlier transfer
                events.append(rng.choice(done))
            elif roll < 0.145:  # an overdraft
                events.append(Transfer(id=tid, debit_account_id=debit, credit_account_id=credit,
                                       amount=_FUNDS * 10, ledger=1, code=1))
            else:
                t = Transfer(id=tid, debit_account_id=debit, credit_account_id=credit,
                             amount=amount, ledger=1, code=1)
                events.append(t)
                if rng.random() < 0.01:
                    done.append(t)
        batches.append(CreateTransfers(events=events))
    return Workload(setup=setup, batches=batches)


# --------------------------------------------------------------------------
# The two runners. Each times every measured batch and keeps its result codes.


@attrs.define
class Timing:
    """Per measured batch: wall-clock and process CPU seconds, and the result codes."""

    wall: list[float] = attrs.Factory(list)
    cpu: list[float] = attrs.Factory(list)
    results: list[list[int]] = attrs.Factory(list)

    def measure(self, run: Callable[[], list[int]]) -> None:
        """Run one batch, timing it both ways."""
        wall, cpu = time.perf_counter(), time.process_time()
        codes = run()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        self.results.append(codes)


Runner = Callable[[Workload, Path], Timing]


def _meta(k: int) -> ApplyMeta:
    return ApplyMeta(index=k + 1, timestamp=_EPOCH + k * BATCH_SPACING)


def _codes(reply: object) -> list[int]:
    assert isinstance(reply, CreateAccountsReply | CreateTransfersReply), reply
    return reply.results


def run_pure(workload: Workload, scratch: Path) -> Timing:
    """Apply the workload to a fresh :class:`LedgerState`; time each measured batch."""
    state = LedgerState()
    for k, command in enumerate(workload.setup):
        assert not any(_codes(state.apply(command, _meta(k)))), f"set-up command {k} failed"
    timing = Timing()
    for k, batch in enumerate(workload.batches, len(workload.setup)):
        meta = _meta(k)
        timing.measure(lambda: _codes(state.apply(batch, meta)))  # noqa: B023 - run at once
    return timing


def _sqlite_setup(ledger: SqliteLedger, workload: Workload) -> None:
    for k, command in enumerate(workload.setup):
        ts = _meta(k).timestamp
        if isinstance(command, CreateAccounts):
            codes = ledger.create_accounts(command.events, ts)
        else:
            codes = ledger.create_transfers(command.events, ts)
        assert not any(codes), f"set-up command {k} failed in SQLite"


def run_sqlite(workload: Workload, scratch: Path) -> Timing:
    """The same workload in a fresh SQLite file under ``scratch``."""
    path = scratch / f"ledger-{time.monotonic_ns()}.sqlite3"
    ledger = SqliteLedger(path)
    try:
        _sqlite_setup(ledger, workload)
        timing = Timing()
        for k, batch in enumerate(workload.batches, len(workload.setup)):
            ts = _meta(k).timestamp
            timing.measure(lambda: ledger.create_transfers(batch.events, ts))  # noqa: B023
        return timing
    finally:
        ledger.close()
        remove_database(path)


def singles_template(workload: Workload, path: Path) -> None:
    """The SQLite file the concurrent-clients baselines copy: set-up and batches applied.

    The state the replicated ledger is in when its concurrent clients start
    (untimed); the pending transfers whose timeouts have passed by now are
    expired here, not in the first measured transfer.
    """
    ledger = SqliteLedger(path)
    try:
        _sqlite_setup(ledger, workload)
        for k, batch in enumerate(workload.batches, len(workload.setup)):
            ledger.create_transfers(batch.events, _meta(k).timestamp)
        ledger.create_transfers([], time.time_ns())
    finally:
        ledger.close()


#: The modes of the benchmark, measured in this order in every round. The
#: replicated mode joins here (module doc).
MODES: Final[dict[str, Runner]] = {"pure": run_pure, "sqlite": run_sqlite}


def _summary(timing: Timing, events: int, batch_size: int) -> dict[str, Any]:
    wall, cpu = sum(timing.wall), sum(timing.cpu)
    return {
        "transfers_per_s": events / wall,
        "transfers_per_cpu_s": events / cpu if cpu > 0 else None,
        "seconds": wall,
        "cpu_seconds": cpu,
        "batch_ms_p50": median(timing.wall) * 1e3,
        "batch_ms_p99": percentile(timing.wall, 99) * 1e3,
        "batch_size": batch_size,
    }


def profile_pure(workload: Workload, scratch: Path, top: int = 12) -> list[dict[str, Any]]:
    """The functions where a pure round spends its time (cProfile, by own time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_pure(workload, scratch)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}({name})", "calls": calls,
                     "own_s": own, "cumulative_s": cumulative})
    rows.sort(key=lambda r: -r["own_s"])
    return rows[:top]


def run_ledger_bench(
    params: LedgerParams,
    *,
    scratch: Path | None = None,
    profile: bool = False,
    progress: Callable[[str], None] | None = None,
    replicated: ReplicatedParams | None = None,
) -> dict[str, Any]:
    """Run every mode ``params.rounds`` times; the JSON-ready report.

    ``replicated`` (None: skipped) adds the replicated mode to every round.
    """
    say = progress or (lambda _msg: None)
    say(f"building the workload ({params.batches} x {params.batch_size} transfers)")
    workload = build_workload(params)
    per_round: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    rep_rounds: list[ReplicatedRound] = []
    singles: list[dict[str, SinglesRun]] = []
    rep_differs = 0
    accounts = list(range(2, params.accounts + 2))
    agree = True
    with tempfile.TemporaryDirectory(prefix="cellmesh-bench-ledger-", dir=scratch) as tmp:
        where = Path(tmp)
        template = where / "singles-template.sqlite3"
        if replicated is not None:
            say("preparing the SQLite file of the concurrent clients' baselines")
            singles_template(workload, template)
        for r in range(params.rounds):
            codes: dict[str, list[list[int]]] = {}
            for mode, runner in MODES.items():
                say(f"round {r + 1}/{params.rounds}: {mode}")
                timing = runner(workload, where)
                codes[mode] = timing.results
                per_round[mode].append(_summary(timing, workload.transfers, params.batch_size))
            agree = agree and codes["pure"] == codes["sqlite"]
            if replicated is not None:
                say(f"round {r + 1}/{params.rounds}: replicated (3 replicas, "
                    f"{replicated.sandbox}, fsync)")
                rep = run_replicated(workload.setup, workload.batches, accounts, replicated,
                                     seed=r)
                rep_rounds.append(rep)
                rep_differs += sum(a != b for x, y in zip(rep.results, codes["pure"], strict=True)
                                   for a, b in zip(x, y, strict=True))
                say(f"round {r + 1}/{params.rounds}: SQLite, {replicated.clients} concurrent "
                    f"clients ({', '.join(FORMS)})")
                singles.append(run_baselines(
                    template, where, single_plan(accounts, replicated.single_ops, seed=r),
                    replicated.clients))
            if r == 0:
                outcome = [c for batch in codes["pure"] for c in batch]
        remove_database(template)
        profile_rows = profile_pure(workload, where) if profile else None
    pairs = list(zip(per_round["pure"], per_round["sqlite"], strict=True))
    ratios = [p["transfers_per_s"] / s["transfers_per_s"] for p, s in pairs]
    cpu_ratios = [p["transfers_per_cpu_s"] / s["transfers_per_cpu_s"] for p, s in pairs
                  if p["transfers_per_cpu_s"] and s["transfers_per_cpu_s"]]
    concurrent = _concurrent_report(rep_rounds, singles, replicated)
    return {
        "params": attrs.asdict(params),
        "transfers_per_round": workload.transfers,
        "ok_per_round": outcome.count(0),
        "modes": {
            mode: {"rounds": rounds,
                   "transfers_per_s": median([x["transfers_per_s"] for x in rounds]),
                   "transfers_per_cpu_s": median([x["transfers_per_cpu_s"] or 0.0
                                                  for x in rounds]),
                   "batch_ms_p50": median([x["batch_ms_p50"] for x in rounds])}
            for mode, rounds in per_round.items()
        },
        "ratio_pure_over_sqlite": median(ratios),
        "ratio_pure_over_sqlite_cpu": median(cpu_ratios) if cpu_ratios else None,
        "results_agree": (agree and all(r.replay_agrees for r in rep_rounds)
                          and (concurrent is None or concurrent["codes_agree"])),
        **_replicated_report(rep_rounds, per_round, workload.transfers, params,
                             replicated=replicated, differs=rep_differs),
        "concurrent_sqlite": concurrent,
        **({} if concurrent is None else {
            "ratio_concurrent_replicated_over_sqlite":
                concurrent["connections"]["ratio_replicated_over_this"],
            "ratio_concurrent_replicated_over_sqlite_group_commit":
                concurrent["group_commit"]["ratio_replicated_over_this"]}),
        "scratch_dir": str(scratch or Path(tempfile.gettempdir())),
        "profile": profile_rows,
    }


def _replicated_report(
    rounds: list[ReplicatedRound], per_round: dict[str, list[dict[str, Any]]], events: int,
    params: LedgerParams, *, replicated: ReplicatedParams | None, differs: int,
) -> dict[str, Any]:
    if replicated is None or not rounds:
        return {"replicated": None, "replicated_note": "skipped (--pure)"}
    figures = summarize(rounds, events, params.batch_size, replicated)
    tps = figures["batches"]["rounds_transfers_per_s"]
    return {
        "replicated": figures | {"codes_differing_from_pure_run": differs},
        "replicated_note": "",
        "ratio_replicated_over_sqlite": median(
            [t / s["transfers_per_s"] for t, s in zip(tps, per_round["sqlite"], strict=True)]),
        "ratio_replicated_over_pure": median(
            [t / p["transfers_per_s"] for t, p in zip(tps, per_round["pure"], strict=True)]),
    }


def _concurrent_report(rounds: list[ReplicatedRound], singles: list[dict[str, SinglesRun]],
                       replicated: ReplicatedParams | None) -> dict[str, Any] | None:
    """The SQLite baselines of the concurrent clients' row, against the replicated rounds."""
    if replicated is None or not rounds:
        return None
    ops = replicated.single_ops
    rep_tps = [ops / r.single_seconds for r in rounds]
    out: dict[str, Any] = {"clients": replicated.clients, "transfers": ops,
                           "transfers_all_rounds": ops * len(rounds)}
    differing = 0
    for form in FORMS:
        runs = [s[form] for s in singles]
        tps = [ops / run.seconds for run in runs]
        latencies = [x for run in runs for x in run.latencies]
        commits = sum(run.commits for run in runs)
        differing += sum(a != b for rnd, run in zip(rounds, runs, strict=True)
                         for a, b in zip(rnd.single_results, run.results, strict=True))
        out[form] = {
            "transfers_per_s": median(tps),
            "rounds_transfers_per_s": tps,
            "p50_ms": median(latencies) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "ok": sum(run.results.count(0) for run in runs),
            "commits": commits,
            "transfers_per_commit": ops * len(runs) / max(commits, 1),
            "busy_retries": sum(run.busy_retries for run in runs),
            "ratio_replicated_over_this": median(
                [r / t for r, t in zip(rep_tps, tps, strict=True)]),
        }
    out["codes_differing"] = differing
    out["codes_agree"] = differing == 0
    return out


def _concurrent_lines(report: dict[str, Any]) -> list[str]:
    con = report.get("concurrent_sqlite")
    if con is None:
        return []
    rows = [(f"SQLite, {con['clients']} connections, a transaction each", con["connections"],
             f"{con['connections']['busy_retries']:,} SQLITE_BUSY retries"),
            ("SQLite, one writer thread, group commit", con["group_commit"],
             f"{con['group_commit']['transfers_per_commit']:.1f} transfers per commit")]
    lines = [f"    {label}: {x['transfers_per_s']:,.0f} transfers/s, p50 {x['p50_ms']:.1f} ms, "
             f"p99 {x['p99_ms']:.1f} ms ({note}); ratio replicated / SQLite "
             f"{x['ratio_replicated_over_this']:.2f}x" for label, x, note in rows]
    ok = (report["replicated"]["concurrent"]["ok"], con["connections"]["ok"],
          con["group_commit"]["ok"])
    lines.append(f"    codes of both SQLite forms agree with the replicated run's, transfer for "
                 f"transfer: {'yes' if con['codes_agree'] else 'NO'} (ok: {ok[0]:,}, {ok[1]:,} "
                 f"and {ok[2]:,} of {con['transfers_all_rounds']:,})")
    return lines


def _replicated_lines(report: dict[str, Any]) -> list[str]:
    rep = report["replicated"]
    if rep is None:
        return [f"replicated (3 replicas) and the SQLite baselines of its concurrent clients: "
                f"{report['replicated_note']}"]
    b, c = rep["batches"], rep["concurrent"]
    return [
        f"{'replicated ledger cell (' + rep['deployment'] + ')'}",
        f"{'  batches of ' + format(b['batch_size'], ',') + ', one after the other':<44}"
        f"{b['transfers_per_s']:>13,.0f}{'':>13}{b['batch_ms_p50']:>9.1f} ms",
        f"{'ratio replicated / SQLite (median of rounds)':<44}"
        f"{report['ratio_replicated_over_sqlite']:>12.2f}x   (target >= 1x)",
        f"{'ratio replicated / pure (cost of replication)':<44}"
        f"{report['ratio_replicated_over_pure']:>12.2f}x",
        f"  Raft entries per batch: {b['entries_per_batch']:.2f}; codes agree with a pure "
        f"replay at the leader's timestamps: {'yes' if b['replay_agrees'] else 'NO'} "
        f"({rep['codes_differing_from_pure_run']:,} differ from the pure run: expiry timing)",
        f"  {c['clients']} concurrent clients, single transfers: {c['transfers_per_s']:,.0f} "
        f"transfers/s, p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms; "
        f"{c['commands_per_entry']:.1f} client commands per Raft entry "
        f"({c['entries']:,} entries)",
        *_concurrent_lines(report),
    ]


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table of :func:`run_ledger_bench`'s report."""
    p = report["params"]
    modes = report["modes"]
    lines = [
        f"cellmesh bench ledger: {p['batches']} batches x {p['batch_size']} transfers over "
        f"{p['accounts']} accounts, {p['rounds']} round(s), medians",
        "",
        f"{'mode':<44}{'transfers/s':>13}{'per CPU-s':>13}{'batch p50':>12}",
        *(f"{label:<44}{modes[m]['transfers_per_s']:>13,.0f}"
          f"{modes[m]['transfers_per_cpu_s']:>13,.0f}{modes[m]['batch_ms_p50']:>9.1f} ms"
          for m, label in (("pure", "pure LedgerState.apply (state machine only)"),
                           ("sqlite", "SQLite baseline (WAL, synchronous=FULL)"))),
        f"{'ratio pure / SQLite (median of rounds)':<44}{report['ratio_pure_over_sqlite']:>12.1f}x"
        + (f"{report['ratio_pure_over_sqlite_cpu']:>12.1f}x"
           if report["ratio_pure_over_sqlite_cpu"] else ""),
        "",
        f"results agree in both ledgers: {'yes' if report['results_agree'] else 'NO'} "
        f"({report['ok_per_round']:,} of {report['transfers_per_round']:,} events ok per round)",
        *_replicated_lines(report),
        f"SQLite file under: {report['scratch_dir']}",
    ]
    if report["profile"]:
        lines += ["", "profile of one pure round (cProfile, by own time):",
                  f"{'own s':>8}{'calls':>10}  function"]
        lines += [f"{r['own_s']:>8.3f}{r['calls']:>10}  {r['function']}" for r in report["profile"]]
    return "\n".join(lines) + "\n"


def main(
    *,
    json_output: bool = False,
    quick: bool = False,
    profile: bool = False,
    scratch: Path | None = None,
    pure: bool = False,
    sandbox: str = "bwrap",
    out: IO[str] | None = None,
) -> int:
    """Run the benchmark; print the table or JSON. 1 if the ledgers disagreed.

    ``pure`` skips the replicated mode; ``sandbox`` (bwrap, host) is where its
    replicas run (bwrap falls back to host, saying so, where it cannot run).
    """
    stream = out if out is not None else sys.stdout

    def progress(msg: str) -> None:
        sys.stderr.write(f"[bench ledger] {msg}\n")
        sys.stderr.flush()

    replicated = None
    if not pure:
        if sandbox == "bwrap":
            from ..sandbox._bwrap import find_bwrap, probe_bwrap

            problem = probe_bwrap(find_bwrap())
            if problem is not None:
                progress(f"bwrap cannot run here ({problem}): replicas under the host sandbox")
                sandbox = "host"
        replicated = (REPLICATED_QUICK if quick else REPLICATED_FULL)
        replicated = attrs.evolve(replicated, sandbox=sandbox)
    report = run_ledger_bench(QUICK if quick else FULL, scratch=scratch, profile=profile,
                              progress=progress, replicated=replicated)
    stream.write(json.dumps(report, indent=2) + "\n" if json_output else format_report(report))
    return 0 if report["results_agree"] else 1
