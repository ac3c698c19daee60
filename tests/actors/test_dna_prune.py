"""Pruning the DNA cache: the pure policy, the cache's removal and pins, the root's driver.

The policy (``cellmesh.actors._dnakeep``) is checked without I/O; the cache's
``discard`` and ``DnaHold`` on a real directory; the driver against builds
held open in a thread (synchronised by events, never by sleeping); and a real
root swapped five times keeps exactly what its cell needs plus
``[root] dna_cache_keep`` recent entries (docs/root.md, "The DNA cache").
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rootcells
import trio
from swapcells import Add, Total, source

from cellmesh import Synapse
from cellmesh.actors import dna as dna_module
from cellmesh.actors._dnakeep import CachedEntry, entries_to_remove
from cellmesh.actors._dnaprune import DnaPruner, prune_pass
from cellmesh.actors._tasks import Background
from cellmesh.actors.control import SwapCell, SwapReport
from cellmesh.actors.dna import MANIFEST_NAME, DnaCache
from cellmesh.actors.manifest import ManifestError, parse_manifest
from cellmesh.actors.root import Root
from cellmesh.cli._client import ask_root
from cellmesh.config import Paths
from cellmesh.testing.mesh import open_root

# --------------------------------------------------------------------------
# The policy.


def entry(digest: str, used: float, *, linked: bool = False) -> CachedEntry:
    return CachedEntry(digest=digest, last_used=used, linked=linked)


def test_dna_prune_policy_keeps_referenced_linked_and_the_most_recent() -> None:
    entries = [
        entry("run", 1.0), entry("prev", 2.0), entry("other-root", 0.5, linked=True),
        entry("old1", 3.0), entry("old2", 4.0), entry("new1", 9.0), entry("new2", 8.0),
    ]
    doomed = entries_to_remove(entries, {"run", "prev", "missing"}, keep=2)
    assert doomed == ("old1", "old2")  # oldest first; referenced/linked never count


def test_dna_prune_policy_keep_zero_removes_every_unneeded_entry() -> None:
    entries = [entry("a", 1.0), entry("b", 2.0), entry("c", 3.0)]
    assert entries_to_remove(entries, {"b"}, keep=0) == ("a", "c")
    assert entries_to_remove(entries, set(), keep=3) == ()
    assert entries_to_remove([], {"a"}, keep=0) == ()


def test_dna_prune_policy_answer_does_not_depend_on_listing_order() -> None:
    entries = [entry("a", 5.0), entry("b", 5.0), entry("c", 5.0), entry("d", 1.0)]
    answers = {entries_to_remove(p, set(), keep=2) for p in itertools.permutations(entries)}
    assert answers == {("d", "c")}  # equal times: the greater digest goes first


def test_dna_prune_policy_refuses_a_negative_keep() -> None:
    with pytest.raises(ValueError, match="keep must be >= 0"):
        entries_to_remove([], set(), keep=-1)


# --------------------------------------------------------------------------
# The cache: discard, pins, listing.


@pytest.fixture
def cache(tmp_path: Path) -> DnaCache:
    return DnaCache.from_paths(Paths.from_env({"CELL_HOME": str(tmp_path / "home")}))


def module(tmp_path: Path, text: str, name: str = "cellcode") -> Path:
    """A cell module ``name.py`` in its own directory (one per ``text``)."""
    where = tmp_path / "src" / str(abs(hash(text)))
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.py"
    path.write_text(text)
    return path


def on_disk(cache: DnaCache) -> set[str]:
    return {p.name for p in cache.cache_dir.iterdir() if not p.name.startswith(".")}


def leftovers(cache: DnaCache) -> list[str]:
    return [p.name for p in cache.cache_dir.iterdir() if p.name.startswith(".")]


def test_dna_prune_discard_removes_an_entry_whole_and_leaves_nothing(
    tmp_path: Path, cache: DnaCache
) -> None:
    e = cache.ensure(module(tmp_path, "X = 1\n"))
    assert cache.discard(e.digest) is True
    assert on_disk(cache) == set() and leftovers(cache) == []
    assert cache.discard(e.digest) is False  # gone already
    with pytest.raises(ValueError, match="not a DNA digest"):
        cache.discard("../etc")


def test_dna_prune_discard_skips_a_held_digest_until_released(
    tmp_path: Path, cache: DnaCache
) -> None:
    path = module(tmp_path, "X = 2\n")
    with cache.hold() as hold:
        e = cache.ensure(path, hold)
        assert cache.held() == {e.digest}
        assert cache.discard(e.digest) is False
        assert e.root.is_dir()
    assert cache.held() == set()
    hold.add(e.digest)  # a released hold pins nothing
    assert cache.discard(e.digest) is True


def test_dna_prune_entries_report_last_use_and_links(tmp_path: Path, cache: DnaCache) -> None:
    a = cache.ensure(module(tmp_path, "A = 1\n"))
    b = cache.ensure(module(tmp_path, "B = 1\n"))
    os.utime(a.root, (1000.0, 1000.0))
    os.utime(b.root, (2000.0, 2000.0))
    (cache.cache_dir / ".build-x").mkdir()  # never listed
    # A cell's DNA directory holds hard links into the entry (as _launch links it).
    os.link(b.root / MANIFEST_NAME, tmp_path / "held-elsewhere")
    found = {e.digest: e for e in cache.entries()}
    assert set(found) == {a.digest, b.digest}
    assert (found[a.digest].last_used, found[a.digest].linked) == (1000.0, False)
    assert (found[b.digest].last_used, found[b.digest].linked) == (2000.0, True)
    cache.touch([a.digest, "f" * 64])  # now; a missing one is skipped
    assert {e.digest: e for e in cache.entries()}[a.digest].last_used > 2000.0


def test_dna_prune_pass_logs_a_removal_that_fails_and_goes_on(
    tmp_path: Path, cache: DnaCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = [cache.ensure(module(tmp_path, f"V = {i}\n")) for i in range(3)]
    for i, e in enumerate(built):
        os.utime(e.root, (1000.0 + i, 1000.0 + i))
    real = DnaCache.discard

    def flaky(self: DnaCache, digest: str) -> bool:
        if digest == built[0].digest:
            raise PermissionError(13, "Permission denied")
        return real(self, digest)

    monkeypatch.setattr(DnaCache, "discard", flaky)
    removed, failed = prune_pass(cache, {built[2].digest}, keep=0)
    assert removed == [built[1].digest]
    assert failed == [f"cannot remove {built[0].digest[:12]}: [Errno 13] Permission denied"]
    assert on_disk(cache) == {built[0].digest, built[2].digest}


# --------------------------------------------------------------------------
# The driver against a build in flight.


def blocking(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[threading.Event, threading.Event]:
    """Make ``cellmesh.actors.dna.<name>`` stop until released: (reached, release)."""
    reached, release = threading.Event(), threading.Event()
    real: Callable[..., object] = getattr(dna_module, name)

    def blocked(*args: object) -> object:
        reached.set()
        release.wait()
        return real(*args)

    monkeypatch.setattr(dna_module, name, blocked)
    return reached, release


@pytest.mark.parametrize("stage", ["reuse", "build"])
async def test_dna_prune_never_removes_an_entry_being_built_or_reused(
    tmp_path: Path, cache: DnaCache, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    cache.ensure(module(tmp_path, "OLD = 1\n"))
    path = module(tmp_path, "NEW = 1\n")
    log: list[str] = []
    pruner = DnaPruner(cache=cache, slots={}, log=log.append, keep=0)
    async with trio.open_nursery() as nursery:
        pruner.start(Background(nursery, log.append))
        await pruner.settled()  # the first pass: OLD goes (nothing references it)
        assert on_disk(cache) == set()
        if stage == "reuse":  # an unreferenced entry, the oldest there is
            reused = cache.ensure(path)
            os.utime(reused.root, (1.0, 1.0))
        # Stop the build right after its digest is pinned: in the reuse check, or
        # before its directory is sealed (installed only then).
        reached, release = blocking(monkeypatch, "verify_entry" if stage == "reuse" else "_seal")
        with cache.hold() as hold:
            got: list[dna_module.DnaEntry] = []
            built = trio.Event()

            async def build() -> None:
                got.append(await trio.to_thread.run_sync(cache.ensure, path, hold))
                built.set()

            nursery.start_soon(build)
            assert await trio.to_thread.run_sync(reached.wait, 30.0)
            pruner.request()
            await pruner.settled()  # a pass while the build is in flight
            release.set()
            with trio.fail_after(30):
                await built.wait()
            assert got[0].root.is_dir()
            pruner.request()
            await pruner.settled()  # held until the caller references it
            assert on_disk(cache) == {got[0].digest}
        pruner.request()
        await pruner.settled()
        assert on_disk(cache) == set() and leftovers(cache) == []
        nursery.cancel_scope.cancel()
    assert not [line for line in log if "cannot" in line or "contained" in line]


# --------------------------------------------------------------------------
# A real root.


COUNTER = '[cells.counter]\ndna = "counter.py"\n'


def cached(root: Root) -> set[str]:
    return {p.name for p in root.paths.cache_dir.iterdir() if not p.name.startswith(".")}


async def swap(root: Root, *, rollback: bool = False) -> tuple[str, str]:
    """Swap the counter through the control socket, as ``cellmesh swap``; (outcome, to_dna)."""
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
        reply = await ask_root(syn, SwapCell(name="counter", timeout=20.0, grace=0.1,
                                             rollback=rollback))
    assert isinstance(reply, SwapReport)
    return reply.outcome, reply.to_dna


@pytest.fixture
def home() -> Iterator[Path]:
    """A short home (socket paths) with the cells' helper module."""
    path = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    shutil.copy(Path(rootcells.__file__), path / "rootcells.py")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_dna_prune_after_swaps_keeps_the_running_code_its_rollback_and_recent(
    home: Path,
) -> None:
    (home / "counter.py").write_text(source("a"))
    async with open_root(home, "[root]\ndna_cache_keep = 1\n" + COUNTER) as root:

        async def version() -> str:
            async with Synapse.grow("counter", socket_dir=root.paths.socket_dir) as syn:
                reply = await syn.fire(Add(n=0))
            assert isinstance(reply, Total)
            return reply.version

        slot = root.slots["counter"]
        digests = [slot.dna_digest]
        for v in "bcdef":
            (home / "counter.py").write_text(source(v))
            outcome, to_dna = await swap(root)  # returns once the cache is pruned
            assert outcome == "swapped"
            digests.append(to_dna)
            # in force, the rollback target, and the one most recently used before them
            assert cached(root) == set(digests[-3:])
        assert (slot.dna_digest, slot.previous_dna and slot.previous_dna.digest) == (
            digests[-1], digests[-2])
        assert await version() == "f"
        assert await swap(root, rollback=True) == ("swapped", digests[-2])
        assert await version() == "e"
        assert cached(root) == set(digests[-3:])  # e runs, f is the rollback, d is recent
        (home / "counter.py").write_text(source("d"))
        assert await swap(root) == ("swapped", digests[-3])  # the kept one: no rebuild
        assert cached(root) == set(digests[-3:])
        assert [p.name for p in root.paths.cache_dir.iterdir() if p.name.startswith(".")] == []


async def test_dna_prune_at_start_removes_what_earlier_roots_left(home: Path) -> None:
    paths = Paths.from_env({"CELL_HOME": str(home)})
    cache = DnaCache.from_paths(paths)
    old = [cache.ensure(module(home, f"OLD = {i}\n", "oldcell")) for i in range(4)]
    for i, e in enumerate(old):
        os.utime(e.root, (1000.0 + i, 1000.0 + i))
    (home / "counter.py").write_text(source("a"))
    async with open_root(home, "[root]\ndna_cache_keep = 2\n" + COUNTER) as root:
        assert await swap(root) == ("unchanged", root.slots["counter"].dna_digest)
        # the counter's code, and the two most recently used of the old ones
        assert cached(root) == {root.slots["counter"].dna_digest, old[3].digest, old[2].digest}


@pytest.mark.parametrize(
    ("value", "said"),
    [("-1", "expected an integer from 0 to 10000, got -1"),
     ('"5"', "expected an integer >= 0, got string '5'"),
     ("true", "expected an integer >= 0, got boolean True"),
     ("10001", "expected an integer from 0 to 10000, got 10001")],
)
def test_dna_prune_keep_knob_bad_values_are_refused_naming_it(value: str, said: str) -> None:
    toml = f"[root]\ndna_cache_keep = {value}\n" + COUNTER
    with pytest.raises(ManifestError, match=f"root.dna_cache_keep: {said}"):
        parse_manifest(toml, path=Path("/srv/mesh/cellmesh.toml"))
    ok = parse_manifest(COUNTER, path=Path("/srv/mesh/cellmesh.toml"))
    assert ok.root.dna_cache_keep == 5
