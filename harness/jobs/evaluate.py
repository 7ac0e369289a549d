"""``harness evaluate``: intake, plan the matrix, skip what is done, run the rest, record provenance.

Everything it knows lives in the results folder, so the same command after any crash (kill -9 of
the harness or of a job) finishes the matrix: done jobs (DONE with the current job id) are never
run again, interrupted ones resume from their nnU-Net checkpoint, and nothing half-written counts
because DONE is written last and atomically. One evaluate per results folder (``ResultsLock``).
The stages are their own modules: ``intake`` (the files of the command line), ``planning`` (the
checks, the matrix and each row's state), ``executor_registry`` (``--executor NAME``),
``progress`` (what is shown) and ``provenance``; this module runs them in order.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.finetune.job import KEEP_CHECKPOINTS_ENV, collect_provenance
from harness.jobs.cost import format_cost_plan
from harness.jobs.errors import DataCheckError, EvaluateError
from harness.jobs.executor_registry import make_executor
from harness.jobs.executors import SlurmConfig
from harness.jobs.intake import IntakeRecord, intake_files, resolve_submissions
from harness.jobs.matrix import Entry
from harness.jobs.planning import (
    MatrixRow,
    Planner,
    check_data,
    check_recipe,
    check_results_folder,
    prepare_job_folder,
)
from harness.jobs.progress import Progress, format_matrix
from harness.jobs.provenance import write_provenance
from harness.jobs.state import DONE, STATES, JobState
from harness.recipes import DEFAULT_RECIPE, RecipeError, get_recipe
from harness.results_lock import ResultsLock
from harness.runs import ResultsLayout
from harness.tasks import TaskSpecError, load_registry

__all__ = ["DataCheckError", "EvaluateError", "EvaluateOptions", "EvaluateOutcome", "MatrixRow", "evaluate"]


@dataclass
class EvaluateOptions:
    submissions: Sequence[Path]
    tasks: Path = Path("task_registry/toy")
    results: Path = Path("results")
    executor: str = "local"
    folds: Sequence[int] | None = None
    #: seed repeats of the baselines' and ``noise_entries``' jobs (training noise; never ranked)
    noise_repeats: int = 0
    noise_entries: Sequence[str] = ()
    #: local executor: jobs at once (None: one per GPU of ``gpus``, else 1)
    jobs: int | None = None
    #: local executor: the GPUs to run on, one job each (None: every visible GPU unless
    #: ``device`` is cpu; ``harness.jobs.slots``)
    gpus: Sequence[str] | None = None
    #: keep each finished job's scratch folder, checkpoints included, as ``checkpoints/``
    keep_checkpoints: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    device: str | None = None
    recipe: str = DEFAULT_RECIPE
    slurm: SlurmConfig | None = None
    #: Entries accepted beforehand (a challenge phase's counted entries, harness/challenge):
    #: when given, ``submissions`` is not read and nothing is validated again.
    entries: Sequence[Entry] | None = None


@dataclass
class EvaluateOutcome:
    rows: list[MatrixRow]
    ran: int = 0
    provenance: Path | None = None
    final: dict[str, JobState] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(self.final.get(str(r.job.folder), JobState(r.state)).state if r.job else r.state for r in self.rows)
        return {s: c.get(s, 0) for s in STATES}

    @property
    def exit_code(self) -> int:
        """0 when every job of the matrix is done, 1 otherwise (failed, rejected or left pending)."""
        counts = self.counts
        return 0 if counts[DONE] == len(self.rows) else 1


def _asked(opts: EvaluateOptions) -> dict:
    """What the provenance records of the options."""
    asked: dict[str, Any] = {
        "executor": opts.executor,
        "jobs_in_parallel": opts.jobs,
        "gpus": None if opts.gpus is None else list(opts.gpus),
        "keep_checkpoints": opts.keep_checkpoints,
        "retry_failed": opts.retry_failed,
        "tasks_dir": str(Path(opts.tasks).resolve()),
    }
    if opts.slurm is not None:
        asked["slurm"] = dict(vars(opts.slurm))
    return asked


def _submitted(records: Sequence[IntakeRecord], entries: Sequence[Entry] | None) -> list[dict]:
    """The provenance's submissions: every verdict, or the entries accepted beforehand."""
    if entries is not None:
        return [
            {"entry": e.entry, "file": str(e.path), "sha256": e.sha256, "track": e.track, "valid": True}
            for e in entries
        ]
    return [{"entry": r.entry, "file": r.file, "sha256": r.sha256, "track": r.track, "valid": r.valid} for r in records]


def evaluate(opts: EvaluateOptions, stream=None) -> EvaluateOutcome:
    """Run (or with ``dry_run`` only print) the job matrix of ``opts``; see the module docstring."""
    stream = stream or sys.stdout
    if opts.jobs is not None and opts.jobs < 1:
        raise EvaluateError(f"--jobs must be at least 1, got {opts.jobs}")

    layout = ResultsLayout(opts.results)
    try:
        recipe = get_recipe(opts.recipe)
        tasks = load_registry(opts.tasks)
        check_recipe(recipe, tasks)
    except (TaskSpecError, RecipeError) as e:
        raise EvaluateError(str(e)) from None
    progress_log = lambda m: print(m, file=stream, flush=True)  # noqa: E731
    if not opts.dry_run:
        check_results_folder(layout, tasks)
    data = check_data(layout, recipe, tasks, progress_log)
    submissions = resolve_submissions(opts.submissions) if opts.entries is None else []
    executor = make_executor(opts, layout)
    if opts.keep_checkpoints and not opts.dry_run:  # the jobs' environment: local workers and sbatch inherit it
        os.environ[KEEP_CHECKPOINTS_ENV] = "1"
    if opts.device is not None:
        device = opts.device
    else:
        from harness.finetune.run import default_device

        device = executor.default_device() or default_device()
    planner = Planner(
        layout,
        recipe,
        executor,
        device,
        opts.folds,
        opts.dry_run,
        opts.retry_failed,
        log=progress_log,
        noise_repeats=opts.noise_repeats,
        noise_entries=opts.noise_entries,
    )
    task_types = [t.type for t in tasks.values()]

    def verdicts(write: bool) -> tuple[list[Entry], list[IntakeRecord], list[IntakeRecord]]:
        """(accepted entries, rejected records, every record) of this evaluate's submissions."""
        if opts.entries is not None:
            return list(opts.entries), [], []
        records = intake_files(submissions, layout, recipe=recipe, task_types=task_types, write=write, log=progress_log)
        accepted = [r.accepted_entry() for r in records if r.valid]
        return accepted, [r for r in records if not r.valid], records

    if opts.dry_run:
        accepted, rejected, _ = verdicts(False)
        rows = planner.plan(tasks, accepted, rejected, data)
        print(format_matrix(rows), file=stream)
        for line in executor.describe():
            print(line, file=stream)
        print(format_cost_plan([r.job for r in rows if r.to_run and r.job is not None], opts.results), file=stream)
        n = sum(r.to_run for r in rows)
        print(
            f"dry run: {len(rows)} jobs, {n} would run with the {opts.executor} executor; nothing was run", file=stream
        )
        return EvaluateOutcome(rows)
    with ResultsLock(opts.results, "harness evaluate"):
        accepted, rejected, records = verdicts(True)
        rows = planner.plan(tasks, accepted, rejected, data)
        for record in rejected:  # what a rejected entry would have run: `harness status` counts it
            record.jobs = [{"task": r.task, "fold": r.fold} for r in rows if r.entry == record.entry]
            record.write(layout)
        todo = [r.job for r in rows if r.to_run and r.job is not None]
        outcome = EvaluateOutcome(rows)
        outcome.provenance = layout.new_provenance_path()
        base = collect_provenance(rows[0].job.job.device if rows and rows[0].job else (opts.device or "cpu"))
        asked, submitted = _asked(opts), _submitted(records, opts.entries)
        write_provenance(outcome.provenance, base, asked, recipe, tasks, submitted, rows)
        skipped = Counter(r.action for r in rows if not r.to_run)
        progress_log(
            f"matrix: {len(rows)} jobs; running {len(todo)} with the {executor.name} executor"
            + "".join(f"; {n} {a}" for a, n in sorted(skipped.items()))
        )
        for line in executor.describe():
            progress_log(line)
        for row in rows:
            if row.to_run and row.job is not None and not row.action.startswith("wait"):
                prepare_job_folder(row.job)
        progress = Progress(len(todo), stream)

        def on_event(kind, job, state):
            if state is not None:
                outcome.final[str(job.folder)] = state
            progress(kind, job, state)

        try:
            executor.run(todo, on_event)
        finally:
            progress.close()
        outcome.ran = len(todo)
        counts = outcome.counts
        write_provenance(outcome.provenance, base, asked, recipe, tasks, submitted, rows, outcome.final, counts)
        progress_log("finished: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        return outcome
