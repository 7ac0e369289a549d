"""Reading the long per-case CSV (``harness leaderboard --from-csv``) with every problem named by
file and line. A run's cases.csv has its own reader (``harness.runs.read_cases_csv``).

Every column is read as text and converted where it is used, so that "", "nan" and a value that
is not a number can be told apart (pandas' own parsing would turn all three into NaN).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard.model import LeaderboardInputError


def read_text_table(path: Path) -> pd.DataFrame:
    """Every column as text ("" where empty). A line with fewer fields than the header is an error:
    pandas would pad it with empty values, which read as "not applicable", so a file cut short
    mid-line would drop its last case for every entry."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise LeaderboardInputError(f"{path}: cannot read: {exc}") from None
    try:
        rows = [(line, row) for line, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
    except csv.Error as exc:
        raise LeaderboardInputError(f"{path}: cannot read: {exc}") from None
    short = [line for line, row in rows if len(row) < len(frame.columns)]
    if short:
        raise LeaderboardInputError(
            f"{path}: line(s) {', '.join(map(str, short[:5]))} have fewer fields than the header's "
            f"{len(frame.columns)} (the file is cut short?)"
        )
    return frame


def line_numbers(mask: pd.Series | np.ndarray, limit: int = 5) -> str:
    """1-based file line numbers (header is line 1) of the true rows."""
    rows = np.flatnonzero(np.asarray(mask))[:limit] + 2
    return ", ".join(str(r) for r in rows)


def numeric_column(frame: pd.DataFrame, column: str, where: Path | str) -> np.ndarray:
    """Floats from text; empty or nan is NaN, anything else unparsable is an error."""
    text = frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & ~text.str.lower().isin(["", "nan"]).to_numpy()
    if bad.any():
        raise LeaderboardInputError(f"{where}: column {column!r} is not a number on line(s) {line_numbers(bad)}")
    return values
