"""Leaderboard: hand-made tables with known answers, run folders built through the contract."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, wilcoxon
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from harness.cli import main
from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.model import (
    FLAG_FAILED_JOB,
    FLAG_MISSING_CASE,
    FLAG_MISSING_JOB,
    FLAG_NOT_APPLICABLE,
    FLAG_UNFINISHED_JOB,
    LeaderboardInputError,
)
from harness.leaderboard.private import private_case_table
from harness.leaderboard.ranking import rank_track
from harness.leaderboard.read_csv import collect_long
from harness.leaderboard.read_runs import collect_runs
from harness.leaderboard.significance import holm
from harness.leaderboard.stability import bootstrap_indices, bootstrap_track, kendall_tau_rows
from harness.runs import RunFolder, write_json_atomic

SCHEMES = ("rank-then-aggregate", "aggregate-then-rank", "test-then-rank")


def long_table(values: dict[str, list[float]], task="t1", metric="dice", track="ResEncL", **extra) -> pd.DataFrame:
    rows = [
        {"track": track, "entry": entry, "task": task, "metric": metric, "case": f"c{c:02d}", "value": v, **extra}
        for entry, vals in values.items()
        for c, v in enumerate(vals)
    ]
    return pd.DataFrame(rows)


def ranks_of(frame: pd.DataFrame, scheme: str) -> dict[str, int]:
    (track,) = collect_long(frame)
    ranking = rank_track(track, scheme)
    return dict(zip(track.entries, ranking.final_rank.astype(int).tolist()))


# --------------------------------------------------------------------------- schemes


def test_aggregate_and_rank_then_aggregate_differ_on_an_outlier_case():
    # A is best on two cases but fails the third; B is steady.
    frame = long_table({"A": [0.9, 0.9, 0.0], "B": [0.5, 0.5, 0.5], "C": [0.4, 0.4, 0.4]})
    assert ranks_of(frame, "aggregate-then-rank") == {"A": 1, "B": 2, "C": 3}  # means .6 .5 .4
    # per-case ranks A (1,1,3) B (2,2,1) C (3,3,2): mean 5/3, 5/3, 8/3
    assert ranks_of(frame, "rank-then-aggregate") == {"A": 1, "B": 1, "C": 3}


def test_rank_then_aggregate_means_per_case_ranks():
    frame = long_table({"A": [0.9, 0.1, 0.1], "B": [0.5, 0.5, 0.5], "C": [0.4, 0.4, 0.6]})
    # per case: c0 A1 B2 C3; c1 B1 C2 A3; c2 C1 B2 A3 -> means A 7/3, B 5/3, C 2
    assert ranks_of(frame, "rank-then-aggregate") == {"A": 3, "B": 1, "C": 2}


def test_test_then_rank_counts_significant_wins():
    base = np.linspace(0.2, 0.6, 20)
    wiggle = np.where(np.arange(20) % 2 == 0, 0.01, -0.01) * np.arange(1, 21) / 20
    frame = long_table({"A": base + 0.3, "B": base + 0.15, "C": base, "D": base + wiggle})
    # A beats B, C, D; B beats C, D; C and D are indistinguishable: wins 3, 2, 0, 0
    assert ranks_of(frame, "test-then-rank") == {"A": 1, "B": 2, "C": 3, "D": 3}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_ties_share_the_minimum_rank(scheme):
    frame = long_table({"A": [0.8] * 12, "B": [0.8] * 12, "C": [0.1] * 12})
    assert ranks_of(frame, scheme) == {"A": 1, "B": 1, "C": 3}


def test_task_rank_is_mean_of_metric_ranks_and_final_the_mean_of_task_ranks():
    dice = long_table({"A": [0.9], "B": [0.8], "C": [0.7]}, task="t1", metric="dice")
    nsd = long_table({"A": [0.8], "B": [0.9], "C": [0.7]}, task="t1", metric="nsd")
    t2 = long_table({"A": [0.1], "B": [0.5], "C": [0.9]}, task="t2", metric="dice")
    (track,) = collect_long(pd.concat([dice, nsd, t2]))
    ranking = rank_track(track, "rank-then-aggregate")
    t1_rank, t2_rank = (t.rank.tolist() for t in ranking.tasks)
    assert t1_rank == [1, 1, 3]  # metric means 1.5, 1.5, 3
    assert t2_rank == [3, 2, 1]
    assert ranking.mean_task_rank.tolist() == [2.0, 1.5, 2.0]
    assert ranking.final_rank.tolist() == [2, 1, 2]


def test_lower_is_better_metric_from_csv():
    frame = long_table({"A": [3.0, 4.0], "B": [9.0, 8.0]}, metric="hd95", higher_is_better="false")
    assert ranks_of(frame, "aggregate-then-rank") == {"A": 1, "B": 2}
    assert ranks_of(frame, "rank-then-aggregate") == {"A": 1, "B": 2}


def test_unknown_metric_without_direction_is_an_error():
    with pytest.raises(LeaderboardInputError, match="'hd95' is unknown and has no higher_is_better"):
        collect_long(long_table({"A": [1.0]}, metric="hd95"))


def test_contradicting_direction_of_a_known_metric_is_an_error():
    with pytest.raises(LeaderboardInputError, match="'dice' is higher_is_better=True"):
        collect_long(long_table({"A": [1.0]}, higher_is_better="false"))


def test_duplicate_case_is_an_error_naming_the_lines():
    frame = long_table({"A": [0.5, 0.6]})
    frame = pd.concat([frame, frame.iloc[[1]]])
    with pytest.raises(LeaderboardInputError, match=r"duplicate .* line\(s\) 3, 4"):
        collect_long(frame)


def test_known_metric_out_of_range_is_an_error():
    with pytest.raises(LeaderboardInputError, match=r"dice values must lie in \[0, 1\]"):
        collect_long(long_table({"A": [1.5]}))


def test_bad_number_is_an_error():
    frame = long_table({"A": [0.5]}).astype(str)
    frame.loc[0, "value"] = "high"
    with pytest.raises(LeaderboardInputError, match="column 'value' is not a number on line"):
        collect_long(frame)


# --------------------------------------------------------------------------- missing, N/A


def test_missing_case_counts_as_worst_and_is_flagged():
    frame = long_table({"A": [0.9, 0.9, 0.9], "B": [0.95, 0.95, 0.95], "C": [0.1, 0.1, 0.1]})
    frame = frame[~((frame.entry == "B") & (frame.case == "c02"))]
    (track,) = collect_long(frame)
    (task,) = track.tasks
    b = track.entries.index("B")
    assert task.flags[0, b].tolist() == ["ok", "ok", FLAG_MISSING_CASE]
    # rank-then-aggregate: B last on c02 -> B (1,1,3), A (2,2,1): tie; C (3,3,2)
    assert rank_track(track, "rank-then-aggregate").final_rank.tolist() == [1, 1, 3]
    # aggregate-then-rank: B's mean (0.95 + 0.95 + 0) / 3 < 0.9
    ranking = rank_track(track, "aggregate-then-rank")
    assert ranking.final_rank.tolist() == [1, 2, 3]
    assert ranking.tasks[0].scores[0, b] == pytest.approx(1.9 / 3)
    private = private_case_table(track)
    assert private.loc[(private.entry == "B") & (private.case == "c02"), "flag"].tolist() == [FLAG_MISSING_CASE]


def test_not_applicable_case_is_dropped_for_every_entry():
    frame = long_table({"A": [0.8, float("nan")], "B": [0.6, 0.0]})
    (track,) = collect_long(frame)
    (task,) = track.tasks
    assert task.applicable.tolist() == [[True, False]]
    ranking = rank_track(track, "aggregate-then-rank")
    assert ranking.tasks[0].scores[0].tolist() == [0.8, 0.6]
    assert set(private_case_table(track).query("case == 'c01'").flag) == {FLAG_NOT_APPLICABLE}


def test_entry_without_any_row_for_a_task_is_a_missing_job():
    t1 = long_table({"A": [0.5, 0.5], "B": [0.4, 0.4]}, task="t1")
    t2 = long_table({"A": [0.5, 0.5]}, task="t2")
    (track,) = collect_long(pd.concat([t1, t2]))
    assert track.failed_jobs() == {"A": 0, "B": 0}
    assert (track.tasks[1].flags[0, 1] == FLAG_MISSING_JOB).all()


# --------------------------------------------------------------------------- statistics


def test_holm_matches_the_hand_computed_adjustment():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([np.nan, 0.01])).tolist() == [1.0, 0.02]


def test_kendall_tau_rows_equals_scipy():
    rng = np.random.default_rng(1)
    reference = rng.integers(1, 5, size=9).astype(float)
    rows = rng.integers(1, 5, size=(30, 9)).astype(float)
    expected = [kendalltau(row, reference).statistic for row in rows]
    np.testing.assert_allclose(kendall_tau_rows(rows, reference), expected, atol=1e-12)
    assert np.isnan(kendall_tau_rows(np.ones((1, 4)), np.arange(4.0))).all()


def test_significance_uses_one_sided_wilcoxon_with_holm(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.6, 15)
    frame = long_table({"A": base + 0.2, "B": base + rng.normal(0, 0.01, 15)})
    path = tmp_path / "cases.csv"
    frame.to_csv(path, index=False)
    build_leaderboard(tmp_path / "out", from_csv=path, n_bootstrap=10, plots=False)
    sig = pd.read_csv(tmp_path / "out" / "significance_ResEncL.csv")
    a_over_b = sig.query("entry == 'A' and other == 'B'").iloc[0]
    expected = wilcoxon(base + 0.2, frame.value[frame.entry == "B"].to_numpy(), alternative="greater").pvalue
    assert a_over_b.p == pytest.approx(expected)
    assert a_over_b.p_holm == pytest.approx(min(1.0, 2 * expected))
    assert bool(a_over_b.significant) and not sig.query("entry == 'B'").significant.any()


def test_bootstrap_is_reproducible_and_uses_one_resample_for_every_entry():
    rng = np.random.default_rng(0)
    values = {name: rng.uniform(0, 1, 30) for name in ("A", "B", "C")}
    values["A2"] = values["A"]  # a twin: must tie with A in every resample
    (track,) = collect_long(long_table(values))
    ranking = rank_track(track, "rank-then-aggregate")
    first = bootstrap_track(ranking, 200, seed=7)
    again = bootstrap_track(ranking, 200, seed=7)
    other = bootstrap_track(ranking, 200, seed=8)
    np.testing.assert_array_equal(first.final_ranks, again.final_ranks)
    assert not np.array_equal(bootstrap_indices("t1", 30, 200, 7), bootstrap_indices("t1", 30, 200, 8))
    assert not np.array_equal(first.final_ranks, other.final_ranks)
    a, a2 = track.entries.index("A"), track.entries.index("A2")
    np.testing.assert_array_equal(first.final_ranks[:, a], first.final_ranks[:, a2])
    assert first.rank_quantiles.shape == (3, 4)
    assert (
        (first.rank_quantiles[0] <= first.rank_quantiles[1]) & (first.rank_quantiles[1] <= first.rank_quantiles[2])
    ).all()


def test_single_case_task_is_reported_not_bootstrappable(tmp_path):
    one = long_table({"A": [0.9], "B": [0.5]}, task="single")
    many = long_table({"A": [0.4, 0.5, 0.6], "B": [0.6, 0.6, 0.7]}, task="multi")
    path = tmp_path / "in.csv"
    pd.concat([one, many]).to_csv(path, index=False)
    outcome = build_leaderboard(tmp_path / "out", from_csv=path, n_bootstrap=50, plots=True)
    stability = pd.read_csv(tmp_path / "out" / "stability_ResEncL.csv").set_index("task")
    assert not stability.loc["single", "bootstrappable"]
    assert stability.loc["single", "note"] == "not bootstrappable: 1 case"
    assert np.isnan(stability.loc["single", "tau_mean"])
    assert stability.loc["multi", "bootstrappable"]
    assert any("not bootstrappable" in note for note in outcome.tracks[0].notes)


# --------------------------------------------------------------------------- run folders


def write_run(
    results,
    entry,
    task,
    fold,
    *,
    track="ResEncL",
    task_type="segmentation",
    cases=None,
    metrics=("dice", "nsd"),
    classes=None,
    state="done",
    is_baseline=None,
):
    run = RunFolder.of(results, entry, task, fold, "ssl3d-2025")
    job = {
        "entry": entry,
        "track": track,
        "is_baseline": entry.startswith("baseline-") if is_baseline is None else is_baseline,
        "task": task,
        "task_type": task_type,
        "fold": fold,
        "recipe": "ssl3d-2025",
    }
    write_json_atomic(run.job_json, job)
    if state == "failed":
        from harness.jobs.state import OUT_OF_MEMORY, JobFiles

        JobFiles.at(run.path).mark_failed(None, OUT_OF_MEMORY, "CUDA out of memory")  # the one FAILED writer
        return run
    if state == "unfinished":
        return run
    pd.DataFrame(cases).to_csv(run.cases_csv, index=False)
    info = {"ranking_metrics": [{"name": m, "higher_is_better": True} for m in metrics], "aggregates": {}}
    if classes is not None:
        info["classes"] = list(classes)
    write_json_atomic(run.metrics_json, info)
    run.mark_done()
    return run


def seg_cases(dice_per_case: dict[str, tuple[float, float]]):
    """Two labels per case; nsd = dice - 0.05 (NaN stays NaN)."""
    rows = []
    for case, dices in dice_per_case.items():
        for label, d in zip((1, 2), dices):
            rows.append(
                {
                    "case": case,
                    "label": label,
                    "dice": d,
                    "nsd": d - 0.05 if d == d else d,
                    "ref_voxels": 0 if d != d else 10,
                    "pred_voxels": 0 if d != d else 10,
                }
            )
    return rows


def clf_cases(truth, probs_pos, classes=("neg", "pos")):
    return [
        {
            "case": f"case_k{i}",
            "true_label": classes[t],
            "pred_label": classes[int(p >= 0.5)],
            f"prob_{classes[0]}": 1 - p,
            f"prob_{classes[1]}": p,
        }
        for i, (t, p) in enumerate(zip(truth, probs_pos))
    ]


TRUTH = {0: [0, 1, 0, 1, 1, 0], 1: [1, 0, 1, 0, 0, 1]}
PROBS = {
    "subA": {0: [0.1, 0.9, 0.2, 0.8, 0.7, 0.3], 1: [0.9, 0.2, 0.7, 0.4, 0.1, 0.6]},
    "subB": {0: [0.6, 0.4, 0.2, 0.8, 0.3, 0.3], 1: [0.4, 0.6, 0.7, 0.4, 0.1, 0.6]},
    "baseline-ResEncL": {0: [0.5, 0.6, 0.4, 0.5, 0.6, 0.4], 1: [0.6, 0.5, 0.5, 0.4, 0.5, 0.6]},
}
#: A third submission's probabilities, for the modules that rank three (with TRUTH, CLF).
PROBS_SUBC = {0: [0.3, 0.7, 0.6, 0.6, 0.8, 0.2], 1: [0.7, 0.3, 0.6, 0.2, 0.4, 0.8]}
#: What write_run needs to write a classification run of ``clf_cases``.
CLF = {"task_type": "classification", "metrics": ("auroc", "balanced_accuracy"), "classes": ("neg", "pos")}


@pytest.fixture
def results(tmp_path):
    """Track ResEncL: subA, subB, baseline; a segmentation and a classification task, 2 folds.

    subB's segmentation fold 1 FAILED; subC (PrimusM) has an unfinished run.
    """
    root = tmp_path / "results"
    seg = {
        "subA": {0: {"case_s1": (0.9, 0.8), "case_s2": (0.7, float("nan"))}, 1: {"case_s3": (0.8, 0.8)}},
        "subB": {0: {"case_s1": (0.6, 0.6), "case_s2": (0.9, 0.9)}, 1: None},
        "baseline-ResEncL": {0: {"case_s1": (0.5, 0.5), "case_s2": (0.4, 0.6)}, 1: {"case_s3": (0.5, 0.4)}},
    }
    for entry, folds in seg.items():
        for fold, cases in folds.items():
            if cases is None:
                write_run(root, entry, "seg", fold, state="failed")
            else:
                write_run(root, entry, "seg", fold, cases=seg_cases(cases))
    for entry, folds in PROBS.items():
        for fold, probs in folds.items():
            write_run(
                root,
                entry,
                "clf",
                fold,
                task_type="classification",
                cases=clf_cases(TRUTH[fold], probs),
                metrics=("auroc", "balanced_accuracy"),
                classes=("neg", "pos"),
            )
    write_run(root, "subC", "seg", 0, track="PrimusM", cases=seg_cases({"case_s1": (0.5, 0.5)}))
    write_run(root, "subC", "seg", 1, track="PrimusM", state="unfinished")
    write_run(root, "baseline-PrimusM", "seg", 0, track="PrimusM", cases=seg_cases({"case_s1": (0.4, 0.4)}))
    return root


def test_run_folders_are_collected_per_track_with_every_gap_flagged(results):
    tracks = {t.track: t for t in collect_runs(results)}
    assert list(tracks) == ["PrimusM", "ResEncL"]
    res = tracks["ResEncL"]
    assert res.entries == ("baseline-ResEncL", "subA", "subB")
    assert res.baseline() == "baseline-ResEncL"
    assert res.failed_jobs() == {"baseline-ResEncL": 0, "subA": 0, "subB": 1}
    clf, seg = res.tasks
    assert seg.cases == ("fold_0/case_s1", "fold_0/case_s2", "fold_1/case_s3")
    b = res.entries.index("subB")
    assert seg.flags[0, b].tolist() == ["ok", "ok", FLAG_FAILED_JOB]
    a = res.entries.index("subA")
    assert seg.values[0, a].tolist() == pytest.approx([0.85, 0.7, 0.8])  # s2: nan-mean over labels
    prim = tracks["PrimusM"]
    assert prim.failed_jobs() == {"baseline-PrimusM": 0, "subC": 0}  # fold 1: unfinished / missing are pending
    assert {p.status for p in prim.job_problems} == {FLAG_UNFINISHED_JOB, FLAG_MISSING_JOB}


def test_classification_scores_are_pooled_over_folds_like_scikit_learn(results):
    res = {t.track: t for t in collect_runs(results)}["ResEncL"]
    clf = res.tasks[0]
    truth = np.concatenate([TRUTH[0], TRUTH[1]])
    scores = clf.scores(np.arange(len(clf.cases))[None])[:, 0]
    for e, entry in enumerate(clf.entries):
        probs = np.concatenate([PROBS[entry][0], PROBS[entry][1]])
        assert scores[0, e] == pytest.approx(roc_auc_score(truth, probs))
        assert scores[1, e] == pytest.approx(balanced_accuracy_score(truth, (probs >= 0.5).astype(int)))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_bootstrap_scores_match_scikit_learn_on_each_resample(tmp_path):
    rng = np.random.default_rng(5)
    classes = ("a", "b", "c")
    truth = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
    rows = []
    for entry in ("e1", "e2"):
        probs = rng.dirichlet(np.ones(3), size=len(truth))
        rows.append(probs)
        cases = [
            {
                "case": f"case_k{i}",
                "true_label": classes[t],
                "pred_label": classes[int(p.argmax())],
                **{f"prob_{c}": p[j] for j, c in enumerate(classes)},
            }
            for i, (t, p) in enumerate(zip(truth, probs))
        ]
        write_run(
            tmp_path,
            entry,
            "clf",
            0,
            task_type="classification",
            cases=cases,
            metrics=("auroc", "balanced_accuracy"),
            classes=classes,
        )
    (track,) = collect_runs(tmp_path)
    (task,) = track.tasks
    idx = bootstrap_indices("clf", len(truth), 40, seed=1)
    idx[0] = [0, 1, 2, 3, 6, 7, 0, 1, 2, 3]  # class c absent: AUROC over the classes present
    order = [int(c.split("_k")[1]) for c in task.cases]  # sorted as text: case_k0, case_k1, case_k10...
    scores = task.scores(idx)
    for r in range(idx.shape[0]):
        cases = np.asarray(order)[idx[r]]
        y = truth[cases]
        present = np.unique(y)
        for e in range(2):
            p = rows[e][cases]
            expected = np.mean([roc_auc_score(y == k, p[:, k]) for k in present]) if len(present) > 1 else np.nan
            np.testing.assert_allclose(scores[0, r, e], expected, atol=1e-12)
            assert scores[1, r, e] == pytest.approx(balanced_accuracy_score(y, p.argmax(axis=1)))


def test_macro_f1_and_average_precision_rank_a_classification_task(tmp_path):
    rng = np.random.default_rng(2)
    classes = ("a", "b", "c")
    truth = {0: [0, 1, 2, 0, 1, 2, 2], 1: [1, 0, 2, 1, 0, 0, 2]}
    probs = {}
    for entry in ("e1", "e2", "e3"):
        for fold, labels in truth.items():
            probs[entry, fold] = p = rng.dirichlet(np.ones(3), size=len(labels))
            cases = [
                {
                    "case": f"case_k{i}",
                    "true_label": classes[t],
                    "pred_label": classes[int(row.argmax())],
                    **{f"prob_{c}": row[j] for j, c in enumerate(classes)},
                }
                for i, (t, row) in enumerate(zip(labels, p))
            ]
            write_run(
                tmp_path,
                entry,
                "clf",
                fold,
                task_type="classification",
                cases=cases,
                metrics=("f1", "average_precision"),
                classes=classes,
            )
    (track,) = collect_runs(tmp_path)
    (task,) = track.tasks
    assert [m.name for m in task.metrics] == ["f1", "average_precision"] and not track.job_problems
    units = [(int(u[5]), int(u.split("_k")[1])) for u in task.cases]  # "fold_0/case_k3"
    y = np.array([truth[f][i] for f, i in units])
    idx = bootstrap_indices("clf", len(y), 15, seed=3)
    idx[0] = np.arange(len(y))
    scores = task.scores(idx)
    for e, entry in enumerate(task.entries):
        p = np.stack([probs[entry, f][i] for f, i in units])
        for r in range(idx.shape[0]):
            yr, pr = y[idx[r]], p[idx[r]]
            assert scores[0, r, e] == pytest.approx(f1_score(yr, pr.argmax(axis=1), average="macro", zero_division=0))
            ap = np.mean([average_precision_score(yr == k, pr[:, k]) for k in range(3) if (yr == k).any()])
            assert scores[1, r, e] == pytest.approx(ap)
    out = tmp_path / "board"
    build_leaderboard(out, results=tmp_path, n_bootstrap=20, scheme="aggregate-then-rank", plots=False)
    board = pd.read_csv(out / "leaderboard_ResEncL.csv").set_index("entry").loc[list(task.entries)]
    np.testing.assert_allclose(board["score_clf_f1"], scores[0, 0])
    np.testing.assert_allclose(board["score_clf_average_precision"], scores[1, 0])
    metric_ranks = [pd.Series(-scores[m, 0]).rank(method="min") for m in range(2)]
    expected = ((metric_ranks[0] + metric_ranks[1]) / 2).rank(method="min").astype(int).tolist()
    assert board["rank_clf"].tolist() == expected
    sig = pd.read_csv(out / "significance_ResEncL.csv")
    assert set(sig.metric) == {"f1", "average_precision"} and set(sig.method) == {"paired-bootstrap"}


def test_a_classification_run_ranking_by_a_per_case_metric_is_failed(tmp_path):
    for entry, metrics in (("e1", ("auroc",)), ("e2", ("auroc",)), ("e3", ("dice",))):
        write_run(
            tmp_path,
            entry,
            "clf",
            0,
            task_type="classification",
            cases=clf_cases([0, 1], [0.2, 0.8]),
            metrics=metrics,
            classes=("neg", "pos"),
        )
    (track,) = collect_runs(tmp_path)
    (problem,) = track.job_problems
    assert problem.entry == "e3" and problem.unreadable
    assert (
        "classification ranking metrics ['dice'] cannot be recomputed on resampled cases; supported: auroc, "
        "balanced_accuracy, f1, average_precision" in problem.detail
    )


def test_a_leaderboard_ranks_the_runs_of_its_recipe(results, tmp_path):
    from harness.recipes import SSL3D_2025, SSL3D_2025_LOSSLESS

    write_run(results, "subD", "seg", 0, track="OtherNet", cases=seg_cases({"case_s1": (0.5, 0.5)}))
    assert "OtherNet" in {t.track for t in collect_runs(results)}  # no recipe filter: every track
    assert "OtherNet" not in {t.track for t in collect_runs(results, SSL3D_2025)}  # no recipe makes it
    lossless = RunFolder.of(results, "subC", "seg", 0, "ssl3d-2025-lossless")
    write_json_atomic(
        lossless.job_json,
        {
            "entry": "subC",
            "track": "PrimusM",
            "is_baseline": False,
            "task": "seg",
            "task_type": "segmentation",
            "fold": 0,
            "recipe": "ssl3d-2025-lossless",
        },
    )
    # ssl3d-2025 ignores the lossless Primus run; the lossless recipe ranks it and shares ResEnc-L's
    assert {t.track: t.entries for t in collect_runs(results, SSL3D_2025)}["PrimusM"] == ("baseline-PrimusM", "subC")
    tracks = {t.track: t for t in collect_runs(results, SSL3D_2025_LOSSLESS)}
    assert tracks["PrimusM"].entries == ("subC",) and "subA" in tracks["ResEncL"].entries
    assert main(["leaderboard", "--results", str(results), "--recipe", "ssl3d-2025-lossless", "--bootstrap", "0"]) == 0
    assert (results / "leaderboard" / "ssl3d-2025-lossless" / "report.html").is_file()


def test_missing_classification_case_is_the_most_wrong_answer(results):
    # drop subA's fold-1 classification run: its cases become the worst possible predictions
    run = RunFolder.of(results, "subA", "clf", 1, "ssl3d-2025")
    run.done_marker.unlink()
    res = {t.track: t for t in collect_runs(results)}["ResEncL"]
    clf = res.tasks[0]
    a = clf.entries.index("subA")
    assert (clf.flags[a] == np.array(["ok"] * 6 + [FLAG_UNFINISHED_JOB] * 6)).all()
    scores = clf.scores(np.arange(12)[None])[:, 0]
    truth = np.concatenate([TRUTH[0], TRUTH[1]])
    worst = np.concatenate([PROBS["subA"][0], np.where(np.array(TRUTH[1]) == 1, -1.0, 2.0)])
    assert scores[0, a] == pytest.approx(roc_auc_score(truth, worst))
    assert scores[1, a] == pytest.approx(
        balanced_accuracy_score(truth, np.r_[np.array(PROBS["subA"][0]) >= 0.5, 1 - np.array(TRUTH[1])])
    )


def test_build_writes_public_aggregates_and_a_private_case_table(results, tmp_path):
    out = tmp_path / "board"
    outcome = build_leaderboard(out, results=results, n_bootstrap=30, seed=0)
    board = pd.read_csv(out / "leaderboard_ResEncL.csv")
    assert list(board.columns[:4]) == ["rank", "entry", "is_baseline", "mean_task_rank"]
    for column in (
        "rank_seg",
        "rank_clf",
        "reported_seg_dice",
        "ranked_mean_seg_dice",
        "reported_seg_nsd",
        "score_clf_auroc",
        "score_clf_balanced_accuracy",
        "rank_lo",
        "rank_hi",
        "failed_jobs",
        "gain_seg",
        "gain_clf",
    ):
        assert column in board.columns
    assert not [c for c in board.columns if c.startswith("score_seg")]
    assert board["rank"].is_monotonic_increasing
    row = board.set_index("entry")
    assert row.loc["baseline-ResEncL", "is_baseline"] and not row.loc["subA", "is_baseline"]
    assert row.loc["subB", "failed_jobs"] == 1 and row.loc["subB", "missing_cases"] == 1
    assert row.loc["baseline-ResEncL", "gain_seg"] == 0
    assert row.loc["subA", "gain_seg"] == pytest.approx(np.mean([0.85, 0.7, 0.8]) - np.mean([0.5, 0.5, 0.45]))
    # reported as the organizers do: per label the nan-mean over cases, then the mean over labels
    # (label 1: 0.9, 0.7, 0.8; label 2: 0.8, NaN, 0.8); the ranking's case means differ
    assert row.loc["subA", "reported_seg_dice"] == pytest.approx(0.8)
    assert row.loc["subA", "ranked_mean_seg_dice"] == pytest.approx(np.mean([0.85, 0.7, 0.8]))
    assert row.loc["subB", "reported_seg_dice"] == pytest.approx(0.5)  # its failed fold counts as 0
    report = (out / "report.html").read_text()
    assert "recipe: ssl3d-2025 (version 2)" in report and "per label the nan-mean over cases" in report
    for name in (
        "report.html",
        "leaderboard.json",
        "leaderboard_PrimusM.csv",
        "stability_ResEncL.csv",
        "significance_ResEncL.csv",
        "plots/ResEncL_blobs.png",
        "plots/ResEncL_significance.png",
        "plots/ResEncL_ranks.png",
        "private/cases_ResEncL.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "plots/ResEncL_ranks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "<img" in html and 'src="plots' not in html
    # public files hold no case id; the private table holds every case with its flag
    public = [out / "report.html", out / "leaderboard.json"] + sorted(out.glob("*.csv"))
    for path in public:
        text = path.read_text()
        assert "case_" not in text, path  # every case id starts with case_ ('_' is not base64)
    private = pd.read_csv(out / "private" / "cases_ResEncL.csv")
    assert set(private.flag) == {"ok", FLAG_FAILED_JOB}
    assert len(private.query("task == 'seg'")) == 3 * 3 * 2  # entries x cases x metrics
    assert json.loads((out / "leaderboard.json").read_text())["scheme"] == "rank-then-aggregate"
    assert any("subB: seg fold 1 is failed_job" in note for note in outcome.tracks[0].notes + outcome.tracks[1].notes)


def test_bad_job_json_names_the_file_and_field(tmp_path):
    run = write_run(tmp_path, "subA", "seg", 0, cases=seg_cases({"s1": (0.5, 0.5)}))
    job = json.loads(run.job_json.read_text())
    job["fold"] = "zero"
    run.job_json.write_text(json.dumps(job))
    with pytest.raises(LeaderboardInputError, match=r"job\.json: field 'fold' must be an integer, got 'zero'"):
        collect_runs(tmp_path)


def test_disagreeing_true_labels_fail_the_minority_run(tmp_path):
    # e1 and e3 agree, e2 contradicts them on case_k0: e2's run is failed, nobody else is
    for entry, truth in (("e1", [0, 1]), ("e2", [1, 1]), ("e3", [0, 1])):
        write_run(
            tmp_path,
            entry,
            "clf",
            0,
            task_type="classification",
            cases=clf_cases(truth, [0.2, 0.8]),
            metrics=("auroc",),
            classes=("neg", "pos"),
        )
    (track,) = collect_runs(tmp_path)
    (problem,) = track.job_problems
    assert (problem.entry, problem.status, problem.unreadable) == ("e2", FLAG_FAILED_JOB, True)
    assert (
        "e2/clf/ssl3d-2025/fold_0/cases.csv: the true_label of case 'case_k0' is 'pos' here but 'neg'" in problem.detail
    )


def test_duplicate_case_label_in_cases_csv_fails_the_run(tmp_path):
    rows = seg_cases({"s1": (0.5, 0.5)})
    write_run(tmp_path, "e1", "seg", 0, cases=rows + rows[:1])
    write_run(tmp_path, "e2", "seg", 0, cases=rows)
    (track,) = collect_runs(tmp_path)
    (problem,) = track.job_problems
    assert problem.entry == "e1" and problem.status == FLAG_FAILED_JOB
    assert re.search(r"cases\.csv: duplicate \(case, label\)", problem.detail)


# --------------------------------------------------------------------------- command line


def test_cli_ranks_a_csv_and_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "in.csv"
    long_table({"A": [0.9, 0.8, 0.7], "baseline-ResEncL": [0.5, 0.5, 0.5]}).to_csv(path, index=False)
    out = tmp_path / "out"
    code = main(
        [
            "leaderboard",
            "--from-csv",
            str(path),
            "--out",
            str(out),
            "--bootstrap",
            "20",
            "--scheme",
            "aggregate-then-rank",
        ]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    board = pd.read_csv(out / "leaderboard_ResEncL.csv")
    assert board.entry.tolist() == ["A", "baseline-ResEncL"] and board.is_baseline.tolist() == [False, True]
    assert board.gain_t1.tolist() == pytest.approx([0.3, 0.0])
    long_table({"A": [0.5]}, metric="hd95").to_csv(path, index=False)
    assert main(["leaderboard", "--from-csv", str(path), "--out", str(out)]) == 2
    assert "hd95" in capsys.readouterr().err
