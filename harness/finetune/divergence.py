"""The divergence guard: a training whose loss stays non-finite stops at once.

At the challenge's schedule a job is hours of GPU time; one whose loss turned NaN learns nothing
more, so it stops as FAILED with the error class "diverged" (``harness status`` and the
leaderboard's failed jobs say so) instead of running its schedule out. A single non-finite
iteration (an overflow in one fp16 batch) is skipped, not stepped on: the weights never take a
NaN update, and the run goes on unless the next ones are non-finite too.
"""

from __future__ import annotations

import math

#: Consecutive iterations with a non-finite training loss after which a job has diverged.
NONFINITE_LIMIT = 5


class DivergedError(FloatingPointError):
    """The training loss was non-finite for ``NONFINITE_LIMIT`` consecutive iterations."""


class DivergenceGuard:
    def __init__(self, limit: int = NONFINITE_LIMIT):
        if limit < 1:
            raise ValueError(f"the divergence limit must be at least 1 iteration, got {limit}")
        self.limit = limit
        self.consecutive = 0
        self.skipped = 0

    def finite(self, loss: float, where: str) -> bool:
        """Whether to step on this iteration's ``loss``; raises ``DivergedError`` (naming
        ``where``, e.g. "epoch 3 iteration 41") at the ``limit``-th non-finite loss in a row."""
        if math.isfinite(loss):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.limit:
            raise DivergedError(
                f"{where}: the training loss was {loss} for {self.consecutive} consecutive iterations "
                "(the training diverged); stopped"
            )
        return False
