"""Seed repeats on the jobs side: planned, seeded, stored beside the ranked run, costed."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.finetune.job import REPEAT_SEED_STRIDE, job_id_of
from harness.jobs.cost import format_cost_plan
from harness.jobs.matrix import Entry, MatrixError, build_matrix
from harness.runs import JobSpec, ResultsLayout
from harness.tasks.registry import load_registry


@pytest.fixture
def tasks(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    write_tiny_task(tmp_path / "reg", "Good", "Seg")
    return load_registry(tmp_path / "reg")


def entries(tmp_path) -> list[Entry]:
    return [
        Entry("alpha", tmp_path / "alpha.pth", "a" * 64, "PrimusM"),
        Entry("beta", tmp_path / "beta.pth", "b" * 64, "PrimusM"),
    ]


def test_repeats_of_the_baseline_and_named_entries_are_planned_with_other_seeds(tmp_path, tasks):
    plain = build_matrix(entries(tmp_path), tasks, tmp_path / "results")
    noisy = build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=3, noise_entries=["beta"])
    assert [(j.job.entry, j.job.repeat) for j in plain] == [("baseline-PrimusM", 0), ("alpha", 0), ("beta", 0)]
    assert len(noisy) == 3 + 3 * 2  # the baseline and beta, three times more
    # the ranked runs keep their identity, seed and folder
    assert [(j.job_id, j.job.seed, j.folder) for j in noisy[:3]] == [(j.job_id, j.job.seed, j.folder) for j in plain]
    repeats = [j for j in noisy if j.job.repeat]
    assert {j.job.entry for j in repeats} == {"baseline-PrimusM", "beta"}
    base = plain[0].job
    baseline_repeats = [j.job for j in repeats if j.job.is_baseline]
    assert [j.seed for j in baseline_repeats] == [base.seed + REPEAT_SEED_STRIDE * r for r in (1, 2, 3)]
    assert [j.run.path.name for j in baseline_repeats] == ["fold_0-repeat_1", "fold_0-repeat_2", "fold_0-repeat_3"]
    assert base.run.path.name == "fold_0"
    assert len({j.job_id for j in noisy}) == len(noisy)
    assert "repeat 2" in repeats[2].label
    # the repeat is part of the identity only where it is not 0
    description = base.description()
    assert description["repeat"] == 0
    assert job_id_of({k: v for k, v in description.items() if k != "repeat"}) == base.job_id()
    # stored and read back: the folder's layout knows it, job.json holds the repeat
    spec = baseline_repeats[0].spec()
    spec.write(baseline_repeats[0].run)
    assert JobSpec.read(baseline_repeats[0].run).repeat == 1
    assert baseline_repeats[0].run in list(ResultsLayout(tmp_path / "results").run_folders())
    assert ResultsLayout.of_run(baseline_repeats[0].run.path).root == (tmp_path / "results").resolve()


def test_the_cost_plan_counts_the_repeats(tmp_path, tasks):
    noisy = build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=2)
    assert "total: 5 job(s)" in format_cost_plan(noisy, tmp_path / "results", bench=None)


def test_bad_repeat_requests_are_errors(tmp_path, tasks):
    with pytest.raises(MatrixError, match=r"noise_entries \['gamma'\]: no accepted entry"):
        build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=1, noise_entries=["gamma"])
    with pytest.raises(MatrixError, match="noise_repeats must be >= 0"):
        build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=-1)
    with pytest.raises(ValueError, match="repeat must be >= 0"):
        ResultsLayout(Path("r")).run("e", "t", "s", 0, repeat=-1)
