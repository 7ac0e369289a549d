"""Public tables (aggregates only) and the self-contained HTML report.

Nothing here emits a per-case value: the per-case table is written by ``build`` under
``private/``. Columns of ``leaderboard_<track>.csv``, best first::

    rank, entry, is_baseline, mean_task_rank, rank_<task>...,
    reported_<task>_<metric>... and ranked_mean_<task>_<metric>...   (segmentation)
    score_<task>_<metric>...                                        (classification, pooled)
    rank_lo, rank_hi, rank_median, failed_jobs, missing_cases, gain_<task>...

``reported_`` is the mean as the organizers report it (per label the nan-mean over cases, then the
mean over labels); the ranking uses per-case values (each case's nan-mean over its labels), and
``ranked_mean_`` is their mean over cases, which is what aggregate-then-rank ranks. ``gain_<task>``
is the entry's ranked score on the task's primary (first) metric minus the track baseline's,
signed so that positive means better than the baseline.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd

from harness.leaderboard.ranking import TrackRanking
from harness.leaderboard.stability import PairwiseTests, TrackStability, tau_summary


def missing_cases(ranking: TrackRanking) -> np.ndarray:
    """(E,) per entry, the number of (task, case) units counted as worst for at least one metric."""
    total = np.zeros(len(ranking.track.entries), dtype=int)
    for task_ranking in ranking.tasks:
        total += task_ranking.task.missing.any(axis=0).sum(axis=1)
    return total


def leaderboard_table(ranking: TrackRanking, stability: TrackStability) -> pd.DataFrame:
    track = ranking.track
    table = pd.DataFrame(
        {
            "rank": ranking.final_rank.astype(int),
            "entry": track.entries,
            "is_baseline": [e in track.baselines for e in track.entries],
            "mean_task_rank": ranking.mean_task_rank,
        }
    )
    for t in ranking.tasks:
        table[f"rank_{t.task.task}"] = t.rank.astype(int)
    for t in ranking.tasks:
        for name, column in t.task.score_columns(t.scores).items():
            table[name] = column
    lo, median, hi = stability.rank_quantiles
    table["rank_lo"], table["rank_hi"], table["rank_median"] = lo, hi, median
    failed = track.failed_jobs()
    table["failed_jobs"] = [failed[e] for e in track.entries]
    table["missing_cases"] = missing_cases(ranking)
    baseline = track.baseline()
    for t in ranking.tasks:
        if baseline is None or not t.task.metrics:
            table[f"gain_{t.task.task}"] = np.nan
            continue
        b = track.entries.index(baseline)
        table[f"gain_{t.task.task}"] = t.task.metrics[0].sign * (t.scores[0] - t.scores[0][b])
    return table.sort_values(["rank", "entry"], kind="stable").reset_index(drop=True)


def stability_table(ranking: TrackRanking, stability: TrackStability) -> pd.DataFrame:
    """Per task (and ``final``): is it bootstrappable, and how stable is its ranking (tau)."""
    rows = []
    for t, s in zip(ranking.tasks, stability.tasks):
        rows.append(
            {
                "task": t.task.task,
                "task_kind": t.task.kind,
                "n_cases": len(t.task.cases),
                "bootstrappable": s.bootstrappable,
                "note": s.note,
                **tau_summary(s.kendall_tau),
            }
        )
    rows.append(
        {
            "task": "final",
            "task_kind": "",
            "n_cases": sum(len(t.task.cases) for t in ranking.tasks),
            "bootstrappable": any(s.bootstrappable for s in stability.tasks),
            "note": "",
            **tau_summary(stability.final_kendall_tau),
        }
    )
    table = pd.DataFrame(rows)
    table.insert(0, "n_bootstrap", stability.n_bootstrap)
    return table


def significance_table(ranking: TrackRanking, tests: list[PairwiseTests]) -> pd.DataFrame:
    """Long table of every ordered pair: p of "entry better than other", Holm-adjusted."""
    entries = np.asarray(ranking.track.entries)
    first, second = np.nonzero(~np.eye(len(entries), dtype=bool))
    frames = [
        pd.DataFrame(
            {
                "task": test.task,
                "metric": test.metric,
                "method": test.method,
                "entry": entries[first],
                "other": entries[second],
                "p": test.p[first, second],
                "p_holm": test.p_holm[first, second],
                "significant": test.significant[first, second],
            }
        )
        for test in tests
    ]
    columns = ["task", "metric", "method", "entry", "other", "p", "p_holm", "significant"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eef; } img { max-width: 100%; display: block; margin: 1em 0; }
.notes li { font-size: 13px; }
"""


def render_html(sections: list[dict], meta: dict) -> str:
    """One page: per track the leaderboard, notes, stability and the figures (base64 PNGs).

    ``sections`` items: track, leaderboard, stability (DataFrames), notes (list[str]),
    figures (list of (title, png bytes)).
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>SSL3D leaderboard</title><style>{_STYLE}</style></head><body>",
        "<h1>SSL3D leaderboard</h1>",
        "<p>"
        + html.escape(
            f"scheme: {meta['scheme']} | bootstrap: {meta['n_bootstrap']} resamples, seed {meta['seed']} | "
            f"source: {meta['source']} | created {meta['created']} | harness {meta['harness_version']}"
        )
        + "</p>",
    ]
    recipe = meta.get("recipe")
    if recipe:
        parts.append(
            "<p class='recipe'>"
            + html.escape(f"recipe: {recipe['name']} (version {recipe['version']}): {recipe['description']}")
            + "</p>"
        )
        if recipe["differences"]:
            parts.append(
                "<ul class='notes'>"
                + "".join(f"<li>{html.escape('differs from ssl3d-2025: ' + d)}</li>" for d in recipe["differences"])
                + "</ul>"
            )
        parts.append(
            "<details><summary>every value of the recipe</summary><pre>"
            + html.escape(json.dumps(recipe["values"], indent=1, sort_keys=True))
            + "</pre></details>"
        )
    parts.append(
        "<p>"
        + html.escape(
            "Segmentation: reported_* columns are the organizers' means (per label the nan-mean over cases, "
            "then the mean over labels); the ranking uses per-case values (each case's nan-mean over its "
            "labels), whose mean over cases is ranked_mean_*."
        )
        + "</p>"
    )
    for section in sections:
        parts.append(f"<h2>Track {html.escape(section['track'])}</h2>")
        if section["notes"]:
            parts.append(
                "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in section["notes"]) + "</ul>"
            )
        parts.append(section["leaderboard"].to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))
        parts.append("<h3>Stability (Kendall's tau of bootstrap rankings vs the full one)</h3>")
        parts.append(section["stability"].to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="-"))
        for title, png in section["figures"]:
            parts.append(f"<h3>{html.escape(title)}</h3>{_img(png, title)}")
    parts.append("</body></html>")
    return "\n".join(parts)
