"""Leaderboard bootstrap: 50 entries x 6 tasks x 200 cases (dice + nsd), 1000 resamples.

Ours: ``rank_track`` + ``bootstrap_track`` (all resamples at once) under the default scheme
(rank-then-aggregate), and under aggregate-then-rank. Reference, in the same run: a plain pandas
loop, per resample and task a groupby/rank over the resampled long table, timed on fewer
resamples and extrapolated linearly (every resample costs the same). Both use the very same
resamples; the bench checks that they give the same final ranks.

Run from the repository root: ``.venv/bin/python bench/bench_leaderboard.py`` ->
``results/bench/leaderboard.json``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard.ranking import rank_track
from harness.leaderboard.read_csv import collect_long
from harness.leaderboard.stability import bootstrap_indices, bootstrap_track

N_ENTRIES, N_TASKS, N_CASES, N_BOOTSTRAP = 50, 6, 200, 1000
REFERENCE_RESAMPLES = 20
SEED = 0
OUT = Path("results/bench/leaderboard.json")


def synthetic_table() -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    skill = rng.normal(0.0, 0.03, N_ENTRIES)
    frames = []
    for t in range(N_TASKS):
        difficulty = rng.normal(0.0, 0.1, N_CASES)
        for metric in ("dice", "nsd"):
            values = np.clip(
                0.7 + skill[:, None] + difficulty[None, :] + rng.normal(0, 0.05, (N_ENTRIES, N_CASES)), 0, 1
            )
            entry, case = np.indices(values.shape)
            frames.append(
                pd.DataFrame(
                    {
                        "track": "ResEncL",
                        "entry": [f"e{e:02d}" for e in entry.ravel()],
                        "task": f"t{t}",
                        "metric": metric,
                        "case": [f"c{c:03d}" for c in case.ravel()],
                        "value": values.ravel(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def pandas_reference(frame: pd.DataFrame, n_resamples: int) -> np.ndarray:
    """(n_resamples, E) final rank per resample: rank-then-aggregate with groupby/rank."""
    tasks = sorted(frame["task"].unique())
    by_task = {t: frame[frame["task"] == t] for t in tasks}
    index = {t: bootstrap_indices(t, N_CASES, N_BOOTSTRAP, SEED) for t in tasks}
    finals = []
    for r in range(n_resamples):
        task_ranks = []
        for t in tasks:
            table = by_task[t]
            cases = sorted(table["case"].unique())
            drawn = pd.DataFrame({"case": np.asarray(cases)[index[t][r]], "draw": np.arange(N_CASES)})
            sample = drawn.merge(table, on="case")
            sample["case_rank"] = sample.groupby(["metric", "draw"])["value"].rank(method="min", ascending=False)
            mean_rank = sample.groupby(["metric", "entry"])["case_rank"].mean().rename("mean").reset_index()
            mean_rank["metric_rank"] = mean_rank.groupby("metric")["mean"].rank(method="min")
            task_mean = mean_rank.groupby("entry")["metric_rank"].mean()
            task_ranks.append(task_mean.rank(method="min"))
        finals.append(pd.concat(task_ranks, axis=1).mean(axis=1).rank(method="min").sort_index().to_numpy())
    return np.array(finals)


def main() -> None:
    frame = synthetic_table()
    (track,) = collect_long(frame)
    timings = {}
    for scheme in ("rank-then-aggregate", "aggregate-then-rank"):
        start = time.perf_counter()
        ranking = rank_track(track, scheme)
        stability = bootstrap_track(ranking, N_BOOTSTRAP, SEED)
        timings[scheme] = time.perf_counter() - start
        if scheme == "rank-then-aggregate":
            ours = stability.final_ranks
    start = time.perf_counter()
    reference = pandas_reference(frame, REFERENCE_RESAMPLES)
    reference_seconds = time.perf_counter() - start
    reference_full = reference_seconds * N_BOOTSTRAP / REFERENCE_RESAMPLES
    agree = bool(np.array_equal(reference, ours[:REFERENCE_RESAMPLES]))
    result = {
        "benchmark": "leaderboard bootstrap",
        "size": {
            "entries": N_ENTRIES,
            "tasks": N_TASKS,
            "cases_per_task": N_CASES,
            "metrics_per_task": 2,
            "bootstrap_resamples": N_BOOTSTRAP,
        },
        "ours_seconds": {k: round(v, 3) for k, v in timings.items()},
        "reference": "pandas groupby/rank loop over resamples (rank-then-aggregate), same resamples",
        "reference_resamples_timed": REFERENCE_RESAMPLES,
        "reference_seconds_timed": round(reference_seconds, 3),
        "reference_seconds_extrapolated_to_1000": round(reference_full, 1),
        "extrapolation": "linear in the number of resamples (each resample is the same work)",
        "speedup_vs_reference": round(reference_full / timings["rank-then-aggregate"], 1),
        "final_ranks_agree_on_timed_resamples": agree,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "processor": platform.processor() or platform.machine(),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not agree:
        raise SystemExit("the pandas reference and the vectorised bootstrap disagree")


if __name__ == "__main__":
    main()
