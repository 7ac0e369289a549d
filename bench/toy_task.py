"""What the training benchmarks share: the toy segmentation task, preprocessed by the harness."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepared_toy_segmentation(root: Path):
    """``(task, prepared)``: ToySegOneChannel's spec over toy data written under ``root``, and its
    nnU-Net preprocessed dataset (``harness.finetune.segmentation.prepare_dataset``)."""
    from harness.finetune.segmentation import prepare_dataset
    from harness.tasks import load_registry
    from harness.tasks.toy import write_toy_data

    shutil.copytree(REPO / "task_registry" / "toy", root / "task_registry" / "toy")
    write_toy_data(root / "data" / "toy")
    task = load_registry(root / "task_registry" / "toy")["ToySegOneChannel"]
    return task, prepare_dataset(task, root / "results")
