"""Who a process is (host, pid, start time, boot) and whether it still runs: what a lock file or a
running marker records of its writer, so that a reader can tell a live holder from a dead one
(even one killed by kill -9, whose pid may be reused)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def this_process() -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "proc_start": _proc_start(pid),
        "boot_id": _boot_id(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def process_alive(info: dict) -> bool | None:
    """Whether the process described by ``this_process()`` output still runs; None when it
    cannot be told from here (another host). A reused pid is caught by its start time."""
    if info.get("host") != socket.gethostname():
        return None
    if info.get("boot_id") and _boot_id() and info["boot_id"] != _boot_id():
        return False
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    start = _proc_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return info.get("proc_start") is None
    return info.get("proc_start") in (None, start)


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # a zombie has finished
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
