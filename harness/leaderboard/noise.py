"""Training noise beside case noise: the noise floor, the noise-aware rank interval, and which
entries cannot be told apart.

The case bootstrap (``stability``) covers which cases happen to be in the test set, not the
fine-tuning: the same checkpoint fine-tuned again with another seed scores differently. Entries
named for seed repeats (the baseline, ``noise_entries``) are fine-tuned K more times per task;
their runs give, per task and metric, the aggregate of every run of every repeated entry
(``RepeatScores``). From those, per task and metric:

* the **floor**: the pooled standard deviation of a run's aggregate around its entry's mean,
  sd = sqrt(sum over entries and runs (x - mean_entry)^2 / sum over entries (runs - 1)), with an
  interval from resampling each entry's runs (the seeds) with replacement;
* a pair's difference is **above the floor** when |d| > ``FLOOR_Z`` * sqrt(2) * sd: outside 95 %
  of what two runs of one checkpoint differ by, if the noise is normal (the difference of two
  independent runs has sd sqrt(2) * sd);
* the **noise-aware rank interval**: each bootstrap resample of the cases (the same resamples as
  the case bootstrap) also shifts each entry's aggregate per task by one centred deviation
  (x - mean_entry) drawn from the repeated runs, the same run for every metric of the task (a
  run's metrics move together); the shifted aggregates are ranked per metric, then consensus
  over metrics and tasks as in ``ranking``;
* ``within_noise_of``: entries whose difference is above the floor on no task and metric that
  has one.

Assumption: every entry's training noise is like the repeated entries'. The aggregate is the
task's score per metric (``TaskData.scores``: the mean over cases, or the pooled value), oriented
higher-better, under every scheme: a run's noise shifts that number, while a mean per-case rank
depends on the other entries too; so the noise-aware interval ranks aggregates
(aggregate-then-rank per task), whatever scheme the table uses. Draws are reproducible per (seed, task) and
independent of the case resamples' stream.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.leaderboard.model import LeaderboardInputError, TaskData, TrackData
from harness.leaderboard.ranking import TrackRanking, consensus, place_invalid_last, rank_scores
from harness.leaderboard.scores import full_index
from harness.leaderboard.stability import QUANTILES, bootstrap_indices

#: Two-sided 95 % normal quantile: a difference above FLOOR_Z * sqrt(2) * sd is above the floor.
FLOOR_Z = 1.959963984540054
#: Streams of ``numpy.random.default_rng([seed, crc32(task), stream])``, apart from the cases'.
_SEED_RESAMPLE_STREAM = 1
_SHIFT_STREAM = 2


@dataclass(frozen=True, eq=False)
class RepeatScores:
    """One task's repeated runs: ``groups[g]`` (M, R_g) the oriented aggregate of each of the
    R_g runs (the ranked one and its seed repeats) of repeated entry ``entries[g]``, per metric."""

    task: str
    metrics: tuple[str, ...]
    entries: tuple[str, ...]
    groups: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.entries) != len(self.groups):
            raise LeaderboardInputError(f"{self.task}: {len(self.entries)} repeated entries, {len(self.groups)} groups")
        for entry, group in zip(self.entries, self.groups):
            if group.ndim != 2 or group.shape[0] != len(self.metrics):
                raise LeaderboardInputError(
                    f"{self.task}: runs of {entry} have shape {group.shape}, expected ({len(self.metrics)}, runs)"
                )

    def deviations(self) -> np.ndarray:
        """(M, D) each run's aggregate minus its entry's mean, over entries with two or more runs
        and no NaN (a failed repeat leaves its entry's other runs)."""
        parts = []
        for group in self.groups:
            runs = group[:, ~np.isnan(group).any(axis=0)]
            if runs.shape[1] >= 2:
                parts.append(runs - runs.mean(axis=1, keepdims=True))
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(self.metrics), 0))

    def degrees_of_freedom(self) -> int:
        """Sum over entries with two or more usable runs of (runs - 1)."""
        usable = (int((~np.isnan(g).any(axis=0)).sum()) for g in self.groups)
        return sum(n - 1 for n in usable if n >= 2)


def pooled_sd(groups: Sequence[np.ndarray]) -> np.ndarray:
    """(..., ) pooled standard deviation of ``groups`` (each (..., R_g) runs, no NaN) around
    their own means; NaN without a degree of freedom."""
    squares = sum(((g - g.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1) for g in groups if g.shape[-1] >= 2)
    dof = sum(g.shape[-1] - 1 for g in groups if g.shape[-1] >= 2)
    if dof == 0:
        return np.full(groups[0].shape[:-1] if groups else (), np.nan)
    return np.sqrt(np.asarray(squares) / dof)


@dataclass(frozen=True, eq=False)
class NoiseFloor:
    """The floor of one task: per metric the pooled sd of the repeated runs and its interval."""

    task: str
    metrics: tuple[str, ...]
    sd: np.ndarray  # (M,) NaN where no entry has two runs
    sd_lo: np.ndarray  # (M,) 2.5 % of the pooled sd over resamples of the seeds
    sd_hi: np.ndarray  # (M,) 97.5 %
    n_runs: int  # usable runs over the repeated entries
    dof: int
    deviations: np.ndarray  # (M, D) centred deviations the noise-aware bootstrap draws from

    @property
    def threshold(self) -> np.ndarray:
        """(M,) the smallest difference of two entries that is above the floor."""
        return FLOOR_Z * math.sqrt(2.0) * self.sd


def noise_floor(repeats: RepeatScores, n_bootstrap: int, seed: int) -> NoiseFloor:
    """The floor of ``repeats``; its interval resamples each entry's usable runs with replacement
    ``n_bootstrap`` times (NaN bounds when there is nothing to resample)."""
    usable = [g[:, ~np.isnan(g).any(axis=0)] for g in repeats.groups]
    usable = [g for g in usable if g.shape[1] >= 2]
    n_metrics = len(repeats.metrics)
    sd = pooled_sd(usable) if usable else np.full(n_metrics, np.nan)
    lo = hi = np.full(n_metrics, np.nan)
    if usable and n_bootstrap > 0:
        rng = np.random.default_rng([seed, zlib.crc32(repeats.task.encode("utf-8")), _SEED_RESAMPLE_STREAM])
        picks = [rng.integers(0, g.shape[1], size=(n_bootstrap, g.shape[1])) for g in usable]
        resampled = [g[:, p] for g, p in zip(usable, picks)]  # each (M, N, R_g)
        boot = pooled_sd(resampled)  # (M, N)
        lo, hi = np.percentile(boot, (QUANTILES[0], QUANTILES[2]), axis=1)
    return NoiseFloor(
        repeats.task,
        repeats.metrics,
        np.asarray(sd, dtype=float),
        np.asarray(lo, dtype=float),
        np.asarray(hi, dtype=float),
        sum(g.shape[1] for g in usable),
        repeats.degrees_of_freedom(),
        repeats.deviations(),
    )


def above_floor(scores: np.ndarray, floor: NoiseFloor, first: int, second: int) -> np.ndarray:
    """(M,) 1.0 where entries ``first`` and ``second`` of ``scores`` (M, E, oriented) differ by
    more than the floor, 0.0 where not, NaN where the metric has no floor."""
    diff = np.abs(scores[:, first] - scores[:, second])
    return np.where(np.isnan(floor.sd), np.nan, (diff > floor.threshold).astype(float))


def within_noise(scores_per_task: Sequence[np.ndarray], floors: Sequence[NoiseFloor | None]) -> np.ndarray:
    """(E, E) True where two entries differ by more than the floor on no task and metric that has
    one; all False (nothing can be said) when no task has a floor. The diagonal is False."""
    n_entries = scores_per_task[0].shape[1] if scores_per_task else 0
    above = np.zeros((n_entries, n_entries), dtype=bool)
    any_floor = False
    for scores, floor in zip(scores_per_task, floors):
        if floor is None or np.isnan(floor.sd).all():
            continue
        any_floor = True
        diff = np.abs(scores[:, :, None] - scores[:, None, :])  # (M, E, E)
        has = ~np.isnan(floor.sd)
        above |= (diff[has] > floor.threshold[has, None, None]).any(axis=0)
    if not any_floor:
        return np.zeros((n_entries, n_entries), dtype=bool)
    return ~above & ~np.eye(n_entries, dtype=bool)


def noise_shifts(floor: NoiseFloor, n_bootstrap: int, n_entries: int, seed: int) -> np.ndarray:
    """(M, N, E) a centred deviation per resample and entry, one drawn run for every metric;
    zeros when the floor has no deviations."""
    n_metrics, n_devs = floor.deviations.shape
    if n_devs == 0:
        return np.zeros((n_metrics, n_bootstrap, n_entries))
    rng = np.random.default_rng([seed, zlib.crc32(floor.task.encode("utf-8")), _SHIFT_STREAM])
    drawn = rng.integers(0, n_devs, size=(n_bootstrap, n_entries))
    return floor.deviations[:, drawn]


def noise_aware_ranks(
    scores_per_task: Sequence[np.ndarray],
    valid_per_task: Sequence[np.ndarray],
    shifts_per_task: Sequence[np.ndarray],
) -> np.ndarray:
    """(N, E) final rank of each resample from per-task oriented aggregates (M, N, E) shifted by
    ``shifts`` (M, N, E); ``valid`` (M, E) places an entry without a value last."""
    task_ranks = []
    for scores, valid, shifts in zip(scores_per_task, valid_per_task, shifts_per_task):
        ranks = place_invalid_last(rank_scores(scores + shifts), valid)
        task_ranks.append(consensus(ranks, axis=0))
    if not task_ranks:
        raise LeaderboardInputError("a noise-aware ranking needs at least one task")
    return consensus(np.stack(task_ranks), axis=0)


@dataclass(frozen=True, eq=False)
class TrackNoise:
    """A track's floors (None for a task without repeats), the noise-aware final ranks (N, E)
    and their quantiles (3, E), and ``within`` (E, E)."""

    floors: tuple[NoiseFloor | None, ...]
    final_ranks: np.ndarray
    rank_quantiles: np.ndarray
    within: np.ndarray

    def within_noise_of(self, entries: Sequence[str]) -> list[list[str]]:
        return [[entries[int(j)] for j in np.flatnonzero(row)] for row in self.within]

    def adjacent_above_floor(self, ranking: TrackRanking) -> list[dict[str, object]]:
        """For each pair adjacent in the final ranking (best first), per task and metric with a
        floor, the difference, the floor's threshold and whether the difference is above it."""
        order = [int(i) for i in np.argsort(ranking.final_rank, kind="stable")]
        entries = ranking.track.entries
        rows: list[dict[str, object]] = []
        for upper, lower in zip(order[:-1], order[1:]):
            for task_ranking, floor in zip(ranking.tasks, self.floors):
                if floor is None:
                    continue
                oriented = task_ranking.task.scores(full_index(len(task_ranking.task.cases)))[:, 0, :]
                flags = above_floor(oriented, floor, upper, lower)
                for m, metric in enumerate(floor.metrics):
                    if np.isnan(flags[m]):
                        continue
                    rows.append(
                        {
                            "upper": entries[upper],
                            "lower": entries[lower],
                            "task": floor.task,
                            "metric": metric,
                            "difference": float(oriented[m, upper] - oriented[m, lower]),
                            "threshold": float(floor.threshold[m]),
                            "above_floor": bool(flags[m]),
                        }
                    )
        return rows


def track_noise(ranking: TrackRanking, repeats: Mapping[str, RepeatScores], n_bootstrap: int, seed: int) -> TrackNoise:
    """Floors from ``repeats`` (by task name), the noise-aware interval on the case bootstrap's
    resamples (same ``seed`` and ``n_bootstrap``) and who is within noise of whom."""
    n_entries = len(ranking.track.entries)
    floors: list[NoiseFloor | None] = []
    scores, valid, shifts, full_scores = [], [], [], []
    for task_ranking in ranking.tasks:
        task = task_ranking.task
        task_repeats = repeats.get(task.task)
        floor = None
        if task_repeats is not None:
            if task_repeats.metrics != tuple(m.name for m in task.metrics):
                raise LeaderboardInputError(
                    f"{task.task}: repeated runs have metrics {list(task_repeats.metrics)}, "
                    f"the ranking {[m.name for m in task.metrics]}"
                )
            floor = noise_floor(task_repeats, n_bootstrap, seed)
        floors.append(floor)
        full_scores.append(task.scores(full_index(len(task.cases)))[:, 0, :])
        if n_bootstrap and len(task.cases) >= 2:
            boot = task.scores(bootstrap_indices(task.task, len(task.cases), n_bootstrap, seed))
        else:
            boot = np.broadcast_to(full_scores[-1][:, None, :], (len(task.metrics), n_bootstrap, n_entries))
        scores.append(boot)
        valid.append(task.has_value)
        no_shift = np.zeros((len(task.metrics), n_bootstrap, n_entries))
        shifts.append(no_shift if floor is None else noise_shifts(floor, n_bootstrap, n_entries, seed))
    final = noise_aware_ranks(scores, valid, shifts) if ranking.tasks else np.ones((n_bootstrap, n_entries))
    if n_bootstrap:
        quantiles = np.percentile(final, QUANTILES, axis=0, method="inverted_cdf")
    else:
        quantiles = np.full((len(QUANTILES), n_entries), np.nan)
    return TrackNoise(tuple(floors), final, quantiles, within_noise(full_scores, floors))


def _run_aggregate(track: TrackData, task_name: str, entry: str, metrics: tuple[str, ...]) -> np.ndarray:
    """(M,) the oriented full-data aggregate of ``entry`` on ``task_name`` in ``track``; NaN when
    it has no such run, other metrics, or any job of it failed or is unfinished (a gap would
    count as the worst value and pass for training noise)."""
    task: TaskData | None = next((t for t in track.tasks if t.task == task_name), None)
    if task is None or entry not in task.entries or tuple(m.name for m in task.metrics) != metrics:
        return np.full(len(metrics), np.nan)
    if any(p.entry == entry and p.task == task_name for p in track.job_problems):
        return np.full(len(metrics), np.nan)
    return task.scores(full_index(len(task.cases)))[:, 0, task.entries.index(entry)]


def repeat_scores(track: TrackData) -> dict[str, RepeatScores]:
    """Per task, the runs of every entry that has seed repeats: its ranked run, then repeat 1, 2, ..."""
    out = {}
    for task in track.tasks:
        metrics = tuple(m.name for m in task.metrics)
        repeated = sorted(
            {e for rep in track.repeats for t in rep.tasks if t.task == task.task for e in t.entries}
            & set(task.entries)
        )
        if not repeated or not metrics:
            continue
        groups = tuple(
            np.stack([_run_aggregate(run, task.task, entry, metrics) for run in (track, *track.repeats)], axis=1)
            for entry in repeated
        )
        out[task.task] = RepeatScores(task.task, metrics, tuple(repeated), groups)
    return out
