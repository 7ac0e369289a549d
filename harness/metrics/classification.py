"""Classification metrics from per-case class probabilities, all computed by scikit-learn.

Conventions (docs/classification.md has the table):

* ``y_true`` are class indices into ``classes`` (shape ``(N,)``), ``probs`` the predicted
  probabilities (shape ``(N, K)``, rows sum to 1); the predicted label is the arg-max;
* ``auroc``: macro mean over classes of the one-vs-rest ROC AUC (``roc_auc_score`` of
  ``y == k`` against ``probs[:, k]``). A class absent from ``y_true`` (or present in every
  case) has no defined AUROC: it is left out of the mean and listed in ``undefined``; with no
  defined class at all the value is ``None``. For two classes this equals the usual binary AUROC;
* ``average_precision``: the same one-vs-rest macro mean of ``average_precision_score``; a class
  without positives in ``y_true`` is undefined and left out the same way;
* ``balanced_accuracy``: ``balanced_accuracy_score`` (mean recall over the classes present in
  ``y_true``);
* ``f1``: ``f1_score(average="macro", zero_division=0)`` over the classes present in ``y_true``
  or predicted (scikit-learn's default label set); a class neither present nor predicted has
  no F1 and is listed in ``undefined``.

Every aggregate is a float or ``None`` (never NaN), so ``metrics.json`` stays plain JSON. The
leaderboard ranks by the same metrics pooled across folds, with the vectorised versions in
``harness.metrics.pooled`` (equal to these on the same cases; the registry,
``harness.metrics.registry``, says which is which).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.metrics.registry import metrics_for
from harness.task_types import CLASSIFICATION

#: The classification metrics of the registry (``aggregates`` also holds plain ``accuracy``).
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in metrics_for(CLASSIFICATION))
#: Relative tolerance on a row of probabilities summing to 1.
PROB_SUM_TOL = 1e-3


class ClassificationMetricsError(ValueError):
    """Inputs that cannot be scored (shapes, unknown labels, probabilities that are not a distribution)."""


@dataclass
class ClassificationScores:
    """Aggregates (``None`` where undefined), per-class values and the reasons for undefined ones."""

    aggregates: dict[str, float | None]
    per_class: dict[str, dict[str, float | None]]
    undefined: list[dict] = field(default_factory=list)
    n_cases: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "aggregates": dict(self.aggregates),
            "per_class": {k: dict(v) for k, v in self.per_class.items()},
            "undefined_metrics": list(self.undefined),
            "n_cases": self.n_cases,
            "class_counts": dict(self.class_counts),
        }


def _check_inputs(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    k = len(classes)
    if k < 2:
        raise ClassificationMetricsError(f"need at least two classes, got {list(classes)}")
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ClassificationMetricsError(f"y_true must be a non-empty 1D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ClassificationMetricsError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if p.shape != (y.size, k):
        raise ClassificationMetricsError(f"probs must have shape (N={y.size}, K={k}), got {p.shape}")
    if y.min() < 0 or y.max() >= k:
        raise ClassificationMetricsError(f"y_true holds indices outside 0..{k - 1}: {sorted(set(y.tolist()))}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ClassificationMetricsError("probs must be finite and within [0, 1]")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > PROB_SUM_TOL)
    if bad.size:
        raise ClassificationMetricsError(
            f"probabilities of {bad.size} case(s) do not sum to 1 (first: row {bad[0]} sums to {sums[bad[0]]:.6f})"
        )
    return y.astype(np.int64), p


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score_classification(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> ClassificationScores:
    """Score one test set. ``y_true`` (N,) class indices, ``probs`` (N, K); see the module docstring."""
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

    y, p = _check_inputs(y_true, probs, classes)
    classes = list(classes)
    pred = p.argmax(axis=1)
    n = y.size
    per_class: dict[str, dict[str, float | None]] = {c: {} for c in classes}
    undefined: list[dict] = []
    aurocs, aps = [], []
    for k, name in enumerate(classes):
        positives = int((y == k).sum())
        if positives == 0 or positives == n:
            why = "absent from the test cases" if positives == 0 else "the only class in the test cases"
            per_class[name]["auroc"] = None
            undefined.append({"metric": "auroc", "class": name, "reason": f"class {name!r} is {why}"})
        else:
            v = float(roc_auc_score(y == k, p[:, k]))
            per_class[name]["auroc"] = v
            aurocs.append(v)
        if positives == 0:
            per_class[name]["average_precision"] = None
            undefined.append(
                {
                    "metric": "average_precision",
                    "class": name,
                    "reason": f"class {name!r} is absent from the test cases",
                }
            )
        else:
            v = float(average_precision_score(y == k, p[:, k]))
            per_class[name]["average_precision"] = v
            aps.append(v)

    present = sorted(set(y.tolist()) | set(pred.tolist()))
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": expected when a fold misses a class
        warnings.simplefilter("ignore", UserWarning)
        bacc = float(balanced_accuracy_score(y, pred))
        f1_each = f1_score(y, pred, labels=present, average=None, zero_division=0)
    f1_by_index = dict(zip(present, (float(v) for v in f1_each)))
    for k, name in enumerate(classes):
        per_class[name]["f1"] = f1_by_index.get(k)
        if k not in f1_by_index:
            undefined.append(
                {"metric": "f1", "class": name, "reason": f"class {name!r} is neither in the test cases nor predicted"}
            )
    aggregates = {
        "auroc": _mean_or_none(aurocs),
        "balanced_accuracy": bacc,
        "f1": _mean_or_none(list(f1_by_index.values())),
        "average_precision": _mean_or_none(aps),
        "accuracy": float((pred == y).mean()),
    }
    return ClassificationScores(
        aggregates=aggregates,
        per_class=per_class,
        undefined=undefined,
        n_cases=n,
        class_counts={name: int((y == k).sum()) for k, name in enumerate(classes)},
    )
