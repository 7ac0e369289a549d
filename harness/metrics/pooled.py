"""Pooled classification metrics, vectorised over entries and over resamples of the cases.

The leaderboard scores every entry of a classification task on the test cases pooled across
folds, and again on each of ~1000 bootstrap resamples of them; a loop of scikit-learn calls per
(entry, resample) would take minutes, so these compute all of them at once. Each equals
scikit-learn on the resampled arrays ``y_true[idx]``, ``probs[e][idx]`` (tested on random data,
ties included), and the per-fold values in ``metrics.json`` (``harness.metrics.classification``).

Shapes, for every function:

* ``y_true`` (C,) class indices 0..K-1 of the C pooled cases;
* ``probs`` (E, C, K) the class scores of E entries, or (C, K) for one entry. Only their order
  within a class matters (AUROC, average precision), so they need not sum to 1: the leaderboard
  gives a missing case the most wrong answer, -1 for the true class and 2 for the others;
* ``pred`` (E, C) (or (C,)) predicted class indices; default the arg-max of ``probs``. The
  leaderboard passes a run's ``pred_label`` column (balanced accuracy, F1);
* ``resamples`` (R, C) case indices, one resample per row; default every case once.

Each returns (R, E) floats ((R,) for a single entry), NaN where no class has the metric defined
(a resample with one class, for AUROC); no cases at all gives NaN everywhere.
"""

from __future__ import annotations

import numpy as np

#: Elements per gathered (E, r, C) block: bounds the memory of AUROC and average precision.
_BLOCK_ELEMENTS = 4_000_000


def multiplicity(idx: np.ndarray, n_cases: int) -> np.ndarray:
    """(R, C) how often each case appears in each resample ``idx`` (R, C)."""
    n_resamples = idx.shape[0]
    flat = (idx + n_cases * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_cases).reshape(n_resamples, n_cases).astype(float)


def _inputs(y_true, probs, pred, resamples):
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    single = p.ndim == 2
    if single:
        p = p[None]
    if y.ndim != 1 or p.ndim != 3 or p.shape[1] != y.shape[0]:
        raise ValueError(f"y_true must be (C,) and probs (E, C, K) or (C, K); got {y.shape} and {np.shape(probs)}")
    if pred is None:
        labels = p.argmax(axis=2) if p.shape[2] else np.zeros(p.shape[:2], dtype=np.int64)
    else:
        labels = np.asarray(pred, dtype=np.int64)
        labels = labels[None] if labels.ndim == 1 else labels
        if labels.shape != p.shape[:2]:
            raise ValueError(f"pred must be (E, C) = {p.shape[:2]}, got {np.shape(pred)}")
    idx = np.arange(y.shape[0])[None, :] if resamples is None else np.asarray(resamples, dtype=np.int64)
    if idx.ndim != 2:
        raise ValueError(f"resamples must be (R, C) case indices, got shape {idx.shape}")
    return y, p, labels, idx, single


def _result(values: np.ndarray, single: bool) -> np.ndarray:
    return values[:, 0] if single else values


def macro_auroc(y_true, probs, pred=None, resamples=None) -> np.ndarray:
    """Macro one-vs-rest ROC AUC via Mann-Whitney U (ties count half), over the classes that have
    both positives and negatives in a resample. Two classes: the AUROC of the second class's score
    (equal to the macro mean of both when the scores sum to 1, as scikit-learn's binary AUROC).
    ``pred`` is not used."""
    from scipy.stats import rankdata

    y, p, _, idx, single = _inputs(y_true, probs, pred, resamples)
    n_entries, n_cases, n_classes = p.shape
    out = np.full((idx.shape[0], n_entries), np.nan)
    if n_cases == 0:
        return _result(out, single)
    scored_classes = [1] if n_classes == 2 else list(range(n_classes))
    block = max(1, _BLOCK_ELEMENTS // max(1, n_entries * n_cases))
    for start in range(0, idx.shape[0], block):
        rows = idx[start : start + block]
        labels = y[rows]  # (r, C)
        total = np.zeros((rows.shape[0], n_entries))
        counted = np.zeros((rows.shape[0], 1))
        for k in scored_classes:
            positive = labels == k
            n_pos = positive.sum(axis=1)
            n_neg = rows.shape[1] - n_pos
            ranks = rankdata(p[:, :, k][:, rows], axis=-1)  # (E, r, C), ties averaged
            u = np.einsum("erc,rc->re", ranks, positive) - (n_pos * (n_pos + 1) / 2)[:, None]
            defined = (n_pos > 0) & (n_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = u / (n_pos * n_neg)[:, None]
            total += np.where(defined[:, None], auc, 0.0)
            counted += defined[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block] = np.where(counted > 0, total / counted, np.nan)
    return _result(out, single)


def _weighted_per_class(weights: np.ndarray, per_case: np.ndarray) -> np.ndarray:
    """(R, E, K) sums over cases of ``weights`` (R, C) times ``per_case`` (E, C, K)."""
    n_entries, n_cases, n_classes = per_case.shape
    flat = per_case.transpose(1, 0, 2).reshape(n_cases, n_entries * n_classes)
    return (weights @ flat).reshape(-1, n_entries, n_classes)


def balanced_accuracy(y_true, probs, pred=None, resamples=None) -> np.ndarray:
    """Mean recall over the classes present in each resample (``balanced_accuracy_score``)."""
    y, p, labels, idx, single = _inputs(y_true, probs, pred, resamples)
    n_entries, n_cases, n_classes = p.shape
    weights = multiplicity(idx, n_cases)
    onehot = np.eye(n_classes)[y]  # (C, K)
    class_weight = weights @ onehot  # (R, K)
    correct = (labels == y[None, :]).astype(float)  # (E, C)
    hits = _weighted_per_class(weights, correct[:, :, None] * onehot[None, :, :])
    present = class_weight > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present[:, None, :], hits / class_weight[:, None, :], 0.0)
        return _result(recall.sum(axis=2) / present.sum(axis=1)[:, None], single)


def macro_f1(y_true, probs, pred=None, resamples=None) -> np.ndarray:
    """Macro F1, ``f1_score(average="macro", zero_division=0)``: per class 2TP / (2TP + FP + FN)
    over the classes present or predicted in the resample (scikit-learn's default label set)."""
    y, p, labels, idx, single = _inputs(y_true, probs, pred, resamples)
    n_entries, n_cases, n_classes = p.shape
    weights = multiplicity(idx, n_cases)
    true_hot = np.eye(n_classes)[y]  # (C, K)
    pred_hot = np.eye(n_classes)[labels]  # (E, C, K)
    tp = _weighted_per_class(weights, pred_hot * true_hot[None])
    denominator = (weights @ true_hot)[:, None, :] + _weighted_per_class(weights, pred_hot)  # 2TP + FP + FN
    counted = denominator > 0
    f1 = np.where(counted, 2.0 * tp / np.where(counted, denominator, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _result(f1.sum(axis=2) / counted.sum(axis=2), single)


def macro_average_precision(y_true, probs, pred=None, resamples=None) -> np.ndarray:
    """Macro one-vs-rest average precision (``average_precision_score(y == k, probs[:, k])``:
    the sum over score thresholds of the recall gained times the precision there, tied scores
    forming one threshold) over the classes with a positive case in the resample. Every class
    counts, two classes too (as in ``metrics.json``). ``pred`` is not used."""
    y, p, _, idx, single = _inputs(y_true, probs, pred, resamples)
    n_entries, n_cases, n_classes = p.shape
    out = np.full((idx.shape[0], n_entries), np.nan)
    if n_cases == 0:
        return _result(out, single)
    weights = multiplicity(idx, n_cases)  # sorting once per entry serves every resample
    total = np.zeros_like(out)
    counted = np.zeros((idx.shape[0], 1))
    block = max(1, _BLOCK_ELEMENTS // max(1, n_entries * n_cases))
    positions = np.arange(n_cases)
    for k in range(n_classes):
        scores = p[:, :, k]
        order = np.argsort(-scores, axis=1, kind="stable")  # (E, C) best first
        ranked = np.take_along_axis(scores, order, axis=1)
        last_of_tie = np.ones(ranked.shape, dtype=bool)
        last_of_tie[:, :-1] = ranked[:, 1:] != ranked[:, :-1]
        # each position's threshold: the last position of its group of tied scores
        group_end = np.minimum.accumulate(np.where(last_of_tie, positions, n_cases)[:, ::-1], axis=1)[:, ::-1]
        positive = (y == k).astype(float)[order]  # (E, C)
        n_pos = weights @ (y == k).astype(float)  # (R,)
        for start in range(0, idx.shape[0], block):
            w = weights[start : start + block][:, order]  # (r, E, C)
            gained = w * positive
            at_end = np.broadcast_to(group_end, w.shape)
            tp = np.take_along_axis(np.cumsum(gained, axis=2), at_end, axis=2)
            seen = np.take_along_axis(np.cumsum(w, axis=2), at_end, axis=2)
            precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1.0), 0.0)
            defined = n_pos[start : start + block] > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                ap = (gained * precision).sum(axis=2) / n_pos[start : start + block, None]
            total[start : start + block] += np.where(defined[:, None], ap, 0.0)
            counted[start : start + block] += defined[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counted > 0, total / counted, np.nan)
    return _result(out, single)
