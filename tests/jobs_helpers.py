"""What the job-matrix tests share: a tiny Primus-only segmentation task and a lean environment.

A job of this task trains 2 epochs of 1 iteration at 32^3, the cheapest real nnU-Net run.
"""
from __future__ import annotations

import os
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
    return {**os.environ, "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def write_tiny_dataset(path: Path) -> Path:
    from harness.tasks.toy import write_segmentation_dataset

    return write_segmentation_dataset(path, channel_names={"0": "T1"}, labels={"background": 0, "lesion": 1, "node": 2},
                                      contrasts=[(1.0, 2.2, 0.4)], n_train=4, n_test=1, seed=0)


def write_tiny_task(registry: Path, name: str, data: str = "Seg", limit: float = 10) -> Path:
    """``registry/<name>.yaml`` pointing at ``registry/../data/<data>``."""
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / f"{name}.yaml"
    path.write_text(TINY_TASK_YAML.format(name=name, data=data, limit=limit))
    return path
