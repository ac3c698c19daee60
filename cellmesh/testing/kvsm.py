"""A tiny key-value state machine with exactly-once client commands, for the simulator.

Theory of operation: a command is ``(client, seq, op, key, value)`` encoded
as JSON in a log entry. Each client issues one command at a time with
increasing ``seq``; the state machine remembers the last ``seq`` and its
result per client, so a command re-submitted after a timeout and committed
twice is applied once and answered with the same result (idempotent apply,
dissertation section 6.3). The whole state, dedup table included, serializes
into a snapshot.
"""

from __future__ import annotations

import json

import attrs


@attrs.frozen(kw_only=True)
class Command:
    """One client command: ``op`` is ``put``, ``append`` or ``get``."""

    client: int
    seq: int
    op: str
    key: str
    value: str | None = None

    def encode(self) -> bytes:
        """The bytes carried in a log entry."""
        return json.dumps([self.client, self.seq, self.op, self.key, self.value]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Command:
        """Parse :meth:`encode` output."""
        client, seq, op, key, value = json.loads(raw)
        return cls(client=int(client), seq=int(seq), op=str(op), key=str(key), value=value)


@attrs.define(eq=False)
class KVStateMachine:
    """The replicated map plus the per-client dedup table."""

    data: dict[str, str] = attrs.field(factory=dict)
    last: dict[int, tuple[int, str]] = attrs.field(factory=dict)

    def apply(self, cmd: Command) -> str:
        """Apply ``cmd`` once; a duplicate returns the result of the first apply."""
        seen = self.last.get(cmd.client)
        if seen is not None and seen[0] >= cmd.seq:
            if seen[0] == cmd.seq:
                return seen[1]
            return ""  # an older duplicate: its client has long moved on
        result = self.read(cmd.key)
        if cmd.op == "put":
            self.data[cmd.key] = cmd.value or ""
        elif cmd.op == "append":
            self.data[cmd.key] = result + (cmd.value or "")
        self.last[cmd.client] = (cmd.seq, result)
        return result

    def read(self, key: str) -> str:
        """The current value of ``key`` (``""`` if never written)."""
        return self.data.get(key, "")

    def snapshot(self) -> bytes:
        """Serialize the whole state."""
        return json.dumps(
            {"data": self.data, "last": {str(c): list(v) for c, v in self.last.items()}},
            sort_keys=True,
        ).encode()

    @classmethod
    def restore(cls, raw: bytes) -> KVStateMachine:
        """Rebuild from :meth:`snapshot` output (``b""`` is the empty state)."""
        if not raw:
            return cls()
        obj = json.loads(raw)
        return cls(
            data={str(k): str(v) for k, v in obj["data"].items()},
            last={int(c): (int(v[0]), str(v[1])) for c, v in obj["last"].items()},
        )


@attrs.define
class KeyValueMachine:
    """The plainest Raft state machine: ``key=value`` commands over bytes.

    ``apply`` sets a key and returns its previous value (empty if none);
    ``query`` reads a key. No deduplication: for driver tests and the raw
    Raft benchmark, where each command is proposed once.
    """

    data: dict[bytes, bytes] = attrs.Factory(dict)

    def apply(self, command: bytes) -> bytes:
        """Set ``key`` to ``value``; return the previous value (empty if none)."""
        key, _, value = command.partition(b"=")
        old = self.data.get(key, b"")
        self.data[key] = value
        return old

    def query(self, query: bytes) -> bytes:
        """The value of key ``query`` (empty if unset)."""
        return self.data.get(query, b"")

    def snapshot(self) -> bytes:
        """The whole map as JSON (keys and values as latin-1 text)."""
        return json.dumps(
            sorted((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.data.items())
        ).encode()

    def restore(self, data: bytes) -> None:
        """Replace the map by a :meth:`snapshot` result."""
        self.data = {k.encode("latin-1"): v.encode("latin-1") for k, v in json.loads(data)}


__all__ = ["Command", "KVStateMachine", "KeyValueMachine"]
