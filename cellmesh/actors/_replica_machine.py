"""The state machine a replica's Raft node drives: batches, sessions, the user's apply.

Theory of operation
-------------------
:class:`ReplicaMachine` is what :class:`~cellmesh.consensus.RaftNode` calls
(``apply_entry`` / ``snapshot`` / ``restore``). It wraps the user's
:class:`~cellmesh.ReplicatedCell`:

* ``apply_entry(index, data)`` decodes one batch
  (:mod:`~cellmesh.actors._replica_entries`) and applies its ops in order.
  For a command it asks the session table first (exactly once: a duplicate
  is answered with its recorded result and not applied again), then decodes
  the protein, calls ``cell.apply(command, CommandMeta(index, timestamp))``
  and encodes the reply. The timestamp is the leader's, clamped to
  ``max(proposed, previous + 1)``: strictly increasing across every op
  applied, on every replica alike.
* ``snapshot()`` is the canonical CBOR of ``[1, last timestamp, session
  table, replica addresses, user snapshot]``: equal states give equal bytes.

With ``check`` on, every command is applied twice -- to the cell, and to a
fresh instance restored from the cell's snapshot taken just before -- and
the results and the resulting snapshots must be equal, or
:class:`~cellmesh.actors.replicated.NondeterminismDetected` stops the node.

No Trio, no clock, no I/O here: everything comes from the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import cbor2

from ..wire._cliptext import MAX_ERROR_TEXT, clip_text
from ..wire.proteins import DecodeContext, EncodeContext, ProteinRegistry
from ._replica_entries import OpKind, ResultKind, decode_batch, encode_results
from ._replica_sessions import SessionLimits, SessionTable, Verdict
from ._replica_types import CommandMeta, NondeterminismDetected, StateMachineCell

SNAPSHOT_FORMAT: Final = 1
_SNAPSHOT_FIELDS: Final = 5
_DONE: Final = [ResultKind.DONE]


def type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class (just ``QualName`` for builtins)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class ReplicaMachine:
    """The node's state machine for one replica of ``cell``.

    ``on_address(replica, path)`` is called when an address op is applied
    (and for every address a restored snapshot holds), so the driver can
    reach a member added later.
    """

    def __init__(
        self,
        cell: StateMachineCell,
        *,
        registry: ProteinRegistry,
        limits: SessionLimits,
        check: bool = False,
        on_address: Callable[[int, str], None] | None = None,
    ) -> None:
        self.cell = cell
        self.registry = registry
        self.limits = limits
        self.commands = frozenset(type(cell).commands)
        self.check = check
        self.on_address = on_address
        self.sessions = SessionTable(limits)
        self.addresses: dict[int, str] = {}
        self.last_timestamp = 0
        self.commands_applied = 0
        self._decode_ctx = DecodeContext()

    # -- the node's StateMachine protocol -------------------------------------

    def apply(self, command: bytes) -> bytes:
        """Not used: the node calls :meth:`apply_entry` (it has the index)."""
        raise TypeError("ReplicaMachine needs the entry index: call apply_entry")

    def apply_entry(self, index: int, command: bytes) -> bytes:
        """Apply one committed batch; return the encoded per-op results."""
        batch = decode_batch(command)  # ValueError: a corrupt log entry stops the node
        proposed = batch.timestamp
        results = [self._apply_op(index, proposed, op) for op in batch.ops]
        return encode_results(results)

    def query(self, query: bytes) -> bytes:
        """The node's read hook: a no-op (queries run after the ReadIndex wait)."""
        del query
        return b""

    def snapshot(self) -> bytes:
        """The canonical bytes of the whole replicated state."""
        return self.snapshot_job()()

    def snapshot_job(self) -> Callable[[], bytes]:
        """Capture the state now; the function returned builds :meth:`snapshot`'s bytes.

        The node runs it in a worker thread while it goes on applying
        (:class:`~cellmesh.consensus._driver.BackgroundSnapshots`). The
        session table and addresses are copied here; the user's state is
        captured by its own ``snapshot_job`` when the cell has one, else its
        ``snapshot()`` runs here, on the loop.
        """
        cell = self.cell
        user_job = getattr(cell, "snapshot_job", None)
        if callable(user_job):
            build_user: Callable[[], object] = user_job()
        else:
            taken = cell.snapshot()
            build_user = lambda: taken  # noqa: E731
        head = [SNAPSHOT_FORMAT, self.last_timestamp, self.sessions.to_wire(),
                sorted(self.addresses.items())]
        what = (f"the function {type(cell).__qualname__}.snapshot_job() returned"
                if callable(user_job) else f"{type(cell).__qualname__}.snapshot()")

        def build() -> bytes:
            user = build_user()
            if not isinstance(user, bytes):
                raise TypeError(f"{what} must return bytes, got {type(user).__name__}")
            return cbor2.dumps([*head, user], canonical=True)

        return build

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a :meth:`snapshot` result."""
        try:
            value = cbor2.loads(data)
        except Exception as exc:
            raise ValueError(f"replica snapshot is not valid CBOR: {exc}") from None
        if type(value) is not list or len(value) != _SNAPSHOT_FIELDS:
            raise ValueError("replica snapshot is not a 5-element array")
        fmt, last_timestamp, sessions, addresses, user = value
        if fmt != SNAPSHOT_FORMAT or type(last_timestamp) is not int or type(user) is not bytes:
            raise ValueError("replica snapshot has a bad format, timestamp or user state")
        table = SessionTable.from_wire(sessions, self.limits)
        book: dict[int, str] = {}
        for item in addresses:
            if type(item) is not list or len(item) != 2 or type(item[1]) is not str:
                raise ValueError("replica snapshot has a malformed address")
            book[int(item[0])] = item[1]
        self.cell.restore(user)
        self.sessions = table
        self.last_timestamp = last_timestamp
        self.addresses = book
        if self.on_address is not None:
            for replica, path in sorted(book.items()):
                self.on_address(replica, path)

    # -- ops -------------------------------------------------------------------

    def _tick(self, proposed: int) -> int:
        now = max(proposed, self.last_timestamp + 1)
        self.last_timestamp = now
        return now

    def _apply_op(self, index: int, proposed: int, op: list[Any]) -> list[Any]:
        now = self._tick(proposed)
        kind = op[0]
        if kind == OpKind.COMMAND:
            _, session, seq, floor, command = op
            if session:
                verdict, recorded = self.sessions.admit(session, seq, floor, now)
                if verdict is Verdict.DUPLICATE:
                    return recorded  # type: ignore[no-any-return]
                if verdict is not Verdict.APPLY:
                    return [ResultKind.NOT_APPLIED, verdict.value]
            result = self._command(index, now, command)
            if session:
                self.sessions.record(session, seq, result)
            return result
        if kind == OpKind.OPEN_SESSION:
            return [ResultKind.SESSION, self.sessions.open(now, op[1] if len(op) > 1 else None)]
        if kind == OpKind.CLOSE_SESSION:
            self.sessions.close(op[1])
            return _DONE
        # OpKind.ADDRESS (decode_batch refused anything else)
        replica, path = op[1], op[2]
        self.addresses[replica] = path
        if self.on_address is not None:
            self.on_address(replica, path)
        return _DONE

    def _decode(self, command: bytes) -> Any:
        body = cbor2.loads(command)
        return self.registry.decode(body, self._decode_ctx)

    def _command(self, index: int, now: int, command: bytes) -> list[Any]:
        try:
            msg = self._decode(command)
        except Exception as exc:  # cbor2 raises several types on garbage
            return [ResultKind.RAISED, "UndecodableCommand", f"{type_name(exc)}: {exc}"]
        cls = type(msg)
        if cls not in self.commands:
            return [ResultKind.RAISED, "NotACommand", f"{cls.__qualname__} is not a command"]
        meta = CommandMeta(index=index, timestamp=now)
        if not self.check:
            self.commands_applied += 1
            return self._run(self.cell, msg, meta)
        before = self.cell.snapshot()
        result = self._run(self.cell, msg, meta)
        after = self.cell.snapshot()
        twin = type(self.cell)()
        twin.restore(before)
        again = self._run(twin, self._decode(command), meta)
        if again != result:
            raise NondeterminismDetected(cls.__qualname__, "result")
        if twin.snapshot() != after:
            raise NondeterminismDetected(cls.__qualname__, "state")
        self.commands_applied += 1
        return result

    def _run(self, cell: StateMachineCell, msg: Any, meta: CommandMeta) -> list[Any]:
        try:
            reply = cell.apply(msg, meta)
        except (Exception, SystemExit) as exc:  # sys.exit() in apply is a result too
            # Clipped as an error frame would be: the result is kept in the session
            # table (replicated state), and a message may echo a huge input.
            return [ResultKind.RAISED, clip_text(type_name(exc), 1024),
                    clip_text(str(exc), MAX_ERROR_TEXT)]
        if reply is None:
            return [ResultKind.OK, None]
        try:
            body = self.registry.encode(reply, EncodeContext())
        except Exception as exc:  # not a protein, or a field that does not encode
            return [
                ResultKind.RAISED,
                "BadReply",
                f"apply({type(msg).__qualname__}) returned {type(reply).__qualname__}, "
                f"not a protein that encodes: {exc}",
            ]
        return [ResultKind.OK, body]


__all__ = ["SNAPSHOT_FORMAT", "ReplicaMachine", "type_name"]
