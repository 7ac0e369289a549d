"""Per-track leaderboards from per-case results: ranking, bootstrap stability, significance.

Data flows one way: ``read_runs`` / ``read_csv`` (run folders or a long CSV -> the per-task
arrays of ``model``, each task kind scoring itself on any resample of the cases, with metric
directions, ranges and pooled functions from ``harness.metrics.registry``) -> ``ranking`` (the
three schemes) -> ``stability`` (bootstrap, Kendall's tau, Wilcoxon + Holm) -> ``plots`` /
``report`` (public files) and ``private`` (the per-case table).

This module stays import-light (no numpy) so that ``harness --help`` is fast; the default
scheme and the reason for it are in :mod:`harness.leaderboard.ranking`.
"""

from __future__ import annotations

RANK_THEN_AGGREGATE = "rank-then-aggregate"
AGGREGATE_THEN_RANK = "aggregate-then-rank"
TEST_THEN_RANK = "test-then-rank"
SCHEMES: tuple[str, ...] = (RANK_THEN_AGGREGATE, AGGREGATE_THEN_RANK, TEST_THEN_RANK)
DEFAULT_SCHEME = RANK_THEN_AGGREGATE
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0
#: Family-wise error rate of the pairwise tests (Holm), per task and metric.
ALPHA = 0.05
