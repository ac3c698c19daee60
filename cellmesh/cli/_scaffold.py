"""``cellmesh init DIR``: write a small working mesh (manifest, two cells, a client, tests).

The files come from the package data under ``cellmesh/cli/_init_template/``
(shipped in the wheel). Python files carry a ``.tmpl`` suffix there so that
neither the package's imports nor its linters see them as modules of
cellmesh; the suffix is dropped when they are written. Nothing is ever
overwritten: if any target file exists, ``init`` names it and writes nothing.
"""

from __future__ import annotations

import importlib.resources
import shlex
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import cyclopts

from ..errors import ConfigError

#: Package-data directory holding the template.
TEMPLATE: Final = "_init_template"
#: Suffix dropped from template file names.
SUFFIX: Final = ".tmpl"


def template_files() -> dict[str, bytes]:
    """The template as ``{relative path: content}`` (POSIX paths, suffix dropped)."""
    root = importlib.resources.files(__package__ or "cellmesh.cli").joinpath(TEMPLATE)
    out: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name == "__pycache__":
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                out[rel.removesuffix(SUFFIX)] = child.read_bytes()

    walk(root, "")
    return out


def write_mesh(directory: Path) -> list[Path]:
    """Write the template into ``directory`` (created if missing); return the files written.

    Raises :class:`~cellmesh.errors.ConfigError` naming ``DIRECTORY`` when it
    is not a directory, when a file the template would write already exists,
    or when a file cannot be written (then none of its files is left).
    """
    files = template_files()
    if directory.exists() and not directory.is_dir():
        raise ConfigError("DIRECTORY", f"{directory} exists and is not a directory")
    clashes = sorted(rel for rel in files if (directory / rel).exists())
    if clashes:
        raise ConfigError(
            "DIRECTORY",
            f"{directory} already has {', '.join(clashes)}; choose an empty directory",
        )
    written: list[Path] = []
    target = directory
    try:
        for rel, data in files.items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as f:  # never overwrite, even if it appeared meanwhile
                f.write(data)
            written.append(target)
    except OSError as exc:
        for path in written:  # leave nothing half-written behind
            path.unlink(missing_ok=True)
        raise ConfigError(
            "DIRECTORY", f"cannot write {target}: {exc.strerror or exc}"
        ) from None
    return written


def init(directory: str, /) -> int:
    """Write a small working mesh into DIR: a manifest, two cells, a client and its tests.

    Then run it with `cellmesh up -f DIR/cellmesh.toml` and `python DIR/client.py`,
    and its tests with `python -m pytest DIR` (needs pytest and pytest-trio).
    Existing files are never overwritten.

    Parameters
    ----------
    directory
        Where to write the mesh (created if missing).
    """
    if not directory.strip():
        raise ConfigError("DIRECTORY", "is empty; name the directory to write the mesh into")
    path = Path(directory)
    written = write_mesh(path)
    print(f"cellmesh: wrote {len(written)} files into {path}:")
    for file in written:
        print(f"  {file}")
    print("next:")  # commands to paste: quoted, and a name starting with '-' made ./-name
    print(f"  cellmesh up -f {_arg(path / 'cellmesh.toml')}")
    print(f"  python {_arg(path / 'client.py')}")
    print("  cellmesh status")
    print("  cellmesh down")
    print(f"  python -m pytest {_arg(path)}   # its tests (pip install pytest pytest-trio)")
    return 0


def _arg(path: Path) -> str:
    """``path`` as one shell word that no command takes for an option."""
    text = str(path)
    if text.startswith("-"):
        text = "./" + text
    return shlex.quote(text)


def register(app: cyclopts.App) -> None:
    """Add ``init`` to ``app``."""
    app.command(init, name="init")


__all__ = ["init", "register", "template_files", "write_mesh"]
