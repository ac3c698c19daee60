"""The values a cell is described by: environment, limits, secret refs, the spec.

Everything here is a frozen attrs value validated at construction, so a
backend never sees an environment key with ``=`` or a negative memory limit.
Validation failures raise :class:`~cellmesh.sandbox.errors.SandboxConfigError`
naming the field.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, Literal

import attrs

from .errors import SandboxConfigError

#: A number, then optionally a unit letter (then ``i`` and/or ``B``) or ``B`` alone: binary units.
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])i?B?|B?)\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_SIZE: Final = 1 << 62
_SECRET_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HOST_LABEL_RE: Final = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})$")
#: Most per-destination grants one cell may hold.
MAX_NET_GRANTS: Final = 64


def parse_size(text: str, *, source: str = "size") -> int:
    """Parse ``"256M"``, ``"256 MB"``, ``"1GiB"``, ``"4096"`` into bytes; >0 required.

    Units are binary whatever the spelling (``M`` = ``MB`` = ``MiB`` = 2**20).
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise SandboxConfigError(source, f"{text!r} is not a size like 256M, 1G or 65536")
    number = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]
    if not number < _MAX_SIZE:
        raise SandboxConfigError(source, f"{text!r} is larger than {_MAX_SIZE} bytes")
    value = int(number)
    if value <= 0:
        raise SandboxConfigError(source, f"{text!r} must be greater than zero")
    return value


def _check_env_pair(key: object, value: object) -> tuple[str, str]:
    if not isinstance(key, str) or not isinstance(value, str):
        raise SandboxConfigError("environment", f"{key!r}={value!r}: keys and values are str")
    if key == "":
        raise SandboxConfigError("environment", "an environment key is empty")
    if "=" in key:
        raise SandboxConfigError("environment", f"key {key!r} contains '='")
    if "\0" in key:
        raise SandboxConfigError("environment", f"key {key!r} contains NUL")
    if "\0" in value:
        raise SandboxConfigError("environment", f"the value of {key!r} contains NUL")
    return key, value


def _env_items(value: object) -> tuple[tuple[str, str], ...]:
    pairs: Iterable[object]
    if isinstance(value, Mapping):
        pairs = value.items()
    elif isinstance(value, Iterable):
        pairs = value
    else:
        raise SandboxConfigError("environment", "expected a mapping or (key, value) pairs")
    out: dict[str, str] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise SandboxConfigError("environment", f"{pair!r} is not a (key, value) pair")
        key, val = _check_env_pair(pair[0], pair[1])
        if key in out:
            raise SandboxConfigError("environment", f"key {key!r} is given twice")
        out[key] = val
    return tuple(out.items())


@attrs.frozen(kw_only=True)
class WorkloadEnv:
    """The exact environment a workload receives: nothing is inherited.

    Keys must be non-empty and free of ``=`` and NUL; values free of NUL; a key
    appears once. Build with ``WorkloadEnv(items={...})`` or grow one with
    :meth:`with_var` (returns a new value).
    """

    items: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_env_items)

    def with_var(self, key: str, value: str) -> WorkloadEnv:
        """Return a copy with ``key`` set (replacing an existing value)."""
        key, value = _check_env_pair(key, value)
        kept = tuple((k, v) for k, v in self.items if k != key)
        return WorkloadEnv(items=(*kept, (key, value)))

    def merged(self, other: Mapping[str, str]) -> WorkloadEnv:
        """Return a copy with every entry of ``other`` set (``other`` wins)."""
        env = self
        for key, value in other.items():
            env = env.with_var(key, value)
        return env

    def as_dict(self) -> dict[str, str]:
        """The environment as a plain dict (a copy)."""
        return dict(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


#: The largest limit of each kind a host can apply (the kernel refuses more):
#: memory 1 PiB, 4096 cores, PID_MAX_LIMIT tasks (the 64-bit kernel's ceiling),
#: descriptors the default fs.nr_open (an RLIMIT_NOFILE above it fails the exec).
LIMIT_MAXIMA: Final[dict[str, tuple[int, str]]] = {
    "memory": (1 << 50, "bytes (1 PiB)"),
    "cpu": (4096, "cores"),
    "pids": (4_194_304, "processes and threads"),
    "open_files": (1 << 20, "descriptors (the default fs.nr_open)"),
}
#: The smallest CPU quota cgroups enforce: 1 ms per 100 ms period.
MIN_CPU: Final = 0.01


@attrs.frozen(kw_only=True)
class Limits:
    """Per-cell resource limits; ``None`` means "not limited".

    ``memory`` bytes, ``cpu`` cores (0.5 = half a core), ``pids`` processes
    and threads, ``open_files`` descriptors. Which mechanism enforces each one
    on this host (cgroup v2, cgroup v1, rlimit, or nothing) is decided by
    :func:`cellmesh.sandbox.plan_limits` and reported, never assumed.
    """

    memory: int | None = None
    cpu: float | None = None
    pids: int | None = None
    open_files: int | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("memory", "cpu", "pids", "open_files"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise SandboxConfigError(f"limits.{name}", f"{value!r} must be a positive number")
        for name in ("memory", "pids", "open_files"):
            if isinstance(getattr(self, name), float):
                raise SandboxConfigError(f"limits.{name}", "must be an integer")
        for name, (most, what) in LIMIT_MAXIMA.items():
            value = getattr(self, name)
            if value is not None and math.isnan(value):
                raise SandboxConfigError(f"limits.{name}", f"{name} is not a number (NaN)")
            if value is not None and value > most:
                raise SandboxConfigError(
                    f"limits.{name}", f"{name} = {value!r} is more than any host applies: "
                    f"at most {most:,} {what}"
                )
        if self.cpu is not None and self.cpu < MIN_CPU:
            raise SandboxConfigError(
                "limits.cpu", f"cpu = {self.cpu!r} is less than the cgroup CPU controller "
                f"can enforce: at least {MIN_CPU} cores"
            )


#: How a resolved secret reaches the cell.
SecretDelivery = Literal["env", "file"]


@attrs.frozen(kw_only=True)
class SecretRef:
    """A cell's reference to a secret: the broker ``key`` and how it is delivered.

    ``name`` is the environment variable (``deliver="env"``) or the file name
    under ``/run/secrets`` (``deliver="file"``) inside the sandbox. ``ttl`` is
    the number of seconds a resolved value stays valid.
    """

    name: str
    key: str
    deliver: SecretDelivery = "env"
    ttl: float = 300.0

    def __attrs_post_init__(self) -> None:
        if not _SECRET_NAME_RE.match(self.name):
            raise SandboxConfigError(
                "secret name", f"{self.name!r} must match {_SECRET_NAME_RE.pattern}"
            )
        if not self.key or "\0" in self.key or "/" in self.key:
            raise SandboxConfigError("secret key", f"{self.key!r} must be non-empty, no '/' or NUL")
        if self.deliver not in ("env", "file"):
            raise SandboxConfigError("secret deliver", f"{self.deliver!r} is not 'env' or 'file'")
        if not self.ttl > 0:
            raise SandboxConfigError("secret ttl", f"{self.ttl!r} must be positive")


def _check_host(host: object) -> None:
    if not isinstance(host, str) or not host:
        raise SandboxConfigError("net grant", f"host {host!r} must be a non-empty str")
    if ":" in host or host.replace(".", "").isdigit():
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise SandboxConfigError("net grant", f"{host!r} is not an IP address") from None
        # An IPv4-mapped IPv6 address reaches its IPv4 address: judge that one.
        mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        if any(a is not None and (a.is_unspecified or a.is_multicast) for a in (addr, mapped)):
            raise SandboxConfigError("net grant", f"{host!r} is not a destination address")
        return
    if len(host) > 253 or not all(_HOST_LABEL_RE.match(label) for label in host.split(".")):
        raise SandboxConfigError("net grant", f"{host!r} is not a valid host name")


@attrs.frozen(kw_only=True)
class NetGrant:
    """One TCP destination a cell may connect to: exactly ``host`` at ``port``.

    ``host`` is a DNS name (resolved on the host side, at each connection) or
    an IPv4/IPv6 literal; ``port`` is 1..65535. ``str(grant)`` is
    ``host:port`` (``[v6]:port``), which :meth:`parse` reads back.
    """

    host: str
    port: int

    def __attrs_post_init__(self) -> None:
        _check_host(self.host)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise SandboxConfigError("net grant", f"port {self.port!r} must be an int")
        if not 0 < self.port < 65536:
            raise SandboxConfigError("net grant", f"port {self.port} is not in 1..65535")

    @classmethod
    def parse(cls, text: str, *, source: str = "net grant") -> NetGrant:
        """``"db.internal:5432"``, ``"127.0.0.1:80"`` or ``"[::1]:80"`` as a grant."""
        if not isinstance(text, str):
            raise SandboxConfigError(source, f"{text!r} is not a HOST:PORT string")
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise SandboxConfigError(source, f"{text!r}: write an IPv6 host as [addr]:port")
        if not sep or not port.isascii() or not port.isdigit():
            raise SandboxConfigError(source, f"{text!r} is not HOST:PORT")
        try:
            return cls(host=host, port=int(port))
        except SandboxConfigError as exc:
            raise SandboxConfigError(source, f"{text!r}: {exc.problem}") from None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _argv(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _grants(value: Iterable[NetGrant]) -> tuple[NetGrant, ...]:
    return tuple(value)


def _paths(value: Iterable[Path | str]) -> tuple[Path, ...]:
    return tuple(Path(p) for p in value)


def _opt_path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class CellSpec:
    """Everything a backend needs to isolate and start one cell.

    ``name`` becomes the hostname ``cell-<name>`` and the log/event file names;
    ``cell_id`` (default: ``name``) is the backend's tracking key, distinct
    from the name so two versions of a cell can overlap during a hot swap.
    ``log_name`` (default: ``name``) is the name its lifecycle events (and
    default log file) are filed under: the replicas of a replicated cell share
    ``name`` (``CELL_NAME``) but each has its own log (``X..1``).
    ``argv`` runs inside the sandbox, ``env`` is the declared environment (the
    backend adds only the documented runtime variables). ``dna_dir`` is bound
    read-only, ``data_dir`` read-write; ``own_socket`` and ``granted_sockets``
    are socket files bound into ``/run/cell``; ``children_dir`` (a directory
    the root fills with the sockets of the cell's dynamic children while it
    runs) is bound read-only at ``/run/cell/children``; ``peers_dir`` (the
    directory of a replicated cell's peer sockets, filled by the root while the
    group runs) likewise at ``/run/cell/peers``; ``allow_net`` shares the host
    network (all of it, unfiltered). ``net_grants`` instead keeps the cell's
    private network and lets it open TCP connections to exactly the granted
    destinations (through a host-side proxy; see
    :mod:`cellmesh.sandbox._net`); the two are mutually exclusive, and only a
    backend with its own network namespace (bwrap) accepts grants.
    """

    name: str
    argv: tuple[str, ...] = attrs.field(converter=_argv)
    env: WorkloadEnv = attrs.field(factory=WorkloadEnv)
    limits: Limits = attrs.field(factory=Limits)
    secrets: tuple[SecretRef, ...] = attrs.field(default=(), converter=tuple)
    dna_dir: Path | None = attrs.field(default=None, converter=_opt_path)
    data_dir: Path | None = attrs.field(default=None, converter=_opt_path)
    own_socket: Path | None = attrs.field(default=None, converter=_opt_path)
    granted_sockets: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    children_dir: Path | None = attrs.field(default=None, converter=_opt_path)
    peers_dir: Path | None = attrs.field(default=None, converter=_opt_path)
    allow_net: bool = False
    net_grants: tuple[NetGrant, ...] = attrs.field(default=(), converter=_grants)
    cell_id: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))
    log_name: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))

    def __attrs_post_init__(self) -> None:
        names = [s.name for s in self.secrets]
        if len(set(names)) != len(names):
            raise SandboxConfigError("secrets", "two secret refs share a name")
        for path in (
            self.dna_dir, self.data_dir, self.own_socket, self.children_dir, self.peers_dir,
            *self.granted_sockets,
        ):
            if path is not None and not path.is_absolute():
                raise SandboxConfigError("cell spec", f"path {str(path)!r} must be absolute")
        self._check_grants()

    def _check_grants(self) -> None:
        if not self.net_grants:
            return
        if self.allow_net:
            raise SandboxConfigError(
                "net_grants", "allow_net shares the whole host network; it excludes net_grants"
            )
        if len(self.net_grants) > MAX_NET_GRANTS:
            raise SandboxConfigError("net_grants", f"more than {MAX_NET_GRANTS} grants")
        seen: set[tuple[str, int]] = set()
        for grant in self.net_grants:
            if not isinstance(grant, NetGrant):
                raise SandboxConfigError("net_grants", f"{grant!r} is not a NetGrant")
            key = (grant.host.lower(), grant.port)
            if key in seen:
                raise SandboxConfigError("net_grants", f"{grant} is granted twice")
            seen.add(key)


__all__ = [
    "MAX_NET_GRANTS",
    "CellSpec",
    "Limits",
    "NetGrant",
    "SecretDelivery",
    "SecretRef",
    "WorkloadEnv",
    "parse_size",
]
