"""Byte format and replay rules of the write-ahead log: frames, records, snapshot files (pure).

Theory of operation
-------------------
This module only turns values into bytes and bytes back into values; it never
touches a file (:mod:`cellmesh.consensus.wal` does the I/O). Keeping it pure
lets the recovery rules be tested and fuzzed on in-memory buffers.

A segment file is a sequence of *frames*. Every frame has a 24-byte header::

    magic  4s  b"CMWL"
    kind   u8  FRAME_SEGMENT_HEADER (only at offset 0) or FRAME_BATCH
    flags  u8  0 (reserved)
    spare  u16 0 (reserved)
    length u32 payload length in bytes
    offset u64 the frame's own byte offset in its file ("self-locating")
    crc    u32 zlib.crc32 over the 20 header bytes before it, then the payload

All integers are little-endian. The checksum is CRC-32 (``zlib.crc32``):
CRC-32C is not in the standard library, and ``zlib.crc32`` runs at memory
speed in C, catches every burst error of up to 32 bits and misses random
damage with probability 2**-32. A cryptographic hash (``hashlib.blake2b``)
would be several times slower and defends against an attacker who can write
our data directory, which is not in our threat model. The self-locating
``offset`` field makes a stale or misplaced frame (and a frame-shaped run of
bytes inside user data) fail validation unless it sits exactly where it
claims to.

One ``WriteAheadLog.save`` call writes exactly one ``FRAME_BATCH`` frame, so
a batch is the unit of atomicity: after a crash it is either wholly valid or
it is the torn tail. The payload of a batch is a sequence of typed records,
each ``kind u8 | length u32 | body``:

* ``REC_SNAPSHOT``: a snapshot marker (:class:`SnapshotMark`). The log base
  moves to the snapshot; ``keep_suffix`` says whether entries after it
  survive (Raft section 7: kept iff the log held the snapshot's last entry
  with the same term -- the writer decides and records the decision, so
  replay never needs the entries the snapshot replaced).
* ``REC_HARD_STATE``: term, vote and commit (:class:`HardState`).
* ``REC_ENTRIES``: ``first_index`` then entries with consecutive indexes.
  Replay truncates the log to ``first_index - 1`` before appending, so an
  overwrite of a conflicting suffix is an ordinary record.

Records in a batch are applied in that order (snapshot, state, entries). A
``FRAME_SEGMENT_HEADER`` payload is ``version u16 | spare u16 | seq u64``
followed by records of the same encoding carrying the hard state and the
snapshot base current when the segment was created, so every segment is
self-describing and older segments can be deleted.

A snapshot file is ``b"CMSN" | version u16 | meta | data_len u64 | data |
crc u32`` where ``crc`` covers every byte before it.

The ``STATE`` file holds two fixed-size slots (at byte 0 and byte
:data:`STATE_SLOT_SIZE`), each a :class:`DirState` record::

    magic 4s b"CMST" | version u16 | flags u16 | sequence u64 | node u64 |
    term u64 | vote u64 | commit u64 | segment u64 | segment_index u64 |
    segment_size u64 | join_floor u64 | crc u32

``crc`` covers the bytes before it. A writer overwrites the slot of the
older record, so a torn write leaves the other slot valid; the valid slot
with the higher ``sequence`` wins.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import attrs

from cellmesh.consensus.types import Entry, EntryKind, HardState, SnapshotMeta, make_entry

FRAME_MAGIC: Final = b"CMWL"
SNAPSHOT_MAGIC: Final = b"CMSN"
FORMAT_VERSION: Final = 1

FRAME_SEGMENT_HEADER: Final = 1
FRAME_BATCH: Final = 2

REC_HARD_STATE: Final = 1
REC_ENTRIES: Final = 2
REC_SNAPSHOT: Final = 3

_FRAME_HEAD: Final = struct.Struct("<4sBBHIQ")
_CRC: Final = struct.Struct("<I")
FRAME_HEADER_SIZE: Final = _FRAME_HEAD.size + _CRC.size
MAX_FRAME_PAYLOAD: Final = 0xFFFF_FFFF

_SEG_HEAD: Final = struct.Struct("<HHQ")
_REC_HEAD: Final = struct.Struct("<BI")
_HARD_STATE: Final = struct.Struct("<QBQQ")
_ENTRIES_HEAD: Final = struct.Struct("<QI")
_ENTRY_HEAD: Final = struct.Struct("<QBI")
_SNAP_HEAD: Final = struct.Struct("<QQBII")
_NODE_ID: Final = struct.Struct("<Q")
_SNAPFILE_HEAD: Final = struct.Struct("<4sH")
_SNAPFILE_LEN: Final = struct.Struct("<Q")

_STATE: Final = struct.Struct("<4sHHQQQQQQQQQ")
STATE_MAGIC: Final = b"CMST"
STATE_SLOT_SIZE: Final = 128
STATE_FLAG_NODE: Final = 1  #: ``node`` is known
STATE_FLAG_VOTE: Final = 2  #: ``vote`` is set
STATE_FLAG_SEGMENT: Final = 4  #: ``segment`` (and its index and size) is set
STATE_FLAG_JOINING: Final = 8  #: the node joined with an empty log
STATE_FLAG_JOIN_FLOOR: Final = 16  #: ``join_floor`` is set
STATE_FLAG_JOIN_DONE: Final = 32  #: the joining node was promoted
_STATE_FLAGS: Final = 63

_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_KIND_BY_VALUE: Final = {int(k): k for k in EntryKind}


class MalformedRecord(Exception):
    """A checksummed payload does not decode; ``offset`` is relative to the payload."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (payload offset {offset})")
        self.offset = offset
        self.reason = reason


@attrs.frozen(kw_only=True)
class SnapshotMark:
    """Replay instruction: the log base becomes ``meta``; keep later entries iff ``keep_suffix``."""

    meta: SnapshotMeta
    keep_suffix: bool


@attrs.frozen(kw_only=True)
class EntriesRecord:
    """Replay instruction: truncate the log to ``first_index - 1``, then append ``entries``."""

    first_index: int
    entries: tuple[Entry, ...]


Record = SnapshotMark | HardState | EntriesRecord


@attrs.frozen(kw_only=True)
class Frame:
    """One checksum-valid frame found by :func:`scan_frames`."""

    offset: int
    kind: int
    payload: bytes

    @property
    def end(self) -> int:
        """Offset just past this frame."""
        return self.offset + FRAME_HEADER_SIZE + len(self.payload)


@attrs.frozen(kw_only=True)
class FrameScan:
    """Result of scanning a segment image.

    ``frames`` is the longest clean prefix of valid frames and ``end`` the
    offset just past it. If ``end`` is short of the image, ``damage`` says
    why the bytes at ``end`` are not a valid frame and ``resync`` is the
    offset of the first valid frame found after them (``None`` if none: the
    damage runs to the end of the image, which is what a torn write looks
    like).
    """

    frames: tuple[Frame, ...]
    end: int
    damage: str | None
    resync: int | None


# --------------------------------------------------------------------------
# Frames


def encode_frame(kind: int, payload: bytes, offset: int) -> bytes:
    """Frame ``payload`` for writing at byte ``offset`` of a segment file."""
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME_PAYLOAD}")
    head = _FRAME_HEAD.pack(FRAME_MAGIC, kind, 0, 0, len(payload), offset)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, _CRC.pack(crc), payload))


def _check_frame(data: bytes | memoryview, offset: int) -> tuple[int, int] | str:
    """Validate the frame at ``offset``: ``(kind, end)`` if valid, else the reason it is not."""
    size = len(data)
    if size - offset < FRAME_HEADER_SIZE:
        return "truncated frame header"
    magic, kind, flags, spare, length, self_offset = _FRAME_HEAD.unpack_from(data, offset)
    if magic != FRAME_MAGIC:
        return "bad frame magic"
    if self_offset != offset:
        return f"frame claims offset {self_offset}"
    end = offset + FRAME_HEADER_SIZE + length
    if end > size:
        return "frame extends past the end of the file"
    (stored,) = _CRC.unpack_from(data, offset + _FRAME_HEAD.size)
    view = memoryview(data)
    crc = zlib.crc32(view[offset + FRAME_HEADER_SIZE : end], zlib.crc32(view[offset : offset + 20]))
    if crc != stored:
        return "frame checksum mismatch"
    if flags or spare:
        return "reserved frame bits set"
    return kind, end


def scan_frames(data: bytes) -> FrameScan:
    """Split a segment image into its clean prefix of valid frames.

    Never raises: damage is reported in the result (see :class:`FrameScan`).
    The frame kinds are not interpreted here.
    """
    frames: list[Frame] = []
    offset = 0
    size = len(data)
    while offset < size:
        checked = _check_frame(data, offset)
        if isinstance(checked, str):
            return FrameScan(
                frames=tuple(frames),
                end=offset,
                damage=checked,
                resync=_find_valid_frame(data, offset + 1),
            )
        kind, end = checked
        frames.append(
            Frame(offset=offset, kind=kind, payload=data[offset + FRAME_HEADER_SIZE : end])
        )
        offset = end
    return FrameScan(frames=tuple(frames), end=offset, damage=None, resync=None)


def _find_valid_frame(data: bytes, start: int) -> int | None:
    """Offset of the first checksum-valid frame at or after ``start``, or ``None``."""
    position = data.find(FRAME_MAGIC, start)
    while position != -1:
        if not isinstance(_check_frame(data, position), str):
            return position
        position = data.find(FRAME_MAGIC, position + 1)
    return None


# --------------------------------------------------------------------------
# Records


def _record(kind: int, body: bytes) -> bytes:
    return _REC_HEAD.pack(kind, len(body)) + body


def encode_hard_state(state: HardState) -> bytes:
    """Encode one ``REC_HARD_STATE`` record."""
    has_vote = state.vote is not None
    vote = state.vote if state.vote is not None else 0
    return _record(REC_HARD_STATE, _HARD_STATE.pack(state.term, has_vote, vote, state.commit))


def encode_entries(first_index: int, entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    """Encode one ``REC_ENTRIES`` record; the caller guarantees consecutive indexes."""
    parts = [_ENTRIES_HEAD.pack(first_index, len(entries))]
    pack = _ENTRY_HEAD.pack
    for entry in entries:
        parts.append(pack(entry.term, entry.kind, len(entry.data)))
        parts.append(entry.data)
    return _record(REC_ENTRIES, b"".join(parts))


def _encode_meta(meta: SnapshotMeta, keep_suffix: bool) -> bytes:
    voters = sorted(meta.voters)
    learners = sorted(meta.learners)
    parts = [_SNAP_HEAD.pack(meta.index, meta.term, keep_suffix, len(voters), len(learners))]
    parts.extend(_NODE_ID.pack(node) for node in voters)
    parts.extend(_NODE_ID.pack(node) for node in learners)
    return b"".join(parts)


def encode_snapshot_mark(mark: SnapshotMark) -> bytes:
    """Encode one ``REC_SNAPSHOT`` record."""
    return _record(REC_SNAPSHOT, _encode_meta(mark.meta, mark.keep_suffix))


def encode_segment_header(seq: int, records: bytes) -> bytes:
    """Payload of a ``FRAME_SEGMENT_HEADER``: version, ``seq``, then encoded records."""
    return _SEG_HEAD.pack(FORMAT_VERSION, 0, seq) + records


def decode_segment_header(payload: bytes) -> tuple[int, list[Record]]:
    """Inverse of :func:`encode_segment_header`: ``(seq, records)``.

    Raises :class:`MalformedRecord` on anything that is not our encoding.
    """
    if len(payload) < _SEG_HEAD.size:
        raise MalformedRecord(0, "segment header too short")
    version, spare, seq = _SEG_HEAD.unpack_from(payload, 0)
    if version != FORMAT_VERSION or spare:
        raise MalformedRecord(0, f"unsupported segment format version {version}")
    return seq, decode_records(payload, _SEG_HEAD.size)


def decode_records(payload: bytes, start: int = 0) -> list[Record]:
    """Decode the records of a batch (or segment header) payload from ``start``.

    Raises :class:`MalformedRecord` on anything that is not our encoding.
    """
    records: list[Record] = []
    position = start
    size = len(payload)
    while position < size:
        if size - position < _REC_HEAD.size:
            raise MalformedRecord(position, "truncated record header")
        kind, length = _REC_HEAD.unpack_from(payload, position)
        body_start = position + _REC_HEAD.size
        body_end = body_start + length
        if body_end > size:
            raise MalformedRecord(position, "record extends past its frame")
        if kind == REC_HARD_STATE:
            records.append(_decode_hard_state(payload, body_start, body_end))
        elif kind == REC_ENTRIES:
            records.append(_decode_entries(payload, body_start, body_end))
        elif kind == REC_SNAPSHOT:
            meta, keep = _decode_meta(payload, body_start, body_end)
            records.append(SnapshotMark(meta=meta, keep_suffix=keep))
        else:
            raise MalformedRecord(position, f"unknown record kind {kind}")
        position = body_end
    return records


def _decode_hard_state(payload: bytes, start: int, end: int) -> HardState:
    if end - start != _HARD_STATE.size:
        raise MalformedRecord(start, "hard state record has the wrong size")
    term, has_vote, vote, commit = _HARD_STATE.unpack_from(payload, start)
    if has_vote > 1:
        raise MalformedRecord(start, "hard state vote flag is not 0 or 1")
    return HardState(term=term, vote=vote if has_vote else None, commit=commit)


def _decode_entries(payload: bytes, start: int, end: int) -> EntriesRecord:
    if end - start < _ENTRIES_HEAD.size:
        raise MalformedRecord(start, "entries record too short")
    first_index, count = _ENTRIES_HEAD.unpack_from(payload, start)
    position = start + _ENTRIES_HEAD.size
    if first_index < 1 or count > (end - position) // _ENTRY_HEAD.size:
        raise MalformedRecord(start, "entries record header is inconsistent")
    if first_index + count - 1 > _U64_MAX:
        raise MalformedRecord(start, "entry index overflows")
    unpack = _ENTRY_HEAD.unpack_from
    kinds = _KIND_BY_VALUE
    make = make_entry  # Entry(...) without attrs' __init__: recovery builds millions
    entries: list[Entry] = []
    append = entries.append
    for index in range(first_index, first_index + count):
        if end - position < _ENTRY_HEAD.size:
            raise MalformedRecord(position, "truncated entry header")
        term, kind_value, length = unpack(payload, position)
        position += _ENTRY_HEAD.size
        kind = kinds.get(kind_value)
        if kind is None or term < 1 or position + length > end:
            raise MalformedRecord(position, f"entry {index} is malformed")
        append(make(index, term, kind, payload[position : position + length]))
        position += length
    if position != end:
        raise MalformedRecord(position, "trailing bytes after entries")
    return EntriesRecord(first_index=first_index, entries=tuple(entries))


def _decode_meta(payload: bytes, start: int, end: int) -> tuple[SnapshotMeta, bool]:
    if end - start < _SNAP_HEAD.size:
        raise MalformedRecord(start, "snapshot record too short")
    index, term, keep, n_voters, n_learners = _SNAP_HEAD.unpack_from(payload, start)
    position = start + _SNAP_HEAD.size
    if keep > 1 or end - position != (n_voters + n_learners) * _NODE_ID.size:
        raise MalformedRecord(start, "snapshot record is inconsistent")
    ids = [
        _NODE_ID.unpack_from(payload, position + i * _NODE_ID.size)[0]
        for i in range(n_voters + n_learners)
    ]
    meta = SnapshotMeta(
        index=index,
        term=term,
        voters=frozenset(ids[:n_voters]),
        learners=frozenset(ids[n_voters:]),
    )
    return meta, bool(keep)


# --------------------------------------------------------------------------
# Replay


@attrs.define
class Replay:
    """Applies records in log order and yields the resulting log.

    Replay may start at any segment whose predecessors were all compacted: the
    entries it sees before a snapshot marker may have a gap below the marker,
    which the marker then covers. :meth:`entries` checks that what remains is
    consecutive from the base. Content errors raise :class:`MalformedRecord`
    with ``offset`` 0 (the caller knows which frame it fed).
    """

    hard_state: HardState = attrs.Factory(HardState)
    base: SnapshotMeta | None = None
    window: list[Entry] = attrs.Factory(list)

    def apply(self, record: Record) -> int:
        """Apply one record; return the highest entry index it wrote (0: none)."""
        if isinstance(record, HardState):
            self.hard_state = record
            return 0
        if isinstance(record, SnapshotMark):
            base_index = 0 if self.base is None else self.base.index
            if record.meta.index < base_index:
                raise MalformedRecord(0, "snapshot marker goes backwards")
            if record.keep_suffix:
                self._drop_through(record.meta.index)
            else:
                self.window = []
            self.base = record.meta
            return 0
        window = self.window
        first = record.first_index
        if not window or first <= window[0].index:
            self.window = list(record.entries)
        elif first > window[-1].index + 1:
            raise MalformedRecord(0, f"entries jump to index {first}")
        else:
            del window[first - window[0].index :]
            window.extend(record.entries)
        return record.entries[-1].index if record.entries else 0

    def _drop_through(self, index: int) -> None:
        window = self.window
        if window and window[0].index <= index:
            self.window = window[index - window[0].index + 1 :]

    def entries(self) -> tuple[Entry, ...]:
        """The final entries after the base, checked to be consecutive from it."""
        base_index = 0 if self.base is None else self.base.index
        self._drop_through(base_index)
        if self.window and self.window[0].index != base_index + 1:
            raise MalformedRecord(
                0, f"log starts at index {self.window[0].index} but the base is {base_index}"
            )
        return tuple(self.window)


# --------------------------------------------------------------------------
# The STATE file


@attrs.frozen(kw_only=True)
class DirState:
    """What a log directory promises about itself, kept in its ``STATE`` file.

    Facts a crash cannot take back, so recovery can tell lost state from a
    crash: ``node`` (the owner, ``None`` if not known yet); the last durable
    ``term``/``vote`` (recorded after every change, so the log must hold at
    least these); ``commit`` (entries up to it were committed, so the log or
    its snapshot must reach it); ``segment`` -- the newest segment created
    durably, with the index in its name and the ``segment_size`` it had when
    created (a crash never leaves it shorter); and the joining state
    (``joining``, ``join_floor``, ``join_done``). ``sequence`` orders
    records.
    """

    sequence: int = 0
    node: int | None = None
    term: int = 0
    vote: int | None = None
    commit: int = 0
    segment: int | None = None
    segment_index: int = 0
    segment_size: int = 0
    joining: bool = False
    join_floor: int | None = None
    join_done: bool = False


def encode_state(state: DirState) -> bytes:
    """One ``STATE`` slot (:data:`STATE_SLOT_SIZE` bytes, zero padded) for ``state``."""
    flags = (
        (STATE_FLAG_NODE if state.node is not None else 0)
        | (STATE_FLAG_VOTE if state.vote is not None else 0)
        | (STATE_FLAG_SEGMENT if state.segment is not None else 0)
        | (STATE_FLAG_JOINING if state.joining else 0)
        | (STATE_FLAG_JOIN_FLOOR if state.join_floor is not None else 0)
        | (STATE_FLAG_JOIN_DONE if state.join_done else 0)
    )
    body = _STATE.pack(
        STATE_MAGIC,
        FORMAT_VERSION,
        flags,
        state.sequence,
        state.node or 0,
        state.term,
        state.vote or 0,
        state.commit,
        state.segment or 0,
        state.segment_index,
        state.segment_size,
        state.join_floor or 0,
    )
    record = body + _CRC.pack(zlib.crc32(body))
    return record.ljust(STATE_SLOT_SIZE, b"\0")


def decode_state(slot: bytes) -> DirState:
    """Inverse of :func:`encode_state`; raises :class:`MalformedRecord` on anything else."""
    if len(slot) < _STATE.size + _CRC.size:
        raise MalformedRecord(0, "state record too short")
    (stored,) = _CRC.unpack_from(slot, _STATE.size)
    if zlib.crc32(memoryview(slot)[: _STATE.size]) != stored:
        raise MalformedRecord(_STATE.size, "state record checksum mismatch")
    magic, version, flags, sequence, node, term, vote, commit, seg, seg_index, seg_size, floor = (
        _STATE.unpack_from(slot, 0)
    )
    if magic != STATE_MAGIC or version != FORMAT_VERSION or flags & ~_STATE_FLAGS:
        raise MalformedRecord(0, "not a state record of a supported version")
    return DirState(
        sequence=sequence,
        node=node if flags & STATE_FLAG_NODE else None,
        term=term,
        vote=vote if flags & STATE_FLAG_VOTE else None,
        commit=commit,
        segment=seg if flags & STATE_FLAG_SEGMENT else None,
        segment_index=seg_index,
        segment_size=seg_size,
        joining=bool(flags & STATE_FLAG_JOINING),
        join_floor=floor if flags & STATE_FLAG_JOIN_FLOOR else None,
        join_done=bool(flags & STATE_FLAG_JOIN_DONE),
    )


def newest_state(image: bytes) -> DirState | None:
    """The valid slot of a ``STATE`` file image with the higher sequence; ``None`` if none."""
    found = []
    for start in (0, STATE_SLOT_SIZE):
        try:
            found.append(decode_state(image[start : start + STATE_SLOT_SIZE]))
        except MalformedRecord:
            continue
    return max(found, key=lambda state: state.sequence) if found else None


# --------------------------------------------------------------------------
# Snapshot files


def encode_snapshot_file(meta: SnapshotMeta, data: bytes) -> bytes:
    """The full content of a snapshot file for ``meta`` and ``data``."""
    meta_bytes = _encode_meta(meta, keep_suffix=False)
    body = b"".join(
        (
            _SNAPFILE_HEAD.pack(SNAPSHOT_MAGIC, FORMAT_VERSION),
            meta_bytes,
            _SNAPFILE_LEN.pack(len(data)),
            data,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_snapshot_file(content: bytes) -> tuple[SnapshotMeta, bytes]:
    """Inverse of :func:`encode_snapshot_file`; raises :class:`MalformedRecord`."""
    if len(content) < _SNAPFILE_HEAD.size + _SNAP_HEAD.size + _SNAPFILE_LEN.size + _CRC.size:
        raise MalformedRecord(0, "snapshot file too short")
    body_end = len(content) - _CRC.size
    (stored,) = _CRC.unpack_from(content, body_end)
    if zlib.crc32(memoryview(content)[:body_end]) != stored:
        raise MalformedRecord(body_end, "snapshot file checksum mismatch")
    magic, version = _SNAPFILE_HEAD.unpack_from(content, 0)
    if magic != SNAPSHOT_MAGIC or version != FORMAT_VERSION:
        raise MalformedRecord(0, "not a snapshot file of a supported version")
    position = _SNAPFILE_HEAD.size
    _, _, _, n_voters, n_learners = _SNAP_HEAD.unpack_from(content, position)
    meta_end = position + _SNAP_HEAD.size + (n_voters + n_learners) * _NODE_ID.size
    if meta_end + _SNAPFILE_LEN.size > body_end:
        raise MalformedRecord(position, "snapshot metadata overruns the file")
    meta, _ = _decode_meta(content, position, meta_end)
    (length,) = _SNAPFILE_LEN.unpack_from(content, meta_end)
    data_start = meta_end + _SNAPFILE_LEN.size
    if data_start + length != body_end:
        raise MalformedRecord(meta_end, "snapshot data length does not match the file")
    return meta, content[data_start:body_end]
