"""Self-contained HTML for the feedback and public pages: inline CSS, no script, no external
file, every text escaped; and the phase leaderboard's tables as `harness leaderboard` wrote them."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.leaderboard.rows import LeaderboardRow, read_leaderboard
from harness.runs import ResultsLayout, read_json

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #1a1a1a; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.accepted { color: #0a6b2d; font-weight: 600; } .rejected { color: #a11; font-weight: 600; }
.note { color: #555; font-size: 0.9em; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, NaN and None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], cls: dict[str, str] | None = None) -> str:
    """An HTML table in a box that scrolls sideways when it is wider than the window."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            num = isinstance(value, int | float) and not isinstance(value, bool)
            css = (cls or {}).get(str(value), "num" if num else "")
            cells.append(f'<td class="{css}">{esc(fmt(value))}</td>' if css else f"<td>{esc(fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def read_phase_leaderboard(out: Path, tracks: Sequence[str]) -> tuple[dict[str, list[LeaderboardRow]], dict]:
    """The rows of each track's ``leaderboard_<track>.csv`` in a leaderboard folder (best first:
    ``harness.leaderboard.rows.read_leaderboard``) and its ``leaderboard.json``; tracks without a
    table are left out."""
    boards: dict[str, list[LeaderboardRow]] = {}
    for track in tracks:
        path = ResultsLayout.leaderboard_csv(out, track)
        if path.is_file():
            boards[track] = read_leaderboard(path)
    meta_path = ResultsLayout.leaderboard_meta(out)
    meta = read_json(meta_path) if meta_path.is_file() else {}
    return boards, meta
