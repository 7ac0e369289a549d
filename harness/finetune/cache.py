"""Preprocessed data shared by every job of a task (all submissions and baselines): built once,
under an exclusive lock, and marked complete last, so concurrent jobs wait instead of building
twice and an interrupted build is never mistaken for a finished one."""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.runs import write_json_atomic

COMPLETE_MARKER = "COMPLETE"


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_once(
    folder: Path, build: Callable[[Path], dict | None], what: str, log: Callable[[str], None] = lambda msg: None
) -> None:
    """Make ``folder`` complete. Reuse it when its marker exists; otherwise take the lock beside it,
    re-check (another job may have finished meanwhile), clear an interrupted build's leftovers, run
    ``build(folder)`` and write the marker last (with what ``build`` returned and its duration)."""
    marker = folder / COMPLETE_MARKER
    if marker.is_file():
        log(f"reusing preprocessed {what} from {folder}")
        return
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        if marker.is_file():
            log(f"reusing preprocessed {what} from {folder} (written by another job)")
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log(f"preprocessing {what} into {folder}")
        t0 = time.time()
        info = build(folder) or {}
        seconds = round(time.time() - t0, 1)
        write_json_atomic(marker, {**info, "seconds": seconds})
        log(f"preprocessed {what} in {seconds}s")
