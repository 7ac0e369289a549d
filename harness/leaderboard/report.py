"""Public tables (aggregates only) and the self-contained HTML report.

Nothing here emits a per-case value: the per-case table is written by ``build`` under
``private/``. Columns of ``leaderboard_<track>.csv`` (``harness.leaderboard.rows`` names them
once, and writes and reads the file), best first::

    rank, entry, is_baseline, mean_task_rank, rank_<task>...,
    reported_<task>_<metric>... and ranked_mean_<task>_<metric>...   (segmentation)
    score_<task>_<metric>...                                        (classification, pooled)
    rank_lo, rank_hi, rank_median, failed_jobs, pending_jobs, missing_cases, gain_<task>...
    noise_rank_lo, noise_rank_hi, noise_rank_median, within_noise_of   (with seed repeats only)

``reported_`` is the mean as the organizers report it (per label the nan-mean over cases, then the
mean over labels); the ranking uses per-case values (each case's nan-mean over its labels), and
``ranked_mean_`` is their mean over cases, which is what aggregate-then-rank ranks. ``gain_<task>``
is the entry's ranked score on the task's primary (first) metric minus the track baseline's,
signed so that positive means better than the baseline. ``failed_jobs`` counts the entry's jobs
that ran and failed (a FAILED marker, or files the leaderboard cannot trust); ``pending_jobs`` those
without a result yet (planned but not finished, running, or never started); the cases of both count
as worst and are in ``missing_cases``.

The HTML report puts each table in its own horizontally scrolling box, so the page itself never
gets wider than the window (checked at 1400 px in headless Chromium): a table wider than the window
scrolls inside its box with the entry column kept in view; column names break after their
underscores, long entry names wrap.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
from collections.abc import Callable

import numpy as np
import pandas as pd

from harness.leaderboard.model import FLAG_FAILED_JOB, TrackData
from harness.leaderboard.noise import TrackNoise
from harness.leaderboard.ranking import TrackRanking
from harness.leaderboard.rows import (
    COUNT_COLUMNS,
    INTERVAL_COLUMNS,
    LEADING_COLUMNS,
    WITHIN_NOISE_SEPARATOR,
    gain_column,
    task_rank_column,
)
from harness.leaderboard.stability import PairwiseTests, TrackStability, tau_summary


def missing_cases(ranking: TrackRanking) -> np.ndarray:
    """(E,) per entry, the number of (task, case) units counted as worst for at least one metric."""
    total = np.zeros(len(ranking.track.entries), dtype=int)
    for task_ranking in ranking.tasks:
        total += task_ranking.task.missing.any(axis=0).sum(axis=1)
    return total


def pending_jobs(track: TrackData) -> dict[str, int]:
    """Per entry, the expected jobs without a result that did not fail: planned but unfinished
    (running, queued, interrupted) or never started (no run folder); ``TrackData.failed_jobs``
    counts the failed ones."""
    counts = {entry: 0 for entry in track.entries}
    for problem in track.job_problems:
        if problem.status != FLAG_FAILED_JOB:
            counts[problem.entry] += 1
    return counts


def unfinished_warning(boards: dict[str, pd.DataFrame]) -> str | None:
    """One sentence naming, per track, the pending and failed jobs of its leaderboard table
    (``failed_jobs``/``pending_jobs``), None when there are none: a ranking of partial results
    (an evaluate killed half-way) says so at the top of the report and as the command's last line,
    not only in two columns."""
    parts = []
    for track, board in boards.items():
        pending = int(board["pending_jobs"].sum()) if "pending_jobs" in board else 0
        failed = int(board["failed_jobs"].sum()) if "failed_jobs" in board else 0
        if pending or failed:
            parts.append(f"track {track}: {pending} pending, {failed} failed job(s)")
    if not parts:
        return None
    return (
        "partial results: "
        + "; ".join(parts)
        + ". Their cases count as the worst value; `harness status` lists them, `harness evaluate` finishes them."
    )


def leaderboard_table(ranking: TrackRanking, stability: TrackStability) -> pd.DataFrame:
    """The track's ``leaderboard_<track>.csv`` table (``harness.leaderboard.rows``), best first."""
    track = ranking.track
    rank, entry, is_baseline, mean_task_rank = LEADING_COLUMNS
    table = pd.DataFrame(
        {
            rank: ranking.final_rank.astype(int),
            entry: track.entries,
            is_baseline: [e in track.baselines for e in track.entries],
            mean_task_rank: ranking.mean_task_rank,
        }
    )
    for t in ranking.tasks:
        table[task_rank_column(t.task.task)] = t.rank.astype(int)
    for t in ranking.tasks:
        for name, column in t.task.score_columns(t.scores).items():
            table[name] = column
    lo, median, hi = stability.rank_quantiles
    rank_lo, rank_hi, rank_median = INTERVAL_COLUMNS
    table[rank_lo], table[rank_hi], table[rank_median] = lo, hi, median
    failed, pending = track.failed_jobs(), pending_jobs(track)
    failed_jobs, pending_jobs_column, missing = COUNT_COLUMNS
    table[failed_jobs] = [failed[e] for e in track.entries]
    table[pending_jobs_column] = [pending[e] for e in track.entries]
    table[missing] = missing_cases(ranking)
    baseline = track.baseline()
    for t in ranking.tasks:
        if baseline is None or not t.task.metrics:
            table[gain_column(t.task.task)] = np.nan
            continue
        b = track.entries.index(baseline)
        table[gain_column(t.task.task)] = t.task.metrics[0].sign * (t.scores[0] - t.scores[0][b])
    return table.sort_values([rank, entry], kind="stable").reset_index(drop=True)


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
p, li { overflow-wrap: anywhere; }
.table-box { max-width: 100%; overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eef; vertical-align: bottom; }
th.text, td.text { text-align: left; }
td.text { overflow-wrap: anywhere; min-width: 6em; max-width: 18em; }
th.sticky, td.sticky { position: sticky; left: 0; z-index: 1; background: #fff; }
th.sticky { background: #eef; }
tr.baseline td { background: #f6f6f6; font-style: italic; }
pre { max-width: 100%; overflow-x: auto; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
.notes li { font-size: 13px; }
.warning { border: 2px solid #b00; background: #fee; padding: 0.5em 1em; }
"""

#: What the job and case counts of the main table mean (shown under it).
_COUNTS_NOTE = (
    "failed_jobs: jobs that ran and failed (a FAILED marker, or files the leaderboard cannot trust); "
    "pending_jobs: jobs without a result yet (planned but not finished, running, or never started); "
    "the cases of both count as the worst value, and missing_cases counts every such case."
)


def _cell(value, float_format: Callable[[float], str], classes: list[str]) -> str:
    if isinstance(value, (bool, np.bool_)):
        text = str(value)
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        text = "-" if math.isnan(value) else float_format(float(value))
    elif value is None:
        text = "-"
    else:
        text, classes = html.escape(str(value)), ["text", *classes]
    return f"<td class='{' '.join(classes)}'>{text}</td>" if classes else f"<td>{text}</td>"


def table_html(
    frame: pd.DataFrame, float_format: Callable[[float], str], css_class: str = "", sticky: str | None = None
) -> str:
    """``frame`` as an HTML table in its own scrolling box (``div.table-box``): text cells left
    aligned and wrapped, numbers right aligned, NaN as ``-``, column names breakable after ``_``;
    the column ``sticky`` stays in view when the box scrolls; a row whose ``is_baseline`` is true
    has class ``baseline``."""
    columns = [str(c) for c in frame.columns]
    text_columns = {str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])}
    pinned = [["sticky"] if c == sticky else [] for c in columns]
    head = ""
    for c, x in zip(columns, pinned):
        classes = " ".join((["text"] if c in text_columns else []) + x)
        head += (
            (f"<th scope='col' class='{classes}'>" if classes else "<th scope='col'>")
            + html.escape(c).replace("_", "_<wbr>")
            + "</th>"
        )
    baseline = frame["is_baseline"].to_numpy(dtype=bool) if "is_baseline" in frame.columns else None
    rows = []
    for i, row in enumerate(frame.itertuples(index=False, name=None)):
        marker = " class='baseline'" if baseline is not None and baseline[i] else ""
        rows.append(f"<tr{marker}>" + "".join(_cell(v, float_format, x) for v, x in zip(row, pinned)) + "</tr>")
    table_class = f" class='{css_class}'" if css_class else ""
    return (
        f"<div class='table-box'><table{table_class}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def add_noise_columns(table: pd.DataFrame, ranking: TrackRanking, noise: TrackNoise) -> pd.DataFrame:
    """The noise-aware rank interval and ``within_noise_of`` (entries joined by "; ") of each row
    of ``table`` (``leaderboard_table``'s, best first); docs/metrics.md says how."""
    entries = ranking.track.entries
    lo, median, hi = noise.rank_quantiles
    within = noise.within_noise_of(entries)
    at = [entries.index(e) for e in table["entry"]]
    table = table.copy()
    table["noise_rank_lo"], table["noise_rank_hi"] = lo[at], hi[at]
    table["noise_rank_median"] = median[at]
    table["within_noise_of"] = [WITHIN_NOISE_SEPARATOR.join(within[i]) for i in at]
    return table


def noise_floor_table(noise: TrackNoise) -> pd.DataFrame:
    """Per task and metric with seed repeats: the floor (sd), its seed-resampled interval, the
    smallest difference above it, and the runs it comes from."""
    rows = [
        {
            "task": floor.task,
            "metric": metric,
            "noise_sd": floor.sd[m],
            "noise_sd_lo": floor.sd_lo[m],
            "noise_sd_hi": floor.sd_hi[m],
            "above_floor_if_difference_over": floor.threshold[m],
            "runs": floor.n_runs,
        }
        for floor in noise.floors
        if floor is not None
        for m, metric in enumerate(floor.metrics)
    ]
    columns = ["task", "metric", "noise_sd", "noise_sd_lo", "noise_sd_hi", "above_floor_if_difference_over", "runs"]
    return pd.DataFrame(rows, columns=columns)


def adjacent_pairs_table(ranking: TrackRanking, noise: TrackNoise) -> pd.DataFrame:
    columns = ["upper", "lower", "task", "metric", "difference", "threshold", "above_floor"]
    return pd.DataFrame(noise.adjacent_above_floor(ranking), columns=columns)


_NOISE_NOTE = (
    "noise_sd: the spread of a task's ranked aggregate over fine-tunings of one checkpoint with other "
    "seeds (pooled over the repeated entries), with a 95 % interval from resampling the seeds; a "
    "difference is above the floor when it exceeds 1.96 x sqrt(2) x noise_sd. noise_rank_* resample "
    "the cases and the training noise; within_noise_of lists the entries whose differences are above "
    "the floor on no task. Assumption: every entry's training noise is like the repeated entries'."
)


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
    warning = unfinished_warning({section["track"]: section["leaderboard"] for section in sections})
    if warning:  # first thing under the title: a reader of a partial ranking must not miss it
        parts.insert(
            parts.index("<h1>SSL3D leaderboard</h1>") + 1,
            f"<p class='warning' role='alert'><strong>{html.escape(warning)}</strong></p>",
        )
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
        parts.append(table_html(section["leaderboard"], lambda x: f"{x:.4g}", "leaderboard", sticky="entry"))
        parts.append(f"<p class='legend'>{html.escape(_COUNTS_NOTE)}</p>")
        parts.append("<h3>Stability (Kendall's tau of bootstrap rankings vs the full one)</h3>")
        parts.append(table_html(section["stability"], lambda x: f"{x:.3f}", "stability"))
        if section.get("noise_floor") is not None:
            parts.append("<h3>Noise floor (seed repeats; docs/metrics.md)</h3>")
            parts.append(f"<p class='legend'>{html.escape(_NOISE_NOTE)}</p>")
            parts.append(table_html(section["noise_floor"], lambda x: f"{x:.4g}", "noise-floor"))
            parts.append("<h3>Adjacent entries: is their difference above the floor?</h3>")
            parts.append(table_html(section["adjacent"], lambda x: f"{x:.4g}", "adjacent"))
        for title, png in section["figures"]:
            parts.append(f"<h3>{html.escape(title)}</h3>{_img(png, title)}")
    parts.append("</body></html>")
    return "\n".join(parts)
