"""The noise floor, the noise-aware rank interval and within_noise_of against hand computations."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard.noise import (
    FLOOR_Z,
    RepeatScores,
    noise_floor,
    pooled_sd,
    track_noise,
    within_noise,
)
from harness.leaderboard.ranking import rank_track
from harness.leaderboard.read_csv import collect_long
from harness.leaderboard.stability import bootstrap_indices


def long_table(values: dict[str, list[float]], task: str = "t1") -> pd.DataFrame:
    rows = [
        {"track": "ResEncL", "entry": entry, "task": task, "metric": "dice", "case": f"c{c:02d}", "value": v}
        for entry, vals in values.items()
        for c, v in enumerate(vals)
    ]
    return pd.DataFrame(rows)


def repeats(task: str, runs: dict[str, list[float]]) -> RepeatScores:
    return RepeatScores(task, ("dice",), tuple(runs), tuple(np.array([v]) for v in runs.values()))


def test_pooled_sd_is_the_hand_computed_one():
    # A: mean .82, squares .0004 + 0 + .0004; B: mean .705, squares 2 * .000025; dof 2 + 1
    floor = noise_floor(repeats("t1", {"A": [0.80, 0.82, 0.84], "B": [0.70, 0.71]}), 0, seed=0)
    assert floor.sd[0] == pytest.approx(math.sqrt(0.00085 / 3))
    assert floor.dof == 3 and floor.n_runs == 5
    assert floor.threshold[0] == pytest.approx(1.959964 * math.sqrt(2) * math.sqrt(0.00085 / 3))
    assert sorted(np.round(floor.deviations[0], 6)) == [-0.02, -0.005, 0.0, 0.005, 0.02]


def test_a_failed_repeat_leaves_the_other_runs_and_one_run_has_no_floor():
    floor = noise_floor(repeats("t1", {"A": [0.80, math.nan, 0.84]}), 10, seed=0)
    assert floor.sd[0] == pytest.approx(math.sqrt(0.0008 / 1)) and floor.dof == 1
    single = noise_floor(repeats("t1", {"A": [0.80]}), 10, seed=0)
    assert np.isnan(single.sd[0]) and np.isnan(single.sd_lo[0]) and single.deviations.shape == (1, 0)


def test_the_seed_resampled_interval_of_two_runs_spans_zero_to_their_sd():
    # Two runs 0 and 1 resampled: both the same (sd 0) or both drawn (sd 1/sqrt 2), half each.
    floor = noise_floor(repeats("t1", {"A": [0.0, 1.0]}), 2000, seed=3)
    assert floor.sd_lo[0] == 0.0
    assert floor.sd_hi[0] == pytest.approx(1 / math.sqrt(2))
    again = noise_floor(repeats("t1", {"A": [0.0, 1.0]}), 2000, seed=3)
    assert again.sd_lo[0] == floor.sd_lo[0] and again.sd_hi[0] == floor.sd_hi[0]


def test_pooled_sd_without_a_degree_of_freedom_is_nan():
    assert np.isnan(pooled_sd([np.array([[1.0]])])).all()


def test_within_noise_of_by_hand():
    # threshold = 1.96 * sqrt 2 * sd; sd = .01 -> .0277: A-B .01 within, B-C .05 above, A-C above
    floor = noise_floor(repeats("t1", {"base": [0.49, 0.51]}), 0, seed=0)
    assert floor.sd[0] == pytest.approx(math.sqrt(2 * 0.0001))  # runs .49 .51 -> sd .01414
    scores = np.array([[0.80, 0.79, 0.74]])
    within = within_noise([scores], [floor])
    assert within.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    # a second task where A and B differ by more than its floor separates them
    other = np.array([[0.9, 0.5, 0.5]])
    assert not within_noise([scores, other], [floor, floor])[0, 1]
    # no floor anywhere: nothing can be said
    assert not within_noise([scores], [None]).any()


def test_noise_aware_interval_counts_how_often_the_shift_reverses_a_gap():
    # Cases constant, so only the training noise moves: A .80, B .75 on every case; the repeated
    # runs .7 and .9 give deviations -.1, +.1. B passes A only when B draws +.1 and A -.1: 1/4.
    frame = long_table({"A": [0.80] * 4, "B": [0.75] * 4})
    (track,) = collect_long(frame)
    ranking = rank_track(track, "aggregate-then-rank")
    noise = track_noise(ranking, {"t1": repeats("t1", {"base": [0.7, 0.9]})}, 4000, seed=1)
    share_a_second = float((noise.final_ranks[:, 0] == 2).mean())
    assert share_a_second == pytest.approx(0.25, abs=3 * math.sqrt(0.25 * 0.75 / 4000))
    assert noise.rank_quantiles[:, 0].tolist() == [1.0, 1.0, 2.0]
    assert noise.within_noise_of(track.entries) == [["B"], ["A"]]  # .05 < 1.96 * sqrt 2 * .1414


def test_noise_aware_ranks_equal_an_independent_loop():
    # Two tasks, three entries; the loop recomputes each resample's means, shifts and ranks.
    values = {
        "t1": {"A": [0.9, 0.6, 0.8], "B": [0.7, 0.8, 0.75], "C": [0.5, 0.9, 0.6]},
        "t2": {"A": [0.3, 0.4], "B": [0.35, 0.45], "C": [0.2, 0.6]},
    }
    frame = pd.concat([long_table(v, task=t) for t, v in values.items()])
    (track,) = collect_long(frame)
    ranking = rank_track(track, "aggregate-then-rank")
    runs = {"t1": {"A": [0.7, 0.76, 0.73], "C": [0.6, 0.62]}, "t2": {"A": [0.35, 0.36]}}
    n, seed = 50, 7
    noise = track_noise(ranking, {t: repeats(t, r) for t, r in runs.items()}, n, seed)

    expected = np.empty((n, 3))
    deviations = {t: [x - sum(v) / len(v) for v in r.values() for x in v] for t, r in runs.items()}
    draws = {
        t: np.random.default_rng([seed, zlib.crc32(t.encode()), 2]).integers(0, len(deviations[t]), size=(n, 3))
        for t in runs
    }
    for r in range(n):
        task_ranks = []
        for t, entries in values.items():
            idx = bootstrap_indices(t, len(entries["A"]), n, seed)[r]
            shifted = [
                sum(entries[e][i] for i in idx) / len(idx) + deviations[t][draws[t][r, k]] for k, e in enumerate("ABC")
            ]
            task_ranks.append([1 + sum(o > s for o in shifted) for s in shifted])
        mean = [(task_ranks[0][k] + task_ranks[1][k]) / 2 for k in range(3)]
        expected[r] = [1 + sum(o < m for o in mean) for m in mean]
    assert noise.final_ranks.tolist() == expected.tolist()
    assert noise.floors[0] is not None and noise.floors[1] is not None
    assert noise.floors[0].sd[0] == pytest.approx(math.sqrt((0.0009 + 0 + 0.0009 + 2 * 0.0001) / 3))


def test_adjacent_pairs_say_whether_their_gap_is_above_the_floor():
    frame = long_table({"A": [0.9] * 3, "B": [0.89] * 3, "C": [0.5] * 3})
    (track,) = collect_long(frame)
    ranking = rank_track(track, "aggregate-then-rank")
    noise = track_noise(ranking, {"t1": repeats("t1", {"base": [0.49, 0.51]})}, 0, seed=0)
    rows = noise.adjacent_above_floor(ranking)
    assert [(r["upper"], r["lower"], r["above_floor"]) for r in rows] == [("A", "B", False), ("B", "C", True)]
    assert rows[0]["threshold"] == pytest.approx(FLOOR_Z * math.sqrt(2) * math.sqrt(2e-4))
    assert np.isnan(noise.rank_quantiles).all()  # no resamples, no interval


def test_repeats_with_other_metrics_than_the_ranking_are_an_error():
    (track,) = collect_long(long_table({"A": [0.9, 0.8], "B": [0.5, 0.4]}))
    bad = RepeatScores("t1", ("nsd",), ("A",), (np.array([[0.1, 0.2]]),))
    with pytest.raises(ValueError, match="t1: repeated runs have metrics"):
        track_noise(rank_track(track, "aggregate-then-rank"), {"t1": bad}, 10, seed=0)
