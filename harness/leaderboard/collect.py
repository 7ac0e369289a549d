"""Collecting a leaderboard's input: the readers and the data they produce, under one name.

A thin re-export for callers of the former single module; the code lives by concern:

* ``harness.leaderboard.model``      - the data (``TrackData``, ``PerCaseTask``, ``PooledTask``,
  ``JobProblem``, ``FLAG_*``) and how each task kind scores itself;
* ``harness.leaderboard.read_runs``  - run folders -> tracks (``collect_runs``);
* ``harness.leaderboard.read_csv``   - a long CSV -> tracks (``collect_csv``, ``collect_long``);
* ``harness.leaderboard.private``    - the private per-case table (``private_case_table``);
* ``harness.metrics.registry``       - metric names, directions, ranges, pooled functions.
"""

from harness.leaderboard.model import (
    FLAG_FAILED_JOB,
    FLAG_MISSING_CASE,
    FLAG_MISSING_JOB,
    FLAG_NOT_APPLICABLE,
    FLAG_OK,
    FLAG_UNFINISHED_JOB,
    MISSING_FLAGS,
    JobProblem,
    LeaderboardInputError,
    PerCaseTask,
    PooledTask,
    TaskData,
    TrackData,
)
from harness.leaderboard.private import private_case_table
from harness.leaderboard.read_csv import CSV_COLUMNS, collect_csv, collect_long
from harness.leaderboard.read_runs import collect_runs

__all__ = [
    "CSV_COLUMNS",
    "FLAG_FAILED_JOB",
    "FLAG_MISSING_CASE",
    "FLAG_MISSING_JOB",
    "FLAG_NOT_APPLICABLE",
    "FLAG_OK",
    "FLAG_UNFINISHED_JOB",
    "MISSING_FLAGS",
    "JobProblem",
    "LeaderboardInputError",
    "PerCaseTask",
    "PooledTask",
    "TaskData",
    "TrackData",
    "collect_csv",
    "collect_long",
    "collect_runs",
    "private_case_table",
]
