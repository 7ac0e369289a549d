"""Classification training augmentation: the SSL3D 2025 organizers' batchgeneratorsv2 pipeline.

``build_augmentation`` is SSL3D_classification's
``augmentation/policies/batchgenerators.py::get_training_transforms``, transform for transform
and in its order, with the parameters of a ``ClassificationAugmentation`` (the recipe's, with the
task's overrides). It runs on one (C, *patch) image tensor, no segmentation, as theirs is called:
``transform(image=x)["image"]``. Validation is not augmented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform
from torch.nn.functional import interpolate

from harness.recipes import ClassificationAugmentation


class SimulatedLowResolution(ImageOnlyTransform):
    """Simulated low resolution of a (C, *spatial) image, the harness's own (batchgeneratorsv2's
    transform of the same name was a no-op up to 0.3.0 with ``ignore_axes=None`` and resamples
    since 0.3.2: a recipe must not depend on which is installed). Each channel, with probability
    ``p_per_channel``, is shrunk by one factor drawn uniformly from ``scale`` for all axes
    (nearest neighbour, sizes rounded), then brought back to its size by linear interpolation."""

    def __init__(self, scale: tuple[float, float], p_per_channel: float):
        super().__init__()
        self.scale, self.p_per_channel = (float(scale[0]), float(scale[1])), float(p_per_channel)

    def get_parameters(self, **data_dict) -> dict:
        n_channels = data_dict["image"].shape[0]
        channels = torch.where(torch.rand(n_channels) < self.p_per_channel)[0].tolist()
        lo, hi = self.scale
        return {"factors": {c: lo + (hi - lo) * float(torch.rand(())) for c in channels}}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        size = img.shape[1:]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        for c, factor in params["factors"].items():
            small = interpolate(img[c][None, None], [max(1, round(n * factor)) for n in size], mode="nearest-exact")
            img[c] = interpolate(small, size, mode=mode)[0, 0]
        return img


def build_augmentation(aug: ClassificationAugmentation, patch: Sequence[int]):
    """batchgeneratorsv2 ``ComposeTransforms`` for one (C, *patch) image tensor, or None when
    ``aug.enabled`` is false (or nothing is left to apply).

    In the organizers' order (a transform whose probability is 0 is left out):

    1. ``SpatialTransform`` (centre crop to ``patch``, no elastic deformation): rotation with
       probability ``rotation_p`` and scaling with probability ``scale_p`` (one factor drawn
       from ``scale`` for all axes). **Quirk kept:** the organizers pass the rotation as one
       float (``rotation_for_DA: 0.523599``), and batchgeneratorsv2's ``sample_scalar`` returns
       a number unchanged, so when rotation fires every axis is rotated by exactly
       ``rotation_radians`` (their 0.523599, about +30 degrees), not by an angle drawn from +-30
       degrees. The angle is passed here as that scalar.
    2. Gaussian noise, std drawn from ``gaussian_noise_variance`` (batchgeneratorsv2 uses the
       drawn value as the standard deviation), all channels alike;
    3. Gaussian blur, sigma from ``gaussian_blur_sigma`` per axis and channel, each channel with
       probability 0.5;
    4. multiplicative brightness and 5. contrast (range preserved), factors from
       ``BGContrast(brightness)`` / ``BGContrast(contrast)`` (half the time below 1, half above);
    6. simulated low resolution (``low_resolution_scale``, axes together, each channel with
       probability 0.5), the harness's own ``SimulatedLowResolution``, so that what it does never
       depends on the installed batchgeneratorsv2. ``ssl3d-2025`` sets its probability to 0
       (inferred): in the batchgeneratorsv2 of the organizers' time (<= 0.3.0) their
       ``SimulateLowResolutionTransform(ignore_axes=None)`` was a no-op (every scale set to 1);
    7. gamma on the inverted image and 8. gamma, ``BGContrast(gamma)``, statistics retained;
    9. mirroring along ``mirror_axes``, each axis with probability 0.5.

    ``mirror_axes`` must be spatial axes 0, 1 or 2 and ``scale`` a range ``0 < low <= high``;
    otherwise ``ValueError``.
    """
    if not aug.enabled:
        return None
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

    _check(aug)
    transforms = [t for t in [_spatial(aug, patch), *_intensity(aug)] if t is not None]
    if aug.mirror_axes:
        transforms.append(MirrorTransform(allowed_axes=tuple(aug.mirror_axes)))
    return ComposeTransforms(transforms) if transforms else None


def _check(aug: ClassificationAugmentation) -> None:
    bad_axes = [a for a in aug.mirror_axes if a not in (0, 1, 2)]
    if bad_axes:
        raise ValueError(f"augmentation.mirror_axes {list(aug.mirror_axes)}: axes must be 0, 1 or 2")
    lo, hi = aug.scale
    if not 0 < lo <= hi:
        raise ValueError(f"augmentation.scale {aug.scale}: need 0 < low <= high")


def _spatial(aug: ClassificationAugmentation, patch: Sequence[int]):
    """Step 1: the centre crop with rotation and scaling, None when neither can fire."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    lo, hi = aug.scale
    p_rotation = aug.rotation_p if aug.rotation_radians > 0 else 0.0
    p_scaling = aug.scale_p if (lo, hi) != (1.0, 1.0) else 0.0
    if p_rotation <= 0 and p_scaling <= 0:
        return None
    return SpatialTransform(
        tuple(int(p) for p in patch),
        patch_center_dist_from_border=0,
        random_crop=False,
        p_elastic_deform=0,
        p_rotation=p_rotation,
        rotation=aug.rotation_radians,  # a scalar: exactly this angle, see build_augmentation
        p_scaling=p_scaling,
        scaling=(lo, hi),
        p_synchronize_scaling_across_axes=1,
        bg_style_seg_sampling=False,
    )


def _intensity(aug: ClassificationAugmentation) -> list:
    """Steps 2 to 8, each a ``RandomTransform`` with its probability (None where that is 0)."""
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    def random(p: float, transform):
        return RandomTransform(transform, apply_probability=p) if p > 0 else None

    def gamma(p: float, invert: bool):
        return random(
            p,
            GammaTransform(
                gamma=BGContrast(tuple(aug.gamma)),
                p_invert_image=1 if invert else 0,
                synchronize_channels=False,
                p_per_channel=1,
                p_retain_stats=1,
            ),
        )

    return [
        random(
            aug.gaussian_noise_p,
            GaussianNoiseTransform(
                noise_variance=tuple(aug.gaussian_noise_variance), p_per_channel=1, synchronize_channels=True
            ),
        ),
        random(
            aug.gaussian_blur_p,
            GaussianBlurTransform(
                blur_sigma=tuple(aug.gaussian_blur_sigma),
                synchronize_channels=False,
                synchronize_axes=False,
                p_per_channel=0.5,
                benchmark=True,
            ),
        ),
        random(
            aug.brightness_p,
            MultiplicativeBrightnessTransform(
                multiplier_range=BGContrast(tuple(aug.brightness)), synchronize_channels=False, p_per_channel=1
            ),
        ),
        random(
            aug.contrast_p,
            ContrastTransform(
                contrast_range=BGContrast(tuple(aug.contrast)),
                preserve_range=True,
                synchronize_channels=False,
                p_per_channel=1,
            ),
        ),
        random(aug.low_resolution_p, SimulatedLowResolution(scale=aug.low_resolution_scale, p_per_channel=0.5)),
        gamma(aug.gamma_inverted_p, invert=True),
        gamma(aug.gamma_p, invert=False),
    ]
