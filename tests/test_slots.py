"""One job per GPU, the CPU cores divided among the jobs at once (``harness.jobs.slots``), without
a GPU: what matters is the environment each job gets and that no two jobs share a GPU."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.jobs.evaluate import EvaluateError, EvaluateOptions
from harness.jobs.executor_registry import local_slots, make_executor
from harness.jobs.slots import (
    Slot,
    SlotError,
    check_visible,
    known_gpus,
    oversubscribed,
    parse_gpus,
    plan_slots,
    slurm_slot,
    visible_gpus,
)
from harness.runs import ResultsLayout

UUID = "GPU-8f3a61c2-4b1e-9d2f-0a7b-3c5d6e7f8091"


def test_one_slot_per_gpu_with_the_cores_divided():
    slots = plan_slots(None, ["0", "1", "3"], cpus=16)
    assert [(s.gpu, s.cpus, s.augmentation_workers) for s in slots] == [("0", 5, 4), ("1", 5, 4), ("3", 5, 4)]
    assert slots[2].environment({}) == {
        "OMP_NUM_THREADS": "5",
        "MKL_NUM_THREADS": "5",
        "nnUNet_n_proc_DA": "4",
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # GPU 3 is nvidia-smi's GPU 3, not CUDA's third fastest
    }
    # what the organizer set is kept; the GPU (and how it is numbered) is always the slot's own
    env = {"nnUNet_n_proc_DA": "2", "CUDA_VISIBLE_DEVICES": "0,1,3", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    assert slots[0].environment(env) == {
        "OMP_NUM_THREADS": "5",
        "MKL_NUM_THREADS": "5",
        "CUDA_VISIBLE_DEVICES": "0",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert [s.gpu for s in plan_slots(2, ["0", "1", "3"], cpus=16)] == ["0", "1"]  # --jobs may lower it
    with pytest.raises(SlotError, match="at most one job per GPU"):
        plan_slots(4, ["0", "1"], cpus=16)


def test_cpu_slots_share_the_cores_and_never_go_below_one():
    assert [(s.gpu, s.cpus) for s in plan_slots(3, None, cpus=8)] == [(None, 2)] * 3
    assert plan_slots(None, None, cpus=8) == [Slot(0, None, 8)]
    (tight,) = {(s.cpus, s.augmentation_workers) for s in plan_slots(4, None, cpus=2)}
    assert tight == (1, 0)  # one core: augmentation in the training process, no worker beside it
    assert Slot(0, None, 1).environment({})["nnUNet_n_proc_DA"] == "0"
    assert Slot(0, None, 2).environment({})["nnUNet_n_proc_DA"] == "1"
    env = Slot(0, None, 4).environment({})
    assert "CUDA_VISIBLE_DEVICES" not in env and "CUDA_DEVICE_ORDER" not in env


def test_more_jobs_than_cores_is_said_with_the_plan(monkeypatch):
    from harness.jobs import slots as slots_module
    from harness.jobs.executors import LocalExecutor

    assert oversubscribed(plan_slots(2, None, cpus=2), cpus=2) is None
    warning = oversubscribed(plan_slots(4, None, cpus=2), cpus=2)
    assert warning is not None and "4 jobs at once on 2 CPU core(s)" in warning
    monkeypatch.setattr(slots_module, "machine_cpus", lambda: 2)
    lines = LocalExecutor(slots=plan_slots(3, None, cpus=2)).describe()  # what evaluate prints before it runs
    assert lines[-1].startswith("warning: 3 jobs at once on 2 CPU core(s)"), lines
    assert not any("warning" in line for line in LocalExecutor(slots=plan_slots(2, None, cpus=2)).describe())


def test_gpu_lists_and_what_is_visible():
    mig = "MIG-1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"
    assert parse_gpus(f"0, 2,{UUID},{mig}") == ["0", "2", UUID, mig]
    assert parse_gpus("01,10") == ["1", "10"]
    for bad in ("", "0,,1", "1,1", "1,01"):
        with pytest.raises(SlotError, match="--gpus"):
            parse_gpus(bad)
    for bad, named in (
        ("a,b", "'a', 'b'"),
        ("0.5", "'0.5'"),
        ("-1", "'-1'"),
        ("0,-1", "'-1'"),
        ("GPU-8f3a", "'GPU-8f3a'"),
    ):
        with pytest.raises(SlotError, match="is no GPU id") as caught:
            parse_gpus(bad)
        assert named in str(caught.value), str(caught.value)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == [] and visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


SMI_L = f"""\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: {UUID})
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)
  MIG 1g.10gb     Device  0: (UUID: MIG-1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809)
"""


def test_gpus_the_node_lacks_are_refused_before_the_run(monkeypatch):
    import subprocess

    from harness.jobs import slots as slots_module

    check_visible(["0", "1"], {"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(SlotError, match=r"GPU\(s\) 2, 3 not visible; visible \(CUDA_VISIBLE_DEVICES='0,1'\): 0, 1"):
        check_visible(["0", "2", "3"], {"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(SlotError, match="not visible.*: none"):
        check_visible(["0"], {"CUDA_VISIBLE_DEVICES": ""})
    # neither CUDA_VISIBLE_DEVICES nor nvidia-smi: nothing is known, nothing refused
    monkeypatch.setattr(slots_module.shutil, "which", lambda name: None)
    assert known_gpus({}) is None
    check_visible(["7"], {})
    # nvidia-smi -L: indices, GPU UUIDs and MIG UUIDs
    monkeypatch.setattr(slots_module.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listed = subprocess.CompletedProcess(["nvidia-smi", "-L"], 0, SMI_L, "")
    monkeypatch.setattr(slots_module.subprocess, "run", lambda *a, **k: listed)
    assert known_gpus({}) == [
        "0",
        UUID,
        "1",
        "GPU-00000000-1111-2222-3333-444444444444",
        "MIG-1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809",
    ]
    check_visible(["1", UUID], {})
    with pytest.raises(SlotError, match=r"GPU\(s\) 2 not visible; visible \(nvidia-smi -L\)"):
        check_visible(["0", "2"], {})


def test_a_bad_gpu_list_is_a_usage_error_of_evaluate(tmp_path, monkeypatch, capsys):
    """Through the CLI: a list that is no list of GPUs stops at the command line (exit 2); a GPU
    the node lacks stops the dry run after the data check, before anything is planned to run."""
    from harness.cli import main

    sub = tmp_path / "sub.pth"
    sub.write_bytes(b"not read before the GPUs are checked")
    for bad in ("a,b", "0.5", "-1", "0,-1"):
        with pytest.raises(SystemExit) as caught:
            main(["evaluate", str(sub), "--gpus", bad, "--dry-run"])
        assert caught.value.code == 2
        assert "is no GPU id" in capsys.readouterr().err, bad
    write_tiny_dataset(tmp_path / "data" / "Seg")
    write_tiny_task(tmp_path / "registry", "T0", "Seg")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    code = main(
        ["evaluate", str(sub), "--tasks", str(tmp_path / "registry"), "--results", str(tmp_path / "r")]
        + ["--gpus", "0,1", "--dry-run"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "GPU(s) 1 not visible; visible (CUDA_VISIBLE_DEVICES='0'): 0" in err, err


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
        make_executor(EvaluateOptions(submissions=[], gpus=["0"], executor="slurm"), ResultsLayout("results"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(EvaluateError, match="no GPU is visible"):
        local_slots(EvaluateOptions(submissions=[], device="cuda"))


STAND_IN_WORKER = """#!{python}
# stands in for `python -m harness.jobs.worker FOLDER`: records what the job was given, and when
import json, os, sys, time
folder = sys.argv[3]
start = time.monotonic()
time.sleep(0.3)
names = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS", "nnUNet_n_proc_DA")
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
    assert {r["env"]["CUDA_DEVICE_ORDER"] for r in records} == {"PCI_BUS_ID"}
    assert all(r["env"]["OMP_NUM_THREADS"] == "4" and r["env"]["nnUNet_n_proc_DA"] == "3" for r in records)
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in records if r["env"]["CUDA_VISIBLE_DEVICES"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), f"GPU {gpu}: {spans}"
    assert "GPU 0, 4 core(s), 3 augmentation worker(s)" in jobs[0].files.worker_log.read_text(), os.listdir(
        jobs[0].folder
    )
