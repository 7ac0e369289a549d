"""The data check before any job (harness/tasks/preflight.py), driven through the real commands
over broken copies of the toy data (tests/broken_data.py), and the data identity of jobs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from broken_data import SEG1, VARIANTS, Variant, make_variant

from harness.cli import main
from harness.jobs.executors import LocalExecutor
from harness.jobs.matrix import Entry
from harness.jobs.planning import Planner, prepare_job_folder
from harness.jobs.status import collect_status
from harness.jobs.worker import JobSpecError, load_job
from harness.recipes import SSL3D_2025
from harness.runs import ResultsLayout, write_json_atomic
from harness.tasks import load_registry
from harness.tasks.preflight import check_tasks, data_changes, preflight_cache

REGISTRY = "task_registry/toy"


@pytest.fixture(scope="module")
def broken(module_dir, toy_data) -> Path:
    """``<variant>/``: the toy registry and a copy of the session's toy data with the variant's
    fault (``clean``: none). Read-only; tests that change files copy a variant first."""
    out = module_dir("broken")
    for variant in VARIANTS:
        make_variant(variant, out, toy_data)
    return out


def _lines(text: str, kind: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(f"{kind}:")]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_tasks_check_reports_each_fault_naming_the_file(broken, variant: Variant, capsys):
    root = broken / variant.name
    rc = main(["tasks", "--check", "--tasks", str(root / REGISTRY), "--results", str(root / "results")])
    out = capsys.readouterr()
    text = out.out + out.err
    problems = _lines(text, "problem")
    if variant.name == "clean" or variant.warning:
        assert rc == 0, text
        assert "no problems" in text and not problems
        if variant.warning:
            assert any(all(f in line for f in variant.fragments) for line in _lines(text, "warning")), text
        return
    assert rc == 2, text
    assert len(problems) == 1, text  # the fault, and nothing the fault did not break
    assert str(root / variant.path) in problems[0], text
    assert all(f in problems[0] for f in variant.fragments), text


def test_simpleitk_alone_would_not_see_truncation_or_nan(broken):
    """Why the check decodes NIfTI itself: SimpleITK reads both faults without complaint."""
    truncated = sitk.GetArrayFromImage(
        sitk.ReadImage(str(broken / "truncated" / SEG1 / "imagesTr/train_001_0000.nii.gz"))
    )
    nan = sitk.GetArrayFromImage(sitk.ReadImage(str(broken / "nan_voxels" / SEG1 / "imagesTr/train_002_0000.nii.gz")))
    assert truncated.size and np.isfinite(nan).all()


@pytest.mark.parametrize("name", ["truncated", "test_without_reference", "empty_mask"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_evaluate_plans_nothing_on_broken_data(broken, name, dry_run, tmp_path, capsys):
    root = broken / name
    sub = tmp_path / "never_read.pth"
    sub.write_bytes(b"not read: the data check comes first")
    results = tmp_path / "results"
    rc = main(
        ["evaluate", str(sub), "--tasks", str(root / REGISTRY), "--results", str(results)]
        + (["--dry-run"] if dry_run else [])
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "no job was planned" in err and "1 problem(s)" in err
    assert not (results / "runs").exists() and not (results / "submissions").exists()


def test_second_check_reads_only_what_changed(broken, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(broken / "clean", root)
    tasks = load_registry(root / REGISTRY)
    cache = preflight_cache(tmp_path / "results")
    first = check_tasks(tasks, cache=cache)
    again = check_tasks(tasks, cache=cache)
    assert first.ok and first.stats.read == first.stats.cached + first.stats.read > 0
    assert again.stats.read == 0 and again.data == first.data

    path = root / SEG1 / "imagesTr/train_000_0000.nii.gz"
    _rewrite(path)
    third = check_tasks(tasks, cache=cache)
    assert third.stats.read == 1
    assert third.data["ToyClsShape"] == first.data["ToyClsShape"]
    before, now = first.data["ToySegOneChannel"], third.data["ToySegOneChannel"]
    assert before.fingerprint != now.fingerprint
    assert data_changes(before.as_dict(), now.as_dict()) == "imagesTr/train_000_0000.nii.gz changed"


def _rewrite(path: Path) -> None:
    """New content, same geometry: one voxel brighter."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] += 1
    new = sitk.GetImageFromArray(array)
    new.CopyInformation(image)
    sitk.WriteImage(new, str(path), True)


def test_a_changed_file_reruns_exactly_the_jobs_that_read_it(broken, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(broken / "clean", root)
    results = tmp_path / "results"
    tasks = load_registry(root / REGISTRY)
    cache = preflight_cache(results)
    planner = Planner(ResultsLayout(results), SSL3D_2025, LocalExecutor(), "cpu", dry_run=True)
    upload = tmp_path / "team.pth"
    upload.write_bytes(b"weights")
    entries = [Entry("team", upload, "0" * 64, "PrimusM")]
    rows = planner.plan(tasks, entries, data=check_tasks(tasks, cache=cache).data)
    assert rows and all(r.to_run for r in rows)
    for row in rows:  # as if every job had finished on the data as it is
        prepare_job_folder(row.job)
        _finish(row.job.job)

    _rewrite(root / SEG1 / "labelsTr/train_003.nii.gz")
    rows = planner.plan(tasks, entries, data=check_tasks(tasks, cache=cache).data)
    rerun = sorted((r.entry, r.task) for r in rows if r.to_run)
    assert rerun == [("baseline-PrimusM", "ToySegOneChannel"), ("team", "ToySegOneChannel")]
    for row in rows:
        if row.to_run:
            assert row.action == "rerun (data changed)" and row.detail == "labelsTr/train_003.nii.gz changed"
        else:
            assert row.action == "skip (done)"

    # status names the file too
    status = {(j.entry, j.task): j for j in collect_status(results).jobs}
    assert {k for k, j in status.items() if j.state != "done"} == set(rerun)
    assert status[rerun[0]].detail == "stale: its data changed since it ran: labelsTr/train_003.nii.gz changed"

    # the leaderboard counts them as unfinished (pending, as status says, not failed) until they
    # are rerun, naming the file
    assert main(["leaderboard", "--results", str(results), "--bootstrap", "10"]) == 0
    err = capsys.readouterr().err
    stale = [line for line in err.splitlines() if "its data changed since it ran" in line]
    assert len(stale) == 2 and all("labelsTr/train_003.nii.gz changed" in line for line in stale), err
    assert all(" is unfinished_job (" in line for line in stale), err
    assert err.count("warning:") == 2, err
    layout = ResultsLayout(results)
    board = pd.read_csv(layout.leaderboard_csv(layout.leaderboard_dir("ssl3d-2025"), "PrimusM")).set_index("entry")
    assert (board.loc["team", "failed_jobs"], board.loc["team", "pending_jobs"]) == (0, 1)

    # a worker started on a folder planned before the change refuses to compute on other data
    stale = next(r for r in rows if r.to_run).job.folder
    with pytest.raises(
        JobSpecError, match=r"data changed since the job was planned \(labelsTr/train_003.nii.gz changed\)"
    ):
        load_job(stale)
    untouched = next(r for r in rows if not r.to_run).job.folder
    assert load_job(untouched).data is not None


def _finish(job) -> None:
    """A finished run of ``job`` as its runner writes it (no training: a fixed prediction)."""
    run = job.run
    if job.task.type == "segmentation":
        cases = "case,label,dice,nsd,ref_voxels,pred_voxels\ntest_000,1,0.5,0.4,10,12\ntest_000,2,0.6,0.5,9,8\n"
        extra = {}
    else:
        cases = "case,true_label,pred_label,prob_sphere,prob_cube\ncase_000,sphere,sphere,0.7,0.3\n"
        extra = {"classes": list(job.task.classes)}
    run.cases_csv.write_text(cases)
    write_json_atomic(
        run.metrics_json,
        {
            **job.spec().as_dict(),
            "aggregates": {},
            **extra,
            "ranking_metrics": [{"name": m.name, "higher_is_better": True} for m in job.task.metrics],
        },
    )
    run.mark_done({"job_id": job.job_id()})


def test_identical_submissions_train_once_and_name_both_files(broken, primus_checkpoint, tmp_path, capsys):
    copy = tmp_path / "other_team.pth"
    shutil.copy(primus_checkpoint, copy)
    rc = main(
        [
            "evaluate",
            str(primus_checkpoint),
            str(copy),
            "--tasks",
            str(broken / "clean" / REGISTRY),  # a dry run only reads the data
            "--results",
            str(tmp_path / "results"),
            "--dry-run",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    rejected = [line for line in out.splitlines() if line.startswith("intake other_team: REJECTED")]
    assert rejected and str(copy) in rejected[0] and str(primus_checkpoint) in rejected[0], out
    table = [
        line.split() for line in out.splitlines() if line.startswith(("other_team ", primus_checkpoint.stem + " "))
    ]
    assert {row[3] for row in table if row[0] == "other_team"} == {"rejected"}
    assert {row[3] for row in table if row[0] == primus_checkpoint.stem} == {"pending"}
