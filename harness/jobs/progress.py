"""What evaluate shows while it works: the matrix table (dry run and start) and the progress of
the jobs it runs (a bar on a terminal, greppable lines in a log)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from harness.jobs.matrix import PlannedJob
from harness.jobs.planning import MatrixRow
from harness.jobs.state import FAILED, JobState


def _fold_cell(row: MatrixRow) -> str:
    """The fold, and a seed repeat's number (``0 repeat 2``)."""
    repeat = row.job.job.repeat if row.job is not None else 0
    return f"{row.fold} repeat {repeat}" if repeat else str(row.fold)


def format_matrix(rows: Sequence[MatrixRow]) -> str:
    header = ("entry", "task", "fold", "state", "action")
    table = [header] + [
        (r.entry, r.task, _fold_cell(r), r.state, r.action + (f"  [{r.detail}]" if r.detail else "")) for r in rows
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
