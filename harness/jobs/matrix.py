"""The job matrix: accepted submissions x tasks x folds, plus one from-scratch baseline per
track x task x fold, shared by every submission of that track; with ``noise_repeats`` K, K seed
repeats of each baseline job and of the jobs of the entries named in ``noise_entries``
(training noise, harness/leaderboard/noise.py; never ranked)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.finetune.job import FinetuneJob
from harness.jobs.state import JobFiles
from harness.recipes import SSL3D_2025, Recipe
from harness.tasks.preflight import TaskData
from harness.tasks.spec import TaskSpec


class MatrixError(ValueError):
    """The requested matrix cannot be built (e.g. a --folds value no task has)."""


@dataclass(frozen=True)
class Entry:
    """A submission that passed intake: what the matrix needs of it."""

    entry: str
    path: Path
    sha256: str
    track: str


@dataclass(frozen=True)
class PlannedJob:
    job: FinetuneJob
    job_id: str

    @property
    def files(self) -> JobFiles:
        return JobFiles(self.job.run)

    @property
    def folder(self) -> Path:
        return self.job.run.path

    @property
    def time_limit_s(self) -> float:
        return float(self.job.task.time_limit_minutes) * 60.0

    @property
    def label(self) -> str:
        repeat = f" / repeat {self.job.repeat}" if self.job.repeat else ""
        return f"{self.job.entry} / {self.job.task.name} / {self.job.setup.name} / fold {self.job.fold}{repeat}"


def selected_folds(tasks: Mapping[str, TaskSpec], folds: Sequence[int] | None) -> dict[str, tuple[int, ...]]:
    """Per task, its folds, restricted to ``folds`` when given (a value no task has is an error)."""
    out = {name: tuple(task.fold_ids) for name, task in tasks.items()}
    if folds is None:
        return out
    wanted = set(int(f) for f in folds)
    known = set().union(*out.values()) if out else set()
    unknown = sorted(wanted - known)
    if unknown:
        raise MatrixError(
            f"--folds {unknown}: no task has such a fold; the tasks' folds are "
            + "; ".join(f"{n}: {list(f)}" for n, f in out.items())
        )
    return {name: tuple(f for f in fs if f in wanted) for name, fs in out.items()}


def build_matrix(
    entries: Iterable[Entry],
    tasks: Mapping[str, TaskSpec],
    results: Path,
    *,
    folds: Sequence[int] | None = None,
    device: str = "cpu",
    recipe: Recipe = SSL3D_2025,
    data: Mapping[str, TaskData] | None = None,
    noise_repeats: int = 0,
    noise_entries: Sequence[str] = (),
) -> list[PlannedJob]:
    """Jobs in a stable order: per task and fold, the baselines first, then the entries by name,
    then the seed repeats (repeat by repeat, in the same order). ``data``: each task's data
    identity from the data check (``harness.tasks.preflight``)."""
    entries = sorted(entries, key=lambda e: e.entry)
    if noise_repeats < 0:
        raise MatrixError(f"noise_repeats must be >= 0, got {noise_repeats}")
    unknown = sorted(set(noise_entries) - {e.entry for e in entries})
    if unknown:
        raise MatrixError(f"noise_entries {unknown}: no accepted entry of that name")
    per_task = selected_folds(tasks, folds)
    tracks = sorted({e.track for e in entries})
    results = Path(results).resolve()
    jobs: list[PlannedJob] = []
    for name in sorted(tasks):
        task = tasks[name]
        task_data = (data or {}).get(name)
        for fold in per_task[name]:
            for repeat in range(noise_repeats + 1):
                for track in tracks:
                    jobs.append(
                        _planned(
                            FinetuneJob(
                                task=task,
                                fold=fold,
                                track=track,
                                results=results,
                                device=device,
                                recipe=recipe,
                                data=task_data,
                                repeat=repeat,
                            )
                        )
                    )
                for e in entries:
                    if repeat and e.entry not in noise_entries:
                        continue
                    jobs.append(
                        _planned(
                            FinetuneJob(
                                task=task,
                                fold=fold,
                                track=e.track,
                                results=results,
                                submission=e.path.resolve(),
                                entry=e.entry,
                                submission_sha256=e.sha256,
                                device=device,
                                recipe=recipe,
                                data=task_data,
                                repeat=repeat,
                            )
                        )
                    )
    return jobs


def _planned(job: FinetuneJob) -> PlannedJob:
    return PlannedJob(job=job, job_id=job.job_id())
