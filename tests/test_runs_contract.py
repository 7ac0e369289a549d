"""The results contract of harness/runs.py: job.json (JobSpec), metrics.json + cases.csv
(RunResult), each with one writer and one reader whose every error names the file, one NaN policy
for cases.csv, and one layout owning every path under results/. Unit tests on hand-made files."""

from __future__ import annotations

import ast
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jobs_helpers import ROOT, write_tiny_dataset, write_tiny_task

from harness.runs import (
    NAN_TEXT,
    JobSpec,
    ResultsFileError,
    ResultsLayout,
    RunFolder,
    RunResult,
    cases_csv_text,
    iter_run_folders,
    read_cases_csv,
    write_json_atomic,
)

FULL_SPEC = dict(
    entry="primus",
    track="PrimusM",
    is_baseline=False,
    task="T",
    task_type="segmentation",
    task_file="/registry/T.yaml",
    fold=1,
    submission="/subs/primus.pth",
    submission_sha256="ab" * 32,
    task_spec_hash="0123456789abcdef",
    task_training_hash="89abcdef01234567",
    recipe="ssl3d-2025",
    recipe_version=1,
    recipe_values={"schedule": {"epochs": 2}},
    recipe_values_hash="fedcba9876543210",
    data_fingerprint="1111222233334444",
    data_files={"imagesTr/a_0000.nii.gz": "cd" * 32},
    device="cpu",
    seed=42001,
    repeat=0,
    job_id="00aa11bb22cc33dd",
)


def _run(tmp_path: Path, fold: int = 1) -> RunFolder:
    return ResultsLayout(tmp_path / "results").run("primus", "T", "ssl3d-2025", fold)


# ------------------------------------------------------------------------------ job.json
def test_job_spec_round_trips_and_keeps_unknown_keys(tmp_path):
    run = _run(tmp_path)
    spec = JobSpec(**FULL_SPEC)
    spec.write(run)
    on_disk = json.loads(run.job_json.read_text())
    assert set(on_disk) == set(JobSpec.field_names()) == set(FULL_SPEC)
    assert JobSpec.read(run) == spec == JobSpec.read(run.path) == JobSpec.read(run.job_json)

    write_json_atomic(run.job_json, {**FULL_SPEC, "added_by_a_newer_harness": [1, 2]})
    read = JobSpec.read(run)
    assert read == spec and read.extra == {"added_by_a_newer_harness": [1, 2]}
    read.write(run)  # written back as it was read
    assert json.loads(run.job_json.read_text())["added_by_a_newer_harness"] == [1, 2]


def test_finetune_job_writes_the_spec_its_worker_reads(tmp_path):
    from harness.finetune.job import FinetuneJob, start_run
    from harness.tasks import load_task_file

    write_tiny_dataset(tmp_path / "data" / "Seg")
    task = load_task_file(write_tiny_task(tmp_path / "registry", "Good"))
    job = FinetuneJob(task=task, fold=0, track="PrimusM", results=tmp_path / "results")
    run = start_run(job)
    on_disk = json.loads(run.job_json.read_text())
    assert on_disk == {**job.description(), "job_id": job.job_id(), "data_files": None}
    spec = JobSpec.read(run, require=JobSpec.WORKER_FIELDS)
    assert spec == job.spec() and spec.job_id == job.job_id() and spec.is_baseline is True
    assert run.layout == job.layout and run.results_root == tmp_path / "results"


def test_a_partial_job_json_reads_with_what_it_has(tmp_path):
    run = _run(tmp_path)
    write_json_atomic(run.job_json, {"entry": "primus", "track": "PrimusM", "task": "T", "fold": 1, "submission": None})
    spec = JobSpec.read(run)
    assert (spec.entry, spec.fold, spec.submission, spec.job_id, spec.data_files) == ("primus", 1, None, None, None)
    write_json_atomic(run.job_json, {"job_id": "x"})
    assert JobSpec.read(run, require=()).job_id == "x"


@pytest.mark.parametrize(
    "content,problem",
    [
        (None, "missing"),
        ('{"entry": ', "does not parse: Expecting"),
        (b"\xff\xfe{}", "does not parse"),
        ("[1, 2]", "does not parse: a JSON list, not an object"),
        ({**FULL_SPEC, "task": None}, "missing field 'task'"),
        ({k: v for k, v in FULL_SPEC.items() if k not in ("entry", "fold")}, "missing fields 'entry', 'fold'"),
        ({**FULL_SPEC, "fold": "1"}, "field 'fold' must be an integer, got '1'"),
        ({**FULL_SPEC, "fold": True}, "field 'fold' must be an integer, got True"),
        ({**FULL_SPEC, "is_baseline": "no"}, "field 'is_baseline' must be true or false"),
        ({**FULL_SPEC, "recipe_values": [1]}, "field 'recipe_values' must be an object"),
        ({**FULL_SPEC, "data_files": {"a": 1}}, "field 'data_files' must map file names to sha256 strings"),
    ],
)
def test_every_job_spec_error_names_the_file(tmp_path, content, problem):
    run = _run(tmp_path)
    run.path.mkdir(parents=True)
    if isinstance(content, dict):
        run.job_json.write_text(json.dumps(content))
    elif isinstance(content, bytes):
        run.job_json.write_bytes(content)
    elif content is not None:
        run.job_json.write_text(content)
    with pytest.raises(ResultsFileError) as caught:
        JobSpec.read(run)
    err = caught.value
    assert isinstance(err, ValueError) and err.path == run.job_json
    assert str(err).startswith(f"{run.job_json}: ") and problem in err.problem, str(err)


def test_worker_fields_are_demanded_by_the_worker(tmp_path):
    from harness.jobs.worker import JobSpecError, load_job

    run = _run(tmp_path)
    write_json_atomic(run.job_json, {k: v for k, v in FULL_SPEC.items() if k != "task_spec_hash"})
    with pytest.raises(JobSpecError, match=r"job\.json: missing field 'task_spec_hash'"):
        load_job(run.path)


def test_results_file_error_pickles():
    err = pickle.loads(pickle.dumps(ResultsFileError("/r/job.json", "missing")))
    assert (str(err), err.path, err.problem) == ("/r/job.json: missing", Path("/r/job.json"), "missing")


# ------------------------------------------------------------------------------ cases.csv, metrics.json
def _seg_cases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case": ["001", "002", "002"],
            "label": [1, 1, 2],
            "dice": [0.5, math.nan, 1 / 3],
            "nsd": [0.25, math.nan, 0.1 + 0.2],
            "ref_voxels": [10, 0, 7],
            "pred_voxels": [12, 0, 6],
        }
    )


def test_run_result_round_trips_nan_as_nan(tmp_path):
    run = _run(tmp_path)
    metrics = {"aggregates": {"dice": 0.5}, "ranking_metrics": [{"name": "dice", "higher_is_better": True}]}
    RunResult(metrics, _seg_cases()).write(run)
    assert run.cases_csv.read_text().splitlines()[2] == "002,1,nan,nan,0,0"
    result = RunResult.read(run)
    assert result.metrics == metrics
    pd.testing.assert_frame_equal(result.cases, _seg_cases())  # ids stay text, ints ints, floats exact
    assert result.cases["dice"].isna().tolist() == [False, True, False]


def test_old_cases_csv_with_empty_nan_reads_as_nan(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_text(
        "case,label,dice,nsd,ref_voxels,pred_voxels\n001,1,0.5,0.25,10,12\n002,1,,,0,0\n002,2,NaN, nan ,7,6\n"
    )
    cases = read_cases_csv(path)
    assert cases["dice"].isna().tolist() == [False, True, True] and cases["nsd"].isna().tolist() == [False, True, True]
    assert cases["case"].tolist() == ["001", "002", "002"] and cases["label"].dtype == np.int64
    assert cases_csv_text(cases).splitlines()[2] == f"002,1,{NAN_TEXT},{NAN_TEXT},0,0"  # rewritten: one policy


def test_classification_labels_stay_text(tmp_path):
    path = tmp_path / "cases.csv"
    cases = pd.DataFrame(
        {
            "case": ["a", "b"],
            "true_label": ["0", "NA"],
            "pred_label": ["1", "0"],
            "prob_0": [0.25, 0.5],
            "prob_1": [0.75, 0.5],
        }
    )
    path.write_text(cases_csv_text(cases))
    pd.testing.assert_frame_equal(read_cases_csv(path), cases)


def test_score_writes_cases_csv_with_the_same_writer():
    from harness.metrics.segmentation import CASE_COLUMNS
    from harness.metrics.segmentation import cases_csv_text as score_text

    cases = _seg_cases()
    assert score_text(cases) == cases_csv_text(cases.loc[:, list(CASE_COLUMNS)])
    assert ",nan,nan," in score_text(cases)


CORRUPT = [
    ("metrics.json", None, "missing"),
    ("metrics.json", '{"aggregates": {"dice": ', "does not parse: Expecting"),
    ("metrics.json", "[1, 2]\n", "does not parse: a JSON list, not an object"),
    ("cases.csv", None, "missing"),
    ("cases.csv", "", "does not parse: the file is empty"),
    ("cases.csv", "case,label,dice\nc1,1,0.5\nc1,2", "does not parse: line 3 has 2 fields, the header 3"),
    ("cases.csv", "label,dice\n1,0.5\n", "does not parse: no 'case' column"),
    ("cases.csv", "case,dice,dice\nc1,0.5,0.5\n", "does not parse: column(s) ['dice'] appear more than once"),
    ("cases.csv", "case,label,dice\n", "does not parse: a header and no cases"),
    ("cases.csv", b"case,label\n\xff\xfe,1\n", "does not parse"),
    (
        "cases.csv",
        "case,label,dice\nc1,1,0.5\nc2,1,high\n",
        "does not parse: column 'dice' is not a number on line(s) 3",
    ),
]


@pytest.mark.parametrize("name,content,problem", CORRUPT)
def test_every_run_result_error_names_the_file_and_is_what_corrupt_means(tmp_path, name, content, problem):
    from harness.jobs.state import CORRUPT as CORRUPT_STATE
    from harness.jobs.state import JobFiles, job_state, result_problem

    run = _run(tmp_path)
    RunResult({"aggregates": {}}, _seg_cases()).write(run)
    write_json_atomic(run.done_marker, {"job_id": "j"})
    assert result_problem(run) is None
    path = run.path / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ResultsFileError) as caught:
        RunResult.read(run)
    err = caught.value
    assert err.path == path and str(err).startswith(f"{path}: ") and problem in err.problem, str(err)
    assert result_problem(run) == (path, err.problem)
    state = job_state(JobFiles(run), "j", check_results=True)
    assert (state.state, state.file, state.detail) == (CORRUPT_STATE, str(path), str(err))


# ------------------------------------------------------------------------------ layout
def test_layout_owns_every_path_under_results(tmp_path):
    root = tmp_path / "results"
    layout = ResultsLayout(root)
    assert layout.runs_dir == root / "runs"
    run = layout.run("primus", "T", "ssl3d-2025", 2)
    assert run.path == root / "runs" / "primus" / "T" / "ssl3d-2025" / "fold_2"
    assert RunFolder.of(root, "primus", "T", 2, "ssl3d-2025") == run
    assert (run.entry, run.task, run.setup) == ("primus", "T", "ssl3d-2025")
    assert (run.job_json.name, run.cases_csv.name, run.metrics_json.name) == ("job.json", "cases.csv", "metrics.json")
    assert layout.intake_record("primus") == root / "submissions" / "primus" / "intake.json"
    assert layout.intake_report("primus") == root / "submissions" / "primus" / "intake.txt"
    assert layout.provenance_dir == root / "provenance" and layout.slurm_dir == root / "slurm"
    assert layout.cache_dir == root / "cache"
    assert layout.nnunet_cache("T", "k1") == root / "cache" / "nnunet" / "T-k1"
    assert layout.classification_cache("C", "k2") == root / "cache" / "classification" / "C" / "k2"
    assert layout.data_check_cache == root / "cache" / "data-check.json"
    assert layout.leaderboard_dir("ssl3d-2025") == root / "leaderboard" / "ssl3d-2025"

    from harness.tasks.preflight import preflight_cache

    assert preflight_cache(root) == layout.data_check_cache


def test_layout_lists_what_exists(tmp_path):
    layout = ResultsLayout(tmp_path / "results")
    assert list(layout.run_folders()) == [] and layout.intake_records() == []
    a, b = layout.run("b", "T", "s", 0), layout.run("a", "T", "s", 1)
    JobSpec(entry="b", track="t", task="T", fold=0).write(a)
    b.path.mkdir(parents=True)  # no job.json
    (layout.runs_dir / "a" / "T" / "s" / "not_a_fold").mkdir()
    assert list(layout.run_folders()) == list(iter_run_folders(layout.root)) == [a]
    assert list(layout.all_run_folders()) == [b, a]
    write_json_atomic(layout.intake_record("z"), {})
    write_json_atomic(layout.intake_record("y"), {})
    assert layout.intake_records() == [layout.intake_record("y"), layout.intake_record("z")]
    first = layout.new_provenance_path(when=0)
    write_json_atomic(first, {})
    second = layout.new_provenance_path(when=0)
    assert first.parent == second.parent == layout.provenance_dir and first != second
    assert first.name.startswith("evaluate-") and second.name.endswith("-2.json")


def test_a_run_knows_its_layout_from_its_path_shape(tmp_path):
    run = _run(tmp_path)
    assert ResultsLayout.of_run(run.path) == run.layout == ResultsLayout(tmp_path / "results")
    for bad in (
        tmp_path / "results" / "runs" / "primus" / "T" / "fold_0",
        tmp_path / "x" / "a" / "b" / "c" / "fold_0",
        tmp_path / "results" / "runs" / "primus" / "T" / "s" / "work",
    ):
        with pytest.raises(ResultsFileError, match="not a run folder") as caught:
            _ = RunFolder(bad).results_root
        assert caught.value.path == bad


# ------------------------------------------------------------------------------ one owner
FILE_NAMES = {"metrics.json", "cases.csv", "job.json", "intake.json", "intake.txt", "data-check.json"}
FOLDER_NAMES = {"runs", "submissions", "provenance", "cache", "slurm", "leaderboard"}
#: (module or package/, name) spelled outside runs.py on purpose, with why.
ALLOWED = {
    # `harness score`'s default output file beside the predictions: not a path under results/
    ("harness/metrics/commands.py", "cases.csv"),
}


def _allowed(module: str, name: str) -> bool:
    return any(name == n and (module == m or m.endswith("/") and module.startswith(m)) for m, n in ALLOWED)


def _spelled_paths(path: Path) -> set[str]:
    """Results file names in string constants (not docstrings) and folder names joined with ``/``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            docstrings.add(id(first.value))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found |= {n for n in FILE_NAMES if node.value == n or node.value.endswith("/" + n)}
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in FOLDER_NAMES
        ):
            found.add(node.right.value)
    return found


def test_no_module_but_runs_spells_a_results_path():
    spelled = set()
    for path in sorted((ROOT / "harness").rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        if module != "harness/runs.py":
            spelled |= {(module, name) for name in _spelled_paths(path)}
    assert not [s for s in spelled if not _allowed(*s)], sorted(s for s in spelled if not _allowed(*s))
    assert _spelled_paths(ROOT / "harness" / "runs.py") >= {"job.json", "cases.csv", "runs", "provenance"}


def test_the_guard_sees_paths_and_not_prose(tmp_path):
    source = tmp_path / "module.py"
    source.write_text('''"""Writes job.json."""
def f(results, entry):
    """Reads cases.csv."""
    a = results / "cases.csv"
    b = sorted(results.glob("*/intake.json"))
    c = f"{results}/metrics.json"
    d = f"{results / 'provenance' / entry}"
    print(f"{entry}: job.json unreadable")
    return {"provenance": 1}
''')
    assert _spelled_paths(source) == {"cases.csv", "intake.json", "metrics.json", "provenance"}
