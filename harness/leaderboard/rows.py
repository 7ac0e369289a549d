"""The leaderboard row: the columns of ``leaderboard_<track>.csv`` defined once, its one writer
(``write_leaderboard``) and its one reader (``read_leaderboard``), which the challenge's feedback
and public pages use.

Columns, in file order (``harness.leaderboard.report`` says what each means)::

    rank, entry, is_baseline, mean_task_rank, rank_<task>..., <the tasks' score columns>...,
    rank_lo, rank_hi, rank_median, failed_jobs, pending_jobs, missing_cases, gain_<task>...,
    noise_rank_lo, noise_rank_hi, noise_rank_median, within_noise_of   (with seed repeats only)

The columns before and after the per-task ones are every row's (``LeaderboardRow``'s fields); the
per-task ones (task ranks, scores, gains) are the row's ``scores``, in file order. The noise
columns (``harness.leaderboard.noise``) are there only when the track has seed repeats;
``within_noise_of`` holds entry ids, joined by "; ".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.runs import ResultsFileError, people_csv_text, read_people_csv, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

#: The columns about the ranking, not a score: first the leading ones, then the bootstrap's.
LEADING_COLUMNS = ("rank", "entry", "is_baseline", "mean_task_rank")
INTERVAL_COLUMNS = ("rank_lo", "rank_hi", "rank_median")
RANK_COLUMNS = LEADING_COLUMNS + INTERVAL_COLUMNS
#: What an entry's jobs left unranked: failed and pending jobs, cases counted as worst.
COUNT_COLUMNS = ("failed_jobs", "pending_jobs", "missing_cases")
#: What a track with seed repeats adds: the noise-aware rank interval and the entries whose
#: differences from this one are above the noise floor on no task (entry ids, "; "-joined).
NOISE_COLUMNS = ("noise_rank_lo", "noise_rank_hi", "noise_rank_median", "within_noise_of")
WITHIN_NOISE_SEPARATOR = "; "


def task_rank_column(task: str) -> str:
    return f"rank_{task}"


def gain_column(task: str) -> str:
    """The entry's ranked score on the task's primary metric minus the baseline's."""
    return f"gain_{task}"


@dataclass(frozen=True)
class LeaderboardRow:
    """One entry's row. ``rank_lo``/``rank_hi``/``rank_median`` are None when the track was not
    bootstrapped; a score is None where the table has NaN; the noise fields are None when the
    track has no seed repeats."""

    rank: int
    entry: str
    is_baseline: bool
    mean_task_rank: float
    rank_lo: float | None
    rank_hi: float | None
    rank_median: float | None
    failed_jobs: int
    pending_jobs: int
    missing_cases: int
    #: the per-task columns (task ranks, scores, gains) -> value, in file order
    scores: Mapping[str, Any]
    #: every column -> value, in file order (what a page shows)
    values: Mapping[str, Any]
    noise_rank_lo: float | None = None
    noise_rank_hi: float | None = None
    noise_rank_median: float | None = None
    #: the entries within training noise of this one (none: an empty tuple)
    within_noise_of: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as plain values (JSON-ready), in file order."""
        return dict(self.values)


def write_leaderboard(path: Path, table: pd.DataFrame) -> None:
    """Write a track's leaderboard table (``harness.leaderboard.report.leaderboard_table``) to
    ``path`` atomically, as text for people (``harness.runs.people_csv_text``); a table without a
    row's column is a ``ValueError``."""
    missing = [c for c in RANK_COLUMNS + COUNT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: the leaderboard table lacks column(s) {missing}")
    write_text_atomic(Path(path), people_csv_text(table))


def read_leaderboard(path: Path) -> list[LeaderboardRow]:
    """The rows of a ``leaderboard_<track>.csv``, best first, with the text as ranked (no
    spreadsheet quote). ``ResultsFileError`` names the file when it does not parse or lacks a
    row's column, and the line when a value is not of its column's kind."""
    import pandas as pd

    path = Path(path)
    try:
        frame = read_people_csv(path)
    except FileNotFoundError:
        raise ResultsFileError(path, "missing") from None
    except (ValueError, pd.errors.ParserError) as e:  # EmptyDataError and decoding errors too
        raise ResultsFileError(path, f"does not parse: {e}") from None
    missing = [c for c in RANK_COLUMNS + COUNT_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsFileError(path, f"missing column(s) {missing}; has {list(frame.columns)}")
    fixed = set(RANK_COLUMNS + COUNT_COLUMNS + NOISE_COLUMNS)
    noisy = "within_noise_of" in frame.columns
    rows = []
    for line, record in enumerate(frame.to_dict(orient="records"), start=2):
        values = {str(k): _plain(v) for k, v in record.items()}
        try:
            rows.append(
                LeaderboardRow(
                    rank=_value(values, "rank", int),
                    entry=_value(values, "entry", str),
                    is_baseline=_value(values, "is_baseline", _flag),
                    mean_task_rank=_value(values, "mean_task_rank", float),
                    rank_lo=_value(values, "rank_lo", _number),
                    rank_hi=_value(values, "rank_hi", _number),
                    rank_median=_value(values, "rank_median", _number),
                    failed_jobs=_value(values, "failed_jobs", int),
                    pending_jobs=_value(values, "pending_jobs", int),
                    missing_cases=_value(values, "missing_cases", int),
                    scores={k: v for k, v in values.items() if k not in fixed},
                    values=values,
                    noise_rank_lo=_value(values, "noise_rank_lo", _number) if noisy else None,
                    noise_rank_hi=_value(values, "noise_rank_hi", _number) if noisy else None,
                    noise_rank_median=_value(values, "noise_rank_median", _number) if noisy else None,
                    within_noise_of=split_within_noise(values["within_noise_of"]) if noisy else None,
                )
            )
        except ValueError as e:
            raise ResultsFileError(path, f"line {line}: {e}") from None
    return rows


def split_within_noise(cell: Any) -> tuple[str, ...]:
    """The entry ids of a ``within_noise_of`` cell (empty or NaN: none)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ()
    return tuple(e for e in str(cell).split(WITHIN_NOISE_SEPARATOR) if e)


def _value(values: Mapping[str, Any], column: str, kind: Any) -> Any:
    value = values[column]
    try:
        if value is None and kind is not _number:
            raise ValueError("empty")
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {column!r} has {value!r}, not a value of its kind") from None


def _plain(value: Any) -> Any:
    """numpy scalars to Python values, NaN to None (JSON-ready)."""
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError("not true or false")
