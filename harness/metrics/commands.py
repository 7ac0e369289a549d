"""``harness score``: re-score a folder of predicted label maps without re-training."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _labels(text: str) -> tuple[int, ...]:
    try:
        labels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,3, got {text!r}") from None
    if not labels:
        raise argparse.ArgumentTypeError("expected at least one label")
    return labels


def _positive_mm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mm, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"the tolerance must be a positive number of mm, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="per-case Dice and NSD of predicted label maps against references",
        description=(
            "Score PRED_DIR/<case>.nii.gz against REF_DIR/<case>.nii.gz (spacing from the "
            "reference) and write the per-case table case,label,dice,nsd,ref_voxels,pred_voxels. "
            "Either side may end in .nii.gz or .nii. Nothing is guessed: exit 2, naming the files, when "
            "PRED_DIR holds no predictions, when the case names of the two folders differ (a missing "
            "prediction is an error, not an empty one), when a folder holds two files for one case "
            "(A.nii and A.nii.gz), when a prediction holds a value other than background 0 and the "
            "scored labels, or on a size or spacing mismatch."
        ),
    )
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="predicted label maps (.nii.gz or .nii)")
    p.add_argument("ref_dir", type=Path, metavar="REF_DIR", help="reference label maps (.nii.gz or .nii)")
    p.add_argument(
        "--labels",
        type=_labels,
        default=None,
        help="labels to score, e.g. 1,2 (default: every non-zero label in the references); "
        "a prediction may hold only these and 0",
    )
    p.add_argument("--tolerance-mm", type=_positive_mm, default=1.0, help="NSD tolerance in mm, > 0 (default 1.0)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the table (default PRED_DIR/cases.csv; written atomically)",
    )
    p.set_defaults(func=_score)


def _score(args: argparse.Namespace) -> int:
    from harness.metrics.segmentation import ScoringInputError, format_summary, rescore

    out = args.out if args.out is not None else args.pred_dir / "cases.csv"
    try:
        cases = rescore(args.pred_dir, args.ref_dir, out, labels=args.labels, tolerance_mm=args.tolerance_mm)
    except ScoringInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(cases))
    print(f"wrote {out}")
    return 0
