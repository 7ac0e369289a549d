"""``harness finetune``: one job (entry x task x fold); the job matrix builds on it."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES, RecipeError, get_recipe
from harness.results_lock import ResultsLock, ResultsLockedError
from harness.runs import ResultsLayout
from harness.tasks import TaskSpecError, get_task
from harness.tasks.preflight import check_tasks, preflight_cache
from harness.tracks import TRACKS


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune one submission (or a from-scratch baseline) on one task and fold")
    p.add_argument(
        "submission",
        nargs="?",
        type=Path,
        help="nnssl checkpoint (.pth); omit with --baseline TRACK for the from-scratch baseline",
    )
    p.add_argument("--baseline", choices=TRACKS, help="run the track's from-scratch baseline instead")
    p.add_argument("--task", required=True, help="task name in the registry")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument(
        "--tasks", type=Path, default=Path("task_registry/toy"), help="registry folder (default: %(default)s)"
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=DEFAULT_RECIPE,
        help="every fine-tuning choice, named (docs/recipes.md; default: %(default)s)",
    )
    p.set_defaults(func=_finetune)

    r = sub.add_parser(
        "rescore",
        help="score every finished job again from what it kept (another tolerance, another metric), without training",
        description="After a change to a task file's metrics (an NSD tolerance, the metrics ranked), "
        "rescore every finished run of that task from its kept predictions (segmentation) or "
        "probabilities (classification): cases.csv and metrics.json rewritten as the job wrote "
        "them, job.json brought to the new task spec, so `harness evaluate` counts it as done. A "
        "run whose task changed beyond its metrics is left for evaluate to rerun, with the reason. "
        "Exit status: 0 every finished run rescored, 1 some could not be (listed), 2 usage error.",
    )
    r.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    r.set_defaults(func=_rescore)


def _rescore(args) -> int:
    from harness.finetune.rescore import RESCORED, rescore_results

    if not ResultsLayout(args.results).runs_dir.is_dir():
        print(f"error: {args.results}: no runs/ folder to rescore", file=sys.stderr)
        return 2
    try:
        with ResultsLock(args.results, "harness rescore"):  # no evaluate may write these runs meanwhile
            outcomes = rescore_results(args.results)
    except ResultsLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finished = [o for o in outcomes if o.detail != "not finished"]
    for o in finished:
        print(f"{o.state:<9} {o.run}" + (f": {o.detail}" if o.state != RESCORED else ""))
    rescored = sum(o.state == RESCORED for o in finished)
    print(f"rescored {rescored} of {len(finished)} finished run(s)")
    return 0 if rescored == len(finished) else 1


def _finetune(args) -> int:
    from harness.finetune.run import run_finetune_job
    from harness.submission import SubmissionError, load_submission

    if (args.submission is None) == (args.baseline is None):
        given = "both" if args.submission is not None else "neither"
        print(f"error: give a submission file or --baseline TRACK, not {given}", file=sys.stderr)
        return 2
    try:
        task = get_task(args.tasks, args.task)
        if args.fold not in task.fold_ids:
            print(f"error: fold {args.fold} is not a fold of task {task.name} ({list(task.fold_ids)})", file=sys.stderr)
            return 2
        recipe = get_recipe(args.recipe)
        track, sha = args.baseline, None
        if args.submission is not None:
            sub = load_submission(args.submission)
            track, sha = sub.track, sub.sha256
            del sub
        task.check_recipe(recipe)  # an override the recipe cannot take fails here, not in the job
    except (TaskSpecError, SubmissionError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    report = check_tasks([task], cache=preflight_cache(args.results), recipe=recipe)
    if not report.ok:
        print(f"error: {report.format_text()}", file=sys.stderr)
        return 2
    metrics = run_finetune_job(
        task=task,
        fold=args.fold,
        track=track,
        results=args.results,
        submission=args.submission,
        submission_sha256=sha,
        device=args.device,
        recipe=recipe,
        data=report.data[task.name],
    )
    print(f"done: {metrics['entry']} on {task.name} fold {args.fold}: {metrics['aggregates']}")
    return 0
