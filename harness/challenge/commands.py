"""``harness intake``, ``harness feedback`` and ``harness publish``: a challenge's own commands
(`harness evaluate` and `harness leaderboard` take ``--challenge FILE --phase NAME`` too)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.challenge.config import ChallengeError, load_challenge
from harness.runs import UnsafePathError


def add_challenge_options(
    p: argparse.ArgumentParser, *, required: bool, challenge_help: str, phase_help: str, phase_required: bool = False
) -> None:
    """``--challenge FILE`` and ``--phase NAME``, as every command that works on a phase takes them."""
    p.add_argument("--challenge", type=Path, required=required, default=None, metavar="FILE", help=challenge_help)
    p.add_argument("--phase", required=phase_required, default=None, metavar="NAME", help=phase_help)


def _common(p: argparse.ArgumentParser, *, phase_required: bool) -> None:
    add_challenge_options(
        p,
        required=True,
        challenge_help="the challenge file (YAML)",
        phase_help="the phase" + ("" if phase_required else " (default: every phase, in the file's order)"),
        phase_required=phase_required,
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "intake",
        help="take in a challenge's new uploads: validate, enforce window and quota, find duplicates",
        description="Take in what is new in each phase's inbox (<inbox>/<phase>/<team>/<file>.pth, or the "
        "phase's manifest CSV): every new upload gets a stable entry id and a verdict, recorded in "
        "RESULTS/challenges/<challenge>/<phase>/inbox.json. A second run finds nothing new and changes "
        "nothing. Exit status: 0 intake ran (rejections are verdicts, not errors), 2 a bad challenge "
        "file, manifest or record.",
    )
    _common(p, phase_required=False)
    p.add_argument("--json", action="store_true", help="print the new uploads' verdicts as one JSON list")
    p.add_argument(
        "--withdraw",
        metavar="ENTRY",
        default=None,
        help="instead of taking in uploads: withdraw this accepted upload of --phase (it leaves the phase's "
        "matrix and ranking, keeps its quota slot and its runs; the team reads --reason in its feedback)",
    )
    p.add_argument("--reason", default=None, help="why --withdraw (shown to the team)")
    p.set_defaults(func=_intake)

    f = subparsers.add_parser(
        "feedback",
        help="per team of a phase: one JSON file and one self-contained HTML page of its results",
        description="Write RESULTS/challenges/<challenge>/<phase>/feedback/<team>/feedback.{json,html}: the "
        "intake verdict of each upload with its reasons, the state of each of its jobs, its own aggregate "
        "scores per task and its rank with the bootstrap interval (from the phase's leaderboard, when one "
        "was built). Nothing per case, nothing of other teams. Exit status: 0 written, 2 usage error.",
    )
    _common(f, phase_required=True)
    f.add_argument("--team", action="append", default=None, metavar="T", help="only this team (repeatable)")
    f.set_defaults(func=_feedback)

    u = subparsers.add_parser(
        "publish",
        help="export a phase's public leaderboard: CSV and JSON per track, one static HTML page",
        description="Write RESULTS/challenges/<challenge>/<phase>/public/: leaderboard_<track>.csv and .json "
        "(aggregates only, entries named by display name or anonymous id) and index.html. A phase with "
        "public: false exports nothing unless --publish is given. Exit status: 0 written, 1 nothing "
        "exported (not public), 2 usage error or no leaderboard yet.",
    )
    _common(u, phase_required=True)
    u.add_argument("--publish", action="store_true", help="export even though the phase is not public (yet)")
    u.add_argument(
        "--names",
        choices=("display", "anonymous"),
        default=None,
        help="how entries are named (default: the challenge's public_names)",
    )
    u.set_defaults(func=_publish)


def _error(command: str, exc: Exception) -> int:
    print(f"harness {command}: error: {exc}", file=sys.stderr)
    return 2


def _intake(args: argparse.Namespace) -> int:
    from harness.challenge.intake import intake_phases

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        challenge = load_challenge(args.challenge)
        if args.withdraw is not None or args.reason is not None:
            return _withdraw(challenge, args, log)
        outcomes = intake_phases(challenge, args.results, args.phase, log=log)
    except (ChallengeError, UnsafePathError) as exc:
        return _error("intake", exc)
    if args.json:
        print(json.dumps([u.to_dict() for o in outcomes for u in o.new], indent=2))
    else:
        for outcome in outcomes:
            print(outcome.summary())
    return 0


def _withdraw(challenge, args: argparse.Namespace, log) -> int:
    from harness.challenge.intake import withdraw

    if args.withdraw is None or args.phase is None or not (args.reason or "").strip():
        raise ChallengeError("--withdraw ENTRY needs --phase NAME and --reason TEXT")
    upload = withdraw(challenge, challenge.get_phase(args.phase), args.results, args.withdraw, args.reason, log=log)
    if args.json:
        print(json.dumps(upload.to_dict(), indent=2))
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from harness.challenge.feedback import write_feedback

    try:
        challenge = load_challenge(args.challenge)
        written = write_feedback(
            challenge, args.phase, args.results, teams=args.team, warn=lambda m: print(m, file=sys.stderr)
        )
    except (ChallengeError, UnsafePathError) as exc:
        return _error("feedback", exc)
    for team, (json_path, html_path) in written.items():
        print(f"{team}: {html_path} ({json_path.name})")
    print(f"wrote feedback for {len(written)} team(s)")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from harness.challenge.public import NotPublicError, publish_phase

    try:
        challenge = load_challenge(args.challenge)
        files = publish_phase(challenge, args.phase, args.results, force=args.publish, names=args.names)
    except NotPublicError as exc:
        print(f"harness publish: {exc}", file=sys.stderr)
        return 1
    except (ChallengeError, UnsafePathError) as exc:
        return _error("publish", exc)
    for path in files:
        print(f"wrote {path}")
    return 0
