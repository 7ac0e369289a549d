"""``harness status``: what the results folder says about every job, without running anything.

Every run folder (one with a job.json) is a job; a submission that failed intake counts one
``rejected`` job per (task, fold) it would have had. A done or failed job whose task file or
data has changed since it ran (``harness.tasks.preflight.CurrentTasks``) is reported as pending,
naming the changed files: the next evaluate reruns it. A done job
whose result files do not parse is ``corrupt``, listed with the file, the problem and the
`harness evaluate` command that reruns it; a failed job with its message, log and the command
with ``--retry-failed``. A running job is listed with its elapsed time, the
last ``epoch N/M`` line of its train.log and an ETA from the epoch lines' timestamps.
"""

from __future__ import annotations

import re
import shlex
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from harness.jobs.intake import PhaseRecord, read_intake_records
from harness.jobs.state import (
    CORRUPT,
    DONE,
    FAILED,
    PENDING,
    REJECTED,
    RUNNING,
    STATES,
    JobFiles,
    JobState,
    job_state,
    read_marker,
)
from harness.recipes import DEFAULT_RECIPE
from harness.runs import JobSpec, ResultsFileError, ResultsLayout
from harness.tasks.preflight import CurrentTasks


@dataclass(frozen=True)
class JobStatus:
    entry: str
    task: str
    fold: int | None
    state: str
    detail: str = ""
    error_class: str | None = None
    message: str | None = None
    log: str | None = None
    folder: str | None = None
    setup: str | None = None
    file: str | None = None  # corrupt: the result file that does not parse
    command: str | None = None  # corrupt, failed: what reruns it
    progress: dict | None = None  # running: see ``training_progress``
    repeat: int = 0  # a seed repeat's number (harness/leaderboard/noise.py); 0 the ranked run


@dataclass
class StatusReport:
    results: Path
    jobs: list[JobStatus]
    #: A challenge phase's uploads whose weights look derived from another's (intake's
    #: ``similar`` pairs): ``{entry, file, other: {...}, share, median, ...}``.
    similar: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(j.state for j in self.jobs)
        return {s: c.get(s, 0) for s in STATES}

    @property
    def failed(self) -> list[JobStatus]:
        return [j for j in self.jobs if j.state == FAILED]

    @property
    def corrupt(self) -> list[JobStatus]:
        return [j for j in self.jobs if j.state == CORRUPT]

    @property
    def running(self) -> list[JobStatus]:
        return [j for j in self.jobs if j.state == RUNNING]

    def to_dict(self) -> dict:
        return {
            "results": str(self.results),
            "total": len(self.jobs),
            "counts": self.counts,
            "failed": [
                {
                    "entry": j.entry,
                    "task": j.task,
                    "fold": j.fold,
                    "error_class": j.error_class,
                    "message": j.message,
                    "log": j.log,
                    "command": j.command,
                    "folder": j.folder,
                }
                for j in self.failed
            ],
            "corrupt": [
                {
                    "entry": j.entry,
                    "task": j.task,
                    "setup": j.setup,
                    "fold": j.fold,
                    "file": j.file,
                    "problem": j.message,
                    "command": j.command,
                    "folder": j.folder,
                }
                for j in self.corrupt
            ],
            "running": [
                {
                    "entry": j.entry,
                    "task": j.task,
                    "setup": j.setup,
                    "fold": j.fold,
                    "detail": j.detail,
                    "folder": j.folder,
                    **(j.progress or {}),
                }
                for j in self.running
            ],
            "jobs": [asdict(j) for j in self.jobs],
            "similar": list(self.similar),
        }

    def format_text(self) -> str:
        counts = self.counts
        lines = [f"results: {self.results}  ({len(self.jobs)} jobs)"]
        lines += [f"  {state:<9} {counts[state]}" for state in STATES]
        if self.running:
            lines.append("running jobs:")
            for j in self.running:
                lines.append(f"  {_label(j)}: {j.detail}; {format_progress(j.progress or {})}")
        if self.failed:
            lines.append("failed jobs:")
            for j in self.failed:
                first, *more = (j.message or "").splitlines() or [""]
                lines.append(f"  {_label(j)}: {j.error_class}: {first}")
                lines += [f"      {m}" for m in more[:MESSAGE_LINES]]
                lines.append(f"      log: {j.log}")
                lines.append(f"      rerun: {j.command}")
        if self.corrupt:
            lines.append("corrupt results (done, but a result file does not parse; evaluate reruns them):")
            for j in self.corrupt:
                lines.append(f"  {_label(j)}: {j.file}: {j.message}")
                lines.append(f"      rerun: {j.command}")
        rejected = sorted({j.entry for j in self.jobs if j.state == REJECTED})
        for entry in rejected:
            lines.append(f"rejected at intake: {entry} (report: {ResultsLayout(self.results).intake_report(entry)})")
        if self.similar:
            lines.append("similar weights (derived from another upload or a reference? not rejected: judge them):")
            for pair in self.similar:
                other = pair["other"]
                what = f"reference {other['file']}" if "reference" in other else f"{other['entry']} ({other['file']})"
                lines.append(
                    f"  {pair['entry']} ({pair['file']}) ~ {what}: {pair['share']:.0%} of {pair['compared']} "
                    f"stem/encoder tensors alike, median r {pair['median']}"
                )
        return "\n".join(lines)


def collect_status(results: Path, now: float | None = None) -> StatusReport:
    """The state of every job recorded under ``results`` (``now``: the time elapsed times and
    ETAs are counted to, default the current time)."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: results folder does not exist")
    now = time.time() if now is None else now
    layout = ResultsLayout(results)
    jobs: list[JobStatus] = []
    current = CurrentTasks(layout.data_check_cache)
    by_track: dict[str, str] | None = None
    for run in layout.run_folders():
        files = JobFiles(run)
        entry, task, setup = run.entry, run.task, run.setup
        try:
            spec = JobSpec.read(run, require=())  # what it lacks is told from its path
        except ResultsFileError:
            jobs.append(JobStatus(entry, task, None, PENDING, "job.json unreadable", folder=str(run.path), setup=setup))
            continue
        state = job_state(files, spec.job_id, check_results=True)
        if state.state in (DONE, CORRUPT, FAILED):
            stale = current.staleness(spec)
            if stale:  # the next evaluate reruns it
                state = JobState(PENDING, f"stale: {stale}")
        command = progress = None
        if state.state in (CORRUPT, FAILED):
            if by_track is None:
                by_track = _submissions_by_track(results)
            command = rerun_command(spec, results, by_track, retry_failed=state.state == FAILED)
        elif state.state == RUNNING:
            progress = running_progress(files, now)
        jobs.append(
            JobStatus(
                spec.entry or entry,
                spec.task or task,
                spec.fold,
                state.state,
                state.detail,
                state.error_class,
                state.message,
                state.log,
                str(run.path),
                setup=spec.recipe or setup,
                file=state.file,
                command=command,
                progress=progress,
                repeat=spec.repeat or 0,
            )
        )
    for record_path, record in read_intake_records(layout):
        if not record.valid:
            for job in record.jobs or [{"task": "*", "fold": None}]:
                jobs.append(
                    JobStatus(
                        record.entry,
                        job["task"],
                        job["fold"],
                        REJECTED,
                        "; ".join(record.errors)[:300],
                        log=str(record_path),
                    )
                )
    return StatusReport(results, jobs, similar_pairs(layout))


def similar_pairs(layout: ResultsLayout) -> list[dict]:
    """The ``similar`` pairs intake recorded in a phase's results folder (none elsewhere)."""
    path = layout.phase_record
    if not path.is_file():
        return []
    try:
        record = PhaseRecord.read(path)
    except ResultsFileError:
        return []  # intake and evaluate name an unreadable record; status shows the jobs
    out = []
    for upload in record.uploads:
        for pair in upload.similar or []:
            figures = {k: pair.get(k) for k in ("compared", "share", "median", "min")}
            other = {k: v for k, v in pair.items() if k not in figures}
            out.append({"entry": upload.entry, "team": upload.team, "file": upload.file, "other": other, **figures})
    return out


def _label(j: JobStatus) -> str:
    repeat = f" repeat {j.repeat}" if j.repeat else ""
    return " / ".join(str(p) for p in (j.entry, j.task, j.setup, f"fold {j.fold}{repeat}") if p is not None)


# ------------------------------------------------------------------------------------ corrupt
def _submissions_by_track(results: Path) -> dict[str, str]:
    """track -> the file of a submission of that track that passed intake (the first by entry)."""
    out: dict[str, str] = {}
    for _, record in read_intake_records(ResultsLayout(results)):
        if record.valid and record.track:
            out.setdefault(record.track, record.file)
    return out


def rerun_command(spec: JobSpec, results: Path, by_track: dict[str, str], retry_failed: bool = False) -> str:
    """The `harness evaluate` command that reruns the job of ``spec`` (its job.json): its
    submission (a baseline: any submission of its track), the registry holding its task file and
    ``results``; a failed job needs ``--retry-failed`` (evaluate skips it otherwise), a corrupt
    one does not."""

    submission = spec.submission or by_track.get(spec.track or "")
    task_file = spec.task_file
    args = [
        "harness",
        "evaluate",
        shlex.quote(str(submission)) if submission else f"<a submission of track {spec.track}>",
        "--tasks",
        shlex.quote(str(Path(task_file).parent)) if task_file else "<its task registry>",
        "--results",
        shlex.quote(str(results)),
    ]
    if spec.recipe and spec.recipe != DEFAULT_RECIPE:
        args += ["--recipe", shlex.quote(str(spec.recipe))]
    if retry_failed:
        args.append("--retry-failed")
    return " ".join(args)


# ------------------------------------------------------------------------------------ running
#: ``<timestamp>: epoch N/M ...``: the harness's RunLog ("2026-12-02 06:30:01") and nnU-Net's
#: print_to_log_file ("2026-12-02 06:30:01.123456"), with the epoch's seconds "(2.1s)" if given.
#: Both trainers write the line with ``harness.finetune.training_step.format_epoch_line``; older
#: logs (any text after ``epoch N/M``, the seconds optional) parse too.
EPOCH_LINE = re.compile(
    r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?): epoch (\d+)/(\d+)\b"
    r"(?:.*\((\d+(?:\.\d+)?)\s*s\))?"
)
LOG_TAIL_BYTES = 64 * 1024
MESSAGE_LINES = 20


@dataclass(frozen=True)
class EpochLine:
    time: float  # seconds since the epoch (the log's local time)
    epoch: int  # 1-based
    epochs: int
    seconds: float | None = None  # the epoch's own duration, when the line gives it


def parse_epoch_lines(text: str) -> list[EpochLine]:
    """Every ``epoch N/M`` line of a train.log text, in order (lines of another form are skipped)."""
    out = []
    for line in text.splitlines():
        m = EPOCH_LINE.match(line)
        if m is None:
            continue
        try:
            t = datetime.fromisoformat(m.group(1)).timestamp()
        except ValueError:
            continue
        out.append(EpochLine(t, int(m.group(2)), int(m.group(3)), float(m.group(4)) if m.group(4) else None))
    return out


def read_tail(path: Path, nbytes: int = LOG_TAIL_BYTES) -> str:
    """The last ``nbytes`` of a text file (from its first whole line), "" when unreadable."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - nbytes))
            data = f.read()
    except OSError:
        return ""
    if size > nbytes:
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def training_progress(lines: list[EpochLine], started: float | None, now: float) -> dict:
    """{epoch, epochs, epoch_seconds, eta_s} from a log's epoch lines (None where unknown).

    The mean epoch time comes from the timestamps of consecutive epoch lines written since
    ``started`` (this attempt: a resumed job's earlier lines are from another run of it), else
    from the last line's own duration; the ETA is that times the epochs left, less the time since
    the last epoch line. Before the first epoch line everything is None ("unknown")."""
    if not lines:
        return {"epoch": None, "epochs": None, "epoch_seconds": None, "eta_s": None}
    last = lines[-1]
    mine = [line for line in lines if started is None or line.time >= started - 1]
    gaps = [b.time - a.time for a, b in zip(mine, mine[1:]) if b.epoch == a.epoch + 1 and b.time >= a.time]
    mean = sum(gaps) / len(gaps) if gaps else last.seconds
    eta = None
    if mean is not None:
        since_last = now - (last.time if started is None else max(last.time, started))
        eta = max(0.0, (last.epochs - last.epoch) * mean - max(0.0, since_last))
    return {
        "epoch": last.epoch,
        "epochs": last.epochs,
        "epoch_seconds": None if mean is None else round(mean, 1),
        "eta_s": None if eta is None else round(eta),
    }


def running_progress(files: JobFiles, now: float) -> dict:
    """What `harness status` shows of a running (or queued) job: since when, the elapsed time, the
    last epoch line of its train.log and an ETA (``training_progress``)."""
    running = read_marker(files.running_marker)
    submitted = read_marker(files.submitted_marker)
    queued = running is None and submitted is not None
    since = _parse_time((running or {}).get("started") or (submitted or {}).get("submitted"))
    out = {
        "queued": queued,
        "started": (running or {}).get("started") or (submitted or {}).get("submitted"),
        "elapsed_s": None if since is None else round(max(0.0, now - since)),
        "log": str(files.run.log),
    }
    if queued:
        return {**out, "epoch": None, "epochs": None, "epoch_seconds": None, "eta_s": None}
    return {**out, **training_progress(parse_epoch_lines(read_tail(files.run.log)), since, now)}


def _parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of a marker's "%Y-%m-%dT%H:%M:%S%z" time, None if absent or bad."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` (h:mm:ss), ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_progress(p: dict) -> str:
    """``elapsed 0:05:12, epoch 3/10, ETA 0:12:40`` (queued: ``queued for 0:01:00``)."""
    if p.get("queued"):
        return f"queued for {format_duration(p.get('elapsed_s'))}"
    epoch = f"epoch {p['epoch']}/{p['epochs']}" if p.get("epoch") is not None else "no epoch finished yet"
    return f"elapsed {format_duration(p.get('elapsed_s'))}, {epoch}, ETA {format_duration(p.get('eta_s'))}"
