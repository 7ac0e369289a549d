"""The one entry point of a fine-tuning job, whatever the task type: what the CLI, the local
executor and Slurm workers all call."""

from __future__ import annotations

import importlib
from pathlib import Path

from harness.finetune.job import FinetuneJob
from harness.recipes import SSL3D_2025, Recipe


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_finetune_job(
    *,
    task,
    fold: int,
    track: str,
    results: Path,
    submission: Path | None = None,
    submission_sha256: str | None = None,
    device: str | None = None,
    recipe: Recipe = SSL3D_2025,
    entry: str | None = None,
    data=None,
) -> dict:
    """``data``: the task's ``TaskData`` from the data check (part of the job's identity)."""
    job = FinetuneJob(
        task=task,
        fold=fold,
        track=track,
        results=Path(results),
        submission=submission,
        submission_sha256=submission_sha256,
        device=device or default_device(),
        recipe=recipe,
        entry=entry,
        data=data,
    )
    return run_job(job)


#: Task type -> (module, function) that runs one job of it; imported only when a job runs (each
#: pulls in torch and, for segmentation, nnU-Net's training stack).
RUNNERS: dict[str, tuple[str, str]] = {
    "segmentation": ("harness.finetune.segmentation", "run_segmentation"),
    "classification": ("harness.finetune.classification", "run_classification"),
}


def run_job(job: FinetuneJob) -> dict:
    """Run ``job`` with its task type's runner; an unknown type is an error naming the task file."""
    try:
        module, function = RUNNERS[job.task.type]
    except KeyError:
        raise ValueError(
            f"{job.task.source}: no runner for task type {job.task.type!r}; known: {', '.join(RUNNERS)}"
        ) from None
    return getattr(importlib.import_module(module), function)(job)
