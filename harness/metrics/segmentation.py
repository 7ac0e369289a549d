"""Per-label Dice and normalized surface Dice (NSD) of 3D label maps, per case and per folder.

Conventions (docs/metrics.md has the table):

* arrays are (Z, Y, X) numpy arrays, as SimpleITK's ``GetArrayFromImage`` returns them; spacing
  is in mm in the same (z, y, x) order;
* NSD is Nikolov et al.'s surface Dice at a tolerance in mm, surface elements weighted by area:
  the value of DeepMind ``surface-distance``'s ``compute_surface_dice_at_tolerance``;
* both masks empty: Dice and NSD are NaN ("not applicable", left out of nan-means);
  exactly one empty: both are 0.

Over 450 lines for a reason: the metrics and the checks of their inputs (geometry, labels, spacing,
empty masks) belong together: each check guards a case the metric would otherwise score wrongly
without a word.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from harness.metrics.run_records import SEGMENTATION_CASES
from harness.metrics.surface import surface_agreement
from harness.runs import cases_csv_text as table_text
from harness.runs import write_cases_csv

if TYPE_CHECKING:  # pandas is imported when a table is built, not with this module
    import pandas as pd

#: The columns of a segmentation cases.csv (``harness.metrics.run_records.SEGMENTATION_CASES``).
CASE_COLUMNS: tuple[str, ...] = SEGMENTATION_CASES.columns()
#: File endings of label maps in a folder, longest first; a case is the file name without it.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: Relative difference above which a prediction's spacing is not the reference's.
SPACING_RTOL = 1e-4


class ScoringInputError(ValueError):
    """An input cannot be scored (wrong shape, spacing, dtype, missing folder ...)."""


# --------------------------------------------------------------------------- single masks


def _as_mask(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ScoringInputError(f"{name}: expected a 3D mask, got shape {array.shape}")
    if array.dtype == bool:
        return array
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ScoringInputError(
            f"{name}: a mask must be bool or 0/1, got values in [{array.min()}, {array.max()}]"
            " (pass `labels == k` for a label map)"
        )
    return array != 0


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_mask("pred_mask", pred), _as_mask("ref_mask", ref)
    if pred.shape != ref.shape:
        raise ScoringInputError(f"pred_mask shape {pred.shape} != ref_mask shape {ref.shape}")
    return pred, ref


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ScoringInputError(f"spacing_mm must be 3 positive finite numbers (z, y, x), got {spacing_mm!r}")
    return spacing


def _check_tolerance(tolerance_mm: float) -> float:
    tol = float(tolerance_mm)
    if not (math.isfinite(tol) and tol >= 0):
        raise ScoringInputError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    return tol


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a bool mask, None when empty."""
    found = ndimage.find_objects(mask.view(np.uint8))
    return found[0] if found else None


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _dice_counts(n_pred: int, n_ref: int, n_both: int) -> float:
    if n_pred + n_ref == 0:
        return math.nan
    return 2.0 * n_both / (n_pred + n_ref)


def _nsd_cropped(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    tol: float,
    pred_empty: bool,
    ref_empty: bool,
) -> float:
    if pred_empty and ref_empty:
        return math.nan
    if pred_empty or ref_empty:
        return 0.0
    ref_area, ref_within, pred_area, pred_within = surface_agreement(pred, ref, spacing, tol)
    return (ref_within + pred_within) / (ref_area + pred_area)


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice 2|P&R| / (|P|+|R|) of two same-shape 3D masks (bool or 0/1).

    NaN when both are empty, 0 when exactly one is.
    """
    pred, ref = _check_pair(pred_mask, ref_mask)
    n_both = int(np.count_nonzero(pred & ref))
    return _dice_counts(int(np.count_nonzero(pred)), int(np.count_nonzero(ref)), n_both)


def normalized_surface_dice(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_mm: Sequence[float], tolerance_mm: float
) -> float:
    """Surface Dice at ``tolerance_mm`` of two same-shape 3D masks, spacing (z, y, x) in mm.

    (area of P's surface within tol of R's + area of R's surface within tol of P's) / (total
    area of both surfaces), surface elements weighted by their area. NaN when both masks are
    empty, 0 when exactly one is. Only the bounding box of both masks is processed.
    """
    pred, ref = _check_pair(pred_mask, ref_mask)
    spacing, tol = _check_spacing(spacing_mm), _check_tolerance(tolerance_mm)
    box = _union(_bbox(pred), _bbox(ref))
    if box is None:
        return math.nan
    p, r = pred[box], ref[box]
    return _nsd_cropped(p, r, spacing, tol, not p.any(), not r.any())


# --------------------------------------------------------------------------- label maps


def _check_label_map(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ScoringInputError(f"{name}: expected a 3D label map, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ScoringInputError(f"{name}: a label map must hold whole numbers, found fractional values")
        array = array.astype(np.int64)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype.kind not in "iu":
        raise ScoringInputError(f"{name}: a label map must be an integer array, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ScoringInputError(f"{name}: negative label {int(array.min())} in a label map")
    if array.dtype == np.uint64:  # bincount and find_objects want a signed-castable type
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise ScoringInputError(f"{name}: label {int(array.max())} is too large")
        array = array.astype(np.int64)
    return array


def _check_labels(labels: Iterable[int]) -> tuple[int, ...]:
    out = []
    for label in labels:
        if isinstance(label, (bool, np.bool_)) or int(label) != label:
            raise ScoringInputError(f"labels must be whole numbers, got {label!r}")
        if int(label) <= 0:
            raise ScoringInputError(f"label {int(label)} is not scored: labels must be >= 1 (0 is background)")
        out.append(int(label))
    if not out:
        raise ScoringInputError("no labels to score")
    if len(set(out)) != len(out):
        raise ScoringInputError(f"duplicate labels in {out}")
    return tuple(out)


def _row(label: int, dice_value: float, nsd_value: float, n_ref: int, n_pred: int) -> dict:
    return {"label": label, "dice": dice_value, "nsd": nsd_value, "ref_voxels": n_ref, "pred_voxels": n_pred}


def score_case(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing_mm: Sequence[float],
    labels: Iterable[int],
    tolerance_mm: float = 1.0,
) -> list[dict]:
    """Dice and NSD of each label of one case: one dict per label, in the given order, with
    keys ``label, dice, nsd, ref_voxels, pred_voxels``.

    ``pred_labels`` and ``ref_labels`` are same-shape (Z, Y, X) non-negative integer label maps
    and ``spacing_mm`` their (z, y, x) voxel spacing. Each label is processed inside the
    bounding box of its voxels in either map, so small structures cost little.
    """
    pred = _check_label_map("pred_labels", pred_labels)
    ref = _check_label_map("ref_labels", ref_labels)
    if pred.shape != ref.shape:
        raise ScoringInputError(f"pred_labels shape {pred.shape} != ref_labels shape {ref.shape}")
    spacing, tol = _check_spacing(spacing_mm), _check_tolerance(tolerance_mm)
    wanted = _check_labels(labels)
    top = max(wanted)
    pred_boxes = ndimage.find_objects(pred, max_label=top)
    ref_boxes = ndimage.find_objects(ref, max_label=top)
    rows = []
    for label in wanted:
        box = _union(pred_boxes[label - 1], ref_boxes[label - 1])
        if box is None:
            rows.append(_row(label, math.nan, math.nan, 0, 0))
            continue
        p, r = pred[box] == label, ref[box] == label
        n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        d = _dice_counts(n_pred, n_ref, int(np.count_nonzero(p & r)))
        nsd = _nsd_cropped(p, r, spacing, tol, n_pred == 0, n_ref == 0)
        rows.append(_row(label, d, nsd, n_ref, n_pred))
    return rows


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class _Volume:
    array: np.ndarray
    spacing: tuple[float, float, float]  # (z, y, x) mm


def _read_label_image(path: Path) -> _Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ScoringInputError(f"{path}: cannot be read as an image: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() != 3:
        raise ScoringInputError(f"{path}: expected a 3D label image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScoringInputError(
            f"{path}: expected a scalar label image, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    array = sitk.GetArrayFromImage(image)
    try:
        array = _check_label_map(str(path), array)
    except ScoringInputError as exc:
        raise ScoringInputError(str(exc)) from None
    # SimpleITK spacing is (x, y, z); the array is (z, y, x).
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    return _Volume(array, spacing)  # type: ignore[arg-type]


def _few(items: Sequence, limit: int = 5) -> str:
    """``a, b, c`` or, past ``limit`` items, ``a, b, c, d, e and 7 more``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _nifti_case(name: str) -> str | None:
    """The case of a label-map file name (``A.nii.gz`` and ``A.nii`` are case ``A``), None
    for any other file."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _label_files(folder: Path, what: str) -> dict[str, Path]:
    """``{case: path}`` of the ``.nii.gz`` / ``.nii`` files in ``folder``, sorted by case; two
    files for one case (``A.nii`` and ``A.nii.gz``) are an error naming both."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        case = _nifti_case(path.name)
        if case is not None and path.is_file():
            files.setdefault(case, []).append(path)
    doubled = [" and ".join(p.name for p in paths) for paths in files.values() if len(paths) > 1]
    if doubled:
        raise ScoringInputError(
            f"{what} folder {folder} holds two files for one case ({_few(doubled)}): keep one of each"
        )
    return {case: paths[0] for case, paths in sorted(files.items())}


def _present_labels(array: np.ndarray) -> set[int]:
    """The label values present in a non-negative integer label map."""
    if array.size == 0:
        return set()
    if int(array.max()) <= 65535:  # bincount is linear, but allocates max+1 counts
        return {int(v) for v in np.flatnonzero(np.bincount(array.ravel()))}
    return {int(v) for v in np.unique(array)}


def _check_geometry(case: str, pred_path: Path, pred: _Volume, ref: _Volume) -> None:
    if pred.array.shape != ref.array.shape:
        raise ScoringInputError(
            f"case {case}: prediction {pred_path} has size (z, y, x) {pred.array.shape}, "
            f"the reference has {ref.array.shape}"
        )
    for p, r in zip(pred.spacing, ref.spacing):
        if abs(p - r) > SPACING_RTOL * max(abs(p), abs(r)):
            raise ScoringInputError(
                f"case {case}: prediction {pred_path} has spacing (z, y, x) {pred.spacing} mm, "
                f"the reference has {ref.spacing} mm"
            )


def score_folders(
    pred_dir: Path | str,
    ref_dir: Path | str,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
):
    """Score every reference ``REF_DIR/<case>.nii.gz`` (or ``.nii``) against the prediction
    ``PRED_DIR/<case>.nii.gz`` (or ``.nii``: either ending matches either).

    Returns a pandas DataFrame with columns ``case,label,dice,nsd,ref_voxels,pred_voxels``
    (one row per case and label, sorted), spacing taken from each reference; ``attrs`` holds
    ``tolerance_mm``. ``labels=None`` scores every non-zero label present in any reference.

    Raises :class:`ScoringInputError` (nothing is scored as a guess) when a folder is missing
    or holds no label maps; when the case names of the two folders differ (both sides' extra
    cases are listed); when a folder holds two files for one case; when a prediction holds a
    value that is neither background 0 nor a scored label (``labels``, or without it the labels
    found in the references); on a size or spacing mismatch and on an unreadable file.
    """
    import pandas as pd

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    tol = _check_tolerance(tolerance_mm)
    wanted = None if labels is None else _check_labels(labels)
    endings = " or ".join(NIFTI_SUFFIXES)
    if not ref_dir.is_dir():
        raise ScoringInputError(f"reference folder {ref_dir} does not exist")
    if not pred_dir.is_dir():
        raise ScoringInputError(f"prediction folder {pred_dir} does not exist")
    refs = _label_files(ref_dir, "reference")
    if not refs:
        raise ScoringInputError(f"reference folder {ref_dir} holds no {endings} files")
    preds = _label_files(pred_dir, "prediction")
    if not preds:
        others = sorted(p.name for p in pred_dir.iterdir())
        raise ScoringInputError(
            f"prediction folder {pred_dir} holds no predictions (<case>{endings} files)"
            + (f"; it holds {len(others)} other file(s): {_few(others)}" if others else ", it is empty")
        )
    no_pred = [refs[c].name for c in refs if c not in preds]
    no_ref = [preds[c].name for c in preds if c not in refs]
    if no_pred or no_ref:
        sides = []
        if no_pred:
            sides.append(f"{len(no_pred)} reference(s) in {ref_dir} without a prediction: {_few(no_pred)}")
        if no_ref:
            sides.append(f"{len(no_ref)} prediction(s) in {pred_dir} without a reference: {_few(no_ref)}")
        raise ScoringInputError(
            "prediction names do not match the references (<case>.nii.gz or <case>.nii on both sides): "
            + "; ".join(sides)
        )

    # One pass. Without explicit labels each case is scored for the labels it holds in either
    # map; labels found only in other references are filled in afterwards (both empty: NaN).
    # Which prediction values are foreign is known only once every reference is read, so they
    # are collected and reported together.
    per_case: dict[str, list[dict]] = {}
    pred_values: dict[str, set[int]] = {}
    found: set[int] = set()
    for case, ref_path in refs.items():
        ref = _read_label_image(ref_path)
        pred_path = preds[case]
        ref_present = _present_labels(ref.array) - {0}
        found |= ref_present
        pred = _read_label_image(pred_path)
        _check_geometry(case, pred_path, pred, ref)
        pred_values[case] = _present_labels(pred.array)
        if wanted is not None:
            if not pred_values[case] <= {0, *wanted}:
                continue  # an error below; no use scoring it
            case_labels = wanted
        else:
            case_labels = tuple(sorted(ref_present | (pred_values[case] - {0})))
        per_case[case] = score_case(pred.array, ref.array, ref.spacing, case_labels, tol) if case_labels else []

    if wanted is None and not found:
        raise ScoringInputError(f"the references in {ref_dir} hold no foreground label: pass the labels to score")
    allowed = {0, *(found if wanted is None else wanted)}
    foreign = [
        f"{preds[case].name} ({_few(sorted(values - allowed))})"
        for case, values in pred_values.items()
        if not values <= allowed
    ]
    if foreign:
        source = "found in the references" if wanted is None else "to score"
        raise ScoringInputError(
            f"{len(foreign)} prediction(s) in {pred_dir} hold values other than background 0 and the "
            f"labels {source} ({_few(sorted(allowed - {0}))}): {_few(foreign)}"
        )
    if wanted is None:
        wanted = tuple(sorted(found))
    records = []
    for case, rows in per_case.items():
        by_label = {row["label"]: row for row in rows}
        for label in wanted:
            row = by_label.get(label) or _row(label, math.nan, math.nan, 0, 0)
            records.append({"case": case, **row})
    df = pd.DataFrame.from_records(records, columns=list(CASE_COLUMNS))
    df = df.astype({"case": str, "label": int, "dice": float, "nsd": float, "ref_voxels": int, "pred_voxels": int})
    df = df.sort_values(["case", "label"], kind="stable").reset_index(drop=True)
    df.attrs["tolerance_mm"] = tol
    return df


def summarize(cases) -> pd.DataFrame:
    """Per-label aggregates of a ``cases.csv`` table: a DataFrame indexed by label with
    ``n_cases``, ``n_nan`` (both empty, left out of the means), ``dice_mean``, ``nsd_mean``
    (nan-means over cases). A label whose every case is NaN gets NaN means."""
    import pandas as pd

    rows = []
    for label, group in cases.groupby("label", sort=True):
        rows.append(
            {
                "label": int(label),
                "n_cases": int(len(group)),
                "n_nan": int(group["dice"].isna().sum()),
                "dice_mean": float(group["dice"].mean()) if group["dice"].notna().any() else math.nan,
                "nsd_mean": float(group["nsd"].mean()) if group["nsd"].notna().any() else math.nan,
            }
        )
    return pd.DataFrame.from_records(rows, columns=["label", "n_cases", "n_nan", "dice_mean", "nsd_mean"]).set_index(
        "label"
    )


def cases_csv_text(cases) -> str:
    """The ``cases.csv`` text of a per-case table's ``CASE_COLUMNS`` (``harness.runs.cases_csv_text``,
    the one cases.csv writer: NaN written as ``nan``, floats round-trip)."""

    return table_text(cases.loc[:, list(CASE_COLUMNS)])


def rescore(
    pred_dir: Path | str,
    ref_dir: Path | str,
    out: Path | str,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
):
    """:func:`score_folders`, then write the table's ``CASE_COLUMNS`` to ``out`` atomically
    (``harness.runs.write_cases_csv``, the writer of a run's cases.csv); returns the table."""

    cases = score_folders(pred_dir, ref_dir, labels=labels, tolerance_mm=tolerance_mm)
    write_cases_csv(Path(out), cases.loc[:, list(CASE_COLUMNS)])
    return cases


def format_summary(cases) -> str:
    """A few lines for a terminal: per-label means, case count, NSD tolerance."""
    summary = summarize(cases)
    n_cases = int(cases["case"].nunique())
    tol = cases.attrs.get("tolerance_mm")
    head = f"{n_cases} case(s)" + (f", NSD tolerance {tol:g} mm" if tol is not None else "")
    lines = [head, f"{'label':>6} {'dice':>8} {'nsd':>8} {'n_nan':>6}"]
    for label, row in summary.iterrows():
        lines.append(f"{label:>6} {row['dice_mean']:>8.4f} {row['nsd_mean']:>8.4f} {int(row['n_nan']):>6}")
    if len(summary) > 1:
        lines.append(f"{'mean':>6} {summary['dice_mean'].mean():>8.4f} {summary['nsd_mean'].mean():>8.4f}")
    lines.append("(means over cases ignore NaN = label absent from both reference and prediction)")
    return "\n".join(lines)
