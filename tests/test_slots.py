"""One job per GPU, the CPU cores divided among the jobs at once (``harness.jobs.slots``), without
a GPU: what matters is the environment each job gets and that no two jobs share a GPU."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.jobs.evaluate import EvaluateError, EvaluateOptions, local_slots, make_executor
from harness.jobs.slots import Slot, SlotError, parse_gpus, plan_slots, slurm_slot, visible_gpus


def test_one_slot_per_gpu_with_the_cores_divided():
    slots = plan_slots(None, ["0", "1", "3"], cpus=16)
    assert [(s.gpu, s.cpus, s.augmentation_workers) for s in slots] == [("0", 5, 4), ("1", 5, 4), ("3", 5, 4)]
    assert slots[2].environment({}) == {
        "OMP_NUM_THREADS": "5",
        "MKL_NUM_THREADS": "5",
        "nnUNet_n_proc_DA": "4",
        "CUDA_VISIBLE_DEVICES": "3",
    }
    # what the organizer set is kept; the GPU is always the slot's own
    assert slots[0].environment({"nnUNet_n_proc_DA": "2", "CUDA_VISIBLE_DEVICES": "0,1,3"}) == {
        "OMP_NUM_THREADS": "5",
        "MKL_NUM_THREADS": "5",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert [s.gpu for s in plan_slots(2, ["0", "1", "3"], cpus=16)] == ["0", "1"]  # --jobs may lower it
    with pytest.raises(SlotError, match="at most one job per GPU"):
        plan_slots(4, ["0", "1"], cpus=16)


def test_cpu_slots_share_the_cores_and_never_go_below_one():
    assert [(s.gpu, s.cpus) for s in plan_slots(3, None, cpus=8)] == [(None, 2)] * 3
    assert plan_slots(None, None, cpus=8) == [Slot(0, None, 8)]
    (tight,) = {(s.cpus, s.augmentation_workers) for s in plan_slots(4, None, cpus=2)}
    assert tight == (1, 1)
    assert "CUDA_VISIBLE_DEVICES" not in Slot(0, None, 4).environment({})


def test_gpu_lists_and_what_is_visible():
    assert parse_gpus("0, 2,GPU-8f3a") == ["0", "2", "GPU-8f3a"]
    for bad in ("", "0,,1", "1,1"):
        with pytest.raises(SlotError, match="--gpus"):
            parse_gpus(bad)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == [] and visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_slurm_jobs_follow_cpus_per_task():
    assert slurm_slot({}) is None and slurm_slot({"SLURM_CPUS_PER_TASK": "x"}) is None
    slot = slurm_slot({"SLURM_CPUS_PER_TASK": "12"})
    assert slot is not None and slot.environment({})["nnUNet_n_proc_DA"] == "11"


def test_evaluate_options_choose_the_slots(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert [s.gpu for s in local_slots(EvaluateOptions(submissions=[]))] == ["4", "6"]  # every visible GPU
    assert [s.gpu for s in local_slots(EvaluateOptions(submissions=[], device="cpu", jobs=2))] == [None, None]
    assert [s.gpu for s in local_slots(EvaluateOptions(submissions=[], gpus=["6"]))] == ["6"]
    with pytest.raises(EvaluateError, match="--gpus with --device cpu"):
        local_slots(EvaluateOptions(submissions=[], gpus=["0"], device="cpu"))
    with pytest.raises(EvaluateError, match="at most one job per GPU"):
        local_slots(EvaluateOptions(submissions=[], jobs=3))
    with pytest.raises(EvaluateError, match="--gpus is the local executor's"):
        make_executor(EvaluateOptions(submissions=[], gpus=["0"], executor="slurm"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(EvaluateError, match="no GPU is visible"):
        local_slots(EvaluateOptions(submissions=[], device="cuda"))


STAND_IN_WORKER = """#!{python}
# stands in for `python -m harness.jobs.worker FOLDER`: records what the job was given, and when
import json, os, sys, time
folder = sys.argv[3]
start = time.monotonic()
time.sleep(0.3)
names = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "nnUNet_n_proc_DA")
record = {{"env": {{n: os.environ.get(n) for n in names}}, "start": start, "end": time.monotonic()}}
with open(os.path.join(folder, "stand_in.json"), "w") as f:
    json.dump(record, f)
"""


def test_the_local_executor_gives_each_job_its_own_gpu(tmp_path, monkeypatch):
    """Five jobs on two GPUs, through the real executor loop: never two at once on one GPU,
    each job sees one GPU and its share of the cores."""
    from harness.finetune.job import FinetuneJob
    from harness.jobs.executors import LocalExecutor
    from harness.jobs.matrix import PlannedJob
    from harness.tasks import load_task_file

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "nnUNet_n_proc_DA"):
        monkeypatch.delenv(name, raising=False)
    write_tiny_dataset(tmp_path / "data" / "Seg")
    jobs = []
    for i in range(5):
        task = load_task_file(write_tiny_task(tmp_path / "registry", f"T{i}", "Seg"))
        job = FinetuneJob(task=task, fold=0, track="PrimusM", results=tmp_path / "results", device="cuda")
        job.run.path.mkdir(parents=True)
        jobs.append(PlannedJob(job, job.job_id()))
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN_WORKER.format(python=sys.executable))
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)

    executor = LocalExecutor(python=str(stand_in), poll_s=0.05, slots=plan_slots(None, ["0", "1"], cpus=8))
    ended = []
    executor.run(jobs, lambda kind, job, state: ended.append(job) if kind == "finished" else None)

    assert len(ended) == 5
    records = [json.loads((j.folder / "stand_in.json").read_text()) for j in jobs]
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in records} == {"0", "1"}
    assert all(r["env"]["OMP_NUM_THREADS"] == "4" and r["env"]["nnUNet_n_proc_DA"] == "3" for r in records)
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in records if r["env"]["CUDA_VISIBLE_DEVICES"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), f"GPU {gpu}: {spans}"
    assert "GPU 0, 4 core(s), 3 augmentation worker(s)" in jobs[0].files.worker_log.read_text(), os.listdir(
        jobs[0].folder
    )
