"""LedgerClient without a cell: what it puts on the wire (enum members as plain ints).

The client is given a caller that does what the transport does with a
command -- encode it with the protein's schema, which takes an ``int`` field
only as an exact ``int`` -- then applies it to an in-process LedgerState.
The replicated path is tested in test_ledger_cell.py.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import pytest
from ledgerkit import EPOCH

from cellmesh.errors import FieldError
from cellmesh.ledger import (
    Account,
    AccountFlags,
    AccountResult,
    ApplyMeta,
    CreateAccounts,
    CreateTransfers,
    FilterFlags,
    LedgerClient,
    LedgerState,
    Transfer,
    TransferResult,
)
from cellmesh.wire._fields import EncodeContext
from cellmesh.wire.proteins import encode_body


class Currency(enum.IntEnum):
    USD = 840


class Kind(enum.IntEnum):
    CUSTOMER = 200


class WireLedger:
    """A caller that encodes each command as the transport would, then applies it."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.sent: list[Any] = []

    async def __call__(self, request: Any) -> Any:
        encode_body(request, EncodeContext())  # FieldError for anything but exact ints
        self.sent.append(request)
        return self.state.apply(request, ApplyMeta(index=len(self.sent),
                                                   timestamp=EPOCH + len(self.sent)))


def _as_enum(value: int) -> enum.IntEnum:
    """``value`` as a member of a fresh IntEnum (an int subclass, equal to ``value``)."""
    return enum.IntEnum("Wrapped", {"MEMBER": value}).MEMBER  # type: ignore[attr-defined, no-any-return]


async def test_client_sends_an_enum_member_in_any_field_as_a_plain_int() -> None:
    """The audit's case: an IntEnum ``ledger`` with a plain ``code`` used to fail."""
    wire = WireLedger()
    ledger = LedgerClient(wire)
    made = await ledger.create_accounts([Account(id=1, ledger=Currency.USD, code=200),
                                         Account(id=2, ledger=840, code=Kind.CUSTOMER)])
    assert made.codes == (AccountResult.OK, AccountResult.OK)
    sent = wire.sent[-1].events[0]
    assert type(sent.ledger) is int and sent.ledger == 840


@pytest.mark.parametrize("cls", [Account, Transfer])
async def test_client_converts_every_int_field(cls: type[Any]) -> None:
    """Each field in turn holds an int subclass; what is sent is equal and plain."""
    wire = WireLedger()
    ledger = LedgerClient(wire)
    await ledger.create_accounts([Account(id=1, ledger=840, code=1),
                                  Account(id=2, ledger=840, code=1)])
    if cls is Account:
        base = {"id": 3, "ledger": 840, "code": 1, "user_data_64": 5}
        send = ledger.create_accounts
    else:
        base = {"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 7,
                "ledger": 840, "code": 1, "user_data_32": 5}
        send = ledger.create_transfers  # type: ignore[assignment]
    for field in attrs.fields(cls):
        event = cls(**{**base, field.name: _as_enum(base.get(field.name, 0))})
        await send([event])
        (sent,) = wire.sent[-1].events
        assert sent == cls(**base), field.name
        assert all(type(v) is int for v in attrs.astuple(sent)), field.name
    assert wire.state.lookup_accounts([3]) or wire.state.lookup_transfers([10])


async def test_client_passes_plain_events_as_they_are() -> None:
    wire = WireLedger()
    ledger = LedgerClient(wire)
    events = [Account(id=i, ledger=840, code=1) for i in (1, 2)]
    mixed = [Account(id=3, ledger=840, code=1, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
             events[0]]
    await ledger.create_accounts(events)
    assert all(s is e for s, e in zip(wire.sent[-1].events, events, strict=True))
    results = await ledger.create_accounts(mixed)
    assert results.codes == (AccountResult.OK, AccountResult.EXISTS)
    converted, untouched = wire.sent[-1].events
    assert type(converted.flags) is int and untouched is events[0]
    transfers = await ledger.create_transfers(
        [Transfer(id=9, debit_account_id=1, credit_account_id=2, ledger=840, code=1)])
    assert transfers.codes == (TransferResult.OK,)
    assert isinstance(wire.sent[-1], CreateTransfers)
    assert isinstance(wire.sent[0], CreateAccounts)


async def test_client_leaves_a_bool_for_the_wire_to_refuse() -> None:
    """A bool is an int subclass but never an int on the wire: it is not converted."""
    ledger = LedgerClient(WireLedger())
    with pytest.raises(FieldError, match="flags"):
        await ledger.create_accounts([Account(id=1, ledger=840, code=1, flags=True)])


async def test_client_refuses_a_malformed_read_before_sending_it() -> None:
    """A malformed read is an InvalidQuery naming the field, raised here in one line --
    not a RemoteCellError carrying the cell's traceback."""
    from cellmesh.ledger import InvalidQuery

    wire = WireLedger()
    ledger = LedgerClient(wire)
    for kwargs, field in (({"limit": 0}, "limit"), ({"flags": 0}, "flags"),
                          ({"timestamp_min": 5, "timestamp_max": 4}, "timestamp_min")):
        with pytest.raises(InvalidQuery, match=field) as info:
            await ledger.get_account_transfers(1, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(InvalidQuery, match="account_id"):
        await ledger.get_account_transfers(0)
    for page in (0, -1, 8191, True, 2.0, "3"):  # the field is the caller's own: page
        with pytest.raises(InvalidQuery, match=r"^page: must be an int in 1\.\.8190") as info:
            async for _ in ledger.account_history(1, page=page):  # type: ignore[arg-type]
                pass
        assert info.value.field == "page"
    with pytest.raises(InvalidQuery, match="max_violations"):
        await ledger.check(max_violations=0)
    # Values of the wrong type: an InvalidQuery naming the field, never a bare
    # TypeError, and never converted (a bool is not 1, "3" and 3.9 are not 3).
    for kwargs, field in (({"limit": "5"}, "limit"), ({"limit": 2.5}, "limit"),
                          ({"timestamp_max": None}, "timestamp_max"),
                          ({"timestamp_min": 1.5}, "timestamp_min"),
                          ({"flags": "3"}, "flags"), ({"flags": 3.9}, "flags"),
                          ({"flags": True}, "flags")):
        with pytest.raises(InvalidQuery, match=f"^{field}: must be an int") as info:
            await ledger.get_account_transfers(1, **kwargs)
        assert info.value.field == field
    with pytest.raises(InvalidQuery, match=r"^account_id: must be an int"):
        await ledger.get_account_transfers("1000")  # type: ignore[arg-type]
    for flags in ("3", True):
        with pytest.raises(InvalidQuery, match=r"^flags: must be an int"):
            async for _ in ledger.account_history(1, flags=flags):  # type: ignore[arg-type]
                pass
    for bad in ("5", True, 2.0):
        with pytest.raises(InvalidQuery, match=r"^max_violations: must be an int"):
            await ledger.check(max_violations=bad)  # type: ignore[arg-type]
    assert wire.sent == []  # (test_ledger_cell.py sends well-formed reads to a real cell)
    # An enum member is an int: it is accepted as a plain int.
    from cellmesh.ledger.queries import check_int

    assert type(check_int("flags", FilterFlags.DEBITS)) is int
