"""Broken copies of the toy data, one fault each, for the data-check tests.

``python tests/broken_data.py OUT`` writes every variant as ``OUT/<variant>/`` holding
``task_registry/toy/*.yaml`` and ``data/toy/...``: the toy registry and data with one thing
broken (the registry's relative paths still resolve inside the copy). ``clean`` breaks nothing:
the check must pass it, so that it cannot pass the others by refusing everything.

Each variant says what the check must report: ``fragments`` that must all appear in one problem
line, naming the file (``path``, relative to the variant folder) when there is one; ``warning``
variants must pass with that warning.
"""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SEG1 = "data/toy/ToySegOneChannel"
SEG2 = "data/toy/ToySegTwoChannel"
CLS = "data/toy/ToyClsShape"


@dataclass(frozen=True)
class Variant:
    name: str
    breaks: Callable[[Path], None]
    fragments: tuple[str, ...] = ()
    path: str | None = None  # the file or folder the problem must name
    warning: bool = False  # the fault is a warning: the check passes


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _write(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), True)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def truncate(root: Path) -> None:
    path = root / SEG1 / "imagesTr/train_001_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nan_voxels(root: Path) -> None:
    path = root / SEG1 / "imagesTr/train_002_0000.nii.gz"
    image = _read(path)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[3, 10:12, 10:12] = np.nan
    array[4, 5, 5] = np.inf
    _write(_like(array, image), path)


def image_2d(root: Path) -> None:
    path = root / SEG1 / "imagesTr/train_003_0000.nii.gz"
    array = sitk.GetArrayFromImage(_read(path))
    image = sitk.GetImageFromArray(array[array.shape[0] // 2])
    image.SetSpacing((1.2, 1.2))
    _write(image, path)


def image_4d(root: Path) -> None:
    path = root / SEG1 / "imagesTs/test_001_0000.nii.gz"
    array = sitk.GetArrayFromImage(_read(path))
    image = sitk.JoinSeries([sitk.GetImageFromArray(array), sitk.GetImageFromArray(array)])
    _write(image, path)


def missing_channel(root: Path) -> None:
    (root / SEG2 / "imagesTr/train_001_0001.nii.gz").unlink()


def foreign_label(root: Path) -> None:
    path = root / SEG1 / "labelsTr/train_004.nii.gz"
    image = _read(path)
    array = sitk.GetArrayFromImage(image)
    array[0, :3, :3] = 7
    _write(_like(array, image), path)


def label_off_grid(root: Path) -> None:
    path = root / SEG1 / "labelsTr/train_005.nii.gz"
    image = _read(path)
    image.SetSpacing((1.2, 1.2, 3.0))
    _write(image, path)


def channel_off_grid(root: Path) -> None:
    path = root / SEG2 / "imagesTs/test_000_0001.nii.gz"
    image = _read(path)
    image.SetOrigin(tuple(o + 2.0 for o in image.GetOrigin()))
    _write(image, path)


def test_without_reference(root: Path) -> None:
    (root / SEG1 / "labelsTs/test_002.nii.gz").unlink()


def reference_without_image(root: Path) -> None:
    (root / SEG1 / "imagesTs/test_000_0000.nii.gz").unlink()


def train_case_in_test(root: Path) -> None:
    base = root / SEG1
    shutil.copy(base / "imagesTr/train_000_0000.nii.gz", base / "imagesTs/train_000_0000.nii.gz")
    shutil.copy(base / "labelsTr/train_000.nii.gz", base / "labelsTs/train_000.nii.gz")


def too_many_folds(root: Path) -> None:
    path = root / "task_registry/toy/toy_seg_one_channel.yaml"
    path.write_text(path.read_text().replace("num_folds: 2", "num_folds: 20"))


def _labels(root: Path) -> list[list[str]]:
    with open(root / CLS / "labels.csv", newline="") as f:
        return list(csv.reader(f))


def _write_labels(root: Path, rows: list[list[str]]) -> None:
    with open(root / CLS / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def unknown_class(root: Path) -> None:
    rows = _labels(root)
    rows[3][1] = "pyramid"
    _write_labels(root, rows)


def single_class(root: Path) -> None:
    rows = _labels(root)
    _write_labels(root, [rows[0]] + [[case, "sphere"] for case, _ in rows[1:]])


def image_without_label(root: Path) -> None:
    rows = _labels(root)
    _write_labels(root, [r for r in rows if r[0] != "case_006"])


def label_without_image(root: Path) -> None:
    (root / CLS / "imagesTr/case_007_0000.nii.gz").unlink()


def mask_off_grid(root: Path) -> None:
    path = root / CLS / "masksTr/case_008.nii.gz"
    image = _read(path)
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    _write(image, path)


def empty_mask(root: Path) -> None:
    path = root / CLS / "masksTr/case_009.nii.gz"
    image = _read(path)
    _write(_like(np.zeros_like(sitk.GetArrayFromImage(image)), image), path)


def class_missing_from_fold(root: Path) -> None:
    rows = _labels(root)
    cubes = 0
    out = [rows[0]]
    for case, label in rows[1:]:
        if label == "cube":
            cubes += 1
            label = "cube" if cubes == 1 else "sphere"
        out.append([case, label])
    _write_labels(root, out)


VARIANTS: tuple[Variant, ...] = (
    Variant("clean", lambda root: None),
    Variant("truncated", truncate, ("truncated",), f"{SEG1}/imagesTr/train_001_0000.nii.gz"),
    Variant("nan_voxels", nan_voxels, ("5 NaN or infinite voxel(s)",), f"{SEG1}/imagesTr/train_002_0000.nii.gz"),
    Variant("image_2d", image_2d, ("a 2D image",), f"{SEG1}/imagesTr/train_003_0000.nii.gz"),
    Variant("image_4d", image_4d, ("a 4D image",), f"{SEG1}/imagesTs/test_001_0000.nii.gz"),
    Variant(
        "missing_channel",
        missing_channel,
        ("'train_001'", "missing channel", "train_001_0001.nii.gz"),
        f"{SEG2}/imagesTr",
    ),
    Variant("foreign_label", foreign_label, ("label value(s) [7]",), f"{SEG1}/labelsTr/train_004.nii.gz"),
    Variant("label_off_grid", label_off_grid, ("'train_005'", "spacing"), f"{SEG1}/labelsTr/train_005.nii.gz"),
    Variant("channel_off_grid", channel_off_grid, ("'test_000'", "origin"), f"{SEG2}/imagesTs/test_000_0001.nii.gz"),
    Variant(
        "test_without_reference",
        test_without_reference,
        ("'test_002'", "no reference segmentation"),
        f"{SEG1}/imagesTs/test_002_0000.nii.gz",
    ),
    Variant(
        "reference_without_image",
        reference_without_image,
        ("'test_000'", "no image"),
        f"{SEG1}/labelsTs/test_000.nii.gz",
    ),
    Variant("train_case_in_test", train_case_in_test, ("train_000", "both training and test"), f"{SEG1}/imagesTs"),
    Variant(
        "too_many_folds", too_many_folds, ("cannot make", "20 folds"), "task_registry/toy/toy_seg_one_channel.yaml"
    ),
    Variant("unknown_class", unknown_class, ("'pyramid'", "line 4"), f"{CLS}/labels.csv"),
    Variant("single_class", single_class, ("'sphere'", "nothing to classify"), f"{CLS}/labels.csv"),
    Variant(
        "image_without_label", image_without_label, ("'case_006'", "no label"), f"{CLS}/imagesTr/case_006_0000.nii.gz"
    ),
    Variant("label_without_image", label_without_image, ("'case_007'", "no image file"), f"{CLS}/imagesTr"),
    Variant("mask_off_grid", mask_off_grid, ("'case_008'", "direction"), f"{CLS}/masksTr/case_008.nii.gz"),
    Variant("empty_mask", empty_mask, ("mask is empty",), f"{CLS}/masksTr/case_009.nii.gz"),
    Variant("class_missing_from_fold", class_missing_from_fold, ("no 'cube' case",), warning=True),
)


def make_variant(variant: Variant, out: Path, toy_data: Path) -> Path:
    """``out/<variant>``: the toy registry and a copy of ``toy_data`` (a ``make-toy-data``
    folder) with the variant's fault."""
    root = Path(out) / variant.name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "task_registry/toy", root / "task_registry/toy")
    shutil.copytree(toy_data, root / "data/toy")
    variant.breaks(root)
    return root


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/broken_data.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    toy = out / "_toy"
    from harness.tasks.toy import write_toy_data

    write_toy_data(toy)
    for variant in VARIANTS:
        print(make_variant(variant, out, toy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
