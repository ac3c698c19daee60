"""``cellmesh replicas`` and ``cellmesh wipe``: change a replicated cell's members, rebuild one.

Both are control requests to the running root (``ChangeReplicas``,
``WipeReplica``); the root does the work one server at a time and answers
when it is done (docs/root.md, "Replicated cells"). They can take a while: a
new replica must catch up before it is a voter.
"""

from __future__ import annotations

import cyclopts
import trio

from ..actors.control import Ack, ChangeReplicas, WipeReplica
from ..actors.membership import parse_replica_name
from ..config import Paths, check_cell_name
from ..errors import ConfigError
from ._client import control_call


def check_target(name: str, *, source: str = "NAME") -> str:
    """A cell name, or a replica's ``X/i``; :class:`ConfigError` otherwise."""
    replica = parse_replica_name(name)
    check_cell_name(replica[0] if replica is not None else name, source=source)
    return name


def _ack(reply: object, command: str) -> int:
    if not isinstance(reply, Ack):
        raise ConfigError(command, f"unexpected reply {reply!r}")
    print(f"cellmesh: {reply.text}")
    return 0


def replicas(name: str, count: int, /) -> int:
    """Grow or shrink a replicated cell to COUNT replicas, one server at a time.

    Added replicas get new ids and join as learners, promoted to voters once
    caught up; shrinking removes the highest ids first, the leader last (after
    handing over its leadership). Returns when the group has COUNT replicas.
    The next `up` applies the manifest's `replicas` again (a `reload` when it
    changed): change it too to keep the new count.

    Parameters
    ----------
    name
        The replicated cell.
    count
        The new number of replicas: odd, 1 to 7.
    """
    check_cell_name(name, source="NAME")
    if not (1 <= count <= 7 and count % 2 == 1):
        raise ConfigError("COUNT", f"expected an odd number from 1 to 7, got {count}")
    reply = trio.run(control_call, Paths.from_env(), ChangeReplicas(name=name, count=count))
    return _ack(reply, "replicas")


def wipe(name: str, /) -> int:
    """Rebuild one replica from its peers: stop it, delete its data, re-add it.

    For a replica whose data is damaged (it refuses to start, see `cellmesh
    status`) or lost. The root removes it from the group, wipes its data
    directory, starts it empty and has the leader add it back; it returns once
    the replica is a voter again. Refused when the other replicas could not
    carry the group meanwhile (no quorum without it), and for a group's only
    replica.

    Parameters
    ----------
    name
        The replica, as NAME/ID (ledger/1).
    """
    replica = parse_replica_name(name)
    if replica is None:
        raise ConfigError("NAME", f"expected a replica like ledger/1, got {name!r}")
    check_cell_name(replica[0], source="NAME")
    reply = trio.run(control_call, Paths.from_env(), WipeReplica(name=name))
    return _ack(reply, "wipe")


def register(app: cyclopts.App) -> None:
    """Add ``replicas`` and ``wipe`` to ``app``."""
    app.command(replicas)
    app.command(wipe)


__all__ = ["check_target", "register", "replicas", "wipe"]
