"""Submission intake: load an uploaded checkpoint safely and check it against its track.

Public API (imported lazily, so that ``harness --help`` does not pay for importing torch):

* ``load_submission(path, max_size=DEFAULT_MAX_SIZE) -> Submission``: the cheap structural
  checks a fine-tuning job needs; raises ``SubmissionError``.
* ``validate_submission(path, track=None, max_size=DEFAULT_MAX_SIZE, canary=True)
  -> ValidationReport``: every check, for ``harness validate``; never raises for a bad file.
* ``unrunnable_problem(report, track, recipe, task_types) -> str | None``: why intake must
  refuse a valid checkpoint for these tasks (it lacks what their jobs need), or None.
* ``write_example_submission(out, track, seed=0, pretrain_patch=(160, 160, 160),
  dtype=torch.float32) -> Path``: a correctly formatted checkpoint with random weights.
"""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_MAX_SIZE = 4 * 1024**3
"""Default upload limit in bytes (4 GiB): a Primus-M file that still carries its AdamW state is
about 2.1 GB."""

_EXPORTS = {
    "SubmissionError": "harness.submission.checkpoint",
    "UnreadableSubmissionError": "harness.submission.checkpoint",
    "load_checkpoint_safely": "harness.submission.checkpoint",
    "Check": "harness.submission.validate",
    "Submission": "harness.submission.validate",
    "ValidationReport": "harness.submission.validate",
    "load_submission": "harness.submission.validate",
    "validate_submission": "harness.submission.validate",
    "unrunnable_problem": "harness.submission.validate",
    "example_adaptation_plan": "harness.submission.example",
    "write_example_submission": "harness.submission.example",
}

__all__ = ["DEFAULT_MAX_SIZE", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
