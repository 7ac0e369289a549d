"""Aggregating per-case values over any number of resamples of the cases at once.

A resample is a row of case indices; ``idx`` is (R, C) (the full data is ``full_index(C)``, one
row 0..C-1). Each task kind scores itself with these (``TaskData.scores`` in
``harness.leaderboard.model``: (M, R, E) arrays - metric, resample, entry - oriented so that
higher is better); the pooled classification metrics come from the metric registry
(``harness.metrics.pooled``). The same code scores the full data and the bootstrap, so the two
can never disagree.
"""

from __future__ import annotations

import numpy as np

from harness.metrics.pooled import multiplicity

__all__ = ["full_index", "multiplicity", "weighted_case_means"]


def full_index(n_cases: int) -> np.ndarray:
    return np.arange(n_cases)[None, :]


def weighted_case_means(per_case: np.ndarray, applicable: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M, R, E) mean over the applicable cases of each resample; NaN when a resample has none.

    ``per_case`` (M, E, C), ``applicable`` (M, C), ``weights`` (R, C) multiplicities. Integer
    inputs give exact sums, so equal mean ranks tie exactly.
    """
    out = np.empty((per_case.shape[0], weights.shape[0], per_case.shape[1]))
    for m in range(per_case.shape[0]):
        used = weights * applicable[m]
        denominator = used.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[m] = (used @ per_case[m].T) / denominator[:, None]
    return out
