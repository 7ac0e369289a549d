"""A challenge at full size (issue 23): `harness status`, the leaderboard and feedback + publish on
a results folder bench/simulate_challenge.py writes (default: 100 teams x 2 tracks x 2 phases x
7 tasks x 5 folds, about 14,000 run folders), each beside a reference measured in the same run.

- ``harness status`` of each phase against listing and stat-ing the phase's run folders (os.scandir
  of every run folder, os.stat of every file in it: the least any status must do); goal at most
  3x that and under 10 s.
- ``harness leaderboard`` of each phase with 1000 bootstraps (and the significance tests it
  computes from them); goal under 30 s. Reference: one ``pandas.read_csv`` of every cases.csv
  of the phase (reading what it ranks).
- ``harness feedback`` (every team) plus ``harness publish`` of each phase; goal under 30 s.
  Reference: the same reads as the leaderboard's.

Every command runs as ``python -m harness`` (interpreter start and imports included, as an
organizer runs it), stopped after ``--limit`` seconds (a figure then reads "over LIMIT"), on a
folder just written to /dev/shm where there is one (the harness's atomic writers fsync every
file; on tmpfs that costs nothing, and the simulation takes seconds instead of minutes): these are
warm-cache figures, not those of a cold disk. Dry-run planning is not timed: it runs the data
check, which needs real images of every task (the simulated tasks have none).

Run from the repository root: ``.venv/bin/python bench/bench_scale.py`` (``make bench-scale``)
-> ``results/bench/scale.json``. Where a goal is missed, ``python -m cProfile -s cumtime -m harness
...`` on the kept folder (``--folder``) says where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simulate_challenge import CHALLENGE, ChallengeSize, Simulated, simulate  # noqa: E402

from harness.runs import ResultsLayout  # noqa: E402

OUT = Path("results/bench/scale.json")
GOALS = {"status_ratio": 3.0, "status_seconds": 10.0, "leaderboard_seconds": 30.0, "feedback_publish_seconds": 30.0}


def harness(*args: object, limit: float) -> tuple[int | None, str]:
    """``python -m harness ARGS`` (an organizer's command, interpreter start included): (exit
    status, stdout); (None, "") when it ran past ``limit`` seconds and was stopped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "harness", *map(str, args)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, done.stdout


def timed(step: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, result) of ``step(*args, **kwargs)``."""
    start = time.perf_counter()
    result = step(*args, **kwargs)
    return time.perf_counter() - start, result


def list_and_stat(phase_root: Path) -> int:
    """The reference of `harness status`: every run folder listed, every file in it stat-ed."""
    count = 0
    for entry in os.scandir(ResultsLayout(phase_root).runs_dir):
        for task in os.scandir(entry.path):
            for setup in os.scandir(task.path):
                for fold in os.scandir(setup.path):
                    for item in os.scandir(fold.path):
                        item.stat()
                        count += 1
    return count


def read_every_cases_csv(phase_root: Path) -> int:
    """The reference of the leaderboard and feedback: one pandas read of each cases.csv."""
    import pandas as pd

    rows = 0
    for run in ResultsLayout(phase_root).run_folders():
        if run.cases_csv.is_file():
            with contextlib.suppress(ValueError):  # the simulated corrupt runs
                rows += len(pd.read_csv(run.cases_csv))
    return rows


def folder_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.stat(os.path.join(folder, name)).st_size
    return files, size


def _seconds(seconds: float, code: int | None, limit: float) -> float | str:
    return round(seconds, 3) if code is not None else f"over {limit:g}"


def bench(sim: Simulated, limit: float) -> dict:
    layout = ResultsLayout(sim.results)
    phases: dict[str, dict] = {}
    challenge = ("--challenge", sim.challenge, "--results", sim.results)
    for phase in sim.phases:
        root = layout.phase(CHALLENGE, phase).root
        ref_status, files = timed(list_and_stat, root)
        status_s, (code, text) = timed(harness, "status", "--results", root, limit=limit)
        ref_read, rows = timed(read_every_cases_csv, root)
        board_s, (board_code, _) = timed(
            harness, "leaderboard", *challenge, "--phase", phase, "--bootstrap", 1000, limit=limit
        )
        feedback_s, (feedback_code, said) = timed(harness, "feedback", *challenge, "--phase", phase, limit=limit)
        publish_s, (publish_code, _) = timed(harness, "publish", *challenge, "--phase", phase, "--publish", limit=limit)
        both = None if feedback_code is None or publish_code is None else 0
        phases[phase] = {
            "files_stated": files,
            "reference_list_and_stat_seconds": round(ref_status, 3),
            "status_seconds": _seconds(status_s, code, limit),
            "status_exit": code,
            "status_lines": len(text.splitlines()),
            "status_ratio": round(status_s / ref_status, 1),
            "reference_read_cases_seconds": round(ref_read, 3),
            "cases_rows_read": rows,
            "leaderboard_seconds": _seconds(board_s, board_code, limit),
            "leaderboard_exit": board_code,
            "leaderboard_ratio_to_read": round(board_s / ref_read, 1),
            "feedback_seconds": _seconds(feedback_s, feedback_code, limit),
            "feedback_exit": feedback_code,
            "feedback_said": said.strip().splitlines()[-1] if said.strip() else "",
            "publish_seconds": _seconds(publish_s, publish_code, limit),
            "publish_exit": publish_code,
            "feedback_publish_seconds": _seconds(feedback_s + publish_s, both, limit),
            "feedback_publish_ratio_to_read": round((feedback_s + publish_s) / ref_read, 1),
        }
    met = {
        "status": all(
            isinstance(p["status_seconds"], float)
            and p["status_seconds"] < GOALS["status_seconds"]
            and p["status_ratio"] <= GOALS["status_ratio"]
            for p in phases.values()
        ),
        "leaderboard": all(
            isinstance(p["leaderboard_seconds"], float) and p["leaderboard_seconds"] < GOALS["leaderboard_seconds"]
            for p in phases.values()
        ),
        "feedback_publish": all(
            isinstance(p["feedback_publish_seconds"], float)
            and p["feedback_publish_seconds"] < GOALS["feedback_publish_seconds"]
            for p in phases.values()
        ),
    }
    return {"phases": phases, "goals": GOALS, "goals_met": met, "limit_seconds_per_command": limit}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    d = ChallengeSize()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teams", type=int, default=d.teams)
    p.add_argument("--phases", type=int, default=d.phases)
    p.add_argument("--segmentation-tasks", type=int, default=d.segmentation_tasks)
    p.add_argument("--classification-tasks", type=int, default=d.classification_tasks)
    p.add_argument("--cases", type=int, default=d.cases)
    p.add_argument("--folds", type=int, default=d.folds)
    p.add_argument("--folder", type=Path, default=None, help="simulate here and keep it (default: a temp folder)")
    p.add_argument("--limit", type=float, default=60, help="stop a command after this many seconds (default 60)")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    size = ChallengeSize(
        teams=args.teams,
        phases=args.phases,
        segmentation_tasks=args.segmentation_tasks,
        classification_tasks=args.classification_tasks,
        cases=args.cases,
        folds=args.folds,
    )
    shm = Path("/dev/shm")
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-scale-", dir=shm if shm.is_dir() else None))
    try:
        sim = simulate(folder, size)
        files, size_bytes = folder_size(sim.results)
        result = {
            "benchmark": "a challenge at full size (simulated, no training)",
            "size": {
                "teams": size.teams,
                "tracks": list(size.tracks),
                "phases": size.phases,
                "segmentation_tasks": size.segmentation_tasks,
                "classification_tasks": size.classification_tasks,
                "cases_per_task": size.cases,
                "labels_per_segmentation_task": size.labels,
                "folds": size.folds,
                "run_folders": len(sim.runs),
                "runs_by_state": {s: sim.count(s) for s in ("done", "failed", "stale", "corrupt", "pending")},
                "results_files": files,
                "results_megabytes": round(size_bytes / 1e6, 1),
            },
            "simulate_seconds": round(sim.seconds, 1),
            **bench(sim, args.limit),
            "cache": "warm: the folder was just written",
            "folder": str(folder),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
            },
        }
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
