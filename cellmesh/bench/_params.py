"""Sizes of one ``cellmesh bench wire`` run, shared by the orchestrator and its workers.

A :class:`WireParams` travels to each client worker as JSON on its command
line, so both sides of every measurement agree on counts without globals.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

__all__ = ["FULL", "QUICK", "WireParams"]

_FLOATS: Final = ("round_timeout", "profile_seconds")


@attrs.frozen(kw_only=True)
class WireParams:
    """How much work each measurement does per round, and how many rounds.

    ``*_warmup`` work is done on the same connection just before the timed part
    of every round and is never counted.
    """

    rounds: int
    rtt_samples: int
    rtt_warmup: int
    pipeline_msgs: int
    signal_msgs: int
    warmup_msgs: int
    bulk_transfers: int
    natural_msgs: int = 64_000
    bulk_warmup: int = 1
    window: int = 1024
    raw_chunk: int = 128
    pipeline_tasks: int = 2
    signal_batch: int = 1024
    bulk_bytes: int = 64 << 20
    round_timeout: float = 180.0
    #: A profiled measurement repeats its round for at least this long (ITIMER_PROF
    #: samples once per kernel tick of CPU time, so a short round gives few samples).
    profile_seconds: float = 3.0

    def scaled(self, factor: float, *, rounds: int | None = None) -> WireParams:
        """Return a copy with every message count multiplied by ``factor`` (at least 1)."""

        def s(n: int) -> int:
            return max(1, int(n * factor))

        return attrs.evolve(
            self,
            rounds=self.rounds if rounds is None else rounds,
            rtt_samples=s(self.rtt_samples),
            rtt_warmup=s(self.rtt_warmup),
            pipeline_msgs=s(self.pipeline_msgs),
            signal_msgs=s(self.signal_msgs),
            warmup_msgs=s(self.warmup_msgs),
            natural_msgs=s(self.natural_msgs),
            bulk_bytes=max(1 << 16, int(self.bulk_bytes * factor)),
        )

    def to_json(self) -> str:
        """Serialise for a worker's command line."""
        return json.dumps(attrs.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WireParams:
        """Parse what :meth:`to_json` produced; unknown keys are an error."""
        raw: Any = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("WireParams JSON must be an object")
        names = {f.name for f in attrs.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"unknown WireParams keys: {sorted(unknown)}")
        values: dict[str, Any] = {
            k: (float(v) if k in _FLOATS else int(v)) for k, v in raw.items()
        }
        return cls(**values)


FULL: Final = WireParams(
    rounds=5,
    rtt_samples=5000,
    rtt_warmup=500,
    pipeline_msgs=200_000,
    signal_msgs=200_000,
    warmup_msgs=8192,
    bulk_transfers=3,
)
"""The default run: about three to four minutes on a 2-core machine (profile included)."""

QUICK: Final = WireParams(
    rounds=3,
    rtt_samples=1500,
    rtt_warmup=200,
    pipeline_msgs=40_000,
    signal_msgs=40_000,
    warmup_msgs=4096,
    bulk_transfers=1,
    natural_msgs=16_000,
    profile_seconds=1.0,
)
"""``--quick``: under a minute, for demos."""


def bulk_payload(size: int) -> bytes:
    """Return ``size`` bytes of a non-constant pattern (built once, outside any timing)."""
    pattern = bytes(range(256)) * 4096
    reps, extra = divmod(size, len(pattern))
    return pattern * reps + pattern[:extra]
