"""Classification cases: reading and validating them, the folds, and the preprocessing cache.

Axis order: arrays are (z, y, x) as SimpleITK's ``GetArrayFromImage`` returns them, and the
task's ``target_spacing`` and ``patch_size`` are in that same array order (nnU-Net's
convention); SimpleITK calls take the reversed (x, y, z) order.

Preprocessing (shared/reference/SSL3D.md section 3) is done once per task and preprocessing
configuration, for every labelled case, and shared by all submissions and the baselines:

1. resample to the target spacing with SimpleITK (linear for images, nearest for masks);
2. z-score every channel with the mean and standard deviation of the whole resampled image;
3. crop or zero-pad to the patch, centred on the bounding box of the mask (or, without masks,
   of the image's nonzero voxels). Zero padding is applied after normalisation, so the padding
   value is the channel mean.

The cache folder is named by a hash of what determines its content (spacing, patch, channels,
the preprocessing version and the data files' names, sizes and mtimes); a ``COMPLETE`` marker is
written last, and an exclusive file lock keeps two jobs from preprocessing at once.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from harness.finetune.cache import build_once
from harness.runs import write_json_atomic

#: Bump when preprocessing changes what ends up in the cache.
PREPROCESS_VERSION = "1"
IMAGE_SUFFIX = ".nii.gz"


class ClassificationDataError(ValueError):
    """A classification task's data is unusable; the message names the case and the file."""


@dataclass(frozen=True)
class ClassificationCase:
    """One labelled case: its class and the files it is read from."""

    case_id: str
    label: str
    label_index: int
    images: tuple[Path, ...]  # one per channel, ``<case>_0000.nii.gz`` ...
    mask: Path | None


# ----------------------------------------------------------------------------- labels and files
def read_labels(labels_csv: Path, classes: Sequence[str]) -> dict[str, str]:
    """``case_id -> label`` from a ``case_id,label`` CSV, in file order.

    Errors name the file and line: missing columns, an empty case id, a label not in ``classes``,
    a case listed twice. An empty table is an error too.
    """
    labels_csv = Path(labels_csv)
    classes = list(classes)
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip() for h in (reader.fieldnames or [])]
            if "case_id" not in fields or "label" not in fields:
                raise ClassificationDataError(
                    f"{labels_csv}: the labels file needs the columns case_id,label; found {fields or 'no header'}"
                )
            reader.fieldnames = fields
            out: dict[str, str] = {}
            first_line: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                case = (row.get("case_id") or "").strip()
                label = (row.get("label") or "").strip()
                if not case and not label:
                    continue  # a blank line
                if not case:
                    raise ClassificationDataError(f"{labels_csv}: line {line}: empty case_id")
                if label not in classes:
                    raise ClassificationDataError(
                        f"{labels_csv}: line {line}: case {case!r} has label {label!r}, which is not one of "
                        f"the task's classes {classes}"
                    )
                if case in out:
                    raise ClassificationDataError(
                        f"{labels_csv}: case {case!r} is listed twice (lines {first_line[case]} and {line})"
                    )
                out[case] = label
                first_line[case] = line
    except OSError as e:
        raise ClassificationDataError(f"{labels_csv}: cannot read the labels file: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise ClassificationDataError(f"{labels_csv}: not a readable CSV file: {e}") from None
    if not out:
        raise ClassificationDataError(f"{labels_csv}: the labels file lists no cases")
    return out


def _read_header(path: Path, case: str, what: str):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise ClassificationDataError(f"case {case!r}: {what} {path} cannot be read as an image: {first}") from None
    dim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    if dim != 3 or any(s < 1 for s in size):
        raise ClassificationDataError(
            f"case {case!r}: {what} {path} is a {dim}D image of size {size}; a 3D volume is expected"
        )
    if reader.GetNumberOfComponents() != 1:
        raise ClassificationDataError(
            f"case {case!r}: {what} {path} has {reader.GetNumberOfComponents()} components per voxel; "
            "channels must be separate files (_0000, _0001, ...)"
        )
    return size, tuple(float(s) for s in reader.GetSpacing())


def load_cases(task) -> list[ClassificationCase]:
    """Every labelled case of ``task`` (a ``ClassificationTask``), validated, in labels-file order.

    Checks: each channel image ``<case>_<cccc>.nii.gz`` exists and is a single-component 3D
    volume, all channels (and the mask) share one voxel grid, the mask exists when the task has a
    masks folder, and every explicit test case is labelled. Errors name the case and the file.
    """
    labels = read_labels(task.labels_csv, task.classes)
    images_dir, masks_dir = task.images_dir, task.masks_dir
    class_index = {c: i for i, c in enumerate(task.classes)}
    cases = []
    for case, label in labels.items():
        paths = tuple(images_dir / f"{case}_{c:04d}{IMAGE_SUFFIX}" for c in range(task.num_channels))
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise ClassificationDataError(
                f"case {case!r} (labelled in {task.labels_csv}): no image file {', '.join(missing)} in "
                f"{images_dir} (the task has {task.num_channels} channel(s))"
            )
        mask = None
        if masks_dir is not None:
            mask = masks_dir / f"{case}{IMAGE_SUFFIX}"
            if not mask.is_file():
                raise ClassificationDataError(f"case {case!r}: no mask file {mask.name} in {masks_dir}")
        grid = None
        for path, what in [(p, "image") for p in paths] + ([(mask, "mask")] if mask else []):
            size, spacing = _read_header(path, case, what)
            if grid is None:
                grid = (size, spacing, path)
            elif size != grid[0] or not np.allclose(spacing, grid[1], rtol=1e-4):
                raise ClassificationDataError(
                    f"case {case!r}: {what} {path.name} has size {size} spacing {spacing}, but "
                    f"{grid[2].name} has size {grid[0]} spacing {grid[1]}; all files of a case must share one grid"
                )
        cases.append(ClassificationCase(case, label, class_index[label], paths, mask))
    if task.test_cases is not None:
        unknown = [c for c in task.test_cases if c not in labels]
        if unknown:
            raise ClassificationDataError(
                f"{task.source}: test_cases {unknown} are not labelled in {task.labels_csv}"
            )
        if len(set(task.test_cases)) != len(task.test_cases):
            dup = sorted({c for c in task.test_cases if task.test_cases.count(c) > 1})
            raise ClassificationDataError(f"{task.source}: test_cases lists {dup} more than once")
    return cases


# ----------------------------------------------------------------------------- folds
def split_cases(task, cases: Sequence[ClassificationCase], fold: int) -> tuple[list[str], list[str]]:
    """``(train case ids, test case ids)`` of ``fold``.

    With an explicit ``test_cases`` list there is one fold (0): those cases are the test set and
    every other labelled case trains. Otherwise scikit-learn's ``StratifiedKFold`` (shuffled,
    ``random_state=folds.seed``) over the labels in labels-file order gives fold ``fold``.
    """
    ids = [c.case_id for c in cases]
    if task.test_cases is not None:
        if fold != 0:
            raise ClassificationDataError(f"task {task.name} has an explicit test list: the only fold is 0, not {fold}")
        test = set(task.test_cases)
        return [i for i in ids if i not in test], [i for i in ids if i in test]
    from sklearn.model_selection import StratifiedKFold

    k = task.folds.k
    if not 0 <= fold < k:
        raise ClassificationDataError(f"task {task.name}: fold {fold} is outside 0..{k - 1}")
    if len(ids) < k:
        raise ClassificationDataError(f"task {task.name}: {len(ids)} labelled cases cannot make {k} folds")
    y = np.array([c.label_index for c in cases])
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=task.folds.seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer than k cases: some folds miss it
        train_idx, test_idx = list(skf.split(np.zeros(len(ids)), y))[fold]
    return [ids[i] for i in sorted(train_idx)], [ids[i] for i in sorted(test_idx)]


# ----------------------------------------------------------------------------- preprocessing
def resample(image, spacing_zyx: Sequence[float], is_mask: bool):
    """Resample a SimpleITK image to ``spacing_zyx`` (mm) over the same physical extent.

    Linear interpolation for images, nearest neighbour for masks; origin and direction kept.
    """
    import SimpleITK as sitk

    new_spacing = tuple(float(s) for s in reversed(spacing_zyx))  # SimpleITK order (x, y, z)
    old_size, old_spacing = image.GetSize(), image.GetSpacing()
    new_size = [max(1, int(round(n * o / s))) for n, o, s in zip(old_size, old_spacing, new_spacing)]
    if tuple(new_size) == tuple(old_size) and np.allclose(old_spacing, new_spacing):
        return image
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor if is_mask else sitk.sitkLinear,
        image.GetOrigin(),
        new_spacing,
        image.GetDirection(),
        0,
        image.GetPixelID() if is_mask else sitk.sitkFloat32,
    )


def _bbox_centre(mask: np.ndarray) -> tuple[int, ...] | None:
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return tuple(int((i.min() + i.max() + 1) // 2) for i in idx)


def crop_or_pad(volume: np.ndarray, centre: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The ``patch``-sized block of ``volume`` (C, Z, Y, X) centred on ``centre``; zeros outside."""
    out = np.zeros((volume.shape[0], *patch), dtype=np.float32)
    src, dst = [], []
    for c, p, n in zip(centre, patch, volume.shape[1:]):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, n)
        if hi <= lo:  # centre so far out that nothing overlaps: leave zeros
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def preprocess_case(case: ClassificationCase, target_spacing: Sequence[float], patch: Sequence[int]) -> tuple[np.ndarray, dict]:
    """``(array float32 (C, *patch), info)`` for one case; ``info`` records geometry and centring."""
    import SimpleITK as sitk

    channels = []
    for path in case.images:
        try:
            img = sitk.ReadImage(str(path), sitk.sitkFloat32)
        except RuntimeError as e:
            raise ClassificationDataError(f"case {case.case_id!r}: image {path} cannot be read: {e}") from None
        if img.GetDimension() != 3:
            raise ClassificationDataError(
                f"case {case.case_id!r}: image {path} is {img.GetDimension()}D; a 3D volume is expected"
            )
        channels.append(sitk.GetArrayFromImage(resample(img, target_spacing, is_mask=False)))
    data = np.stack(channels).astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ClassificationDataError(f"case {case.case_id!r}: image {case.images[0].parent} holds NaN or inf voxels")
    centre_from = "mask"
    centre = None
    if case.mask is not None:
        mask = sitk.GetArrayFromImage(resample(sitk.ReadImage(str(case.mask)), target_spacing, is_mask=True))
        centre = _bbox_centre(mask != 0)
        if centre is None:
            raise ClassificationDataError(f"case {case.case_id!r}: mask {case.mask} is empty")
    else:
        centre_from = "image foreground"
        centre = _bbox_centre(np.any(data != 0, axis=0))
        if centre is None:
            raise ClassificationDataError(f"case {case.case_id!r}: image {case.images[0]} is all zeros")
    mean = data.reshape(data.shape[0], -1).mean(axis=1)
    std = data.reshape(data.shape[0], -1).std(axis=1)
    data = (data - mean[:, None, None, None]) / np.maximum(std, 1e-8)[:, None, None, None]
    out = crop_or_pad(data, centre, patch)
    info = {
        "case": case.case_id,
        "label": case.label,
        "resampled_shape": list(data.shape[1:]),
        "centre": list(centre),
        "centred_on": centre_from,
        "channel_mean": [float(m) for m in mean],
        "channel_std": [float(s) for s in std],
    }
    return out, info


def _file_fingerprint(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(task, cases: Sequence[ClassificationCase], patch: Sequence[int]) -> str:
    """Hash of what preprocessing depends on: spacing, patch, channels, version and the data files."""
    files = [task.labels_csv]
    for c in cases:
        files.extend(c.images)
        if c.mask is not None:
            files.append(c.mask)
    key = {
        "version": PREPROCESS_VERSION,
        "target_spacing": [float(s) for s in task.target_spacing],
        "patch": [int(p) for p in patch],
        "num_channels": int(task.num_channels),
        "files": [_file_fingerprint(Path(f)) for f in files],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PreprocessedCache:
    """A complete cache folder: ``<case>.npy`` arrays (C, *patch) float32 plus ``cases.json``."""

    path: Path

    def array(self, case_id: str) -> np.ndarray:
        """The preprocessed case, memory-mapped read-only."""
        return np.load(self.path / f"{case_id}.npy", mmap_mode="r")

    def info(self) -> dict:
        return json.loads((self.path / "cases.json").read_text())


def preprocess_task(
    task,
    cases: Sequence[ClassificationCase],
    patch: Sequence[int],
    results: Path,
    log: Callable[[str], None] = lambda msg: None,
) -> PreprocessedCache:
    """Preprocess every case once into ``<results>/cache/classification/<task>/<key>/``
    (``harness.finetune.cache.build_once``: locked, marked complete last, reused after)."""
    key = cache_key(task, cases, patch)
    folder = Path(results) / "cache" / "classification" / task.name / key

    def build(folder: Path) -> dict:
        infos = []
        for case in cases:
            array, info = preprocess_case(case, task.target_spacing, patch)
            tmp = folder / f".{case.case_id}.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, array)
            os.replace(tmp, folder / f"{case.case_id}.npy")
            infos.append(info)
        config = {
            "task": task.name,
            "target_spacing": list(task.target_spacing),
            "patch": list(patch),
            "num_channels": task.num_channels,
            "version": PREPROCESS_VERSION,
        }
        write_json_atomic(folder / "cases.json", {"config": config, "cases": infos})
        return {"key": key, "cases": len(infos)}

    build_once(folder, build, f"{task.name} ({len(cases)} cases)", log)
    return PreprocessedCache(folder)
