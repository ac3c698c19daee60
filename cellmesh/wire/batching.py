"""Outbound batching: turn a list of proteins into wire items, columnar where it pays.

Theory of operation
-------------------
A caller that sends many messages at once (``fire_many``, ``signal_many``)
hands them to :class:`OutboundBatch`. It validates and encodes every message
up front, so a bad field is reported before anything is sent, and groups
consecutive messages of the same protein into *runs*. A run of two or more
is kept as column values (one list per field) and travels as one ``columns``
item: int and float columns become RFC 8746 typed arrays, which cbor2 packs
and unpacks at C speed instead of one CBOR item per value. Single messages
travel as ordinary ``[kind, id, body]`` items.

Credit may allow only part of the batch at a time: :meth:`OutboundBatch.items`
cuts any sub-range ``[start, end)`` into items, slicing runs as needed.

Vesicles are indexed per frame, so a batch that carries any is re-encoded
one message per frame (``per_message``); each message then has its own
:class:`~cellmesh.wire.proteins.EncodeContext` holding its descriptors.

Single messages queued one at a time (``fire``, ``signal``) are grouped the
same way when their connection frames them at the end of a scheduler pass:
:func:`coalesce` turns the queued ``(kind, id, schema, body)`` entries into
wire items, consecutive calls (or signals) of one protein becoming one
columns item built from the already-validated bodies.

Pure: no I/O here; making a memfd is the injected ``make_vesicle``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from ..errors import FieldError
from .codec import Body, Kind, check_text, columns_item
from .proteins import EncodeContext, ProteinRegistry, Schema, VesicleSource

Entry: TypeAlias = tuple[int, int, Schema | None, Body | None]
"""One queued message: ``(CALL, id, schema, body)``, ``(SIGNAL, 0, schema, body)``
or ``(CANCEL, id, None, None)``; ``body`` is the validated wire form."""


def coalesce(entries: list[Entry], packed: bool = False) -> list[list[Any]]:
    """Wire items for queued entries, in order: each run of two or more calls
    (or signals) of one protein becomes one columns item, the rest plain items.

    ``packed`` lets ``str`` and ``bytes`` columns use the packed forms of
    docs/protocol.md section 11.3 (only when the peer announced it reads them).
    """
    out: list[list[Any]] = []
    i, n = 0, len(entries)
    while i < n:
        kind, call_id, schema, body = entries[i]
        if schema is None:
            out.append([Kind.CANCEL, call_id])
            i += 1
            continue
        j = i + 1
        while j < n and entries[j][2] is schema and entries[j][0] == kind:
            j += 1
        if j - i >= 2:
            run = entries[i:j]
            fields = list(zip(*[entry[3] for entry in run], strict=True))
            columns = [list(col) for col in fields[1:]]
            ids = None if kind == Kind.SIGNAL else [entry[1] for entry in run]
            out.append(columns_item(
                kind, schema.name, ids, schema.pack_columns(columns, packed), j - i
            ))
        elif kind == Kind.SIGNAL:
            out.append([Kind.SIGNAL, body])
        else:
            out.append([kind, call_id, body])
        i = j
    return out


def _encode_runs(
    registry: ProteinRegistry, msgs: list[Any], ctx: EncodeContext
) -> list[_Run | list[Any]]:
    """Validate and encode ``msgs`` sharing ``ctx``: runs of one protein as columns."""
    parts: list[_Run | list[Any]] = []
    i, n = 0, len(msgs)
    one_class = n > 1 and len(set(map(type, msgs))) == 1  # the common batch, at C speed
    while i < n:
        cls = type(msgs[i])
        j = n if one_class else i + 1
        while j < n and type(msgs[j]) is cls:
            j += 1
        if j - i >= 2:
            schema = registry.schema_for(msgs[i])
            parts.append(_Run(i, j, schema, schema.column_values(msgs[i:j], ctx)))
        else:
            schema = registry.schema_for(msgs[i])
            body = schema.encode(msgs[i], ctx)
            check_text(body, schema.field_names)  # (a run's text is checked by column_values)
            parts.append(body)
        i = j
    return parts


def _close_owned(ctx: EncodeContext) -> None:
    """Close the vesicles ``ctx`` made (they were not sent)."""
    for vesicle in ctx.owned:
        vesicle.close()
    ctx.owned.clear()
    ctx.vesicles.clear()


class _Run:
    """Messages ``[start, end)`` of one protein, as validated column values."""

    __slots__ = ("end", "schema", "start", "values")

    def __init__(self, start: int, end: int, schema: Schema, values: list[list[Any]]) -> None:
        self.start = start
        self.end = end
        self.schema = schema
        self.values = values


class OutboundBatch:
    """Validated, encoded messages ready to be cut into wire items by credit."""

    __slots__ = ("_parts", "contexts", "count", "per_message")

    def __init__(
        self,
        registry: ProteinRegistry,
        msgs: list[Any],
        threshold: int,
        make_vesicle: Callable[[bytes | bytearray | memoryview], VesicleSource],
    ) -> None:
        self.count = len(msgs)
        self.per_message = False
        #: One context per message in per-message mode (else one shared context).
        self.contexts: list[EncodeContext] = []
        ctx = EncodeContext(threshold, make_vesicle)
        try:
            parts = _encode_runs(registry, msgs, ctx)
        except FieldError:
            if not ctx.vesicles:
                raise
            # The batch's vesicles together passed the per-frame limit (each
            # message may be within it): they travel one message per frame anyway.
            parts = []
        if ctx.vesicles:
            _close_owned(ctx)
            self.per_message = True
            parts = []
            try:
                for msg in msgs:
                    one = EncodeContext(threshold, make_vesicle)
                    self.contexts.append(one)
                    parts.append(registry.encode(msg, one))
            except BaseException:
                for one in self.contexts:
                    _close_owned(one)
                raise
        else:
            self.contexts.append(ctx)
        self._parts = parts

    def items(
        self, kind: int, start: int, end: int, ids: list[int] | None, packed: bool = False
    ) -> list[list[Any]]:
        """Wire items for messages ``[start, end)``.

        ``kind`` is CALL or SIGNAL; ``ids`` holds the call ids of exactly these
        messages (None for signals); ``packed`` allows the packed ``str`` and
        ``bytes`` columns (the peer announced it reads them).
        """
        out: list[list[Any]] = []
        position = 0
        for part in self._parts:
            if isinstance(part, _Run):
                lo, hi = max(part.start, start), min(part.end, end)
                position = part.end
                if lo >= hi:
                    continue
                values = part.values
                if lo != part.start or hi != part.end:
                    values = [col[lo - part.start : hi - part.start] for col in values]
                run_ids = None if ids is None else ids[lo - start : hi - start]
                out.append(columns_item(
                    kind, part.schema.name, run_ids, part.schema.pack_columns(values, packed),
                    hi - lo,
                ))
            else:
                index = position
                position += 1
                if start <= index < end:
                    if ids is None:
                        out.append([Kind.SIGNAL, part])
                    else:
                        out.append([kind, ids[index - start], part])
            if position >= end:
                break
        return out
