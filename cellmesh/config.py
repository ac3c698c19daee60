"""Runtime paths and environment variables, resolved once into a frozen value.

Nothing here reads the environment at import time: :meth:`Paths.from_env`
takes the mapping to read (``os.environ`` by default), so tests and the root
can resolve paths for any environment without touching globals.

Environment variables (all optional):

``CELL_HOME``        base directory, default ``~/.cell``
``CELL_SOCKET_DIR``  membrane sockets, default ``$CELL_HOME/run`` (created 0700)
``CELL_UMBILICAL``   root control socket, default ``$CELL_SOCKET_DIR/mitosis.sock``

Read by the sandbox layer (:mod:`cellmesh.sandbox`, see docs/security.md):

``CELL_SANDBOX``        ``auto`` (default), ``bwrap``, ``host`` or ``stub``
``CELL_SECRETS``        secret broker: ``memory`` (default), ``env`` or ``file``
``CELL_SECRETS_DIR``    where the ``file`` broker reads secrets from
``CELL_CGROUP_PARENT``  optional cgroup v2 parent for per-cell limit leaves
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from .errors import ConfigError

#: Cell names become file names and hostnames: keep them to a safe alphabet.
CELL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

#: ``sun_path`` is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH: Final = 107

#: Exit code a cell runtime uses when it dies of MemoryError under a memory
#: limit (128 + SIGKILL, what a shell reports for an OOM-killed child). Shared
#: by the runtime (which exits with it) and the sandbox (which reports it as a
#: memory-limit kill); kept here so the runtime need not import the sandbox.
MEMORY_LIMIT_EXIT_CODE: Final = 137


def check_cell_name(name: object, *, source: str = "cell name") -> str:
    """Return ``name`` if it is a valid cell name, else raise :class:`ConfigError`.

    Valid: 1-63 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or
    digit (so it is a safe file name and hostname component).
    """
    if not isinstance(name, str) or not CELL_NAME_RE.match(name):
        raise ConfigError(
            source,
            f"{name!r} is not a valid cell name "
            "(1-63 of A-Z a-z 0-9 _ . -, starting with a letter or digit)",
        )
    return name


#: Names the root keeps for itself: its control socket is ``mitosis.sock``.
ROOT_RESERVED_NAMES: Final = ("mitosis",)


def check_mesh_cell_name(name: object, *, source: str = "cell name") -> str:
    """Return ``name`` if the root can run a cell of that name, else raise :class:`ConfigError`.

    The one rule shared by the manifest (at load, with the key named) and the
    root (at run time, for dynamic children and control-API spawns): a valid
    :func:`check_cell_name`, without ``..`` (the root names a cell's second
    process ``NAME..b``, so ``a`` and ``a..b`` would collide) and not one of
    :data:`ROOT_RESERVED_NAMES`.
    """
    check_cell_name(name, source=source)
    assert isinstance(name, str)
    if ".." in name:
        raise ConfigError(
            source, f"{name!r}: '..' is reserved in cell names (the root's process ids use it)"
        )
    if name in ROOT_RESERVED_NAMES:
        raise ConfigError(source, f"{name!r} is reserved")
    return name


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ConfigError."""
    if type(value) is not int or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    return value


#: The longest duration :func:`check_seconds` takes: a year (longer ones overflow
#: the clocks and system calls they end up in, or never end).
MAX_SECONDS: Final = 365 * 24 * 3600


def check_seconds(name: str, value: object) -> float:
    """Return ``value`` as float if it is a number of seconds in (0, :data:`MAX_SECONDS`]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(name, f"must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(name, f"must be a positive, finite number of seconds, got {value!r}")
    if value > MAX_SECONDS:
        raise ConfigError(name, f"must be at most {MAX_SECONDS} seconds (a year), got {value!r}")
    return float(value)


def env_path(env: Mapping[str, str], key: str) -> Path | None:
    """The absolute path in ``env[key]``; None when unset or empty; ConfigError naming ``key``."""
    value = env.get(key)
    if value is None or value == "":
        return None
    if "\0" in value:
        raise ConfigError(key, "contains a NUL byte")
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(key, f"must be an absolute path, got {value!r}")
    return path


@attrs.frozen(kw_only=True)
class Paths:
    """Where cellmesh keeps sockets, caches, data and logs on this host."""

    home: Path
    socket_dir: Path
    umbilical: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        """Resolve the paths from ``env`` (default: ``os.environ``).

        Raises :class:`ConfigError` naming the variable when a value is not an
        absolute path or contains NUL.
        """
        if env is None:
            env = os.environ
        home = env_path(env, "CELL_HOME") or Path("~/.cell").expanduser()
        socket_dir = env_path(env, "CELL_SOCKET_DIR") or home / "run"
        umbilical = env_path(env, "CELL_UMBILICAL") or socket_dir / "mitosis.sock"
        return cls(home=home, socket_dir=socket_dir, umbilical=umbilical)

    @property
    def owner_tag(self) -> str:
        """A short tag of :attr:`socket_dir` (which one root at a time owns): the names
        of the host-wide traces a root's cells leave (cgroup leaves, stage dirs
        under the temp dir) carry it, so a root starting after a crash finds its
        predecessor's leftovers and never another root's."""
        digest = hashlib.sha256(os.fsencode(self.socket_dir.resolve())).hexdigest()
        return digest[:10]

    @property
    def cache_dir(self) -> Path:
        """Content-addressed DNA cache."""
        return self.home / "cache"

    @property
    def data_dir(self) -> Path:
        """Per-cell durable state."""
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        """Captured cell output and lifecycle events."""
        return self.home / "logs"

    def socket_path(self, name: str) -> Path:
        """The membrane socket of cell ``name``; validates the name and path length."""
        check_cell_name(name)
        return _short_enough(self.socket_dir / f"{name}.sock")

    def cell_umbilical(self, name: str) -> Path:
        """The umbilical socket the root binds for cell ``name``; validates the path length."""
        check_cell_name(name)
        return _short_enough(self.socket_dir / ".umbilical" / name / "mitosis.sock")

    def replica_peers(self, group: str) -> Path:
        """The directory of replicated cell ``group``'s peer sockets (bound into its replicas)."""
        check_cell_name(group)
        return self.socket_dir / ".replicas" / group

    def replica_peer(self, group: str, replica: int) -> Path:
        """Replica ``replica``'s peer socket in :meth:`replica_peers`; validates the path length."""
        return _short_enough(self.replica_peers(group) / f"{replica}.sock")


def _short_enough(path: Path) -> Path:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError(
            "CELL_SOCKET_DIR",
            f"socket path {str(path)!r} is longer than the {MAX_SOCKET_PATH}-byte "
            "limit of Unix sockets; choose a shorter directory",
        )
    return path


def check_owned_dir(path: Path, *, create: bool = True) -> Path:
    """Create ``path`` (and parents) if needed, mode 0700, and check it is safely ours.

    Refuses (:class:`ConfigError` naming the path and what is wrong) a
    symlink, a non-directory, a directory owned by another user, and one that
    group or others may write: whoever can write in a directory of ours can
    plant a symlink or a file there for the root to follow, chown or bind.
    """
    if create:
        with contextlib.suppress(FileExistsError):  # not a directory: said below
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be checked: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(str(path), "is a symlink; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(str(path), "is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(str(path), f"is owned by uid {st.st_uid}, not by us ({os.getuid()})")
    if st.st_mode & 0o022:
        raise ConfigError(
            str(path),
            f"is writable by {'group and others' if st.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); make it 0700 (chmod go-w)",
        )
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed, mode 0700, and check ownership.

    As :func:`check_owned_dir` (refuses a symlink, another owner, group or
    world write access), and takes away the read and search bits of group
    and others: sockets in it must be reachable by no one else.
    """
    check_owned_dir(path)
    if path.lstat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def ensure_home(paths: Paths) -> None:
    """Create and check ``CELL_HOME`` and its run (socket), data, cache and logs directories.

    Each must be ours, not a symlink, not writable by group or others
    (:func:`check_owned_dir`); the socket directory is also made 0700. The
    root calls this before it touches anything under them.
    """
    for path in (paths.home, paths.socket_dir, paths.data_dir, paths.cache_dir, paths.log_dir):
        try:
            if path == paths.socket_dir:
                ensure_private_dir(path)
            else:
                check_owned_dir(path)
        except OSError as exc:  # a file in a parent's place, a read-only or pseudo file system
            raise ConfigError(str(path), f"cannot be created: {exc.strerror or exc}") from None
