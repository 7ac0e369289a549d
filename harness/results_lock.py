"""One writer per results folder: an fcntl lock on ``<folder>/.evaluate.lock``, held by `harness
evaluate` and `harness rescore` on a results folder and by `harness intake` on a challenge's folder.

The kernel drops the lock when its holder dies (even by kill -9), so a stale lock file never
blocks a rerun. The holder writes who it is (its command, pid, host, argv) into the file, so a
second command can name it. The file keeps its first name (``.evaluate.lock``) so that a folder
an older harness holds stays locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from harness.processes import process_alive, this_process

LOCK_NAME = ".evaluate.lock"


class ResultsLockedError(RuntimeError):
    """Another command holds the folder; the message names it (its command, pid, host)."""


class ResultsLock:
    """``with ResultsLock(folder, "harness evaluate"): ...`` holds the folder or raises
    ``ResultsLockedError`` at once; ``command`` is what a second command is told holds it."""

    def __init__(self, folder: Path, command: str = "harness evaluate"):
        self.path = Path(folder) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            command, holder = _describe(self.path)
            os.close(fd)
            raise ResultsLockedError(
                f"{self.path.parent}: another {command} is running on this results folder "
                f"({holder}); wait for it to finish or use another --results folder"
            ) from None
        info = {**this_process(), "command": self.command, "argv": sys.argv}
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
    """The command holding ``results`` as it wrote itself into the lock file (command, pid, host,
    started, argv), read without taking the lock (a dry run must not block a starting evaluate); None when
    none does: the file is empty once released, and a killed holder's process is gone."""
    try:
        info = json.loads((Path(results) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info or process_alive(info) is False:
        return None
    return info


def _describe(path: Path) -> tuple[str, str]:
    """(the holder's command in backticks, who it is) as the holder wrote them; a holder that wrote no command
    (an older harness's evaluate) was an evaluate."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info:
        return "harness command", f"lock file {path}"
    command = info.get("command") if isinstance(info.get("command"), str) else "harness evaluate"
    command = f"`{command}`"
    cmd = " ".join(str(a) for a in info.get("argv") or [])
    who = f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    return command, f"{who}: {cmd}; lock file {path}"
