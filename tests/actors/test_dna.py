"""DNA cache: stable content hash, atomic read-only entries, damage detection, races."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellmesh.actors.dna import (
    MANIFEST_NAME,
    DnaCache,
    content_hash,
    force_rmtree,
    hash_path,
    read_source,
    verify_entry,
)
from cellmesh.actors.errors import DnaCacheError, DnaSourceError
from cellmesh.config import Paths


def make_package(root: Path, name: str = "pkg") -> Path:
    pkg = root / name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub.mod import VALUE\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("VALUE = 42\n")
    (pkg / "data.txt").write_text("hello\n")
    return pkg


@pytest.fixture
def cache(tmp_path: Path) -> DnaCache:
    return DnaCache.from_paths(Paths.from_env({"CELL_HOME": str(tmp_path / "home")}))


def leftovers(cache: DnaCache) -> list[str]:
    return sorted(p.name for p in cache.cache_dir.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------
# The hash.


def test_dna_hash_is_stable_across_copies_and_ignores_bytecode(tmp_path: Path) -> None:
    a = make_package(tmp_path / "a")
    b = make_package(tmp_path / "b")
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (b / "stray.pyc").write_bytes(b"junk")
    os.utime(b / "data.txt", (1, 1))  # mtimes are not hashed
    assert hash_path(a) == hash_path(b)
    assert len(hash_path(a)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "sub" / "mod.py").write_text("VALUE = 43\n"),
        lambda p: (p / "extra.py").write_text(""),
        lambda p: (p / "data.txt").unlink(),
        lambda p: (p / "data.txt").rename(p / "data2.txt"),
        lambda p: os.chmod(p / "data.txt", 0o755),
    ],
    ids=["content", "added", "removed", "renamed", "exec-bit"],
)
def test_dna_hash_changes_with_content_names_and_exec_bit(tmp_path: Path, change: object) -> None:
    pkg = make_package(tmp_path)
    before = hash_path(pkg)
    assert callable(change)
    change(pkg)
    assert hash_path(pkg) != before


def test_dna_hash_ignores_read_write_bits(tmp_path: Path) -> None:
    pkg = make_package(tmp_path)
    before = hash_path(pkg)
    os.chmod(pkg / "data.txt", 0o600)
    assert hash_path(pkg) == before


def test_dna_module_name_is_part_of_the_hash(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("X = 1\n")
    (tmp_path / "two.py").write_text("X = 1\n")
    assert hash_path(tmp_path / "one.py") != hash_path(tmp_path / "two.py")
    source = read_source(tmp_path / "one.py")
    assert (source.name, source.kind, [f.path for f in source.files]) == (
        "one", "module", ["one.py"],
    )
    assert content_hash(source) == hash_path(tmp_path / "one.py")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "setup",
    [
        lambda p: p / "missing.py",
        lambda p: (p / "notes.txt", (p / "notes.txt").write_text(""))[0],
        lambda p: (p / "bad-name.py", (p / "bad-name.py").write_text(""))[0],
        lambda p: ((p / "nopkg").mkdir(), p / "nopkg")[1],
        lambda p: (make_package(p), (p / "pkg" / "link").symlink_to("/etc/passwd"), p / "pkg")[2],
        lambda p: (make_package(p), (p / "ln").symlink_to(p / "pkg"), p / "ln")[2],
        lambda p: (make_package(p), _fifo(p / "pkg" / "fifo"), p / "pkg")[2],
    ],
    ids=["missing", "not-py", "bad-name", "no-init", "symlink-inside", "symlink-root", "fifo"],
)
def test_dna_bad_sources_are_refused(tmp_path: Path, setup: object) -> None:
    assert callable(setup)
    path = setup(tmp_path)
    with pytest.raises(DnaSourceError):
        read_source(path)


# --------------------------------------------------------------------------
# Entries.


def test_dna_entry_is_read_only_byte_compiled_and_importable(
    tmp_path: Path, cache: DnaCache
) -> None:
    entry = cache.ensure(make_package(tmp_path))
    assert not entry.reused
    assert entry.root == cache.cache_dir / entry.digest
    assert (entry.name, entry.kind) == ("pkg", "package")
    assert verify_entry(entry.root, entry.digest) == []
    pycs = sorted(p.relative_to(entry.root).as_posix() for p in entry.root.rglob("*.pyc"))
    assert len(pycs) == 3
    for path in entry.root.rglob("*"):
        assert not path.stat().st_mode & 0o222, path
    manifest = json.loads((entry.root / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {
        p.relative_to(entry.root).as_posix()
        for p in entry.root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    # A fresh interpreter imports it from the entry alone, using the cached bytecode.
    out = subprocess.run(
        [sys.executable, "-B", "-c", "import pkg, sys; print(pkg.VALUE, pkg.__file__)"],
        env={"PYTHONPATH": str(entry.root), "PATH": os.environ.get("PATH", "")},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["42", str(entry.root / "pkg" / "__init__.py")]
    assert leftovers(cache) == []


def test_dna_unchanged_code_reuses_the_entry(tmp_path: Path, cache: DnaCache) -> None:
    pkg = make_package(tmp_path)
    first = cache.ensure(pkg)
    second = cache.ensure(pkg)
    assert second.reused
    assert second.root == first.root
    (pkg / "sub" / "mod.py").write_text("VALUE = 7\n")
    third = cache.ensure(pkg)
    assert not third.reused
    assert third.digest != first.digest
    assert sorted(p.name for p in cache.cache_dir.iterdir()) == sorted([first.digest, third.digest])


def test_dna_module_file_entry(tmp_path: Path, cache: DnaCache) -> None:
    mod = tmp_path / "cellcode.py"
    mod.write_text("def hello():\n    return 'hi'\n")
    entry = cache.ensure(mod)
    assert (entry.name, entry.kind) == ("cellcode", "module")
    assert (entry.root / "cellcode.py").read_text() == mod.read_text()
    assert (entry.root / "__pycache__").is_dir()


def damage_modes() -> list[str]:
    return ["changed", "missing", "extra", "manifest", "writable", "truncated-pyc"]


@pytest.mark.parametrize("how", damage_modes())
def test_dna_damaged_entry_is_detected_and_rebuilt(
    tmp_path: Path, cache: DnaCache, how: str
) -> None:
    entry = cache.ensure(make_package(tmp_path))
    target = entry.root / "pkg" / "sub" / "mod.py"
    os.chmod(target.parent, 0o755)
    os.chmod(entry.root, 0o755)
    if how == "changed":
        os.chmod(target, 0o644)
        target.write_text("VALUE = 666\n")
        os.chmod(target, 0o444)
    elif how == "missing":
        target.unlink()
    elif how == "extra":
        (target.parent / "evil.py").write_text("")
        os.chmod(target.parent / "evil.py", 0o444)
    elif how == "manifest":
        os.chmod(entry.root / MANIFEST_NAME, 0o644)
        (entry.root / MANIFEST_NAME).write_text("{not json")
    elif how == "writable":
        os.chmod(target, 0o644)
    else:
        pyc = next((entry.root / "pkg" / "sub" / "__pycache__").glob("mod.*.pyc"))
        os.chmod(pyc.parent, 0o755)
        os.chmod(pyc, 0o644)
        pyc.write_bytes(pyc.read_bytes()[:8])
    assert verify_entry(entry.root, entry.digest) != []
    rebuilt = cache.ensure(tmp_path / "pkg")
    assert not rebuilt.reused
    assert rebuilt.root == entry.root
    assert verify_entry(rebuilt.root, rebuilt.digest) == []
    assert (rebuilt.root / "pkg" / "sub" / "mod.py").read_text() == "VALUE = 42\n"
    assert leftovers(cache) == []


def test_dna_syntax_error_is_a_source_error_and_leaves_nothing(
    tmp_path: Path, cache: DnaCache
) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("import os\n\ndef f(:\n    pass\n")
    with pytest.raises(DnaSourceError) as info:
        cache.ensure(bad)
    # One line, by line and column of the user's file, quoting it: not py_compile's
    # traceback naming the cache's copy.
    assert str(info.value) == (
        "broken.py: does not compile: SyntaxError at line 3, column 7: invalid syntax: "
        "'def f(:'"
    )
    assert leftovers(cache) == []
    assert list(cache.cache_dir.iterdir()) == []


def test_dna_unwritable_cache_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "m.py").write_text("")
    with pytest.raises(DnaCacheError):
        DnaCache(blocker / "cache").ensure(tmp_path / "m.py")


# --------------------------------------------------------------------------
# Concurrent builders.


def test_dna_loser_of_the_rename_race_discards_its_build(
    tmp_path: Path, cache: DnaCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder that finds the entry installed under it uses the winner's entry."""
    pkg = make_package(tmp_path)
    winner = cache.ensure(pkg)
    # The second builder checked before the winner installed: force it to build.
    monkeypatch.setattr("cellmesh.actors.dna.verify_entry", _fail_first_check())
    loser = cache.ensure(pkg)
    assert loser.reused
    assert loser.root == winner.root
    assert leftovers(cache) == []


def _fail_first_check() -> object:
    calls = [0]

    def check(root: Path, digest: str) -> list[str]:
        calls[0] += 1
        if calls[0] == 1:
            return ["pretend it is absent"]
        return verify_entry(root, digest)

    return check


def test_dna_concurrent_builders_agree(tmp_path: Path, cache: DnaCache) -> None:
    pkg = make_package(tmp_path)
    barrier = threading.Barrier(8)
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        barrier.wait()
        try:
            results.append(cache.ensure(pkg).root)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert verify_entry(results[0], results[0].name) == []
    assert leftovers(cache) == []
    assert [p.name for p in cache.cache_dir.iterdir()] == [results[0].name]


def test_dna_force_rmtree_removes_read_only_trees(tmp_path: Path, cache: DnaCache) -> None:
    entry = cache.ensure(make_package(tmp_path))
    force_rmtree(entry.root)
    assert not entry.root.exists()
    force_rmtree(entry.root)  # missing is fine
    assert stat.S_ISDIR(cache.cache_dir.stat().st_mode)


def test_dna_sweep_stale_removes_only_old_leftovers(tmp_path: Path, cache: DnaCache) -> None:
    entry = cache.ensure(make_package(tmp_path))
    old_build = cache.cache_dir / ".build-0123456789abcdef-x"
    (old_build / "pkg").mkdir(parents=True)
    os.chmod(old_build / "pkg", 0o555)
    old_trash = cache.cache_dir / ".trash-0123456789abcdef-y"
    old_trash.mkdir()
    young = cache.cache_dir / ".build-fedcba9876543210-z"
    young.mkdir()
    for path in (old_build, old_trash):
        os.utime(path, (1_000_000, 1_000_000))
    os.utime(entry.root, (1_000_000, 1_000_000))
    assert cache.sweep_stale(older_than=60.0) == [old_build.name, old_trash.name]
    assert sorted(p.name for p in cache.cache_dir.iterdir()) == sorted([entry.digest, young.name])
    assert DnaCache(tmp_path / "absent").sweep_stale() == []


# ---------------------------------------------------------------- attacks (issue 10 item 8)


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can: races show up within a few hundred tries."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.usefixtures("busy_switching")
def test_dna_read_never_follows_a_file_swapped_for_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("SECRET = 'root only'\n")
    os.chmod(secret, 0o600)
    src = tmp_path / "cellcode.py"
    src.write_text("VALUE = 1\n")
    stop = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        evil = tmp_path / "evil"
        real = tmp_path / "real.py"
        os.link(src, real)
        while not stop.is_set():
            os.symlink(secret, evil)
            os.replace(evil, src)  # src is now a symlink to the secret
            os.link(real, evil)
            os.replace(evil, src)  # and the real file again
            flips += 1

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    outcomes = {"read": 0, "refused": 0}
    try:
        for _ in range(20000):
            try:
                source = read_source(src)
            except DnaSourceError as exc:
                assert "symlink" in exc.problem or "cannot be read" in exc.problem
                outcomes["refused"] += 1
            else:
                assert source.files[0].data == b"VALUE = 1\n"
                outcomes["read"] += 1
    finally:
        stop.set()
        thread.join()
    assert flips > 0 and outcomes["read"] > 0


@pytest.mark.usefixtures("busy_switching")
def test_dna_read_never_walks_into_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "key.py").write_text("KEY = 'root only'\n")
    pkg = make_package(tmp_path)
    sub = pkg / "sub"
    stop = threading.Event()

    def flip() -> None:
        evil = pkg / "evil"
        real = pkg / "real"
        while not stop.is_set():
            os.rename(sub, real)
            os.symlink(secret_dir, evil)
            os.rename(evil, sub)  # sub is now a symlink to the secret dir
            os.unlink(sub)
            os.rename(real, sub)

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            try:
                source = read_source(pkg)
            except DnaSourceError:
                continue
            assert all(b"root only" not in f.data for f in source.files)
            assert not any(f.path.endswith("key.py") for f in source.files)
    finally:
        stop.set()
        thread.join()


def test_dna_read_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    pkg = make_package(tmp_path)
    os.mkfifo(pkg / "pipe.py")
    with pytest.raises(DnaSourceError, match="not a regular file"):
        read_source(pkg)
