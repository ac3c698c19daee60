"""The replica runtime: one Raft node, its peer socket and its client socket, under Trio.

Theory of operation
-------------------
:func:`open_replica_runtime` is what a :class:`~cellmesh.ReplicatedCell`
runs around its serving (``Cell._open_runtime``, called by
:func:`~cellmesh.actors.runtime.serve_cell`):

1. parse the replica env (:class:`~cellmesh.actors._replica_spec.ReplicaSpec`)
   and check the data dir's identity file (``replica.cbor``: which replica
   owns it and the group's first voters, written once with an fsync, so a
   restarted replica never bootstraps again and a data dir is never used
   by another replica);
2. open the Raft node (:func:`~cellmesh.consensus.open_raft_node`) over the
   membrane transport, its WAL in ``<data>/raft``, the user's cell wrapped in
   a :class:`~cellmesh.actors._replica_machine.ReplicaMachine`;
3. serve the peer socket (inherited fd 4, or bound at this replica's own
   path): Raft packets, forwarded commands, the root's admin requests
   (:mod:`~cellmesh.actors._replica_admin`);
4. run the batcher, the read barrier, and a watcher that reports
   :class:`~cellmesh.actors.control.ReplicaStats` to the root (on every
   change of role, term, leader or configuration, and every second) and
   opens the client socket's accept gate only while this replica leads.

The client socket itself is served by ``serve_cell`` with this runtime's
handlers (:mod:`~cellmesh.actors._replica_client`) and options (sessions
announced, the accept gate). **Only the leader accepts client connections**:
the group's one listening socket is shared by every replica (the root binds
it), and a follower simply does not call ``accept``, so new connections wait
in the kernel's backlog until a leader takes them, with no forwarding hop.
A replica that loses leadership sends its connections a goaway (their
clients reconnect, and the new leader accepts them) and forwards what they
still send meanwhile to the new leader over the peer sockets.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import cbor2
import trio

from ..consensus import (
    Membership,
    NodeOptions,
    NodeStopped,
    RaftConfig,
    RaftNode,
    Role,
    open_raft_node,
    run_in_thread,
)
from ..consensus.membrane_transport import MembraneTransport, Packet
from ..consensus.wal import WalCorrupted, WalStateLost, holds_state, prepare_directory
from ..errors import CellUnavailable, ConfigError
from ..transport._dispatch import Receptors
from ..transport.membrane import Membrane, open_membrane
from ..transport.synapse import Synapse
from ..wire.proteins import PROTEINS
from ._replica_admin import PeerSide
from ._replica_client import ClientSide
from ._replica_machine import ReplicaMachine
from ._replica_sessions import SessionLimits
from ._replica_spec import ReplicaSpec, node_id, replica_id
from ._replica_submit import Batcher, ReadBarrier, Router
from .cell import CellReceptors
from .control import CellDown, ReplicaStats

if TYPE_CHECKING:
    from ..transport._dispatch import Handler
    from ._replica_types import StateMachineCell
    from ._stats import ServiceTimes
    from .cell import CellContext

IDENTITY: Final = "replica.cbor"
RAFT_DIR: Final = "raft"
STATS_INTERVAL: Final = 1.0
_ROLES: Final = {
    "FOLLOWER": "follower",
    "PRE_CANDIDATE": "precandidate",
    "CANDIDATE": "candidate",
    "LEADER": "leader",
    "REMOVED": "removed",
}


# ---------------------------------------------------------------- the data dir


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_identity(ident: Path, raw: bytes) -> tuple[int, tuple[int, ...], bool]:
    """(owner replica, first voters, log claimed) from an identity file; ConfigError
    if damaged. A file without ``claimed`` (older versions) counts as claimed."""
    try:
        value = cbor2.loads(raw)
        owner, first = value["replica"], tuple(value["bootstrap"])
        claimed = value.get("claimed", True)
    except Exception as exc:
        raise ConfigError("CELL_DATA_DIR", f"{ident} is damaged ({exc})") from None
    if (type(owner) is not int or not all(type(v) is int for v in first)
            or type(claimed) is not bool):
        raise ConfigError("CELL_DATA_DIR", f"{ident} is damaged (bad field types)")
    return owner, first, claimed


def _write_identity(data: Path, replica: int, voters: tuple[int, ...], claimed: bool) -> None:
    ident = data / IDENTITY
    tmp = data / (IDENTITY + ".tmp")
    with open(tmp, "wb") as f:
        f.write(cbor2.dumps({"replica": replica, "bootstrap": list(voters), "claimed": claimed}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ident)
    _fsync_dir(data)


def prepare_data_dir(spec: ReplicaSpec) -> tuple[int, ...]:
    """Check (or write, on first start) the data dir's identity; return the first voters.

    Raises :class:`ConfigError` naming the variable at fault when the data
    dir belongs to another replica, holds a log without an identity, or
    when an empty data dir gets neither a bootstrap nor a join; and
    :class:`~cellmesh.consensus.wal.WalStateLost` when the identity says
    the replica's Raft log was set up but ``raft/`` is gone or empty: a
    replica that forgot its votes and acknowledged entries must not start
    as a fresh voter (it could elect a leader without them).

    First start: the identity is written (``claimed`` false), then the Raft
    directory is claimed for this node (``STATE``), then the identity is
    rewritten with ``claimed`` true, each step fsynced. A crash between
    the steps leaves ``claimed`` false, and the next start finishes them.
    """
    data = spec.data_dir
    ident = data / IDENTITY
    raft = data / RAFT_DIR
    try:
        raw = ident.read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None:
        owner, first, claimed = _read_identity(ident, raw)
        if owner != spec.replica:
            raise ConfigError(
                "CELL_REPLICA_ID",
                f"is {spec.replica}, but the data dir {data} belongs to replica {owner}",
            )
        if claimed:
            if not holds_state(raft):
                raise WalStateLost(
                    raft,
                    f"the Raft directory of replica {spec.replica} is gone or empty, but its "
                    f"identity ({ident}) says its log was set up: its votes and entries were "
                    "lost",
                )
            return first
        _claim(spec, data, first)  # a first start was interrupted: finish it
        return first
    if raft.is_dir() and any(raft.iterdir()):
        raise ConfigError(
            "CELL_DATA_DIR",
            f"{raft} holds a Raft log but {ident} is missing: not this replica's data "
            "(wipe the replica to rebuild it from its peers)",
        )
    if spec.join:
        voters: tuple[int, ...] = ()
    elif not spec.bootstrap:
        raise ConfigError(
            "CELL_REPLICA_BOOTSTRAP",
            f"is not set and the data dir {data} is empty: give the first voters, "
            "or CELL_REPLICA_JOIN=1 to join a running group",
        )
    else:
        voters = spec.first_voters()
    data.mkdir(parents=True, exist_ok=True)
    _write_identity(data, spec.replica, voters, claimed=False)
    _claim(spec, data, voters)
    return voters


def _claim(spec: ReplicaSpec, data: Path, voters: tuple[int, ...]) -> None:
    """Claim ``raft/`` for this replica's node (joining when it has no first voters),
    then record in the identity that it is claimed."""
    prepare_directory(data / RAFT_DIR, node=node_id(spec.replica), join=not voters)
    _write_identity(data, spec.replica, voters, claimed=True)


@attrs.define(eq=False)
class _OpenHint:
    """Around checking the data dir and opening the Raft node: a damaged or lost
    log found there names ``cellmesh wipe`` (set ``opened`` once the node is
    open: later errors are left alone)."""

    name: str
    replica: int
    opened: bool = False

    async def __aenter__(self) -> _OpenHint:
        return self

    async def __aexit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, WalCorrupted) and not self.opened:  # say how to rebuild it
            text = str(exc).replace(" (see wipe_replica)", "")
            exc.args = (f"{text}; to rebuild it from its peers: "
                        f"cellmesh wipe {self.name}/{self.replica}",)


# ---------------------------------------------------------------- the runtime


def _role_name(role: Role, learner: bool) -> str:
    name = _ROLES.get(role.name, role.name.lower())
    return "learner" if learner and name == "follower" else name


@attrs.define(eq=False)
class ReplicaRuntime:
    """One running replica (see the module docstring)."""

    cell: StateMachineCell
    ctx: CellContext
    spec: ReplicaSpec
    nursery: trio.Nursery
    transport: MembraneTransport
    machine: ReplicaMachine
    node: RaftNode
    batcher: Batcher
    router: Router
    reads: ReadBarrier
    client: ClientSide
    election_timeout: float
    _leading: trio.Event = attrs.Factory(trio.Event)
    _changed: trio.Event = attrs.Factory(trio.Event)
    _peers: dict[int, Synapse] = attrs.Factory(dict)
    _peer_scopes: dict[int, trio.CancelScope] = attrs.Factory(dict)
    _peer_lock: trio.Lock = attrs.Factory(trio.Lock)
    _paths: dict[int, str] = attrs.Factory(dict)
    #: The group's client membrane, once serve_cell opened it.
    client_membrane: Membrane | None = None

    @property
    def replica(self) -> int:
        """This replica's id."""
        return self.spec.replica

    # -- the views the peer side and the root read ---------------------------

    def membership(self) -> Membership:
        """The configuration this replica has (the latest appended)."""
        st = self.node.status()
        return Membership(voters=st.voters, learners=st.learners)

    def stats(self) -> ReplicaStats:
        """This replica's :class:`ReplicaStats` now."""
        st = self.node.status()
        members = self.membership()
        # A learner in the configuration, or a joiner not yet made a voter (its
        # configuration may not name it yet): either way it does not vote.
        learner = st.id in members.learners or (st.joining and st.id not in members.voters)
        return ReplicaStats(
            replica=self.spec.replica,
            role=_role_name(st.role, learner),
            term=st.term,
            leader=None if st.leader is None else replica_id(st.leader),
            commit_index=st.commit,
            applied_index=st.applied,
            last_index=st.last_index,
            voters=sorted(replica_id(n) for n in members.voters),
            learners=sorted(replica_id(n) for n in members.learners),
        )

    def snapshot(self) -> tuple[int, bytes]:
        """(applied index, the replicated state's bytes), taken now."""
        return self.node.status().applied, self.machine.snapshot()

    # -- hooks for serve_cell -------------------------------------------------

    def client_handler(self, times: ServiceTimes, every: int) -> Handler:
        """The client membrane's dispatcher (sampled like a plain cell's)."""
        handlers = self.client.handlers()
        handlers[CellDown] = self.cell._deliver_cell_down
        return CellReceptors(handlers, times, every)

    def client_membrane_options(self) -> Mapping[str, Any]:
        """``open_membrane`` keywords for the client socket: sessions, the accept gate."""
        return {"sessions": True, "accept_gate": self.accept_gate}

    async def accept_gate(self) -> None:
        """Return once this replica leads (followers leave connections in the backlog)."""
        while not self._leading.is_set():
            await self._leading.wait()

    # -- changes -----------------------------------------------------------------

    async def wait_change(self, timeout: float) -> None:
        """Return when role/leader/config changed, or after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._changed.wait()

    async def wait_leader(self) -> None:
        """Return once some leader is known."""
        while self.node.status().leader is None:
            await self.wait_change(self.election_timeout)

    async def watch(self) -> None:
        """Track role changes: the accept gate, change waiters and stats to the root."""
        last: tuple[Any, ...] | None = None
        while True:
            st = self.node.status()
            members = self.membership()
            key = (st.role, st.term, st.leader, members)
            if key != last:
                last = key
                if st.role is Role.LEADER:
                    self._leading.set()
                elif self._leading.is_set():
                    self._leading = trio.Event()
                    if self.client_membrane is not None:
                        # Its clients move to the new leader (their calls in
                        # flight still finish, forwarded).
                        self.client_membrane.goaway("no longer the leader")
                self._changed.set()
                self._changed = trio.Event()
                await self.report()
            try:
                await self.node.wait_changed()
            except NodeStopped:
                return

    async def report_forever(self) -> None:
        """Send :class:`ReplicaStats` to the root every stats interval."""
        while True:
            await trio.sleep(STATS_INTERVAL)
            await self.report()

    async def report(self) -> None:
        """Send :class:`ReplicaStats` to the root now (if there is one)."""
        root = self.ctx.umbilical
        if root is not None and root.connected:
            with suppress(CellUnavailable):
                await root.signal(self.stats())

    # -- peers ---------------------------------------------------------------------

    def learn_address(self, replica: int, path: str) -> None:
        """A member's peer socket path (from the env, the log or a snapshot)."""
        if self._paths.get(replica) == path:
            return
        self._paths[replica] = path
        scope = self._peer_scopes.pop(replica, None)
        if scope is not None:
            scope.cancel()
            self._peers.pop(replica, None)
        if replica != self.spec.replica:
            self.transport.add_peer(node_id(replica), path)

    async def forward(self, replica: int, msg: Any) -> Any:
        """Call replica ``replica``'s peer socket with ``msg`` (CellUnavailable if down)."""
        syn = self._peers.get(replica)
        if syn is None:
            async with self._peer_lock:
                syn = self._peers.get(replica)
                if syn is None:
                    path = self._paths.get(replica)
                    if path is None:
                        raise CellUnavailable(
                            self.ctx.name, f"replica {replica}", "no known peer socket path"
                        )
                    syn = await self.nursery.start(self._hold_peer, replica, path)
        return await syn.fire(msg)

    async def _hold_peer(
        self, replica: int, path: str, *, task_status: trio.TaskStatus[Synapse]
    ) -> None:
        with trio.CancelScope() as scope:
            self._peer_scopes[replica] = scope
            try:
                async with Synapse.grow(
                    self.ctx.name, socket_path=path,
                    client_name=f"{self.ctx.name}/{self.spec.replica}",
                ) as syn:
                    self._peers[replica] = syn
                    task_status.started(syn)
                    await trio.sleep_forever()
            finally:
                if self._peer_scopes.get(replica) is scope:
                    del self._peer_scopes[replica]
                    self._peers.pop(replica, None)


@asynccontextmanager
async def open_replica_runtime(
    cell: StateMachineCell, ctx: CellContext
) -> AsyncIterator[ReplicaRuntime]:
    """Run the replica ``cell`` is (see the module docstring) for the block's duration."""
    spec = ReplicaSpec.from_env(ctx.env, ctx.data_dir)
    cls = type(cell)
    async with _OpenHint(ctx.name, spec.replica):
        bootstrap = await trio.to_thread.run_sync(prepare_data_dir, spec)
    me = node_id(spec.replica)
    limits = SessionLimits(
        ttl_ns=int(cls.session_ttl * 1e9),
        max_sessions=cls.max_sessions,
        max_results=cls.max_session_results,
        max_bytes=cls.max_result_bytes,
    )
    runtime: ReplicaRuntime | None = None

    def on_address(replica: int, path: str) -> None:
        if runtime is not None:
            runtime.learn_address(replica, path)
        else:
            early.append((replica, path))

    early: list[tuple[int, str]] = []
    machine = ReplicaMachine(
        cell, registry=PROTEINS, limits=limits,
        check=spec.check_determinism or cls.check_determinism, on_address=on_address,
    )
    options = NodeOptions(tick_interval=cls.tick_interval, snapshot_every=cls.snapshot_every)
    config = RaftConfig(id=me)
    election = cls.tick_interval * config.election_tick
    async with trio.open_nursery() as nursery:
        transport = MembraneTransport(
            me, nursery, client_name=f"{ctx.name}/{spec.replica}"
        )
        async with _OpenHint(ctx.name, spec.replica) as hint, open_raft_node(
            config,
            voters=[node_id(v) for v in bootstrap],
            directory=spec.data_dir / RAFT_DIR,
            transport=transport,
            state_machine=machine,
            options=options,
            run_sync=run_in_thread,
            join=spec.join,
        ) as node:
            hint.opened = True
            torn = node.torn_tail
            if torn is not None:  # a crash's unacknowledged tail, or a damaged file: say so
                print(f"{ctx.name}/{spec.replica}: the Raft log was cut at byte {torn.offset} "
                      f"of {torn.path.name} ({torn.dropped_bytes} bytes dropped: {torn.reason});"
                      " entries it held come back from the leader", flush=True)
            batcher = Batcher(node)
            holder: list[ReplicaRuntime] = []

            async def forward(replica: int, msg: Any) -> Any:
                return await holder[0].forward(replica, msg)

            async def wait_change(timeout: float) -> None:
                await holder[0].wait_change(timeout)

            async def wait_leader() -> None:
                await holder[0].wait_leader()

            router = Router(node, batcher, forward, wait_change, ctx.name)
            reads = ReadBarrier(node, wait_leader)
            client = ClientSide(
                cell=cell, name=ctx.name, registry=PROTEINS,
                submit=router.submit, read_barrier=reads.wait,
            )
            runtime = ReplicaRuntime(
                cell=cell, ctx=ctx, spec=spec, nursery=nursery, transport=transport,
                machine=machine, node=node, batcher=batcher, router=router, reads=reads,
                client=client, election_timeout=election,
            )
            holder.append(runtime)
            for replica, path in sorted(spec.peers.items()):
                runtime.learn_address(replica, path)
            for replica, path in early:
                runtime.learn_address(replica, path)
            peer_side = PeerSide(runtime, transport.on_packet)
            where: dict[str, Any] = (
                {"listen_fd": spec.peer_fd} if spec.peer_fd is not None
                else {"socket_path": spec.own_path, "socket_mode": 0o666}
            )
            async with open_membrane(
                ctx.name, _receptors(peer_side.handlers(Packet)), drain_grace=0, **where
            ):
                nursery.start_soon(batcher.run)
                nursery.start_soon(reads.run)
                nursery.start_soon(runtime.watch)
                nursery.start_soon(runtime.report_forever)
                try:
                    yield runtime
                finally:
                    nursery.cancel_scope.cancel()


def _receptors(handlers: dict[type, Handler]) -> Handler:
    return Receptors(handlers)


__all__ = ["IDENTITY", "RAFT_DIR", "ReplicaRuntime", "open_replica_runtime", "prepare_data_dir"]
