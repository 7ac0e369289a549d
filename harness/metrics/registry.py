"""The metric registry: every metric a task can rank by, described once.

One ``Metric`` record per metric: its name, direction (``higher_is_better``), range, kind, the
task type it belongs to and, for a pooled metric, the function computing it. The task specs
validate their ``metrics:`` against it, the fine-tuning runners write each metric's direction
from it into ``metrics.json``, the leaderboard takes directions, ranges and pooled functions from
it, and ``harness leaderboard --help`` lists it. A name is unique across task types.

Kinds:

* ``per_case``: a value per case and label (Dice, NSD); the leaderboard ranks per case or the
  mean over cases;
* ``pooled``: computed over the test cases together, pooled across folds (AUROC, balanced
  accuracy, macro F1, average precision); the leaderboard ranks the pooled value and recomputes
  it on each bootstrap resample with the record's ``function``
  (``harness.metrics.pooled``: ``f(y_true, probs, pred=None, resamples=None) -> (R, E)``).

This module imports nothing heavy (no numpy): loading a task spec loads it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.task_types import CLASSIFICATION, SEGMENTATION, TASK_TYPES

PER_CASE = "per_case"
POOLED = "pooled"
KINDS: tuple[str, ...] = (PER_CASE, POOLED)


class MetricError(ValueError):
    """A metric name or direction that cannot be used; the message names it and the valid options."""


class UnknownMetricError(MetricError):
    """A name the registry does not hold (for the task type asked about)."""


class _Pooled:
    """A function of ``harness.metrics.pooled``, imported on its first call (numpy, scipy)."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, y_true, probs, pred=None, resamples=None):
        from harness.metrics import pooled

        return getattr(pooled, self.__name__)(y_true, probs, pred, resamples)

    def __repr__(self) -> str:
        return f"harness.metrics.pooled.{self.__name__}"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    #: (lo, hi): every value lies in it; None for a metric the harness does not know (a long
    #: CSV's own column), which then has no known worst value either
    range: tuple[float, float] | None = None
    kind: str = PER_CASE
    #: the task type it belongs to; None for a metric the harness does not know
    task_type: str | None = None
    description: str = ""
    #: pooled metrics: ``f(y_true, probs, pred=None, resamples=None) -> (R, E)`` (module doc)
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def sign(self) -> float:
        """Multiply by this to make higher better."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def worst(self) -> float | None:
        """The worst possible value (the range's low end, or high end when lower is better)."""
        if self.range is None:
            return None
        return self.range[0] if self.higher_is_better else self.range[1]

    def range_text(self) -> str:
        lo, hi = self.range if self.range is not None else (float("-inf"), float("inf"))
        return f"[{lo:g}, {hi:g}]"

    def check_values(self, values) -> None:
        """Raise ``MetricError`` when a value of the array ``values`` is infinite or out of range
        (NaN, "not applicable", is allowed). A metric without a range accepts any number."""
        if self.range is None:
            return
        import numpy as np

        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        lo, hi = self.range
        if np.isinf(values).any() or (finite.size and (finite.min() < lo or finite.max() > hi)):
            raise MetricError(f"{self.name} values must lie in {self.range_text()}")


_UNIT = (0.0, 1.0)
_ALL = (
    Metric("dice", True, _UNIT, PER_CASE, SEGMENTATION, "Dice 2|P∩R|/(|P|+|R|) per case and label (docs/metrics.md)"),
    Metric(
        "nsd",
        True,
        _UNIT,
        PER_CASE,
        SEGMENTATION,
        "normalized surface Dice at a tolerance in mm per case and label (docs/metrics.md)",
    ),
    Metric(
        "auroc",
        True,
        _UNIT,
        POOLED,
        CLASSIFICATION,
        "macro one-vs-rest ROC AUC over the classes present (binary: the usual AUROC)",
        _Pooled("macro_auroc"),
    ),
    Metric(
        "balanced_accuracy",
        True,
        _UNIT,
        POOLED,
        CLASSIFICATION,
        "mean recall over the classes present",
        _Pooled("balanced_accuracy"),
    ),
    Metric(
        "f1",
        True,
        _UNIT,
        POOLED,
        CLASSIFICATION,
        "macro F1 over the classes present or predicted (zero_division=0)",
        _Pooled("macro_f1"),
    ),
    Metric(
        "average_precision",
        True,
        _UNIT,
        POOLED,
        CLASSIFICATION,
        "macro one-vs-rest average precision over the classes with a positive case",
        _Pooled("macro_average_precision"),
    ),
)
#: Every metric by name, in registry order.
METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _ALL})


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise MetricError(f"unknown task type {task_type!r}; known: {', '.join(TASK_TYPES)}")


def metrics_for(task_type: str, kind: str | None = None) -> tuple[Metric, ...]:
    """The metrics a ``task_type`` task may rank by (of one ``kind`` if given), in registry order,
    then those its task-type entry brings (``metrics``)."""
    _check_task_type(task_type)
    entry = TASK_TYPES[task_type]
    brought: tuple[Metric, ...] = tuple(entry.load("metrics")) if entry.metrics is not None else ()
    own = [m for m in METRICS.values() if m.task_type == task_type] + list(brought)
    return tuple(m for m in own if kind in (None, m.kind))


def get_metric(name: str, task_type: str | None = None) -> Metric:
    """The record of ``name``, which must be a ``task_type`` metric when that is given.

    An unknown name raises ``UnknownMetricError`` saying "did you mean ...?" and listing the
    valid names; a metric of another task type names its type.
    """
    if task_type is not None:
        _check_task_type(task_type)
    candidates = metrics_for(task_type) if task_type is not None else tuple(METRICS.values())
    names = [m.name for m in candidates]
    metric = next((m for m in candidates if m.name == name), METRICS.get(name))
    if metric is not None and metric in candidates:
        return metric
    scope = f"{task_type} " if task_type is not None else ""
    if metric is not None:
        raise UnknownMetricError(
            f"metric {name!r} is a {metric.task_type} metric, not a {task_type} one; {scope}metrics: {', '.join(names)}"
        )
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownMetricError(f"unknown metric {name!r}{hint}; known {scope}metrics: {', '.join(names)}")


def resolve_metric(name: Any, higher_is_better: Any = None) -> Metric:
    """The metric an input names, with the direction it may state (``metrics.json``, a long CSV).

    A known name gives the registry's record (a contradicting direction is an error); an unknown
    one must state its direction and gives a per-case metric without range or task type.
    """
    if not isinstance(name, str) or not name:
        raise MetricError(f"metric name must be a non-empty string, got {name!r}")
    known = METRICS.get(name)
    if higher_is_better is None:
        if known is None:
            raise MetricError(
                f"metric {name!r} is unknown and has no higher_is_better; give it, or use one of "
                f"{', '.join(sorted(METRICS))}"
            )
        return known
    if not isinstance(higher_is_better, bool):
        raise MetricError(f"higher_is_better of {name!r} must be true or false")
    if known is None:
        return Metric(name, higher_is_better)
    if known.higher_is_better != higher_is_better:
        raise MetricError(f"metric {name!r} is higher_is_better={known.higher_is_better}, not {higher_is_better}")
    return known
