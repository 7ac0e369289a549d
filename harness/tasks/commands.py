"""``harness tasks`` and ``harness make-toy-data``."""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_TASKS = Path("task_registry/toy")
DEFAULT_TOY_DATA = Path("data/toy")


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the tasks of a registry, one line each")
    p.add_argument("--tasks", type=Path, default=DEFAULT_TASKS, help="registry folder (default: %(default)s)")
    p.set_defaults(func=_tasks)

    p = sub.add_parser("make-toy-data", help="write the synthetic toy datasets (nnU-Net raw format)")
    p.add_argument("--out", type=Path, default=DEFAULT_TOY_DATA,
                   help="output folder; the toy registry expects %(default)s (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_toy_data)


def _tasks(args) -> int:
    from harness.tasks import TaskSpecError, load_registry, summarize

    try:
        tasks = load_registry(args.tasks)
    except TaskSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for task in tasks.values():
        print(summarize(task))
    return 0


def _make_toy_data(args) -> int:
    from harness.tasks.toy import write_toy_data

    for path in write_toy_data(args.out, seed=args.seed):
        print(f"wrote {path}")
    return 0
