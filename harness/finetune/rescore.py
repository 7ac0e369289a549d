"""`harness rescore`: score finished jobs again from what they kept, without training.

A metric's settings are part of a task file (an NSD tolerance, the metrics ranked), so changing
them changes the task's spec hash, and with it every job's identity: `harness evaluate` would
train them all again. But nothing a job trained or predicted depends on them
(``TaskSpec.SCORING_FIELDS``). So a finished job whose task changed only there is rescored
instead: a segmentation job from its kept predictions (``predictions/``), a classification job
from the probabilities in its cases.csv. Its cases.csv and metrics.json are rewritten by the same
writer the job used (``harness.metrics.run_records.write_run_records``), and its job.json takes
the task's new spec hash and the job id that goes with it, so evaluate counts it as done and the
leaderboard as current.

A run is rescored only when its task's training hash (the spec without its scoring fields) is
the one it was trained under; any other run is left as it is, with the reason. A rescore that
stops half-way leaves the run without DONE: evaluate then runs it again, nothing stale counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness.finetune.job import job_id_of
from harness.metrics.run_records import RunMetrics, RunRecords, write_run_records
from harness.runs import JobSpec, ResultsFileError, ResultsLayout, RunFolder, read_json
from harness.task_types import get_task_type
from harness.tasks import TaskSpecError, load_task_file

RESCORED, SKIPPED = "rescored", "skipped"


@dataclass(frozen=True)
class RescoreOutcome:
    run: Path
    state: str  # rescored / skipped
    detail: str = ""


def rescore_run(run: RunFolder) -> RescoreOutcome:
    """Rescore one run folder (see the module docstring); never raises for a run that cannot be
    rescored, it says why."""

    def skip(why: str) -> RescoreOutcome:
        return RescoreOutcome(run.path, SKIPPED, why)

    if not run.is_done():
        return skip("not finished")
    try:
        spec = JobSpec.read(run, require=JobSpec.WORKER_FIELDS + ("task_type",))
        assert spec.task_type is not None  # required above
        old = RunRecords.read(run, spec.task_type)
    except (ResultsFileError, KeyError) as e:  # KeyError: a task type without a cases.csv schema
        return skip(f"{e}; `harness evaluate` reruns it")
    assert spec.task_file is not None  # WORKER_FIELDS
    try:
        task = load_task_file(Path(spec.task_file))
    except TaskSpecError as e:
        return skip(str(e))
    if task.name != spec.task:
        return skip(f"task file {spec.task_file} now defines task {task.name!r}, the run is of {spec.task!r}")
    if spec.task_training_hash is None:
        return skip("its job.json predates the training hash; `harness evaluate` reruns it")
    if spec.task_training_hash != task.training_hash():
        return skip(f"task file {spec.task_file} changed beyond its scoring fields; `harness evaluate` reruns it")
    try:
        cases, changed = get_task_type(task.type, str(task.source)).load("rescorer")(task, run, old)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: what SimpleITK raises
        return skip(f"cannot rescore: {e}; its files are left as they were")

    new_id = job_id_of(replace(spec, task_spec_hash=task.spec_hash()).as_dict())
    new_spec = replace(spec, task_spec_hash=task.spec_hash(), job_id=new_id)
    rescored = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "previous_task_spec_hash": spec.task_spec_hash,
        "previous_job_id": spec.job_id,
    }
    changed = {**changed}
    aggregates = changed.pop("aggregates", old.metrics.aggregates)
    fields = {
        **old.metrics.fields,
        **changed,
        "task_spec_hash": task.spec_hash(),
        "job_id": new_id,
        "rescored": rescored,
    }
    metrics = RunMetrics.of_task(task, old.metrics.classes, aggregates, fields)
    done = read_json(run.done_marker)
    run.done_marker.unlink()  # until every file agrees again, the run is not done
    write_run_records(run, task.type, metrics, cases)  # and read back: what its readers will see parses
    new_spec.write(run)
    run.mark_done({**done, "job_id": new_id, "rescored": rescored["time"]})
    return RescoreOutcome(run.path, RESCORED, f"job id {spec.job_id} -> {new_id}")


def rescore_results(results: Path) -> list[RescoreOutcome]:
    """Every run folder of a results folder (``ResultsLayout.run_folders``), in path order."""
    return [rescore_run(run) for run in ResultsLayout(Path(results)).run_folders()]
