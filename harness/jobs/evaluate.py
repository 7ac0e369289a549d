"""``harness evaluate``: intake, plan the matrix, skip what is done, run the rest, record provenance.

Everything it knows lives in the results folder, so the same command after any crash (kill -9 of
the harness or of a job) finishes the matrix: done jobs (DONE with the current job id) are never
run again, interrupted ones resume from their nnU-Net checkpoint, and nothing half-written counts
because DONE is written last and atomically. One evaluate per results folder (``ResultsLock``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.finetune.job import KEEP_CHECKPOINTS_ENV, collect_provenance
from harness.jobs import EXECUTORS
from harness.jobs.cost import format_cost_plan
from harness.jobs.executors import Executor, LocalExecutor, SlurmConfig, SlurmExecutor, kill_orphan
from harness.jobs.matrix import Entry, PlannedJob, build_matrix, selected_folds
from harness.jobs.slots import Slot, SlotError, check_visible, plan_slots, visible_gpus
from harness.jobs.state import (
    CORRUPT,
    DONE,
    FAILED,
    PENDING,
    REJECTED,
    STATES,
    JobState,
    job_state,
    read_marker,
    stored_job_id,
)
from harness.recipes import DEFAULT_RECIPE, RecipeError, get_recipe
from harness.results_lock import ResultsLock, live_holder
from harness.runs import (
    JobSpec,
    ResultsFileError,
    ResultsLayout,
    entry_name,
    read_json,
    write_json_atomic,
    write_text_atomic,
)


class EvaluateError(ValueError):
    """Bad input to evaluate (missing file, clashing entry names, bad registry, bad option)."""


class DataCheckError(EvaluateError):
    """The data check found problems; the message lists every one."""


@dataclass
class EvaluateOptions:
    submissions: Sequence[Path]
    tasks: Path = Path("task_registry/toy")
    results: Path = Path("results")
    executor: str = "local"
    folds: Sequence[int] | None = None
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
    #: Intake records decided beforehand (a challenge phase's counted entries, harness/challenge):
    #: when given, ``submissions`` is not read and nothing is validated again.
    records: Sequence[dict] | None = None


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


# ------------------------------------------------------------------------------------ intake
@dataclass(frozen=True)
class Submitted:
    """One submission file of the command line. ``duplicate_of``: the entry of an earlier file
    with the same content (sha256), which this one is rejected for."""

    entry: str
    path: Path
    sha256: str
    duplicate_of: tuple[str, Path] | None = None


def resolve_submissions(paths: Sequence[Path]) -> list[Submitted]:
    """One ``Submitted`` per distinct file. A missing file, or two different files with the same
    entry name, is an error naming both; the same content under a second name is that entry's
    rejection (one set of weights, one entry: it is never trained twice, and a copy is noticed)."""
    from harness.submission.checkpoint import sha256_file

    if not paths:
        raise EvaluateError("no submission given")
    seen: dict[str, tuple[Path, str]] = {}
    by_digest: dict[str, tuple[str, Path]] = {}
    out = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise EvaluateError(f"{path}: no such submission file")
        name = entry_name(path.stem)
        digest = sha256_file(path)
        if name in seen:
            other, other_digest = seen[name]
            if other_digest != digest:
                raise EvaluateError(
                    f"entry name {name!r} is used by two different files: {other} "
                    f"(sha256 {other_digest[:12]}...) and {path} (sha256 {digest[:12]}...); rename one"
                )
            continue
        seen[name] = (path, digest)
        out.append(Submitted(name, path, digest, by_digest.get(digest)))
        by_digest.setdefault(digest, (name, path))
    return out


def duplicate_record(sub: Submitted) -> dict:
    """The intake verdict of a file identical to an earlier one: rejected, naming both files."""
    from harness import __version__

    assert sub.duplicate_of is not None  # intake calls it for a duplicate only
    entry, path = sub.duplicate_of
    error = (
        f"{sub.path} is identical to {path} (entry {entry!r}, sha256 {sub.sha256[:12]}...): "
        "the same weights are evaluated once, under the first name"
    )
    return {
        "entry": sub.entry,
        "file": str(Path(sub.path).resolve()),
        "sha256": sub.sha256,
        "valid": False,
        "track": None,
        "harness_version": __version__,
        "duplicate_of": entry,
        "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "report": {"errors": [error], "warnings": []},
    }


def intake(sub: Submitted, results: Path, *, recipe, task_types, write: bool, log) -> dict:
    """``run_intake`` of a distinct file; the recorded rejection of a duplicate."""
    if sub.duplicate_of is None:
        return run_intake(
            sub.entry, sub.path, sub.sha256, results, recipe=recipe, task_types=task_types, write=write, log=log
        )
    record = duplicate_record(sub)
    log(f"intake {sub.entry}: REJECTED: {record['report']['errors'][0]}")
    if write:
        layout = ResultsLayout(results)
        write_json_atomic(layout.intake_record(sub.entry), record)
        write_text_atomic(layout.intake_report(sub.entry), record["report"]["errors"][0] + "\n")
    return record


def run_intake(entry: str, path: Path, sha256: str, results: Path, *, recipe, task_types, write: bool, log) -> dict:
    """Validate one submission (or reuse the verdict recorded for this very file, harness
    version, recipe and task types) and, unless ``write`` is False, record it
    (``ResultsLayout.intake_record`` and ``intake_report``). A valid file that lacks what some
    of the registry's ``task_types`` need under ``recipe`` is rejected: no job is dispatched that
    is known to fail."""
    from harness import __version__

    layout = ResultsLayout(results)
    record_path = layout.intake_record(entry)
    task_types = sorted(set(task_types))
    try:
        record = read_json(record_path)
        if (
            record.get("sha256") == sha256
            and record.get("harness_version") == __version__
            and record.get("recipe") == recipe.name
            and record.get("task_types") == task_types
            and not record.get("duplicate_of")
        ):
            log(f"intake {entry}: {'valid' if record['valid'] else 'REJECTED'} (recorded {record.get('checked')})")
            return record
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    from harness.submission import unrunnable_problem, validate_submission

    log(f"intake {entry}: validating {path}")
    report = validate_submission(path, sha256=sha256)  # hashed once, by resolve_submissions
    record = {
        "entry": entry,
        "file": str(Path(path).resolve()),
        "sha256": report.sha256 or sha256,
        "valid": bool(report.valid),
        "track": report.track,
        "harness_version": __version__,
        "recipe": recipe.name,
        "task_types": task_types,
        "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "report": report.to_dict(),
    }
    text = report.format_text()
    problems = []
    if report.valid:
        problem = unrunnable_problem(record["report"], report.track, recipe, task_types)
        problems += [problem] if problem else []
    if problems:
        record["valid"] = False
        record["report"]["errors"] += problems
        text += "".join(f"\nREJECTED: {p}" for p in problems)
    if write:
        write_json_atomic(record_path, record)
        write_text_atomic(layout.intake_report(entry), text + "\n")
    verdict = "valid" if record["valid"] else "REJECTED: " + "; ".join(record["report"]["errors"])[:300]
    log(f"intake {entry}: {verdict}")
    return record


# ------------------------------------------------------------------------------------ planning
def check_recipe(recipe, tasks: dict) -> None:
    """Resolve every task's schedule (and augmentation) under ``recipe`` before anything runs: an
    override the recipe cannot take is an error naming the task file and the field."""
    for task in tasks.values():
        task.check_recipe(recipe)


def check_results_folder(results: Path, tasks: dict) -> None:
    """An unwritable results folder, or one without room for a job, stops evaluate before
    anything is planned (each worker checks again before its job starts)."""
    from harness.jobs.disk import DiskSpaceError, check_writable, job_need_bytes

    try:
        need = max((job_need_bytes(t.type) for t in tasks.values()), default=job_need_bytes(None))
        check_writable(Path(results), need, "a fine-tuning job")
    except (DiskSpaceError, ValueError) as e:
        raise EvaluateError(str(e)) from None


def check_data(opts: EvaluateOptions, tasks: dict, log) -> dict:
    """The data check of every task (``harness.tasks.preflight``) before anything is planned:
    any problem stops evaluate with all of them listed. Returns each task's data identity."""
    from harness.tasks.preflight import check_tasks

    report = check_tasks(tasks, cache=ResultsLayout(opts.results).data_check_cache, recipe=get_recipe(opts.recipe))
    if not report.ok:
        raise DataCheckError(report.format_text() + "\nno job was planned: fix the data, then run evaluate again")
    log(report.format_text())
    return report.data


def data_change(job: PlannedJob) -> str:
    """The files that changed since the job's folder was written (empty when none did or when
    the folder holds no manifest)."""
    from harness.tasks.preflight import data_changes

    try:
        before = JobSpec.read(job.files.run, require=()).data_files
    except ResultsFileError:
        return ""
    if before is None or job.job.data is None:
        return ""
    return data_changes(before, job.job.data.as_dict())


def plan(
    opts: EvaluateOptions, tasks: dict, records: list[dict], executor: Executor | None, log, data: dict | None = None
) -> list[MatrixRow]:
    accepted = [Entry(r["entry"], Path(r["file"]), r["sha256"], r["track"]) for r in records if r["valid"]]
    rejected = [r for r in records if not r["valid"]]
    device = opts.device or _default_device(opts)
    jobs = build_matrix(
        accepted, tasks, opts.results, folds=opts.folds, device=device, recipe=get_recipe(opts.recipe), data=data
    )
    rows = [_row(job, opts, executor, log) for job in jobs]
    for row in rows:
        if row.to_run and row.detail.startswith("stale"):
            assert row.job is not None  # _row's rows carry their job
            change = data_change(row.job)
            if change:
                row.action, row.detail = "rerun (data changed)", change
    per_task = selected_folds(tasks, opts.folds)
    layout = ResultsLayout(opts.results)
    for r in rejected:
        for name in sorted(tasks):
            for fold in per_task[name]:
                rows.append(
                    MatrixRow(
                        r["entry"],
                        r.get("track"),
                        name,
                        fold,
                        REJECTED,
                        f"none (failed intake: {layout.intake_record(r['entry'])})",
                    )
                )
    return rows


def _row(job: PlannedJob, opts: EvaluateOptions, executor: Executor | None, log) -> MatrixRow:

    state = job_state(job.files, job.job_id, check_results=True)
    assert job.job.entry is not None  # FinetuneJob.__post_init__ names it
    row = MatrixRow(job.job.entry, job.job.track, job.job.task.name, job.job.fold, state.state, "", state.detail, job)
    if state.state == DONE:
        row.action = "skip (done)"
    elif state.state == CORRUPT:  # DONE, but a result file does not parse: prepare_job_folder clears it
        row.to_run = True
        row.action = f"rerun (corrupt result: {Path(state.file).name if state.file else 'unknown file'})"
    elif state.state == FAILED:
        row.detail = f"{state.error_class}: {state.message}"
        row.to_run = opts.retry_failed
        row.action = "retry" if opts.retry_failed else "skip (failed; --retry-failed reruns it)"
    elif state.state == PENDING:
        row.to_run = True
        row.action = (
            "rerun (inputs changed)"
            if state.detail.startswith("stale")
            else "resume"
            if state.detail.startswith("interrupted")
            else "run"
        )
    else:  # RUNNING, as far as the files tell: left by an evaluate that died
        marker = read_marker(job.files.running_marker)
        running = marker or {}
        if opts.executor == "slurm" and executor is not None and not opts.dry_run and executor.reattach(job):
            row.to_run, row.action = True, "wait (still queued or running on Slurm)"
        elif opts.executor == "slurm" and opts.dry_run and job.files.submitted_marker.is_file():
            row.action = "wait (if still queued or running on Slurm)"
        elif running.get("slurm_job_id") or job.files.submitted_marker.is_file():
            row.to_run, row.action = opts.executor == "slurm", "resume (its Slurm job ended)"
            if opts.executor != "slurm":
                row.action = "skip (belongs to a Slurm job; use --executor slurm)"
        elif opts.dry_run and (holder := live_holder(opts.results)) is not None:
            # a dry run takes no lock: a live evaluate beside it owns this worker
            where = f"pid {holder.get('pid')} on {holder.get('host')}"
            row.action = f"none (running: worker {state.detail}, of the evaluate {where})"
        elif opts.dry_run:
            row.to_run, row.action = True, "restart (worker of a dead evaluate)"
        elif kill_orphan(job):
            log(f"killed the orphaned worker of {job.label} (its evaluate died); it resumes")
            row.to_run, row.action = True, "resume"
        elif marker is not None and state.detail and "on " in state.detail:
            row.action = f"skip (running elsewhere: {state.detail})"
        else:
            row.to_run, row.action = True, "resume"
    return row


def _default_device(opts: EvaluateOptions) -> str:
    if opts.executor == "slurm" and opts.slurm is not None and opts.slurm.gpus_per_node:
        return "cuda"
    from harness.finetune.run import default_device

    return default_device()


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


# ------------------------------------------------------------------------------------ output
def format_matrix(rows: Sequence[MatrixRow]) -> str:
    header = ("entry", "task", "fold", "state", "action")
    table = [header] + [
        (r.entry, r.task, str(r.fold), r.state, r.action + (f"  [{r.detail}]" if r.detail else "")) for r in rows
    ]
    widths = [max(len(t[i]) for t in table) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(t[:-1], widths)) + "  " + t[-1] for t in table)


class Progress:
    """A tqdm bar over the jobs to run on a terminal; plain, greppable log lines otherwise."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stdout
        self.total, self.finished = total, 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def __call__(self, kind: str, job: PlannedJob, state: JobState | None) -> None:
        stamp = time.strftime("%H:%M:%S")
        if kind == "started":
            if self.bar is None:
                self.log(f"{stamp} start    {job.label}")
            return
        assert state is not None  # a "finished" event carries the job's state
        self.finished += 1
        what = (
            state.state if state.state != FAILED else f"FAILED ({state.error_class}: {state.message}; log {state.log})"
        )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"last: {job.label} {state.state}")
            if state.state == FAILED:
                self.log(f"{stamp} {job.label}: {what}")
        else:
            self.log(f"{stamp} [{self.finished}/{self.total}] {job.label}: {what}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------ evaluate
def local_slots(opts: EvaluateOptions) -> list[Slot]:
    """Where the local executor runs jobs: one per GPU (``--gpus``, else every visible one
    unless ``--device cpu``), else ``--jobs`` on the CPU; the cores divided among them."""
    if opts.gpus is not None and opts.device == "cpu":
        raise EvaluateError("--gpus with --device cpu: give one or the other")
    gpus = list(opts.gpus) if opts.gpus is not None else ([] if opts.device == "cpu" else visible_gpus())
    if opts.device == "cuda" and not gpus:
        raise EvaluateError("--device cuda, but no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
    try:
        if opts.gpus is not None:
            check_visible(gpus)  # a GPU the node lacks: said now, not by every job that lands on it
        return plan_slots(opts.jobs, gpus)
    except SlotError as e:
        raise EvaluateError(str(e)) from None


def make_executor(opts: EvaluateOptions) -> Executor:
    if opts.executor != "local" and opts.gpus is not None:
        raise EvaluateError("--gpus is the local executor's; on Slurm give --gpus-per-job")
    if opts.executor == "local":
        return LocalExecutor(slots=local_slots(opts))
    if opts.executor == "slurm":
        return SlurmExecutor(ResultsLayout(Path(opts.results).resolve()).slurm_dir, opts.slurm or SlurmConfig())
    raise EvaluateError(f"unknown executor {opts.executor!r}; choose one of {', '.join(EXECUTORS)}")


def evaluate(opts: EvaluateOptions, stream=None) -> EvaluateOutcome:
    """Run (or with ``dry_run`` only print) the job matrix of ``opts``; see the module docstring."""
    stream = stream or sys.stdout
    if opts.jobs is not None and opts.jobs < 1:
        raise EvaluateError(f"--jobs must be at least 1, got {opts.jobs}")
    from harness.tasks import TaskSpecError, load_registry

    try:
        tasks = load_registry(opts.tasks)
        check_recipe(get_recipe(opts.recipe), tasks)
    except (TaskSpecError, RecipeError) as e:
        raise EvaluateError(str(e)) from None
    progress_log = lambda m: print(m, file=stream, flush=True)  # noqa: E731
    if not opts.dry_run:
        check_results_folder(opts.results, tasks)
    data = check_data(opts, tasks, progress_log)
    submissions = resolve_submissions(opts.submissions) if opts.records is None else []
    executor = make_executor(opts)
    if opts.keep_checkpoints and not opts.dry_run:  # the jobs' environment: local workers and sbatch inherit it
        os.environ[KEEP_CHECKPOINTS_ENV] = "1"

    def take_in(write: bool) -> list[dict]:
        if opts.records is not None:
            return [dict(r) for r in opts.records]
        recipe, task_types = get_recipe(opts.recipe), [t.type for t in tasks.values()]
        return [
            intake(sub, opts.results, recipe=recipe, task_types=task_types, write=write, log=progress_log)
            for sub in submissions
        ]

    if opts.dry_run:
        records = take_in(False)
        rows = plan(opts, tasks, records, None, progress_log, data)
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
        records = take_in(True)
        rows = plan(opts, tasks, records, executor, progress_log, data)
        for record in records:  # what a rejected entry would have run: `harness status` counts it
            if not record["valid"]:
                record["jobs"] = [{"task": r.task, "fold": r.fold} for r in rows if r.entry == record["entry"]]
                write_json_atomic(ResultsLayout(opts.results).intake_record(record["entry"]), record)
        todo = [r.job for r in rows if r.to_run and r.job is not None]
        outcome = EvaluateOutcome(rows)
        outcome.provenance = ResultsLayout(opts.results).new_provenance_path()
        base = collect_provenance(rows[0].job.job.device if rows and rows[0].job else (opts.device or "cpu"))
        _write_provenance(outcome.provenance, base, opts, tasks, records, rows, None)
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
        _write_provenance(outcome.provenance, base, opts, tasks, records, rows, outcome)
        counts = outcome.counts
        progress_log("finished: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        return outcome


def _write_provenance(path: Path, base: dict, opts, tasks, records, rows, outcome: EvaluateOutcome | None) -> None:
    """``ResultsLayout.new_provenance_path``: versions, git revision, device, seeds,
    what was asked and (at the end) what came of it."""
    data = {
        **base,
        "argv": sys.argv,
        "executor": opts.executor,
        "jobs_in_parallel": opts.jobs,
        "gpus": None if opts.gpus is None else list(opts.gpus),
        "keep_checkpoints": opts.keep_checkpoints,
        "retry_failed": opts.retry_failed,
        "tasks_dir": str(Path(opts.tasks).resolve()),
        "recipe": {"name": opts.recipe, "version": get_recipe(opts.recipe).version},
        "tasks": {
            n: {
                "spec_hash": t.spec_hash(),
                "source": str(t.source),
                "seed": t.seed,
                "time_limit_minutes": t.time_limit_minutes,
            }
            for n, t in tasks.items()
        },
        "submissions": [{k: r.get(k) for k in ("entry", "file", "sha256", "track", "valid")} for r in records],
        "jobs": [
            {
                "entry": r.entry,
                "task": r.task,
                "fold": r.fold,
                "job_id": r.job.job_id if r.job else None,
                "seed": r.job.job.seed if r.job else None,
                "state_before": r.state,
                "action": r.action,
                "state_after": (
                    outcome.final[str(r.job.folder)].state
                    if outcome and r.job and str(r.job.folder) in outcome.final
                    else None
                ),
            }
            for r in rows
        ],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z") if outcome else None,
        "counts": outcome.counts if outcome else None,
    }
    if opts.slurm is not None:
        data["slurm"] = {k: v for k, v in vars(opts.slurm).items()}
    write_json_atomic(path, data)
