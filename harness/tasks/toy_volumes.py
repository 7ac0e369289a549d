"""The synthetic volumes every toy task is made of: a voxel grid in mm, ellipsoids, smooth noise,
and NIfTI writing at the toy spacing. Both toy modules (harness/tasks/toy.py for segmentation,
toy_classification.py) build on it, so neither imports the other's internals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Toy voxel spacing in SimpleITK (x, y, z) order, mm.
TOY_SPACING = (1.2, 1.2, 2.5)
#: Array shape in numpy (z, y, x) order: about 58 x 58 x 60 mm.
TOY_SHAPE = (24, 48, 48)


def grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Physical coordinates (mm) of every voxel centre, z/y/x arrays."""
    sz, sy, sx = TOY_SPACING[2], TOY_SPACING[1], TOY_SPACING[0]
    z, y, x = np.meshgrid(np.arange(shape[0]) * sz, np.arange(shape[1]) * sy, np.arange(shape[2]) * sx, indexing="ij")
    return z, y, x


def ellipsoid(coords, centre, radii) -> np.ndarray:
    z, y, x = coords
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (x - centre[2]) / radii[2]
    ) ** 2 <= 1.0


def smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-8)


def write_volume(array: np.ndarray, path: Path) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(TOY_SPACING)
    img.SetOrigin((0.0, 0.0, 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
