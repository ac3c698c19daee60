"""DNA: a cell's code, content-addressed, byte-compiled, read-only, in the cache.

Theory of operation
-------------------
A cell's code is a module file (``name.py``) or a package directory
(``name/`` with ``__init__.py``). :func:`read_source` takes one consistent
in-memory snapshot of it (``__pycache__`` directories and ``*.pyc`` files are
ignored; symlinks and special files are refused); :func:`content_hash` hashes
that snapshot; the cache entry is built from the very same bytes, so the
digest always names what is in the entry.

The digest is SHA-256 over a length-prefixed encoding of the format tag, the
kind and name, and for every file in sorted relative-path order: its path,
its executable bit, and its bytes. Only the executable bit of the mode is
hashed (as git does): read/write bits vary with the umask and would split
identical code into different entries.

An entry ``<cache_dir>/<digest>/`` holds the copy (``<name>.py`` or
``<name>/...``), the ``__pycache__`` files byte-compiled with checked-hash
invalidation (independent of mtimes), and :data:`MANIFEST_NAME` listing every
other file with its SHA-256 and executable bit. Files are mode 0444/0555 and
directories 0555. The sandbox mounts the entry directory alone and puts it on
``sys.path``; the cell is imported by :attr:`DnaEntry.name`.

Build protocol (atomic, safe against concurrent builders of the same digest):
write everything into a fresh ``.build-*`` directory in the cache dir, fsync
every file, make it read-only, fsync the directories, then ``rename`` it to
``<digest>``. A rename that finds the digest present means another builder
won: if the winner's entry verifies, ours is discarded; if it is damaged it
is moved aside to ``.trash-*`` (only one mover succeeds) and the rename is
retried. A builder killed mid-build leaves a ``.build-*`` directory that
:meth:`DnaCache.sweep_stale` removes once it is old. Reuse verifies an
existing entry against its manifest (every file present with the listed hash
and bit, nothing extra, nothing writable); a damaged entry is rebuilt the
same way.

Pruning (:meth:`DnaCache.discard`, driven by the root: :mod:`._dnaprune`)
removes an entry the same crash-safe way: it is renamed into a fresh
``.trash-*`` directory (atomic: a reader finds the whole entry or none),
which is then deleted; a removal cut short leaves only the ``.trash-*``
directory for :meth:`DnaCache.sweep_stale`. An entry's last use is its
directory's modification time, set by :meth:`DnaCache.ensure` and
:meth:`DnaCache.touch` (the only change ever made to an installed entry: the
manifest does not cover it). A caller that will use an entry takes a
:class:`DnaHold` first and passes it to :meth:`DnaCache.ensure`, which pins
the digest *before* it looks for the entry; :meth:`DnaCache.discard` checks
the pins and renames under one lock, so an entry being built or just
reused is never removed under its user.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import attrs

from ..config import Paths
from ._dnakeep import CachedEntry
from .errors import DnaCacheError, DnaSourceError

#: Format tag hashed into every digest and written into every manifest.
DNA_FORMAT: Final = "cellmesh-dna-v1"

#: The manifest's file name inside an entry (not a valid module name).
MANIFEST_NAME: Final = ".dna-manifest.json"

#: A cell's source larger than this (all files together) is refused.
MAX_SOURCE_BYTES: Final = 64 * 1024 * 1024

#: How many times a damaged entry is replaced before giving up (a racing writer).
_INSTALL_ATTEMPTS: Final = 5

_IGNORED_DIRS: Final = frozenset({"__pycache__"})
_HEX: Final = frozenset("0123456789abcdef")
_SYMLINK: Final = "is a symlink; cell code must be plain files"
_IGNORED_SUFFIXES: Final = (".pyc", ".pyo")


@attrs.frozen(kw_only=True)
class SourceFile:
    """One file of a snapshot: path relative to the import root, exec bit, bytes."""

    path: str
    executable: bool
    data: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class DnaSource:
    """An in-memory snapshot of a cell's code: a module file or a package directory."""

    name: str
    kind: Literal["module", "package"]
    files: tuple[SourceFile, ...]


@attrs.frozen(kw_only=True)
class DnaEntry:
    """A verified cache entry: ``root`` goes on ``sys.path``; import ``name``."""

    digest: str
    root: Path
    name: str
    kind: Literal["module", "package"]
    reused: bool


def _check_name(name: str, source: Path) -> None:
    if not name.isidentifier():
        raise DnaSourceError(str(source), f"{name!r} is not a valid Python module name")


#: Open a source file or directory without following a symlink in its last
#: component (a FIFO must not block us, nor a file become our controlling tty).
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _read_file(
    name: str, rel: str, budget: list[int], *, dir_fd: int | None, shown: Path
) -> SourceFile:
    """Read ``name`` (relative to ``dir_fd``) as one source file, TOCTOU-safe.

    The file is opened with ``O_NOFOLLOW`` and checked to be a regular file
    with ``fstat`` on the opened descriptor, then read through that same
    descriptor: whatever is swapped in at that name meanwhile (a symlink to
    a root-only file, a FIFO, a device) is refused, never read. ``shown`` is
    the path errors name.
    """
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DnaSourceError(str(shown), _SYMLINK) from None
        raise DnaSourceError(str(shown), f"cannot be read: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DnaSourceError(str(shown), "is not a regular file")
        if st.st_size > budget[0]:
            raise DnaSourceError(str(shown), f"cell code exceeds {MAX_SOURCE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > budget[0]:  # it grew while we read it
                raise DnaSourceError(str(shown), f"cell code exceeds {MAX_SOURCE_BYTES} bytes")
            chunks.append(chunk)
    except OSError as exc:
        raise DnaSourceError(str(shown), f"cannot be read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    budget[0] -= size
    return SourceFile(path=rel, executable=bool(st.st_mode & stat.S_IXUSR), data=b"".join(chunks))


def read_source(path: Path) -> DnaSource:
    """Snapshot the module file or package directory at ``path``.

    Raises :class:`~cellmesh.actors.errors.DnaSourceError` when it is missing,
    a symlink, not ``<identifier>.py`` / an identifier-named directory with
    ``__init__.py``, contains symlinks or special files, or is too large.
    Safe against a concurrent writer swapping files or directories for
    symlinks: directories are walked by descriptor (:func:`os.fwalk`, which
    never follows a symlink), files opened with ``O_NOFOLLOW`` and checked
    with ``fstat`` on the opened descriptor.
    """
    budget = [MAX_SOURCE_BYTES]
    try:
        st = path.lstat()
    except OSError as exc:
        raise DnaSourceError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise DnaSourceError(str(path), "is a symlink; give the real path")
    if stat.S_ISREG(st.st_mode):
        if path.suffix != ".py":
            raise DnaSourceError(str(path), "a module file must end in .py")
        _check_name(path.stem, path)
        only = _read_file(str(path), path.name, budget, dir_fd=None, shown=path)
        return DnaSource(name=path.stem, kind="module", files=(only,))
    if not stat.S_ISDIR(st.st_mode):
        raise DnaSourceError(str(path), "is neither a module file nor a package directory")
    _check_name(path.name, path)
    files: list[SourceFile] = []
    walked = False
    try:
        for current, dirnames, filenames, dir_fd in os.fwalk(path, follow_symlinks=False):
            walked = True
            here = Path(current)
            for dirname in dirnames:
                if stat.S_ISLNK(os.stat(dirname, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise DnaSourceError(str(here / dirname), _SYMLINK)
            dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS)
            for filename in sorted(filenames):
                if filename.endswith(_IGNORED_SUFFIXES):
                    continue
                full = here / filename
                rel = (Path(path.name) / full.relative_to(path)).as_posix()
                files.append(_read_file(filename, rel, budget, dir_fd=dir_fd, shown=full))
    except OSError as exc:
        raise DnaSourceError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    if not walked:  # fwalk yields nothing when the top was swapped for a symlink
        raise DnaSourceError(str(path), "is a symlink; give the real path")
    if not any(f.path == f"{path.name}/__init__.py" for f in files):
        raise DnaSourceError(str(path), "a package directory needs an __init__.py")
    files.sort(key=lambda f: f.path)
    return DnaSource(name=path.name, kind="package", files=tuple(files))


def content_hash(source: DnaSource) -> str:
    """The SHA-256 hex digest naming ``source`` (see the module docstring)."""
    h = hashlib.sha256()

    def field(value: bytes) -> None:
        h.update(str(len(value)).encode())
        h.update(b":")
        h.update(value)

    field(DNA_FORMAT.encode())
    field(source.kind.encode())
    field(source.name.encode())
    for item in sorted(source.files, key=lambda f: f.path):
        field(os.fsencode(item.path))
        field(b"x" if item.executable else b"-")
        field(item.data)
    return h.hexdigest()


def hash_path(path: Path) -> str:
    """The digest of the module file or package directory at ``path``."""
    return content_hash(read_source(path))


# --------------------------------------------------------------------------
# Entry verification.


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry_files(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Every non-directory under ``root`` (except the manifest) and any oddities found."""
    found: dict[str, Path] = {}
    odd: list[str] = []
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(current)
        for name in dirnames:
            if (here / name).is_symlink():
                odd.append(f"{(here / name).relative_to(root).as_posix()}: is a symlink")
        for name in filenames:
            full = here / name
            rel = full.relative_to(root).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if full.is_symlink() or not full.is_file():
                odd.append(f"{rel}: is not a regular file")
                continue
            found[rel] = full
    return found, odd


def verify_entry(root: Path, digest: str) -> list[str]:
    """Check the entry at ``root`` against its manifest; return the problems (empty if intact).

    Problems: manifest missing, unreadable or for another digest; a listed
    file missing, changed, or with another exec bit; an unlisted file; a
    writable file; a symlink or special file.
    """
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        if manifest["format"] != DNA_FORMAT or manifest["digest"] != digest:
            return ["manifest is for another format or digest"]
        listed = manifest["files"]
        if not isinstance(listed, dict):
            return ["manifest files is not a mapping"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest unusable: {exc}"]
    problems: list[str] = []
    try:
        found, odd = _entry_files(root)
        problems += odd
        for rel in sorted(set(listed) - set(found)):
            problems.append(f"{rel}: missing")
        for rel in sorted(set(found) - set(listed)):
            problems.append(f"{rel}: not in the manifest")
        for rel in sorted(set(found) & set(listed)):
            want = listed[rel]
            full = found[rel]
            mode = full.stat().st_mode
            if mode & 0o222:
                problems.append(f"{rel}: is writable")
            if not isinstance(want, dict) or _file_sha256(full) != want.get("sha256"):
                problems.append(f"{rel}: content changed")
            elif bool(mode & stat.S_IXUSR) != (want.get("mode") == "x"):
                problems.append(f"{rel}: executable bit changed")
    except OSError as exc:
        problems.append(f"unreadable: {exc}")
    return problems


# --------------------------------------------------------------------------
# Building and installing.


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_writable(path: Path) -> None:
    for current, dirnames, _ in os.walk(path, followlinks=False):
        os.chmod(current, 0o700)
        for name in dirnames:
            full = Path(current) / name
            if not full.is_symlink():
                os.chmod(full, 0o700)


def force_rmtree(path: Path) -> None:
    """Remove ``path`` even though its directories are read-only; missing is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            _make_writable(path)
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


def _compile_error(exc: py_compile.PyCompileError) -> str:
    """What is wrong, in one line, by line and column of the user's file (the traceback
    py_compile gives names the cache's copy and spreads over several lines)."""
    error = exc.exc_value
    if isinstance(error, SyntaxError):
        where = f"line {error.lineno}" if error.lineno else "somewhere"
        if error.lineno and error.offset:
            where += f", column {error.offset}"
        text = (error.text or "").strip()
        shown = f": {text[:200]!r}" if text else ""
        return f"{type(error).__name__} at {where}: {error.msg}{shown}"
    return f"{exc.exc_type_name}: {error}"[:500]


def _write_tree(tmp: Path, source: DnaSource, final: Path) -> None:
    """Write ``source`` into ``tmp``, byte-compile it, write the manifest."""
    for item in source.files:
        target = tmp / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.data)
        os.chmod(target, 0o755 if item.executable else 0o644)
    for item in source.files:
        if not item.path.endswith(".py"):
            continue
        target = tmp / item.path
        try:
            py_compile.compile(
                str(target),
                cfile=importlib.util.cache_from_source(str(target)),
                dfile=str(final / item.path),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
        except py_compile.PyCompileError as exc:
            raise DnaSourceError(item.path, f"does not compile: {_compile_error(exc)}") from exc
    found, _ = _entry_files(tmp)
    manifest = {
        "format": DNA_FORMAT,
        "digest": content_hash(source),
        "name": source.name,
        "kind": source.kind,
        "files": {
            rel: {
                "sha256": _file_sha256(full),
                "mode": "x" if full.stat().st_mode & stat.S_IXUSR else "-",
            }
            for rel, full in sorted(found.items())
        },
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _seal(tmp: Path) -> None:
    """fsync every file, make everything read-only, fsync every directory (deepest first)."""
    dirs: list[Path] = []
    for current, _, filenames in os.walk(tmp, followlinks=False):
        dirs.append(Path(current))
        for name in filenames:
            full = Path(current) / name
            fd = os.open(full, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(full, 0o555 if full.stat().st_mode & stat.S_IXUSR else 0o444)
    for directory in reversed(dirs):
        os.chmod(directory, 0o555)
        _fsync_dir(directory)


def is_digest(name: str) -> bool:
    """``name`` is a digest as :func:`content_hash` writes it (an entry's directory name)."""
    return len(name) == 64 and set(name) <= _HEX


@attrs.define(eq=False)
class DnaHold:
    """Digests a caller is about to use or uses: :meth:`DnaCache.discard` skips them.

    Take one before :meth:`DnaCache.ensure` (pass it there: the digest is
    pinned before the entry is looked for) and release it once the entry is
    referenced where the pruning driver looks (a cell's slot). Usable as a
    context manager; :meth:`release` is idempotent.
    """

    _cache: DnaCache
    _digests: set[str] = attrs.Factory(set)
    _released: bool = False

    def add(self, digest: str) -> None:
        """Pin ``digest`` until :meth:`release` (nothing once released)."""
        with self._cache._lock:
            if not self._released and digest not in self._digests:
                self._digests.add(digest)
                self._cache._held[digest] += 1

    def release(self) -> None:
        """Unpin every digest of this hold."""
        with self._cache._lock:
            if self._released:
                return
            self._released = True
            for digest in self._digests:
                self._cache._held[digest] -= 1
                if self._cache._held[digest] <= 0:
                    del self._cache._held[digest]

    def __enter__(self) -> DnaHold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@attrs.define(eq=False)
class DnaCache:
    """The content-addressed code cache under one directory (``paths.cache_dir``).

    Safe to use from several threads and processes at once: entries appear
    only by atomic rename and are never modified in place (but for the
    directory's time, their last use); they go only by atomic rename too
    (:meth:`discard`, never a digest a :class:`DnaHold` of this cache pins).
    """

    _cache_dir: Path
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _held: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)

    @classmethod
    def from_paths(cls, paths: Paths) -> DnaCache:
        """The cache at ``paths.cache_dir``."""
        return cls(paths.cache_dir)

    @property
    def cache_dir(self) -> Path:
        """The directory holding the entries."""
        return self._cache_dir

    def entry_path(self, digest: str) -> Path:
        """Where the entry for ``digest`` lives (whether or not it exists)."""
        return self._cache_dir / digest

    def hold(self) -> DnaHold:
        """A new, empty :class:`DnaHold` on this cache."""
        return DnaHold(self)

    def held(self) -> set[str]:
        """The digests some :class:`DnaHold` pins now."""
        with self._lock:
            return set(self._held)

    def ensure(self, source_path: Path, hold: DnaHold | None = None) -> DnaEntry:
        """Return the intact entry for the code at ``source_path``, building it if needed.

        Reuses an existing entry that verifies; rebuilds a missing or damaged
        one; either way its last use becomes now. With ``hold``, the digest is
        pinned there before the entry is looked for: a concurrent
        :meth:`discard` cannot remove the entry this returns (without, it
        may). Raises :class:`~cellmesh.actors.errors.DnaSourceError` for bad
        source (including code that does not compile) and
        :class:`~cellmesh.actors.errors.DnaCacheError` when the cache
        directory cannot hold the entry.
        """
        source = read_source(source_path)
        digest = content_hash(source)
        if hold is not None:
            hold.add(digest)
        final = self.entry_path(digest)
        if final.is_dir() and not verify_entry(final, digest):
            entry = DnaEntry(
                digest=digest, root=final, name=source.name, kind=source.kind, reused=True
            )
        else:
            entry = self._build(source, digest)
        self.touch([digest])
        return entry

    def touch(self, digests: Iterable[str]) -> None:
        """Record that the entries of ``digests`` are used now (missing ones are skipped)."""
        for digest in digests:
            with contextlib.suppress(OSError):
                os.utime(self.entry_path(digest))

    def entries(self) -> list[CachedEntry]:
        """Every entry in the cache, with its last use and whether it is linked elsewhere.

        ``linked``: its manifest file has more than one hard link, so a DNA
        directory (of this root's cells or another's) holds the entry. Only
        ``<digest>`` directories are listed; an empty list when the cache
        directory does not exist. Raises OSError when it cannot be read.
        """
        try:
            names = os.listdir(self._cache_dir)
        except FileNotFoundError:
            return []
        found: list[CachedEntry] = []
        for name in sorted(names):
            if not is_digest(name):
                continue
            path = self._cache_dir / name
            try:
                st = path.lstat()
                if not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    linked = (path / MANIFEST_NAME).lstat().st_nlink > 1
                except FileNotFoundError:
                    linked = False
            except FileNotFoundError:
                continue  # removed meanwhile
            found.append(CachedEntry(digest=name, last_used=st.st_mtime, linked=linked))
        return found

    def discard(self, digest: str) -> bool:
        """Remove the entry of ``digest`` unless a :class:`DnaHold` pins it.

        Crash-safe (module doc): renamed into a ``.trash-*`` directory, then
        deleted. Returns True when this call removed it, False when it is
        pinned or was not there. Raises OSError when it cannot be moved or
        deleted (a ``.trash-*`` directory left behind goes with
        :meth:`sweep_stale`).
        """
        if not is_digest(digest):
            raise ValueError(f"{digest!r} is not a DNA digest")
        return self._trash(self.entry_path(digest), digest, unless_held=True)

    def _trash(self, path: Path, digest: str, *, unless_held: bool = False) -> bool:
        """Move ``path`` into a fresh ``.trash-*`` directory and delete that.

        False when ``path`` was gone (or, with ``unless_held``, ``digest`` is
        pinned: checked under the lock :meth:`DnaHold.add` takes). OSError
        from the move or the deletion propagates.
        """
        trash = Path(tempfile.mkdtemp(prefix=f".trash-{digest[:16]}-", dir=self._cache_dir))
        try:
            with self._lock:
                if unless_held and self._held[digest] > 0:
                    return False
                os.rename(path, trash / "entry")
            return True
        except FileNotFoundError:
            return False
        finally:
            force_rmtree(trash)

    def sweep_stale(self, *, older_than: float = 3600.0) -> list[str]:
        """Remove ``.build-*`` / ``.trash-*`` directories older than ``older_than`` seconds.

        They are what builders killed mid-build leave behind. A live build is
        far younger than the default hour, so it is never swept. Returns the
        names removed. Entries (``<digest>``) are never touched.
        """
        removed: list[str] = []
        try:
            candidates = list(self._cache_dir.iterdir())
        except FileNotFoundError:
            return removed
        limit = time.time() - older_than
        for path in sorted(candidates):
            if not path.name.startswith((".build-", ".trash-")):
                continue
            try:
                if path.lstat().st_mtime >= limit:
                    continue
            except FileNotFoundError:
                continue
            force_rmtree(path)
            removed.append(path.name)
        return removed

    def _build(self, source: DnaSource, digest: str) -> DnaEntry:
        try:
            self._cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".build-{digest[:16]}-", dir=self._cache_dir))
        except OSError as exc:
            raise DnaCacheError(str(self._cache_dir), f"cannot create: {exc}") from exc
        final = self.entry_path(digest)
        try:
            try:
                _write_tree(tmp, source, final)
                _seal(tmp)
            except OSError as exc:
                raise DnaCacheError(str(tmp), f"cannot write the entry: {exc}") from exc
            reused = self._install(tmp, final, digest)
        finally:
            force_rmtree(tmp)
        return DnaEntry(
            digest=digest, root=final, name=source.name, kind=source.kind, reused=reused
        )

    def _install(self, tmp: Path, final: Path, digest: str) -> bool:
        """Rename ``tmp`` to ``final``; True when another builder's intact entry won."""
        for _ in range(_INSTALL_ATTEMPTS):
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise DnaCacheError(str(final), f"cannot install: {exc}") from exc
            else:
                _fsync_dir(self._cache_dir)
                return False
            if not verify_entry(final, digest):
                return True  # we lost the race to an intact entry; ours is discarded
            try:
                self._trash(final, digest)  # (False: another builder moved it first)
            except OSError as exc:
                raise DnaCacheError(str(final), f"cannot replace a damaged entry: {exc}") from exc
        raise DnaCacheError(str(final), "the entry kept changing while it was being installed")


__all__ = [
    "DNA_FORMAT",
    "MANIFEST_NAME",
    "MAX_SOURCE_BYTES",
    "DnaCache",
    "DnaEntry",
    "DnaHold",
    "DnaSource",
    "SourceFile",
    "content_hash",
    "force_rmtree",
    "hash_path",
    "is_digest",
    "read_source",
    "verify_entry",
]
