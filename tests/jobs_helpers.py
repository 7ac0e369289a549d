"""What the job-matrix tests share: a tiny Primus-only segmentation task, a classification task
that fails inside its jobs, and a lean environment.

A job of the segmentation task trains 2 epochs of 1 iteration at 32^3, the cheapest real nnU-Net run.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_TASK_YAML = """\
name: {name}
type: segmentation
dataset: ../data/{data}
test: {{images: imagesTs, labels: labelsTs}}
folds: [0]
num_folds: 2
patch_size: {{ResEncL: [64, 64, 64], PrimusM: [32, 32, 32]}}
schedule:
  PrimusM: {{epochs: 2, iterations_per_epoch: 1, val_iterations_per_epoch: 1, batch_size: 1, warmup_epochs: 1}}
test_time_mirroring: false
time_limit_minutes: {limit}
"""


def lean_env() -> dict:
    """Single-threaded augmentation: deterministic, and kind to 2 shared cores."""
    return {
        **os.environ,
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }


def in_process(*args, check: int | None = 0) -> subprocess.CompletedProcess:
    """``harness ARGS`` through the CLI's ``main`` in this process: for the commands around a
    real job (status, rescore, leaderboard, a dry run) whose subprocess would only add an
    interpreter and a torch import (seconds each). What the job itself runs stays a subprocess."""
    from harness.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    out = subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())
    if check is not None:
        assert code == check, f"exit {code}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out


def write_tiny_dataset(path: Path) -> Path:
    from harness.tasks.toy import write_segmentation_dataset

    return write_segmentation_dataset(
        path,
        channel_names={"0": "T1"},
        labels={"background": 0, "lesion": 1, "node": 2},
        contrasts=[(1.0, 2.2, 0.4)],
        n_train=4,
        n_test=1,
        seed=0,
    )


def write_tiny_task(registry: Path, name: str, data: str = "Seg", limit: float = 10) -> Path:
    """``registry/<name>.yaml`` pointing at ``registry/../data/<data>``."""
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / f"{name}.yaml"
    path.write_text(TINY_TASK_YAML.format(name=name, data=data, limit=limit))
    return path


FAILING_CLASSIFICATION_YAML = """\
name: {name}
type: classification
images: ../data/{data}/imagesTr
labels: ../data/{data}/labels.csv
masks: ../data/{data}/masksTr
classes: [sphere, cube]
test_cases: [case_000, case_001, case_002, case_003]
target_spacing: [4.0, 4.0, 4.0]
patch_size: {{ResEncL: [64, 64, 64], PrimusM: [32, 32, 32]}}
schedule:
  PrimusM: {{epochs: 1, iterations_per_epoch: 1, batch_size: 2, gradient_accumulation: 1, warmup_epochs: 0}}
time_limit_minutes: 10
"""


def write_failing_classification(registry: Path, name: str, data_root: Path) -> Path:
    """A classification task whose data passes the data check but fails inside every job: one
    case's mask is a single voxel, which the resampling to the task's 4 mm spacing empties (the
    check reads files; it does not resample them). ``data_root/<name>`` holds the data."""
    import numpy as np
    import SimpleITK as sitk

    from harness.tasks.toy_classification import write_toy_classification

    folder = write_toy_classification(data_root / "tmp")
    folder.rename(data_root / name)
    (data_root / "tmp").rmdir()
    mask_path = data_root / name / "masksTr" / "case_005.nii.gz"
    mask = sitk.ReadImage(str(mask_path))
    array = np.zeros_like(sitk.GetArrayFromImage(mask))
    array[12, 24, 24] = 1
    single = sitk.GetImageFromArray(array)
    single.CopyInformation(mask)
    sitk.WriteImage(single, str(mask_path), True)
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / f"{name}.yaml"
    path.write_text(FAILING_CLASSIFICATION_YAML.format(name=name, data=name))
    return path


def write_finished_run(
    results: Path, entry: str, task: str, dice: list[float], *, track: str = "ResEncL", case_prefix: str = "c"
) -> None:
    """A finished segmentation run folder written by hand (job.json, cases.csv with one label's
    Dice per case ``<case_prefix><i>``, metrics.json, DONE): what the leaderboard, feedback and
    publish read, without training."""
    import pandas as pd

    from harness.runs import JobSpec, RunFolder, RunResult

    run = RunFolder.of(results, entry, task, 0, "ssl3d-2025")
    JobSpec(
        entry=entry,
        track=track,
        is_baseline=entry.startswith("baseline-"),
        task=task,
        task_type="segmentation",
        fold=0,
        recipe="ssl3d-2025",
    ).write(run)
    cases = pd.DataFrame(
        [
            {"case": f"{case_prefix}{i:03d}", "label": 1, "dice": d, "nsd": d, "ref_voxels": 10, "pred_voxels": 10}
            for i, d in enumerate(dice)
        ]
    )
    metrics = {"ranking_metrics": [{"name": "dice", "higher_is_better": True}], "aggregates": {}}
    RunResult(metrics, cases).write(run)
    run.mark_done()
