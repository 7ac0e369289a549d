"""``harness finetune``: one job (entry x task x fold); the job matrix builds on it."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.tracks import TOKEN_ORDERS, TRACKS


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune one submission (or a from-scratch baseline) on one task and fold")
    p.add_argument("submission", nargs="?", type=Path,
                   help="nnssl checkpoint (.pth); omit with --baseline TRACK for the from-scratch baseline")
    p.add_argument("--baseline", choices=TRACKS, help="run the track's from-scratch baseline instead")
    p.add_argument("--task", required=True, help="task name in the registry")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--tasks", type=Path, default=Path("task_registry/toy"), help="registry folder (default: %(default)s)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--token-order", choices=TOKEN_ORDERS, default="nnssl",
                   help="how a Primus pos_embed is read: nnssl order converted (default) or copied as-is")
    p.set_defaults(func=_finetune)


def _finetune(args) -> int:
    from harness.finetune.run import run_finetune_job
    from harness.submission import SubmissionError, load_submission
    from harness.tasks import TaskSpecError, get_task

    if (args.submission is None) == (args.baseline is None):
        print("error: give a submission file or --baseline TRACK (not both)", file=sys.stderr)
        return 2
    try:
        task = get_task(args.tasks, args.task)
        if args.fold not in task.fold_ids:
            print(f"error: fold {args.fold} is not a fold of task {task.name} ({list(task.fold_ids)})", file=sys.stderr)
            return 2
        track, sha = args.baseline, None
        if args.submission is not None:
            sub = load_submission(args.submission)
            track, sha = sub.track, sub.sha256
            del sub
    except (TaskSpecError, SubmissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = run_finetune_job(
        task=task, fold=args.fold, track=track, results=args.results, submission=args.submission,
        submission_sha256=sha, device=args.device, token_order=args.token_order,
    )
    print(f"done: {metrics['entry']} on {task.name} fold {args.fold}: {metrics['aggregates']}")
    return 0

