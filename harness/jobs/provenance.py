"""The provenance of one evaluate (``ResultsLayout.new_provenance_path``): versions, git revision,
device, seeds, what was asked and (at the end) what came of it, so two results can be told apart
later."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.jobs.planning import MatrixRow
from harness.jobs.state import JobState
from harness.recipes import Recipe
from harness.runs import write_json_atomic


def write_provenance(
    path: Path,
    base: dict,
    asked: Mapping[str, Any],
    recipe: Recipe,
    tasks: dict,
    submissions: Sequence[Mapping[str, Any]],
    rows: Sequence[MatrixRow],
    final: Mapping[str, JobState] | None = None,
    counts: Mapping[str, int] | None = None,
) -> None:
    """Write the provenance: ``base`` (``collect_provenance``), the options ``asked``, the
    ``submissions`` (entry, file, sha256, track, valid) and each row's state before and, once
    ``final`` is given (job folder -> state), after."""
    data = {
        **base,
        "argv": sys.argv,
        **asked,
        "recipe": {"name": recipe.name, "version": recipe.version},
        "tasks": {
            n: {
                "spec_hash": t.spec_hash(),
                "source": str(t.source),
                "seed": t.seed,
                "time_limit_minutes": t.time_limit_minutes,
            }
            for n, t in tasks.items()
        },
        "submissions": [dict(s) for s in submissions],
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
                    final[str(r.job.folder)].state
                    if final is not None and r.job and str(r.job.folder) in final
                    else None
                ),
            }
            for r in rows
        ],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z") if final is not None else None,
        "counts": dict(counts) if counts is not None else None,
    }
    write_json_atomic(path, data)
