"""The toy classification task: is the bright-or-dark structure inside the head a sphere or a cube?

Same synthetic MRI-like volumes as the segmentation toy data (harness/tasks/toy_volumes.py: head-like
ellipsoid, slow bias field, noise, anisotropic 1.2 x 1.2 x 2.5 mm voxels), each with one
structure near the centre. The two classes differ in shape (ball vs axis-aligned cube) and, so
that a freshly initialised network separates them within a handful of iterations, in contrast
(the sphere is brighter than the tissue around it, the cube darker). The structure's mask is
written too: the harness centres its crop on it.

Layout written under ``out/ToyClsShape/``::

    imagesTr/<case>_0000.nii.gz    one channel, nnU-Net naming
    masksTr/<case>.nii.gz          the structure (uint8, 1 inside)
    labels.csv                     case_id,label   (label: "sphere" or "cube")

Everything is seeded: the same call writes the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.tasks.toy_volumes import TOY_SHAPE, TOY_SPACING, ellipsoid, grid, smooth_noise, write_volume

CLS_SHAPE = "ToyClsShape"
CLASSES = ("sphere", "cube")
#: Cases per class: 18 in all, 6 per test fold of the toy task's 3-fold split.
CASES_PER_CLASS = 9
#: Mean intensity of head tissue, sphere and cube (the sphere stands out bright, the cube dark).
_TISSUE, _SPHERE, _CUBE = 1.0, 2.2, 0.35


def _structure(rng: np.random.Generator, coords, centre: np.ndarray, label: str) -> np.ndarray:
    """Boolean (z, y, x) mask of a ball (radius 7-10 mm) or cube (half edge 6-8.5 mm) at ``centre`` (mm)."""
    if label == "sphere":
        r = rng.uniform(7.0, 10.0)
        return ellipsoid(coords, centre, (r, r, r))
    h = rng.uniform(6.0, 8.5)
    z, y, x = coords
    return (np.abs(z - centre[0]) <= h) & (np.abs(y - centre[1]) <= h) & (np.abs(x - centre[2]) <= h)


def synth_cls_case(rng: np.random.Generator, label: str) -> tuple[np.ndarray, np.ndarray]:
    """One case of class ``label``: ``(image float32, mask uint8)``, both (z, y, x) = ``TOY_SHAPE``."""
    from scipy import ndimage

    if label not in CLASSES:
        raise ValueError(f"unknown toy class {label!r}; classes: {', '.join(CLASSES)}")
    coords = grid(TOY_SHAPE)
    extent = np.array([TOY_SHAPE[i] * TOY_SPACING[2 - i] for i in range(3)])
    head = ellipsoid(coords, extent / 2, extent * rng.uniform(0.40, 0.46, 3))
    centre = extent / 2 + rng.uniform(-0.08, 0.08, 3) * extent
    mask = _structure(rng, coords, centre, label) & head
    img = np.where(head, _TISSUE, 0.0)
    img = np.where(mask, _SPHERE if label == "sphere" else _CUBE, img)
    bias = 1.0 + 0.15 * smooth_noise(rng, TOY_SHAPE, 8)
    img = ndimage.gaussian_filter(img, 0.6) * bias
    texture = 0.08 * smooth_noise(rng, TOY_SHAPE, 1.5)
    noise = rng.normal(0, 0.05 * _SPHERE, TOY_SHAPE)
    image = np.abs(img + texture * head + noise).astype(np.float32)
    return image, mask.astype(np.uint8)


def write_toy_classification(out: Path, seed: int = 0) -> Path:
    """Write the toy classification dataset to ``out/ToyClsShape`` and return that folder."""
    root = Path(out) / CLS_SHAPE
    rng = np.random.default_rng(seed)
    labels = np.array([c for c in CLASSES for _ in range(CASES_PER_CLASS)])
    rng.shuffle(labels)
    rows = ["case_id,label"]
    for i, label in enumerate(labels):
        case = f"case_{i:03d}"
        image, mask = synth_cls_case(rng, str(label))
        write_volume(image, root / "imagesTr" / f"{case}_0000.nii.gz")
        write_volume(mask, root / "masksTr" / f"{case}.nii.gz")
        rows.append(f"{case},{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
