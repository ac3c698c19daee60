"""The ledger benchmark: its SQLite baseline runs the same checks, its harness produces numbers.

No speed is asserted (benchmarks are scripts); these tests make the
comparison trustworthy: the baseline answers every event exactly as the
pure ledger does, on random workloads that exercise every path it covers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import cellmesh.bench.ledger as ledger_bench
from cellmesh.bench._ledger_singles import (
    FORMS,
    SINGLE_IDS,
    copy_database,
    remove_database,
    run_baselines,
    single_plan,
)
from cellmesh.bench._ledger_sqlite import SqliteLedger
from cellmesh.bench.ledger import (
    LedgerParams,
    Workload,
    build_workload,
    format_report,
    run_ledger_bench,
    singles_template,
)
from cellmesh.bench.ledger_replicated import ReplicatedParams, ReplicatedRound
from cellmesh.cli import main as cli_main
from cellmesh.ledger import (
    AMOUNT_MAX,
    Account,
    ApplyMeta,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    LedgerState,
    Transfer,
    TransferResult,
)

SECOND = 1_000_000_000
EPOCH = 1_700_000_000 * SECOND


def _random_batches(rng: random.Random) -> tuple[list[Account], list[list[Transfer]]]:
    """Accounts (some limited, one closed) and batches mixing every supported path."""
    accounts = [Account(id=i, ledger=1 + (i == 6), code=1, flags=rng.choice([0, 0, 2, 4, 8]))
                for i in range(1, 8)]
    accounts.append(Account(id=2, ledger=1, code=1, flags=4))  # exists_with_different_flags?
    ids = list(range(1, 60))
    batches: list[list[Transfer]] = []
    for _ in range(5):
        batch = []
        for _ in range(rng.randrange(1, 25)):
            tid = rng.choice(ids)
            kind = rng.random()
            link = 1 if rng.random() < 0.15 else 0
            if kind < 0.45:
                flags = link | (2 if rng.random() < 0.3 else 0)
                batch.append(Transfer(
                    id=tid, debit_account_id=rng.randrange(0, 9),
                    credit_account_id=rng.randrange(0, 9), amount=rng.randrange(0, 400),
                    ledger=rng.choice([1, 1, 1, 2, 0]), code=rng.choice([1, 1, 0]), flags=flags,
                    timeout=rng.choice([0, 0, 1, 3]) if flags & 2 else rng.choice([0] * 9 + [1]),
                    user_data_64=rng.randrange(0, 2)))
            elif kind < 0.85:
                batch.append(Transfer(
                    id=tid, pending_id=rng.choice([0, *ids]), flags=link | rng.choice([4, 8, 12]),
                    amount=rng.choice([0, AMOUNT_MAX, 10, 100, 500]),
                    debit_account_id=rng.choice([0, 0, 0, 1, 2]),
                    ledger=rng.choice([0, 0, 1, 2]), code=rng.choice([0, 0, 1, 2])))
            else:  # garbage the baseline must refuse exactly as the ledger does
                batch.append(Transfer(
                    id=rng.choice([0, tid]), debit_account_id=1, credit_account_id=2,
                    amount=rng.choice([5, -1]), ledger=1, code=1,
                    timestamp=rng.choice([0, 1]), flags=rng.choice([0, 2, 1 << 9])))
        batches.append(batch)
    return accounts, batches


@pytest.mark.parametrize("seed", range(12))
def test_ledger_bench_sqlite_baseline_answers_like_the_ledger(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    accounts, batches = _random_batches(rng)
    state = LedgerState()
    sqlite = SqliteLedger(tmp_path / "ledger.sqlite3")
    try:
        reply = state.apply(CreateAccounts(events=accounts), ApplyMeta(index=1, timestamp=EPOCH))
        assert isinstance(reply, CreateAccountsReply)
        assert sqlite.create_accounts(accounts, EPOCH) == reply.results
        for k, batch in enumerate(batches, 2):
            at = EPOCH + k * SECOND
            got = state.apply(CreateTransfers(events=batch), ApplyMeta(index=k, timestamp=at))
            assert isinstance(got, CreateTransfersReply)
            assert sqlite.create_transfers(batch, at) == got.results, (seed, k, batch)
        for account in state.lookup_accounts([a.id for a in accounts]):
            assert sqlite.balances(account.id) == (
                account.debits_pending, account.debits_posted, account.credits_pending,
                account.credits_posted)
    finally:
        sqlite.close()


def test_ledger_bench_sqlite_baseline_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SqliteLedger(path)
    assert first.create_accounts([Account(id=1, ledger=1, code=1),
                                  Account(id=2, ledger=1, code=1)], EPOCH) == [0, 0]
    assert first.create_transfers([Transfer(id=5, debit_account_id=1, credit_account_id=2,
                                            amount=7, ledger=1, code=1)], EPOCH + 1) == [0]
    first.close()
    again = SqliteLedger(path)
    try:
        assert again.balances(2) == (0, 0, 0, 7)  # committed and fsync'd
    finally:
        again.close()


def test_ledger_bench_workload_is_deterministic() -> None:
    params = LedgerParams(accounts=30, batches=2, batch_size=200, rounds=1)
    assert build_workload(params) == build_workload(params)
    other = build_workload(LedgerParams(accounts=30, batches=2, batch_size=200, seed=7))
    assert other != build_workload(params)


def test_ledger_bench_produces_numbers_and_agreement(tmp_path: Path) -> None:
    params = LedgerParams(accounts=40, batches=3, batch_size=400, rounds=2)
    report = run_ledger_bench(params, scratch=tmp_path, profile=True)
    assert report["results_agree"] is True
    assert report["transfers_per_round"] == 3 * 400
    assert 0 < report["ok_per_round"] <= report["transfers_per_round"]
    for mode in ("pure", "sqlite"):
        assert len(report["modes"][mode]["rounds"]) == 2
        assert report["modes"][mode]["transfers_per_s"] > 0
    assert report["ratio_pure_over_sqlite"] > 0
    assert report["replicated"] is None and report["replicated_note"] == "skipped (--pure)"
    assert report["concurrent_sqlite"] is None  # the baseline of a row --pure leaves out
    assert report["profile"] and "function" in report["profile"][0]
    json.dumps(report)  # the --json document is serialisable
    text = format_report(report)
    assert "ratio pure / SQLite" in text and "results agree in both ledgers: yes" in text
    assert "group commit" not in text
    assert list(tmp_path.iterdir()) == []  # the SQLite files are gone


def test_ledger_bench_replicated_mode_measures_batches_and_concurrent_clients(
    tmp_path: Path,
) -> None:
    """The replicated mode runs the same batches through a 3-replica ledger cell (a real
    root) and agrees with a pure replay; the concurrent clients' figures are reported."""
    params = LedgerParams(accounts=40, batches=2, batch_size=300, rounds=1)
    report = run_ledger_bench(params, scratch=tmp_path, replicated=ReplicatedParams(
        clients=8, single_ops=40, sandbox="host"))
    assert report["results_agree"] is True
    rep = report["replicated"]
    json.dumps(report)
    assert rep["batches"]["replay_agrees"] is True
    assert rep["batches"]["transfers_per_s"] > 0 and rep["batches"]["entries_per_batch"] >= 1
    concurrent = rep["concurrent"]
    assert concurrent["clients"] == 8 and concurrent["transfers"] == 40
    assert concurrent["p99_ms"] >= concurrent["p50_ms"] > 0
    assert 1 <= concurrent["entries"] <= 40 + 10 and concurrent["commands_per_entry"] > 0
    assert report["ratio_replicated_over_sqlite"] > 0 and report["ratio_replicated_over_pure"] > 0
    con = report["concurrent_sqlite"]
    assert con["codes_agree"] is True and con["transfers_all_rounds"] == 40
    for form in FORMS:
        assert con[form]["ok"] == 40 and con[form]["ratio_replicated_over_this"] > 0
    text = format_report(report)
    assert "ratio replicated / SQLite" in text and "8 concurrent clients" in text
    assert "codes agree with a pure replay at the leader's timestamps: yes" in text
    assert "SQLite, 8 connections, a transaction each" in text
    assert "agree with the replicated run's, transfer for transfer: yes" in text


def test_ledger_bench_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "ledger", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--pure", "--quick", "--json", "--profile", "--data-dir", "--sandbox"):
        assert flag in out


def test_ledger_bench_cli_refuses_a_missing_data_dir(tmp_path: Path) -> None:
    assert cli_main(["bench", "ledger", "--pure", "--data-dir", str(tmp_path / "nope")]) != 0


def _funded_template(path: Path, accounts: list[int]) -> None:
    """A SQLite ledger with ``accounts`` funded by account 1 (as the bench's set-up)."""
    ledger = SqliteLedger(path)
    try:
        assert not any(ledger.create_accounts(
            [Account(id=1, ledger=1, code=1)]
            + [Account(id=a, ledger=1, code=1, flags=2) for a in accounts], EPOCH))
        assert not any(ledger.create_transfers(
            [Transfer(id=1000 + a, debit_account_id=1, credit_account_id=a, amount=100,
                      ledger=1, code=1) for a in accounts], EPOCH + 1))
    finally:
        ledger.close()


@pytest.mark.parametrize("form", list(FORMS))
def test_ledger_bench_sqlite_singles_commit_every_transfer(form: str, tmp_path: Path) -> None:
    """Each form of the concurrent-clients baseline answers every transfer of the plan, by
    plan index, after committing it: a reopened file holds them all."""
    accounts = list(range(2, 12))
    template, path = tmp_path / "template.sqlite3", tmp_path / f"{form}.sqlite3"
    _funded_template(template, accounts)
    plan = single_plan(accounts, 36, seed=3)
    assert plan == single_plan(accounts, 36, seed=3)  # the replicated round's plan too
    assert [t.id for t in plan] == [SINGLE_IDS + 3 * 36 + n for n in range(36)]
    copy_database(template, path)
    run = FORMS[form](path, plan, 4)
    assert run.results == [0] * 36
    assert len(run.latencies) == 36 and all(x > 0 for x in run.latencies)
    assert run.seconds > 0 and run.busy_retries >= 0
    assert 1 <= run.commits <= 36 and (form != "connections" or run.commits == 36)
    again = SqliteLedger(path)
    try:
        credits = [again.balances(a) for a in accounts]
        assert sum(b[3] - 100 for b in credits if b is not None) == 36  # every transfer of 1
        assert again.db.execute("SELECT count(*) FROM transfers WHERE id >= ?",
                                (SINGLE_IDS,)).fetchone() == (36,)
    finally:
        again.close()
        remove_database(path)


def test_ledger_bench_sqlite_singles_run_on_copies(tmp_path: Path) -> None:
    """run_baselines gives every form its own copy of the template and removes it."""
    accounts = list(range(2, 8))
    template = tmp_path / "template.sqlite3"
    _funded_template(template, accounts)
    runs = run_baselines(template, tmp_path, single_plan(accounts, 24, seed=0), 3)
    assert list(runs) == list(FORMS)
    assert all(run.results == [0] * 24 for run in runs.values())  # same ids, fresh copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["template.sqlite3"]


def test_ledger_bench_singles_template_holds_the_batches(tmp_path: Path) -> None:
    params = LedgerParams(accounts=20, batches=2, batch_size=50, rounds=1)
    workload = build_workload(params)
    singles_template(workload, tmp_path / "t.sqlite3")
    ledger = SqliteLedger(tmp_path / "t.sqlite3")
    try:
        (count,) = ledger.db.execute("SELECT count(*) FROM transfers").fetchone()
        assert count >= 20 + params.batches * params.batch_size // 2
        assert ledger.db.execute(  # the expiries due by now are done
            "SELECT count(*) FROM transfers WHERE status = 1 AND expires_at IS NOT NULL"
        ).fetchone() == (0,)
    finally:
        ledger.close()


def _fake_replicated(bad: int) -> object:
    """A stand-in for the replicated round (no root): the pure codes, made-up timings,
    and ``bad`` single transfers answered with a code that is not ok."""

    def run(setup: list[CreateAccounts | CreateTransfers], batches: list[CreateTransfers],
            accounts: list[int], params: ReplicatedParams, seed: int) -> ReplicatedRound:
        timing = ledger_bench.run_pure(Workload(setup=setup, batches=batches), Path())
        ops = params.single_ops
        return ReplicatedRound(
            batch_wall=[0.01] * len(batches), results=timing.results, single_seconds=0.05,
            single_latencies=[0.001] * ops, single_ok=ops - bad,
            single_results=[0] * (ops - bad) + [int(TransferResult.EXCEEDS_CREDITS)] * bad,
            single_entries=ops // 4, batch_entries=len(batches))

    return run


@pytest.mark.parametrize("bad", [0, 2])
def test_ledger_bench_prints_the_concurrent_row_with_its_sqlite_baselines(
    bad: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With both sides of the row (the replicated side faked), the table prints each SQLite
    form with its ratio, the JSON has its figures, and differing codes fail the run."""
    monkeypatch.setattr(ledger_bench, "run_replicated", _fake_replicated(bad))
    params = LedgerParams(accounts=30, batches=2, batch_size=100, rounds=2)
    report = run_ledger_bench(params, scratch=tmp_path, replicated=ReplicatedParams(
        clients=4, single_ops=30, sandbox="host"))
    json.dumps(report)
    con = report["concurrent_sqlite"]
    assert con["clients"] == 4 and con["transfers_all_rounds"] == 60
    for form in FORMS:
        figures = con[form]
        assert figures["ok"] == 60 and len(figures["rounds_transfers_per_s"]) == 2
        assert figures["p99_ms"] >= figures["p50_ms"] > 0
        assert figures["ratio_replicated_over_this"] > 0
    assert report["ratio_concurrent_replicated_over_sqlite"] == (
        con["connections"]["ratio_replicated_over_this"])
    assert report["ratio_concurrent_replicated_over_sqlite_group_commit"] == (
        con["group_commit"]["ratio_replicated_over_this"])
    assert con["codes_differing"] == 2 * 2 * bad and con["codes_agree"] is (bad == 0)
    assert report["results_agree"] is (bad == 0)
    text = format_report(report)
    assert "4 concurrent clients, single transfers" in text
    for label in ("SQLite, 4 connections, a transaction each: ",
                  "SQLite, one writer thread, group commit: "):
        (line,) = [x for x in text.splitlines() if label in x]
        assert "transfers/s" in line and "ratio replicated / SQLite" in line
    verdict = "yes" if bad == 0 else "NO"
    assert f"agree with the replicated run's, transfer for transfer: {verdict}" in text
    assert list(tmp_path.iterdir()) == []
