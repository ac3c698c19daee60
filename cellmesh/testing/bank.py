"""A bank as a replicated cell, and its sequential model, for tests and benchmarks.

:class:`Bank` is a small :class:`~cellmesh.ReplicatedCell`: accounts with
integer balances, :class:`Deposit` (creates money) and :class:`Transfer`
(moves it, refused without funds), each carrying an id the bank counts, so a
test can prove every acknowledged write was applied exactly once. Queries:
:class:`GetBalances` (all balances: with transfers only, they always sum to
the same total) and :class:`GetApplied` (how many times each id was applied).

:class:`BankModel` is its sequential specification for
:func:`~cellmesh.testing.lincheck.check_operations`: inputs
``("transfer", src, dst, amount)`` (output: ``True`` if applied, ``False``
if refused for funds) and ``("read",)`` (output: the balances as a sorted
tuple of ``(account, balance)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import cbor2

from ..actors._replica_types import CommandMeta
from ..actors.replicated import ReplicatedCell, query
from ..wire.proteins import protein
from .lincheck import Operation


@protein("cellmesh.testing.bank.Deposit")
class Deposit:
    """Add ``amount`` to ``account`` (created at 0 if new); ``id`` is counted."""

    id: str
    account: str
    amount: int


@protein("cellmesh.testing.bank.Transfer")
class Transfer:
    """Move ``amount`` from ``src`` to ``dst`` if ``src`` has it; ``id`` is counted."""

    id: str
    src: str
    dst: str
    amount: int


@protein("cellmesh.testing.bank.Receipt")
class Receipt:
    """The outcome of a write: applied or refused (no funds), and where it was logged."""

    ok: bool
    index: int
    timestamp: int


@protein("cellmesh.testing.bank.GetBalances")
class GetBalances:
    """Query every balance."""


@protein("cellmesh.testing.bank.Balances")
class Balances:
    """Every account's balance."""

    balances: dict[str, int]


@protein("cellmesh.testing.bank.GetApplied")
class GetApplied:
    """Query how many times each write id was applied."""


@protein("cellmesh.testing.bank.Applied")
class Applied:
    """Write id -> times applied (exactly once is 1)."""

    counts: dict[str, int]


class Bank(ReplicatedCell):
    """Accounts and transfers; deterministic, with a canonical snapshot."""

    commands = (Deposit, Transfer)

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.applied: dict[str, int] = {}

    def apply(self, command: Any, meta: CommandMeta) -> Receipt:
        """Apply a deposit or a transfer (refused, unchanged, without funds)."""
        self.applied[command.id] = self.applied.get(command.id, 0) + 1
        if isinstance(command, Deposit):
            if command.amount < 0:
                raise ValueError("a deposit must not be negative")
            self.balances[command.account] = self.balances.get(command.account, 0) + command.amount
            return Receipt(ok=True, index=meta.index, timestamp=meta.timestamp)
        have = self.balances.get(command.src, 0)
        if command.amount < 0 or have < command.amount or command.src == command.dst:
            return Receipt(ok=False, index=meta.index, timestamp=meta.timestamp)
        self.balances[command.src] = have - command.amount
        self.balances[command.dst] = self.balances.get(command.dst, 0) + command.amount
        return Receipt(ok=True, index=meta.index, timestamp=meta.timestamp)

    @query
    def get_balances(self, q: GetBalances) -> Balances:
        """Every balance."""
        del q
        return Balances(balances=dict(self.balances))

    @query
    def get_applied(self, q: GetApplied) -> Applied:
        """How many times each write id was applied."""
        del q
        return Applied(counts=dict(self.applied))

    def snapshot(self) -> bytes:
        """Balances and counts, canonical CBOR."""
        return cbor2.dumps([self.balances, self.applied], canonical=True)

    def restore(self, data: bytes) -> None:
        """Replace the state by a snapshot."""
        balances, applied = cbor2.loads(data)
        self.balances = dict(balances)
        self.applied = dict(applied)


BankState = tuple[tuple[str, int], ...]


@attrs.frozen
class BankModel:
    """The sequential bank over fixed accounts (see the module docstring)."""

    initial: BankState

    def init(self) -> BankState:
        """The balances before the history."""
        return self.initial

    def step(self, state: BankState, input: tuple[Any, ...], output: Any) -> tuple[bool, BankState]:
        """A transfer applies iff funds allow; a read must see the state."""
        if input[0] == "read":
            return output is None or tuple(output) == state, state
        _, src, dst, amount = input
        balances = dict(state)
        can = balances.get(src, 0) >= amount and src != dst
        if output is not None and output != can:
            return False, state
        if not can:
            return True, state
        balances[src] -= amount
        balances[dst] = balances.get(dst, 0) + amount
        return True, tuple(sorted(balances.items()))

    def partition(
        self, history: Sequence[Operation[tuple[Any, ...], Any]]
    ) -> list[list[Operation[tuple[Any, ...], Any]]]:
        """Transfers link accounts: the history does not split."""
        return [list(history)]


__all__ = [
    "Applied",
    "Balances",
    "Bank",
    "BankModel",
    "BankState",
    "Deposit",
    "GetApplied",
    "GetBalances",
    "Receipt",
    "Transfer",
]
