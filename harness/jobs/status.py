"""``harness status``: what the results folder says about every job, without running anything.

Every run folder (one with a job.json) is a job; a submission that failed intake counts one
``rejected`` job per (task, fold) it would have had. A done job whose task file has changed
since (its spec hash differs) is reported as pending: the next evaluate reruns it.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.jobs.state import DONE, FAILED, PENDING, REJECTED, STATES, JobFiles, JobState, job_state
from harness.runs import iter_run_folders, read_json


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


@dataclass
class StatusReport:
    results: Path
    jobs: list[JobStatus]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(j.state for j in self.jobs)
        return {s: c.get(s, 0) for s in STATES}

    @property
    def failed(self) -> list[JobStatus]:
        return [j for j in self.jobs if j.state == FAILED]

    def to_dict(self) -> dict:
        return {
            "results": str(self.results),
            "total": len(self.jobs),
            "counts": self.counts,
            "failed": [{"entry": j.entry, "task": j.task, "fold": j.fold, "error_class": j.error_class,
                        "message": j.message, "log": j.log, "folder": j.folder} for j in self.failed],
            "jobs": [asdict(j) for j in self.jobs],
        }

    def format_text(self) -> str:
        counts = self.counts
        lines = [f"results: {self.results}  ({len(self.jobs)} jobs)"]
        lines += [f"  {state:<9} {counts[state]}" for state in STATES]
        if self.failed:
            lines.append("failed jobs:")
            for j in self.failed:
                lines.append(f"  {j.entry} / {j.task} / fold {j.fold}: {j.error_class}: {j.message}")
                lines.append(f"      log: {j.log}")
        rejected = sorted({j.entry for j in self.jobs if j.state == REJECTED})
        for entry in rejected:
            lines.append(f"rejected at intake: {entry} (report: {self.results / 'submissions' / entry / 'intake.txt'})")
        return "\n".join(lines)


def collect_status(results: Path) -> StatusReport:
    """The state of every job recorded under ``results``."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: results folder does not exist")
    jobs: list[JobStatus] = []
    hashes: dict[str, str | None] = {}
    for run in iter_run_folders(results):
        files = JobFiles(run)
        try:
            spec = read_json(run.job_json)
        except (OSError, ValueError):
            jobs.append(JobStatus(run.path.parts[-3], run.path.parts[-2], None, PENDING, "job.json unreadable",
                                  folder=str(run.path)))
            continue
        state = job_state(files, spec.get("job_id"))
        if state.state == DONE and _spec_changed(spec, hashes):
            state = JobState(PENDING, "stale: its task file changed since it was done")
        jobs.append(JobStatus(spec.get("entry", run.path.parts[-3]), spec.get("task", run.path.parts[-2]),
                              spec.get("fold"), state.state, state.detail, state.error_class, state.message,
                              state.log, str(run.path)))
    for record_path in sorted((results / "submissions").glob("*/intake.json")):
        try:
            record = read_json(record_path)
        except (OSError, ValueError):
            continue
        if record.get("valid") is False:
            for job in record.get("jobs") or [{"task": "*", "fold": None}]:
                jobs.append(JobStatus(record.get("entry", record_path.parent.name), job["task"], job["fold"],
                                      REJECTED, "; ".join(record.get("report", {}).get("errors", []))[:300],
                                      log=str(record_path)))
    return StatusReport(results, jobs)


def _spec_changed(spec: dict, hashes: dict[str, str | None]) -> bool:
    """Whether the job's task file now has another spec hash (a missing or broken file counts as
    unchanged here: evaluate reports that one). ``hashes`` caches one load per task file."""
    from harness.tasks import TaskSpecError, load_task_file

    source = spec.get("task_file")
    if not source:
        return False
    if source not in hashes:
        try:
            hashes[source] = load_task_file(Path(source)).spec_hash()
        except (TaskSpecError, OSError):
            hashes[source] = None
    return hashes[source] is not None and hashes[source] != spec.get("task_spec_hash")


def status_json(results: Path) -> str:
    return json.dumps(collect_status(results).to_dict(), indent=2, sort_keys=True)
