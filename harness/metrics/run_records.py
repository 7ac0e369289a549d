"""The typed records of a finished run: its metrics.json (``RunMetrics``) and its cases.csv,
whose columns one ``CasesSchema`` per task type defines from the metric registry.

``write_run_records`` is the one writer (the fine-tuning runners and `harness rescore`), and
``RunRecords.read`` the one reader (the leaderboard, `harness rescore`, the writer's read-back), of
both files, on top of the results contract (``harness.runs.RunResult``: atomic writes, the NaN
policy, parse errors). Every problem is a ``ResultsFileError`` naming the file and the field or
column. ``reported_mean`` is the organizers' mean of a per-case metric, which both the runner's
aggregates and the leaderboard's ``reported_`` columns use. ``RunTimings`` is the narrower view the
cost plan takes of a metrics.json (timings, patch, schedule; no ranking metrics needed).

This module imports nothing heavy at import time (numpy and pandas where a table is handled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.metrics.registry import PER_CASE, Metric, MetricError, get_metric, metrics_for, resolve_metric
from harness.runs import ResultsFileError, RunFolder, RunResult, read_metrics_json
from harness.task_types import CLASSIFICATION, SEGMENTATION, TASK_TYPES

if TYPE_CHECKING:
    import pandas as pd

#: The rule the reported means follow (``reported_mean``), stated in metrics.json's aggregates.
MEAN_DEFINITION = "per label the nan-mean over cases, then the mean over labels"


def reported_mean(per_label: Iterable[Any]) -> tuple[list[float | None], float | None]:
    """A per-case metric's mean as the organizers report it, from its values per label (cases, or
    (fold, case) units): per label the nan-mean of its values, then the mean of those label means.
    NaN ("not applicable": reference and prediction both empty) is left out, as nnU-Net does, and
    so is a label NaN everywhere. Returns (the label means, the mean); None where nothing is left."""
    import numpy as np

    means: list[float | None] = []
    for values in per_label:
        array = np.asarray(values, dtype=float)
        finite = array[~np.isnan(array)]
        means.append(float(finite.mean()) if finite.size else None)
    present = [m for m in means if m is not None]
    return means, (float(np.mean(present)) if present else None)


# --------------------------------------------------------------------------- cases.csv
#: The prefix of a classification cases.csv's per-class probability columns.
PROB_PREFIX = "prob_"


def prob_column(name: str) -> str:
    """The cases.csv column holding the probability of class ``name``."""
    return f"{PROB_PREFIX}{name}"


@dataclass(frozen=True)
class CasesSchema:
    """The columns of one task type's cases.csv, in file order: ``keys`` (what identifies a row),
    ``labels`` (text: true and predicted class), the task type's per-case metrics from the
    registry, ``extra`` (counts beside them), then one probability column per class when
    ``per_class`` (the classes are the run's, metrics.json's ``classes``)."""

    task_type: str
    keys: tuple[str, ...]
    labels: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    per_class: bool = False

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """The registry's per-case metrics of the task type: one column each."""
        return tuple(m.name for m in metrics_for(self.task_type, PER_CASE))

    def columns(self, classes: Sequence[str] = ()) -> tuple[str, ...]:
        """Every column the writer writes, in order."""
        probs = tuple(prob_column(c) for c in classes) if self.per_class else ()
        return (*self.keys, *self.labels, *self.metric_columns, *self.extra, *probs)

    def ranked_columns(self, metrics: Sequence[Metric], classes: Sequence[str] = ()) -> tuple[str, ...]:
        """What a reader that ranks by ``metrics`` needs: the keys and labels, the per-case
        columns of those metrics (pooled ones are computed from the probabilities) and the
        probabilities."""
        ranked = tuple(m.name for m in metrics if m.kind == PER_CASE)
        probs = tuple(prob_column(c) for c in classes) if self.per_class else ()
        return (*self.keys, *self.labels, *ranked, *probs)

    def check(self, cases: pd.DataFrame, where: Any, needed: Sequence[str]) -> None:
        """``ResultsFileError`` naming ``where`` when ``cases`` lacks a ``needed`` column."""
        missing = [c for c in needed if c not in cases.columns]
        if missing:
            raise ResultsFileError(where, f"missing column(s) {missing}; has {list(cases.columns)}")


SEGMENTATION_CASES = CasesSchema(SEGMENTATION, keys=("case", "label"), extra=("ref_voxels", "pred_voxels"))
CLASSIFICATION_CASES = CasesSchema(CLASSIFICATION, keys=("case",), labels=("true_label", "pred_label"), per_class=True)
CASES_SCHEMAS: Mapping[str, CasesSchema] = {s.task_type: s for s in (SEGMENTATION_CASES, CLASSIFICATION_CASES)}


def cases_schema(task_type: str) -> CasesSchema:
    """The cases.csv schema of ``task_type`` (its entry's ``cases``); a type without one is a
    ``KeyError`` naming it."""
    entry = TASK_TYPES.get(task_type)
    if entry is not None and entry.cases is not None:
        return entry.load("cases")
    try:
        return CASES_SCHEMAS[task_type]
    except KeyError:
        raise KeyError(f"task type {task_type!r} has no cases.csv schema; known: {', '.join(CASES_SCHEMAS)}") from None


# --------------------------------------------------------------------------- metrics.json
RANKING_METRICS, CLASSES, AGGREGATES = "ranking_metrics", "classes", "aggregates"


@dataclass(frozen=True)
class RunMetrics:
    """A run's metrics.json. ``ranking_metrics`` (what the run ranks by, with each direction) is
    required: every reader needs it and every runner has written it. ``classes`` (a
    classification run's, in the order of its probability columns) and ``aggregates`` (the
    runner's means) may be absent, as in hand-made files. Every other key (the job's description,
    provenance, a runner's settings) is kept in ``fields``, unchecked, and written back."""

    ranking_metrics: tuple[Metric, ...]
    classes: tuple[str, ...] = ()
    aggregates: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: Any) -> RunMetrics:
        """The record of a metrics.json's content; ``where`` (its path) names the file in errors."""
        listed = data.get(RANKING_METRICS)
        if not isinstance(listed, list) or not listed:
            raise ResultsFileError(where, f"field {RANKING_METRICS!r} must be a non-empty list")
        metrics = []
        for item in listed:
            if not isinstance(item, dict) or "name" not in item:
                raise ResultsFileError(where, f"each {RANKING_METRICS} item needs a 'name', got {item!r}")
            try:
                metrics.append(resolve_metric(item["name"], item.get("higher_is_better")))
            except MetricError as exc:
                raise ResultsFileError(where, f"field {RANKING_METRICS!r}: {exc}") from None
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ResultsFileError(where, f"{RANKING_METRICS} lists a metric twice: {names}")
        raw = data.get(CLASSES)
        classes: tuple[str, ...] = ()
        if raw is not None:
            if not isinstance(raw, list) or len(raw) < 2 or len({str(c) for c in raw}) != len(raw):
                raise ResultsFileError(where, f"field {CLASSES!r} must list at least two distinct classes")
            classes = tuple(str(c) for c in raw)
        aggregates = data.get(AGGREGATES)
        if aggregates is None:
            aggregates = {}
        if not isinstance(aggregates, dict):
            raise ResultsFileError(where, f"field {AGGREGATES!r} must be an object")
        rest = {k: v for k, v in data.items() if k not in (RANKING_METRICS, CLASSES, AGGREGATES)}
        return cls(tuple(metrics), classes, aggregates, rest)

    def as_dict(self) -> dict[str, Any]:
        """The metrics.json content (``from_dict`` reads it back equal)."""
        out: dict[str, Any] = {
            **self.fields,
            AGGREGATES: dict(self.aggregates),
            RANKING_METRICS: [{"name": m.name, "higher_is_better": m.higher_is_better} for m in self.ranking_metrics],
        }
        if self.classes:
            out[CLASSES] = list(self.classes)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """A field beside the typed ones (``wall_seconds``, ``schedule``, ...)."""
        return self.fields.get(key, default)

    @classmethod
    def of_task(cls, task: Any, classes: Sequence[str] = (), aggregates=None, fields=None) -> RunMetrics:
        """The record of a run of ``task`` (a ``harness.tasks`` spec): ranked by the task's
        metrics, each with the registry's direction."""
        ranked = tuple(get_metric(m.name, task.type) for m in task.metrics)
        return cls(ranked, tuple(classes), dict(aggregates or {}), dict(fields or {}))

    @classmethod
    def read(cls, run: RunFolder) -> RunMetrics:
        """Only the run's metrics.json (a reader that needs no cases, e.g. the cost model)."""

        return cls.from_dict(read_metrics_json(run.metrics_json), run.metrics_json)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class RunTimings:
    """The narrower view of a metrics.json the cost plan takes (``harness.jobs.cost``): how long
    the run took and at what patch and schedule. A value absent or of the wrong kind (an old or
    hand-made file) is None, so such a run teaches the cost model nothing instead of failing it."""

    wall_seconds: float | None
    train_seconds: float | None
    predict_seconds: float | None
    patch_size: tuple[int, ...] | None
    schedule: Mapping[str, Any]
    num_cases: int | None

    @classmethod
    def read(cls, run: RunFolder) -> RunTimings:
        """The timings of a run's metrics.json, which needs to be a JSON object and no more (the
        cost plan learns from any finished run, ranked or not)."""
        return cls.from_dict(read_metrics_json(run.metrics_json))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunTimings:
        patch, schedule, aggregates = data.get("patch_size"), data.get("schedule"), data.get(AGGREGATES)
        cases = aggregates.get("num_cases") if isinstance(aggregates, dict) else None
        valid_patch = isinstance(patch, list) and bool(patch) and all(isinstance(p, int) and p > 0 for p in patch)
        return cls(
            wall_seconds=_seconds(data.get("wall_seconds")),
            train_seconds=_seconds(data.get("train_seconds")),
            predict_seconds=_seconds(data.get("predict_seconds")),
            patch_size=tuple(patch) if valid_patch and isinstance(patch, list) else None,
            schedule=schedule if isinstance(schedule, dict) else {},
            num_cases=cases if isinstance(cases, int) and not isinstance(cases, bool) and cases > 0 else None,
        )


@dataclass(frozen=True, eq=False)
class RunRecords:
    """A finished run's metrics.json and cases.csv, both checked against the task type's
    ``CasesSchema``: the cases hold every column the run's ranking metrics and classes need."""

    metrics: RunMetrics
    cases: pd.DataFrame

    @classmethod
    def read(cls, run: RunFolder, task_type: str) -> RunRecords:
        """metrics.json, then cases.csv (``RunResult.read``), then the columns; the first problem
        is a ``ResultsFileError`` naming its file. A classification run must list its classes."""
        raw = RunResult.read(run)
        metrics = RunMetrics.from_dict(raw.metrics, run.metrics_json)
        schema = cases_schema(task_type)
        if schema.per_class and not metrics.classes:
            raise ResultsFileError(run.metrics_json, f"field {CLASSES!r} must list at least two distinct classes")
        schema.check(raw.cases, run.cases_csv, schema.ranked_columns(metrics.ranking_metrics, metrics.classes))
        return cls(metrics, raw.cases)


def write_run_records(run: RunFolder, task_type: str, metrics: RunMetrics, cases: pd.DataFrame) -> RunRecords:
    """Write the run's cases.csv (the schema's columns, in order) and metrics.json atomically,
    cases.csv first (``RunResult.write``), and read them back (``RunRecords.read``): what a run
    marked DONE after this holds is what its readers accept. A table without a schema column is
    a ``ValueError`` naming the run, before anything is written."""
    columns = list(cases_schema(task_type).columns(metrics.classes))
    missing = [c for c in columns if c not in cases.columns]
    if missing:
        raise ValueError(f"{run.cases_csv}: the {task_type} cases table lacks column(s) {missing}")
    RunResult(metrics.as_dict(), cases.loc[:, columns]).write(run)
    return RunRecords.read(run, task_type)
