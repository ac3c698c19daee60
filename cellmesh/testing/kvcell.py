"""A key-value map as a replicated cell, checkable with :class:`~cellmesh.testing.KVModel`.

:class:`KVCell`: :class:`Put` sets a key, :class:`Append` appends to it
(both answer the value before), :class:`Get` (a linearizable query) and
:class:`GetStale` (a stale query) read it; missing keys read as ``""``.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ..actors._replica_types import CommandMeta
from ..actors.replicated import ReplicatedCell, query
from ..wire.proteins import protein


@protein("cellmesh.testing.kv.Put")
class Put:
    """Set ``key`` to ``value``."""

    key: str
    value: str


@protein("cellmesh.testing.kv.Append")
class Append:
    """Append ``value`` to ``key``."""

    key: str
    value: str


@protein("cellmesh.testing.kv.Get")
class Get:
    """Read ``key`` (linearizable)."""

    key: str


@protein("cellmesh.testing.kv.GetStale")
class GetStale:
    """Read ``key`` from the replica's local state (may be stale)."""

    key: str


@protein("cellmesh.testing.kv.Value")
class Value:
    """A key's value (the value before, for writes)."""

    value: str


class KVCell(ReplicatedCell):
    """Strings to strings; deterministic, canonical snapshot."""

    commands = (Put, Append)

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: Any, meta: CommandMeta) -> Value:
        """Put or append; the value before."""
        del meta
        old = self.data.get(command.key, "")
        self.data[command.key] = command.value if isinstance(command, Put) else old + command.value
        return Value(value=old)

    @query
    def get(self, q: Get) -> Value:
        """The value of ``q.key``."""
        return Value(value=self.data.get(q.key, ""))

    @query(stale=True)
    def get_stale(self, q: GetStale) -> Value:
        """The value of ``q.key`` here, now."""
        return Value(value=self.data.get(q.key, ""))

    def snapshot(self) -> bytes:
        """The map, canonical CBOR."""
        return cbor2.dumps(self.data, canonical=True)

    def restore(self, data: bytes) -> None:
        """Replace the map."""
        self.data = dict(cbor2.loads(data))


__all__ = ["Append", "Get", "GetStale", "KVCell", "Put", "Value"]
