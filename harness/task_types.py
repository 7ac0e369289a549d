"""The task-type registry: each kind of downstream task is one entry naming its parts.

A task type is made of a YAML schema (``spec``), the data check's plan of what its jobs read
(``data_check``), the job that fine-tunes and scores it (``runner``), the scoring of a finished
job again (``rescorer``), the leaderboard's reader of its run folders (``results``), the recipe
part of its choices and schedules (``recipe``), how the cost of a job is estimated (``cost``),
the columns of its cases.csv (``cases``), the metrics it brings beside the registry's
(``metrics``) and the free disk one job needs. The parts live in the stage they
belong to; the entry names them as ``"module:attribute"`` and each stage imports only the part it
uses, when it uses it (a runner pulls in torch, nnU-Net's training stack for segmentation). So
this module imports nothing, any layer may read it, and a task file of a type not listed here is
an error naming the file.

Adding a type: ``docs/extending.md``. A type the harness does not ship is registered from its
own module (``register_task_type``); ``HARNESS_TASK_TYPES`` names such entries, which the CLI
and every job's worker register before they read a task (``register_from_environment``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

GB = 1_000_000_000  # decimal, as disks are sold and `df -H` shows

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"


class UnknownTaskTypeError(ValueError):
    """A task type no entry of ``TASK_TYPES`` describes; the message lists the known ones."""


@dataclass(frozen=True)
class TaskType:
    name: str
    #: The pydantic model of its task files (``harness.tasks.spec``): unknown keys are refused.
    spec: str
    #: ``plan(task) -> _Plan`` of ``harness.tasks.preflight``: every file its jobs read, the checks
    #: to run on them (their hashes become the jobs' data identity).
    data_check: str
    #: ``run(job: FinetuneJob) -> dict``: fine-tunes, predicts the held-out cases and writes the
    #: run folder through ``harness.finetune.job.finish_run``.
    runner: str
    #: ``rescore(task, run, old) -> (cases, changed metrics.json fields)``: a finished run scored
    #: again from what it kept (``old``: its ``harness.metrics.run_records.RunRecords``), without
    #: training (`harness rescore`).
    rescorer: str
    #: A ``harness.leaderboard.read_runs.ResultsReader``: its runs' cases.csv into a task of the
    #: leaderboard that scores itself.
    results: str
    #: A ``harness.recipes.RecipePart`` subclass: the choices and per-track schedules a recipe
    #: fixes for its jobs; a recipe that does not list the type runs it with the class's defaults.
    recipe: str
    #: Free space one job needs on its results file system before it starts, a lower bound
    #: (``harness.jobs.disk``). A Primus-M checkpoint with its AdamW state is 1.7 GB (ResEnc-L
    #: 1.1 GB); a classification job writes one every epoch beside the previous one before
    #: replacing it, nnU-Net keeps its latest and final ones, and a segmentation job's predictions
    #: come on top. The preprocessed data is built once per task and is not counted.
    min_free_bytes: int
    #: A ``harness.jobs.cost.CostModel``: how a job's device time follows from a measured rate
    #: of training iterations (what `make bench-gpu` measures); None: only finished jobs of the
    #: same task estimate it.
    cost: str | None = None
    #: A ``harness.metrics.run_records.CasesSchema``: the columns of its runs' cases.csv.
    cases: str | None = None
    #: A tuple of ``harness.metrics.registry.Metric`` of this type beside the registry's own (a
    #: type the harness does not ship brings its metrics here); None: the registry's only.
    metrics: str | None = None

    def load(self, part: str) -> Any:
        """The object ``part`` (``"spec"``, ``"runner"``, ...) names, imported now."""
        name = getattr(self, part)
        if name is None:
            raise ValueError(f"task type {self.name!r} has no {part}")
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute)


TASK_TYPES: dict[str, TaskType] = {
    SEGMENTATION: TaskType(
        SEGMENTATION,
        spec="harness.tasks.spec:SegmentationTask",
        data_check="harness.tasks.preflight:plan_segmentation",
        runner="harness.finetune.segmentation:run_segmentation",
        rescorer="harness.finetune.segmentation:rescore_segmentation",
        results="harness.leaderboard.read_runs:SEGMENTATION_RESULTS",
        recipe="harness.recipes:SegmentationRecipe",
        min_free_bytes=5 * GB,
        cost="harness.jobs.cost:SEGMENTATION_COST",
        cases="harness.metrics.run_records:SEGMENTATION_CASES",
    ),
    CLASSIFICATION: TaskType(
        CLASSIFICATION,
        spec="harness.tasks.spec:ClassificationTask",
        data_check="harness.tasks.preflight:plan_classification",
        runner="harness.finetune.classification:run_classification",
        rescorer="harness.finetune.classification.train:rescore_classification",
        results="harness.leaderboard.read_runs:CLASSIFICATION_RESULTS",
        recipe="harness.recipes:ClassificationRecipe",
        min_free_bytes=4 * GB,
        cases="harness.metrics.run_records:CLASSIFICATION_CASES",
    ),
}


def get_task_type(name: object, where: str = "") -> TaskType:
    """The entry of ``name``; anything else is an ``UnknownTaskTypeError`` (prefixed ``where: ``)."""
    if isinstance(name, str) and name in TASK_TYPES:
        return TASK_TYPES[name]
    prefix = f"{where}: " if where else ""
    raise UnknownTaskTypeError(f"{prefix}unknown task type {name!r}; known: {', '.join(TASK_TYPES)}")


def register_task_type(entry: TaskType) -> TaskType:
    """Add ``entry`` to ``TASK_TYPES`` (a type the harness does not ship, from its own module);
    a name already taken by another entry is a ValueError."""
    known = TASK_TYPES.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"task type {entry.name!r} is registered already, with other parts: {known}")
    TASK_TYPES[entry.name] = entry
    return entry


#: Comma-separated ``"module:attribute"`` of ``TaskType`` entries the harness does not ship.
TASK_TYPES_ENV = "HARNESS_TASK_TYPES"


def register_from_environment() -> list[str]:
    """Register the entries ``HARNESS_TASK_TYPES`` names, so that they exist in this process (the
    CLI and each job's worker call it first: a worker is a fresh process). A name that cannot be
    imported or is no ``TaskType`` is a ValueError naming the variable."""
    names = [n.strip() for n in os.environ.get(TASK_TYPES_ENV, "").split(",") if n.strip()]
    for name in names:
        module, _, attribute = name.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"{TASK_TYPES_ENV}: cannot import {name!r} (module:attribute): {e}") from None
        if not isinstance(entry, TaskType):
            raise ValueError(f"{TASK_TYPES_ENV}: {name!r} is a {type(entry).__name__}, not a TaskType")
        register_task_type(entry)
    return names
