"""``harness evaluate`` and ``harness status``."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.challenge.commands import add_challenge_options
from harness.challenge.config import ChallengeError, load_challenge
from harness.jobs.executor_registry import EXECUTOR_KINDS
from harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES
from harness.results_lock import ResultsLockedError

DEFAULT_TASKS = Path("task_registry/toy")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run the job matrix (submissions x tasks x folds + baselines), resumably",
        description="Validate each submission, then fine-tune it (and the from-scratch baseline of its "
        "track) on every task and fold of the registry. State lives in RESULTS: rerunning the same "
        "command after any crash finishes what is left. Exit status: 0 every job done, 1 some job "
        "failed, was rejected or is left, 2 usage error or another evaluate holds RESULTS.",
    )
    p.add_argument(
        "submissions", nargs="*", type=Path, metavar="SUB", help="nnssl checkpoint(s) (.pth); none with --challenge"
    )
    p.add_argument(
        "--tasks",
        type=Path,
        default=None,
        help=f"registry folder (default: {DEFAULT_TASKS}; with --challenge: the phase's)",
    )
    add_challenge_options(
        p,
        required=False,
        challenge_help="run a challenge phase (docs/challenge.md): the entries its intake counts, on the phase's "
        "tasks, with the challenge's recipe, in RESULTS/challenges/<challenge>/<phase>; needs --phase",
        phase_help="the phase of --challenge to run",
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    p.add_argument("--executor", choices=list(EXECUTOR_KINDS), default="local", help="default: %(default)s")
    p.add_argument("--folds", type=int, nargs="+", default=None, metavar="K", help="only these folds")
    p.add_argument(
        "--noise-repeats",
        type=int,
        default=0,
        metavar="K",
        help="fine-tune the baselines (and --noise-entries) K more times with other seeds: the "
        "leaderboard's noise floor (docs/metrics.md); the repeats are never ranked",
    )
    p.add_argument(
        "--noise-entries", nargs="+", default=(), metavar="ENTRY", help="entries repeated like the baselines"
    )
    p.add_argument("--retry-failed", action="store_true", help="rerun failed jobs too (default: only pending ones)")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each finished job's checkpoints (RUN/checkpoints/; default: removed, predictions are kept)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the matrix and what would run; run nothing")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=None,
        help=f"every fine-tuning choice, named (docs/recipes.md; default: {DEFAULT_RECIPE}; "
        "with --challenge: the challenge's)",
    )
    for kind in EXECUTOR_KINDS.values():  # each executor's own options
        kind.add_options(p)
    p.set_defaults(func=_evaluate)

    s = sub.add_parser(
        "status",
        help="jobs per state in a results folder; running jobs with elapsed time, epoch "
        "and ETA; failed jobs with error class and log; corrupt results with the command that reruns them",
    )
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    s.add_argument(
        "--json", action="store_true", help="one JSON object: counts (state -> number), running, failed, corrupt, jobs"
    )
    s.set_defaults(func=_status)


def _evaluate(args) -> int:
    from harness.jobs.evaluate import EvaluateError, EvaluateOptions, evaluate
    from harness.jobs.executor_registry import check_executor_options, get_executor_kind
    from harness.jobs.executors import SlurmConfigError
    from harness.jobs.matrix import MatrixError

    try:
        check_executor_options(args)
        executor_settings = get_executor_kind(args.executor).settings(args)
        if args.challenge is not None or args.phase is not None:
            results, tasks, recipe, entries = _challenge_phase(args)
            if not args.noise_repeats:  # the phase's, unless the command line says otherwise
                args.noise_repeats, named = _phase_noise(args)
                counted = {e.entry for e in entries}
                args.noise_entries = tuple(e for e in named if e in counted)
                for e in sorted(set(named) - counted):
                    print(f"noise_entries: {e} is not a counted entry of the phase: no repeats for it")
        else:
            if not args.submissions:
                raise EvaluateError("no submission given (or give --challenge FILE --phase NAME)")
            results, tasks, recipe, entries = (
                args.results,
                args.tasks or DEFAULT_TASKS,
                args.recipe or DEFAULT_RECIPE,
                None,
            )
        outcome = evaluate(
            EvaluateOptions(
                submissions=args.submissions,
                entries=entries,
                tasks=tasks,
                results=results,
                executor=args.executor,
                folds=args.folds,
                noise_repeats=args.noise_repeats,
                noise_entries=tuple(args.noise_entries),
                keep_checkpoints=args.keep_checkpoints,
                retry_failed=args.retry_failed,
                dry_run=args.dry_run,
                device=args.device,
                recipe=recipe,
                **executor_settings,
            )
        )
    except (EvaluateError, ResultsLockedError, SlurmConfigError, MatrixError, ChallengeError) as e:
        print(f"harness evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0 if args.dry_run else outcome.exit_code


def _phase_noise(args) -> tuple[int, tuple[str, ...]]:
    """The seed repeats a challenge phase asks for (``noise_repeats``, ``noise_entries``)."""
    phase = load_challenge(args.challenge).get_phase(args.phase)
    return phase.noise_repeats, tuple(phase.noise_entries)


def _challenge_phase(args):
    """(results folder, task registry, recipe, counted entries) of `evaluate --challenge --phase`."""
    from harness.challenge.phases import plan_phase
    from harness.jobs.evaluate import EvaluateError

    if args.challenge is None or args.phase is None:
        raise EvaluateError("--challenge FILE and --phase NAME go together")
    if args.submissions:
        raise EvaluateError("--challenge takes its submissions from the phase's intake: give no SUB")
    challenge = load_challenge(args.challenge)
    phase = challenge.get_phase(args.phase)
    if args.tasks is not None and Path(args.tasks).resolve() != phase.tasks:
        raise EvaluateError(f"--tasks {args.tasks}: phase {phase.name!r} evaluates on {phase.tasks}")
    if args.recipe is not None and args.recipe != challenge.recipe:
        raise EvaluateError(f"--recipe {args.recipe}: challenge {challenge.name!r} runs {challenge.recipe}")
    plan = plan_phase(challenge, phase.name, args.results)
    print(
        f"challenge {challenge.name}, phase {phase.name} (counts: {phase.counts}): "
        f"{len(plan.entries)} entr{'y' if len(plan.entries) == 1 else 'ies'} counted; results in {plan.results}"
    )
    return plan.results, phase.tasks, challenge.recipe, plan.entries


def _status(args) -> int:
    from harness.jobs.status import collect_status

    try:
        report = collect_status(args.results)
    except FileNotFoundError as e:
        print(f"harness status: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(report.format_text())
    return 0
