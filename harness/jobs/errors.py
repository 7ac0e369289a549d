"""The errors of `harness evaluate`'s own stages (intake of plain files, planning, the executor
registry), so each stage raises them without importing the one that orchestrates."""

from __future__ import annotations


class EvaluateError(ValueError):
    """Bad input to evaluate (missing file, clashing entry names, bad registry, bad option)."""


class DataCheckError(EvaluateError):
    """The data check found problems; the message lists every one."""
