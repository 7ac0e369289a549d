"""Job states, read from the run folder only: the files decide, never a scheduler's string.

``harness.runs.RunFolder`` names every file of a run folder; ``JobFiles`` reads and writes the
few the job matrix adds beside the fine-tuning files:

    RUNNING        {host, pid, proc_start, boot_id, started, job_id, slurm_job_id}: written
                   atomically by the worker when it starts, removed when it ends
    SUBMITTED      {executor: slurm, slurm_job_id, submitit_folder}: written when queued on Slurm
    worker.log     the worker's stdout and stderr (tracebacks included)
    attempts.jsonl one line per worker start and end: what the resumption test counts

States: pending, running, done, corrupt (DONE, but its result does not read: ``RunResult.read``
fails on a missing or unparsable cases.csv or metrics.json; the next evaluate reruns it), failed
(error class timeout / out of memory / diverged / error), rejected (the entry failed intake; it has no run
folder, see ``harness.jobs.evaluate``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.processes import process_alive, this_process
from harness.runs import JobSpec, ResultsFileError, RunFolder, RunResult, read_json, write_json_atomic

PENDING, RUNNING, DONE, FAILED, REJECTED = "pending", "running", "done", "failed", "rejected"
CORRUPT = "corrupt"
STATES = (PENDING, RUNNING, DONE, CORRUPT, FAILED, REJECTED)
TIMEOUT, OUT_OF_MEMORY, DIVERGED, ERROR = "timeout", "out of memory", "diverged", "error"
ERROR_CLASSES = (TIMEOUT, OUT_OF_MEMORY, DIVERGED, ERROR)


@dataclass(frozen=True)
class JobFiles:
    """Every path of one job: the fine-tuning run folder plus the job matrix's own files."""

    run: RunFolder

    @classmethod
    def at(cls, folder: str | Path) -> JobFiles:
        return cls(RunFolder(Path(folder)))

    @property
    def folder(self) -> Path:
        return self.run.path

    @property
    def running_marker(self) -> Path:
        return self.run.running_marker

    @property
    def submitted_marker(self) -> Path:
        return self.run.submitted_marker

    @property
    def worker_log(self) -> Path:
        return self.run.worker_log

    @property
    def attempts(self) -> Path:
        return self.run.attempts_log

    # -- writers -------------------------------------------------------------------------------
    def record_attempt(self, event: str, **info: Any) -> None:
        """Append one line (O_APPEND: lines of concurrent writers never interleave)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (
            json.dumps(
                {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **info},
                sort_keys=True,
            )
            + "\n"
        )
        with open(self.attempts, "a", encoding="utf-8") as f:
            f.write(line)

    def read_attempts(self) -> list[dict]:
        if not self.attempts.is_file():
            return []
        out = []
        for line in self.attempts.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by a kill -9 mid-write is not an event
                continue
        return out

    def mark_running(self, job_id: str) -> None:
        write_json_atomic(
            self.running_marker, {**this_process(), "job_id": job_id, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        )

    def clear_running(self) -> None:
        """Remove RUNNING if this process wrote it (a requeued Slurm job may have replaced it)."""
        info = read_marker(self.running_marker)
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.running_marker.unlink(missing_ok=True)

    def mark_failed(
        self, job_id: str | None, error_class: str, message: str, traceback: str = "", log: str | Path | None = None
    ) -> None:
        """FAILED in the run-folder format ({error_class, message, log}) plus the job id and the
        traceback tail; ``log`` defaults to the worker log, which holds everything the job printed."""
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r}; expected one of {ERROR_CLASSES}")
        if log is None:
            log = self.worker_log if self.worker_log.is_file() else self.run.log
        write_json_atomic(
            self.run.failed_marker,
            {
                "error_class": error_class,
                "message": message,
                "log": str(log),
                "job_id": job_id,
                "traceback": traceback,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )


@dataclass(frozen=True)
class JobState:
    state: str
    detail: str = ""  # why: "stale", "interrupted", "queued on Slurm as 12_3", ...
    error_class: str | None = None
    message: str | None = None
    log: str | None = None
    file: str | None = None  # corrupt: the result file that does not parse


def job_state(files: JobFiles, job_id: str | None, *, check_results: bool = False) -> JobState:
    """The state of the job with identity ``job_id`` in ``files`` (``None``: whatever job is there).

    A DONE or FAILED left by a job with another identity (a changed task spec, submission or
    recipe) does not count: the job is pending again. A RUNNING marker of a process that no
    longer exists (a killed harness or worker) means interrupted, i.e. pending. With
    ``check_results`` a DONE run whose result files are missing or do not parse is ``corrupt``
    (``result_problem``; what `harness status` and `harness evaluate` ask for).
    """
    run = files.run
    if run.done_marker.is_file():
        done = read_marker(run.done_marker) or {}
        if job_id is None or done.get("job_id") == job_id:
            problem = result_problem(run) if check_results else None
            if problem is not None:
                path, why = problem
                return JobState(CORRUPT, f"{path}: {why}", message=why, file=str(path))
            return JobState(DONE)
        return JobState(PENDING, "stale: its inputs changed since it was done")
    if run.failed_marker.is_file():
        info = read_marker(run.failed_marker) or {}
        if job_id is not None and info.get("job_id") not in (None, job_id):
            return JobState(PENDING, "stale: its inputs changed since it failed")
        return JobState(
            FAILED,
            error_class=info.get("error_class", ERROR),
            message=info.get("message", "FAILED marker unreadable"),
            log=info.get("log", str(files.worker_log)),
        )
    running = read_marker(files.running_marker)
    if running is not None:
        alive = process_alive(running)
        if alive is False:
            return JobState(PENDING, "interrupted: its process is gone")
        where = f"pid {running.get('pid')} on {running.get('host')}"
        if running.get("slurm_job_id"):
            where += f", Slurm job {running['slurm_job_id']}"
        return JobState(RUNNING, where)
    submitted = read_marker(files.submitted_marker)
    if submitted is not None:
        return JobState(RUNNING, f"queued on Slurm as {submitted.get('slurm_job_id')}")
    if run.job_json.is_file() and (run.work_dir.is_dir() or files.attempts.is_file()):
        return JobState(PENDING, "interrupted")
    return JobState(PENDING)


def result_problem(run: RunFolder) -> tuple[Path, str] | None:
    """(file, problem) of the first result file of a done run that ``RunResult.read`` refuses
    (missing, or not parsing: metrics.json not a JSON object, cases.csv without a ``case`` column,
    a case, or with a line cut short ...); None when the result reads. Both files are small."""
    try:
        RunResult.read(run)
    except ResultsFileError as e:
        return e.path, e.problem
    return None


def stored_job_id(files: JobFiles) -> str | None:
    """The job id in the folder's job.json; None when there is none or it does not read."""
    try:
        return JobSpec.read(files.run, require=()).job_id
    except ResultsFileError:
        return None


def read_marker(path: Path) -> dict | None:
    """A marker's JSON object, or None when it is absent, half-written or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
