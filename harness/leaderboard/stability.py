"""Bootstrap stability of a ranking and the pairwise significance maps.

Each task's cases are resampled with replacement, the same resample for every entry, N times
with a seed derived from (seed, task name) - so adding a task never changes another task's
resamples. Resample r of every task together gives bootstrap ranking r: task ranks, then the
final rank. All N resamples are scored at once (index arrays, ranks along an axis).
A task with fewer than two cases cannot be bootstrapped: it keeps its full ranking in every
resample and is reported as such.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from harness.leaderboard import ALPHA
from harness.leaderboard.model import LeaderboardInputError
from harness.leaderboard.ranking import TrackRanking, consensus, metric_ranks
from harness.leaderboard.scores import full_index
from harness.leaderboard.significance import bootstrap_pvalues, holm_matrix, pairwise_wilcoxon

QUANTILES = (2.5, 50.0, 97.5)


def bootstrap_indices(task: str, n_cases: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(N, C) case indices drawn with replacement; reproducible per (seed, task)."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode("utf-8"))])
    return rng.integers(0, n_cases, size=(n_bootstrap, n_cases))


@dataclass(frozen=True, eq=False)
class TaskStability:
    task: str
    bootstrappable: bool
    note: str
    ranks: np.ndarray  # (N, E) task rank in each resample
    kendall_tau: np.ndarray  # (N,) tau of each resample's task ranking vs the full one
    scores: np.ndarray | None  # (M, N, E) oriented bootstrap scores (pooled metrics only)


@dataclass(frozen=True, eq=False)
class TrackStability:
    n_bootstrap: int
    seed: int
    tasks: tuple[TaskStability, ...]
    final_ranks: np.ndarray  # (N, E)
    final_kendall_tau: np.ndarray  # (N,)
    rank_quantiles: np.ndarray  # (3, E) final rank at QUANTILES; NaN when N = 0


def kendall_tau_rows(rankings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) Kendall's tau-b of every row of ``rankings`` (N, E) against ``reference`` (E,).

    The value of ``scipy.stats.kendalltau`` (tested against it), computed for all rows at once
    from the signs of pairwise differences: a loop of scipy calls costs ~0.5 ms a row, which
    dominated a 1000-resample bootstrap. NaN when either ranking is constant.
    """
    first, second = np.triu_indices(len(reference), k=1)
    ref_sign = np.sign(reference[first] - reference[second])
    out = np.empty(rankings.shape[0])
    block = max(1, 4_000_000 // max(1, first.size))
    for start in range(0, rankings.shape[0], block):
        rows = rankings[start : start + block]
        sign = np.sign(rows[:, first] - rows[:, second])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block] = (sign @ ref_sign) / np.sqrt(np.abs(sign).sum(axis=1) * np.abs(ref_sign).sum())
    return out


def _kendall(boot: np.ndarray, full: np.ndarray) -> np.ndarray:
    return kendall_tau_rows(np.asarray(boot, dtype=float), np.asarray(full, dtype=float))


def bootstrap_track(ranking: TrackRanking, n_bootstrap: int, seed: int) -> TrackStability:
    """Re-rank every task and the final ranking on ``n_bootstrap`` resamples of the cases."""
    if n_bootstrap < 0:
        raise LeaderboardInputError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    n_entries = len(ranking.track.entries)
    tasks = []
    for task_ranking in ranking.tasks:
        task = task_ranking.task
        n_cases = len(task.cases)
        if n_cases < 2:
            note = f"not bootstrappable: {n_cases} case{'s' if n_cases != 1 else ''}"
            ranks = np.broadcast_to(task_ranking.rank, (n_bootstrap, n_entries))
            tasks.append(TaskStability(task.task, False, note, ranks, np.full(n_bootstrap, np.nan), None))
            continue
        idx = bootstrap_indices(task.task, n_cases, n_bootstrap, seed)
        # pooled metrics have no per-case values: their pairwise tests use these bootstrap scores
        scores = None if task.per_case else task.scores(idx)
        per_metric = metric_ranks(task, ranking.scheme, idx, scores=scores)
        ranks = consensus(per_metric, axis=0)
        tasks.append(TaskStability(task.task, True, "", ranks, _kendall(ranks, task_ranking.rank), scores))
    task_ranks = np.stack([t.ranks for t in tasks]) if tasks else np.ones((0, n_bootstrap, n_entries))
    final = consensus(task_ranks, axis=0) if tasks else np.ones((n_bootstrap, n_entries))
    if n_bootstrap:
        quantiles = np.percentile(final, QUANTILES, axis=0, method="inverted_cdf")
    else:
        quantiles = np.full((len(QUANTILES), n_entries), np.nan)
    return TrackStability(n_bootstrap, seed, tuple(tasks), final, _kendall(final, ranking.final_rank), quantiles)


def tau_summary(tau: np.ndarray) -> dict[str, float]:
    """Mean, median and 2.5/97.5 % of the taus that are defined (NaN when none is)."""
    tau = tau[~np.isnan(tau)]
    if tau.size == 0:
        return {"tau_mean": np.nan, "tau_median": np.nan, "tau_lo": np.nan, "tau_hi": np.nan}
    lo, median, hi = np.percentile(tau, QUANTILES)
    return {"tau_mean": float(tau.mean()), "tau_median": float(median), "tau_lo": float(lo), "tau_hi": float(hi)}


@dataclass(frozen=True, eq=False)
class PairwiseTests:
    task: str
    metric: str
    method: str  # "wilcoxon", "paired-bootstrap" or "not tested: <why>"
    p: np.ndarray  # (E, E) one-sided p of "row better than column"
    p_holm: np.ndarray  # (E, E)
    alpha: float

    @property
    def significant(self) -> np.ndarray:
        return np.nan_to_num(self.p_holm, nan=1.0) < self.alpha


def significance_track(ranking: TrackRanking, stability: TrackStability, alpha: float = ALPHA) -> list[PairwiseTests]:
    """Per task and metric: one-sided pairwise tests with Holm over the E(E-1) ordered pairs."""
    n_entries = len(ranking.track.entries)
    out = []
    for task_ranking, task_stability in zip(ranking.tasks, stability.tasks):
        task = task_ranking.task
        values = task.case_values()  # None: pooled metrics, tested on their bootstrap scores
        for m, metric in enumerate(task.metrics):
            if values is not None:
                p, method = pairwise_wilcoxon(values[m], full_index(len(task.cases)))[0], "wilcoxon"
            elif task_stability.scores is not None and stability.n_bootstrap > 0:
                p, method = bootstrap_pvalues(task_stability.scores[m]), "paired-bootstrap"
            else:
                why = task_stability.note or "no bootstrap resamples"
                p, method = np.full((n_entries, n_entries), np.nan), f"not tested: {why}"
            out.append(PairwiseTests(task.task, metric.name, method, p, holm_matrix(p), alpha))
    return out
