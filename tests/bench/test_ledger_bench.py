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

from cellmesh.bench._ledger_sqlite import SqliteLedger
from cellmesh.bench.ledger import (
    LedgerParams,
    ReplicatedParams,
    build_workload,
    format_report,
    run_ledger_bench,
)
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
    assert report["profile"] and "function" in report["profile"][0]
    json.dumps(report)  # the --json document is serialisable
    text = format_report(report)
    assert "ratio pure / SQLite" in text and "results agree in both ledgers: yes" in text
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
    text = format_report(report)
    assert "ratio replicated / SQLite" in text and "8 concurrent clients" in text
    assert "codes agree with a pure replay at the leader's timestamps: yes" in text


def test_ledger_bench_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "ledger", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--pure", "--quick", "--json", "--profile", "--data-dir", "--sandbox"):
        assert flag in out


def test_ledger_bench_cli_refuses_a_missing_data_dir(tmp_path: Path) -> None:
    assert cli_main(["bench", "ledger", "--pure", "--data-dir", str(tmp_path / "nope")]) != 0
