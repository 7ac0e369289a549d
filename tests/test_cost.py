"""The dry run's cost plan (``harness.jobs.cost``): estimates only from what was measured, unknown
said as unknown."""

from __future__ import annotations

import json
import re

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


def _finish(planned: PlannedJob, wall: float, train: float, kept: int, predict: float | None = None) -> None:
    """A finished run of ``planned`` as a job writes it: job.json, metrics.json, cases.csv, DONE,
    and ``kept`` bytes of predictions."""
    run = planned.job.run
    planned.job.spec().write(run)
    schedule = planned.job.schedule.model_dump(mode="json")
    metrics = {"wall_seconds": wall, "train_seconds": train, "schedule": schedule, "patch_size": [32, 32, 32]}
    if predict is not None:
        metrics |= {"predict_seconds": predict, "aggregates": {"num_cases": 1}}
    RunResult(metrics, pd.DataFrame({"case": ["c1"], "label": [1], "dice": [0.5]})).write(run)
    run.predictions_dir.mkdir()
    (run.predictions_dir / "c1.nii.gz").write_bytes(b"\0" * kept)
    run.mark_done({"job_id": planned.job_id})


def test_estimates_come_from_finished_jobs_then_rates_then_nothing(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    # a finished job of task A for another entry: 2 h wall, 1 h of training and validation for its
    # 2 x (1 + 1) iterations, 10 min predicting its one held-out case, so 50 min of the rest
    _finish(_job(registry, "A", "other", results), wall=7200, train=3600, kept=3_000_000, predict=600)
    found = measure(results, bench=None)

    same_task = estimate(_job(registry, "A", "sub", results), found)
    assert (same_task.seconds, same_task.source) == (7200, "1 finished job(s) of this task")
    assert same_task.kept_bytes is not None and 3_000_000 <= same_task.kept_bytes < 3_100_000

    other_task = estimate(_job(registry, "B", "sub", results), found)  # same track, patch and batch
    assert other_task.seconds == 3600 + 600 + 3000  # everything a job does, each part as measured
    assert other_task.source == (
        "4 train+val iterations at 0.00111 it/s (finished jobs); 1 case(s) predicted at 600.0 s; "
        "3000 s preprocessing and the rest"
    )
    assert other_task.kept_bytes is None

    on_cpu = estimate(_job(registry, "A", "sub", results, device="cpu"), found)  # measured on CUDA only
    assert on_cpu.seconds is None and on_cpu.source.startswith("unknown: no finished job of this task")


def test_the_gpu_benchmark_gives_the_rate_of_the_jobs_settings(tmp_path, monkeypatch):
    """Not the benchmark's best rate (bfloat16 here) but its run at float16 with nnU-Net's compile
    setting, which the jobs train with; a report without such a run gives no rate."""
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    bench = tmp_path / "gpu_train.json"

    def run(precision: str, compiled: str, rate: float) -> dict:
        return {"trainer": "harness PrimusM", "track": "PrimusM", "compile": compiled, "precision": precision,
                "iterations_per_second": rate}  # fmt: skip

    best = {"iterations_per_second": 8.0, "compile": "on", "precision": "bf16"}
    report = {"patch": [32, 32, 32], "batch_size": 1, "device": "cuda", "results": {"PrimusM": best}}
    runs = [run("fp16", "off", 0.5), run("fp16", "on", 2.0), run("bf16", "on", 8.0), run("bf16", "off", 1.0)]
    runs.append({**run("fp16", "off", 9.0), "trainer": "nnUNetTrainer (anchor)"})  # not the harness's
    bench.write_text(json.dumps({**report, "runs": runs}))
    job = _job(registry, "A", "sub", results)
    monkeypatch.delenv("nnUNet_compile", raising=False)  # nnU-Net's default: compiled
    compiled = estimate(job, measure(results, bench))
    assert compiled.seconds == 4 / 2.0 and "benchmark gpu_train.json, fp16, compile on" in compiled.source
    assert "prediction not measured, not counted" in compiled.source  # said, not guessed
    monkeypatch.setenv("nnUNet_compile", "f")
    assert estimate(job, measure(results, bench)).seconds == 4 / 0.5  # 2 x (1 + 1) iterations
    bench.write_text(json.dumps(report))  # only the best run, at settings the jobs do not use
    assert estimate(job, measure(results, bench)).seconds is None


def test_the_plan_says_what_is_unknown(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    jobs = [_job(registry, "A", "sub", results), _job(registry, "B", "sub", results, device="cuda")]

    plan = format_cost_plan(jobs, results, bench=None)
    lines = plan.splitlines()
    assert lines[0].startswith("cost plan")
    assert sum("unknown: no finished job of this task" in line for line in lines) == 2
    assert "total: 2 job(s), 0.00 GPU hours + 2 job(s) of unknown cost" in plan
    assert "each running job needs up to 5.0 GB free" in plan
    assert format_cost_plan([], results) == "cost plan: nothing to run"


def test_every_row_shows_its_own_per_job_cost_and_small_sizes_are_readable(tmp_path):
    """Jobs of one task whose estimates differ (a measured device and an unmeasured one) get a row
    each, so the per-job column holds for every job of its row; a 60 kB run is not "0 MB"."""
    write_tiny_dataset(tmp_path / "data" / "Seg")
    results, registry = tmp_path / "results", tmp_path / "registry"
    _finish(_job(registry, "A", "other", results), wall=7200, train=3600, kept=60_000)
    jobs = [_job(registry, "A", e, results) for e in ("s1", "s2")] + [_job(registry, "A", "s3", results, device="cpu")]
    lines = format_cost_plan(jobs, results, bench=None).splitlines()
    rows = [line.split() for line in lines[2:-1]]
    assert [row[:5] for row in rows] == [
        ["PrimusM", "A", "2", "2.00", "4.00"],  # measured on CUDA: 2 h each
        ["PrimusM", "A", "1", "unknown", "unknown"],  # on the CPU: nothing measured
    ]
    kept = re.search(r" (\d+\.\d) kB ", lines[2])
    assert kept is not None and 60.0 <= float(kept.group(1)) < 62.0, lines[2]  # the run's 60 kB, readable
    total = re.search(r"disk kept (\d+\.\d) kB;", lines[-1])  # 3 jobs of that task and track
    assert total is not None and abs(float(total.group(1)) - 3 * float(kept.group(1))) < 0.2, lines[-1]
