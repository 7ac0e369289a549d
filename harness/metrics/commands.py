"""``harness score``: re-score a folder of predicted label maps without re-training."""
from __future__ import annotations

import argparse
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


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="per-case Dice and NSD of predicted label maps against references",
        description=(
            "Score PRED_DIR/<case>.nii.gz against REF_DIR/<case>.nii.gz (spacing from the "
            "reference) and write the per-case table case,label,dice,nsd,ref_voxels,pred_voxels. "
            "A missing prediction is scored as an empty one; a size or spacing mismatch is an error."
        ),
    )
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="predicted label maps (.nii.gz)")
    p.add_argument("ref_dir", type=Path, metavar="REF_DIR", help="reference label maps (.nii.gz)")
    p.add_argument("--labels", type=_labels, default=None,
                   help="labels to score, e.g. 1,2 (default: every non-zero label in the references)")
    p.add_argument("--tolerance-mm", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the table (default PRED_DIR/cases.csv; written atomically)")
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
