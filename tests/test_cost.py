"""The dry run's cost plan (``harness.jobs.cost``): estimates only from what was measured, unknown
said as unknown."""

from __future__ import annotations

import json

import pandas as pd
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.finetune.job import FinetuneJob
from harness.jobs.cost import estimate, format_cost_plan, measure
from harness.jobs.matrix import PlannedJob
from harness.runs import RunResult
from harness.tasks import load_task_file


def _job(registry, name: str, entry: str, results, device: str = "cuda") -> PlannedJob:
    task = load_task_file(write_tiny_task(registry, name, "Seg"))
    job = FinetuneJob(task=task, fold=0, track="PrimusM", results=results, device=device, entry=entry)
    return PlannedJob(job, job.job_id())


def _finish(planned: PlannedJob, wall: float, train: float, kept: int) -> None:
    """A finished run of ``planned`` as a job writes it: job.json, metrics.json, cases.csv, DONE,
    and ``kept`` bytes of predictions."""
    run = planned.job.run
    planned.job.spec().write(run)
    schedule = planned.job.schedule.model_dump(mode="json")
    metrics = {"wall_seconds": wall, "train_seconds": train, "schedule": schedule, "patch_size": [32, 32, 32]}
    RunResult(metrics, pd.DataFrame({"case": ["c1"], "label": [1], "dice": [0.5]})).write(run)
    run.predictions_dir.mkdir()
    (run.predictions_dir / "c1.nii.gz").write_bytes(b"\0" * kept)
    run.mark_done({"job_id": planned.job_id})


def test_estimates_come_from_finished_jobs_then_rates_then_nothing(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    # a finished job of task A for another entry: 2 h wall, 1 h of training for its 2 x 1 iterations
    _finish(_job(registry, "A", "other", results), wall=7200, train=3600, kept=3_000_000)
    found = measure(results, bench=None)

    same_task = estimate(_job(registry, "A", "sub", results), found)
    assert (same_task.seconds, same_task.source) == (7200, "1 finished job(s) of this task")
    assert same_task.kept_bytes is not None and 3_000_000 <= same_task.kept_bytes < 3_100_000

    other_task = estimate(_job(registry, "B", "sub", results), found)  # same track, patch and batch
    assert other_task.seconds == 3600 and other_task.source.endswith("it/s (finished jobs), training only")
    assert other_task.kept_bytes is None

    on_cpu = estimate(_job(registry, "A", "sub", results, device="cpu"), found)  # measured on CUDA only
    assert on_cpu.seconds is None and on_cpu.source.startswith("unknown: no finished job of this task")


def test_the_gpu_benchmark_gives_a_rate_and_the_plan_says_what_is_unknown(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    bench = tmp_path / "gpu_train.json"
    bench.write_text(
        json.dumps(
            {
                "patch": [32, 32, 32],
                "batch_size": 1,
                "device": "cuda",
                "results": {"PrimusM": {"iterations_per_second": 0.5}, "nnUNetTrainer": {}},
            }
        )
    )
    jobs = [_job(registry, "A", "sub", results), _job(registry, "B", "sub", results, device="cuda")]
    with_bench = estimate(jobs[0], measure(results, bench))
    assert with_bench.seconds == 4.0 and "benchmark gpu_train.json" in with_bench.source  # 2 iterations / 0.5

    plan = format_cost_plan(jobs, results, bench=None)
    lines = plan.splitlines()
    assert lines[0].startswith("cost plan")
    assert sum("unknown: no finished job of this task" in line for line in lines) == 2
    assert "total: 2 job(s), 0.00 GPU hours + 2 job(s) of unknown cost" in plan
    assert "each running job needs up to 5.0 GB free" in plan
    assert format_cost_plan([], results) == "cost plan: nothing to run"
