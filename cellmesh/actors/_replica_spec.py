"""A replica's part of the runtime env contract, validated (CELL_REPLICA_*).

Theory of operation
-------------------
The root starts each replica of a replicated cell like a plain cell, plus
(see the replica contract, docs/replicated.md):

``CELL_REPLICA_ID``        this replica's id (an integer >= 0)
``CELL_REPLICA_PEERS``     ``<i>=<path>,<k>=<path>,...``: every member's peer socket, own included
``CELL_REPLICA_BOOTSTRAP`` ``<i>,<k>,...``: the first voters (only read with an empty data dir)
``CELL_REPLICA_JOIN``      ``1``: start empty, as a member the leader will add
``CELL_LISTEN_FDS``        ``>= 2``: fd 3 is the group's client listener, fd 4 the peer listener
``CELL_DATA_DIR``          required: the WAL and snapshots live here
``CELL_REPLICA_CHECK``     ``1``: run the determinism check (tests)

Without an inherited peer listener (``CELL_LISTEN_FDS`` < 2, standalone
runs) the replica binds its own peer socket at its own path in
``CELL_REPLICA_PEERS``. :meth:`ReplicaSpec.from_env` raises
:class:`~cellmesh.ConfigError` naming the variable; the runtime turns that
into exit code 2. Raft node ids are replica ids plus one (Raft ids are
positive): :func:`node_id` and :func:`replica_id` convert.

``CELL_REPLICA_PEERS`` lists the group's members *now*, while
``CELL_REPLICA_BOOTSTRAP`` lists its *first* voters: once the membership has
changed (``replicas 1`` then ``replicas 3``: members 0, 3, 4 of a group
bootstrapped with 0, 1, 2) they disagree, and rightly so. A replica with
data ignores the bootstrap (its log and snapshot hold the configuration),
so the first voters are checked against the peers only when they are used:
by :meth:`ReplicaSpec.first_voters`, which only a replica starting
on an empty data dir does (``prepare_data_dir``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from ..errors import ConfigError

#: The first inherited fd under socket activation (as in the runtime).
FIRST_LISTEN_FD: Final = 3
#: At most this many replicas in a group (the manifest allows 1-7; joins add ids).
MAX_REPLICA_ID: Final = 1 << 20


def node_id(replica: int) -> int:
    """The Raft node id of replica ``replica``."""
    return replica + 1


def replica_id(node: int) -> int:
    """The replica id of Raft node ``node``."""
    return node - 1


def _replica(text: str, source: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_REPLICA_ID:
        raise ConfigError(source, f"{text!r} is not a replica id (an integer from 0)")
    return int(text)


def _ids(raw: str, source: str) -> tuple[int, ...]:
    ids = tuple(_replica(part, source) for part in raw.split(",") if part.strip())
    if len(set(ids)) != len(ids):
        raise ConfigError(source, f"{raw!r} lists a replica twice")
    return ids


def _peers(raw: str) -> dict[int, str]:
    source = "CELL_REPLICA_PEERS"
    peers: dict[int, str] = {}
    for part in raw.split(","):
        if not part:
            continue
        rid, sep, path = part.partition("=")
        if not sep or not path:
            raise ConfigError(source, f"{part!r} is not '<id>=<socket path>'")
        replica = _replica(rid, source)
        if replica in peers:
            raise ConfigError(source, f"replica {replica} appears twice")
        peers[replica] = path
    return peers


@attrs.frozen(kw_only=True)
class ReplicaSpec:
    """What a replica is told at start: who it is, its peers, its data and its fds."""

    replica: int
    peers: Mapping[int, str]
    #: ``CELL_REPLICA_BOOTSTRAP`` as given (ids, none twice), not checked against
    #: the peers: a replica with data never uses it (see :meth:`first_voters`).
    bootstrap: tuple[int, ...]
    join: bool
    peer_fd: int | None
    data_dir: Path
    check_determinism: bool = False

    @property
    def own_path(self) -> str:
        """This replica's own peer socket path."""
        return self.peers[self.replica]

    def first_voters(self) -> tuple[int, ...]:
        """The first voters, for a replica that bootstraps a new group (empty data dir).

        Raises :class:`ConfigError` naming ``CELL_REPLICA_BOOTSTRAP`` when a
        voter has no path in ``CELL_REPLICA_PEERS`` (a group that could never
        reach it). Called only where the bootstrap is used: a replica restarting
        from its own data keeps the configuration its log holds, whatever the
        group's membership has become since its bootstrap (module doc).
        """
        missing = [r for r in self.bootstrap if r not in self.peers]
        if missing:
            raise ConfigError(
                "CELL_REPLICA_BOOTSTRAP",
                f"names replica {missing[0]}, which CELL_REPLICA_PEERS has no path for "
                "(a new group's first voters must all be peers)",
            )
        return self.bootstrap

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path | None) -> ReplicaSpec:
        """Parse the env; :class:`ConfigError` names the first bad variable."""
        raw_id = env.get("CELL_REPLICA_ID")
        if raw_id is None or raw_id == "":
            raise ConfigError(
                "CELL_REPLICA_ID",
                "is not set: a ReplicatedCell runs as a replica of a group "
                "(give the cell `replicas = N` in the manifest)",
            )
        replica = _replica(raw_id, "CELL_REPLICA_ID")
        peers = _peers(env.get("CELL_REPLICA_PEERS", ""))
        if replica not in peers:
            raise ConfigError(
                "CELL_REPLICA_PEERS", f"has no path for this replica ({replica})"
            )
        join_raw = env.get("CELL_REPLICA_JOIN", "")
        if join_raw not in ("", "0", "1"):
            raise ConfigError("CELL_REPLICA_JOIN", f"must be 1 or 0, got {join_raw!r}")
        join = join_raw == "1"
        bootstrap = _ids(env.get("CELL_REPLICA_BOOTSTRAP", ""), "CELL_REPLICA_BOOTSTRAP")
        fds = env.get("CELL_LISTEN_FDS", "")
        peer_fd = None
        if fds not in ("", "0"):
            if not (fds.isascii() and fds.isdigit()):
                raise ConfigError("CELL_LISTEN_FDS", f"must be a number of fds, got {fds!r}")
            start = env.get("CELL_LISTEN_FDS_START", str(FIRST_LISTEN_FD))
            if not (start.isascii() and start.isdigit()):
                raise ConfigError("CELL_LISTEN_FDS_START", f"must be an fd number, got {start!r}")
            if int(fds) >= 2:
                peer_fd = int(start) + 1
        if data_dir is None:
            raise ConfigError(
                "CELL_DATA_DIR", "is not set: a replica keeps its log and snapshots there"
            )
        check = env.get("CELL_REPLICA_CHECK", "")
        if check not in ("", "0", "1"):
            raise ConfigError("CELL_REPLICA_CHECK", f"must be 1 or 0, got {check!r}")
        return cls(
            replica=replica,
            peers=peers,
            bootstrap=bootstrap,
            join=join,
            peer_fd=peer_fd,
            data_dir=data_dir,
            check_determinism=check == "1",
        )


__all__ = ["FIRST_LISTEN_FD", "ReplicaSpec", "node_id", "replica_id"]
