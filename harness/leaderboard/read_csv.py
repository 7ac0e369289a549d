"""Reading a long per-case table (``harness leaderboard --from-csv``) into tracks.

Columns ``track,entry,task,metric,case,value``, optionally ``higher_is_better`` and
``is_baseline``. Every task of such a table is a ``PerCaseTask``; a metric the registry knows
takes its direction and range from it (a stated direction must agree), any other metric must
state its direction. A duplicate (track, entry, task, metric, case) is an error naming the lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard.model import (
    FLAG_MISSING_CASE,
    FLAG_MISSING_JOB,
    FLAG_OK,
    JobProblem,
    LeaderboardInputError,
    PerCaseTask,
    TaskData,
    TrackData,
    check_metric_values,
    check_track_name,
    input_metric,
)
from harness.leaderboard.text_tables import line_numbers, numeric_column, read_text_table
from harness.metrics.registry import Metric
from harness.runs import BASELINE_PREFIX

CSV_COLUMNS = ("track", "entry", "task", "metric", "case", "value")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _optional_bool(frame: pd.DataFrame, column: str, path: str | Path) -> list[bool | None]:
    if column not in frame.columns:
        return [None] * len(frame)
    text = frame[column].str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE | {""})
    if bad.any():
        raise LeaderboardInputError(f"{path}: column {column!r} must be true/false on line(s) {line_numbers(bad)}")
    return [None if t == "" else t in _TRUE for t in text]


def collect_csv(path: Path) -> list[TrackData]:
    """Tracks from a long table ``track,entry,task,metric,case,value[,higher_is_better][,is_baseline]``.

    A present row with an empty/NaN value is "not applicable"; a row that other entries have and
    this entry lacks is missing (worst). Without ``is_baseline`` an entry is a baseline when its
    name starts with ``baseline-``.
    """
    path = Path(path)
    return collect_long(read_text_table(path), str(path))


def collect_long(frame: pd.DataFrame, path: str = "<table>") -> list[TrackData]:
    """Tracks from the long table already in memory (every column as text, like the CSV)."""
    frame = frame.astype(object).fillna("").astype(str).reset_index(drop=True)
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise LeaderboardInputError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    if frame.empty:
        raise LeaderboardInputError(f"{path}: no rows")
    for column in CSV_COLUMNS[:-1]:
        frame[column] = frame[column].str.strip()
        empty = frame[column] == ""
        if empty.any():
            raise LeaderboardInputError(f"{path}: empty {column!r} on line(s) {line_numbers(empty)}")
    keys = ["track", "entry", "task", "metric", "case"]
    duplicated = frame.duplicated(keys, keep=False)
    if duplicated.any():
        raise LeaderboardInputError(
            f"{path}: duplicate (track, entry, task, metric, case) on line(s) {line_numbers(duplicated)}"
        )
    frame["value_"] = numeric_column(frame, "value", path)
    directions = _optional_bool(frame, "higher_is_better", path)
    baseline_flags = _optional_bool(frame, "is_baseline", path)
    metrics: dict[str, Metric] = {}
    for row, (name, direction) in enumerate(zip(frame["metric"], directions)):
        where = f"{path} line {row + 2}"
        metric = input_metric(name, direction, where)
        if direction is not None or name not in metrics:
            if metrics.setdefault(name, metric) != metric:
                raise LeaderboardInputError(f"{where}: higher_is_better of {name!r} disagrees with an earlier line")
    for name, metric in metrics.items():
        rows = frame["metric"] == name
        check_metric_values(metric, frame.loc[rows, "value_"].to_numpy(), f"{path} metric {name!r}")
    for track in frame["track"].unique():
        check_track_name(track, f"{path} column 'track'")
    entry_baseline = [
        flag if flag is not None else entry.startswith(BASELINE_PREFIX)
        for entry, flag in zip(frame["entry"], baseline_flags)
    ]
    tracks = []
    for track in sorted(frame["track"].unique()):
        rows = frame[frame["track"] == track]
        baselines = _baselines(
            ((e, entry_baseline[i]) for i, e in zip(rows.index, rows["entry"])), f"{path} track {track!r}"
        )
        tracks.append(_track_from_long(track, rows, metrics, baselines, str(path)))
    return tracks


def _track_from_long(track: str, rows: pd.DataFrame, metrics: dict[str, Metric], baselines, source) -> TrackData:
    entries = tuple(sorted(rows["entry"].unique()))
    tasks: list[TaskData] = []
    problems: list[JobProblem] = []
    for task in sorted(rows["task"].unique()):
        task_rows = rows[rows["task"] == task]
        task_metrics = tuple(metrics[name] for name in task_rows["metric"].unique())  # file order
        cases = tuple(sorted(task_rows["case"].unique()))
        table = task_rows.set_index(["metric", "entry", "case"])["value_"]
        full = pd.MultiIndex.from_product([[m.name for m in task_metrics], entries, cases])
        present = full.isin(table.index).reshape(len(task_metrics), len(entries), len(cases))
        values = table.reindex(full).to_numpy(dtype=float).reshape(present.shape)
        flags = np.where(present, FLAG_OK, FLAG_MISSING_CASE).astype(object)
        has_task = np.asarray(present.any(axis=(0, 2)))
        for e, entry in enumerate(entries):
            if not has_task[e]:
                flags[:, e, :] = FLAG_MISSING_JOB
                problems.append(JobProblem(entry, task, None, FLAG_MISSING_JOB, "no row for this task"))
        tasks.append(PerCaseTask.from_values(task, entries, cases, task_metrics, values, flags))
    return TrackData(track, entries, baselines, tuple(tasks), tuple(problems), source)


def _baselines(pairs: Iterable[tuple[str, bool]], where: str) -> frozenset[str]:
    flags: dict[str, bool] = {}
    for entry, is_baseline in pairs:
        if flags.setdefault(entry, is_baseline) != is_baseline:
            raise LeaderboardInputError(f"{where}: entry {entry!r} is marked is_baseline both true and false")
    return frozenset(e for e, b in flags.items() if b)
