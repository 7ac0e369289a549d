"""The three ranking schemes, per task and metric, and the consensus across metrics and tasks.

Per task, each ranking metric ranks the entries (1 = best, ties share the minimum rank: 1,1,3);
the task rank is the mean of its metric ranks, re-ranked; the final rank is the mean of the task
ranks, re-ranked (lower mean first, ties again share the minimum).

Schemes, for per-case metrics (segmentation, ``--from-csv``):

* ``aggregate-then-rank``: rank the mean over cases (missing = the metric's worst value, 0 for
  the known [0, 1] metrics, else the worst value seen on the task).
* ``rank-then-aggregate``: rank the entries on every case (missing = last on that case), then
  rank the mean per-case rank.
* ``test-then-rank``: one-sided Wilcoxon signed-rank test for every ordered pair, Holm over the
  E(E-1) tests of the task and metric, rank by the number of significant wins.

Pooled classification metrics (AUROC, balanced accuracy, macro F1, average precision) have no
per-case value, so under every scheme they rank their pooled value (aggregate-then-rank is the
only one defined for them): a task kind says which it is (``TaskData.per_case``) and scores
itself (``TaskData.scores``, ``TaskData.case_values``).

An entry without a single valid value for a metric (every case missing, failed or unfinished:
say every fold of a classification task failed) ranks behind every entry that has one, under
every scheme and in every bootstrap resample, tied with the other such entries
(``place_invalid_last``); validity is judged on the full data. The schemes alone would let it
tie: its worst value 0 equals a real mean 0 or AUROC 0, or the worst value seen of an unknown
metric; in a resample that misses an entry's few real cases the per-case ranks tie; a test-then-
rank entry that wins no test ties with it. The other entries rank as if it were not there: it
never beats anyone, and test-then-rank leaves it out of the pairwise tests (a free win against
it would reorder the others; the significance map still shows it).

**Default: rank-then-aggregate**, because

1. it needs no common scale: Dice, NSD and any metric from a CSV enter as per-case ranks, so a
   metric or task with a wide spread cannot outweigh the others;
2. a missing or failed case is simply last on that case: no numeric "worst value" has to be
   invented (the other two schemes need one);
3. a single catastrophic case costs an entry at most a few rank places on that case instead of
   dominating its mean (one Dice 0 among 20 cases moves the mean by 0.05, more than typical gaps
   between entries);
4. it is exact and monotone: ranks are integers, so ties are exact and reordering inputs or a
   monotone change of a metric changes nothing; improving one case never worsens an entry's rank
   (property-tested); test-then-rank with Holm over E(E-1) tests and tens of cases lumps most
   entries into ties;
5. it is established practice (BraTS ranks per case then averages; challengeR's
   ``rankThenAggregate``) and bootstraps cheaply: per-case ranks do not depend on which cases
   are drawn, so a resample's mean rank is one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from harness.leaderboard import AGGREGATE_THEN_RANK, ALPHA, RANK_THEN_AGGREGATE, SCHEMES, TEST_THEN_RANK
from harness.leaderboard.model import LeaderboardInputError, PerCaseTask, TaskData, TrackData
from harness.leaderboard.scores import full_index, multiplicity, weighted_case_means
from harness.leaderboard.significance import holm_matrix, pairwise_wilcoxon, wins

#: Aggregated scores equal to this many decimals tie (float sums depend on the order of cases).
TIE_DECIMALS = 12


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise LeaderboardInputError(f"unknown ranking scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return scheme


def rank_best_first(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rank where the highest score is 1; ties share the minimum rank; NaN ranks last."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return rankdata(-scores, method="min", axis=axis).astype(float)


def rank_lowest_first(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rank where the lowest value (a mean rank) is 1; ties share the minimum rank."""
    values = np.where(np.isnan(values), np.inf, values)
    return rankdata(values, method="min", axis=axis).astype(float)


def rank_scores(scores: np.ndarray) -> np.ndarray:
    """Rank aggregated scores (higher better) along the last axis; near-equal floats tie."""
    return rank_best_first(np.round(scores, TIE_DECIMALS))


def place_invalid_last(ranks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(M, R, E) ``ranks`` re-ranked with the entries ``valid`` (M, E) marks False behind every
    entry it marks True, tied among themselves (rank = number of valid entries + 1); the valid
    entries keep their order. No valid entry at all: everyone ties at 1."""
    return rank_lowest_first(np.where(valid[:, None, :], ranks, np.inf))


def rank_task_scores(task: TaskData, scores: np.ndarray) -> np.ndarray:
    """(M, R, E) ranks of a task's aggregated ``scores`` (M, R, E, higher better), entries without
    a valid value last."""
    return place_invalid_last(rank_scores(scores), task.has_value)


def consensus(ranks: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean of ranks along ``axis``, re-ranked; nothing to average (size 0) ties everyone at 1."""
    if ranks.shape[axis] == 0:
        return np.ones(np.delete(ranks.shape, axis))
    return rank_lowest_first(ranks.mean(axis=axis), axis=-1)


def case_ranks(task: PerCaseTask) -> np.ndarray:
    """(M, E, C) rank of each entry on each case; a missing value is last on that case."""
    values = np.where(task.missing, -np.inf, task.case_values())
    return rankdata(-values, method="min", axis=1).astype(float)


def metric_ranks(
    task: TaskData, scheme: str, idx: np.ndarray, alpha: float = ALPHA, scores: np.ndarray | None = None
) -> np.ndarray:
    """(M, R, E) rank of every entry per metric on each resample ``idx`` (R, C) of the cases;
    an entry without a valid value for the metric is last (module doc). ``scores``: the task's
    ``scores(idx)`` when the caller has them already (ranked where the scheme ranks aggregates)."""
    check_scheme(scheme)
    if not task.per_case or scheme == AGGREGATE_THEN_RANK:
        return rank_task_scores(task, task.scores(idx) if scores is None else scores)
    assert isinstance(task, PerCaseTask)  # the per-case kind of task
    if scheme == RANK_THEN_AGGREGATE:
        mean_rank = weighted_case_means(case_ranks(task), task.applicable, multiplicity(idx, len(task.cases)))
        return place_invalid_last(rank_lowest_first(mean_rank), task.has_value)
    assert scheme == TEST_THEN_RANK
    values = task.case_values()
    valid = task.has_value
    out = np.full((len(task.metrics), idx.shape[0], len(task.entries)), np.inf)
    for m in range(len(task.metrics)):
        if valid[m].any():  # an entry without a value is not tested: a free win would reorder the others
            p_holm = holm_matrix(pairwise_wilcoxon(values[m][valid[m]], idx))
            out[m][:, valid[m]] = rank_best_first(wins(p_holm, alpha).astype(float))
    return place_invalid_last(out, valid)


@dataclass(frozen=True, eq=False)
class TaskRanking:
    task: TaskData
    scores: np.ndarray  # (M, E) full-data aggregate in each metric's own direction
    metric_ranks: np.ndarray  # (M, E)
    rank: np.ndarray  # (E,)


@dataclass(frozen=True, eq=False)
class TrackRanking:
    track: TrackData
    scheme: str
    tasks: tuple[TaskRanking, ...]
    mean_task_rank: np.ndarray  # (E,)
    final_rank: np.ndarray  # (E,)


def rank_task(task: TaskData, scheme: str) -> TaskRanking:
    ranks = metric_ranks(task, scheme, full_index(len(task.cases)))[:, 0, :]
    return TaskRanking(task, task.report_scores(), ranks, consensus(ranks))


def rank_track(track: TrackData, scheme: str) -> TrackRanking:
    """The full-data ranking of one track under ``scheme``."""
    check_scheme(scheme)
    tasks = tuple(rank_task(task, scheme) for task in track.tasks)
    task_ranks = np.stack([t.rank for t in tasks]) if tasks else np.ones((0, len(track.entries)))
    mean_task_rank = task_ranks.mean(axis=0) if tasks else np.ones(len(track.entries))
    return TrackRanking(track, scheme, tasks, mean_task_rank, consensus(task_ranks))
