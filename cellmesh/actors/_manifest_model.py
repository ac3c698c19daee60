"""The manifest's values: what a validated cellmesh.toml resolves into.

Frozen declarations (:class:`CellDecl`, :class:`SupervisorDecl`,
:class:`RootDecl`, :class:`Manifest`), the :class:`ManifestError` every
problem raises, the public limits the validation enforces, and the helpers
that name a key path (``cells."a b".limits``) and describe a bad value. The
parser lives in :mod:`._manifest_reader`; the public entry points in
:mod:`cellmesh.actors.manifest`.
"""

from __future__ import annotations

import re
import stat
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, TypeAlias

import attrs

from ..config import Paths
from ..errors import ConfigError
from ..sandbox import Limits, NetGrant, SecretRef
from .policy import Backoff, Restart, Shutdown, Strategy
from .watches import DEFAULT_MAX_LINKS, DEFAULT_MAX_MONITORS

#: Name of the top supervisor (and so reserved for it).
TOP_SUPERVISOR: Final = "root"

#: Names no cell, template or supervisor may take (the root daemon's own).
RESERVED_NAMES: Final = ("mitosis", TOP_SUPERVISOR)

#: The smallest limits a cell's Python process starts and serves under, in both
#: sandboxes (measured: the interpreter, trio and the runtime need about 24 MiB
#: of data; bwrap and the interpreter 3 processes; the spawn and the runtime
#: about 30 descriptors). Smaller values are refused: the cell could never start.
MIN_CELL_MEMORY: Final = 32 << 20
MIN_CELL_PIDS: Final = 4
MIN_CELL_OPEN_FILES: Final = 32
#: Most replicas a replicated cell may declare (odd counts from 1).
MAX_REPLICAS: Final = 7
#: Longest name of a replicated cell: its replicas' logs are filed as ``<name>..<id>``,
#: which must stay a valid cell name (63 characters) for ids up to 14 digits.
MAX_REPLICATED_NAME: Final = 47
#: Default of ``[root] celldown_concurrency`` (the value lives here: the
#: manifest sits below the root's delivery module).
DEFAULT_CELLDOWN_CONCURRENCY: Final = 8
DEFAULT_LOG_MAX_BYTES: Final = 10 << 20
DEFAULT_SWAP_MAX_STATE: Final = 64 * 1024 * 1024
#: Default of ``[root] dna_cache_keep``: DNA cache entries no cell needs that are kept
#: (the most recently used), so a redeploy of a recent version does not rebuild it.
DEFAULT_DNA_CACHE_KEEP: Final = 5
#: The largest ``[root] dna_cache_keep`` (an entry is ~50 kB; a cache is not an archive).
MAX_DNA_CACHE_KEEP: Final = 10_000
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_TYPES: Final[Mapping[type, str]] = {
    bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table",
}  # fmt: skip


class ManifestError(ConfigError):
    """The manifest is invalid: ``file``, the ``key`` path at fault, and the ``problem``.

    ``str()`` is ``"<file>: <key>: <problem>"``. ``key`` is a dotted path with
    indexes (``cells.db.secrets[0].name``); the pseudo keys ``(syntax)`` (TOML
    syntax or encoding, with tomllib's line and column) and ``(file)`` (the
    file cannot be read) mark problems that belong to no key.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}", problem)
        self.file = file
        self.key = key
        self.problem = problem


Network: TypeAlias = Literal["none", "host"] | tuple[NetGrant, ...]


@attrs.frozen(kw_only=True)
class CellDecl:
    """A ``[cells.X]`` or ``[templates.X]`` entry, validated; ``dna`` is absolute.

    ``entry=None`` lets the runtime auto-detect the Cell class. ``shutdown=None``
    is OTP's default for a worker. ``network`` is ``"none"``, ``"host"`` or a
    non-empty tuple of grants. ``templates`` is non-empty only with
    ``max_children > 0``. Templates have ``activation="eager"`` and are never
    started on their own.

    ``replicas`` (None: an ordinary cell) makes it a replicated cell: a Raft
    group of that many processes (odd, 1 to :data:`MAX_REPLICAS`), each with
    its own data directory (``data`` is then True), always ``eager``, never a
    template, without dynamic children, its name at most
    :data:`MAX_REPLICATED_NAME` characters.
    """

    name: str
    dna: Path
    entry: str | None = None
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown | None = None
    activation: Literal["eager", "on_demand"] = "eager"
    calls: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    limits: Limits = attrs.field(factory=Limits)
    secrets: tuple[SecretRef, ...] = ()
    data: bool = False
    network: Network = "none"
    max_children: int = 0
    templates: tuple[str, ...] = ()
    start_timeout: float = 10.0
    standby: bool = True
    is_template: bool = False
    replicas: int | None = None

    @property
    def replicated(self) -> bool:
        """The cell is a Raft group of ``replicas`` processes (docs/root.md)."""
        return self.replicas is not None


@attrs.frozen(kw_only=True)
class SupervisorDecl:
    """A supervisor: ``[supervisor]`` (named ``root``) or ``[supervisors.X]``.

    ``children`` are cell and supervisor names in start order. A
    ``simple_one_for_one`` supervisor has a ``template`` and no children.
    ``restart``/``shutdown`` say how its parent treats it (``shutdown=None``:
    ``infinity``, OTP's default for supervisors).
    """

    name: str
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    backoff: Backoff | None = None
    children: tuple[str, ...] = ()
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown | None = None
    template: str | None = None


@attrs.frozen(kw_only=True)
class RootDecl:
    """The ``[root]`` table: daemon-wide settings."""

    allow_spawn: bool = False
    sandbox: str | None = None
    restart_log: int = 200
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_keep: int = 3
    #: Monitors (plus CellDown notices not yet delivered) one cell may hold.
    max_monitors: int = DEFAULT_MAX_MONITORS
    #: Links one cell may have.
    max_links: int = DEFAULT_MAX_LINKS
    #: Watchers the root delivers CellDown notices to at once (one connection each).
    celldown_concurrency: int = DEFAULT_CELLDOWN_CONCURRENCY
    #: The largest state a cell may hand over in a hot swap (docs/swap.md).
    swap_max_state: int = DEFAULT_SWAP_MAX_STATE
    #: DNA cache entries no cell needs that are kept, most recently used first (docs/root.md).
    dna_cache_keep: int = DEFAULT_DNA_CACHE_KEEP


@attrs.frozen(kw_only=True)
class Manifest:
    """A whole validated manifest (see the module docstring for the invariants).

    ``path`` is the path the manifest was loaded from, as given. The mappings
    are read-only and keep file order; ``supervisors`` excludes ``top``.
    """

    path: Path
    root: RootDecl
    top: SupervisorDecl
    supervisors: Mapping[str, SupervisorDecl]
    cells: Mapping[str, CellDecl]
    templates: Mapping[str, CellDecl]

    def parent_of(self, name: str) -> str:
        """The name of the supervisor listing ``name`` (``"root"`` for top-level children).

        Raises :class:`KeyError` for a name that is no cell or nested
        supervisor (templates and ``root`` itself have no parent).
        """
        for sup in (self.top, *self.supervisors.values()):
            if name in sup.children:
                return sup.name
        raise KeyError(name)

    def with_cell(self, name: str, decl: CellDecl | None) -> Manifest:
        """This manifest with declared cell ``name`` as ``decl``, or without it (None:
        also gone from its supervisor's children).

        A reload uses it to keep the root's manifest true to what runs when a
        change fails: a new cell that did not start is dropped again, a cell
        whose swap rolled back keeps its old declaration.
        """
        cells = dict(self.cells)
        if decl is not None:
            cells[name] = decl
            return attrs.evolve(self, cells=types.MappingProxyType(cells))
        cells.pop(name, None)
        try:
            owner = self.parent_of(name)
        except KeyError:  # no supervisor lists it: nothing more to drop
            return attrs.evolve(self, cells=types.MappingProxyType(cells))
        top = self.top
        supervisors = dict(self.supervisors)
        sup = top if owner == top.name else supervisors[owner]
        sup = attrs.evolve(sup, children=tuple(c for c in sup.children if c != name))
        if owner == top.name:
            top = sup
        else:
            supervisors[owner] = sup
        return attrs.evolve(self, top=top, supervisors=types.MappingProxyType(supervisors),
                            cells=types.MappingProxyType(cells))

    def with_template(self, name: str, decl: CellDecl) -> Manifest:
        """This manifest with template ``name`` declared as ``decl``."""
        return attrs.evolve(self, templates=types.MappingProxyType({**self.templates, name: decl}))

    def check_paths(self) -> None:
        """Check that every DNA path is a module file or package directory.

        Mirrors :func:`cellmesh.actors.dna.read_source`: not a symlink; a
        regular ``<identifier>.py`` file, or an identifier-named directory
        holding ``__init__.py``. Raises :class:`ManifestError` at
        ``cells.X.dna`` / ``templates.X.dna``.
        """
        for section, decls in (("cells", self.cells), ("templates", self.templates)):
            for decl in decls.values():
                problem = dna_problem(decl.dna)
                if problem is not None:
                    key = key_path(key_path(section, decl.name), "dna")
                    raise ManifestError(str(self.path), key, problem)

    def check_sockets(self, paths: Paths) -> None:
        """Check that every cell's socket and umbilical paths fit a Unix socket address.

        They depend on ``paths.socket_dir``, so this runs when the root knows
        it. For a replicated cell: the umbilicals and peer sockets of its
        declared replicas (a replica added later is checked when it is).
        Raises :class:`ManifestError` at ``cells.X``.
        """
        for decl in self.cells.values():
            try:
                paths.socket_path(decl.name)
                if decl.replicas is None:
                    paths.cell_umbilical(decl.name)
                else:  # its replicas' own: X..<id>, and their peer sockets
                    paths.cell_umbilical(f"{decl.name}..{decl.replicas - 1}")
                    paths.replica_peer(decl.name, decl.replicas - 1)
            except ConfigError as exc:
                raise ManifestError(
                    str(self.path), key_path("cells", decl.name), exc.problem
                ) from exc


# --------------------------------------------------------------------------
# Key paths and value descriptions.


def key_path(key: str, name: str) -> str:
    part = name if _BARE_KEY.fullmatch(name) else _quote(name)
    return f"{key}.{part}" if key else part


def _quote(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def describe(value: object) -> str:
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def dna_problem(dna: Path) -> str | None:
    try:
        st = dna.lstat()
    except OSError as exc:
        return f"{str(dna)!r} cannot be read: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{str(dna)!r} is a symlink; give the real path"
    if stat.S_ISREG(st.st_mode):
        if dna.suffix != ".py" or not dna.stem.isidentifier():
            return f"{str(dna)!r} is a file but not a module named <identifier>.py"
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"{str(dna)!r} is neither a module file nor a package directory"
    if not dna.name.isidentifier():
        return f"{str(dna)!r}: a package directory needs an identifier name"
    if not (dna / "__init__.py").is_file():
        return f"{str(dna)!r} is a directory without __init__.py (not a package)"
    return None
