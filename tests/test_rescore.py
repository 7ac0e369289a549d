"""`harness rescore`: a finished segmentation job keeps its held-out predictions, and a change to
its task's metrics rescores it from them instead of training again. One real nnU-Net job
(tests/jobs_helpers.py's tiny task), then the commands a organizer would type."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from jobs_helpers import in_process, lean_env, write_tiny_dataset, write_tiny_task

from harness.runs import JobSpec, ResultsLayout, read_cases_csv, read_json
from harness.tasks import load_task_file

pytestmark = pytest.mark.slow


def harness(*args, check: int | None = 0) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True, env=lean_env(), timeout=900
    )
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def _baseline_row(dry_run: str) -> str:
    (row,) = [line for line in dry_run.splitlines() if line.startswith("baseline-PrimusM")]
    return row


def test_a_metric_change_rescores_the_kept_predictions(tmp_path, primus64_checkpoint):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    task_file = write_tiny_task(tmp_path / "registry", "Tiny", "Seg")
    results = tmp_path / "results"
    harness("finetune", "--baseline", "PrimusM", "--task", "Tiny", "--tasks", task_file.parent, "--results", results)
    run = ResultsLayout(results).run("baseline-PrimusM", "Tiny", "ssl3d-2025", 0)
    assert run.is_done() and not run.work_dir.exists() and not run.checkpoints_dir.exists()
    assert [p.name for p in run.predictions_dir.glob("*.nii.gz")] == ["test_000.nii.gz"]  # the held-out case
    before = read_cases_csv(run.cases_csv).set_index(["case", "label"])
    old_spec = JobSpec.read(run)

    # the NSD tolerance changes: the task's spec hash (and every job id) with it
    data = yaml.safe_load(task_file.read_text())
    data["metrics"] = [{"name": "dice"}, {"name": "nsd", "tolerance_mm": 3.0}]
    task_file.write_text(yaml.safe_dump(data))
    dry = ["evaluate", primus64_checkpoint, "--tasks", task_file.parent, "--results", results, "--dry-run"]
    assert "rerun" in _baseline_row(in_process(*dry).stdout)

    out = in_process("rescore", "--results", results)
    assert "rescored 1 of 1 finished run(s)" in out.stdout, out.stdout
    after = read_cases_csv(run.cases_csv).set_index(["case", "label"])
    assert list(after.index) == list(before.index)
    assert after["dice"].equals(before["dice"])  # the same predictions ...
    assert (after["nsd"].fillna(1) >= before["nsd"].fillna(1)).all()  # ... scored at a wider tolerance
    metrics = json.loads(run.metrics_json.read_text())
    assert metrics["nsd_tolerance_mm"] == 3.0 and metrics["rescored"]["previous_job_id"] == old_spec.job_id
    new_spec = JobSpec.read(run)
    assert new_spec.task_spec_hash == load_task_file(task_file).spec_hash() != old_spec.task_spec_hash
    assert read_json(run.done_marker)["job_id"] == new_spec.job_id == metrics["job_id"] != old_spec.job_id
    row = _baseline_row(in_process(*dry).stdout)
    assert " done" in row and "rerun" not in row, row  # evaluate counts it as done: nothing to train

    # broken kept predictions, in copies of the run: one overwritten with other bytes (SimpleITK
    # raises), one cut to 45 % (SimpleITK reads zeros): both left as they are, named, the rest rescored
    (prediction,) = run.predictions_dir.glob("*.nii.gz")
    copies = {}
    for name, damage in (
        ("copy-overwritten", lambda b: np.random.default_rng(0).integers(0, 256, len(b), np.uint8).tobytes()),
        ("copy-truncated", lambda b: b[: int(len(b) * 0.45)]),
    ):
        copy = ResultsLayout(results).run(name, "Tiny", "ssl3d-2025", 0)
        shutil.copytree(run.path, copy.path)
        broken = copy.predictions_dir / prediction.name
        broken.write_bytes(damage(broken.read_bytes()))
        copies[name] = (copy, broken, {f.name: f.read_bytes() for f in copy.path.iterdir() if f.is_file()})
    data["metrics"] = [{"name": "dice"}, {"name": "nsd", "tolerance_mm": 2.0}]
    task_file.write_text(yaml.safe_dump(data))
    out = in_process("rescore", "--results", results, check=1)
    assert "rescored 1 of 3 finished run(s)" in out.stdout and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert json.loads(run.metrics_json.read_text())["nsd_tolerance_mm"] == 2.0  # the intact run: rescored
    problems = {"copy-overwritten": "not a readable image", "copy-truncated": "truncated: the gzip stream ends early"}
    for name, (copy, broken, files) in copies.items():
        (line,) = [line for line in out.stdout.splitlines() if str(copy.path) in line]
        assert line.startswith("skipped") and f"kept prediction {broken}: {problems[name]}" in line, line
        assert {f.name: f.read_bytes() for f in copy.path.iterdir() if f.is_file()} == files  # untouched
        assert copy.is_done() and JobSpec.read(copy).job_id == new_spec.job_id
    for copy, _, _ in copies.values():
        shutil.rmtree(copy.path)
    new_spec = JobSpec.read(run)

    # a change beyond the metrics is not rescored: evaluate must train it again
    data["schedule"]["PrimusM"]["epochs"] = 3
    task_file.write_text(yaml.safe_dump(data))
    out = in_process("rescore", "--results", results, check=1)
    assert "changed beyond its scoring fields; `harness evaluate` reruns it" in out.stdout, out.stdout
    assert JobSpec.read(run).job_id == new_spec.job_id  # untouched
