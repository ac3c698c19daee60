"""When is a learner caught up enough to become a voter? (dissertation 4.2.1, pure).

Theory of operation: a new server joins as a learner and must receive the
whole log before it can vote, or the cluster would wait on it (adding a slow
voter to a three-server cluster can stall commits). The dissertation's answer
is *rounds*: each round replicates every entry the leader held when the round
began; the learner's progress (``match``) ends the round when it reaches that
target. A round that finishes within one election timeout shows the learner
is at most an election timeout behind: it is promoted. A learner that needs
``max_rounds`` rounds without one short enough, or that makes no progress at
all for ``stall_ticks`` ticks (it is down or unreachable), is not promoted:
the change fails and the learner stays a learner.

:class:`CatchUp` is fed one observation per tick (the learner's match index
and the leader's last index) and answers with a :class:`Verdict`. Time is
ticks, as in the core; nothing here does I/O.
"""

from __future__ import annotations

import enum

import attrs


class Verdict(enum.Enum):
    """What :meth:`CatchUp.observe` decided."""

    WAITING = "waiting"
    CAUGHT_UP = "caught up"
    FAILED = "failed"


@attrs.define(eq=False)
class CatchUp:
    """The round bookkeeping for one learner; see the module docstring.

    ``round_ticks``: a round at most this long ends the catch-up (one
    election timeout). ``max_rounds``: rounds before giving up.
    ``stall_ticks``: ticks without any progress before giving up.
    """

    round_ticks: int
    max_rounds: int = 10
    stall_ticks: int = 100
    round: int = 0
    target: int = 0
    problem: str = ""
    _elapsed: int = 0
    _best: int = -1
    _idle: int = 0

    def __attrs_post_init__(self) -> None:
        if self.round_ticks < 1 or self.max_rounds < 1 or self.stall_ticks < 1:
            raise ValueError("round_ticks, max_rounds and stall_ticks must be positive")

    def observe(self, match: int, last_index: int) -> Verdict:
        """One tick passed; the learner holds the log up to ``match`` of ``last_index``."""
        if self.round == 0:
            self.round, self.target, self._elapsed = 1, last_index, 0
        self._elapsed += 1
        if match > self._best:
            self._best, self._idle = match, 0
        else:
            self._idle += 1
            if self._idle >= self.stall_ticks:
                self.problem = f"no progress for {self._idle} ticks (match {match})"
                return Verdict.FAILED
        if match < self.target:
            return Verdict.WAITING
        if self._elapsed <= self.round_ticks:
            return Verdict.CAUGHT_UP
        if self.round >= self.max_rounds:
            self.problem = (
                f"still {self._elapsed} ticks per round after {self.round} rounds "
                f"(a round must take at most {self.round_ticks})"
            )
            return Verdict.FAILED
        self.round += 1
        self.target, self._elapsed = last_index, 0
        return Verdict.WAITING


__all__ = ["CatchUp", "Verdict"]
