"""The cellmesh.toml manifest: read, validate and resolve it into frozen values.

Theory of operation
-------------------
:func:`load_manifest` reads the file (the only I/O besides
:meth:`Manifest.check_paths`), :func:`parse_manifest` parses the TOML text
with :mod:`tomllib`, and :func:`manifest_from_dict` validates the parsed
tables into a :class:`Manifest`. Every problem -- a TOML syntax error, an
unknown key, a wrong type, a dangling name, a supervision tree that is not a
tree -- raises :class:`ManifestError` carrying the file, the key path (for
example ``cells.db.limits.memory`` or ``supervisors.db.children[1]``) and the
problem as fields. Nothing else escapes the parser (it is fuzzed for that).

Validation is reused where it lives: cell names by
:func:`cellmesh.config.check_mesh_cell_name` (the root's own rule), policy
values by the constructors of
:mod:`cellmesh.actors.policy`, environment, limits and secret references by
:mod:`cellmesh.sandbox`; their errors are re-raised as :class:`ManifestError`
with the key that holds the value.

Resolution: DNA paths are made absolute against the manifest's directory but
are not touched until :meth:`Manifest.check_paths`. The top supervisor is
named ``root``; when ``[supervisor].children`` is absent it holds every cell
and supervisor that no other supervisor lists, in the order tomllib reports
them. Cells, templates and supervisors share one namespace, and every cell
and supervisor ends up under exactly one supervisor. See docs/manifest.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from ..sandbox import NetGrant
from ._manifest_model import (
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
)
from ._manifest_reader import ManifestReader


def load_manifest(path: Path | str) -> Manifest:
    """Read and parse the manifest file at ``path`` (UTF-8 TOML).

    An unreadable file is a :class:`ManifestError` with key ``(file)``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(str(path), "(file)", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), "(syntax)", f"not valid UTF-8: {exc}") from exc
    return parse_manifest(text, path=path)


def parse_manifest(text: str, *, path: Path) -> Manifest:
    """Parse manifest TOML ``text``; ``path`` names it in errors and anchors DNA paths.

    Touches no file. Raises only :class:`ManifestError`.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(path), "(syntax)", f"invalid TOML: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # huge integer literal, deep nesting
        raise ManifestError(str(path), "(syntax)", f"invalid TOML: {exc}") from exc
    return manifest_from_dict(data, path=path)


def manifest_from_dict(data: Mapping[str, object], *, path: Path) -> Manifest:
    """Validate already-parsed TOML tables into a :class:`Manifest`.

    ``data`` is what :func:`tomllib.loads` returns. Raises only
    :class:`ManifestError`.
    """
    reader = ManifestReader(file=str(path), base=Path(path).absolute().parent)
    return reader.manifest(data, Path(path))


__all__ = [
    "MAX_REPLICAS",
    "MAX_REPLICATED_NAME",
    "MIN_CELL_MEMORY",
    "MIN_CELL_OPEN_FILES",
    "MIN_CELL_PIDS",
    "RESERVED_NAMES",
    "TOP_SUPERVISOR",
    "CellDecl",
    "Manifest",
    "ManifestError",
    "NetGrant",
    "Network",
    "RootDecl",
    "SupervisorDecl",
    "load_manifest",
    "manifest_from_dict",
    "parse_manifest",
]
