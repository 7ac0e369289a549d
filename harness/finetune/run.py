"""The one entry point of a fine-tuning job, whatever the task type: what the CLI, the local
executor and Slurm workers all call."""

from __future__ import annotations

from pathlib import Path

from harness.finetune.job import FinetuneJob
from harness.recipes import SSL3D_2025, Recipe
from harness.task_types import get_task_type


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


def run_job(job: FinetuneJob) -> dict:
    """Run ``job`` with its task type's runner (``harness.task_types``: imported only now, as it
    pulls in torch and, for segmentation, nnU-Net's training stack); an unknown type is an error
    naming the task file."""
    return get_task_type(job.task.type, str(job.task.source)).load("runner")(job)
