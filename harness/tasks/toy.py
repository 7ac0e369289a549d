"""Small synthetic MRI-like datasets for CI and first runs, in nnU-Net raw format.

Real data through the real code path, only small: each case is a smooth head-like ellipsoid with
a slow bias field and Rician-like noise, containing the structures to segment. Voxels are
anisotropic (in-plane 1.2 mm, slices 2.5 mm) so that resampling to the 1 mm target matters.
Everything is seeded: the same call writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from harness.tasks.toy_classification import write_toy_classification
from harness.tasks.toy_volumes import TOY_SHAPE, TOY_SPACING, ellipsoid, grid, smooth_noise, write_volume

__all__ = ["TOY_SHAPE", "TOY_SPACING", "synth_case", "write_segmentation_dataset", "write_toy_data"]

SEG_ONE_CHANNEL = "ToySegOneChannel"
SEG_TWO_CHANNEL = "ToySegTwoChannel"


def synth_case(rng: np.random.Generator, n_labels: int, contrasts: list[tuple[float, ...]]):
    """One case: ``(list of channel images, label map)`` as float32/uint8 (z, y, x) arrays.

    ``contrasts[c]`` gives, for channel c, the mean intensity of (background tissue, label 1,
    label 2, ...), so channels can disagree the way T1 and T2 do.
    """
    coords = grid(TOY_SHAPE)
    extent = np.array([TOY_SHAPE[i] * TOY_SPACING[2 - i] for i in range(3)])
    head = ellipsoid(coords, extent / 2, extent * rng.uniform(0.38, 0.45, 3))
    labels = np.zeros(TOY_SHAPE, np.uint8)
    for lab in range(1, n_labels + 1):
        radii = rng.uniform(7.0, 11.0, 3) if lab == 1 else rng.uniform(4.5, 6.5, 3)
        centre = extent / 2 + rng.uniform(-0.18, 0.18, 3) * extent
        labels[ellipsoid(coords, centre, radii) & head & (labels == 0)] = lab
    bias = 1.0 + 0.15 * smooth_noise(rng, TOY_SHAPE, 8)
    images = []
    for contrast in contrasts:
        img = np.where(head, contrast[0], 0.0)
        for lab in range(1, n_labels + 1):
            img = np.where(labels == lab, contrast[lab], img)
        img = ndimage.gaussian_filter(img, 0.6) * bias
        texture = 0.08 * contrast[0] * smooth_noise(rng, TOY_SHAPE, 1.5)
        noise = rng.normal(0, 0.05 * max(contrast), TOY_SHAPE)
        images.append(np.abs(img + texture * head + noise).astype(np.float32))
    return images, labels


def write_segmentation_dataset(
    out: Path,
    *,
    channel_names: dict[str, str],
    labels: dict[str, int],
    contrasts: list[tuple[float, ...]],
    n_train: int,
    n_test: int,
    seed: int,
) -> Path:
    """An nnU-Net raw dataset (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json) at ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_fg = len(labels) - 1
    for split, n, prefix in (("Tr", n_train, "train"), ("Ts", n_test, "test")):
        for i in range(n):
            case = f"{prefix}_{i:03d}"
            images, seg = synth_case(rng, n_fg, contrasts)
            for c, img in enumerate(images):
                write_volume(img, out / f"images{split}" / f"{case}_{c:04d}.nii.gz")
            write_volume(seg, out / f"labels{split}" / f"{case}.nii.gz")
    dataset_json = {
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": n_train,
        "file_ending": ".nii.gz",
        "name": out.name,
        "description": "synthetic toy data written by `harness make-toy-data`",
    }
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
    return out


def write_toy_data(out: Path, seed: int = 0) -> list[Path]:
    """All toy datasets under ``out`` (the folder the toy registry's relative paths point at)."""
    out = Path(out)
    written = [
        write_segmentation_dataset(
            out / SEG_ONE_CHANNEL,
            channel_names={"0": "T1"},
            labels={"background": 0, "lesion": 1, "node": 2},
            contrasts=[(1.0, 2.2, 0.4)],
            n_train=8,
            n_test=3,
            seed=seed,
        ),
        write_segmentation_dataset(
            out / SEG_TWO_CHANNEL,
            channel_names={"0": "T1", "1": "T2"},
            labels={"background": 0, "tumour": 1},
            contrasts=[(1.0, 1.3), (0.8, 2.4)],
            n_train=8,
            n_test=3,
            seed=seed + 1,
        ),
    ]
    written.append(write_toy_classification(out, seed=seed + 2))
    return written
