"""Executors: one run loop (``Executor.run``) with three hooks per executor (``start``, ``poll``,
``stop``); every job ends up in ``harness.jobs.worker`` on its job folder.

* ``LocalExecutor``: each job is its own subprocess (``python -m harness.jobs.worker FOLDER``)
  in its own process group, one per slot at a time (``harness.jobs.slots``: a GPU each, the CPU
  cores divided among them, set in the job's environment), killed with its group at the task's time
  limit (FAILED "timeout"); a job killed by SIGKILL that we did not send was most likely the
  kernel's OOM killer (FAILED "out of memory"). Subprocesses are started and polled from the
  calling thread only (the worker's parent-death signal follows the thread that forked it).
* ``SlurmExecutor``: a submitit array per batch (jobs of equal time limit); every array task
  calls the same ``SlurmWorker`` on a folder path. ``SlurmWorker`` is submitit-Checkpointable, so
  a timed-out or preempted task is requeued and the fine-tuning resumes from nnU-Net's
  ``checkpoint_latest.pth`` in the run's work dir. Our files decide done or failed; Slurm is asked
  only for a job that ended without either (cancelled, killed, node failure).

Over 450 lines for a reason: the local and the Slurm executor implement the hooks of one run loop;
side by side, their differences (process groups, time limits, what an out-of-memory kill looks like
to each) read in one place.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.jobs.disk import NEARLY_FULL_BYTES, format_bytes, free_bytes
from harness.jobs.matrix import PlannedJob
from harness.jobs.slots import Slot, oversubscribed, plan_slots
from harness.jobs.state import (
    DONE,
    ERROR,
    FAILED,
    OUT_OF_MEMORY,
    TIMEOUT,
    JobState,
    job_state,
    process_alive,
    read_marker,
)
from harness.jobs.worker import PARENT_PID_ENV
from harness.runs import read_json, write_json_atomic

#: ``on_event(kind, job, state)``: kind is "started" (state None) or "finished".
EventCallback = Callable[[str, PlannedJob, "JobState | None"], None]


class Executor(ABC):
    """One run loop for every executor (``run``): an executor only says how jobs start
    (``start``), how one is seen to have ended (``poll``) and what happens to the jobs still
    running when the loop is left early (``stop``)."""

    name: str = ""
    poll_s: float = 1.0
    #: Whether the jobs it starts outlive the evaluate that started them (queued on a cluster): a
    #: job an earlier evaluate left running is then waited for (``reattach``) or resumed, and
    #: another executor leaves such a job alone.
    outlives_evaluate: bool = False

    def run(self, jobs: Sequence[PlannedJob], on_event: EventCallback) -> None:
        """Run ``jobs`` (their job.json already written) until each is done or failed."""
        waiting = deque(jobs)
        active: dict[str, tuple[PlannedJob, Any]] = {}  # job folder -> (job, the executor's handle)
        try:
            while waiting or active:
                for job, handle in self.start(waiting, len(active)):
                    active[str(job.folder)] = (job, handle)
                    on_event("started", job, None)
                for key, (job, handle) in list(active.items()):
                    state = self.poll(job, handle)
                    if state is not None:
                        del active[key]
                        on_event("finished", job, state)
                if active:
                    time.sleep(self.poll_s)
        finally:  # interrupted (Ctrl-C, an error), or done (then nothing is left to stop)
            self.stop([handle for _, handle in active.values()])

    @abstractmethod
    def start(self, waiting: deque[PlannedJob], running: int) -> list[tuple[PlannedJob, Any]]:
        """Start (or queue) the jobs that may start now, taken from the left of ``waiting``
        while ``running`` jobs run; each with the handle ``poll`` and ``stop`` get."""

    @abstractmethod
    def poll(self, job: PlannedJob, handle: Any) -> JobState | None:
        """The final state of ``job`` once it has ended (``settle``), None while it runs."""

    def stop(self, handles: list[Any]) -> None:  # noqa: B027 - a hook: most executors leave jobs be
        """What becomes of jobs still running when ``run`` is left early (default: nothing)."""

    def describe(self) -> list[str]:
        """Lines saying where jobs run (printed before they start, dry run included)."""
        return []

    def reattach(self, job: PlannedJob) -> bool:
        """Whether a job an earlier evaluate left running is still alive in this executor
        (then ``run`` waits for it instead of starting it again)."""
        return False

    def default_device(self) -> str | None:
        """The device jobs get when evaluate is given none (None: this machine's default)."""
        return None


def settle(job: PlannedJob, error_class: str, message: str, log: str | Path | None = None) -> JobState:
    """The job's final state: its own DONE / FAILED if it wrote one, else FAILED as given (kept in
    memory, with why, when FAILED cannot be written: a full disk must not stop the matrix)."""
    state = job_state(job.files, job.job_id)
    if state.state not in (DONE, FAILED):
        message = _with_disk_note(job, message)
        try:
            job.files.mark_failed(job.job_id, error_class, message, log=log)
            state = job_state(job.files, job.job_id)
        except OSError as e:
            state = JobState(
                FAILED,
                error_class=error_class,
                log=str(log or job.files.worker_log),
                message=f"{message} (FAILED could not be written: {e.strerror or e})",
            )
    for marker in (job.files.running_marker, job.files.submitted_marker):
        try:
            marker.unlink(missing_ok=True)
        except OSError:
            pass
    return state


def _with_disk_note(job: PlannedJob, message: str) -> str:
    """``message``, plus "disk full" with the free space when the job's file system is (nearly)
    full: a worker that could not even write FAILED most likely ran out of space."""

    free = free_bytes(job.folder)
    if free is None or free >= NEARLY_FULL_BYTES:
        return message
    return f"{message}; disk full? {job.folder}: {format_bytes(free)} free"


# ------------------------------------------------------------------------------------ local
class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        max_parallel: int = 1,
        python: str | None = None,
        poll_s: float = 0.5,
        slots: Sequence[Slot] | None = None,
    ):
        """``slots``: where jobs run (``harness.jobs.slots.plan_slots``); default ``max_parallel``
        CPU slots sharing the machine's cores."""
        if max_parallel < 1:
            raise ValueError(f"--jobs must be at least 1, got {max_parallel}")
        self.slots = list(slots) if slots else plan_slots(max_parallel, None)
        self.max_parallel = len(self.slots)
        self._free = deque(self.slots)
        self.python = python or sys.executable
        self.poll_s = poll_s

    def start(self, waiting: deque[PlannedJob], running: int) -> list[tuple[PlannedJob, Any]]:
        started: list[tuple[PlannedJob, Any]] = []
        while waiting and self._free:
            job, slot = waiting.popleft(), self._free.popleft()
            started.append((job, (self._start(job, slot), time.monotonic() + job.time_limit_s, slot)))
        return started

    def poll(self, job: PlannedJob, handle: Any) -> JobState | None:
        proc, deadline, slot = handle
        rc, timed_out = proc.poll(), False
        if rc is None and time.monotonic() > deadline:
            _kill_group(proc)
            rc, timed_out = proc.wait(), True
        if rc is None:
            return None
        self._free.append(slot)
        return self._settle(job, rc, timed_out)

    def stop(self, handles: list[Any]) -> None:
        """Leave no job running behind us."""
        for proc, _, slot in handles:
            _kill_group(proc)
            proc.wait()
            self._free.append(slot)

    def describe(self) -> list[str]:
        warning = oversubscribed(self.slots)
        lines = [f"local executor: {len(self.slots)} job(s) at once"] + [f"  {s.describe()}" for s in self.slots]
        return lines + ([warning] if warning else [])

    def environment(self, slot: Slot) -> dict[str, str]:
        """The whole environment of a job in ``slot``."""
        return {**os.environ, **slot.environment(), PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}

    def _start(self, job: PlannedJob, slot: Slot) -> subprocess.Popen:
        job.files.worker_log.parent.mkdir(parents=True, exist_ok=True)
        env = self.environment(slot)
        # unbuffered: a write failed on a full disk leaves nothing for close() to flush (and raise)
        with open(job.files.worker_log, "ab", buffering=0) as log:
            try:
                log.write(
                    f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} local worker, time limit "
                    f"{job.time_limit_s:g} s, {slot.describe()}\n".encode()
                )
                log.flush()
            except OSError:  # a full disk: the worker fails on it and says so in FAILED or on stderr
                pass
            return subprocess.Popen(
                [self.python, "-m", "harness.jobs.worker", str(job.folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )

    @staticmethod
    def _settle(job: PlannedJob, rc: int, timed_out: bool) -> JobState:
        if timed_out:
            minutes = job.job.task.time_limit_minutes
            state = job_state(job.files, job.job_id)
            if state.state != DONE:  # killed at the limit: whatever it wrote, it timed out
                message = f"exceeded the task's time limit of {minutes:g} min; killed"
                try:
                    job.files.mark_failed(job.job_id, TIMEOUT, message)
                except OSError:  # a full disk: settle keeps the timeout in memory
                    return settle(job, TIMEOUT, message)
        if rc == -signal.SIGKILL:
            return settle(
                job,
                OUT_OF_MEMORY,
                "killed by SIGKILL (not by the harness): most likely the kernel's out-of-memory killer",
            )
        if rc < 0:
            return settle(job, ERROR, f"killed by signal {signal.Signals(-rc).name}")
        return settle(job, ERROR, f"worker exited with status {rc} without a result")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker leads its own session: pgid == pid
    except ProcessLookupError:
        pass


def kill_orphan(job: PlannedJob) -> bool:
    """Kill the process group of a local worker left running by a dead evaluate (we hold the
    results lock, so no live evaluate owns it). Returns whether one was found."""

    info = read_marker(job.files.running_marker)
    if not info or info.get("slurm_job_id") or process_alive(info) is not True:
        return False
    try:
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"harness.jobs.worker" not in cmdline:
        return False
    try:
        os.killpg(int(info["pid"]), signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(50):
        if process_alive(info) is not True:
            break
        time.sleep(0.1)
    job.files.running_marker.unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------------------------ slurm
class SlurmConfigError(ValueError):
    """A Slurm config file or flag is invalid; the message names the file and the key."""


@dataclass
class SlurmConfig:
    """Where and how jobs are queued. ``time`` comes from each task's ``time_limit_minutes``."""

    partition: str | None = None
    mem_gb: float | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = "ssl3d-harness"
    #: seconds before the time limit at which Slurm signals the job to checkpoint and requeue
    signal_delay_s: int = 90
    #: how often a timed-out job is requeued before it counts as failed "timeout"
    max_requeues: int = 3
    array_parallelism: int = 256
    #: shell lines run in the batch script before the job (module load, conda activate, ...)
    setup: list[str] = field(default_factory=list)
    #: any further sbatch option, e.g. {"exclude": "node7", "mail-type": "FAIL"}
    extra: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 5.0

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> SlurmConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise SlurmConfigError(f"{path}: cannot read the Slurm config: {e.strerror or e}") from None
        import yaml

        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as e:
            raise SlurmConfigError(f"{path}: not valid JSON: {e}") from None
        except yaml.YAMLError as e:
            raise SlurmConfigError(f"{path}: not valid YAML: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SlurmConfigError(f"{path}: must be a mapping of settings, got {type(data).__name__}")
        return cls.from_mapping({**data, **{k: v for k, v in overrides.items() if v is not None}}, str(path))

    @classmethod
    def from_mapping(cls, data: dict, source: str = "slurm settings") -> SlurmConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SlurmConfigError(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        config = cls(**data)
        for name, kind in (
            ("mem_gb", (int, float)),
            ("gpus_per_node", int),
            ("cpus_per_task", int),
            ("signal_delay_s", int),
            ("max_requeues", int),
            ("array_parallelism", int),
        ):
            value = getattr(config, name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool) or value < 0):
                raise SlurmConfigError(f"{source}: {name} must be a non-negative number, got {value!r}")
        if not isinstance(config.extra, dict):
            raise SlurmConfigError(f"{source}: extra must be a mapping of sbatch options, got {config.extra!r}")
        if not isinstance(config.setup, list) or not all(isinstance(s, str) for s in config.setup):
            raise SlurmConfigError(f"{source}: setup must be a list of shell lines")
        return config

    def parameters(self, time_min: int) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` keywords for one array."""
        params: dict[str, Any] = {
            "time": int(time_min),
            "job_name": self.job_name,
            "signal_delay_s": int(self.signal_delay_s),
            "array_parallelism": int(self.array_parallelism),
        }
        for key in ("partition", "gpus_per_node", "cpus_per_task", "account", "qos", "constraint"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        if self.mem_gb is not None:
            params["mem"] = f"{max(1, int(round(self.mem_gb * 1024)))}M"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = {str(k): v for k, v in self.extra.items()}
        return params


class SlurmWorker:
    """The one function every Slurm array task calls, on a job folder path. Checkpointable:
    at the time limit or on preemption submitit requeues it with the same folder, and the
    job resumes from its latest nnU-Net checkpoint."""

    def __call__(self, folder: str) -> dict:
        from harness.jobs.worker import run_job_folder

        _reset_signals_in_forked_children()
        return run_job_folder(folder)

    def checkpoint(self, folder: str):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, folder)


_FORK_HOOK = False


def _reset_signals_in_forked_children() -> None:
    """submitit ignores SIGTERM ("bypass") and checkpoints on SIGUSR2 in the job process; a
    forked child (nnU-Net's fork-based pools) would inherit both, so ``Pool.terminate`` could
    never stop it (a hang until the time limit) and two processes would race to checkpoint.
    Children get the default SIGTERM and ignore SIGUSR2 (the job process requeues)."""
    global _FORK_HOOK
    if _FORK_HOOK:
        return

    def child() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    os.register_at_fork(after_in_child=child)
    _FORK_HOOK = True


#: Slurm's terminal states that our files may not have seen, and the error class we record.
_SLURM_FAILURES = {
    "TIMEOUT": (TIMEOUT, "Slurm stopped the job at its time limit (requeues used up)"),
    "DEADLINE": (TIMEOUT, "Slurm stopped the job at its deadline"),
    "OUT_OF_MEMORY": (OUT_OF_MEMORY, "Slurm killed the job: out of memory"),
    "CANCELLED": (ERROR, "the Slurm job was cancelled (scancel or an administrator)"),
    "NODE_FAIL": (ERROR, "the Slurm node failed"),
    "BOOT_FAIL": (ERROR, "the Slurm node failed to boot"),
    "PREEMPTED": (ERROR, "the Slurm job was preempted and not requeued"),
}


class SlurmExecutor(Executor):
    name = "slurm"
    outlives_evaluate = True

    def __init__(self, folder: Path, config: SlurmConfig | None = None):
        self.folder = Path(folder)
        self.config = config or SlurmConfig()
        self.poll_s = self.config.poll_s
        self._attached: dict[str, Any] = {}  # job folder -> submitit job left by an earlier evaluate

    def _executor(self):
        import submitit

        return submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=self.config.max_requeues)

    def default_device(self) -> str | None:
        return "cuda" if self.config.gpus_per_node else None

    def reattach(self, job: PlannedJob) -> bool:
        import submitit

        try:
            info = read_json(job.files.submitted_marker)
        except (OSError, ValueError):
            return False
        job_id, folder = info.get("slurm_job_id"), info.get("submitit_folder")
        if not job_id or not folder:
            return False
        sjob: submitit.SlurmJob[Any] = submitit.SlurmJob(folder=folder, job_id=str(job_id))
        if sjob.done():
            return False
        self._attached[str(job.folder)] = sjob
        return True

    def start(self, waiting: deque[PlannedJob], running: int) -> list[tuple[PlannedJob, Any]]:
        """Everything at once: the jobs an earlier evaluate left queued are waited for, the others
        go out as one submitit array per time limit (sbatch --time is per array)."""
        started: list[tuple[PlannedJob, Any]] = []
        batches: dict[int, list[PlannedJob]] = {}
        while waiting:
            job = waiting.popleft()
            if str(job.folder) in self._attached:
                started.append((job, self._attached.pop(str(job.folder))))
            else:
                batches.setdefault(max(1, math.ceil(job.time_limit_s / 60)), []).append(job)
        for minutes, batch in sorted(batches.items()):
            executor = self._executor()
            executor.update_parameters(**self.config.parameters(minutes))
            submitted = executor.map_array(SlurmWorker(), [str(j.folder) for j in batch])
            for job, sjob in zip(batch, submitted):
                write_json_atomic(
                    job.files.submitted_marker,
                    {
                        "executor": "slurm",
                        "slurm_job_id": sjob.job_id,
                        "submitit_folder": str(sjob.paths.folder),
                        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    },
                )
                started.append((job, sjob))
        return started

    def poll(self, job: PlannedJob, handle: Any) -> JobState | None:
        return self._check(job, handle)

    # stop: nothing. Queued and running Slurm jobs outlive an interrupted evaluate; the next one
    # reattaches to them (``reattach``).

    @staticmethod
    def _check(job: PlannedJob, sjob) -> JobState | None:
        """Our files first; Slurm only for a job that ended without writing either."""
        state = job_state(job.files, job.job_id)
        if state.state == DONE:
            return settle(job, ERROR, "")
        if state.state == FAILED and sjob.done():
            return settle(job, ERROR, "")
        if not sjob.done():
            return None
        state = job_state(job.files, job.job_id)  # it may have finished between the two looks
        if state.state in (DONE, FAILED):
            return settle(job, ERROR, "")
        slurm_state = str(sjob.state).upper()
        error_class, message = _SLURM_FAILURES.get(
            slurm_state.split()[0], (ERROR, "the Slurm job ended without a result")
        )
        return settle(
            job, error_class, f"{message} (Slurm job {sjob.job_id}, state {slurm_state})", log=sjob.paths.stdout
        )
