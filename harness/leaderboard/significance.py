"""Pairwise one-sided tests between entries with Holm's correction.

``p[..., i, j]`` is the p-value of "entry i is better than entry j" (higher oriented values);
the diagonal is NaN. Per-case tasks use the Wilcoxon signed-rank test on paired per-case values
(zero differences dropped, scipy's default); pooled classification metrics have no per-case
value, so they use a paired bootstrap test on the same resamples as the stability analysis.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import wilcoxon

_BLOCK_ELEMENTS = 8_000_000


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis; NaN counts as 1 (never rejected)."""
    p = np.where(np.isnan(p), 1.0, p)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    stepped = (m - np.arange(m)) * np.take_along_axis(p, order, axis=-1)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(stepped, axis=-1))
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return adjusted


def holm_matrix(p: np.ndarray) -> np.ndarray:
    """Holm over the off-diagonal of each (E, E) matrix (the family: all ordered pairs)."""
    n = p.shape[-1]
    off = ~np.eye(n, dtype=bool)
    out = np.full(p.shape, np.nan)
    if n > 1:
        family = p[..., off]
        out[..., off] = np.where(np.isnan(family), np.nan, holm(family))  # untested stays NaN
    return out


def pairwise_wilcoxon(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(R, E, E) one-sided Wilcoxon p-values on the cases ``idx`` (R, C) of ``values`` (E, C).

    A pair whose differences are all zero, or fewer than two cases, gets p = 1. scipy's default
    method: exact (no ties) or exhaustive permutations (ties, zeros) up to 13 cases, else normal.
    """
    n_entries = values.shape[0]
    first, second = np.triu_indices(n_entries, k=1)
    diffs = values[first] - values[second]  # (P, C)
    out = np.full((idx.shape[0], n_entries, n_entries), np.nan)
    if first.size == 0:
        return out
    block = max(1, _BLOCK_ELEMENTS // max(1, diffs.size))
    for start in range(0, idx.shape[0], block):
        rows = idx[start : start + block]
        d = np.moveaxis(diffs[:, rows], 0, 1)  # (r, P, C)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            greater = _pvalue(d, "greater")
            less = _pvalue(d, "less")
        out[start : start + block, first, second] = greater
        out[start : start + block, second, first] = less
    return out


def _pvalue(d: np.ndarray, alternative: str) -> np.ndarray:
    if d.shape[-1] < 2:  # one case cannot show anything (scipy refuses it)
        return np.ones(d.shape[:-1])
    p = wilcoxon(d, alternative=alternative, axis=-1).pvalue
    return np.where(np.isnan(p), 1.0, p)


def bootstrap_pvalues(boot_scores: np.ndarray) -> np.ndarray:
    """(E, E) paired bootstrap p of "i better than j": (1 + #{r: s_i <= s_j}) / (R + 1).

    ``boot_scores`` (R, E) oriented scores of the same resamples for every entry. The smallest
    p is 1 / (R + 1), so with many entries Holm may leave nothing significant.
    """
    n_resamples, n_entries = boot_scores.shape
    not_better = (boot_scores[:, :, None] <= boot_scores[:, None, :]) | np.isnan(boot_scores)[:, :, None]
    p = (1.0 + not_better.sum(axis=0)) / (n_resamples + 1.0)
    p[np.eye(n_entries, dtype=bool)] = np.nan
    return p


def wins(p_holm: np.ndarray, alpha: float) -> np.ndarray:
    """(..., E) how many entries each entry beats significantly."""
    return (np.nan_to_num(p_holm, nan=1.0) < alpha).sum(axis=-1)
