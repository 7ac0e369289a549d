"""The leaderboard's data: per-track, per-task arrays with every gap flagged, and how each kind of
task scores itself.

Two kinds of task, one interface (``TaskData``):

* ``PerCaseTask`` - a value per case and metric (segmentation, ``--from-csv``). A segmentation
  case's value is the nan-mean over its labels. A case whose value is NaN ("not applicable":
  reference and prediction both empty for every label) for any entry that has it is dropped
  for *every* entry of the task, for that metric: it tests nothing comparable, and neither
  rewarding nor punishing "predicted nothing" is a choice the ranking should make silently.
  The private per-case table keeps it, flagged ``not_applicable``.
* ``PooledTask`` - predictions per case of a classification task; its metrics (AUROC, balanced
  accuracy, macro F1, average precision) are computed over the cases pooled across folds by the
  registry's functions (``harness.metrics.registry``, ``harness.metrics.pooled``).

Both answer: ``scores(idx)`` the aggregate per metric on resamples of the cases, ``case_values()``
the per-case values (None when the metrics are pooled: ``per_case`` is False), ``missing`` and
``has_value``, the public columns (``score_columns``), the private rows (``case_table``) and the
notes a reader needs (``notes``). The ranking, bootstrap, tests and tables call only these.

A missing, failed or unfinished run, or a missing case, is never dropped: it counts as the worst
value for that case and is flagged (``FLAG_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from harness.leaderboard import AGGREGATE_THEN_RANK
from harness.leaderboard.scores import full_index, multiplicity, weighted_case_means
from harness.metrics.registry import Metric, MetricError, resolve_metric
from harness.runs import BASELINE_PREFIX, entry_name

FLAG_OK = "ok"
FLAG_NOT_APPLICABLE = "not_applicable"
FLAG_MISSING_CASE = "missing_case"
FLAG_FAILED_JOB = "failed_job"
FLAG_UNFINISHED_JOB = "unfinished_job"
FLAG_MISSING_JOB = "missing_job"
MISSING_FLAGS = (FLAG_MISSING_CASE, FLAG_FAILED_JOB, FLAG_UNFINISHED_JOB, FLAG_MISSING_JOB)

#: Columns of the private per-case table rows of one task (``TaskData.case_table``).
CASE_TABLE_COLUMNS = ("task", "entry", "case", "metric", "value", "flag")


class LeaderboardInputError(ValueError):
    """An input cannot be ranked; the message names the file, the field and the problem."""


@dataclass(frozen=True)
class JobProblem:
    """One expected job that produced nothing usable."""

    entry: str
    task: str
    fold: int | None
    status: str  # one of FLAG_FAILED_JOB, FLAG_UNFINISHED_JOB, FLAG_MISSING_JOB
    detail: str = ""
    #: the leaderboard failed the run: its files cannot be read or contradict the other runs
    #: (``detail`` names the file and the problem), whatever its DONE marker says
    unreadable: bool = False
    #: a finished run computed on another task or data than the task file holds now: unfinished
    #: until evaluate reruns it (``detail`` names what changed)
    stale: bool = False


# --------------------------------------------------------------------------- input checks


def input_metric(name: Any, higher_is_better: Any, where: str) -> Metric:
    """The registry's metric ``name`` (or, for a name it does not know, one with the stated
    direction); a problem is a ``LeaderboardInputError`` naming ``where``."""
    try:
        return resolve_metric(name, higher_is_better)
    except MetricError as exc:
        raise LeaderboardInputError(f"{where}: {exc}") from None


def check_metric_values(metric: Metric, values: np.ndarray, where: str) -> None:
    """Every value of a metric with a range lies in it (NaN allowed)."""
    try:
        metric.check_values(values)
    except MetricError as exc:
        raise LeaderboardInputError(f"{where}: {exc}") from None


def check_track_name(track: str, where: str) -> None:
    try:
        safe = entry_name(track)
    except ValueError:
        safe = ""
    if safe != track:
        raise LeaderboardInputError(f"{where}: track {track!r} is not a file-name safe name")


def unit_name(fold: int, case: str) -> str:
    """A case of a run-folder task: cases of different folds are different units."""
    return f"fold_{fold}/{case}"


# --------------------------------------------------------------------------- task kinds


@dataclass(frozen=True, eq=False)
class TaskData:
    """One task of a track: its entries, cases (sorted, so input order never matters) and
    ranking metrics. Subclasses fill in the arrays and the methods below.

    Every score array is oriented so that higher is better (``Metric.sign`` turns it back); a
    resample is a row of case indices, ``idx`` (R, C), the full data ``full_index(C)``.
    """

    task: str
    entries: tuple[str, ...]
    cases: tuple[str, ...]
    metrics: tuple[Metric, ...]

    #: written to the stability table's ``task_kind`` column
    kind: ClassVar[str] = ""
    #: True: every metric has a value per case, so every ranking scheme and the per-case Wilcoxon
    #: tests apply; False: the metrics are pooled over the cases, ranked by their pooled value
    #: under every scheme and tested with a paired bootstrap
    per_case: ClassVar[bool] = True

    @property
    def missing(self) -> np.ndarray:
        """(M, E, C) True where the value counts as the worst one."""
        raise NotImplementedError

    @property
    def has_value(self) -> np.ndarray:
        """(M, E) True where the entry has at least one real value for the metric."""
        raise NotImplementedError

    @property
    def applicable(self) -> np.ndarray:
        """(M, C) False where a case is left out for every entry (not applicable)."""
        return np.ones((len(self.metrics), len(self.cases)), dtype=bool)

    def scores(self, idx: np.ndarray) -> np.ndarray:
        """(M, R, E) aggregate per metric on each resample, higher better (missing counted as the
        worst value). The same code scores the full data and the bootstrap."""
        raise NotImplementedError

    def report_scores(self) -> np.ndarray:
        """(M, E) the full-data aggregate in each metric's own direction."""
        signs = np.array([m.sign for m in self.metrics])[:, None]
        return self.scores(full_index(len(self.cases)))[:, 0, :] * signs

    def case_values(self) -> np.ndarray | None:
        """(M, E, C) per-case values, higher better, missing -> the worst value; None when the
        metrics are pooled (``per_case`` False)."""
        return None

    def score_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """The public leaderboard columns of this task, from ``scores`` (M, E) (``report_scores``)."""
        raise NotImplementedError

    def case_table(self) -> pd.DataFrame:
        """PRIVATE rows ``CASE_TABLE_COLUMNS``: a value per (entry, case, metric) with its flag."""
        raise NotImplementedError

    def notes(self, scheme: str) -> list[str]:
        """What a reader of the table must know about this task under ``scheme``."""
        return []


@dataclass(frozen=True, eq=False)
class PerCaseTask(TaskData):
    """Values per (metric, entry, case).

    ``values`` is (M, E, C) in the metric's own direction, NaN where missing or not applicable;
    ``flags`` is the same shape (``FLAG_*`` strings); ``applicable`` is (M, C).
    """

    values: np.ndarray
    flags: np.ndarray
    #: (M, E) the mean as the organizers report it (segmentation: per label the nan-mean over
    #: cases, then the mean over labels; a missing case counts as the worst value), or None where
    #: the input has no labels (a long CSV): then it is the mean over cases.
    reported: np.ndarray | None = None

    kind: ClassVar[str] = "per_case"
    per_case: ClassVar[bool] = True

    @classmethod
    def from_values(cls, task, entries, cases, metrics, values, flags, reported=None) -> PerCaseTask:
        """Flag present-but-NaN values ``not_applicable`` and so drop those cases for every entry
        (module doc); ``flags`` marks the rest."""
        present_nan = np.isnan(values) & (flags == FLAG_OK)
        not_applicable = present_nan.any(axis=1)  # (M, C)
        flags = flags.copy()
        for m in range(len(metrics)):
            flags[m][:, not_applicable[m]] = FLAG_NOT_APPLICABLE
        return cls(task, tuple(entries), tuple(cases), tuple(metrics), values, flags.astype(str), reported)

    @property
    def applicable(self) -> np.ndarray:
        return (self.flags != FLAG_NOT_APPLICABLE).all(axis=1)

    @property
    def missing(self) -> np.ndarray:
        return np.isin(self.flags, MISSING_FLAGS) & self.applicable[:, None, :]

    @property
    def has_value(self) -> np.ndarray:
        """(M, E) True where the entry has at least one real value on an applicable case."""
        return ((self.flags == FLAG_OK) & self.applicable[:, None, :]).any(axis=2)

    def worst_oriented(self) -> np.ndarray:
        """(M,) the value (higher better) a missing case gets where a number is needed.

        A known metric's bound (0 for the [0, 1] metrics); for an unknown metric the worst value
        any entry reached on this task, so that a gap never beats a real result.
        """
        worst = np.zeros(len(self.metrics))
        for m, metric in enumerate(self.metrics):
            if metric.worst is not None:
                worst[m] = metric.sign * metric.worst
            else:
                observed = metric.sign * self.values[m][~np.isnan(self.values[m])]
                worst[m] = observed.min() if observed.size else 0.0
        return worst

    def case_values(self) -> np.ndarray:
        """(M, E, C) values with higher better; missing -> the task's worst value, not applicable -> 0."""
        oriented = self.values * np.array([m.sign for m in self.metrics])[:, None, None]
        filled = np.where(self.missing, self.worst_oriented()[:, None, None], oriented)
        return np.where(self.applicable[:, None, :], filled, 0.0)

    def scores(self, idx: np.ndarray) -> np.ndarray:
        """The mean over the applicable cases of each resample; NaN when a resample has none."""
        weights = multiplicity(idx, len(self.cases))
        return weighted_case_means(self.case_values(), self.applicable, weights)

    def score_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        columns = {}
        for m, metric in enumerate(self.metrics):
            reported = self.reported[m] if self.reported is not None else scores[m]
            columns[f"reported_{self.task}_{metric.name}"] = reported
            columns[f"ranked_mean_{self.task}_{metric.name}"] = scores[m]
        return columns

    def case_table(self) -> pd.DataFrame:
        m_idx, e_idx, c_idx = np.indices(self.values.shape).reshape(3, -1)
        return pd.DataFrame(
            {
                "task": self.task,
                "entry": np.asarray(self.entries)[e_idx],
                "case": np.asarray(self.cases)[c_idx],
                "metric": np.asarray([m.name for m in self.metrics])[m_idx],
                "value": self.values.reshape(-1),
                "flag": self.flags.reshape(-1),
            },
            columns=list(CASE_TABLE_COLUMNS),
        )

    def notes(self, scheme: str) -> list[str]:
        out = []
        for m, metric in enumerate(self.metrics):
            dropped = int((self.flags[m] == FLAG_NOT_APPLICABLE).all(axis=0).sum())
            if dropped:
                out.append(f"{self.task}/{metric.name}: {dropped} not-applicable case(s) left out for every entry")
        return out


@dataclass(frozen=True, eq=False)
class PooledTask(TaskData):
    """Predictions per (entry, case) of a classification task, pooled across folds.

    ``y_true`` (C,) class indices; ``probs`` (E, C, K) and ``pred`` (E, C) hold, where a case is
    missing for an entry, the most wrong answer possible (true class scored below every real
    probability, the others above; the label after the true one), so that pooled metrics stay
    computable and the gap counts as a wrong answer; ``flags`` (E, C).
    """

    classes: tuple[str, ...]
    y_true: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    flags: np.ndarray

    kind: ClassVar[str] = "classification"
    per_case: ClassVar[bool] = False

    @property
    def missing(self) -> np.ndarray:
        """(M, E, C): a missing prediction counts as worst for every metric."""
        return np.broadcast_to(np.isin(self.flags, MISSING_FLAGS), (len(self.metrics), *self.flags.shape))

    @property
    def has_value(self) -> np.ndarray:
        """(M, E) True where the entry has a prediction for at least one case (same for every metric)."""
        return np.broadcast_to((self.flags == FLAG_OK).any(axis=1), (len(self.metrics), len(self.entries)))

    def scores(self, idx: np.ndarray) -> np.ndarray:
        """Each metric's registry function on the pooled cases of each resample."""
        out = np.full((len(self.metrics), idx.shape[0], len(self.entries)), np.nan)
        if self.cases:
            for m, metric in enumerate(self.metrics):
                assert metric.function is not None  # read_runs admits only the registry's pooled metrics
                out[m] = metric.sign * metric.function(self.y_true, self.probs, self.pred, idx)
        return out

    def score_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {f"score_{self.task}_{metric.name}": scores[m] for m, metric in enumerate(self.metrics)}

    def case_table(self) -> pd.DataFrame:
        """Per case the probability given to the true class and whether the label is right."""
        e_idx, c_idx = np.indices(self.flags.shape).reshape(2, -1)
        ok = ~np.isin(self.flags, MISSING_FLAGS).reshape(-1)
        prob_true = np.take_along_axis(self.probs, self.y_true[None, :, None], axis=2)[..., 0].reshape(-1)
        correct = (self.pred == self.y_true[None, :]).reshape(-1).astype(float)
        frames = [
            pd.DataFrame(
                {
                    "task": self.task,
                    "entry": np.asarray(self.entries)[e_idx],
                    "case": np.asarray(self.cases)[c_idx],
                    "metric": metric,
                    "value": np.where(ok, value, math.nan),
                    "flag": self.flags.reshape(-1),
                },
                columns=list(CASE_TABLE_COLUMNS),
            )
            for metric, value in (("prob_true_class", prob_true), ("correct", correct))
        ]
        return pd.concat(frames, ignore_index=True)

    def notes(self, scheme: str) -> list[str]:
        if scheme == AGGREGATE_THEN_RANK:
            return []
        return [f"{self.task}: pooled classification metrics are ranked by their pooled value under every scheme"]


# --------------------------------------------------------------------------- tracks


@dataclass(frozen=True, eq=False)
class TrackData:
    track: str
    entries: tuple[str, ...]
    baselines: frozenset[str]
    tasks: tuple[TaskData, ...]
    job_problems: tuple[JobProblem, ...] = ()
    source: str = ""
    #: what collecting found that is not a job problem (a run folder skipped: job.json unreadable
    #: and its path says nothing usable)
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the seed repeats, one track per repeat r >= 1 holding the repeated entries' runs: never
    #: ranked, read for the noise floor (``harness.leaderboard.noise.repeat_scores``)
    repeats: tuple[TrackData, ...] = ()

    def failed_jobs(self) -> dict[str, int]:
        """Per entry, the jobs that ran and failed (``FLAG_FAILED_JOB``: a FAILED marker, or files
        the leaderboard cannot trust). A job not finished or never started is pending, not failed
        (``harness.leaderboard.report.pending_jobs``)."""
        counts = {entry: 0 for entry in self.entries}
        for problem in self.job_problems:
            if problem.status == FLAG_FAILED_JOB:
                counts[problem.entry] += 1
        return counts

    def baseline(self) -> str | None:
        """The track's from-scratch baseline: ``baseline-<track>``, else the only baseline."""
        preferred = f"{BASELINE_PREFIX}{self.track}"
        if preferred in self.baselines:
            return preferred
        return next(iter(self.baselines)) if len(self.baselines) == 1 else None
