"""`harness finetune`: one job from the command line. Its refusals (exit 2, a message naming what is
wrong) in-process on a tiny registry; one real run, and the same command again, through
``python -m harness`` on the cheapest real nnU-Net job (tests/jobs_helpers.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from broken_data import SEG1, VARIANTS, make_variant
from jobs_helpers import lean_env, write_tiny_dataset, write_tiny_task

from harness.cli import main
from harness.runs import JobSpec, ResultsLayout, read_cases_csv

TASK = "Tiny"
BASELINE = ("--baseline", "PrimusM")


@pytest.fixture(scope="module")
def registry(module_dir) -> Path:
    """``<root>/registry/Tiny.yaml`` (fold 0 of 2) over ``<root>/data/Seg``."""
    root = module_dir("finetune")
    write_tiny_dataset(root / "data" / "Seg")
    return write_tiny_task(root / "registry", TASK, "Seg").parent


def where(registry: Path, results: Path, task: str = TASK) -> list:
    """The arguments that say which task of which registry, and where the results go."""
    return ["--task", task, "--tasks", registry, "--results", results]


def finetune(capsys, *args) -> tuple[int, str]:
    """``harness finetune ARGS`` in-process: its exit code and stderr."""
    code = main(["finetune", *map(str, args)])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------ refusals, no job
def test_a_fold_the_task_does_not_have_is_refused(registry, tmp_path, capsys):
    code, err = finetune(capsys, *BASELINE, *where(registry, tmp_path / "results"), "--fold", 7)
    assert code == 2 and f"error: fold 7 is not a fold of task {TASK} ([0])" in err, err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("given", ["both", "neither"])
def test_exactly_one_of_submission_and_baseline(registry, tmp_path, capsys, given):
    which = {"both": [tmp_path / "primus.pth", *BASELINE], "neither": []}[given]
    code, err = finetune(capsys, *which, *where(registry, tmp_path / "results"))
    assert code == 2 and f"error: give a submission file or --baseline TRACK, not {given}" in err, err
    assert not (tmp_path / "results").exists()


def test_a_missing_submission_file_is_named(registry, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    code, err = finetune(capsys, missing, *where(registry, tmp_path / "results"))
    assert code == 2 and err.startswith(f"error: {missing}: "), err


def test_a_task_not_in_the_registry_suggests_the_closest_name(registry, tmp_path, capsys):
    code, err = finetune(capsys, *BASELINE, *where(registry, tmp_path / "results", task="Tiyn"))
    assert code == 2, err
    assert f"{registry}: no task named 'Tiyn' (did you mean '{TASK}'?); tasks: {TASK}" in err


def test_a_task_whose_data_fails_the_check_is_refused_naming_the_file(tmp_path, capsys, toy_data):
    (variant,) = [v for v in VARIANTS if v.name == "truncated"]
    root = make_variant(variant, tmp_path, toy_data)  # a broken copy of the session's toy data
    results = tmp_path / "results"
    code, err = finetune(capsys, *BASELINE, *where(root / "task_registry/toy", results, "ToySegOneChannel"))
    assert code == 2, err
    assert str(root / SEG1 / "imagesTr/train_001_0000.nii.gz") in err and "truncated" in err, err
    assert not ResultsLayout(results).runs_dir.exists()  # no run folder: nothing was started


# ------------------------------------------------------------------------------ a real job
def _cli(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "harness", *map(str, args)]
    out = subprocess.run(command, capture_output=True, text=True, env=lean_env(), timeout=900)
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


@pytest.mark.slow
def test_a_real_baseline_job_and_the_same_command_again(registry, tmp_path):
    """The command runs the job whatever the run folder holds: `harness finetune` is the one-job
    tool (`harness evaluate` is the one that skips done jobs). Run again, it trains afresh into the
    same run folder under the same job id, and on CPU should give the same per-case results."""
    command = ["finetune", *BASELINE, *where(registry, tmp_path / "results"), "--fold", 0, "--device", "cpu"]
    first = _cli(*command)
    run = ResultsLayout(tmp_path / "results").run("baseline-PrimusM", TASK, "ssl3d-2025", 0)
    assert f"done: baseline-PrimusM on {TASK} fold 0: " in first.stdout
    assert run.is_done() and not run.failed_marker.exists() and not run.work_dir.exists()
    spec = JobSpec.read(run, require=JobSpec.WORKER_FIELDS + ("data_fingerprint", "data_files"))
    described = (spec.entry, spec.track, spec.is_baseline, spec.task, spec.fold, spec.submission, spec.device)
    assert described == ("baseline-PrimusM", "PrimusM", True, TASK, 0, None, "cpu")
    assert spec.data_fingerprint and any(name.startswith("imagesTr/") for name in spec.data_files)
    assert not read_cases_csv(run.cases_csv).empty
    cases, done = run.cases_csv.read_text(), run.done_marker.read_text()
    time.sleep(1.1)  # DONE records its finishing time to the second

    again = _cli(*command)
    assert f"done: baseline-PrimusM on {TASK} fold 0: " in again.stdout
    assert JobSpec.read(run).job_id == spec.job_id and run.is_done()
    assert run.done_marker.read_text() != done  # finished a second time ...
    log = run.log.read_text()
    assert log.count(f"job {spec.job_id}: entry baseline-PrimusM") == 2  # ... after training again
    assert "reusing preprocessed" in log  # the second run found the first one's cache
    assert not read_cases_csv(run.cases_csv).empty
    # seeded after preprocessing, single-threaded augmentation: a warm cache gives the same result
    assert run.cases_csv.read_text() == cases
