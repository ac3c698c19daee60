"""``cellmesh ledger`` as an operator runs it: a real root, a 3-replica ledger cell.

``cellmesh up`` a manifest with ``entry = "cellmesh.ledger:Ledger"`` and
``replicas = 3``; a client moves money; ``ledger account``, ``ledger transfer``
and ``ledger check`` (table and JSON) read it; errors name what is wrong (no
root, no such cell, a cell that is not a ledger, a bad id, an unknown record).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_daemon import cellmesh, mesh_home

from cellmesh import Synapse
from cellmesh.ledger import Account, AccountFlags, LedgerClient, Transfer, TransferFlags

HERE = Path(__file__).resolve().parent

MANIFEST = """
[cells.ledger]
dna = "ledgercells.py"
entry = "cellmesh.ledger:Ledger"
replicas = 3
standby = false
start_timeout = 60

[cells.plain]
dna = "ledgercells.py"
entry = "ledgercells:Plain"
"""


@pytest.fixture
def home() -> Iterator[Path]:
    yield from mesh_home(HERE / "ledgercells.py", MANIFEST)


async def seed(socket_dir: Path) -> None:
    async with Synapse.grow("ledger", socket_dir=socket_dir) as syn:
        ledger = LedgerClient.over(syn)
        limited = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        made = await ledger.create_accounts([
            Account(id=1, ledger=7, code=1),
            Account(id=2, ledger=7, code=2, flags=limited, user_data_64=42),
            Account(id=3, ledger=7, code=2, flags=limited),
        ])
        assert made.ok, made.failures()
        moved = await ledger.create_transfers([
            Transfer(id=100, debit_account_id=1, credit_account_id=2, amount=1_000,
                     ledger=7, code=1),
            Transfer(id=0x65, debit_account_id=2, credit_account_id=3, amount=250,
                     ledger=7, code=1, flags=TransferFlags.PENDING, timeout=3600),
        ])
        assert moved.ok, moved.failures()


def test_ledger_cli_reads_accounts_transfers_and_checks_the_books(home: Path) -> None:
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    trio.run(seed, home / "run")

    account = cellmesh(home, "ledger", "account", "2")
    assert account.returncode == 0, account.stderr
    assert "account 2" in account.stdout
    assert "flags debits_must_not_exceed_credits" in account.stdout
    assert "credits - debits (posted) 1,000" in account.stdout
    doc = json.loads(cellmesh(home, "ledger", "account", "0x2", "--json").stdout)
    assert (doc["credits_posted"], doc["debits_pending"], doc["user_data_64"]) == (1000, 250, 42)
    assert doc["flag_names"] == ["debits_must_not_exceed_credits"]

    transfer = cellmesh(home, "ledger", "transfer", "101")
    assert transfer.returncode == 0, transfer.stderr
    assert "2 -> 3  amount 250" in transfer.stdout
    assert "pending status: pending (timeout 3600 s)" in transfer.stdout
    doc = json.loads(cellmesh(home, "ledger", "transfer", "100", "--json").stdout)
    assert (doc["amount"], doc["pending_status"], doc["flag_names"]) == (1000, None, [])

    check = cellmesh(home, "ledger", "check")
    assert check.returncode == 0, check.stderr
    assert "ledger 7: 3 accounts, debits posted 1,000 / credits posted 1,000" in check.stdout
    assert "cellmesh: the books of 'ledger' balance (1 ledger(s), 3 accounts, 2 transfers" \
        in check.stdout
    doc = json.loads(cellmesh(home, "ledger", "check", "--json").stdout)
    assert doc["ok"] is True and doc["ledgers"][0]["debits_pending"] == 250

    # a replica killed: the books still read the same
    assert cellmesh(home, "kill", "ledger/0").returncode == 0
    again = cellmesh(home, "ledger", "check", "--cell", "ledger", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["ok"] is True

    missing = cellmesh(home, "ledger", "account", "9")
    assert missing.returncode == 1
    assert "no account with id 9 in ledger cell 'ledger'" in missing.stderr
    gone = cellmesh(home, "ledger", "transfer", "12345")
    assert gone.returncode == 1 and "no transfer with id 12345" in gone.stderr
    bad = cellmesh(home, "ledger", "account", "0")
    assert bad.returncode == 2 and "ids are 1 to 2**128-2, got 0" in bad.stderr
    octal = cellmesh(home, "ledger", "account", "0o12")
    assert octal.returncode == 2 and "got '0o12'" in octal.stderr
    junk = cellmesh(home, "ledger", "transfer", "abc")
    assert junk.returncode == 2 and "expected a decimal or 0x-hex integer id" in junk.stderr
    typo = cellmesh(home, "ledger", "check", "--cell", "ledgr")
    assert typo.returncode == 1
    assert "no cell named 'ledgr' in the running mesh (cells: ledger, plain)" in typo.stderr
    plain = cellmesh(home, "ledger", "check", "--cell", "plain")
    assert plain.returncode == 1 and "cell 'plain' is not a ledger" in plain.stderr

    assert cellmesh(home, "down").returncode == 0
    no_root = cellmesh(home, "ledger", "check")
    assert no_root.returncode == 1 and "no root is running" in no_root.stderr


def test_ledger_cli_check_names_what_is_wrong() -> None:
    """The report of books that do not balance (built by hand: a live ledger cannot
    be made to break its invariants)."""
    from cellmesh.cli._ledger import books_json, books_text
    from cellmesh.ledger import BooksReport, LedgerTotals, LimitViolation

    report = BooksReport(
        ledgers=[LedgerTotals(ledger=7, accounts=2, debits_pending=0, debits_posted=10,
                              credits_pending=0, credits_posted=9)],
        violations=[LimitViolation(account_id=2, ledger=7, limit="debits_must_not_exceed_credits",
                                   debits_pending=0, debits_posted=10, credits_pending=0,
                                   credits_posted=9)],
        violation_count=3, transfers=1, timestamp=5, applied_index=4)
    text = books_text(report, "ledger")
    assert "ledger 7: 2 accounts, debits posted 10 / credits posted 9" in text
    assert "UNBALANCED" in text
    assert "account 2 (ledger 7) breaks debits_must_not_exceed_credits" in text
    assert "... and 2 more accounts beyond their limits" in text
    assert ("the books of 'ledger' do NOT balance: 1 unbalanced ledger(s), 3 account(s) "
            "beyond their limits") in text
    assert books_json(report)["ok"] is False


def test_ledger_cli_ids_are_decimal_or_0x_hex_only() -> None:
    from cellmesh.cli._ledger import parse_id
    from cellmesh.errors import ConfigError

    assert [parse_id(t) for t in ("010", "10", "0x65", "0XfF", " 7 ")] == [10, 10, 101, 255, 7]
    for bad in ("0o12", "0b1010", "1_0", "-1", "+1", "0x", "", "0x_1", "١٢", "1e3"):
        with pytest.raises(ConfigError, match="expected a decimal or 0x-hex integer id"):
            parse_id(bad)
    for out in ("0", str(2**128 - 1), "9" * 5000):
        with pytest.raises(ConfigError, match="ids are 1 to 2"):
            parse_id(out)
