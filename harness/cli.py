"""``harness``: a thin command line. Each subcommand parses its arguments, calls one library
function and prints; the commands of each concern live beside it in ``<package>/commands.py``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from harness import __version__
from harness.task_types import register_from_environment

#: Each module defines ``register(subparsers)``; a parser sets ``func(args) -> exit code``.
COMMAND_MODULES = (
    "harness.submission.commands",
    "harness.tasks.commands",
    "harness.finetune.commands",
    "harness.metrics.commands",
    "harness.leaderboard.commands",
    "harness.jobs.commands",
    "harness.challenge.commands",
)


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluate SSL3D pre-training submissions: validate, fine-tune, score, rank.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # timm (imported by dynamic-network-architectures) trips a deprecation warning on every run
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.interface.*", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        register_from_environment()  # task types the harness does not ship
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
