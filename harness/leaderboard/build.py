"""``build_leaderboard``: collect -> rank -> bootstrap -> test -> write, per track.

Files in ``out`` (each written atomically, the report last)::

    leaderboard_<track>.csv      public: one row per entry, best first (aggregates only)
    stability_<track>.csv        public: per task, Kendall's tau of the bootstrap rankings
    significance_<track>.csv     public: pairwise one-sided p-values, Holm-adjusted
    plots/<track>_{blobs,significance,ranks}.png
    noise_<track>.csv            public, with seed repeats: the noise floor per task and metric
    leaderboard.json             provenance: scheme, N, seed, source, notes, warnings, file list;
                                 with seed repeats, per track the noise floor and adjacent pairs
    report.html                  everything above in one self-contained page
    private/cases_<track>.csv    PRIVATE: per-case values and flags (hidden test cases)
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import __version__
from harness.leaderboard import ALPHA, DEFAULT_BOOTSTRAP, DEFAULT_SCHEME, DEFAULT_SEED
from harness.leaderboard.model import JobProblem, LeaderboardInputError, TrackData
from harness.leaderboard.noise import TrackNoise, repeat_scores, track_noise
from harness.leaderboard.plots import blob_plot, rank_heatmap, significance_map
from harness.leaderboard.private import private_case_table
from harness.leaderboard.ranking import TrackRanking, check_scheme, rank_track
from harness.leaderboard.read_csv import collect_csv
from harness.leaderboard.read_runs import collect_runs
from harness.leaderboard.report import (
    add_noise_columns,
    adjacent_pairs_table,
    leaderboard_table,
    noise_floor_table,
    render_html,
    significance_table,
    stability_table,
)
from harness.leaderboard.rows import write_leaderboard
from harness.leaderboard.stability import TrackStability, bootstrap_track, significance_track
from harness.recipes import DEFAULT_RECIPE, RecipeError, get_recipe
from harness.runs import ResultsLayout, people_csv_text, write_atomic, write_json_atomic, write_text_atomic
from harness.task_types import TASK_TYPES
from harness.tracks import TRACKS

PRIVATE_DIR = "private"


@dataclass
class TrackOutcome:
    track: str
    ranking: TrackRanking
    stability: TrackStability
    leaderboard: pd.DataFrame
    notes: list[str]
    #: the noise floor and noise-aware interval, when the track has seed repeats
    noise: TrackNoise | None = None


@dataclass
class LeaderboardOutcome:
    out: Path
    scheme: str
    tracks: list[TrackOutcome]
    files: list[Path] = field(default_factory=list)
    #: run folders whose files could not be read (ranked as failed runs, or skipped), once each
    warnings: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def track_notes(track: TrackData, ranking: TrackRanking, stability: TrackStability) -> list[str]:
    """What a reader must know to trust the table: gaps, dropped cases, fallbacks."""
    notes = [job_problem_note(p) for p in track.job_problems]
    notes.extend(track.notes)
    if track.baseline() is None:
        notes.append(f"no unique baseline in track {track.track}: gain_<task> columns are empty")
    for task in track.tasks:
        if not task.metrics:
            notes.append(f"{task.task}: no finished run could be read, so no metric: every entry ties on it")
        notes.extend(task.notes(ranking.scheme))
    notes.extend(f"{s.task}: {s.note}" for s in stability.tasks if s.note)
    return notes


def job_problem_note(problem: JobProblem) -> str:
    fold = "" if problem.fold is None else f" fold {problem.fold}"
    detail = f" ({problem.detail})" if problem.detail else ""
    return f"{problem.entry}: {problem.task}{fold} is {problem.status}{detail}; its cases count as worst"


def noise_meta(ranking: TrackRanking, noise: TrackNoise) -> dict:
    """leaderboard.json's noise floor per task and metric, and the adjacent pairs (None for NaN)."""

    def number(x) -> float | None:
        return None if x is None or x != x else float(x)

    floor = {
        f.task: {
            metric: {
                "sd": number(f.sd[m]),
                "sd_lo": number(f.sd_lo[m]),
                "sd_hi": number(f.sd_hi[m]),
                "threshold": number(f.threshold[m]),
                "runs": f.n_runs,
            }
            for m, metric in enumerate(f.metrics)
        }
        for f in noise.floors
        if f is not None
    }
    return {"noise_floor": floor, "adjacent_above_floor": noise.adjacent_above_floor(ranking)}


def read_warnings(tracks: list[TrackData]) -> list[str]:
    """Each run the leaderboard failed for unreadable or contradicting files or left out as stale,
    and each run folder it skipped (every track notes those), once, in track order."""
    found = [job_problem_note(p) for t in tracks for p in t.job_problems if p.unreadable or p.stale]
    found += [note for t in tracks for note in t.notes]
    return list(dict.fromkeys(found))


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def build_leaderboard(
    out: Path,
    *,
    results: Path | None = None,
    from_csv: Path | None = None,
    scheme: str = DEFAULT_SCHEME,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    plots: bool = True,
    recipe: str | None = DEFAULT_RECIPE,
    entries: Collection[str] | None = None,
) -> LeaderboardOutcome:
    """Rank every track found in ``results`` run folders (those of ``recipe``; with ``entries``,
    only those entries' and the baselines', ``collect_runs``) or in ``from_csv``, and write ``out``."""
    check_scheme(scheme)
    if n_bootstrap < 0:
        raise LeaderboardInputError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    if (results is None) == (from_csv is None):
        raise LeaderboardInputError("give exactly one of results (run folders) or from_csv")
    chosen = None  # a long CSV carries no recipe
    if recipe is not None and from_csv is None:
        try:
            chosen = get_recipe(recipe)
        except RecipeError as e:
            raise LeaderboardInputError(str(e)) from None
    if from_csv is not None:
        tracks = collect_csv(from_csv)
    else:
        assert results is not None  # exactly one of the two (checked above)
        tracks = collect_runs(results, chosen, entries)
    out = Path(out)
    outcome = LeaderboardOutcome(out, scheme, [], warnings=read_warnings(tracks))
    sections = []
    for track in tracks:
        ranking = rank_track(track, scheme)
        stability = bootstrap_track(ranking, n_bootstrap, seed)
        tests = significance_track(ranking, stability, ALPHA)
        notes = track_notes(track, ranking, stability)
        board = leaderboard_table(ranking, stability)
        stab = stability_table(ranking, stability)
        name = track.track
        repeats = repeat_scores(track)
        noise = track_noise(ranking, repeats, n_bootstrap, seed) if repeats else None
        floor = adjacent = None
        if noise is not None:
            board = add_noise_columns(board, ranking, noise)
            floor, adjacent = noise_floor_table(noise), adjacent_pairs_table(ranking, noise)
            write_text_atomic(out / f"noise_{name}.csv", people_csv_text(floor))
            outcome.files.append(out / f"noise_{name}.csv")
        text_files = {
            out / f"stability_{name}.csv": people_csv_text(stab),
            out / f"significance_{name}.csv": people_csv_text(significance_table(ranking, tests)),
            out / PRIVATE_DIR / f"cases_{name}.csv": people_csv_text(private_case_table(track)),
        }
        board_csv = ResultsLayout.leaderboard_csv(out, name)
        write_leaderboard(board_csv, board)
        outcome.files.append(board_csv)
        for path, text in text_files.items():
            write_text_atomic(path, text)
            outcome.files.append(path)
        figures = []
        if plots:
            figures = [
                ("Rank heat map", rank_heatmap(ranking)),
                ("Bootstrap ranks (blob plot)", blob_plot(ranking, stability)),
                ("Significance map", significance_map(ranking, tests)),
            ]
            for (_title, png), stem in zip(figures, ("ranks", "blobs", "significance")):
                path = out / "plots" / f"{name}_{stem}.png"
                _write_bytes_atomic(path, png)
                outcome.files.append(path)
        sections.append(
            {
                "track": name,
                "leaderboard": board,
                "stability": stab,
                "notes": notes,
                "figures": figures,
                "noise_floor": floor,
                "adjacent": adjacent,
            }
        )
        outcome.tracks.append(TrackOutcome(name, ranking, stability, board, notes, noise))
    meta = {
        "scheme": scheme,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "alpha": ALPHA,
        "source": str(from_csv if from_csv is not None else results),
        "entries_filter": None if entries is None else sorted(set(entries)),
        "recipe": None
        if chosen is None
        else {
            "name": chosen.name,
            "version": chosen.version,
            "description": chosen.description,
            "differences": list(chosen.differences),
            "values": {kind: {track: chosen.applicable_values(kind, track) for track in TRACKS} for kind in TASK_TYPES},
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "harness_version": __version__,
        "tracks": {
            t.track: {"entries": len(t.ranking.track.entries), "baseline": t.ranking.track.baseline(), "notes": t.notes}
            | ({} if t.noise is None else noise_meta(t.ranking, t.noise))
            for t in outcome.tracks
        },
        "warnings": outcome.warnings,
    }
    meta["files"] = [str(p.relative_to(out)) for p in outcome.files] + ["report.html"]
    write_json_atomic(out / "leaderboard.json", meta)
    write_text_atomic(outcome.report, render_html(sections, meta))
    outcome.files += [out / "leaderboard.json", outcome.report]
    return outcome
