"""The manifest parser: typed accessors over tomllib's tables that fail with the key path.

:class:`ManifestReader` turns the parsed TOML into the values of
:mod:`._manifest_model`, raising :class:`ManifestError` at the first problem
(unknown keys get a "did you mean"). Validation is reused where it lives:
cell names by :func:`cellmesh.config.check_mesh_cell_name`, policy values by
the constructors of :mod:`cellmesh.actors.policy`, environment, limits and
secret references by :mod:`cellmesh.sandbox`. Pure: it touches no file.
"""

from __future__ import annotations

import contextlib
import difflib
import keyword
import math
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, Literal, NoReturn

import attrs

from ..config import check_mesh_cell_name
from ..errors import ConfigError
from ..sandbox import (
    BACKEND_NAMES,
    Limits,
    NetGrant,
    SandboxConfigError,
    SecretRef,
    WorkloadEnv,
    parse_size,
)
from ..sandbox._spec import MAX_NET_GRANTS
from ..transport._spin import SPIN_ENV, spin_window_from_env
from . import stockdna
from ._manifest_model import (
    DEFAULT_CELLDOWN_CONCURRENCY,
    DEFAULT_DNA_CACHE_KEEP,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_SWAP_MAX_STATE,
    MAX_DNA_CACHE_KEEP,
    MAX_REPLICAS,
    MAX_REPLICATED_NAME,
    MIN_CELL_MEMORY,
    MIN_CELL_OPEN_FILES,
    MIN_CELL_PIDS,
    RESERVED_NAMES,
    TOP_SUPERVISOR,
    CellDecl,
    Manifest,
    ManifestError,
    Network,
    RootDecl,
    SupervisorDecl,
    describe,
    key_path,
)
from .errors import InvalidSupervisorSpec
from .policy import Backoff, ChildSpec, Restart, Shutdown, Strategy, SupervisorSpec
from .watches import DEFAULT_MAX_LINKS, DEFAULT_MAX_MONITORS

_TOP_KEYS: Final = ("root", "supervisor", "supervisors", "cells", "templates")
_ROOT_KEYS: Final = (
    "allow_spawn", "sandbox", "restart_log", "log_max_bytes", "log_keep", "max_monitors",
    "max_links", "celldown_concurrency", "swap_max_state", "dna_cache_keep",
)  # fmt: skip
_TOP_SUP_KEYS: Final = ("strategy", "intensity", "period", "backoff", "children")
_SUP_KEYS: Final = (*_TOP_SUP_KEYS, "restart", "shutdown", "template")
_CELL_KEYS: Final = (
    "dna", "entry", "restart", "shutdown", "activation", "calls", "env", "limits",
    "secrets", "data", "network", "max_children", "templates", "start_timeout", "standby",
    "replicas",
)  # fmt: skip
_TEMPLATE_KEYS: Final = tuple(k for k in _CELL_KEYS if k not in ("activation", "replicas"))
_LIMIT_KEYS: Final = ("memory", "cpu", "pids", "open_files")
_SECRET_KEYS: Final = ("name", "key", "deliver", "ttl")
_BACKOFF_KEYS: Final = ("initial", "factor", "max")

_RESTARTS: Final = tuple(r.value for r in Restart)
#: Variables the root and the sandbox set in every cell (docs/security.md, the
#: launcher's spec and ``runtime_env``): declared in ``env`` they would be replaced
#: without a word, so they are refused. ``PATH`` and ``CELL_SPIN_US`` may be set.
_RUNTIME_ENV: Final = frozenset({
    "CELL_NAME", "HOME", "TMPDIR", "PWD", "CELL_SOCKET_DIR", "CELL_LISTEN_FDS",
    "CELL_LISTEN_FDS_START", "CELL_DATA_DIR", "CELL_DNA_DIR", "CELL_NET_GRANTS",
    "CELL_ENTRY", "CELL_UMBILICAL", "CELL_GO_FD", "CELL_REPORT_FD",
    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "CELL_REPLICA_ID", "CELL_REPLICA_PEERS",
    "CELL_REPLICA_JOIN", "CELL_REPLICA_BOOTSTRAP", "CELL_REPLICA_CHECK",
})
_RUNTIME_ENV_PREFIX: Final = "CELL_SECRET_FILE_"
#: Variables that make a Rust panic print a backtrace. cbor2 is a Rust extension:
#: a cell out of memory inside it panics, and the backtrace printer, itself out of
#: memory, can wait forever on its own lock -- the cell hangs instead of exiting 137.
_PANIC_BACKTRACE_ENV: Final = frozenset({"RUST_BACKTRACE", "RUST_LIB_BACKTRACE"})
_STRATS: Final = tuple(s.value for s in Strategy)
#: What the top supervisor may be (it has no template to start children from).
_TOP_STRATS: Final = tuple(s for s in _STRATS if s != Strategy.SIMPLE_ONE_FOR_ONE.value)
_ACTIVATIONS: Final = ("eager", "on_demand")
_MAX_INT: Final = (1 << 63) - 1  # TOML integers are signed 64-bit
_MAX_SIZE: Final = 1 << 62
_MAX_BOUND: Final = 1 << 20  # a per-cell bound past this is no bound
#: An entry under this prefix names code that ships with cellmesh: its cell needs no ``dna``.
_STOCK_PREFIX: Final = "cellmesh."


def _entry_ok(entry: str) -> bool:
    """``module:Class`` or ``module`` (the runtime's CELL_ENTRY forms): dotted identifiers."""
    module, sep, cls = entry.partition(":")
    parts = [*module.split("."), *(cls.split(".") if sep else ())]
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


# --------------------------------------------------------------------------
# The reader: typed accessors that fail with the key path.


@attrs.frozen(kw_only=True)
class ManifestReader:
    file: str
    base: Path

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ManifestError(self.file, key, problem)

    @contextlib.contextmanager
    def converting(self, key: str) -> Iterator[None]:
        """Re-raise a policy or sandbox validation error as a ManifestError at ``key``."""
        try:
            yield
        except (InvalidSupervisorSpec, SandboxConfigError) as exc:
            raise ManifestError(self.file, key, exc.problem) from exc

    def expected(self, key: str, what: str, value: object) -> NoReturn:
        self.fail(key, f"expected {what}, got {describe(value)}")

    def table(
        self, value: object, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, object]:
        if not isinstance(value, Mapping):
            self.expected(key or "(top level)", "a table", value)
        for k in value:
            if not isinstance(k, str):
                self.fail(key or "(top level)", f"key {k!r} is not a string")
            if k not in allowed:
                hint = difflib.get_close_matches(k, allowed, n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(key_path(key, k), f"unknown key{did}; allowed keys: {', '.join(allowed)}")
        for k in required:
            if k not in value:
                self.fail(key_path(key, k), "is required")
        return dict(value)

    def names_table(self, value: object, key: str) -> dict[str, object]:
        """A table of named sub-tables (``[cells]``); each name must be a valid cell name."""
        if not isinstance(value, Mapping):
            self.expected(key, "a table", value)
        for name in value:
            if not isinstance(name, str):
                self.fail(key, f"key {name!r} is not a string")
            try:
                check_mesh_cell_name(name)  # the very rule the root applies at run time
            except ConfigError as exc:
                self.fail(key_path(key, name), exc.problem)
        return dict(value)

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            self.expected(key, "a string", value)
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.expected(key, "a boolean", value)
        return value

    def integer(self, value: object, key: str, minimum: int, maximum: int = _MAX_INT) -> int:
        if type(value) is not int:
            self.expected(key, f"an integer >= {minimum}", value)
        if not minimum <= value <= maximum:
            self.fail(key, f"expected an integer from {minimum} to {maximum}, got {value}")
        return value

    def number(self, value: object, key: str, minimum: float, *, exclusive: bool) -> float:
        """A finite int or float >= ``minimum`` (> when ``exclusive``), as a float."""
        bound = f"{'>' if exclusive else '>='} {minimum:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.expected(key, f"a number {bound}", value)
        try:
            result = float(value)
        except OverflowError:
            self.fail(key, f"{value} is too large")
        if not math.isfinite(result) or result < minimum or (exclusive and result == minimum):
            self.fail(key, f"expected a finite number {bound}, got {value!r}")
        return result

    def choice(self, value: object, key: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            what = repr(value) if isinstance(value, str) else describe(value)
            self.fail(key, f"expected one of {', '.join(map(repr, choices))}, got {what}")
        return value

    def size(self, value: object, key: str) -> int:
        if isinstance(value, str):
            with self.converting(key):
                return parse_size(value, source=key)
        if type(value) is not int:
            self.expected(key, "a size (an integer of bytes or a string like '256M')", value)
        return self.integer(value, key, 1, _MAX_SIZE)

    def name_list(self, value: object, key: str) -> list[tuple[str, str]]:
        """An array of distinct strings, as (key path of the item, item) pairs."""
        if not isinstance(value, list):
            self.expected(key, "an array of names", value)
        seen: dict[str, int] = {}
        out: list[tuple[str, str]] = []
        for i, item in enumerate(value):
            item_key = f"{key}[{i}]"
            name = self.string(item, item_key)
            if name in seen:
                self.fail(item_key, f"{name!r} is listed twice (also at [{seen[name]}])")
            seen[name] = i
            out.append((item_key, name))
        return out

    def shutdown(self, value: object, key: str) -> Shutdown:
        if value == "brutal_kill":
            return Shutdown.brutal_kill()
        if value == "infinity":
            return Shutdown.infinity()
        what = "a number of seconds >= 0, 'brutal_kill' or 'infinity'"
        if isinstance(value, str):
            self.fail(key, f"expected {what}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.expected(key, what, value)
        seconds = self.number(value, key, 0.0, exclusive=False)
        with self.converting(key):
            return Shutdown.timeout(seconds)

    # ---------------------------------------------------------------- sections

    def manifest(self, data: Mapping[str, object], path: Path) -> Manifest:
        top = self.table(data, "", _TOP_KEYS)
        root = self.root_decl(top.get("root", {}))
        raw_cells = self.names_table(top.get("cells", {}), "cells")
        raw_templates = self.names_table(top.get("templates", {}), "templates")
        raw_sups = self.names_table(top.get("supervisors", {}), "supervisors")
        kinds: dict[str, str] = {}
        for section, kind, names in (
            ("cells", "cell", raw_cells),
            ("templates", "template", raw_templates),
            ("supervisors", "supervisor", raw_sups),
        ):
            for name in names:
                key = key_path(section, name)
                if name in RESERVED_NAMES:
                    self.fail(key, f"{name!r} is reserved")
                if name in kinds:
                    self.fail(
                        key,
                        f"{name!r} is already the name of a {kinds[name]} (cells, templates "
                        "and supervisors share one namespace)",
                    )
                kinds[name] = kind
        cells = {n: self.cell(v, n, kinds, template=False) for n, v in raw_cells.items()}
        templates = {n: self.cell(v, n, kinds, template=True) for n, v in raw_templates.items()}
        sups = {n: self.supervisor(v, n, kinds)[0] for n, v in raw_sups.items()}
        top_sup, explicit = self.supervisor(top.get("supervisor", {}), TOP_SUPERVISOR, kinds)
        # File order of the cells and supervisors, as tomllib reports it.
        order = [
            name
            for section in top
            if section in ("cells", "supervisors")
            for name in (raw_cells if section == "cells" else raw_sups)
        ]
        top_sup = self.tree(top_sup, explicit, sups, order)
        return Manifest(
            path=path,
            root=root,
            top=top_sup,
            supervisors=types.MappingProxyType(sups),
            cells=types.MappingProxyType(cells),
            templates=types.MappingProxyType(templates),
        )

    def root_decl(self, value: object) -> RootDecl:
        t = self.table(value, "root", _ROOT_KEYS)
        sandbox = None
        if "sandbox" in t:
            sandbox = self.choice(t["sandbox"], "root.sandbox", BACKEND_NAMES)
        return RootDecl(
            allow_spawn=self.boolean(t.get("allow_spawn", False), "root.allow_spawn"),
            sandbox=sandbox,
            restart_log=self.integer(t.get("restart_log", 200), "root.restart_log", 1),
            log_max_bytes=self.size(
                t.get("log_max_bytes", DEFAULT_LOG_MAX_BYTES), "root.log_max_bytes"
            ),
            log_keep=self.integer(t.get("log_keep", 3), "root.log_keep", 1),
            max_monitors=self.integer(
                t.get("max_monitors", DEFAULT_MAX_MONITORS), "root.max_monitors", 1, _MAX_BOUND
            ),
            max_links=self.integer(
                t.get("max_links", DEFAULT_MAX_LINKS), "root.max_links", 1, _MAX_BOUND
            ),
            celldown_concurrency=self.integer(
                t.get("celldown_concurrency", DEFAULT_CELLDOWN_CONCURRENCY),
                "root.celldown_concurrency",
                1,
                1024,
            ),
            swap_max_state=self.size(
                t.get("swap_max_state", DEFAULT_SWAP_MAX_STATE), "root.swap_max_state"
            ),
            dna_cache_keep=self.integer(
                t.get("dna_cache_keep", DEFAULT_DNA_CACHE_KEEP), "root.dna_cache_keep", 0,
                MAX_DNA_CACHE_KEEP,
            ),
        )

    def cell(
        self, value: object, name: str, kinds: Mapping[str, str], *, template: bool
    ) -> CellDecl:
        key = key_path("templates" if template else "cells", name)
        if template and isinstance(value, Mapping) and "replicas" in value:
            self.fail(
                key_path(key, "replicas"),
                "a template cannot be replicated (its instances are single processes "
                "started at run time); declare a replicated cell under [cells]",
            )
        t = self.table(value, key, _TEMPLATE_KEYS if template else _CELL_KEYS)

        def k(field: str) -> str:
            return key_path(key, field)

        entry = None
        if "entry" in t:
            entry = self.string(t["entry"], k("entry"))
            if not _entry_ok(entry):
                self.fail(
                    k("entry"), f"expected 'module:Class' or 'module' (dotted names), got {entry!r}"
                )
        if "dna" in t:
            dna = self.string(t["dna"], k("dna"))
            if not dna or "\0" in dna:
                self.fail(k("dna"), f"{dna!r} is not a path")
            dna_path = self.base / dna
        elif entry is not None and entry.startswith(_STOCK_PREFIX):
            dna_path = Path(stockdna.__file__)  # code that ships with cellmesh: none of its own
        else:
            self.fail(k("dna"), "is required (only an entry in cellmesh itself, such as "
                                "'cellmesh.ledger:Ledger', needs none)")
        calls: list[str] = []
        for item_key, target in self.name_list(t.get("calls", []), k("calls")):
            kind = kinds.get(target)
            if kind is None:
                self.fail(item_key, f"no cell or template named {target!r}")
            if kind == "supervisor":
                self.fail(item_key, f"{target!r} is a supervisor; only cells can be called")
            calls.append(target)
        max_children = self.integer(t.get("max_children", 0), k("max_children"), 0)
        child_templates: list[str] = []
        for item_key, target in self.name_list(t.get("templates", []), k("templates")):
            if kinds.get(target) != "template":
                kind = kinds.get(target)
                what = f"is a {kind}" if kind else "is not declared"
                self.fail(item_key, f"{target!r} {what}; expected a name under [templates]")
            child_templates.append(target)
        if child_templates and max_children == 0:
            self.fail(k("templates"), "needs max_children > 0 to start any child")
        env = self.env(t.get("env", {}), k("env"))
        act = self.choice(t.get("activation", "eager"), k("activation"), _ACTIVATIONS)
        activation: Literal["eager", "on_demand"] = "on_demand" if act == "on_demand" else "eager"
        data = self.boolean(t.get("data", False), k("data"))
        replicas = self.replicas(t, name, key, activation, max_children)
        if replicas is not None:
            if "data" in t and not data:
                self.fail(
                    k("data"),
                    f"a replicated cell (replicas = {replicas}) always has data: one directory "
                    "per replica holds its log; remove data = false",
                )
            data = True
        return CellDecl(
            name=name,
            dna=dna_path,
            entry=entry,
            restart=Restart(self.choice(t.get("restart", "permanent"), k("restart"), _RESTARTS)),
            shutdown=self.shutdown(t["shutdown"], k("shutdown")) if "shutdown" in t else None,
            activation=activation,
            calls=tuple(calls),
            env=env,
            limits=self.limits(t.get("limits", {}), k("limits")),
            secrets=self.secrets(t.get("secrets", []), k("secrets"), env),
            data=data,
            network=self.network(t.get("network", "none"), k("network")),
            max_children=max_children,
            templates=tuple(child_templates),
            start_timeout=self.number(
                t.get("start_timeout", 10.0), k("start_timeout"), 0.0, exclusive=True
            ),
            standby=self.boolean(t.get("standby", True), k("standby")),
            is_template=template,
            replicas=replicas,
        )

    def replicas(
        self, t: Mapping[str, object], name: str, key: str, activation: str, max_children: int
    ) -> int | None:
        """The ``replicas`` of a cell table (None when absent), with its restrictions."""
        if "replicas" not in t:
            return None
        rkey = key_path(key, "replicas")
        value = t["replicas"]
        what = f"an odd number from 1 to {MAX_REPLICAS}"
        if type(value) is not int:
            self.expected(rkey, what, value)
        if not (1 <= value <= MAX_REPLICAS and value % 2 == 1):
            self.fail(rkey, f"expected {what}, got {value}")
        if activation == "on_demand":
            self.fail(
                key_path(key, "activation"),
                f"a replicated cell (replicas = {value}) cannot be 'on_demand': every replica "
                "runs from the start to keep the group's quorum",
            )
        if max_children > 0:
            self.fail(
                key_path(key, "max_children"),
                f"a replicated cell (replicas = {value}) cannot start dynamic children",
            )
        if len(name) > MAX_REPLICATED_NAME:
            self.fail(
                key,
                f"a replicated cell's name is at most {MAX_REPLICATED_NAME} characters (its "
                f"replicas' logs are named <name>..<id>), got {len(name)}",
            )
        return value

    def env(self, value: object, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, Mapping):
            self.expected(key, "a table of strings", value)
        items: dict[object, str] = {}
        for name, text in value.items():
            items[name] = self.string(text, key_path(key, str(name)))
            if name in _RUNTIME_ENV or str(name).startswith(_RUNTIME_ENV_PREFIX):
                self.fail(key_path(key, str(name)), "is set by the runtime in every cell "
                          "(docs/security.md); choose another name")
            if name in _PANIC_BACKTRACE_ENV:
                self.fail(key_path(key, str(name)), "would let a cell that runs out of memory "
                          "inside cbor2 (a Rust extension) hang in the panic's backtrace "
                          "printer instead of exiting 137; not allowed in a cell's env")
            if name == SPIN_ENV:  # read by the cell's runtime: a bad one would fail its start
                try:
                    spin_window_from_env({SPIN_ENV: items[name]})
                except ConfigError as exc:
                    self.fail(key_path(key, SPIN_ENV), exc.problem)
        with self.converting(key):
            return WorkloadEnv(items=items).items

    def limits(self, value: object, key: str) -> Limits:
        t = self.table(value, key, _LIMIT_KEYS)

        def k(field: str) -> str:
            return key_path(key, field)

        memory = self.size(t["memory"], k("memory")) if "memory" in t else None
        if memory is not None and memory < MIN_CELL_MEMORY:
            hint = f'; a bare number is bytes: did you mean "{memory}M"?'
            self.fail(
                k("memory"),
                f"{memory} bytes is too small to start a cell "
                f"(at least 32M){hint if memory < 1 << 20 else ''}",
            )
        cpu = self.number(t["cpu"], k("cpu"), 0.0, exclusive=True) if "cpu" in t else None
        pids = self.floor(t, "pids", key, MIN_CELL_PIDS, "processes and threads")
        files = self.floor(t, "open_files", key, MIN_CELL_OPEN_FILES, "descriptors")
        try:
            return Limits(memory=memory, cpu=cpu, pids=pids, open_files=files)
        except SandboxConfigError as exc:  # its source is "limits.<field>": name that key
            self.fail(key_path(key, exc.source.removeprefix("limits.")), exc.problem)

    def floor(
        self, t: Mapping[str, object], field: str, key: str, minimum: int, what: str
    ) -> int | None:
        """``t[field]``, an integer limit a cell cannot start below ``minimum``."""
        if field not in t:
            return None
        value = self.integer(t[field], key_path(key, field), 1)
        if value < minimum:
            self.fail(
                key_path(key, field),
                f"{value} {what} is too small to start a cell (at least {minimum})",
            )
        return value

    def secrets(
        self, value: object, key: str, env: tuple[tuple[str, str], ...]
    ) -> tuple[SecretRef, ...]:
        if not isinstance(value, list):
            self.expected(key, "an array of tables", value)
        refs: list[SecretRef] = []
        for i, item in enumerate(value):
            item_key = f"{key}[{i}]"
            t = self.table(item, item_key, _SECRET_KEYS, ("name", "key"))
            name_key = key_path(item_key, "name")
            name = self.string(t["name"], name_key)
            broker_key = self.string(t["key"], key_path(item_key, "key"))
            deliver = self.choice(
                t.get("deliver", "env"), key_path(item_key, "deliver"), ("env", "file")
            )
            ttl = self.number(t.get("ttl", 300.0), key_path(item_key, "ttl"), 0.0, exclusive=True)
            try:
                ref = SecretRef(
                    name=name, key=broker_key, deliver="env" if deliver == "env" else "file",
                    ttl=ttl,
                )  # fmt: skip
            except SandboxConfigError as exc:
                field = exc.source.removeprefix("secret ")
                self.fail(
                    key_path(item_key, field if field in _SECRET_KEYS else "name"), exc.problem
                )
            if any(r.name == name for r in refs):
                self.fail(name_key, f"secret {name!r} is declared twice")
            if deliver == "env" and any(e == name for e, _ in env):
                self.fail(name_key, f"{name!r} is also set in env")
            if deliver == "env" and (name in _RUNTIME_ENV or name.startswith(_RUNTIME_ENV_PREFIX)):
                self.fail(name_key, f"{name!r} is set by the runtime in every cell "
                          "(docs/security.md): the secret would replace it; choose another name")
            refs.append(ref)
        return tuple(refs)

    def network(self, value: object, key: str) -> Network:
        if value in ("none", "host"):
            return "none" if value == "none" else "host"
        if isinstance(value, str):
            self.fail(key, f"expected 'none', 'host' or an array of 'host:port', got {value!r}")
        if not isinstance(value, list):
            self.expected(key, "'none', 'host' or an array of 'host:port'", value)
        grants: list[NetGrant] = []
        for item_key, text in self.name_list(value, key):
            try:
                grant = NetGrant.parse(text)
            except SandboxConfigError as exc:
                self.fail(item_key, exc.problem)
            if any((g.host.lower(), g.port) == (grant.host.lower(), grant.port) for g in grants):
                self.fail(item_key, f"{text!r} is granted twice")
            grants.append(grant)
        if len(grants) > MAX_NET_GRANTS:
            self.fail(key, f"more than {MAX_NET_GRANTS} grants")
        return tuple(grants) if grants else "none"

    def backoff(self, value: object, key: str) -> Backoff:
        t = self.table(value, key, _BACKOFF_KEYS, ("initial",))
        initial = self.number(t["initial"], key_path(key, "initial"), 0.0, exclusive=False)
        factor = self.number(t.get("factor", 2.0), key_path(key, "factor"), 1.0, exclusive=False)
        maximum = self.number(t.get("max", 30.0), key_path(key, "max"), 0.0, exclusive=False)
        with self.converting(key):
            return Backoff(initial=initial, factor=factor, maximum=maximum)

    def supervisor(
        self, value: object, name: str, kinds: Mapping[str, str]
    ) -> tuple[SupervisorDecl, bool]:
        """A ``[supervisors.X]`` table, or ``[supervisor]`` when ``name`` is ``root``.

        Also returns whether ``children`` was given explicitly.
        """
        top = name == TOP_SUPERVISOR
        key = "supervisor" if top else key_path("supervisors", name)
        t = self.table(value, key, _TOP_SUP_KEYS if top else _SUP_KEYS)

        def k(field: str) -> str:
            return key_path(key, field)

        raw = t.get("strategy", "one_for_one")
        if top and raw == Strategy.SIMPLE_ONE_FOR_ONE.value:
            self.fail(k("strategy"), "the top supervisor cannot be simple_one_for_one")
        strategy = Strategy(self.choice(raw, k("strategy"), _TOP_STRATS if top else _STRATS))
        children: list[str] = []
        for item_key, child in self.name_list(t.get("children", []), k("children")):
            kind = kinds.get(child)
            if child == TOP_SUPERVISOR:
                self.fail(item_key, "'root' is the top supervisor; it cannot be a child")
            if kind is None:
                self.fail(item_key, f"no cell or supervisor named {child!r}")
            if kind == "template":
                self.fail(item_key, f"{child!r} is a template; templates only start dynamically")
            if child == name:
                self.fail(item_key, f"supervisor {name!r} cannot be its own child")
            children.append(child)
        template = None
        if "template" in t:
            template = self.string(t["template"], k("template"))
            if strategy is not Strategy.SIMPLE_ONE_FOR_ONE:
                self.fail(k("template"), "only a simple_one_for_one supervisor has one")
            if kinds.get(template) != "template":
                self.fail(k("template"), f"no template named {template!r}")
        if strategy is Strategy.SIMPLE_ONE_FOR_ONE:  # (never the top one: refused above)
            if template is None:
                self.fail(k("template"), "is required for simple_one_for_one")
            if children:
                self.fail(k("children"), f"must be empty: children come from {template!r}")
        decl = SupervisorDecl(
            name=name,
            strategy=strategy,
            intensity=self.integer(t.get("intensity", 1), k("intensity"), 0),
            period=self.number(t.get("period", 5.0), k("period"), 0.0, exclusive=True),
            backoff=self.backoff(t["backoff"], k("backoff")) if "backoff" in t else None,
            children=tuple(children),
            restart=Restart(self.choice(t.get("restart", "permanent"), k("restart"), _RESTARTS)),
            shutdown=self.shutdown(t["shutdown"], k("shutdown")) if "shutdown" in t else None,
            template=template,
        )
        specs = (template,) if template else decl.children
        try:  # let the policy validate what it knows
            SupervisorSpec(
                strategy=decl.strategy,
                intensity=decl.intensity,
                period=decl.period,
                backoff=decl.backoff,
                children=tuple(ChildSpec(id=c) for c in specs),
            )
        except InvalidSupervisorSpec as exc:
            self.fail(k(exc.source.split()[0]), exc.problem)
        return decl, "children" in t

    def tree(
        self,
        top: SupervisorDecl,
        explicit: bool,
        sups: Mapping[str, SupervisorDecl],
        order: list[str],
    ) -> SupervisorDecl:
        """Give every cell and supervisor exactly one parent; return ``top`` with its children."""
        pools: dict[str, str] = {}
        for name, sup in sups.items():
            if sup.template is None:
                continue
            if sup.template in pools:  # its children would all go to the first one
                self.fail(key_path(key_path("supervisors", name), "template"),
                          f"template {sup.template!r} already has the pool supervisor "
                          f"{pools[sup.template]!r}; a template has at most one pool")
            pools[sup.template] = name
        parents: dict[str, str] = {}
        listed = [("supervisor", top), *((key_path("supervisors", n), s) for n, s in sups.items())]
        for key, sup in listed:
            for i, child in enumerate(sup.children):
                if child in parents:
                    self.fail(
                        f"{key_path(key, 'children')}[{i}]",
                        f"{child!r} is listed by both supervisor {parents[child]!r} and "
                        f"supervisor {sup.name!r}; a child has exactly one supervisor",
                    )
                parents[child] = sup.name
        orphans = [name for name in order if name not in parents]
        if not explicit:
            top = attrs.evolve(top, children=tuple(orphans))
            parents.update((name, TOP_SUPERVISOR) for name in orphans)
        elif orphans:
            name = orphans[0]
            section = "supervisors" if name in sups else "cells"
            self.fail(
                key_path(section, name),
                "is under no supervisor; list it in some supervisor's children "
                "(or omit [supervisor].children to default to every unlisted one)",
            )
        for name in sups:
            chain = [name]
            parent = parents[name]
            while parent != TOP_SUPERVISOR:
                if parent in chain:
                    cycle = [*chain[chain.index(parent) :], parent]
                    self.fail(
                        key_path(key_path("supervisors", parent), "children"),
                        f"supervisors form a cycle: {cycle[0]!r} is a child of "
                        + ", which is a child of ".join(repr(n) for n in cycle[1:]),
                    )
                chain.append(parent)
                parent = parents[parent]
        return top
