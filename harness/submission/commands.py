"""``harness validate`` and ``harness example-submission``."""

from __future__ import annotations

import argparse
import json
import sys

from harness.submission import DEFAULT_MAX_SIZE
from harness.submission.checkpoint import format_bytes
from harness.tracks import TRACKS

DTYPE_CHOICES = ("float32", "float16", "bfloat16")


def register(subparsers) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check an uploaded checkpoint (safe load, plan, keys/shapes, values, canary)",
        description="Check a submitted nnssl checkpoint without running any code from it. "
        "Exit status: 0 valid, 1 invalid (the report says why), 2 usage error or unreadable path.",
    )
    validate.add_argument("path", help="the .pth checkpoint")
    validate.add_argument(
        "--track", choices=TRACKS, help="validate for this track (default: the plan's arch_class_name)"
    )
    validate.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    validate.add_argument(
        "--max-size",
        type=_positive_int,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help=f"largest accepted file size in bytes (default {DEFAULT_MAX_SIZE}, 4 GiB)",
    )
    validate.set_defaults(func=_validate)

    example = subparsers.add_parser(
        "example-submission",
        help="write a correctly formatted checkpoint with random weights",
        description="Write an nnssl-style checkpoint of a track's reference network with randomly "
        "initialised weights (ResEncL about 410 MB, PrimusM at 160^3 about 608 MB in float32).",
    )
    example.add_argument("--track", choices=TRACKS, required=True)
    example.add_argument("--out", required=True, help="where to write the .pth file (written atomically)")
    example.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    example.add_argument(
        "--pretrain-patch",
        type=_positive_int,
        nargs=3,
        default=(160, 160, 160),
        metavar=("X", "Y", "Z"),
        help="pre-training patch size in voxels, array order as nnssl plans store it (default 160 160 160)",
    )
    example.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32")
    example.set_defaults(func=_example_submission)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _validate(args: argparse.Namespace) -> int:
    from harness.submission.validate import validate_submission

    report = validate_submission(args.path, track=args.track, max_size=args.max_size)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.readable:
        print(report.format_text())
    else:
        print(f"harness validate: error: {args.path}: {'; '.join(report.errors)}", file=sys.stderr)
    return report.exit_code


def _example_submission(args: argparse.Namespace) -> int:
    from harness.submission.example import DTYPES, write_example_submission

    try:
        path = write_example_submission(
            args.out, args.track, seed=args.seed, pretrain_patch=tuple(args.pretrain_patch), dtype=DTYPES[args.dtype]
        )
    except ValueError as exc:
        print(f"harness example-submission: error: {exc}", file=sys.stderr)
        return 2
    size = path.stat().st_size
    print(
        f"wrote {path}: {args.track} example submission, random weights (seed {args.seed}), "
        f"pre-training patch {' '.join(map(str, args.pretrain_patch))}, {args.dtype}, {format_bytes(size)}"
    )
    return 0
