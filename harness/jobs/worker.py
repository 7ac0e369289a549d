"""``python -m harness.jobs.worker JOB_FOLDER``: run the fine-tuning job described by a folder.

The job spec is the folder's job.json (written by ``harness evaluate`` before submission), not
a pickled closure: the job runs the code on disk when it starts, and checks that what it is
about to compute is still the job it was asked for (task spec hash, job id; the runner checks the
submission's sha256 when it loads the file).
Every executor ends up here, in a fresh process per job, and calls
``harness.finetune.run.run_job``. A failure writes FAILED with its error class, a message that
names the real cause (a full disk: the file and the free space; an nnU-Net "see the output
above": the error that output shows) and the traceback tail, prints the traceback once, then the
process exits non-zero.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

from harness.finetune.divergence import DivergedError
from harness.finetune.job import FinetuneJob
from harness.jobs.disk import check_writable, disk_full_message, job_need_bytes, looks_like_disk_full
from harness.jobs.slots import slurm_slot
from harness.jobs.state import DIVERGED, ERROR, OUT_OF_MEMORY, TIMEOUT, JobFiles
from harness.recipes import RecipeError, get_recipe
from harness.runs import JobSpec, ResultsFileError, RunFolder, read_json
from harness.task_types import register_from_environment
from harness.tasks import load_task_file
from harness.tasks.preflight import TaskData, data_changes, task_data

#: Set by the local executor: the worker dies with the harness that started it.
PARENT_PID_ENV = "HARNESS_JOBS_PARENT_PID"
TRACEBACK_TAIL_LINES = 30


class JobSpecError(RuntimeError):
    """job.json is missing, unreadable, or no longer matches its task file or submission."""


def load_job(folder: str | Path) -> FinetuneJob:
    """Rebuild the ``FinetuneJob`` of ``folder`` from its job.json and check it is unchanged."""
    folder = Path(folder).resolve()
    run = RunFolder(folder)
    try:
        register_from_environment()  # a task type the harness does not ship, as the evaluate that planned it
    except ValueError as e:
        raise JobSpecError(str(e)) from None
    try:
        results = run.results_root
        spec = JobSpec.read(run, require=JobSpec.WORKER_FIELDS)
    except ResultsFileError as e:
        raise JobSpecError(str(e)) from None
    # read() demanded the WORKER_FIELDS: these are set
    assert spec.task_file is not None and spec.recipe is not None
    assert spec.track is not None and spec.fold is not None

    task = load_task_file(Path(spec.task_file))
    if task.name != spec.task:
        raise JobSpecError(
            f"{run.job_json}: task file {spec.task_file} now defines task {task.name!r}, the job is for {spec.task!r}"
        )
    if task.spec_hash() != spec.task_spec_hash:
        raise JobSpecError(
            f"{run.job_json}: task file {spec.task_file} changed since the job was "
            f"planned (spec hash {task.spec_hash()} != {spec.task_spec_hash}); "
            "rerun `harness evaluate` to plan it again"
        )

    try:
        recipe = get_recipe(spec.recipe, where=f"{run.job_json}: field 'recipe'")
    except RecipeError as e:
        raise JobSpecError(str(e)) from None

    manifest = spec.data_files
    data = TaskData(task.name, tuple(sorted(manifest.items()))) if manifest is not None else None
    job = FinetuneJob(
        task=task,
        fold=spec.fold,
        track=spec.track,
        results=results,
        submission=Path(spec.submission) if spec.submission else None,
        entry=spec.entry,
        device=spec.device or "cpu",
        recipe=recipe,
        submission_sha256=spec.submission_sha256,
        data=data,
        repeat=spec.repeat or 0,
    )
    if job.run.path.resolve() != folder:
        raise JobSpecError(f"{run.job_json}: describes {job.run.path}, not this folder")
    if job.job_id() != spec.job_id:
        raise JobSpecError(
            f"{run.job_json}: the job id of what it describes is {job.job_id()}, "
            f"the file says {spec.job_id} (harness recipe changed?); rerun `harness evaluate`"
        )
    if data is not None:  # the data as it is now, not as it was when the job was planned
        now = task_data(task, job.layout.data_check_cache)
        if now.fingerprint != data.fingerprint:
            raise JobSpecError(
                f"{task.source}: the task's data changed since the job was planned "
                f"({data_changes(data.as_dict(), now.as_dict())}); rerun `harness evaluate`, "
                "which checks the data and plans the job again"
            )
    return job


def error_class(exc: BaseException) -> str:
    """timeout / out of memory / diverged / error, from the exception type."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    if isinstance(exc, DivergedError):
        return DIVERGED
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return OUT_OF_MEMORY
    try:  # submitit raises this inside the job when a timed-out job may not be requeued again
        from submitit.core.utils import UncompletedJobError

        uncompleted: tuple[type[BaseException], ...] = (UncompletedJobError,)
    except ImportError:  # pragma: no cover - submitit is a dependency
        uncompleted = ()
    if isinstance(exc, uncompleted) and "timed-out" in str(exc):
        return TIMEOUT
    return ERROR


def run_job_folder(folder: str | Path) -> dict:
    """Run the job of ``folder``; return its DONE summary. Raises after writing FAILED (or, when
    even that cannot be written, after saying so on stderr).

    Before the job starts, its folder must be writable with ``job_need_bytes`` free
    (harness.jobs.disk): a full disk fails the job at once, naming the folder and the free space."""
    files = JobFiles.at(Path(folder).resolve())
    job_id = task_type = None
    try:
        spec = JobSpec.read(files.run, require=())
        job_id, task_type = spec.job_id, spec.task_type
    except ResultsFileError:
        pass
    output_start = _size(files.worker_log)  # this attempt's output begins here
    try:
        files.record_attempt("start", job_id=job_id, slurm_job_id=os.environ.get("SLURM_JOB_ID"))
        check_writable(files.folder, job_need_bytes(task_type), f"the job {files.folder}")
        files.mark_running(job_id or "")
        job = load_job(files.folder)  # the runner checks the submission's sha256 when it loads it
        use_slurm_cores()
        from harness.finetune.run import run_job

        run_job(job)
    except Exception as exc:  # BaseException (SystemExit of a requeue, KeyboardInterrupt) is no failure
        record_failure(files, job_id, exc, output_start)
        raise
    finally:
        files.clear_running()
    files.record_attempt("done", job_id=job_id)
    return read_json(files.run.done_marker)


def use_slurm_cores() -> None:
    """In a Slurm job with ``--cpus-per-task``: torch's threads and nnU-Net's augmentation workers
    follow its cores (``harness.jobs.slots``; what the organizer set is kept)."""

    slot = slurm_slot()
    if slot is None:
        return
    os.environ.update(slot.environment())
    if "torch" in sys.modules:  # imported already (by submitit's unpickling): threads are set at import
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", slot.cpus)))


#: Messages of nnU-Net and batchgenerators whose real cause was printed by a background process.
_SEE_ABOVE = (
    "check text output above",
    "print statements above",
    "6 feet under",
    "look for an error message",
    "no longer alive",
    "see print statements above",
)


def describe_failure(exc: BaseException, folder: Path, output: str = "") -> tuple[str, str]:
    """(error class, one-line-first message) of a job's exception: a full disk says so with the
    file and the free space; a "see the output above" error of a background process is replaced by
    the last exception that ``output`` (what this attempt printed) shows."""
    cls = error_class(exc)
    message = f"{type(exc).__name__}: {exc}"
    if cls == ERROR and looks_like_disk_full(exc, folder):
        return ERROR, disk_full_message(exc, folder)
    if any(s in str(exc) for s in _SEE_ABOVE):
        said = (str(exc).strip().splitlines() or [""])[0]
        cause = last_exception_line(output)
        if cause is not None:
            message = f"{cause} (in a background process; nnU-Net said: {said})"
        elif "6 feet under" in str(exc) or "no longer alive" in str(exc):
            cls = OUT_OF_MEMORY
            message = (
                f"a background process of nnU-Net died without an error message, most likely killed "
                f"for lack of memory (RAM); nnU-Net said: {said}"
            )
    return cls, message[:2000]


def last_exception_line(output: str) -> str | None:
    """The final line ("ValueError: ...") of the last traceback printed in ``output``, None if
    it shows none."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line.strip() and not line[:1].isspace():
            return line.strip()[:1000]
    return None


def record_failure(files: JobFiles, job_id: str | None, exc: BaseException, output_start: int = 0) -> None:
    """Write FAILED (error class, message, traceback tail) for ``exc`` and an attempt line. A
    FAILED that cannot be written (a full disk) is reported on stderr instead of raising."""
    cls, message = describe_failure(exc, files.folder, _output_since(files, output_start))
    tail = "".join(traceback.format_exception(exc)).splitlines()[-TRACEBACK_TAIL_LINES:]
    try:
        files.mark_failed(job_id, cls, message, "\n".join(tail), log=_slurm_log())
    except OSError as e:
        try:
            print(
                f"harness worker: cannot write {files.run.failed_marker} ({e.strerror or e}); "
                f"the job failed: {cls}: {message}",
                file=sys.stderr,
                flush=True,
            )
        except OSError:  # stderr on the same full disk: the executor reports the exit status
            pass
    try:
        files.record_attempt("failed", job_id=job_id, error_class=cls)
    except OSError:
        pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _output_since(files: JobFiles, start: int, limit: int = 256 * 1024) -> str:
    """What this attempt printed (the last ``limit`` bytes of it): worker.log from ``start``, or
    under Slurm submitit's stdout and stderr files."""
    paths: list[Path] = [files.worker_log]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        try:
            import submitit

            job_paths = submitit.JobEnvironment().paths
            paths = [Path(job_paths.stdout), Path(job_paths.stderr)]
        except Exception:  # not inside a submitit job after all
            pass
    texts = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                begin = start if path == files.worker_log else 0
                f.seek(max(begin, f.seek(0, os.SEEK_END) - limit))
                texts.append(f.read().decode("utf-8", "replace"))
        except OSError:
            continue
    return "\n".join(texts)


def _slurm_log() -> Path | None:
    """Under Slurm the job's output goes to submitit's log file, not to worker.log."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit

        return submitit.JobEnvironment().paths.stdout
    except Exception:  # not inside a submitit job after all
        return None


def _die_with_parent() -> None:
    """Under the local executor: when the harness dies (even kill -9), kill this job's whole
    process group (nnU-Net's augmentation workers included) instead of leaving orphans."""
    parent = int(os.environ.get(PARENT_PID_ENV, "0") or 0)
    if not parent:
        return

    worker_pid = os.getpid()

    def on_term(signum, frame):
        me = os.getpid()
        if me != worker_pid:  # a forked child (a pool worker told to stop): default behaviour
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(me, signal.SIGTERM)
            return
        group = os.getpgrp()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != me:
                try:
                    if os.getpgid(int(proc.name)) == group:
                        os.kill(int(proc.name), signal.SIGKILL)
                except OSError:
                    continue
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the harness died before prctl took effect
        on_term(signal.SIGTERM, None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.jobs.worker JOB_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    if not RunFolder(folder).job_json.is_file():
        print(f"error: {folder}: no job.json (not a job folder)", file=sys.stderr)
        return 2
    _die_with_parent()
    try:
        summary = run_job_folder(folder)
    except Exception:
        try:
            traceback.print_exc()  # the one traceback of worker.log (the job logged it to train.log)
        except OSError:  # stderr on a full disk: FAILED (or record_failure's stderr line) says it
            pass
        return 1
    print(f"job done: {folder} {summary}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
