"""``harness tasks`` and ``harness make-toy-data``."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES, get_recipe
from harness.tasks import TaskSpecError, load_registry, summarize
from harness.tasks.preflight import check_tasks, preflight_cache

DEFAULT_TASKS = Path("task_registry/toy")
DEFAULT_TOY_DATA = Path("data/toy")


def register(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="list the tasks of a registry, one line each; --check reads all their data",
        description="List the tasks of a registry. With --check, also read every image, label map "
        "and mask of every task completely and report every problem found, each naming the file "
        "(the check `harness evaluate` makes before it plans any job). Exit status: 0 the data is "
        "usable (warnings may be printed), 2 a problem was found or the registry is invalid.",
    )
    p.add_argument("--tasks", type=Path, default=DEFAULT_TASKS, help="registry folder (default: %(default)s)")
    p.add_argument(
        "--check", action="store_true", help="check every file of every task (see harness/tasks/preflight.py)"
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder whose cache remembers files already checked (default: %(default)s)",
    )
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=DEFAULT_RECIPE,
        help="the recipe whose classification folds are checked (default: %(default)s)",
    )
    p.set_defaults(func=_tasks)

    p = sub.add_parser("make-toy-data", help="write the synthetic toy datasets (nnU-Net raw format)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_TOY_DATA,
        help="output folder; the toy registry expects %(default)s (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_toy_data)


def _tasks(args) -> int:

    try:
        tasks = load_registry(args.tasks)
    except TaskSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for task in tasks.values():
        print(summarize(task))
    if not args.check:
        return 0

    report = check_tasks(tasks, cache=preflight_cache(args.results), recipe=get_recipe(args.recipe))
    print(report.format_text(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 2


def _make_toy_data(args) -> int:
    from harness.tasks.toy import write_toy_data

    for path in write_toy_data(args.out, seed=args.seed):
        print(f"wrote {path}")
    return 0
