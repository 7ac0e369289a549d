"""``harness leaderboard``: rank the entries of each track from per-case results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.challenge.commands import add_challenge_options
from harness.challenge.config import ChallengeError, load_challenge
from harness.leaderboard import DEFAULT_BOOTSTRAP, DEFAULT_SCHEME, DEFAULT_SEED, SCHEMES
from harness.leaderboard.rows import COUNT_COLUMNS, INTERVAL_COLUMNS, LEADING_COLUMNS
from harness.metrics.registry import METRICS
from harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES
from harness.runs import ResultsLayout


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="per-track leaderboards with bootstrap stability, significance maps and an HTML report",
        description=(
            "Read every run's cases.csv under RESULTS/runs (or a long CSV track,entry,task,metric,case,"
            "value[,higher_is_better][,is_baseline]) and rank the entries of each track: per task and "
            "metric, then the mean of task ranks. Missing, failed or unfinished work counts as the "
            "worst value and is flagged, and so does a run whose files cannot be read (a warning names "
            "the file). Per-case values go only to OUT/private/."
        ),
    )
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="results folder holding runs/ (default results)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default RESULTS/leaderboard/RECIPE)")
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=None,
        help=f"rank the runs this recipe makes (default: {DEFAULT_RECIPE}; with --challenge: the challenge's)",
    )
    add_challenge_options(
        p,
        required=False,
        challenge_help="rank a challenge phase (docs/challenge.md): the runs of the entries that count for it, "
        "written to RESULTS/challenges/<challenge>/<phase>/leaderboard/<recipe>; needs --phase",
        phase_help="the phase of --challenge to rank",
    )
    p.add_argument(
        "--scheme", choices=SCHEMES, default=DEFAULT_SCHEME, help=f"ranking scheme (default {DEFAULT_SCHEME})"
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        metavar="N",
        help=f"bootstrap resamples of the cases, 0 to skip (default {DEFAULT_BOOTSTRAP})",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    p.add_argument(
        "--from-csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="rank a long per-case table instead of run folders; a metric of the registry "
        f"({', '.join(METRICS)}) takes its direction and range from it, any other needs "
        "a higher_is_better column",
    )
    p.set_defaults(func=_leaderboard)


def _leaderboard(args: argparse.Namespace) -> int:
    from harness.leaderboard.build import build_leaderboard
    from harness.leaderboard.model import LeaderboardInputError
    from harness.leaderboard.report import unfinished_warning

    try:
        entries = None
        if args.challenge is not None or args.phase is not None:
            results, out, recipe, entries = _challenge_phase(args)
        else:
            recipe = args.recipe or DEFAULT_RECIPE
            results = args.results
            out = args.out if args.out is not None else ResultsLayout(args.results).leaderboard_dir(recipe)
        outcome = build_leaderboard(
            out,
            results=None if args.from_csv is not None else results,
            from_csv=args.from_csv,
            scheme=args.scheme,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            recipe=None if args.from_csv is not None else recipe,
            entries=entries,
        )
    except (LeaderboardInputError, ChallengeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for track in outcome.tracks:
        print(f"== {track.track} ({outcome.scheme}, {track.stability.n_bootstrap} bootstrap resamples)")
        shown = [*LEADING_COLUMNS, *INTERVAL_COLUMNS[:2], *COUNT_COLUMNS[:2]]  # the median and case count left out
        print(track.leaderboard[shown].head(20).to_string(index=False))
        for note in track.notes:
            print(f"  note: {note}")
    print(f"wrote {len(outcome.files)} files to {outcome.out}; report: {outcome.report}")
    partial = unfinished_warning({track.track: track.leaderboard for track in outcome.tracks})
    if partial:  # last, where a reader of a partial ranking looks
        print(f"warning: {partial}")
    return 0


def _challenge_phase(args: argparse.Namespace) -> tuple[Path, Path, str, dict[str, str]]:
    """(results folder, output folder, recipe, entries to rank) of `leaderboard --challenge
    --phase`: the phase's folder, and the entries that count for it (the baselines are ranked too)."""
    from harness.challenge.phases import phase_leaderboard_dir, ranked_entries

    if args.challenge is None or args.phase is None:
        raise ChallengeError("--challenge FILE and --phase NAME go together")
    if args.from_csv is not None:
        raise ChallengeError("--from-csv and --challenge exclude each other")
    challenge = load_challenge(args.challenge)
    phase = challenge.get_phase(args.phase)
    if args.recipe is not None and args.recipe != challenge.recipe:
        raise ChallengeError(f"--recipe {args.recipe}: challenge {challenge.name!r} runs {challenge.recipe}")

    entries = ranked_entries(challenge, phase, args.results)
    out = args.out if args.out is not None else phase_leaderboard_dir(challenge, phase, args.results)
    return ResultsLayout(args.results).phase(challenge.name, phase.name).root, out, challenge.recipe, entries
