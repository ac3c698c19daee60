"""``cellmesh ledger``: an operator's look into a running ledger cell.

``account ID`` and ``transfer ID`` look one record up; ``check`` verifies the
books on the live cluster (per ledger: debits equal credits, posted and
pending; no account beyond its balance limit) and exits 0 only when they
balance. Every read is linearizable: it sees every write acknowledged before
it. ``--cell NAME`` picks the cell (default ``ledger``), ``--json`` prints
one JSON document (ids, amounts and timestamps as JSON integers: up to 128
bits, so parse them with a big-integer-safe reader outside Python).

The root is asked first whether the cell exists, so a typo is named as one
(not as a socket that does not answer); a cell that is not a ledger is named
as such.
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TextIO, TypeVar, cast

import attrs
import cyclopts
import trio

from ..config import Paths, check_cell_name
from ..errors import CellmeshError, ConfigError, RemoteCellError, UnexpectedReply
from ..ledger.client import LedgerClient, NotALedgerReply
from ..ledger.codes import U128_MAX, AccountFlags, PendingStatus, TransferFlags
from ..ledger.proteins import Account, BooksReport, Transfer
from ..transport.synapse import Synapse
from ._ops import fetch_status

T = TypeVar("T")
#: Seconds a read waits for the ledger's answer (resent across leader changes meanwhile)
#: before it fails.
LEDGER_TIMEOUT: Final = 30.0
_NOT_SERVED: Final = ("NotServed", "NoReceptor", "UnknownProtein")


class LedgerNotFound(CellmeshError):
    """No cell of that name runs in the mesh; ``known`` lists the cells that do."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no cell named {name!r} in the running mesh (cells: {listed}); "
                         "name the ledger with --cell")
        self.name = name
        self.known = known


class NotALedger(CellmeshError):
    """The cell exists but does not answer the ledger's requests."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            f"cell {name!r} is not a ledger (a ledger cell's manifest entry is "
            f"\"cellmesh.ledger:Ledger\"): {why}"
        )
        self.name = name


class RecordNotFound(CellmeshError):
    """The ledger holds no account (or transfer) with that id."""

    def __init__(self, kind: str, record_id: int, cell: str) -> None:
        super().__init__(f"no {kind} with id {record_id} in ledger cell {cell!r}")
        self.kind = kind
        self.record_id = record_id


def parse_id(text: str, *, source: str = "ID") -> int:
    """An account or transfer id: decimal digits (leading zeros allowed) or ``0x`` and
    hex digits, 1 to 2**128-2. Nothing else (no sign, ``_``, ``0o`` or ``0b``)."""
    body = text.strip()
    digits = body[2:] if body[:2].lower() == "0x" else body
    base = 16 if digits is not body else 10
    allowed = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not digits or digits.strip(allowed) or not digits.isascii():
        raise ConfigError(source, f"expected a decimal or 0x-hex integer id, got {text!r}")
    if len(digits.lstrip("0")) > 40:  # (and Python's int() refuses over 4300 digits)
        raise ConfigError(source, f"ids are 1 to 2**128-2, got {len(digits)} digits")
    value = int(digits, base)
    if not 0 < value < U128_MAX:
        raise ConfigError(source, f"ids are 1 to 2**128-2, got {value}")
    return value


def _cell_names(paths: Paths) -> list[str]:
    reply = trio.run(fetch_status, paths)
    names = {c.name.split("/", 1)[0] for c in reply.cells}
    return sorted(names | {g.name for g in reply.groups})


def with_ledger(cell: str, use: Callable[[LedgerClient], Awaitable[T]]) -> T:
    """Run ``use`` with a client of the running ledger cell ``cell`` (errors named)."""
    check_cell_name(cell, source="--cell")
    paths = Paths.from_env()
    known = _cell_names(paths)  # RootNotRunning when there is no root
    if cell not in known:
        raise LedgerNotFound(cell, known)

    async def run() -> T:
        async with Synapse.grow(cell, socket_dir=paths.socket_dir, client_name="cellmesh-cli",
                                give_up_after=LEDGER_TIMEOUT) as syn:
            try:
                return await use(LedgerClient.over(syn))
            except (UnexpectedReply, NotALedgerReply) as exc:
                raise NotALedger(cell, str(exc)) from None
            except RemoteCellError as exc:
                if exc.type_name.rsplit(".", 1)[-1] in _NOT_SERVED:
                    raise NotALedger(cell, f"{exc.type_name}: {exc.remote_message}") from None
                raise

    return trio.run(run)


# ------------------------------------------------------------------ formatting


def _flag_names(flags: int, kind: type[AccountFlags] | type[TransferFlags]) -> str:
    names = [m.name.lower() for m in kind if m.value and flags & m.value and m.name]
    return ",".join(names) if names else "none"


def _when(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


def _fields(value: object) -> dict[str, Any]:
    """A protein's fields by name (proteins are attrs classes mypy cannot see as such)."""
    return attrs.asdict(cast(Any, value), recurse=False)


def record_json(value: Account | Transfer) -> dict[str, Any]:
    """A record's fields as a JSON object (ints stay ints), plus ``flag_names``."""
    doc = _fields(value)
    kind = AccountFlags if isinstance(value, Account) else TransferFlags
    names = _flag_names(value.flags, kind)
    doc["flag_names"] = [] if names == "none" else names.split(",")
    return doc


def account_text(a: Account) -> str:
    """The human-readable view of an account."""
    return "\n".join([
        f"account {a.id}",
        f"  ledger {a.ledger}  code {a.code}  flags {_flag_names(a.flags, AccountFlags)}",
        f"  debits   posted {a.debits_posted:>24,}  pending {a.debits_pending:>24,}",
        f"  credits  posted {a.credits_posted:>24,}  pending {a.credits_pending:>24,}",
        f"  credits - debits (posted) {a.credits_posted - a.debits_posted:,}",
        f"  user data  128: {a.user_data_128}  64: {a.user_data_64}  32: {a.user_data_32}",
        f"  created {_when(a.timestamp)} ({a.timestamp})",
    ]) + "\n"


def transfer_text(t: Transfer, status: PendingStatus | None) -> str:
    """The human-readable view of a transfer (with its pending status, if pending)."""
    lines = [
        f"transfer {t.id}",
        f"  {t.debit_account_id} -> {t.credit_account_id}  amount {t.amount:,}",
        f"  ledger {t.ledger}  code {t.code}  flags {_flag_names(t.flags, TransferFlags)}",
    ]
    if t.pending_id:
        lines.append(f"  resolves pending transfer {t.pending_id}")
    if status is not None:
        lines.append(f"  pending status: {status.name.lower()}"
                     + (f" (timeout {t.timeout} s)" if t.timeout else ""))
    lines += [
        f"  user data  128: {t.user_data_128}  64: {t.user_data_64}  32: {t.user_data_32}",
        f"  created {_when(t.timestamp)} ({t.timestamp})",
    ]
    return "\n".join(lines) + "\n"


def books_json(report: BooksReport) -> dict[str, Any]:
    """The check's JSON document."""
    return {
        "ok": report.ok,
        "ledgers": [_fields(t) | {"balanced": t.balanced} for t in report.ledgers],
        "violations": [_fields(v) for v in report.violations],
        "violation_count": report.violation_count,
        "transfers": report.transfers,
        "timestamp": report.timestamp,
        "applied_index": report.applied_index,
    }


def books_text(report: BooksReport, cell: str) -> str:
    """The check's human-readable report: one line per ledger, then what is wrong."""
    lines = []
    for t in report.ledgers:
        mark = "balanced" if t.balanced else "UNBALANCED"
        lines.append(
            f"ledger {t.ledger}: {t.accounts:,} accounts, debits posted {t.debits_posted:,} / "
            f"credits posted {t.credits_posted:,}, debits pending {t.debits_pending:,} / "
            f"credits pending {t.credits_pending:,}: {mark}")
    for v in report.violations:
        lines.append(
            f"account {v.account_id} (ledger {v.ledger}) breaks {v.limit}: debits "
            f"{v.debits_posted:,} posted + {v.debits_pending:,} pending, credits "
            f"{v.credits_posted:,} posted + {v.credits_pending:,} pending")
    if report.violation_count > len(report.violations):
        lines.append(f"... and {report.violation_count - len(report.violations):,} more "
                     "accounts beyond their limits")
    accounts = sum(t.accounts for t in report.ledgers)
    where = (f"{len(report.ledgers)} ledger(s), {accounts:,} accounts, "
             f"{report.transfers:,} transfers, applied index {report.applied_index}")
    if report.ok:
        lines.append(f"cellmesh: the books of {cell!r} balance ({where})")
    else:
        wrong = [f"{len(report.unbalanced)} unbalanced ledger(s)"] if report.unbalanced else []
        if report.violation_count:
            wrong.append(f"{report.violation_count:,} account(s) beyond their limits")
        lines.append(f"cellmesh: the books of {cell!r} do NOT balance: {', '.join(wrong)} "
                     f"({where})")
    return "\n".join(lines) + "\n"


def _write(out: TextIO, doc: Any) -> None:
    out.write(jsonlib.dumps(doc, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ commands


def run_account(record: str, *, cell: str, json: bool, out: TextIO) -> int:
    """Implementation of ``cellmesh ledger account``."""
    aid = parse_id(record)

    async def look(ledger: LedgerClient) -> list[Account]:
        return await ledger.lookup_accounts([aid])

    found = with_ledger(cell, look)
    if not found:
        raise RecordNotFound("account", aid, cell)
    if json:
        _write(out, record_json(found[0]))
    else:
        out.write(account_text(found[0]))
    return 0


def run_transfer(record: str, *, cell: str, json: bool, out: TextIO) -> int:
    """Implementation of ``cellmesh ledger transfer``."""
    tid = parse_id(record)

    async def look(ledger: LedgerClient) -> tuple[list[Transfer], list[PendingStatus | None]]:
        return await ledger.lookup_transfers([tid]), await ledger.pending_statuses([tid])

    found, (status,) = with_ledger(cell, look)
    if not found:
        raise RecordNotFound("transfer", tid, cell)
    if json:
        _write(out, record_json(found[0]) | {
            "pending_status": None if status is None else status.name.lower()})
    else:
        out.write(transfer_text(found[0], status))
    return 0


def run_check(*, cell: str, json: bool, out: TextIO) -> int:
    """Implementation of ``cellmesh ledger check``: 0 when the books balance, else 1."""

    async def check(ledger: LedgerClient) -> BooksReport:
        return await ledger.check()

    report = with_ledger(cell, check)
    if json:
        _write(out, books_json(report))
    else:
        out.write(books_text(report, cell))
    return 0 if report.ok else 1


def register(app: cyclopts.App) -> None:
    """Attach the ``ledger`` command group to ``app``."""
    ledger = cyclopts.App(name="ledger", help="Look into a running ledger cell; check its books.")

    @ledger.command(name="account")
    def _account(id: str, /, *, cell: str = "ledger", json: bool = False) -> int:
        """Show one account: its balances, flags and user data (a linearizable read).

        Parameters
        ----------
        id
            The account id (decimal or 0x hex).
        cell
            The ledger cell's name.
        json
            Print the account as one JSON object.
        """
        return run_account(id, cell=cell, json=json, out=sys.stdout)

    @ledger.command(name="transfer")
    def _transfer(id: str, /, *, cell: str = "ledger", json: bool = False) -> int:
        """Show one transfer, and where it stands if it is pending (a linearizable read).

        Parameters
        ----------
        id
            The transfer id (decimal or 0x hex).
        cell
            The ledger cell's name.
        json
            Print the transfer as one JSON object.
        """
        return run_transfer(id, cell=cell, json=json, out=sys.stdout)

    @ledger.command(name="check")
    def _check(*, cell: str = "ledger", json: bool = False) -> int:
        """Check the books on the live cluster; exit 0 only when they balance.

        Per ledger, the sum of debits equals the sum of credits, posted and
        pending; no account is beyond its balance limit. Otherwise exit 1 and
        name the unbalanced ledgers and the accounts beyond their limits.

        Parameters
        ----------
        cell
            The ledger cell's name.
        json
            Print one JSON document (``ok``, per-ledger totals, violations).
        """
        return run_check(cell=cell, json=json, out=sys.stdout)

    app.command(ledger)


__all__ = [
    "LedgerNotFound",
    "NotALedger",
    "RecordNotFound",
    "books_json",
    "books_text",
    "parse_id",
    "register",
    "run_account",
    "run_check",
    "run_transfer",
    "with_ledger",
]
