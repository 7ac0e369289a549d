"""Per-task aggregate scores on any number of resamples of the cases at once.

A resample is a row of case indices; ``idx`` is (R, C) (the full data is ``full_index(C)``,
one row 0..C-1). Every function returns (M, R, E) arrays - metric, resample, entry - oriented so
that higher is better; ``Metric.sign`` turns them back into the metric's own direction. The
same code scores the full data and the bootstrap, so the two can never disagree.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from harness.leaderboard.collect import ClassificationTask, PerCaseTask, Task

#: Elements per gathered (E, r, C) block: bounds memory of the rank-based AUROC.
_BLOCK_ELEMENTS = 4_000_000


def full_index(n_cases: int) -> np.ndarray:
    return np.arange(n_cases)[None, :]


def multiplicity(idx: np.ndarray, n_cases: int) -> np.ndarray:
    """(R, C) how often each case appears in each resample."""
    n_resamples = idx.shape[0]
    flat = (idx + n_cases * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_cases).reshape(n_resamples, n_cases).astype(float)


def filled_values(task: PerCaseTask) -> np.ndarray:
    """(M, E, C) values with higher better; missing -> the task's worst value, not applicable -> 0."""
    oriented = task.values * np.array([m.sign for m in task.metrics])[:, None, None]
    filled = np.where(task.missing, task.worst_oriented()[:, None, None], oriented)
    return np.where(task.applicable[:, None, :], filled, 0.0)


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


def per_case_scores(task: PerCaseTask, idx: np.ndarray) -> np.ndarray:
    weights = multiplicity(idx, len(task.cases))
    return weighted_case_means(filled_values(task), task.applicable, weights)


def _macro_auroc(task: ClassificationTask, idx: np.ndarray) -> np.ndarray:
    """(R, E) macro one-vs-rest AUROC (binary: the second class's probability) via Mann-Whitney.

    Classes absent (or alone) in a resample are left out of the macro mean; NaN when no class
    has both positives and negatives, the same for every entry, so all entries tie.
    """
    n_entries, n_cases, n_classes = task.probs.shape
    scored_classes = [1] if n_classes == 2 else list(range(n_classes))
    out = np.empty((idx.shape[0], n_entries))
    block = max(1, _BLOCK_ELEMENTS // max(1, n_entries * n_cases))
    for start in range(0, idx.shape[0], block):
        rows = idx[start:start + block]
        labels = task.y_true[rows]  # (r, C)
        total = np.zeros((rows.shape[0], n_entries))
        counted = np.zeros((rows.shape[0], 1))
        for k in scored_classes:
            positive = labels == k
            n_pos = positive.sum(axis=1)
            n_neg = n_cases - n_pos
            ranks = rankdata(task.probs[:, :, k][:, rows], axis=-1)  # (E, r, C), ties averaged
            u = np.einsum("erc,rc->re", ranks, positive) - (n_pos * (n_pos + 1) / 2)[:, None]
            defined = (n_pos > 0) & (n_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = u / (n_pos * n_neg)[:, None]
            total += np.where(defined[:, None], auc, 0.0)
            counted += defined[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + block] = np.where(counted > 0, total / counted, np.nan)
    return out


def _balanced_accuracy(task: ClassificationTask, idx: np.ndarray) -> np.ndarray:
    """(R, E) mean recall over the classes present in each resample (scikit-learn's definition)."""
    n_entries, n_cases, n_classes = task.probs.shape
    weights = multiplicity(idx, n_cases)
    onehot = np.eye(n_classes)[task.y_true]  # (C, K)
    class_weight = weights @ onehot  # (R, K)
    correct = (task.pred == task.y_true[None, :]).astype(float)  # (E, C)
    hits = (weights @ (correct.T[:, :, None] * onehot[:, None, :]).reshape(n_cases, -1)).reshape(
        -1, n_entries, n_classes
    )
    present = class_weight > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present[:, None, :], hits / class_weight[:, None, :], 0.0)
        return recall.sum(axis=2) / present.sum(axis=1)[:, None]


_POOLED = {"auroc": _macro_auroc, "balanced_accuracy": _balanced_accuracy}


def classification_scores(task: ClassificationTask, idx: np.ndarray) -> np.ndarray:
    if not task.cases:
        return np.full((len(task.metrics), idx.shape[0], len(task.entries)), np.nan)
    return np.stack([_POOLED[m.name](task, idx) for m in task.metrics])


def task_scores(task: Task, idx: np.ndarray) -> np.ndarray:
    """(M, R, E) aggregate per metric, higher better (missing counted as the worst value)."""
    if isinstance(task, PerCaseTask):
        return per_case_scores(task, idx)
    return classification_scores(task, idx)


def report_scores(task: Task) -> np.ndarray:
    """(M, E) the full-data aggregate in each metric's own direction (the ``score_`` columns)."""
    signs = np.array([m.sign for m in task.metrics])[:, None]
    return task_scores(task, full_index(len(task.cases)))[:, 0, :] * signs
