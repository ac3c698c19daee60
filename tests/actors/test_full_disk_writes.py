"""Files the root writes, on a really full disk (a small tmpfs, filled).

The group record (``group.json``): a membership change saves it before it
acts. When the disk is full the change must fail with an error naming the
file and leave the group as it was, so that it can be asked for again once
there is room (it used to keep a member in memory that was never written nor
started: the group stuck until restart). The root's lock file: a start that
cannot write its pid names the file and does not keep the lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fulldisk import NEEDS_ROOT, fill, small_tmpfs

from cellmesh.actors._replicas_group import RECORD_NAME, Group, write_record
from cellmesh.actors._rootlock import RootLock
from cellmesh.actors.errors import RootRequestError
from cellmesh.actors.membership import GroupRecord
from cellmesh.config import Paths

pytestmark = NEEDS_ROOT


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "64k") as mount:
        yield mount


def _group(data_dir: Path, record: GroupRecord) -> Group:
    stub: Any = None  # the parts of a group that saving its record does not touch
    return Group(
        name="kv", decl=stub, supervisor="top", socket_path=data_dir / "kv.sock",
        listener=stub, peers_dir=data_dir, data_dir=data_dir, record=record, target=3,
    )


async def test_a_record_that_cannot_be_written_leaves_the_group_as_it_was(
    small_disk: Path,
) -> None:
    data_dir = small_disk / "kv"
    record = GroupRecord.create(3)
    write_record(data_dir, record)
    group = _group(data_dir, record)
    filler = fill(small_disk)
    grown, new = record.allocate()
    with pytest.raises(RootRequestError) as caught:
        await group.save(grown)
    message = str(caught.value)
    assert str(data_dir / RECORD_NAME) in message and "No space left" in message, message
    assert group.record is record  # unchanged in memory ...
    assert _on_disk(data_dir) == record  # ... and on disk
    assert not list(data_dir.glob(".*.tmp"))  # the partial temp file gave its space back
    filler.unlink()
    await group.save(grown)  # room again: the same change goes through
    assert group.record is grown and new in grown.members
    assert _on_disk(data_dir) == grown


def _on_disk(data_dir: Path) -> GroupRecord:
    path = data_dir / RECORD_NAME
    return GroupRecord.from_json(path.read_text(), source=str(path))


def test_a_root_lock_that_cannot_be_written_names_its_file_and_is_not_kept(
    small_disk: Path,
) -> None:
    paths = Paths.from_env({"CELL_HOME": str(small_disk / "home")})
    paths.socket_dir.mkdir(parents=True, mode=0o700)
    filler = fill(small_disk)
    with pytest.raises(OSError) as caught:
        RootLock.acquire(paths)
    assert caught.value.errno == 28
    assert caught.value.filename == str(paths.socket_dir / "mitosis.lock")
    filler.unlink()
    with RootLock.acquire(paths):  # not held by the failed attempt
        pass
