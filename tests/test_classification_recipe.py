"""The ``ssl3d-2025`` classification recipe reproduces the SSL3D 2025 organizers' pipeline.

Pinned here (fast, no training): preprocessing order (nnU-Net resampling of image and mask,
centre of mass of the resampled mask, zero outside the mask, crop, then z-score over the whole
crop), the no-mask path (whole image resized to the patch), the unstratified KFold split with
the recipe's seed, and the batchgeneratorsv2 transform list with the organizers' parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.preprocessing.resampling.default_resampling import (
    resample_data_or_seg_to_shape,
    resample_data_or_seg_to_spacing,
)
from sklearn.model_selection import KFold, StratifiedKFold

from harness.finetune.classification.augment import SimulatedLowResolution, build_augmentation
from harness.finetune.classification.data import (
    ClassificationDataError,
    cache_key,
    load_cases,
    preprocess_case,
    preprocess_task,
    split_cases,
)
from harness.recipes import SSL3D_2025, ClassificationAugmentation
from harness.tasks.registry import parse_task

RECIPE = SSL3D_2025.part("classification")
SHAPE = (12, 10, 8)  # (z, y, x) voxels of 2 mm
SPACING = 2.0
PATCH = (8, 8, 8)


# ----------------------------------------------------------------------------- helpers
def write_nifti(path: Path, array: np.ndarray, spacing: float = SPACING) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((spacing,) * 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def asymmetric_mask() -> np.ndarray:
    """A block with a thin arm: its centre of mass is not its bounding-box centre."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[3:7, 3:7, 2:6] = 1
    mask[7:11, 3, 2] = 1  # the arm, along z
    mask[3, 7:9, 2] = 1  # a shorter one along y
    return mask


def make_task(
    root: Path,
    labels: list[tuple[str, str]],
    images: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    **extra,
):
    """A classification task at ``root/t.yaml`` with one channel; cases without an image get a
    random one."""
    rng = np.random.default_rng(0)
    images = images or {}
    for case, _ in labels:
        arr = images.get(case, rng.normal(100, 20, SHAPE).astype(np.float32))
        write_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", arr)
    if masks is not None:
        for case, _ in labels:
            write_nifti(root / "masksTr" / f"{case}.nii.gz", masks.get(case, asymmetric_mask()))
    (root / "labels.csv").write_text("case_id,label\n" + "".join(f"{c},{lab}\n" for c, lab in labels))
    data = {
        "name": "TinyCls",
        "type": "classification",
        "images": "imagesTr",
        "labels": "labels.csv",
        "classes": sorted({lab for _, lab in labels}),
        "target_spacing": [1.0, 1.0, 1.0],
        **extra,
    }
    if masks is not None:
        data["masks"] = "masksTr"
    return parse_task(data, source=root / "t.yaml")


def to_1mm(arr: np.ndarray, is_seg: bool) -> np.ndarray:
    return resample_data_or_seg_to_spacing(arr[None], (SPACING,) * 3, (1.0,) * 3, is_seg=is_seg, order=3)[0]


def crop(arr: np.ndarray, centre, patch=PATCH) -> np.ndarray:
    """``[c - p//2, c - p//2 + p)`` per axis with zero padding, by hand."""
    pad = max(patch)
    padded = np.pad(arr, pad)
    return padded[tuple(slice(c + pad - p // 2, c + pad - p // 2 + p) for c, p in zip(centre, patch))]


# ----------------------------------------------------------------------------- preprocessing
def test_crop_centre_is_the_truncated_centre_of_mass_of_the_resampled_mask(tmp_path):
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], masks={})
    case = load_cases(task)[0]
    out, info = preprocess_case(case, task.target_spacing, PATCH, RECIPE)
    mask_1mm = to_1mm(asymmetric_mask(), is_seg=True)
    assert info["resampled_shape"] == [24, 20, 16] == list(mask_1mm.shape)
    expected = tuple(np.argwhere(mask_1mm == 1).mean(axis=0).astype(int))
    idx = np.nonzero(mask_1mm)
    bbox_centre = tuple(int((i.min() + i.max() + 1) // 2) for i in idx)
    assert expected != bbox_centre  # the mask is asymmetric enough to tell them apart
    assert tuple(info["centre"]) == expected and info["centred_on"] == "mask centre of mass"
    assert out.shape == (1, *PATCH) and out.dtype == np.float32


def test_zero_outside_mask_then_crop_then_zscore_over_the_whole_crop(tmp_path):
    # A constant image: after zeroing outside the mask the crop holds 100 inside, 0 outside (and
    # in the padding). The z-score over the whole crop then has exactly two values, fixed by the
    # inside fraction f: (1 - f) / s and -f / s with s = sqrt(f (1 - f)).
    const = np.full(SHAPE, 100.0, dtype=np.float32)
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], images={"c0": const}, masks={})
    case = load_cases(task)[0]
    out, info = preprocess_case(case, task.target_spacing, PATCH, RECIPE)
    mask_1mm = to_1mm(asymmetric_mask(), is_seg=True)
    inside = crop(mask_1mm, info["centre"]) == 1
    f = inside.mean()
    assert 0 < f < 1
    s = math.sqrt(f * (1 - f))
    np.testing.assert_allclose(out[0][inside], (1 - f) / s, rtol=1e-5)
    np.testing.assert_allclose(out[0][~inside], -f / s, rtol=1e-5)
    assert info["channel_mean"] == [pytest.approx(100 * f, rel=1e-5)]
    assert info["channel_std"] == [pytest.approx(100 * s, rel=1e-5)]


def test_random_image_matches_the_organizers_order_by_hand(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(300, 50, SHAPE).astype(np.float32)
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], images={"c0": image}, masks={})
    case = load_cases(task)[0]
    out, info = preprocess_case(case, task.target_spacing, PATCH, RECIPE)
    mask_1mm = to_1mm(asymmetric_mask(), is_seg=True)
    centre = tuple(np.argwhere(mask_1mm == 1).mean(axis=0).astype(int))
    expected = crop(to_1mm(image, is_seg=False) * mask_1mm, centre).astype(np.float32)
    expected = (expected - expected.mean()) / max(expected.std(), 1e-8)
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-5)
    # normalised after the crop, over all of it (zeros included): mean 0, std 1
    assert abs(float(out.mean())) < 1e-5 and float(out.std()) == pytest.approx(1.0, abs=1e-5)
    # the voxels outside the mask were 0 before the z-score: one value, -mean/std
    outside = out[0][crop(mask_1mm, centre) == 0]
    np.testing.assert_allclose(outside, -info["channel_mean"][0] / info["channel_std"][0], rtol=1e-5)


def test_without_masks_the_whole_image_is_resized_to_the_patch(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.normal(50, 10, SHAPE).astype(np.float32)
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], images={"c0": image})
    assert task.masks_dir is None
    case = load_cases(task)[0]
    out, info = preprocess_case(case, task.target_spacing, PATCH, RECIPE)
    one_mm = to_1mm(image, is_seg=False)
    assert info["resampled_shape"] == [24, 20, 16] and info["centre"] is None
    resized = resample_data_or_seg_to_shape(one_mm[None], PATCH, (1.0,) * 3, (3.0, 2.5, 2.0), order=3)[0]
    expected = (resized - resized.mean()) / resized.std()
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-5)
    assert out.shape == (1, *PATCH)


def test_empty_mask_names_the_case_and_file(tmp_path):
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], masks={"c0": np.zeros(SHAPE, dtype=np.uint8)})
    with pytest.raises(ClassificationDataError, match=r"case 'c0': mask .*c0\.nii\.gz is empty"):
        preprocess_case(load_cases(task)[0], task.target_spacing, PATCH, RECIPE)


def test_multilabel_mask_counts_every_label(tmp_path):
    labelled = asymmetric_mask() * 2  # label 2 only: the organizers' mask == 1 would find nothing
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], masks={"c0": labelled})
    _, info = preprocess_case(load_cases(task)[0], task.target_spacing, PATCH, RECIPE)
    mask_1mm = to_1mm(asymmetric_mask(), is_seg=True)
    assert tuple(info["centre"]) == tuple(np.argwhere(mask_1mm == 1).mean(axis=0).astype(int))


def test_cache_key_follows_the_recipe_preprocessing(tmp_path):
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], masks={})
    cases = load_cases(task)
    key = cache_key(task, cases, PATCH, RECIPE)
    assert cache_key(task, cases, PATCH, RECIPE.model_copy(update={"zero_outside_mask": False})) != key
    assert cache_key(task, cases, PATCH, RECIPE.model_copy(update={"resampling_order": 1})) != key
    # schedules and the split do not change what preprocessing computes
    assert cache_key(task, cases, PATCH, RECIPE.model_copy(update={"split_seed": 1})) == key
    cache = preprocess_task(task, cases, PATCH, tmp_path / "res", recipe=RECIPE)
    assert cache.path.name == key
    assert cache.info()["config"]["preprocessing"]["crop_centre"] == "mask-centre-of-mass"
    assert cache.array("c0").shape == (1, *PATCH)


# ----------------------------------------------------------------------------- split
LABELS = [
    ("z9", "a"),
    ("c3", "a"),
    ("m1", "a"),
    ("b7", "a"),
    ("q2", "b"),
    ("a5", "b"),
    ("k8", "b"),
    ("x0", "b"),
    ("e4", "a"),
]


def _expected(splitter, ids, y, fold):
    train, test = list(splitter.split(np.zeros(len(ids)), y))[fold]
    return [ids[i] for i in sorted(train)], [ids[i] for i in sorted(test)]


def test_kfold_split_is_sklearn_kfold_over_labels_file_order_not_stratified(tmp_path):
    task = make_task(tmp_path, LABELS)
    cases = load_cases(task)
    ids = [c for c, _ in LABELS]
    y = np.array([c.label_index for c in cases])
    assert RECIPE.split == "kfold" and RECIPE.split_seed == 12345 and task.folds.seed is None
    kfold = KFold(n_splits=3, shuffle=True, random_state=12345)
    strat = StratifiedKFold(n_splits=3, shuffle=True, random_state=12345)
    differs = False
    for fold in range(3):
        got = split_cases(task, cases, fold, RECIPE)
        assert got == _expected(kfold, ids, y, fold)
        differs |= got != _expected(strat, ids, y, fold)
        # the stratified recipe is sklearn's StratifiedKFold with the same seed
        stratified = RECIPE.model_copy(update={"split": "stratified-kfold"})
        assert split_cases(task, cases, fold, stratified) == _expected(strat, ids, y, fold)
    assert differs


def test_task_fold_seed_overrides_the_recipe_and_a_fold_may_miss_a_class(tmp_path):
    task = make_task(tmp_path, LABELS, folds={"k": 3, "seed": 7})
    cases = load_cases(task)
    ids = [c for c, _ in LABELS]
    for fold in range(3):
        assert split_cases(task, cases, fold, RECIPE) == _expected(
            KFold(3, shuffle=True, random_state=7), ids, None, fold
        )
    skewed = [(f"s{i}", "a") for i in range(5)] + [("s5", "b")]
    task = make_task(tmp_path / "skewed", skewed)
    cases = load_cases(task)
    tests = [split_cases(task, cases, fold, RECIPE)[1] for fold in range(3)]
    assert sorted(sum(tests, [])) == sorted(c for c, _ in skewed)
    assert sum("s5" not in t for t in tests) == 2  # two folds test no case of class b


# ----------------------------------------------------------------------------- augmentation
def test_augmentation_is_the_organizers_pipeline():
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    aug = RECIPE.augmentation
    assert aug.low_resolution_p == 0.0  # a no-op in the batchgeneratorsv2 the organizers ran
    transform = build_augmentation(aug, (16, 16, 16))
    ts = transform.transforms
    inner = [t.transform if isinstance(t, RandomTransform) else t for t in ts]
    assert [type(t) for t in inner] == [
        SpatialTransform,
        GaussianNoiseTransform,
        GaussianBlurTransform,
        MultiplicativeBrightnessTransform,
        ContrastTransform,
        GammaTransform,
        GammaTransform,
        MirrorTransform,
    ]
    assert [t.apply_probability for t in ts[1:-1]] == [0.1, 0.2, 0.15, 0.15, 0.1, 0.3]

    spatial = ts[0]
    assert isinstance(spatial.rotation, float)  # a scalar: every axis turns by exactly +30 degrees
    # SSL3D_classification cli_configs/data/*.yaml: `rotation_for_DA: 0.523599` (not radians(30))
    assert spatial.rotation == 0.523599
    assert (spatial.p_rotation, spatial.p_scaling, spatial.p_elastic_deform) == (0.2, 0.2, 0)
    assert tuple(spatial.scaling) == (0.7, 1.4) and spatial.p_synchronize_scaling_across_axes == 1
    assert spatial.random_crop is False and tuple(spatial.patch_size) == (16, 16, 16)

    noise, blur, bright, contrast, gamma_inv, gamma, mirror = inner[1:]
    assert tuple(noise.noise_variance) == (0.0, 0.1) and noise.p_per_channel == 1 and noise.synchronize_channels
    assert tuple(blur.blur_sigma) == (0.5, 1.0) and blur.p_per_channel == 0.5 and blur.benchmark
    assert not blur.synchronize_axes and not blur.synchronize_channels
    assert isinstance(bright.multiplier_range, BGContrast) and bright.multiplier_range.contrast_range == (0.75, 1.25)
    assert isinstance(contrast.contrast_range, BGContrast) and contrast.contrast_range.contrast_range == (0.75, 1.25)
    assert contrast.preserve_range and not contrast.synchronize_channels
    for g, invert in ((gamma_inv, 1.0), (gamma, 0.0)):
        assert g.gamma.contrast_range == (0.7, 1.5) and g.p_invert_image == invert and g.p_retain_stats == 1
    assert tuple(mirror.allowed_axes) == (0, 1, 2)

    torch.manual_seed(0)
    np.random.seed(0)
    x = torch.randn(1, 16, 16, 16)
    for _ in range(3):
        assert transform(image=x.clone())["image"].shape == x.shape

    # the organizers' configured low-resolution probability, when asked for, sits after contrast,
    # as the harness's own transform (not the installed batchgeneratorsv2's)
    low = build_augmentation(aug.model_copy(update={"low_resolution_p": 0.25}), (16, 16, 16)).transforms[5]
    assert isinstance(low.transform, SimulatedLowResolution) and low.apply_probability == 0.25
    assert not isinstance(low.transform, SimulateLowResolutionTransform)
    assert low.transform.scale == (0.5, 1.0) and low.transform.p_per_channel == 0.5


def test_simulated_low_resolution_is_the_harness_own():
    """Shrink by one factor for all axes (nearest), back by trilinear interpolation: checked
    against torch's interpolation called directly, for a fixed factor."""
    import torch.nn.functional as F

    x = torch.randn(2, 12, 10, 8)
    t = SimulatedLowResolution(scale=(0.5, 0.5), p_per_channel=1.0)
    params = t.get_parameters(image=x)
    assert params["factors"] == {0: 0.5, 1: 0.5}
    out = t._apply_to_image(x.clone(), **params)
    for c in range(2):
        small = F.interpolate(x[c][None, None], [6, 5, 4], mode="nearest-exact")
        expected = F.interpolate(small, [12, 10, 8], mode="trilinear")[0, 0]
        assert torch.equal(out[c], expected)
    assert not torch.equal(out, x)
    untouched = SimulatedLowResolution(scale=(0.5, 1.0), p_per_channel=0.0)
    assert torch.equal(untouched(image=x.clone())["image"], x)


def test_augmentation_switches_and_validation():
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    assert build_augmentation(ClassificationAugmentation(enabled=False), (16, 16, 16)) is None
    no_noise = build_augmentation(ClassificationAugmentation(gaussian_noise_p=0.0), (16, 16, 16)).transforms
    assert not any(isinstance(t, RandomTransform) and isinstance(t.transform, GaussianNoiseTransform) for t in no_noise)
    with pytest.raises(ValueError, match="mirror_axes"):
        build_augmentation(ClassificationAugmentation(mirror_axes=(3,)), (16, 16, 16))
    with pytest.raises(ValueError, match="scale"):
        build_augmentation(ClassificationAugmentation(scale=(1.4, 0.7)), (16, 16, 16))


def test_integer_image_keeps_nnunet_dtype_behaviour(tmp_path):
    # nnU-Net's resampling casts back to the input's pixel type: an int16 image is truncated to
    # integers after the cubic resize, as in the organizers' preprocessing.
    rng = np.random.default_rng(3)
    image = rng.integers(0, 1000, SHAPE).astype(np.int16)
    task = make_task(tmp_path, [("c0", "a"), ("c1", "b")], images={"c0": image}, masks={})
    out, info = preprocess_case(load_cases(task)[0], task.target_spacing, PATCH, RECIPE)
    assert info["image_dtype"] == "int16"
    one_mm = to_1mm(image, is_seg=False)
    assert one_mm.dtype == np.int16
    mask_1mm = to_1mm(asymmetric_mask(), is_seg=True)
    expected = crop(one_mm * mask_1mm, info["centre"]).astype(np.float32)
    np.testing.assert_allclose(out[0], (expected - expected.mean()) / expected.std(), rtol=1e-4, atol=1e-5)
