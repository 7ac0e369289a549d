"""The run-folder contract: the one place that names the files of a fine-tuning run.

Every (entry, task, recipe setup, fold) job owns ``<results>/runs/<entry>/<task>/<setup>/fold_<k>/``
(``<setup>``: the recipe the job's choices are named after, harness/recipes.py)::

    job.json      what the job is (entry, track, is_baseline, task, task_type, fold, ...),
                  written when the job starts
    train.log     the training log
    cases.csv     per-case results (segmentation: case,label,dice,nsd,ref_voxels,pred_voxels;
                  classification: case,true_label,pred_label,prob_<class>...)
    metrics.json  aggregates, ``ranking_metrics`` ([{name, higher_is_better}]) and provenance
    DONE          completion marker, written last and atomically: a run without it is unfinished
    FAILED        written instead of DONE when the job failed: {error_class, message, log}

and the job matrix's own files beside them (harness/jobs/state.py says what they hold):

    RUNNING         the live worker (host, pid, start): removed when it ends
    SUBMITTED       the Slurm job the run was queued as
    worker.log      everything the worker printed
    attempts.jsonl  one line per worker start and end

Fine-tuning writes these, the job matrix reads DONE/FAILED, the leaderboard reads job.json,
cases.csv and metrics.json of every run. Nothing else hard-codes a file name.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

BASELINE_PREFIX = "baseline-"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_UMASK = os.umask(0)
os.umask(_UMASK)


def entry_name(name: str) -> str:
    """A file-system safe entry name (submission file stem or baseline name)."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"cannot derive an entry name from {name!r}")
    return cleaned


def baseline_entry(track: str) -> str:
    return f"{BASELINE_PREFIX}{track}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@dataclass(frozen=True)
class RunFolder:
    """All paths of one (entry, task, fold) run."""

    path: Path

    @classmethod
    def of(cls, results: Path, entry: str, task: str, fold: int, setup: str) -> "RunFolder":
        return cls(Path(results) / "runs" / entry / task / setup / f"fold_{int(fold)}")

    @property
    def results_root(self) -> Path:
        """The results folder this run belongs to."""
        return self.path.parents[4]

    @property
    def job_json(self) -> Path:
        return self.path / "job.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def cases_csv(self) -> Path:
        return self.path / "cases.csv"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def done_marker(self) -> Path:
        return self.path / "DONE"

    @property
    def failed_marker(self) -> Path:
        return self.path / "FAILED"

    @property
    def running_marker(self) -> Path:
        return self.path / "RUNNING"

    @property
    def submitted_marker(self) -> Path:
        return self.path / "SUBMITTED"

    @property
    def worker_log(self) -> Path:
        return self.path / "worker.log"

    @property
    def attempts_log(self) -> Path:
        return self.path / "attempts.jsonl"

    @property
    def work_dir(self) -> Path:
        """Scratch space of an unfinished run (nnU-Net output, checkpoints); removed when done."""
        return self.path / "work"

    def is_done(self) -> bool:
        return self.done_marker.is_file()

    def is_failed(self) -> bool:
        return self.failed_marker.is_file() and not self.is_done()

    def mark_done(self, summary: dict | None = None) -> None:
        self.failed_marker.unlink(missing_ok=True)
        write_json_atomic(self.done_marker, summary or {})

    def mark_failed(self, error_class: str, message: str) -> None:
        write_json_atomic(
            self.failed_marker, {"error_class": error_class, "message": message, "log": str(self.log)}
        )


def iter_run_folders(results: Path) -> Iterator[RunFolder]:
    """Every run folder under ``results/runs`` that has a ``job.json``, in sorted order."""
    root = Path(results) / "runs"
    if not root.is_dir():
        return
    for job in sorted(root.glob("*/*/*/fold_*/job.json")):
        yield RunFolder(job.parent)
