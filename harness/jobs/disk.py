"""Disk checks: a full disk or an unwritable results folder is named before a job starts, and a
disk that fills up during a job is named in its FAILED message.

How much a job needs is a conservative constant per task type (``min_free_bytes`` of its entry in
``harness.task_types``: a segmentation job keeps nnU-Net's checkpoints and predictions in its
scratch folder; a classification job its checkpoints). The environment variable
``HARNESS_MIN_FREE_GB`` (a number of GB, e.g. ``0.5``; ``0`` turns the free-space check off)
overrides it for every job type. Writability is always checked.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from harness.submission.checkpoint import format_bytes as human_bytes
from harness.task_types import GB, TASK_TYPES

MIN_FREE_ENV = "HARNESS_MIN_FREE_GB"
#: errno values that mean "no space left" (a full disk, a used-up quota).
DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


class DiskSpaceError(OSError):
    """A folder is not writable or its file system has too little free space; the message names
    the folder, the free space and what needs it."""

    def __init__(self, message: str, folder: Path, free_bytes: int | None = None, need_bytes: int | None = None):
        super().__init__(message)
        self.folder, self.free_bytes, self.need_bytes = Path(folder), free_bytes, need_bytes

    def __str__(self) -> str:
        return str(self.args[0])


def format_bytes(n: int | float | None) -> str:
    """``12.3 GB`` (decimal, as ``HARNESS_MIN_FREE_GB`` is); below a GB the submission checks'
    human sizes (``60.2 kB``, ``340.0 MB``), so a small run is not "0 MB"; ``unknown`` for None."""

    if n is None:
        return "unknown"
    if abs(n) >= GB:
        return f"{n / GB:.1f} GB"
    return human_bytes(int(n)) if n >= 0 else "-" + human_bytes(int(-n))


def job_need_bytes(task_type: str | None) -> int:
    """Free space a job of ``task_type`` (segmentation / classification; None or unknown: the
    largest) needs before it starts, in bytes: ``HARNESS_MIN_FREE_GB`` when set, else
    the task type's ``min_free_bytes``. A malformed variable is a ValueError naming it."""
    value = os.environ.get(MIN_FREE_ENV, "").strip()
    if value:
        try:
            gb = float(value)
        except ValueError:
            raise ValueError(f"{MIN_FREE_ENV}={value!r}: not a number of GB (e.g. 0.5)") from None
        if not gb >= 0:
            raise ValueError(f"{MIN_FREE_ENV}={value!r}: must be 0 or more GB")
        return int(gb * GB)
    if task_type in TASK_TYPES:
        return TASK_TYPES[task_type].min_free_bytes
    return max(t.min_free_bytes for t in TASK_TYPES.values())


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int | None:
    """Free space for unprivileged users on the file system of ``path`` (or of its nearest
    existing parent), None when it cannot be told."""
    try:
        return shutil.disk_usage(existing_ancestor(path)).free
    except OSError:
        return None


def check_writable(folder: Path, need_bytes: int, what: str) -> None:
    """Raise ``DiskSpaceError`` unless files can be created in ``folder`` (or, if it does not
    exist yet, in the parent it would be created in) and its file system has at least
    ``need_bytes`` free. ``what`` says who needs it (e.g. "the job primus / T / fold 0"); the
    message names the folder, the free space and ``what``. Creates and removes one empty file."""
    folder = Path(os.path.abspath(folder))
    base = existing_ancestor(folder)
    where = str(folder) if base == folder else f"{folder} (to be created in {base})"
    if not base.is_dir():
        raise DiskSpaceError(
            f"{folder}: cannot be created: {base} is a file, not a folder ({what} writes there)", folder
        )
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".harness-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        free = free_bytes(base)
        if e.errno in DISK_FULL_ERRNOS:
            reason = f"disk full ({format_bytes(free)} free)"
        elif e.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        elif e.errno == errno.EROFS:
            reason = "read-only file system"
        else:
            reason = e.strerror or str(e)
        raise DiskSpaceError(
            f"{where}: not writable: {reason}; {what} writes there", folder, free, need_bytes
        ) from None
    free = free_bytes(base)
    if free is not None and free < need_bytes:
        raise DiskSpaceError(
            f"{where}: only {format_bytes(free)} free on its file system, {what} needs at least "
            f"{format_bytes(need_bytes)} (free some space, or set {MIN_FREE_ENV} to change the threshold)",
            folder,
            free,
            need_bytes,
        )


def disk_full_error(exc: BaseException) -> OSError | None:
    """The "no space left" OSError behind ``exc`` (itself, or its cause or context), None if
    there is none."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_FULL_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


#: Below this much free space a write error without an errno ("file write failed") counts as disk full.
NEARLY_FULL_BYTES = 100_000_000


def looks_like_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` is a failed write on a full disk: an ENOSPC/EDQUOT OSError in its chain,
    its text ("No space left on device"), or a library error that hides the errno (torch.save:
    "file write failed") while ``folder``'s file system is nearly full."""
    if disk_full_error(exc) is not None:
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if "file write failed" in text:
        free = free_bytes(folder)
        return free is not None and free < NEARLY_FULL_BYTES
    return False


def disk_full_message(exc: BaseException, folder: Path) -> str:
    """``disk full: <file being written, or folder>, <free> free`` for a failure of
    ``looks_like_disk_full``; ``folder`` stands in when the file is not known."""
    err = disk_full_error(exc)
    path = Path(err.filename) if err is not None and err.filename else None
    if path is not None and not path.is_absolute():
        path = Path(os.path.abspath(path))
    where = path or Path(folder)
    return f"disk full: {where}, {format_bytes(free_bytes(where))} free ({type(exc).__name__}: {exc})"
