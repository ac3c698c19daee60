"""Per-destination egress for bwrap cells: the grant plan and the host-side proxy.

A cell with :attr:`CellSpec.net_grants` keeps its private network namespace
(only ``lo``). Each grant ``host:port`` becomes a *route*:

* an address inside the cell: an IPv4 loopback literal (``127.0.0.1:5432``)
  is used as is; every other host (a name, any other IP literal) gets a
  loopback alias ``127.0.0.2``, ``127.0.0.3``, ... (one per distinct host,
  skipping addresses literal grants use). A read-only ``/etc/hosts`` inside
  maps each granted *name* to its alias (with ``/etc/nsswitch.conf`` saying
  ``hosts: files``: no DNS from inside); a non-loopback IP literal is
  reached at its alias, which ``CELL_NET_GRANTS`` lists
  (``host:port=alias:port`` separated by spaces) -- there is no
  ``CAP_NET_ADMIN`` inside to add the real address to ``lo``. The port is
  the granted one, except below 1024: no process in the cell may bind those
  (bwrap's ``--disable-userns`` runs it in a nested user namespace with no
  privilege over the cell's network namespace), so port ``p < 1024`` is
  served at ``10000 + p`` (``:443`` at ``:10443``), as ``CELL_NET_GRANTS``
  says;
* a Unix socket ``<runtime_dir>/net/<i>.sock`` served by this module's
  :class:`EgressProxy` and bound into the sandbox at
  ``/run/egress/<i>.sock``;
* a loopback listener inside the cell, run by the shim
  (:mod:`cellmesh.sandbox._netshim`, the sandbox's command), forwarding each
  accepted connection into that Unix socket.

The proxy is one thread per cell (a :class:`~._netshim.Switchboard`): on
each Unix connection it connects -- resolving the name on the host, at
every connection -- to exactly the route's ``host:port``, sends one status
byte, and splices. The destination is fixed per socket: nothing the cell
sends can choose another one. At most ``max_conns`` connections per cell are
relayed or being set up at once; more are reset. The resolve+connect runs
in a short-lived thread per connection (bounded by ``connect_timeout``), so
a slow resolver never stalls relayed bytes.

Permissions: the ``net`` dir is ``0700``. When bwrap runs as ``nobody``
(the root daemon case) every file in it is reached through the private
stand-in binds of :meth:`BwrapBackend._stage`, never by path, and the
sockets are handed to that uid (mode ``0600``), so no other host user can
connect to them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs

from ._netshim import STATUS_OK, Accept, Switchboard, reset_close
from ._spec import NetGrant
from .errors import SandboxConfigError, SandboxError

#: Where the proxy sockets appear inside the sandbox.
EGRESS_DIR_INSIDE: Final = "/run/egress"
#: Default bound on relayed (or connecting) connections per cell.
DEFAULT_MAX_CONNS: Final = 64
#: How long the proxy tries to reach a destination (resolve + connect).
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: ``/etc/nsswitch.conf`` inside a cell with grants: names come from /etc/hosts only.
NSSWITCH: Final = "hosts: files\n"
#: A granted port below 1024 is served inside the cell at this offset.
LOW_PORT_OFFSET: Final = 10000
_SHIM: Final = Path(__file__).with_name("_netshim.py")
_CLOSE_PATIENCE: Final = 5.0


@attrs.frozen(kw_only=True)
class Route:
    """How one grant reaches the cell: listen on ``inside:inside_port``, relay via
    ``socket_name``."""

    grant: NetGrant
    inside: str
    inside_port: int
    socket_name: str

    @property
    def inside_path(self) -> str:
        """The proxy socket's path inside the sandbox."""
        return f"{EGRESS_DIR_INSIDE}/{self.socket_name}"


def _loopback_v4(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return isinstance(addr, ipaddress.IPv4Address) and addr.is_loopback


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def plan_routes(grants: Sequence[NetGrant]) -> tuple[Route, ...]:
    """The route of each grant, in grant order (see module doc for the address rule)."""
    taken = {str(ipaddress.ip_address(g.host)) for g in grants if _loopback_v4(g.host)}
    aliases: dict[str, str] = {}
    following = int(ipaddress.IPv4Address("127.0.0.2"))
    routes: list[Route] = []
    for i, grant in enumerate(grants):
        if _loopback_v4(grant.host):
            inside = str(ipaddress.ip_address(grant.host))
        else:
            key = grant.host.lower()
            if key not in aliases:
                while str(ipaddress.IPv4Address(following)) in taken:
                    following += 1
                aliases[key] = str(ipaddress.IPv4Address(following))
                following += 1
            inside = aliases[key]
        port = grant.port if grant.port >= 1024 else LOW_PORT_OFFSET + grant.port
        if any((r.inside, r.inside_port) == (inside, port) for r in routes):
            where = f"{inside}:{port}"
            raise SandboxConfigError("net_grants", f"{grant} would be served at {where}, taken")
        routes.append(Route(grant=grant, inside=inside, inside_port=port, socket_name=f"{i}.sock"))
    return tuple(routes)


def hosts_file(routes: Sequence[Route]) -> str:
    """``/etc/hosts`` for the cell: each granted name at its alias; else localhost."""
    names: dict[str, str] = {}
    for route in routes:
        if _is_name(route.grant.host):
            names.setdefault(route.grant.host.lower(), route.inside)
    lines = ["# cellmesh: the names this cell is granted (see CELL_NET_GRANTS)"]
    if "localhost" not in names:
        lines.append("127.0.0.1\tlocalhost")
    lines += [f"{addr}\t{name}" for name, addr in names.items()]
    return "\n".join(lines) + "\n"


def grants_env(routes: Sequence[Route]) -> str:
    """``CELL_NET_GRANTS``: ``host:port=inside:port`` per grant, space separated."""
    return " ".join(f"{r.grant}={r.inside}:{r.inside_port}" for r in routes)


def shim_argv(python: str, routes: Sequence[Route], argv: Sequence[str]) -> list[str]:
    """The sandbox command that brings up the listeners and then execs ``argv``."""
    out = [python, "-I", "-S", str(_SHIM)]
    for route in routes:
        out += ["--map", f"{route.inside}:{route.inside_port}={route.inside_path}"]
    return [*out, "--", *argv]


@attrs.frozen(kw_only=True)
class EgressMounts:
    """What bwrap must mount for a cell's grants and the command it runs instead."""

    sockets: tuple[tuple[Path, str], ...]
    hosts: Path
    nsswitch: Path
    argv: tuple[str, ...]

    def host_paths(self) -> list[Path]:
        """Every host path bwrap binds (for staging)."""
        return [*(p for p, _ in self.sockets), self.hosts, self.nsswitch]


@attrs.define(eq=False)
class EgressProxy:
    """The host side of one cell's grants: sockets in ``net_dir`` and one relay thread.

    Start with :meth:`open`; :meth:`close` (idempotent) stops the thread,
    closes every relayed connection and removes ``net_dir``'s files.
    """

    cell_id: str
    net_dir: Path
    routes: tuple[Route, ...]
    _board: Switchboard
    _thread: threading.Thread
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    def open(
        cls,
        *,
        cell_id: str,
        net_dir: Path,
        grants: Sequence[NetGrant],
        owner_uid: int | None = None,
        max_conns: int = DEFAULT_MAX_CONNS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> EgressProxy:
        """Bind one socket per grant in ``net_dir`` (made ``0700``) and start the thread.

        ``owner_uid``: the host uid the cell runs as, when it is not ours (the
        sockets are handed to it).
        """
        routes = plan_routes(grants)
        board = Switchboard(max_pairs=max_conns)
        listeners: list[socket.socket] = []
        try:
            net_dir.mkdir(mode=0o700, exist_ok=True)
            for route in routes:
                path = net_dir / route.socket_name
                path.unlink(missing_ok=True)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listeners.append(sock)
                sock.bind(str(path))
                os.chmod(path, 0o600)
                if owner_uid is not None:
                    os.chown(path, owner_uid, -1)
                sock.listen(128)
            (net_dir / "hosts").write_text(hosts_file(routes))
            (net_dir / "nsswitch.conf").write_text(NSSWITCH)
            for name in ("hosts", "nsswitch.conf"):
                os.chmod(net_dir / name, 0o644)
        except OSError as exc:
            for sock in listeners:
                sock.close()
            raise SandboxError(
                f"cell {cell_id!r}: cannot set up its network grants: {exc}"
            ) from exc
        thread = threading.Thread(target=board.run, name=f"cellmesh-egress-{cell_id}", daemon=True)
        proxy = cls(
            cell_id=cell_id,
            net_dir=net_dir,
            routes=routes,
            board=board,
            thread=thread,
            connect_timeout=connect_timeout,
        )
        for sock, route in zip(listeners, routes, strict=True):
            board.listen(sock, proxy._acceptor(route))
        thread.start()
        return proxy

    def mounts(self, argv: Sequence[str], python: str) -> EgressMounts:
        """The binds and the wrapped command for a spawn running ``argv``."""
        return EgressMounts(
            sockets=tuple((self.net_dir / r.socket_name, r.inside_path) for r in self.routes),
            hosts=self.net_dir / "hosts",
            nsswitch=self.net_dir / "nsswitch.conf",
            argv=tuple(shim_argv(python, self.routes, argv)),
        )

    def close(self) -> list[str]:
        """Stop relaying, join the thread, remove the socket files; the removed paths."""
        if self._closed:
            return []
        self._closed = True
        self._board.stop()
        self._thread.join(_CLOSE_PATIENCE)
        removed: list[str] = []
        for name in (*(r.socket_name for r in self.routes), "hosts", "nsswitch.conf"):
            path = self.net_dir / name
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if self._thread.is_alive():
            raise SandboxError(f"cell {self.cell_id!r}: the egress thread did not stop")
        return removed

    # ---------------------------------------------------------------- relay

    def _acceptor(self, route: Route) -> Accept:
        def on_accept(conn: socket.socket) -> None:
            self._board.reserve()
            worker = threading.Thread(
                target=self._connect,
                args=(route, conn),
                name=f"cellmesh-egress-connect-{self.cell_id}",
                daemon=True,
            )
            worker.start()

        return on_accept

    def _connect(self, route: Route, conn: socket.socket) -> None:
        """Worker thread: reach exactly ``route.grant`` and hand the pair to the loop."""
        dest: socket.socket | None
        try:
            dest = socket.create_connection(
                (route.grant.host, route.grant.port), timeout=self.connect_timeout
            )
            dest.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            dest = None

        def finish() -> None:
            self._board.release()
            if dest is None:
                conn.close()  # no status byte: the shim resets the cell's connection
            else:
                self._board.add_pair(conn, dest, b_prefix=STATUS_OK)

        if not self._board.call_soon(finish):
            conn.close()
            if dest is not None:
                reset_close(dest)


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONNS",
    "EGRESS_DIR_INSIDE",
    "LOW_PORT_OFFSET",
    "NSSWITCH",
    "EgressMounts",
    "EgressProxy",
    "Route",
    "grants_env",
    "hosts_file",
    "plan_routes",
    "shim_argv",
]
