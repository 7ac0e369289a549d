"""Classification cases: reading and validating them, the folds, and the preprocessing cache.

Axis order: arrays are (z, y, x) as SimpleITK's ``GetArrayFromImage`` returns them, and the
task's ``target_spacing`` and ``patch_size`` are in that same array order (nnU-Net's
convention); SimpleITK calls take the reversed (x, y, z) order.

Preprocessing is done once per task, patch and recipe preprocessing configuration, for every
labelled case, and shared by all submissions and the baselines. Under the ``ssl3d-2025`` recipe
it is the SSL3D 2025 organizers' ``run_case`` (SSL3D_classification,
``datasets/preprocess_3D_data/datasets/template_brain_preprocessing.py``), step by step
(``preprocess_case`` has the details):

1. resample the mask and every channel to the target spacing with nnU-Net's own
   ``resample_data_or_seg_to_spacing`` (spline order ``resampling_order`` = 3 for the images
   *and* for the mask, one 3-D resize, no separate z), all from the mask's spacing;
2. centre = the mean voxel coordinate of the resampled mask, truncated to integers (not the
   bounding-box centre);
3. voxels outside the resampled mask are set to 0 (``zero_outside_mask``);
4. crop ``[c - p//2, c - p//2 + p)`` per axis, zero padding where the window leaves the volume;
5. z-score every channel over the whole crop, zeros (background and padding) included.

A task without masks has each whole image resized to the patch (after resampling to the target
spacing) and then z-scored.

Cross-validation (``split_cases``) is the recipe's: scikit-learn's ``KFold`` (the organizers')
or ``StratifiedKFold``, shuffled with the task's or the recipe's seed.

The cache folder is named by a hash of what determines its content (spacing, patch, channels,
the recipe's preprocessing fields, the preprocessing version and the data files' names, sizes
and mtimes); a ``COMPLETE`` marker is written last, and an exclusive file lock keeps two jobs
from preprocessing at once.

Over 450 lines for a reason: each preprocessing step's docstring says which line of the
organizers' code it reproduces and where it departs from it, beside the code that does it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.finetune.cache import build_once
from harness.recipes import SSL3D_2025, ClassificationRecipe
from harness.runs import ResultsLayout, write_json_atomic
from harness.task_types import CLASSIFICATION
from harness.tasks.labels import read_labels_file

#: Bump when preprocessing changes what ends up in the cache.
PREPROCESS_VERSION = "2"
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
    """``case_id -> label`` from a ``case_id,label`` CSV, in file order; the first problem
    (``harness.tasks.labels``, which the data check reports in full) is an error naming the file
    and the line."""
    table = read_labels_file(labels_csv, classes)
    if table.problems:
        raise ClassificationDataError(f"{labels_csv}: {table.problems[0]}")
    return table.labels


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
            raise ClassificationDataError(f"{task.source}: test_cases {unknown} are not labelled in {task.labels_csv}")
        if len(set(task.test_cases)) != len(task.test_cases):
            dup = sorted({c for c in task.test_cases if task.test_cases.count(c) > 1})
            raise ClassificationDataError(f"{task.source}: test_cases lists {dup} more than once")
    return cases


# ----------------------------------------------------------------------------- folds
def _classification_recipe(recipe: ClassificationRecipe | None) -> ClassificationRecipe:
    """``recipe``, or ``ssl3d-2025``'s classification part when it is ``None``."""
    return recipe if recipe is not None else SSL3D_2025.part(CLASSIFICATION, ClassificationRecipe)


def split_cases(
    task, cases: Sequence[ClassificationCase], fold: int, recipe: ClassificationRecipe | None = None
) -> tuple[list[str], list[str]]:
    """``(train case ids, test case ids)`` of ``fold``, each in labels-file order.

    With an explicit ``test_cases`` list there is one fold (0): those cases are the test set and
    every other labelled case trains. Otherwise ``recipe.split`` (``recipe``: the job's
    ``ClassificationRecipe``; ``None`` is ``ssl3d-2025``'s) draws ``task.folds.k`` folds with
    ``random_state`` = the task's ``folds.seed``, else the recipe's ``split_seed`` (12345):

    * ``kfold`` (``ssl3d-2025``): scikit-learn's ``KFold(k, shuffle=True, random_state=seed)``
      over the cases in labels-file order, not stratified, as the organizers'
      ``cross_validation.py::generate_crossval_split`` draws them. Their case list is
      ``list(set(ids))``, whose order follows Python's string hashing (``PYTHONHASHSEED``), so
      their exact folds cannot be reproduced without their ``splits.json``; the labels file's
      order is the reproducible stand-in. A fold may miss a class: that is not an error here
      (the metrics report what is undefined).
    * ``stratified-kfold``: ``StratifiedKFold(k, shuffle=True, random_state=seed)`` over the
      labels in labels-file order (a class with fewer than k cases is missing from some folds).
    """
    try:
        return task.fold_split(
            [c.case_id for c in cases], [c.label_index for c in cases], fold, _classification_recipe(recipe)
        )
    except ValueError as e:
        raise ClassificationDataError(str(e)) from None


# ----------------------------------------------------------------------------- preprocessing
#: The recipe fields preprocessing depends on (part of the cache key).
PREPROCESSING_FIELDS = ("resampling_order", "crop_centre", "zero_outside_mask", "normalization", "without_mask")


def preprocessing_values(recipe: ClassificationRecipe | None = None) -> dict:
    """The recipe's preprocessing choices (``PREPROCESSING_FIELDS``), as JSON values."""
    part = _classification_recipe(recipe)
    return {name: getattr(part, name) for name in PREPROCESSING_FIELDS}


def crop_or_pad(volume: np.ndarray, centre: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The ``patch``-sized block of ``volume`` (C, Z, Y, X) around ``centre``: voxels
    ``[c - p//2, c - p//2 + p)`` of each axis, zeros where that leaves the volume; float32.

    This is the organizers' ``crop_center_with_padding_np`` for even patch sizes (every patch
    the tracks take). For an odd size theirs copies ``[c - p//2, c + p//2)``, one voxel fewer,
    and leaves the last slice of the patch zero; here the window is a full ``p`` wide.
    """
    out = np.zeros((volume.shape[0], *patch), dtype=np.float32)
    src, dst = [], []
    for c, p, n in zip(centre, patch, volume.shape[1:]):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, n)
        if hi <= lo:  # centre so far out that nothing overlaps: leave zeros
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    to, of = (slice(None), *dst), (slice(None), *src)
    out[to] = volume[of]
    return out


def _read_volume(path: Path, case: str, what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(array (z, y, x) in the file's own pixel type, spacing (z, y, x))``; errors name the file."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ClassificationDataError(f"case {case!r}: {what} {path} cannot be read: {e}") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ClassificationDataError(
            f"case {case!r}: {what} {path} is a {img.GetDimension()}D image with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel; a single-component 3D volume is expected"
        )
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in img.GetSpacing()[::-1])


def _zscore(crop: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """nnU-Net's ``ZScoreNormalization`` of every channel over all its voxels, in float32:
    ``(x - mean) / max(std, 1e-8)`` (numpy std, ddof 0). Returns the array and the statistics."""
    out = crop.astype(np.float32)  # a copy
    means, stds = [], []
    for ch in out:
        mean, std = ch.mean(), ch.std()
        ch -= mean
        ch /= max(std, 1e-8)
        means.append(float(mean))
        stds.append(float(std))
    return out, means, stds


def preprocess_case(
    case: ClassificationCase,
    target_spacing: Sequence[float],
    patch: Sequence[int],
    recipe: ClassificationRecipe | None = None,
) -> tuple[np.ndarray, dict]:
    """``(array float32 (C, *patch), info)`` for one case, as ``recipe`` (the job's
    ``ClassificationRecipe``; ``None`` is ``ssl3d-2025``'s) preprocesses it.

    This is the organizers' ``run_case`` (SSL3D_classification,
    ``template_brain_preprocessing.py``), in their order:

    With a mask:

    1. the mask and each channel are resampled from the **mask's** spacing (the organizers never
       read the image's; ``load_cases`` has checked that all files of a case share one grid) to
       ``target_spacing`` with nnU-Net's ``resample_data_or_seg_to_spacing``: one 3-D resize
       (``force_separate_z=False``), spline order ``recipe.resampling_order`` (3) for the images
       (skimage ``resize``, ``mode='edge'``, no anti-aliasing) and, as theirs, for the mask too
       (``is_seg=True``: each label's indicator resized with order 3);
    2. the centre is the mean voxel index of the resampled mask's voxels equal to 1, truncated
       (``np.argwhere(mask == 1).mean(0).astype(int)``), not the bounding-box centre. A
       multi-label mask is binarised first (every nonzero label counts as 1); the organizers'
       code would centre on label 1 alone and multiply the image by the label values;
    3. ``zero_outside_mask``: voxels outside the resampled mask are set to 0 (after resampling,
       before cropping: their ``data_1mm *= mask_1mm``);
    4. ``crop_or_pad`` to ``patch`` around the centre, zero padding outside the volume;
    5. z-score per channel over the whole crop, zeroed background and padding included (their
       ``ZScoreNormalization`` with ``seg >= 0``, which is true everywhere), float32.

    Without a mask (the task has no masks folder): each channel is resampled to the target
    spacing from its own spacing as above and the whole image is then resized to ``patch``
    (nnU-Net's ``resample_data_or_seg_to_shape``, same order), no cropping, then z-scored. This
    is what the organizers' no-mask branch sets out to do; as written it raises ``NameError``
    (``original_spacing`` is only assigned when there is a mask).

    Pixel type: every file is read in its stored pixel type, and nnU-Net's resampling casts its
    result back to the input's type (``dtype_out = data.dtype``), exactly as the organizers'
    copy does: an integer image (e.g. int16) has its interpolated values truncated toward zero
    to integers (skimage clips the result to the input's range, so nothing wraps around); a
    float image is unaffected. A volume that needs no resampling is passed through unchanged.
    The crop is float32 from there on.

    ``info`` records the centre (``None`` without a mask), what it is centred on, the resampled
    shape, the input pixel type and each channel's mean and std over the crop (before the
    z-score). Errors (an unreadable file, NaN or inf voxels, an empty mask) name the case and the
    file. (SimpleITK's NIfTI reader, which the organizers use too, already reads NaN voxels as 0,
    so the NaN check guards against other readers and formats.)
    """
    part = _classification_recipe(recipe)
    _check_supported(part)
    target = tuple(float(s) for s in target_spacing)
    patch = tuple(int(p) for p in patch)
    volumes = _read_images(case)
    resample = _Resampler(target, int(part.resampling_order))
    if case.mask is not None:
        channels, centre, resampled_shape = _crop_around_mask(case, volumes, patch, resample, part.zero_outside_mask)
        centred_on = "mask centre of mass"
    else:
        channels, resampled_shape = _resize_to_patch(volumes, patch, resample)
        centre, centred_on = None, "none: the whole image resized to the patch"
    out, mean, std = _zscore(np.stack(channels))
    dtypes = sorted({str(arr.dtype) for arr, _ in volumes})
    info = {
        "case": case.case_id,
        "label": case.label,
        "image_dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "resampled_shape": resampled_shape,
        "centre": list(centre) if centre is not None else None,
        "centred_on": centred_on,
        "channel_mean": mean,
        "channel_std": std,
    }
    return out, info


def _check_supported(part: ClassificationRecipe) -> None:
    for name, supported in (
        ("crop_centre", "mask-centre-of-mass"),
        ("normalization", "zscore-after-crop"),
        ("without_mask", "resize-to-patch"),
    ):
        if getattr(part, name) != supported:
            raise ValueError(f"recipe classification.{name} {getattr(part, name)!r} is not implemented")


def _read_images(case: ClassificationCase) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """Every channel's ``(array, spacing)`` in its stored pixel type; NaN or inf is an error."""
    volumes = []
    for path in case.images:
        arr, spacing = _read_volume(path, case.case_id, "image")
        if not np.all(np.isfinite(arr)):
            raise ClassificationDataError(f"case {case.case_id!r}: image {path} holds NaN or inf voxels")
        volumes.append((arr, spacing))
    return volumes


@dataclass(frozen=True)
class _Resampler:
    """nnU-Net's resampling to the target spacing (one 3-D resize, spline ``order``)."""

    target: tuple[float, ...]
    order: int

    def to_spacing(self, arr: np.ndarray, spacing, is_seg: bool) -> np.ndarray:
        from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_spacing

        return resample_data_or_seg_to_spacing(
            arr[None], spacing, self.target, is_seg=is_seg, order=self.order, force_separate_z=False
        )[0]

    def to_shape(self, data: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
        """``data`` (at the target spacing) resized to ``patch``, float32."""
        from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

        resize_spacing = [t / p * s for t, p, s in zip(self.target, patch, data.shape)]
        return resample_data_or_seg_to_shape(
            data[None], patch, self.target, resize_spacing, is_seg=False, order=self.order, force_separate_z=False
        )[0].astype(np.float32)


def _crop_around_mask(case: ClassificationCase, volumes, patch, resample: _Resampler, zero_outside_mask: bool):
    """Steps 1 to 4 with a mask: ``(channels, centre, resampled shape)``; every file is resampled
    from the mask's spacing (``load_cases`` checked that they share one grid)."""
    assert case.mask is not None
    mask_arr, spacing = _read_volume(case.mask, case.case_id, "mask")
    mask = resample.to_spacing((mask_arr != 0).astype(np.uint8), spacing, is_seg=True)
    coords = np.argwhere(mask == 1)
    if coords.size == 0:
        where = "is empty" if not np.any(mask_arr) else f"is empty after resampling to {list(resample.target)} mm"
        raise ClassificationDataError(f"case {case.case_id!r}: mask {case.mask} {where}")
    centre = tuple(int(v) for v in coords.mean(axis=0).astype(int))
    channels = []
    for arr, _ in volumes:
        data = resample.to_spacing(arr, spacing, is_seg=False)
        if zero_outside_mask:
            data = np.where(mask != 0, data, np.zeros((), dtype=data.dtype))
        channels.append(crop_or_pad(data[None], centre, patch)[0])
    return channels, centre, list(mask.shape)


def _resize_to_patch(volumes, patch, resample: _Resampler):
    """Without a mask: ``(channels, resampled shape)``, each channel resampled from its own
    spacing, then the whole image resized to the patch."""
    channels, resampled_shape = [], []
    for arr, spacing in volumes:
        data = resample.to_spacing(arr, spacing, is_seg=False)
        resampled_shape = list(data.shape)
        channels.append(resample.to_shape(data, patch))
    return channels, resampled_shape


def _file_fingerprint(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(
    task, cases: Sequence[ClassificationCase], patch: Sequence[int], recipe: ClassificationRecipe | None = None
) -> str:
    """Hash of what preprocessing depends on: spacing, patch, channels, the recipe's preprocessing
    fields (``PREPROCESSING_FIELDS``; ``None`` is ``ssl3d-2025``'s), version and the data files."""
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
        "preprocessing": preprocessing_values(recipe),
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
    recipe: ClassificationRecipe | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> PreprocessedCache:
    """Preprocess every case once, as ``recipe`` (the job's ``ClassificationRecipe``; ``None`` is
    ``ssl3d-2025``'s) says, into ``<results>/cache/classification/<task>/<key>/``
    (``harness.finetune.cache.build_once``: locked, marked complete last, reused after)."""
    part = _classification_recipe(recipe)
    key = cache_key(task, cases, patch, part)
    folder = ResultsLayout(results).classification_cache(task.name, key)

    def build(folder: Path) -> dict:
        infos = []
        for case in cases:
            array, info = preprocess_case(case, task.target_spacing, patch, part)
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
            "preprocessing": preprocessing_values(part),
            "version": PREPROCESS_VERSION,
        }
        write_json_atomic(folder / "cases.json", {"config": config, "cases": infos})
        return {"key": key, "cases": len(infos)}

    build_once(folder, build, f"{task.name} ({len(cases)} cases)", log)
    return PreprocessedCache(folder)
