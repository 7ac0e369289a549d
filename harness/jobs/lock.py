"""One ``harness evaluate`` per results folder: an fcntl lock on ``<results>/.evaluate.lock``.

The kernel drops the lock when its holder dies (even by kill -9), so a stale lock file never
blocks a rerun. The holder writes who it is into the file, so a second run can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from harness.jobs.state import process_alive, this_process

LOCK_NAME = ".evaluate.lock"


class EvaluateLockedError(RuntimeError):
    """Another evaluate holds the results folder; the message names it."""


class ResultsLock:
    """``with ResultsLock(results): ...`` holds the folder or raises ``EvaluateLockedError`` at once."""

    def __init__(self, results: Path):
        self.path = Path(results) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self.path)
            os.close(fd)
            raise EvaluateLockedError(
                f"{self.path.parent}: another `harness evaluate` is running on this results folder "
                f"({holder}); wait for it to finish or use another --results folder"
            ) from None
        info = {**this_process(), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def live_holder(results: Path) -> dict | None:
    """The evaluate holding ``results`` as it wrote itself into the lock file (pid, host, started,
    argv), read without taking the lock (a dry run must not block a starting evaluate); None when
    none does: the file is empty once released, and a killed holder's process is gone."""
    try:
        info = json.loads((Path(results) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info or process_alive(info) is False:
        return None
    return info


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return f"lock file {path}"
    cmd = " ".join(info.get("argv") or [])
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {cmd}; lock file {path}"
