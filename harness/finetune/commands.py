"""``harness finetune``: one job (entry x task x fold); the job matrix builds on it."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES
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


def _finetune(args) -> int:
    from harness.finetune.run import run_finetune_job
    from harness.recipes import RecipeError, get_recipe
    from harness.submission import SubmissionError, load_submission
    from harness.tasks import TaskSpecError, get_task

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
    from harness.tasks.preflight import check_tasks, preflight_cache

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
