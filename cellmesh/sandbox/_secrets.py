"""Secret brokers: resolve a cell's secret refs at spawn, revoke them at teardown.

Theory of operation. A broker turns a :class:`SecretRef` into a
:class:`Secret` whose value lives in a ``bytearray`` (zeroable, unlike
``bytes``/``str``) and which expires after the ref's TTL. Every resolved
secret is held in a row keyed by cell id; :meth:`SecretBroker.revoke_for_cell`
zeroes and drops every row of that cell (the backend calls it at destroy).

Delivery into the sandbox is the backend's job: ``file`` secrets are written
to a memfd (anonymous memory) that bwrap copies into the cell's private tmpfs
at ``/run/secrets/<name>`` (the host backend passes the memfd itself); ``env``
secrets become environment variables of the cell. Neither touches host disk.
``env`` delivery necessarily makes an immutable copy for ``execve``; prefer
``file`` for long-lived credentials.

Brokers: ``memory`` (values registered in-process with :meth:`put`), ``env``
(values read from ``CELL_SECRET_<KEY>`` of a given mapping at resolve time),
``file`` (values read from ``<dir>/<key>``, a directory only we can read).
Selected by ``CELL_SECRETS`` through :func:`select_broker`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Protocol

import attrs

from ._spec import SecretRef
from .errors import SandboxConfigError, SecretUnavailable

BROKER_NAMES: Final = ("memory", "env", "file")
_MAX_SECRET: Final = 1 << 20


@attrs.define(eq=False)
class Secret:
    """A resolved secret value, zeroed on :meth:`zero`; never printed."""

    ref: SecretRef
    _value: bytearray = attrs.field(repr=False)
    expires_at: float

    @property
    def value(self) -> bytearray:
        """The live buffer (do not keep references beyond the spawn)."""
        return self._value

    @property
    def zeroed(self) -> bool:
        """True once :meth:`zero` ran (the buffer is then empty)."""
        return len(self._value) == 0

    def zero(self) -> None:
        """Overwrite the buffer with zeros and empty it."""
        for i in range(len(self._value)):
            self._value[i] = 0
        del self._value[:]


class SecretBroker(Protocol):
    """Resolves secret refs for a cell and revokes everything held for it."""

    name: str

    def resolve(self, cell_id: str, ref: SecretRef) -> Secret:
        """Return a fresh, TTL-bound secret for ``cell_id`` (raises SecretUnavailable)."""
        ...

    def revoke_for_cell(self, cell_id: str) -> int:
        """Zero and drop every secret held for ``cell_id``; return how many."""
        ...

    def held_for(self, cell_id: str) -> tuple[str, ...]:
        """The keys currently held (unexpired, unrevoked) for ``cell_id``."""
        ...


@attrs.define(eq=False)
class _Rows:
    """Per-cell rows of resolved secrets, shared by every broker."""

    clock: Callable[[], float]
    rows: dict[str, list[Secret]] = attrs.Factory(dict)

    def hold(self, cell_id: str, ref: SecretRef, value: bytearray) -> Secret:
        if len(value) > _MAX_SECRET:
            raise SecretUnavailable("broker", ref.key, f"larger than {_MAX_SECRET} bytes")
        secret = Secret(ref, value, self.clock() + ref.ttl)
        self.rows.setdefault(cell_id, []).append(secret)
        self.expire()
        return secret

    def expire(self) -> None:
        now = self.clock()
        for cell_id in list(self.rows):
            live = []
            for secret in self.rows[cell_id]:
                if secret.expires_at <= now:
                    secret.zero()
                else:
                    live.append(secret)
            if live:
                self.rows[cell_id] = live
            else:
                del self.rows[cell_id]

    def revoke(self, cell_id: str) -> int:
        held = self.rows.pop(cell_id, [])
        for secret in held:
            secret.zero()
        return len(held)

    def keys(self, cell_id: str) -> tuple[str, ...]:
        self.expire()
        return tuple(s.ref.key for s in self.rows.get(cell_id, []))


@attrs.define(eq=False)
class MemorySecretBroker:
    """Secrets registered in-process with :meth:`put` (the default broker)."""

    name: str = "memory"
    _clock: Callable[[], float] = time.monotonic
    _store: dict[str, bytearray] = attrs.field(factory=dict, repr=False)
    _rows: _Rows = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rows = _Rows(self._clock)

    def put(self, key: str, value: bytes | bytearray) -> None:
        """Register (or replace, zeroing the old copy) the value of ``key``."""
        old = self._store.pop(key, None)
        if old is not None:
            old[:] = bytes(len(old))
        self._store[key] = bytearray(value)

    def resolve(self, cell_id: str, ref: SecretRef) -> Secret:
        """Copy the registered value into a new TTL-bound secret of ``cell_id``."""
        stored = self._store.get(ref.key)
        if stored is None:
            raise SecretUnavailable(self.name, ref.key, "no such key")
        return self._rows.hold(cell_id, ref, bytearray(stored))

    def revoke_for_cell(self, cell_id: str) -> int:
        """Zero and drop every secret held for ``cell_id``."""
        return self._rows.revoke(cell_id)

    def held_for(self, cell_id: str) -> tuple[str, ...]:
        """Keys held for ``cell_id``."""
        return self._rows.keys(cell_id)


@attrs.define(eq=False)
class EnvSecretBroker:
    """Secrets read from ``CELL_SECRET_<KEY>`` of ``environ`` at resolve time."""

    environ: Mapping[str, str] = attrs.field(repr=False)
    name: str = "env"
    _clock: Callable[[], float] = time.monotonic
    _rows: _Rows = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rows = _Rows(self._clock)

    def resolve(self, cell_id: str, ref: SecretRef) -> Secret:
        """Read ``CELL_SECRET_<KEY>`` (key upper-cased, ``-``/``.`` as ``_``)."""
        var = "CELL_SECRET_" + ref.key.upper().replace("-", "_").replace(".", "_")
        raw = self.environ.get(var)
        if raw is None:
            raise SecretUnavailable(self.name, ref.key, f"{var} is not set")
        return self._rows.hold(cell_id, ref, bytearray(raw, "utf-8"))

    def revoke_for_cell(self, cell_id: str) -> int:
        """Zero and drop every secret held for ``cell_id``."""
        return self._rows.revoke(cell_id)

    def held_for(self, cell_id: str) -> tuple[str, ...]:
        """Keys held for ``cell_id``."""
        return self._rows.keys(cell_id)


@attrs.define(eq=False)
class FileSecretBroker:
    """Secrets read from ``<directory>/<key>``; the directory must be private (0700-ish)."""

    directory: Path
    name: str = "file"
    _clock: Callable[[], float] = time.monotonic
    _rows: _Rows = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rows = _Rows(self._clock)

    def resolve(self, cell_id: str, ref: SecretRef) -> Secret:
        """Read the file ``<directory>/<key>`` into a zeroable buffer."""
        try:
            st = self.directory.stat()
        except OSError as exc:
            raise SecretUnavailable(self.name, ref.key, f"{self.directory}: {exc}") from exc
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH):
            raise SecretUnavailable(
                self.name, ref.key, f"{self.directory} is readable or writable by others"
            )
        buf = bytearray(_MAX_SECRET + 1)
        try:
            fd = os.open(self.directory / ref.key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SecretUnavailable(self.name, ref.key, os.strerror(exc.errno or 0)) from exc
        try:
            n = os.readv(fd, [buf])
        finally:
            os.close(fd)
        value = bytearray(buf[:n])
        buf[:] = bytes(len(buf))
        return self._rows.hold(cell_id, ref, value)

    def revoke_for_cell(self, cell_id: str) -> int:
        """Zero and drop every secret held for ``cell_id``."""
        return self._rows.revoke(cell_id)

    def held_for(self, cell_id: str) -> tuple[str, ...]:
        """Keys held for ``cell_id``."""
        return self._rows.keys(cell_id)


def select_broker(env: Mapping[str, str] | None = None) -> SecretBroker:
    """Build the broker named by ``CELL_SECRETS`` (default ``memory``).

    ``file`` reads ``CELL_SECRETS_DIR``. Any other value is a
    :class:`SandboxConfigError` listing the valid ones.
    """
    env = os.environ if env is None else env
    choice = env.get("CELL_SECRETS", "") or "memory"
    if choice == "memory":
        return MemorySecretBroker()
    if choice == "env":
        return EnvSecretBroker(environ=env)
    if choice == "file":
        directory = env.get("CELL_SECRETS_DIR", "")
        if not directory.startswith("/"):
            raise SandboxConfigError("CELL_SECRETS_DIR", "must be an absolute directory path")
        return FileSecretBroker(directory=Path(directory))
    raise SandboxConfigError("CELL_SECRETS", f"{choice!r} is not one of {', '.join(BROKER_NAMES)}")


__all__ = [
    "BROKER_NAMES",
    "EnvSecretBroker",
    "FileSecretBroker",
    "MemorySecretBroker",
    "Secret",
    "SecretBroker",
    "select_broker",
]
