"""The PRIVATE per-case table of a track: every value with its flag (``private/cases_<track>.csv``).

It holds per-case results of hidden test cases, so only ``build`` writes it, under ``private/``;
each task kind gives its own rows (``TaskData.case_table``): a per-case task its values per
metric, a pooled classification task per case the probability of the true class and whether the
predicted label is right.
"""

from __future__ import annotations

import pandas as pd

from harness.leaderboard.model import CASE_TABLE_COLUMNS, TrackData

COLUMNS = ("track", "entry", "is_baseline", "task", "case", "metric", "value", "flag")


def private_case_table(track: TrackData) -> pd.DataFrame:
    """Per-case values with their flags, sorted by task, entry, case and metric: PRIVATE."""
    frames = [task.case_table() for task in track.tasks]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    table = pd.concat(frames, ignore_index=True)[list(CASE_TABLE_COLUMNS)]
    table.insert(0, "track", track.track)
    table.insert(2, "is_baseline", table["entry"].isin(track.baselines))
    return table[list(COLUMNS)].sort_values(["task", "entry", "case", "metric"], kind="stable").reset_index(drop=True)
