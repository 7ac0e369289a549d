"""The typed records of the files that pass between stages: a run's metrics.json (RunMetrics)
and cases.csv (one CasesSchema per task type, columns from the metric registry), written by
``write_run_records`` and read by ``RunRecords.read``; the organizers' reported mean; the
leaderboard row (``harness.leaderboard.rows``). Unit tests on hand-made files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard.rows import (
    COUNT_COLUMNS,
    RANK_COLUMNS,
    LeaderboardRow,
    gain_column,
    read_leaderboard,
    task_rank_column,
    write_leaderboard,
)
from harness.metrics.registry import PER_CASE, get_metric, metrics_for
from harness.metrics.run_records import (
    CLASSIFICATION_CASES,
    SEGMENTATION_CASES,
    RunMetrics,
    RunRecords,
    cases_schema,
    prob_column,
    reported_mean,
    write_run_records,
)
from harness.runs import ResultsFileError, ResultsLayout, RunFolder, write_json_atomic
from harness.task_types import CLASSIFICATION, SEGMENTATION


def _run(tmp_path) -> RunFolder:
    return ResultsLayout(tmp_path / "results").run("sub", "T", "ssl3d-2025", 0)


def _seg_cases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case": ["a", "a", "b", "b"],
            "label": [1, 2, 1, 2],
            "dice": [0.5, math.nan, 0.25, 1.0],
            "nsd": [0.75, math.nan, 0.5, 1.0],
            "ref_voxels": [10, 0, 10, 3],
            "pred_voxels": [9, 0, 12, 3],
        }
    )


def _seg_metrics(**fields) -> RunMetrics:
    ranked = (get_metric("dice"), get_metric("nsd"))
    return RunMetrics(ranked, (), {"dice": {"mean": 0.5}}, {"job_id": "j", **fields})


# ------------------------------------------------------------------------------ cases.csv columns
def test_the_cases_columns_come_from_the_registry_and_the_task_type():
    from harness.metrics.segmentation import CASE_COLUMNS

    per_case = tuple(m.name for m in metrics_for(SEGMENTATION, PER_CASE))
    assert SEGMENTATION_CASES.metric_columns == per_case == ("dice", "nsd")
    assert CASE_COLUMNS == SEGMENTATION_CASES.columns() == ("case", "label", "dice", "nsd", "ref_voxels", "pred_voxels")
    assert CLASSIFICATION_CASES.columns(["no", "yes"]) == ("case", "true_label", "pred_label", "prob_no", "prob_yes")
    assert cases_schema(CLASSIFICATION) is CLASSIFICATION_CASES and prob_column("yes") == "prob_yes"
    with pytest.raises(KeyError, match="task type 'audio' has no cases.csv schema"):
        cases_schema("audio")


# ------------------------------------------------------------------------------ round trips
def test_segmentation_records_round_trip(tmp_path):
    run = _run(tmp_path)
    metrics = _seg_metrics(wall_seconds=12.5)
    shuffled = _seg_cases()[["pred_voxels", "case", "dice", "label", "nsd", "ref_voxels"]]
    written = write_run_records(run, SEGMENTATION, metrics, shuffled)
    assert written.metrics == metrics and written.metrics.get("wall_seconds") == 12.5
    assert list(pd.read_csv(run.cases_csv).columns) == list(SEGMENTATION_CASES.columns())  # schema order
    read = RunRecords.read(run, SEGMENTATION)
    assert read.metrics == metrics and read.metrics.fields == metrics.fields
    pd.testing.assert_frame_equal(read.cases, _seg_cases(), check_dtype=False)
    on_disk = json.loads(run.metrics_json.read_text())
    assert on_disk["ranking_metrics"] == [
        {"name": "dice", "higher_is_better": True},
        {"name": "nsd", "higher_is_better": True},
    ]
    assert RunMetrics.from_dict(on_disk, run.metrics_json) == metrics == RunMetrics.read(run)


def test_classification_records_round_trip(tmp_path):
    run = _run(tmp_path)
    metrics = RunMetrics((get_metric("auroc"),), ("no", "yes"), {"auroc": 1.0}, {"n_test": 2})
    cases = pd.DataFrame(
        {"case": ["c1", "c2"], "true_label": ["no", "yes"], "pred_label": ["no", "yes"], "prob_no": [0.9, 0.2]}
    )
    cases["prob_yes"] = [0.1, 0.8]
    write_run_records(run, CLASSIFICATION, metrics, cases)
    read = RunRecords.read(run, CLASSIFICATION)
    assert read.metrics.classes == ("no", "yes")
    assert json.loads(run.metrics_json.read_text())["classes"] == ["no", "yes"]
    assert list(read.cases["true_label"]) == ["no", "yes"] and read.cases["prob_yes"].tolist() == [0.1, 0.8]


def test_the_writer_refuses_a_table_without_a_schema_column_and_writes_nothing(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ValueError, match=r"cases.csv: the segmentation cases table lacks column\(s\) \['nsd'\]"):
        write_run_records(run, SEGMENTATION, _seg_metrics(), _seg_cases().drop(columns="nsd"))
    assert not run.cases_csv.exists() and not run.metrics_json.exists()


# ------------------------------------------------------------------------------ errors name file and field
@pytest.mark.parametrize(
    "edit, problem",
    [
        ({"ranking_metrics": None}, "field 'ranking_metrics' must be a non-empty list"),
        ({"ranking_metrics": []}, "field 'ranking_metrics' must be a non-empty list"),
        ({"ranking_metrics": [{"higher_is_better": True}]}, "each ranking_metrics item needs a 'name'"),
        ({"ranking_metrics": [{"name": "dice", "higher_is_better": False}]}, "field 'ranking_metrics': metric 'dice'"),
        ({"ranking_metrics": [{"name": "made_up"}]}, "field 'ranking_metrics': metric 'made_up' is unknown"),
        ({"ranking_metrics": [{"name": "dice"}, {"name": "dice"}]}, "ranking_metrics lists a metric twice"),
        ({"classes": ["only"]}, "field 'classes' must list at least two distinct classes"),
        ({"classes": ["a", "a"]}, "field 'classes' must list at least two distinct classes"),
        ({"aggregates": [1]}, "field 'aggregates' must be an object"),
    ],
)
def test_a_missing_or_invalid_metrics_field_names_the_file_and_the_field(tmp_path, edit, problem):
    run = _run(tmp_path)
    write_run_records(run, SEGMENTATION, _seg_metrics(), _seg_cases())
    data = json.loads(run.metrics_json.read_text())
    for key, value in edit.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    write_json_atomic(run.metrics_json, data)
    for read in (lambda: RunRecords.read(run, SEGMENTATION), lambda: RunMetrics.read(run)):
        with pytest.raises(ResultsFileError) as caught:
            read()
        assert caught.value.path == run.metrics_json and problem in caught.value.problem, str(caught.value)


def test_a_classification_run_without_classes_or_a_column_is_named(tmp_path):
    run = _run(tmp_path)
    metrics = RunMetrics((get_metric("auroc"),), ("no", "yes"))
    cases = pd.DataFrame(
        {"case": ["c1"], "true_label": ["no"], "pred_label": ["no"], "prob_no": [0.9], "prob_yes": [0.1]}
    )
    write_run_records(run, CLASSIFICATION, metrics, cases)
    cases.drop(columns="prob_yes").to_csv(run.cases_csv, index=False)
    with pytest.raises(ResultsFileError, match=r"cases.csv: missing column\(s\) \['prob_yes'\]") as caught:
        RunRecords.read(run, CLASSIFICATION)
    assert caught.value.path == run.cases_csv
    data = json.loads(run.metrics_json.read_text())
    del data["classes"]
    write_json_atomic(run.metrics_json, data)
    with pytest.raises(ResultsFileError, match="metrics.json: field 'classes' must list") as caught:
        RunRecords.read(run, CLASSIFICATION)
    assert caught.value.path == run.metrics_json


def test_an_older_metrics_json_without_aggregates_reads(tmp_path):
    run = _run(tmp_path)
    write_run_records(run, SEGMENTATION, _seg_metrics(), _seg_cases())
    write_json_atomic(run.metrics_json, {"ranking_metrics": [{"name": "dice"}]})
    read = RunRecords.read(run, SEGMENTATION)
    assert read.metrics.ranking_metrics == (get_metric("dice"),) and read.metrics.aggregates == {}


# ------------------------------------------------------------------------------ the reported mean
def test_the_reported_mean_leaves_out_nan_values_and_labels_that_are_nan_everywhere():
    label_means, mean = reported_mean([[1.0, math.nan, 0.5], [math.nan, math.nan], [0.0]])
    assert label_means == [0.75, None, 0.0] and mean == pytest.approx(0.375)
    assert reported_mean([[math.nan]]) == ([None], None) and reported_mean(np.empty((0, 3))) == ([], None)


def test_the_runner_and_the_leaderboard_report_the_same_mean():
    """aggregate_segmentation (metrics.json) and the leaderboard's reported_ columns use one rule."""
    from harness.finetune.segmentation import aggregate_segmentation

    aggregates = aggregate_segmentation(_seg_cases(), [1, 2])
    assert aggregates["dice"] == {"mean": pytest.approx((0.375 + 1.0) / 2), "per_label": {"1": 0.375, "2": 1.0}}
    assert aggregates["mean_definition"] == "per label the nan-mean over cases, then the mean over labels"


# ------------------------------------------------------------------------------ the leaderboard row
def _board() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": [1, 2],
            "entry": ["=cmd", "baseline-ResEncL"],
            "is_baseline": [False, True],
            "mean_task_rank": [1.0, 2.0],
            task_rank_column("T"): [1, 2],
            "reported_T_dice": [0.8, math.nan],
            "rank_lo": [1.0, math.nan],
            "rank_hi": [1.0, math.nan],
            "rank_median": [1.0, math.nan],
            "failed_jobs": [0, 1],
            "pending_jobs": [0, 0],
            "missing_cases": [0, 4],
            gain_column("T"): [0.3, 0.0],
        }
    )


def test_leaderboard_rows_round_trip(tmp_path):
    path = tmp_path / "leaderboard_ResEncL.csv"
    write_leaderboard(path, _board())
    assert path.read_text().splitlines()[1].split(",")[1] == "'=cmd"  # no formula in a spreadsheet
    first, second = read_leaderboard(path)
    assert isinstance(first, LeaderboardRow) and (first.rank, first.entry, first.is_baseline) == (1, "=cmd", False)
    assert dict(first.scores) == {"rank_T": 1, "reported_T_dice": 0.8, "gain_T": 0.3}
    assert (second.rank_lo, second.failed_jobs, second.missing_cases, second.scores["reported_T_dice"]) == (
        None,
        1,
        4,
        None,
    )
    assert list(first.as_dict()) == list(_board().columns)


@pytest.mark.parametrize("dropped", RANK_COLUMNS + COUNT_COLUMNS)
def test_a_leaderboard_without_a_row_column_names_the_file_and_the_column(tmp_path, dropped):
    path = tmp_path / "leaderboard_ResEncL.csv"
    with pytest.raises(ValueError, match="lacks column"):
        write_leaderboard(path, _board().drop(columns=dropped))
    _board().drop(columns=dropped).to_csv(path, index=False)
    with pytest.raises(ResultsFileError, match=rf"missing column\(s\) \['{dropped}'\]") as caught:
        read_leaderboard(path)
    assert caught.value.path == path


def test_a_leaderboard_value_of_the_wrong_kind_names_the_line_and_the_column(tmp_path):
    path = tmp_path / "leaderboard_ResEncL.csv"
    board = _board().astype({"failed_jobs": object})
    board.loc[1, "failed_jobs"] = "many"
    board.to_csv(path, index=False)
    with pytest.raises(ResultsFileError, match=r"line 3: column 'failed_jobs' has 'many'") as caught:
        read_leaderboard(path)
    assert caught.value.path == path
    path.write_text("")
    with pytest.raises(ResultsFileError, match="does not parse"):
        read_leaderboard(path)


def test_the_cost_plans_view_of_metrics_json_takes_what_is_usable_and_nothing_else():
    from harness.metrics.run_records import RunTimings

    good = RunTimings.from_dict(
        {"wall_seconds": 12.5, "train_seconds": 10, "predict_seconds": 0, "patch_size": [32, 32, 32],
         "schedule": {"batch_size": 2}, "aggregates": {"num_cases": 4}}
    )  # fmt: skip
    assert good == RunTimings(12.5, 10.0, 0.0, (32, 32, 32), {"batch_size": 2}, 4)
    bad = RunTimings.from_dict(
        {"wall_seconds": "12", "train_seconds": True, "predict_seconds": -1, "patch_size": [32, "a"],
         "schedule": [1], "aggregates": {"num_cases": 0}}
    )  # fmt: skip
    assert bad == RunTimings(None, None, None, None, {}, None)
    assert RunTimings.from_dict({}) == RunTimings(None, None, None, None, {}, None)
