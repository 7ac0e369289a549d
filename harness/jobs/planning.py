"""Planning: the checks before anything runs, the matrix with each job's state and what evaluate
does with it (``Planner.row``, the row state machine: it asks the executor, never names one), and
the preparation of a job folder before its job starts."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.jobs.disk import DiskSpaceError, check_writable, job_need_bytes
from harness.jobs.errors import DataCheckError, EvaluateError
from harness.jobs.executors import Executor, kill_orphan
from harness.jobs.intake import IntakeRecord
from harness.jobs.matrix import Entry, PlannedJob, build_matrix, selected_folds
from harness.jobs.state import CORRUPT, DONE, FAILED, PENDING, REJECTED, job_state, read_marker, stored_job_id
from harness.recipes import Recipe
from harness.results_lock import live_holder
from harness.runs import JobSpec, ResultsFileError, ResultsLayout
from harness.tasks.preflight import check_tasks, data_changes


@dataclass
class MatrixRow:
    """One line of the matrix: a planned job (``job``), or a rejected entry's would-be job."""

    entry: str
    track: str | None
    task: str
    fold: int
    state: str
    action: str
    detail: str = ""
    job: PlannedJob | None = None
    to_run: bool = False


def check_recipe(recipe: Recipe, tasks: dict) -> None:
    """Resolve every task's schedule (and augmentation) under ``recipe`` before anything runs: an
    override the recipe cannot take is an error naming the task file and the field."""
    for task in tasks.values():
        task.check_recipe(recipe)


def check_results_folder(layout: ResultsLayout, tasks: dict) -> None:
    """An unwritable results folder, or one without room for a job, stops evaluate before
    anything is planned (each worker checks again before its job starts)."""

    try:
        need = max((job_need_bytes(t.type) for t in tasks.values()), default=job_need_bytes(None))
        check_writable(layout.root, need, "a fine-tuning job")
    except (DiskSpaceError, ValueError) as e:
        raise EvaluateError(str(e)) from None


def check_data(layout: ResultsLayout, recipe: Recipe, tasks: dict, log: Callable[[str], None]) -> dict:
    """The data check of every task (``harness.tasks.preflight``) before anything is planned:
    any problem stops evaluate with all of them listed. Returns each task's data identity."""

    report = check_tasks(tasks, cache=layout.data_check_cache, recipe=recipe)
    if not report.ok:
        raise DataCheckError(report.format_text() + "\nno job was planned: fix the data, then run evaluate again")
    log(report.format_text())
    return report.data


def data_change(job: PlannedJob) -> str:
    """The files that changed since the job's folder was written (empty when none did or when
    the folder holds no manifest)."""

    try:
        before = JobSpec.read(job.files.run, require=()).data_files
    except ResultsFileError:
        return ""
    if before is None or job.job.data is None:
        return ""
    return data_changes(before, job.job.data.as_dict())


@dataclass
class Planner:
    """Plans one evaluate of ``layout``: which jobs exist and what becomes of each. ``dry_run``:
    nothing is asked of a cluster and no orphan is killed; ``device``: the jobs' device."""

    layout: ResultsLayout
    recipe: Recipe
    executor: Executor
    device: str
    folds: Sequence[int] | None = None
    dry_run: bool = False
    retry_failed: bool = False
    log: Callable[[str], None] = print
    #: seed repeats of the baselines' and ``noise_entries``' jobs (training noise; never ranked)
    noise_repeats: int = 0
    noise_entries: Sequence[str] = ()

    def plan(
        self,
        tasks: dict,
        entries: Sequence[Entry],
        rejected: Sequence[IntakeRecord] = (),
        data: dict | None = None,
    ) -> list[MatrixRow]:
        """The rows of the matrix: every job of the accepted ``entries`` (and their baselines),
        then the would-be jobs of the ``rejected`` ones."""
        jobs = build_matrix(
            entries,
            tasks,
            self.layout.root,
            folds=self.folds,
            device=self.device,
            recipe=self.recipe,
            data=data,
            noise_repeats=self.noise_repeats,
            noise_entries=self.noise_entries,
        )
        rows = [self.row(job) for job in jobs]
        for row in rows:
            if row.to_run and row.detail.startswith("stale"):
                assert row.job is not None  # row's rows carry their job
                change = data_change(row.job)
                if change:
                    row.action, row.detail = "rerun (data changed)", change
        per_task = selected_folds(tasks, self.folds)
        for r in rejected:
            where = self.layout.intake_record(r.entry)
            for name in sorted(tasks):
                for fold in per_task[name]:
                    rows.append(MatrixRow(r.entry, r.track, name, fold, REJECTED, f"none (failed intake: {where})"))
        return rows

    def row(self, job: PlannedJob) -> MatrixRow:
        """The job's state, and what this evaluate does with it."""
        state = job_state(job.files, job.job_id, check_results=True)
        assert job.job.entry is not None  # FinetuneJob.__post_init__ names it
        row = MatrixRow(
            job.job.entry, job.job.track, job.job.task.name, job.job.fold, state.state, "", state.detail, job
        )
        if state.state == DONE:
            row.action = "skip (done)"
        elif state.state == CORRUPT:  # DONE, but a result file does not parse: prepare_job_folder clears it
            row.to_run = True
            row.action = f"rerun (corrupt result: {Path(state.file).name if state.file else 'unknown file'})"
        elif state.state == FAILED:
            row.detail = f"{state.error_class}: {state.message}"
            row.to_run = self.retry_failed
            row.action = "retry" if self.retry_failed else "skip (failed; --retry-failed reruns it)"
        elif state.state == PENDING:
            row.to_run = True
            row.action = (
                "rerun (inputs changed)"
                if state.detail.startswith("stale")
                else "resume"
                if state.detail.startswith("interrupted")
                else "run"
            )
        else:
            self._running(row, job, state.detail)
        return row

    def _running(self, row: MatrixRow, job: PlannedJob, detail: str) -> None:
        """RUNNING, as far as the files tell: left by an evaluate that died, or queued on a
        cluster by one (an executor whose jobs outlive evaluate)."""
        marker = read_marker(job.files.running_marker)
        running = marker or {}
        queued = self.executor.outlives_evaluate
        if queued and not self.dry_run and self.executor.reattach(job):
            row.to_run, row.action = True, "wait (still queued or running on Slurm)"
        elif queued and self.dry_run and job.files.submitted_marker.is_file():
            row.action = "wait (if still queued or running on Slurm)"
        elif running.get("slurm_job_id") or job.files.submitted_marker.is_file():
            row.to_run = queued
            row.action = (
                "resume (its Slurm job ended)" if queued else "skip (belongs to a Slurm job; use --executor slurm)"
            )
        elif self.dry_run and (holder := live_holder(self.layout.root)) is not None:
            # a dry run takes no lock: a live evaluate beside it owns this worker
            where = f"pid {holder.get('pid')} on {holder.get('host')}"
            row.action = f"none (running: worker {detail}, of the evaluate {where})"
        elif self.dry_run:
            row.to_run, row.action = True, "restart (worker of a dead evaluate)"
        elif kill_orphan(job):
            self.log(f"killed the orphaned worker of {job.label} (its evaluate died); it resumes")
            row.to_run, row.action = True, "resume"
        elif marker is not None and detail and "on " in detail:
            row.action = f"skip (running elsewhere: {detail})"
        else:
            row.to_run, row.action = True, "resume"


def prepare_job_folder(job: PlannedJob) -> None:
    """Make the folder hold exactly this job: leftovers of another job id (a changed spec or
    submission) are removed, so nothing stale is resumed or counted; so is the result of a job
    that is to run again (a corrupt one: DONE with a result file that does not parse), else its
    DONE would count; job.json is written before the job is started or queued."""
    files = job.files
    stored = stored_job_id(files)
    if stored is not None and stored != job.job_id:
        shutil.rmtree(files.folder)
    elif stored is None and files.folder.is_dir() and files.run.done_marker.is_file():
        shutil.rmtree(files.folder)
    files.folder.mkdir(parents=True, exist_ok=True)
    # DONE first: without it the result files count for nothing, whatever is left of them
    for marker in (
        files.run.done_marker,
        files.run.metrics_json,
        files.run.cases_csv,
        files.run.failed_marker,
        files.running_marker,
        files.submitted_marker,
    ):
        marker.unlink(missing_ok=True)
    for kept in (files.run.predictions_dir, files.run.checkpoints_dir):  # of a result no longer counted
        shutil.rmtree(kept, ignore_errors=True)
    job.job.spec().write(files.run)
