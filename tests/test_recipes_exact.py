"""`ssl3d-2025` against the organizers' own values, one test per difference found side by side
with their code (docs/recipes.md): the planned transposition of an anisotropic dataset and the
training transforms of the nnunetv2 their fork is based on (2.6.1, with the batchgeneratorsv2 of
2025). The classification items (their rotation value, a low-resolution transform that does not
depend on the installed batchgeneratorsv2) are in tests/test_classification_recipe.py.

Sources: the fork TaWald/nnUNet, branch ``nnssl_finetuning_inclusion`` (``like_nnssl.py`` keeps
the plans ``nnUNetv2_plan_and_preprocess`` wrote and replaces only spacing, normalisation and
patch; its ``nnUNetTrainer.py`` is upstream's at 0d042347, version 2.6.1), and
batchgeneratorsv2 0.2.3 / 0.3.0 (what ``batchgeneratorsv2>=0.2`` installed in 2025).
"""

from __future__ import annotations

import pytest
import SimpleITK as sitk
import torch
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.recipes import SSL3D_2025, SSL3D_2025_LOSSLESS
from harness.tasks import load_task_file

#: Voxel spacing in SimpleITK's (x, y, z) order: the thick axis first, i.e. the last array axis.
ANISOTROPIC = (2.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def anisotropic(module_dir, monkeypatch_module) -> dict:
    from harness.finetune.segmentation import prepare_dataset

    root = module_dir("exact")
    data = write_tiny_dataset(root / "data" / "Aniso")
    for path in sorted(data.rglob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        image.SetSpacing(ANISOTROPIC)
        sitk.WriteImage(image, str(path), useCompression=True)
    task = load_task_file(write_tiny_task(root / "registry", "Aniso", "Aniso"))
    monkeypatch_module.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch_module.setenv("nnUNet_def_n_proc", "1")
    prepared = prepare_dataset(task, root / "results", SSL3D_2025.part("segmentation"), log=lambda m: None)
    return {"task": task, "prepared": prepared, "data": data}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_transposition_is_planned_from_the_data_spacing(anisotropic):
    """The organizers' plans of a 2 x 1 x 1 mm dataset (thick axis first) transpose [2, 0, 1]
    (SSL3D.md section 7, measured with their code): nnU-Net's planner decides it from the data's
    own spacing; a planner handed the isotropic 1 mm target would plan [0, 1, 2]."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from harness.finetune.segmentation import CONFIGURATION

    plans = anisotropic["prepared"].plans
    assert plans["transpose_forward"] == [2, 0, 1] and plans["transpose_backward"] == [1, 2, 0]
    cfg = plans["configurations"][CONFIGURATION]
    assert cfg["spacing"] == [1.0, 1.0, 1.0]  # still resampled to the target spacing
    # the preprocessed case is in the transposed axis order: the thick axis (x, 2 mm) comes first
    folder = anisotropic["prepared"].preprocessed / anisotropic["prepared"].dataset_name / cfg["data_identifier"]
    dataset = infer_dataset_class(str(folder))(str(folder))
    data, seg, _, _ = dataset.load_case(sorted(dataset.identifiers)[0])
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(anisotropic["data"] / "imagesTr" / "train_000_0000.nii.gz")))
    z, y, x = raw.shape  # numpy order: x is the last axis, at 2 mm
    assert data.shape[1:] == (2 * x, z, y)


def _trainer_transforms(prepared, recipe_part):
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer
    from harness.finetune.segmentation import CONFIGURATION, nnunet_paths, run_plans

    plans = run_plans(prepared, (64, 64, 64), 1)
    plans["continue_training"] = False
    with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=prepared.root / "trainer"):
        trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, torch.device("cpu"))
    trainer.configure_finetuning(track="ResEncL", schedule=recipe_part.schedules["ResEncL"], recipe=recipe_part)
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert not dummy_2d  # a plain 3D configuration: nnU-Net passes ignore_axes=None
    return trainer.get_training_transforms(
        (64, 64, 64), rotation, None, mirror_axes, dummy_2d, foreground_labels=[1, 2]
    ).transforms


def _inner(transforms):
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    return [t.transform if isinstance(t, RandomTransform) else t for t in transforms]


def _padded_label(spatial) -> int:
    """The label a rotation brings in from outside a patch of ones."""
    spatial.p_rotation, spatial.rotation = 1.0, 0.8
    spatial.p_scaling = 0.0
    torch.manual_seed(0)
    out = spatial(image=torch.ones(1, 64, 64, 64), segmentation=torch.ones(1, 64, 64, 64, dtype=torch.int16))
    return int(out["segmentation"][0, 0, 0, 0])


def test_training_transforms_are_those_of_the_fork(anisotropic):
    """nnunetv2 2.6.1 calls ``SpatialTransform(..., bg_style_seg_sampling=False)`` without border
    arguments (batchgeneratorsv2's default ``border_mode_seg='zeros'``: label 0 outside), where
    2.8.1 passes ``border_mode_seg='constant', padding_value_seg=-1``; and batchgeneratorsv2
    <= 0.3.0 set every scale of ``SimulateLowResolutionTransform(ignore_axes=None)`` to 1
    (``scales[:, self.ignore_axes] = 1``), so the fork's pipeline never simulated low resolution."""
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    fork = _inner(_trainer_transforms(anisotropic["prepared"], SSL3D_2025.part("segmentation")))
    assert (
        SSL3D_2025_LOSSLESS.part("segmentation").training_transforms
        == SSL3D_2025.part("segmentation").training_transforms
    )
    installed = _inner(
        _trainer_transforms(
            anisotropic["prepared"],
            SSL3D_2025.part("segmentation").model_copy(update={"training_transforms": "installed"}),
        )
    )
    assert not any(isinstance(t, SimulateLowResolutionTransform) for t in fork)
    low = [t for t in installed if isinstance(t, SimulateLowResolutionTransform)]
    assert len(low) == 1 and low[0].ignore_axes is None
    assert [type(t) for t in fork] == [type(t) for t in installed if not isinstance(t, SimulateLowResolutionTransform)]
    (spatial_fork,) = [t for t in fork if isinstance(t, SpatialTransform)]
    (spatial_installed,) = [t for t in installed if isinstance(t, SpatialTransform)]
    assert (spatial_fork.border_mode_seg, spatial_fork.padding_value_seg) == ("zeros", 0)
    assert (spatial_installed.border_mode_seg, spatial_installed.padding_value_seg) == ("constant", -1)
    assert _padded_label(spatial_fork) == 0 and _padded_label(spatial_installed) == -1
