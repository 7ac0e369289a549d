"""The Slurm executor on a real cluster (`.ci/start-slurm.sh` starts one on this machine).

Skipped, with the reason shown, when no cluster answers, except under CI (the environment variable
CI set), where a missing cluster is a failure: CI must start one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobs_helpers import lean_env, write_tiny_dataset, write_tiny_task

from harness.jobs.state import DONE, FAILED, JobFiles, job_state

PY = sys.executable
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not found (no Slurm client; start a cluster with .ci/start-slurm.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if out.returncode != 0:
        return f"no Slurm cluster answers: {out.stderr.strip()}"
    if not any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in out.stdout.split()):
        return f"no usable Slurm node (states: {out.stdout.split()})"
    if shutil.which("sacct") is None or subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode:
        return "Slurm accounting (sacct) does not answer; submitit needs it"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {problem}")
        pytest.skip(problem)


def test_matrix_through_slurm_arrays_with_a_cancelled_job(tmp_path):
    from harness.submission import write_example_submission

    write_tiny_dataset(tmp_path / "data" / "Seg")
    reg = tmp_path / "reg"
    write_tiny_task(reg, "Good", limit=10)
    # another time limit: its own array, which the test cancels
    write_tiny_task(reg, "Cancelled", limit=7)
    sub = write_example_submission(tmp_path / "primus.pth", "PrimusM", pretrain_patch=(64, 64, 64))
    config = tmp_path / "slurm.yaml"
    config.write_text("mem_gb: 4\ncpus_per_task: 1\npoll_s: 1\nsignal_delay_s: 30\nextra: {nice: 10}\n")
    results = tmp_path / "results"
    env = lean_env()
    log = tmp_path / "evaluate.log"
    t0 = time.time()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "harness",
            "evaluate",
            str(sub),
            "--tasks",
            str(reg),
            "--results",
            str(results),
            "--executor",
            "slurm",
            "--slurm-config",
            str(config),
            "--device",
            "cpu",
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    cancelled = [
        JobFiles.at(results / "runs" / e / "Cancelled" / "ssl3d-2025" / "fold_0")
        for e in ("baseline-PrimusM", "primus")
    ]
    try:
        deadline = time.time() + 300
        while not all(f.submitted_marker.is_file() for f in cancelled):
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "the Cancelled array was never submitted\n" + log.read_text()
            time.sleep(0.2)
        while not any(f.running_marker.is_file() for f in cancelled):  # cancel a job that runs
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "the Cancelled array never started\n" + log.read_text()
            time.sleep(0.2)
        array_ids = {json.loads(f.submitted_marker.read_text())["slurm_job_id"].split("_")[0] for f in cancelled}
        assert len(array_ids) == 1  # both jobs of the task went into one array
        subprocess.run(["scancel", *array_ids], check=True)
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert rc == 1, output
    for entry in ("baseline-PrimusM", "primus"):
        good = JobFiles.at(results / "runs" / entry / "Good" / "ssl3d-2025" / "fold_0")
        worker_log = good.worker_log.read_text() if good.worker_log.exists() else ""
        assert job_state(good, None).state == DONE, output + worker_log
        assert good.run.cases_csv.is_file()
        assert good.read_attempts()[0]["slurm_job_id"]  # it ran inside a Slurm job
        assert not good.submitted_marker.exists() and not good.running_marker.exists()
    for files in cancelled:
        state = job_state(files, None)
        assert (state.state, state.error_class) == (FAILED, "error"), output
        assert "cancelled" in state.message and "state CANCELLED" in state.message
        assert Path(state.log).name.endswith("_log.out")  # Slurm's log of the job
    # one array per time limit, submitted through sbatch --array
    scripts = list((results / "slurm").rglob("*_submission.sh"))
    assert scripts and any("#SBATCH --array=0-1" in s.read_text() for s in scripts)
    assert any("#SBATCH --nice=10" in s.read_text() and "#SBATCH --mem=4096M" in s.read_text() for s in scripts)
    status = json.loads(
        subprocess.run(
            [PY, "-m", "harness", "status", "--results", str(results), "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    )
    assert status["counts"]["done"] == 2 and status["counts"]["failed"] == 2
    print(f"slurm matrix: {time.time() - t0:.0f} s")
