"""The values a cell is described by: environment, limits, secret refs, the spec.

Everything here is a frozen attrs value validated at construction, so a
backend never sees an environment key with ``=`` or a negative memory limit.
Validation failures raise :class:`~cellmesh.sandbox.errors.SandboxConfigError`
naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, Literal

import attrs

from .errors import SandboxConfigError

_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_SIZE: Final = 1 << 62
_SECRET_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def parse_size(text: str, *, source: str = "size") -> int:
    """Parse ``"256M"``, ``"1G"``, ``"4096"`` (binary units) into bytes; >0 required."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise SandboxConfigError(source, f"{text!r} is not a size like 256M, 1G or 65536")
    number = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
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


def _argv(value: Iterable[str]) -> tuple[str, ...]:
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
    ``argv`` runs inside the sandbox, ``env`` is the declared environment (the
    backend adds only the documented runtime variables). ``dna_dir`` is bound
    read-only, ``data_dir`` read-write; ``own_socket`` and ``granted_sockets``
    are socket files bound into ``/run/cell``; ``allow_net`` shares the host
    network (all of it -- there is no per-destination filter).
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
    allow_net: bool = False
    cell_id: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))

    def __attrs_post_init__(self) -> None:
        names = [s.name for s in self.secrets]
        if len(set(names)) != len(names):
            raise SandboxConfigError("secrets", "two secret refs share a name")
        for path in (self.dna_dir, self.data_dir, self.own_socket, *self.granted_sockets):
            if path is not None and not path.is_absolute():
                raise SandboxConfigError("cell spec", f"path {str(path)!r} must be absolute")


__all__ = ["CellSpec", "Limits", "SecretDelivery", "SecretRef", "WorkloadEnv", "parse_size"]
