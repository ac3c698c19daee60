"""A stand-alone Raft key-value process and its client, for multi-process tests and benches.

Theory of operation
-------------------
``python -m cellmesh.consensus.serve --id 1 --voters 1,2,3 --data-dir D
--socket-dir S`` runs one :class:`~cellmesh.consensus.node.RaftNode` whose
state machine is :class:`KeyValueMachine`, talking to its peers over
:mod:`cellmesh.consensus.unix_transport`, and serves clients on
``S/client-<id>.sock``.

The client protocol reuses the transport's framing (4-byte big-endian length,
CBOR body). A request is ``[id, op, payload]`` with ``op`` one of
``"propose"`` (payload: a ``key=value`` command), ``"read"`` (payload: a key)
or ``"status"`` (value: ``[role, leader, term, commit, applied, saves]``);
the reply is ``[id, "ok", value]``, ``[id, "not_leader", hint]`` or
``[id, "error", text]``. Requests on one connection are served
concurrently (so pipelined proposals share fsyncs) and replies may come back
out of order; :class:`RaftClient` matches them by ``id``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import cbor2
import trio

from cellmesh.consensus.core import RaftConfig
from cellmesh.consensus.errors import ConsensusError, NotLeader
from cellmesh.consensus.node import (
    LogStorage,
    NodeOptions,
    OpenStorage,
    RaftNode,
    open_raft_node,
    open_wal_storage,
    run_inline,
)
from cellmesh.consensus.unix_transport import FrameOutbox, FrameReader, open_unix_transport
from cellmesh.consensus.wal import Recovered, WriteAheadLog
from cellmesh.errors import CellmeshError, FrameTooLarge, MalformedFrame

_LENGTH_BYTES: Final = 4
_REQUEST_FIELDS: Final = 3
_MAX_INFLIGHT_PER_CONNECTION: Final = 4096


def client_socket_path(socket_dir: Path, node: int) -> Path:
    """Where node ``node`` serves clients."""
    return socket_dir / f"client-{node}.sock"


class _NoSync:
    """Benchmark-only: skip every fsync (the data is NOT durable)."""

    def sync_data(self, fd: int) -> None:
        """Do nothing."""

    def sync_file(self, fd: int) -> None:
        """Do nothing."""

    def sync_dir(self, fd: int) -> None:
        """Do nothing."""


def open_unsynced_storage(directory: Path) -> tuple[LogStorage, Recovered]:
    """A write-ahead log that never fsyncs: for benchmarks against non-durable baselines."""
    return WriteAheadLog.open(directory, syncer=_NoSync())


def _frame(obj: object) -> bytes:
    body = cbor2.dumps(obj)
    return len(body).to_bytes(_LENGTH_BYTES, "big") + body


def _decode_triple(body: bytes) -> list[object]:
    """A request or reply: a 3-element CBOR array; anything else is :class:`MalformedFrame`."""
    try:
        value = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise MalformedFrame(f"not valid CBOR: {exc}") from None
    if not isinstance(value, list) or len(value) != _REQUEST_FIELDS:
        raise MalformedFrame("expected a 3-element array")
    return value


@attrs.define
class KeyValueMachine:
    """``key=value`` commands set a key and return its previous value; queries get a key."""

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
        """The whole map as CBOR."""
        return cbor2.dumps(self.data)

    def restore(self, data: bytes) -> None:
        """Replace the map by a :meth:`snapshot` result."""
        loaded = cbor2.loads(data)
        if not isinstance(loaded, dict):
            raise TypeError("snapshot is not a map")
        self.data = loaded


# --------------------------------------------------------------------------
# Server


async def _answer(node: RaftNode, op: object, payload: object) -> list[object]:
    try:
        if op == "status":
            s = node.status()
            return ["ok", [s.role.name, s.leader, s.term, s.commit, s.applied, s.saves]]
        if not isinstance(payload, bytes):
            return ["error", "payload must be bytes"]
        if op == "propose":
            return ["ok", await node.propose(payload)]
        if op == "read":
            return ["ok", await node.read(payload)]
        return ["error", f"unknown op {op!r:.40}"]
    except ConsensusError as exc:
        return _error_answer(exc)


def _error_answer(exc: BaseException) -> list[object]:
    if isinstance(exc, NotLeader):
        return ["not_leader", exc.leader_hint]
    return ["error", f"{type(exc).__name__}: {exc}"]


async def _serve_client(node: RaftNode, stream: trio.SocketStream) -> None:
    """Serve one client connection.

    Requests run concurrently (at most a bounded number per connection). A
    proposal is handed to the node without a task of its own
    (:meth:`~cellmesh.consensus.node.RaftNode.propose_nowait`): the node's
    loop writes its reply when the entry is applied. Other requests (and
    proposals while the node's admission limit is reached) get a task. A
    reply is written to the socket at once if no earlier reply is still
    queued (see :class:`~cellmesh.consensus.unix_transport.FrameOutbox`); a
    flusher task writes the rest, many replies per write.
    """
    slots = trio.Semaphore(_MAX_INFLIGHT_PER_CONNECTION)
    outbox = FrameOutbox(fd=stream.socket.fileno(), max_frames=2 * _MAX_INFLIGHT_PER_CONNECTION)

    def reply(request_id: object, answer: list[object]) -> None:
        outbox.put(_frame([request_id, *answer]))  # dropped once the connection is gone

    def proposed(request_id: object, result: bytes | None, error: BaseException | None) -> None:
        reply(request_id, ["ok", result] if error is None else _error_answer(error))
        slots.release()

    async def handle(request_id: object, op: object, payload: object) -> None:
        try:
            reply(request_id, await _answer(node, op, payload))
        finally:
            slots.release()

    reader = FrameReader()
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(outbox.flush_forever)
        try:
            async for data in stream:
                for body in reader.feed(data):
                    request_id, op, payload = _decode_triple(body)
                    await outbox.wait_room()
                    try:
                        slots.acquire_nowait()  # no checkpoint: a burst is admitted at once
                    except trio.WouldBlock:
                        await slots.acquire()
                    if op == "propose" and isinstance(payload, bytes):
                        try:
                            node.propose_nowait(payload, functools.partial(proposed, request_id))
                            continue
                        except trio.WouldBlock:
                            pass  # the node's admission limit: wait in a task
                        except ConsensusError as exc:
                            reply(request_id, _error_answer(exc))
                            slots.release()
                            continue
                    nursery.start_soon(handle, request_id, op, payload)
        except (trio.BrokenResourceError, OSError, FrameTooLarge, MalformedFrame):
            pass
        finally:
            # Proposals still in flight answer later, from the node's loop: make
            # sure they never write to this descriptor (its number may be reused).
            outbox.fd = None
            outbox.broken = True
        nursery.cancel_scope.cancel()


async def serve(
    node_id: int,
    voters: list[int],
    *,
    data_dir: Path,
    socket_dir: Path,
    options: NodeOptions,
    open_storage: OpenStorage = open_wal_storage,
    task_status: trio.TaskStatus[RaftNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node and its client listener until cancelled.

    Saves run on the event loop (:func:`~cellmesh.consensus.node.run_inline`),
    not in a worker thread: on a small machine the thread hand-offs (and the
    GIL traffic they cause) cost more than the fsync they would overlap. The
    node still batches: while a save blocks the loop, requests and peer
    messages queue in the kernel and form the next batch, and a leader's
    appends are on the wire before its own save starts.
    """
    client_path = client_socket_path(socket_dir, node_id)
    with contextlib.suppress(FileNotFoundError):
        client_path.unlink()
    async with (
        open_unix_transport(node_id, socket_dir) as transport,
        open_raft_node(
            RaftConfig(id=node_id),
            voters=voters,
            directory=data_dir,
            transport=transport,
            state_machine=KeyValueMachine(),
            options=options,
            open_storage=open_storage,
            run_sync=run_inline,
        ) as node,
    ):
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(os.fspath(client_path))
        sock.listen(128)
        listener = trio.SocketListener(sock)

        async def handler(stream: trio.SocketStream) -> None:
            await _serve_client(node, stream)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, [listener])
            task_status.started(node)


# --------------------------------------------------------------------------
# Client


class ServerError(CellmeshError):
    """The server answered a request with an error; ``text`` says which."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@attrs.define(eq=False)
class _Call:
    """One request waiting for its reply (``None``: the connection ended first)."""

    reply: list[object] | None = None
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class RaftClient:
    """A pipelining client of one serve process; open with :func:`open_raft_client`.

    A request is written to the socket by the calling task (see
    :class:`~cellmesh.consensus.unix_transport.FrameOutbox`); one reader
    task matches replies to requests by id.
    """

    _stream: trio.SocketStream
    _outbox: FrameOutbox
    _pending: dict[int, _Call] = attrs.Factory(dict)
    _ids: itertools.count[int] = attrs.Factory(itertools.count)
    _closed: bool = False

    async def call(self, op: str, payload: bytes = b"") -> object:
        """Send one request and wait for its reply value.

        Raises :class:`NotLeader` (with the server's ``leader_hint``),
        :class:`ServerError`, or ``trio.BrokenResourceError`` if the server died.
        """
        request_id = next(self._ids)
        call = _Call()
        self._pending[request_id] = call
        try:
            await self._outbox.wait_room()
            if self._closed or not self._outbox.put(_frame([request_id, op, payload])):
                raise trio.BrokenResourceError("the server closed the connection")
            await call.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if call.reply is None:
            raise trio.BrokenResourceError("the server closed the connection")
        status, value = call.reply
        if status == "ok":
            return value
        if status == "not_leader":
            raise NotLeader(value if isinstance(value, int) else None)
        raise ServerError(str(value))

    async def propose(self, command: bytes) -> bytes:
        """Propose ``command``; its result once applied on the server."""
        value = await self.call("propose", command)
        assert isinstance(value, bytes)
        return value

    async def read(self, key: bytes) -> bytes:
        """Linearizable read of ``key`` through the server."""
        value = await self.call("read", key)
        assert isinstance(value, bytes)
        return value

    async def status(self) -> list[object]:
        """``[role, leader, term, commit, applied, saves]`` of the server's node."""
        value = await self.call("status")
        assert isinstance(value, list)
        return value

    async def _read_replies(self) -> None:
        reader = FrameReader()
        try:
            async for data in self._stream:
                for body in reader.feed(data):
                    reply = _decode_triple(body)
                    request_id = reply[0]
                    call = self._pending.pop(request_id, None) if type(request_id) is int else None
                    if call is not None:
                        call.reply = reply[1:]
                        call.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, MalformedFrame):
            pass
        finally:
            self._closed = True
            for call in self._pending.values():
                call.done.set()


@asynccontextmanager
async def open_raft_client(path: Path) -> AsyncIterator[RaftClient]:
    """Connect to a serve process's client socket at ``path``."""
    stream = await trio.open_unix_socket(os.fspath(path))
    try:
        async with stream, trio.open_nursery() as nursery:
            client = RaftClient(stream, FrameOutbox(fd=stream.socket.fileno()))
            nursery.start_soon(client._read_replies)
            nursery.start_soon(client._outbox.flush_forever)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The helper tasks never raise, so a group holds only the caller's own
        # exception: hand it back unwrapped, as a plain client would.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Run one cellmesh Raft key-value node.")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--voters", required=True, help="comma-separated node ids")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--socket-dir", type=Path, required=True)
    parser.add_argument("--tick", type=float, default=0.05, help="seconds per Raft tick")
    parser.add_argument("--max-pending", type=int, default=1024)
    parser.add_argument("--snapshot-every", type=int, default=None)
    parser.add_argument(
        "--unsafe-no-fsync", action="store_true", help="benchmarks only: never fsync the WAL"
    )
    args = parser.parse_args(argv)
    voters = [int(v) for v in args.voters.split(",")]
    options = NodeOptions(
        tick_interval=args.tick,
        max_pending_proposals=args.max_pending,
        snapshot_every=args.snapshot_every,
    )
    try:
        trio.run(
            functools.partial(
                serve,
                args.id,
                voters,
                data_dir=args.data_dir,
                socket_dir=args.socket_dir,
                options=options,
                open_storage=open_unsynced_storage if args.unsafe_no_fsync else open_wal_storage,
            )
        )
    except* KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop a foreground node


if __name__ == "__main__":
    main()


__all__ = [
    "KeyValueMachine",
    "RaftClient",
    "ServerError",
    "client_socket_path",
    "main",
    "open_raft_client",
    "open_unsynced_storage",
    "serve",
]
